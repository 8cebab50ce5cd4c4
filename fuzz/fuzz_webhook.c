/*
 * libFuzzer target: payment webhook signatures (common/fleet_webhook.c).
 * The first byte splits the input into a secret and a body; the rest of
 * the input is also tried as a presented header.  What sign writes must
 * verify, and no other header of the same body may (up to case).
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fleet_webhook.h"


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int            rc;
    char           sig[FLEET_WEBHOOK_SIG_LEN + 1];
    size_t         slen;
    const uint8_t *secret, *body;

    if (size == 0) {
        return 0;
    }

    slen = data[0] % 64;
    if (slen > size - 1) {
        slen = size - 1;
    }

    secret = data + 1;
    body = data + 1 + slen;

    /* any bytes as the presented header: never crashes, reads in bounds */
    (void) fleet_webhook_verify(body, size - 1 - slen, secret, slen,
                                data, size);

    rc = fleet_webhook_sign(body, size - 1 - slen, secret, slen, sig);

    if (slen == 0) {
        if (rc != -1) {
            abort();
        }

        return 0;
    }

    if (rc != 0 || strlen(sig) != FLEET_WEBHOOK_SIG_LEN
        || !fleet_webhook_verify(body, size - 1 - slen, secret, slen,
                                 (const unsigned char *) sig, strlen(sig)))
    {
        abort();
    }

    /* one flipped digit never verifies */
    sig[FLEET_WEBHOOK_SIG_LEN - 1] = sig[FLEET_WEBHOOK_SIG_LEN - 1] == '0'
                                     ? '1' : '0';
    if (fleet_webhook_verify(body, size - 1 - slen, secret, slen,
                             (const unsigned char *) sig, strlen(sig)))
    {
        abort();
    }

    return 0;
}
