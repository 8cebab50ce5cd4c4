/*
 * libFuzzer target: JWT parsing and verification (common/fleet_jwt.c).
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fleet_jwt.h"


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    unsigned char       *buf;
    fleet_jwt_claims_t   c;

    (void) fleet_jwt_verify((const char *) data, size,
                            (const unsigned char *) "0123456789abcdef", 16,
                            1760000000LL, &c);

    buf = malloc(size + 1);
    (void) fleet_b64url_decode((const char *) data, size, buf);
    free(buf);

    return 0;
}
