/*
 * fleetgate: password hashing (PBKDF2-HMAC-SHA256, Django encoding).
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "fleet_password.h"


#define FLEET_PBKDF2_PREFIX     "pbkdf2_sha256$"
#define FLEET_PBKDF2_MAX_ITER   10000000u
#define FLEET_SALT_LEN          22


static const char  fleet_salt_chars[] =
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";


static int
fleet_pbkdf2_b64(const char *pw, size_t pw_len, const char *salt,
    size_t salt_len, unsigned iterations, char *b64)
{
    unsigned char  dk[32];

    if (PKCS5_PBKDF2_HMAC(pw, (int) pw_len, (const unsigned char *) salt,
                          (int) salt_len, (int) iterations, EVP_sha256(),
                          sizeof(dk), dk)
        != 1)
    {
        return -1;
    }

    /* 32 bytes encode to 44 characters plus the NUL */
    EVP_EncodeBlock((unsigned char *) b64, dk, sizeof(dk));
    OPENSSL_cleanse(dk, sizeof(dk));

    return 0;
}


int
fleet_password_hash(const char *pw, size_t pw_len, unsigned iterations,
    char *out, size_t out_size)
{
    int            n;
    size_t         i;
    char           salt[FLEET_SALT_LEN + 1], b64[48];
    unsigned char  rnd[FLEET_SALT_LEN];

    if (iterations == 0 || iterations > FLEET_PBKDF2_MAX_ITER) {
        return -1;
    }

    if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
        return -1;
    }

    for (i = 0; i < FLEET_SALT_LEN; i++) {
        /* 62 symbols: the slight modulo bias costs < 0.1 bit of salt */
        salt[i] = fleet_salt_chars[rnd[i] % (sizeof(fleet_salt_chars) - 1)];
    }

    salt[FLEET_SALT_LEN] = '\0';

    if (fleet_pbkdf2_b64(pw, pw_len, salt, FLEET_SALT_LEN, iterations, b64)
        != 0)
    {
        return -1;
    }

    n = snprintf(out, out_size, FLEET_PBKDF2_PREFIX "%u$%s$%s",
                 iterations, salt, b64);

    return (n < 0 || (size_t) n >= out_size) ? -1 : 0;
}


int
fleet_password_verify(const char *pw, size_t pw_len,
    const char *encoded, size_t encoded_len)
{
    size_t         plen, i;
    const char    *p, *end, *salt, *hash;
    unsigned long  iter;
    char           buf[FLEET_PASSWORD_HASH_MAX + 1], b64[48];

    plen = sizeof(FLEET_PBKDF2_PREFIX) - 1;

    if (encoded_len <= plen || encoded_len > FLEET_PASSWORD_HASH_MAX
        || memcmp(encoded, FLEET_PBKDF2_PREFIX, plen) != 0)
    {
        return -1;
    }

    memcpy(buf, encoded, encoded_len);
    buf[encoded_len] = '\0';
    end = buf + encoded_len;

    iter = 0;
    for (p = buf + plen; p < end && *p >= '0' && *p <= '9'; p++) {
        iter = iter * 10 + (unsigned long) (*p - '0');
        if (iter > FLEET_PBKDF2_MAX_ITER) {
            return -1;
        }
    }

    if (iter == 0 || p == end || *p != '$') {
        return -1;
    }

    salt = ++p;
    while (p < end && *p != '$') {
        p++;
    }

    if (p == end || p == salt) {
        return -1;
    }

    hash = p + 1;

    if ((size_t) (end - hash) != 44) {
        return -1;
    }

    if (fleet_pbkdf2_b64(pw, pw_len, salt, (size_t) (p - salt),
                         (unsigned) iter, b64)
        != 0)
    {
        return -1;
    }

    i = CRYPTO_memcmp(b64, hash, 44);
    OPENSSL_cleanse(b64, sizeof(b64));

    return i == 0;
}
