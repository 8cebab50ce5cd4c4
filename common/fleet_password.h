/*
 * fleetgate: password hashing.  PBKDF2-HMAC-SHA256 from OpenSSL in Django's
 * encoding "pbkdf2_sha256$<iterations>$<salt>$<base64 hash>", so users
 * imported from a Django backend (seed 002) keep their passwords.
 */

#ifndef FLEET_PASSWORD_H
#define FLEET_PASSWORD_H

#include <stddef.h>

#define FLEET_PASSWORD_DEFAULT_ITERATIONS  600000
#define FLEET_PASSWORD_HASH_MAX            128

/* writes the encoded hash (NUL-terminated) into out; 0 on success */
int fleet_password_hash(const char *pw, size_t pw_len, unsigned iterations,
    char *out, size_t out_size);

/* 1 match, 0 mismatch, -1 malformed encoding or iterations out of range */
int fleet_password_verify(const char *pw, size_t pw_len,
    const char *encoded, size_t encoded_len);

#endif /* FLEET_PASSWORD_H */
