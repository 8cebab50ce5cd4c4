/*
 * libFuzzer target: MQTT sha256 extraction and verification, HTTP
 * signature check, and signing (common/fleet_sig.c).
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fleet_sig.h"


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t          cs, ce, sl, n;
    unsigned char  *scratch, *out;
    const unsigned char  *sig;

    scratch = malloc(size + 1);
    out = malloc(size + 80);

    if (fleet_mqtt_sig_locate(data, size, &cs, &ce, &sig, &sl) == 0) {
        /* the cut and the signature lie inside the message */
        if (cs > ce || ce > size || sig < data || sig + sl > data + size) {
            abort();
        }
    }

    (void) fleet_mqtt_sig_verify(data, size, (const unsigned char *) "k", 1,
                                 scratch);
    (void) fleet_sig_verify(data, size, (const unsigned char *) "k", 1,
                            data, size);

    n = fleet_mqtt_sign(data, size, (const unsigned char *) "k", 1, out);

    if (n > size + 78) {
        abort();
    }

    free(scratch);
    free(out);

    return 0;
}
