/*
 * fleetgate: PromptPay bill-payment QR payloads (EMVCo).
 */

#include <stdio.h>
#include <string.h>

#include "fleet_promptpay.h"


#define FLEET_PROMPTPAY_BILL_AID  "A000000677010112"


uint16_t
fleet_crc16_ccitt_false(const unsigned char *p, size_t len)
{
    size_t    i;
    unsigned  b;
    uint16_t  crc;

    crc = 0xffff;

    for (i = 0; i < len; i++) {
        crc ^= (uint16_t) (p[i] << 8);

        for (b = 0; b < 8; b++) {
            crc = (crc & 0x8000) ? (uint16_t) ((crc << 1) ^ 0x1021)
                                 : (uint16_t) (crc << 1);
        }
    }

    return crc;
}


/* references end up in banking apps: upper-case letters and digits only */
static int
fleet_promptpay_field_ok(const char *s, size_t max)
{
    size_t  n;

    for (n = 0; s[n] != '\0'; n++) {
        if (n == max
            || !((s[n] >= 'A' && s[n] <= 'Z') || (s[n] >= '0' && s[n] <= '9')))
        {
            return 0;
        }
    }

    return n > 0;
}


/* appends ID, two-digit length and value; 0 when it does not fit */
static int
fleet_tlv(char *out, size_t size, size_t *len, const char *id,
    const char *value)
{
    int     n;
    size_t  vlen;

    vlen = strlen(value);

    if (vlen > 99) {
        return 0;
    }

    n = snprintf(out + *len, size - *len, "%s%02zu%s", id, vlen, value);

    if (n < 0 || (size_t) n >= size - *len) {
        return 0;
    }

    *len += (size_t) n;

    return 1;
}


size_t
fleet_promptpay_bill(const char *biller_id, const char *merchant_ref,
    const char *payment_ref, long long amount_satang, char *out,
    size_t out_size)
{
    int     n;
    char    merchant[128], additional[64], amount[32];
    size_t  len, mlen, alen;

    if (!fleet_promptpay_field_ok(biller_id, 15)
        || !fleet_promptpay_field_ok(merchant_ref, 20)
        || !fleet_promptpay_field_ok(payment_ref, 25)
        || amount_satang < 1 || amount_satang > 99999999999LL)
    {
        return 0;
    }

    mlen = 0;
    if (!fleet_tlv(merchant, sizeof(merchant), &mlen, "00",
                   FLEET_PROMPTPAY_BILL_AID)
        || !fleet_tlv(merchant, sizeof(merchant), &mlen, "01", biller_id)
        || !fleet_tlv(merchant, sizeof(merchant), &mlen, "02", merchant_ref))
    {
        return 0;
    }

    alen = 0;
    if (!fleet_tlv(additional, sizeof(additional), &alen, "07", payment_ref)) {
        return 0;
    }

    n = snprintf(amount, sizeof(amount), "%lld.%02lld", amount_satang / 100,
                 amount_satang % 100);
    if (n < 0 || (size_t) n >= sizeof(amount)) {
        return 0;
    }

    len = 0;

    /* 01 "12": a dynamic QR, one payment of a given amount */
    if (!fleet_tlv(out, out_size, &len, "00", "01")
        || !fleet_tlv(out, out_size, &len, "01", "12")
        || !fleet_tlv(out, out_size, &len, "30", merchant)
        || !fleet_tlv(out, out_size, &len, "53", "764")
        || !fleet_tlv(out, out_size, &len, "54", amount)
        || !fleet_tlv(out, out_size, &len, "58", "TH")
        || !fleet_tlv(out, out_size, &len, "62", additional)
        || len + 8 >= out_size)
    {
        return 0;
    }

    /* the CRC covers everything before it, "6304" included */
    n = snprintf(out + len, out_size - len, "6304");
    if (n != 4) {
        return 0;
    }

    len += 4;

    n = snprintf(out + len, out_size - len, "%04X",
                 fleet_crc16_ccitt_false((const unsigned char *) out, len));
    if (n != 4) {
        return 0;
    }

    return len + 4;
}
