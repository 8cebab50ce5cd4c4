/*
 * fleetgate: PromptPay bill-payment QR payloads (EMVCo merchant-presented,
 * SPEC section 8).  Pure functions for the payments routes, the unit tests
 * and the fuzzer.
 */

#ifndef FLEET_PROMPTPAY_H
#define FLEET_PROMPTPAY_H

#include <stddef.h>
#include <stdint.h>

#define FLEET_PROMPTPAY_MAX  512

/* CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF), as EMVCo tag 63 uses */
uint16_t fleet_crc16_ccitt_false(const unsigned char *p, size_t len);

/*
 * Writes the payload (NUL-terminated) for a dynamic bill payment: tag 30
 * with the PromptPay bill AID, biller id (01) and merchant reference (02),
 * amount in baht with two decimals, currency 764, country TH, the payment
 * reference in tag 62 sub-tag 07, and the CRC in tag 63.  Returns its
 * length, or 0 when an input is empty, too long or not upper-case
 * alphanumeric ASCII, or the amount is not in 1..99999999999 satang.
 */
size_t fleet_promptpay_bill(const char *biller_id, const char *merchant_ref,
    const char *payment_ref, long long amount_satang, char *out,
    size_t out_size);

#endif /* FLEET_PROMPTPAY_H */
