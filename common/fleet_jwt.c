/*
 * fleetgate: JSON Web Tokens, HS256 only.
 *
 * The algorithm is pinned: a header naming anything but HS256 ("none",
 * HS512, RS256 ...) is refused before any key is used, which closes the
 * classic alg-confusion attacks.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "fleet_jwt.h"


static const char  fleet_b64url[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";


size_t
fleet_b64url_encode(const unsigned char *in, size_t len, char *out)
{
    size_t    i, n;
    unsigned  v;

    for (i = 0, n = 0; i + 2 < len; i += 3) {
        v = (unsigned) in[i] << 16 | (unsigned) in[i + 1] << 8 | in[i + 2];
        out[n++] = fleet_b64url[(v >> 18) & 63];
        out[n++] = fleet_b64url[(v >> 12) & 63];
        out[n++] = fleet_b64url[(v >> 6) & 63];
        out[n++] = fleet_b64url[v & 63];
    }

    if (len - i == 1) {
        v = (unsigned) in[i] << 16;
        out[n++] = fleet_b64url[(v >> 18) & 63];
        out[n++] = fleet_b64url[(v >> 12) & 63];

    } else if (len - i == 2) {
        v = (unsigned) in[i] << 16 | (unsigned) in[i + 1] << 8;
        out[n++] = fleet_b64url[(v >> 18) & 63];
        out[n++] = fleet_b64url[(v >> 12) & 63];
        out[n++] = fleet_b64url[(v >> 6) & 63];
    }

    return n;
}


static int
fleet_b64url_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') {
        return c - 'A';
    }

    if (c >= 'a' && c <= 'z') {
        return c - 'a' + 26;
    }

    if (c >= '0' && c <= '9') {
        return c - '0' + 52;
    }

    if (c == '-') {
        return 62;
    }

    if (c == '_') {
        return 63;
    }

    return -1;
}


size_t
fleet_b64url_decode(const char *in, size_t len, unsigned char *out)
{
    int       d;
    size_t    i, n;
    unsigned  acc, bits;

    if (len % 4 == 1) {
        return (size_t) -1;
    }

    acc = 0;
    bits = 0;

    for (i = 0, n = 0; i < len; i++) {
        d = fleet_b64url_value((unsigned char) in[i]);
        if (d < 0) {
            return (size_t) -1;
        }

        acc = (acc << 6) | (unsigned) d;
        bits += 6;

        if (bits >= 8) {
            bits -= 8;
            out[n++] = (unsigned char) (acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }

    /* leftover bits must be zero: one encoding per value */
    if (acc != 0) {
        return (size_t) -1;
    }

    return n;
}


static json_t *
fleet_jwt_decode_part(const char *p, size_t len)
{
    size_t         n;
    json_t        *j;
    unsigned char  buf[FLEET_JWT_MAX_LEN];

    if (len == 0 || len > FLEET_JWT_MAX_LEN) {
        return NULL;
    }

    n = fleet_b64url_decode(p, len, buf);
    if (n == (size_t) -1) {
        return NULL;
    }

    j = json_loadb((const char *) buf, n, JSON_REJECT_DUPLICATES, NULL);
    if (j != NULL && !json_is_object(j)) {
        json_decref(j);
        return NULL;
    }

    return j;
}


static int
fleet_jwt_number(json_t *v, long long *out)
{
    if (json_is_integer(v)) {
        *out = json_integer_value(v);
        return 0;
    }

    if (json_is_real(v)) {
        *out = (long long) json_real_value(v);
        return 0;
    }

    return -1;
}


static int
fleet_jwt_check_header(const char *p, size_t len)
{
    int          rc;
    json_t      *h, *alg, *typ;

    h = fleet_jwt_decode_part(p, len);
    if (h == NULL) {
        return FLEET_JWT_MALFORMED;
    }

    alg = json_object_get(h, "alg");
    typ = json_object_get(h, "typ");

    if (!json_is_string(alg) || strcmp(json_string_value(alg), "HS256") != 0) {
        rc = FLEET_JWT_BAD_ALG;

    } else if (typ != NULL && (!json_is_string(typ)
               || strcmp(json_string_value(typ), "JWT") != 0))
    {
        rc = FLEET_JWT_MALFORMED;

    } else {
        rc = FLEET_JWT_OK;
    }

    json_decref(h);

    return rc;
}


/* a non-empty JSON string that fits, NUL included */
static int
fleet_jwt_copy_string(json_t *v, char *out, size_t size)
{
    size_t  len;

    if (!json_is_string(v)) {
        return -1;
    }

    len = json_string_length(v);

    if (len == 0 || len >= size) {
        return -1;
    }

    memcpy(out, json_string_value(v), len + 1);

    return 0;
}


static int
fleet_jwt_read_claims(json_t *c, long long now, fleet_jwt_claims_t *claims)
{
    long long    nbf;
    json_t      *v;

    memset(claims, 0, sizeof(*claims));

    v = json_object_get(c, "exp");
    if (v == NULL || fleet_jwt_number(v, &claims->exp) != 0) {
        return FLEET_JWT_BAD_CLAIMS;
    }

    v = json_object_get(c, "nbf");
    if (v != NULL && fleet_jwt_number(v, &nbf) != 0) {
        return FLEET_JWT_BAD_CLAIMS;
    }

    v = json_object_get(c, "iat");
    if (v != NULL && fleet_jwt_number(v, &claims->iat) != 0) {
        return FLEET_JWT_BAD_CLAIMS;
    }

    v = json_object_get(c, "sub");
    if (!json_is_string(v)) {
        return FLEET_JWT_BAD_CLAIMS;
    }

    if (fleet_jwt_copy_string(v, claims->sub, sizeof(claims->sub)) != 0) {
        return FLEET_JWT_BAD_CLAIMS;
    }

    v = json_object_get(c, "role");
    claims->role = json_is_string(v) ? fleet_role_parse(json_string_value(v))
                                     : FLEET_ROLE_NONE;
    if (claims->role == FLEET_ROLE_NONE) {
        return FLEET_JWT_BAD_CLAIMS;
    }

    v = json_object_get(c, "jti");
    if (v != NULL
        && fleet_jwt_copy_string(v, claims->jti, sizeof(claims->jti)) != 0)
    {
        return FLEET_JWT_BAD_CLAIMS;
    }

    if (now >= claims->exp) {
        return FLEET_JWT_EXPIRED;
    }

    if (json_object_get(c, "nbf") != NULL && now < nbf) {
        return FLEET_JWT_NOT_YET_VALID;
    }

    return FLEET_JWT_OK;
}


int
fleet_jwt_verify(const char *token, size_t len,
    const unsigned char *key, size_t key_len, long long now,
    fleet_jwt_claims_t *claims)
{
    int            rc;
    json_t        *payload;
    size_t         sig_len;
    const char    *d1, *d2;
    unsigned int   mdlen;
    unsigned char  md[EVP_MAX_MD_SIZE], sig[64];

    if (len == 0 || len > FLEET_JWT_MAX_LEN) {
        return FLEET_JWT_MALFORMED;
    }

    d1 = memchr(token, '.', len);
    if (d1 == NULL) {
        return FLEET_JWT_MALFORMED;
    }

    d2 = memchr(d1 + 1, '.', len - (size_t) (d1 + 1 - token));
    if (d2 == NULL || memchr(d2 + 1, '.', len - (size_t) (d2 + 1 - token))) {
        return FLEET_JWT_MALFORMED;
    }

    rc = fleet_jwt_check_header(token, (size_t) (d1 - token));
    if (rc != FLEET_JWT_OK) {
        return rc;
    }

    sig_len = len - (size_t) (d2 + 1 - token);
    if (sig_len != 43
        || fleet_b64url_decode(d2 + 1, sig_len, sig) != 32)
    {
        return FLEET_JWT_BAD_SIGNATURE;
    }

    if (HMAC(EVP_sha256(), key, (int) key_len, (const unsigned char *) token,
             (size_t) (d2 - token), md, &mdlen)
        == NULL || mdlen != 32)
    {
        return FLEET_JWT_BAD_SIGNATURE;
    }

    if (CRYPTO_memcmp(md, sig, 32) != 0) {
        return FLEET_JWT_BAD_SIGNATURE;
    }

    payload = fleet_jwt_decode_part(d1 + 1, (size_t) (d2 - d1 - 1));
    if (payload == NULL) {
        return FLEET_JWT_MALFORMED;
    }

    rc = fleet_jwt_read_claims(payload, now, claims);
    json_decref(payload);

    return rc;
}


size_t
fleet_jwt_sign(const char *sub, fleet_role_t role, const char *jti,
    long long iat, long long exp, const unsigned char *key, size_t key_len,
    char *out, size_t out_size)
{
    char          *body;
    size_t         blen, len;
    json_t        *c;
    unsigned int   mdlen;
    unsigned char  md[EVP_MAX_MD_SIZE];

    static const char  header[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";

    c = json_pack("{s:s, s:s, s:I, s:I}", "sub", sub,
                  "role", fleet_role_name(role),
                  "iat", (json_int_t) iat, "exp", (json_int_t) exp);
    if (c == NULL) {
        return 0;
    }

    if (jti != NULL && jti[0] != '\0') {
        json_object_set_new(c, "jti", json_string(jti));
    }

    body = json_dumps(c, JSON_COMPACT);
    json_decref(c);

    if (body == NULL) {
        return 0;
    }

    blen = strlen(body);

    /* header + '.' + payload + '.' + 43 signature chars + NUL */
    if ((sizeof(header) + blen) / 3 * 4 + 8 + 2 + 43 + 1 > out_size) {
        free(body);
        return 0;
    }

    len = fleet_b64url_encode((const unsigned char *) header,
                              sizeof(header) - 1, out);
    out[len++] = '.';
    len += fleet_b64url_encode((const unsigned char *) body, blen, out + len);
    free(body);

    if (HMAC(EVP_sha256(), key, (int) key_len, (unsigned char *) out, len,
             md, &mdlen)
        == NULL)
    {
        return 0;
    }

    out[len++] = '.';
    len += fleet_b64url_encode(md, mdlen, out + len);
    out[len] = '\0';

    return len;
}


const char *
fleet_jwt_strerror(int rc)
{
    switch (rc) {
    case FLEET_JWT_OK:
        return "ok";
    case FLEET_JWT_MALFORMED:
        return "malformed token";
    case FLEET_JWT_BAD_ALG:
        return "token algorithm must be HS256";
    case FLEET_JWT_BAD_SIGNATURE:
        return "invalid token signature";
    case FLEET_JWT_BAD_CLAIMS:
        return "token claims are invalid";
    case FLEET_JWT_EXPIRED:
        return "token has expired";
    case FLEET_JWT_NOT_YET_VALID:
        return "token is not valid yet";
    default:
        return "invalid token";
    }
}


const char *
fleet_role_name(fleet_role_t role)
{
    switch (role) {
    case FLEET_ROLE_USER:
        return "user";
    case FLEET_ROLE_ADMIN:
        return "admin";
    case FLEET_ROLE_SERVICE:
        return "service";
    default:
        return "none";
    }
}


fleet_role_t
fleet_role_parse(const char *name)
{
    if (strcmp(name, "user") == 0) {
        return FLEET_ROLE_USER;
    }

    if (strcmp(name, "admin") == 0) {
        return FLEET_ROLE_ADMIN;
    }

    if (strcmp(name, "service") == 0) {
        return FLEET_ROLE_SERVICE;
    }

    return FLEET_ROLE_NONE;
}
