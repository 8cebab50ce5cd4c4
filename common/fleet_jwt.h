/*
 * fleetgate: JSON Web Tokens, HS256 only (SPEC section 2).  Pure functions.
 */

#ifndef FLEET_JWT_H
#define FLEET_JWT_H

#include <stddef.h>

#define FLEET_JWT_MAX_LEN     4096
#define FLEET_JWT_SUB_MAX     64
#define FLEET_JWT_JTI_MAX     64

enum {
    FLEET_JWT_OK = 0,
    FLEET_JWT_MALFORMED,
    FLEET_JWT_BAD_ALG,
    FLEET_JWT_BAD_SIGNATURE,
    FLEET_JWT_BAD_CLAIMS,
    FLEET_JWT_EXPIRED,
    FLEET_JWT_NOT_YET_VALID
};

typedef enum {
    FLEET_ROLE_NONE = 0,
    FLEET_ROLE_USER,
    FLEET_ROLE_ADMIN,
    FLEET_ROLE_SERVICE
} fleet_role_t;

typedef struct {
    char          sub[FLEET_JWT_SUB_MAX];
    char          jti[FLEET_JWT_JTI_MAX];
    fleet_role_t  role;
    long long     exp;
    long long     iat;
} fleet_jwt_claims_t;

int fleet_jwt_verify(const char *token, size_t len,
    const unsigned char *key, size_t key_len, long long now,
    fleet_jwt_claims_t *claims);

/* writes a NUL-terminated token; returns its length or 0 on failure */
size_t fleet_jwt_sign(const char *sub, fleet_role_t role, const char *jti,
    long long iat, long long exp, const unsigned char *key, size_t key_len,
    char *out, size_t out_size);

const char *fleet_jwt_strerror(int rc);
const char *fleet_role_name(fleet_role_t role);
fleet_role_t fleet_role_parse(const char *name);

/* base64url without padding; exposed for tests and fuzzers */
size_t fleet_b64url_encode(const unsigned char *in, size_t len, char *out);
/* returns decoded length, or (size_t) -1 on bad input */
size_t fleet_b64url_decode(const char *in, size_t len, unsigned char *out);

#endif /* FLEET_JWT_H */
