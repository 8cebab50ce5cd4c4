/*
 * fleetgate: payment webhook signatures (SPEC section 8).
 */

#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "fleet_webhook.h"


#define FLEET_WEBHOOK_SCHEME      "sha256="
#define FLEET_WEBHOOK_SCHEME_LEN  (sizeof(FLEET_WEBHOOK_SCHEME) - 1)


static const char  fleet_webhook_hex[] = "0123456789abcdef";


static int
fleet_webhook_hmac(const unsigned char *body, size_t len,
    const unsigned char *secret, size_t secret_len, unsigned char *md)
{
    unsigned int  mdlen;

    if (secret_len == 0 || secret_len > 0x7fffffff) {
        return -1;
    }

    mdlen = 0;

    /* HMAC() wants a non-NULL data pointer even for an empty body */
    if (HMAC(EVP_sha256(), secret, (int) secret_len,
             body != NULL ? body : (const unsigned char *) "", len, md,
             &mdlen)
        == NULL
        || mdlen != 32)
    {
        return -1;
    }

    return 0;
}


int
fleet_webhook_sign(const unsigned char *body, size_t len,
    const unsigned char *secret, size_t secret_len, char *out)
{
    size_t         i;
    unsigned char  md[32];

    if (fleet_webhook_hmac(body, len, secret, secret_len, md) != 0) {
        out[0] = '\0';
        return -1;
    }

    memcpy(out, FLEET_WEBHOOK_SCHEME, FLEET_WEBHOOK_SCHEME_LEN);

    for (i = 0; i < 32; i++) {
        out[FLEET_WEBHOOK_SCHEME_LEN + 2 * i] = fleet_webhook_hex[md[i] >> 4];
        out[FLEET_WEBHOOK_SCHEME_LEN + 2 * i + 1] =
            fleet_webhook_hex[md[i] & 0xf];
    }

    out[FLEET_WEBHOOK_SIG_LEN] = '\0';

    OPENSSL_cleanse(md, sizeof(md));

    return 0;
}


static int
fleet_webhook_hex_value(unsigned char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }

    c |= 0x20;

    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }

    return -1;
}


int
fleet_webhook_verify(const unsigned char *body, size_t len,
    const unsigned char *secret, size_t secret_len,
    const unsigned char *presented, size_t presented_len)
{
    int            hi, lo, ok;
    size_t         i;
    unsigned char  c, md[32], want[32];

    /* the shape of the presented value is no secret: refuse it early */
    if (presented == NULL || presented_len != FLEET_WEBHOOK_SIG_LEN) {
        return 0;
    }

    for (i = 0; i < FLEET_WEBHOOK_SCHEME_LEN; i++) {
        c = presented[i];

        if (c >= 'A' && c <= 'Z') {
            c |= 0x20;
        }

        if (c != (unsigned char) FLEET_WEBHOOK_SCHEME[i]) {
            return 0;
        }
    }

    presented += FLEET_WEBHOOK_SCHEME_LEN;

    for (i = 0; i < 32; i++) {
        hi = fleet_webhook_hex_value(presented[2 * i]);
        lo = fleet_webhook_hex_value(presented[2 * i + 1]);

        if (hi < 0 || lo < 0) {
            return 0;
        }

        want[i] = (unsigned char) (hi << 4 | lo);
    }

    if (fleet_webhook_hmac(body, len, secret, secret_len, md) != 0) {
        return 0;
    }

    ok = CRYPTO_memcmp(md, want, sizeof(md)) == 0;

    OPENSSL_cleanse(md, sizeof(md));

    return ok;
}
