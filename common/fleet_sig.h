/*
 * fleetgate: device signatures (SPEC section 2).  Pure functions, no nginx
 * types, so the module, the bridge, the unit tests and the fuzzers share them.
 */

#ifndef FLEET_SIG_H
#define FLEET_SIG_H

#include <stddef.h>

#define FLEET_SHA256_HEX_LEN  64

/* hex(SHA256(data || secret)), lowercase, NUL-terminated (65 bytes) */
void fleet_sig_hex(const unsigned char *data, size_t len,
    const unsigned char *secret, size_t secret_len, char *hex);

/*
 * Constant-time check of a presented hex signature (any case) against
 * hex(SHA256(data || secret)).  Returns 1 when it matches, 0 otherwise.
 */
int fleet_sig_verify(const unsigned char *data, size_t len,
    const unsigned char *secret, size_t secret_len,
    const unsigned char *presented, size_t presented_len);

/*
 * MQTT message form: the last top-level member of the JSON object is
 * "sha256":"<hex>".  On success fills *sig and *sig_len with the presented
 * hex and *cut_start and *cut_end with the byte range to remove (from the comma
 * before "sha256" through the end of its string value) and returns 0.
 * Returns -1 when the text is not such an object.
 */
int fleet_mqtt_sig_locate(const unsigned char *msg, size_t len,
    size_t *cut_start, size_t *cut_end,
    const unsigned char **sig, size_t *sig_len);

/*
 * Verifies an MQTT message (SPEC section 2): SHA256(S || secret) or
 * SHA256(W || secret), W being S with whitespace outside strings removed.
 * scratch must hold len bytes.  Returns 1 valid, 0 wrong signature,
 * -1 no sha256 member.
 */
int fleet_mqtt_sig_verify(const unsigned char *msg, size_t len,
    const unsigned char *secret, size_t secret_len, unsigned char *scratch);

/*
 * Appends ,"sha256":"<hex>" before the closing brace of a compact JSON
 * object text.  out must hold len + 78 bytes.  Returns the new length, or 0
 * when msg does not end with '}'.
 */
size_t fleet_mqtt_sign(const unsigned char *msg, size_t len,
    const unsigned char *secret, size_t secret_len, unsigned char *out);

#endif /* FLEET_SIG_H */
