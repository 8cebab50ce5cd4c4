/*
 * libFuzzer target: the PromptPay payload builder (common/fleet_promptpay.c).
 * The input is split at NUL bytes into biller id, merchant reference,
 * payment reference and amount; whatever the builder accepts must carry a
 * correct CRC and stay inside its buffer.
 */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fleet_promptpay.h"


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char       *buf, *f[4], out[FLEET_PROMPTPAY_MAX], crc[8];
    size_t      i, k, n;
    long long   amount;

    buf = malloc(size + 1);
    memcpy(buf, data, size);
    buf[size] = '\0';

    f[0] = buf;
    for (i = 0, k = 1; i < size && k < 4; i++) {
        if (buf[i] == '\0') {
            f[k++] = buf + i + 1;
        }
    }

    if (k == 4) {
        amount = strtoll(f[3], NULL, 10);
        n = fleet_promptpay_bill(f[0], f[1], f[2], amount, out, sizeof(out));

        if (n > 0) {
            if (n != strlen(out) || n < 8) {
                abort();
            }

            snprintf(crc, sizeof(crc), "%04X",
                     fleet_crc16_ccitt_false((const unsigned char *) out,
                                             n - 4));
            if (memcmp(crc, out + n - 4, 4) != 0) {
                abort();
            }
        }
    }

    free(buf);

    return 0;
}
