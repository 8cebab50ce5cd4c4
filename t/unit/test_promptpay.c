/*
 * Unit tests: PromptPay bill-payment payloads and CRC-16/CCITT-FALSE.
 */

#include "tap.h"
#include "fleet_promptpay.h"


/* an independent reading of a payload: top-level tags must chain exactly */
static int
tlv_walk(const char *p, const char *tag, char *value)
{
    size_t  len;

    while (*p) {
        if (strlen(p) < 4) {
            return -1;
        }

        len = (size_t) (p[2] - '0') * 10 + (size_t) (p[3] - '0');
        if (strlen(p + 4) < len) {
            return -1;
        }

        if (strncmp(p, tag, 2) == 0) {
            memcpy(value, p + 4, len);
            value[len] = '\0';
            return 0;
        }

        p += 4 + len;
    }

    return 1;
}


int
main(void)
{
    char        out[FLEET_PROMPTPAY_MAX], v[128], crc[8];
    size_t      n;
    const char *seed = "00020101021230530016A00000067701011201150105562181354"
                       "030210CATCARWASH530376454041.005802TH6220071625092401"
                       "060816266304B1D4";

    is_int(fleet_crc16_ccitt_false((const unsigned char *) "123456789", 9),
           0x29B1, "CRC-16/CCITT-FALSE check value");
    snprintf(crc, sizeof(crc), "%04X",
             fleet_crc16_ccitt_false((const unsigned char *) seed,
                                     strlen(seed) - 4));
    is_str(crc, "B1D4", "the seed's rawData CRC is B1D4");

    n = fleet_promptpay_bill("010556218135403", "CATCARWASH",
                             "2509240106081626", 100, out, sizeof(out));
    ok(n == strlen(seed), "length %zu", n);
    is_str(out, seed, "rebuilds the seed's payload exactly");

    n = fleet_promptpay_bill("010556218135403", "CCW", "CCW1758650767283",
                             123456, out, sizeof(out));
    ok(n > 0, "another payload");
    ok(tlv_walk(out, "54", v) == 0 && strcmp(v, "1234.56") == 0,
       "amount in baht with two decimals: %s", v);
    ok(tlv_walk(out, "53", v) == 0 && strcmp(v, "764") == 0, "currency 764");
    ok(tlv_walk(out, "58", v) == 0 && strcmp(v, "TH") == 0, "country TH");
    ok(tlv_walk(out, "62", v) == 0 && strcmp(v, "0716CCW1758650767283") == 0,
       "reference in 62/07");
    ok(tlv_walk(out, "63", v) == 0, "CRC present");
    snprintf(crc, sizeof(crc), "%04X",
             fleet_crc16_ccitt_false((const unsigned char *) out, n - 4));
    is_str(v, crc, "CRC matches");

    ok(fleet_promptpay_bill("010556218135403", "CCW", "R1", 5, out,
                            sizeof(out)) > 0
       && tlv_walk(out, "54", v) == 0 && strcmp(v, "0.05") == 0,
       "5 satang is 0.05");
    is_int(fleet_promptpay_bill("010556218135403", "CCW", "R1", 0, out,
                                sizeof(out)), 0, "zero amount refused");
    is_int(fleet_promptpay_bill("010556218135403", "CCW", "R1", -100, out,
                                sizeof(out)), 0, "negative amount refused");
    is_int(fleet_promptpay_bill("010556218135403", "ccw", "R1", 100, out,
                                sizeof(out)), 0, "lower-case reference refused");
    is_int(fleet_promptpay_bill("", "CCW", "R1", 100, out, sizeof(out)), 0,
           "empty biller refused");
    is_int(fleet_promptpay_bill("010556218135403", "CCW",
                                "R123456789012345678901234567890", 100, out,
                                sizeof(out)), 0, "over-long reference refused");
    is_int(fleet_promptpay_bill("010556218135403", "CCW", "R1", 100, out, 40),
           0, "small buffer");

    return done_testing();
}
