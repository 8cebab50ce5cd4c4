/*
 * fleetgate: payment webhook signatures (SPEC section 8).  The gateway
 * sends x-webhook-signature: sha256=<hex HMAC-SHA256(raw body, secret)>.
 * Pure functions, no nginx types, so the module, the unit tests and the
 * fuzzer share them.
 */

#ifndef FLEET_WEBHOOK_H
#define FLEET_WEBHOOK_H

#include <stddef.h>

/* "sha256=" and 64 hex digits */
#define FLEET_WEBHOOK_SIG_LEN  (sizeof("sha256=") - 1 + 64)

/*
 * Writes "sha256=<lowercase hex HMAC-SHA256(body, secret)>" and a NUL
 * into out (FLEET_WEBHOOK_SIG_LEN + 1 bytes).  Returns 0, or -1 when the
 * secret is empty or the HMAC cannot be computed.
 */
int fleet_webhook_sign(const unsigned char *body, size_t len,
    const unsigned char *secret, size_t secret_len, char *out);

/*
 * Checks a presented header value against the body: the scheme "sha256="
 * (in any case) and 64 hex digits (in any case), compared with the HMAC in
 * constant time.  Returns 1 when it matches, 0 otherwise (wrong scheme,
 * wrong length, not hex, wrong digest, empty secret).
 */
int fleet_webhook_verify(const unsigned char *body, size_t len,
    const unsigned char *secret, size_t secret_len,
    const unsigned char *presented, size_t presented_len);

#endif /* FLEET_WEBHOOK_H */
