/*
 * Unit tests: HS256 JSON Web Tokens.
 */

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "tap.h"
#include "fleet_jwt.h"

#define KEY      "0123456789abcdef0123456789abcdef"
#define KEY_LEN  (sizeof(KEY) - 1)
#define NOW      1760000000LL


/* builds header.payload.signature by hand, with any algorithm */
static void
forge(const char *header, const char *payload, const EVP_MD *md,
    char *out)
{
    size_t         n;
    unsigned int   mdlen;
    unsigned char  sig[EVP_MAX_MD_SIZE];

    n = fleet_b64url_encode((const unsigned char *) header, strlen(header),
                            out);
    out[n++] = '.';
    n += fleet_b64url_encode((const unsigned char *) payload, strlen(payload),
                             out + n);

    if (md != NULL) {
        HMAC(md, KEY, KEY_LEN, (unsigned char *) out, n, sig, &mdlen);
        out[n++] = '.';
        n += fleet_b64url_encode(sig, mdlen, out + n);

    } else {
        out[n++] = '.';
    }

    out[n] = '\0';
}


static int
verify(const char *tok, fleet_jwt_claims_t *c)
{
    return fleet_jwt_verify(tok, strlen(tok), (const unsigned char *) KEY,
                            KEY_LEN, NOW, c);
}


int
main(void)
{
    char                tok[2048];
    size_t              n;
    fleet_jwt_claims_t  c;
    const char         *hs256 = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";

    n = fleet_jwt_sign("42", FLEET_ROLE_ADMIN, "j1", NOW, NOW + 60,
                       (const unsigned char *) KEY, KEY_LEN, tok,
                       sizeof(tok));
    ok(n > 0, "sign");
    is_int(verify(tok, &c), FLEET_JWT_OK, "own token verifies");
    is_str(c.sub, "42", "sub");
    is_int(c.role, FLEET_ROLE_ADMIN, "role");
    is_str(c.jti, "j1", "jti");
    is_int(c.exp, NOW + 60, "exp");

    n = fleet_jwt_sign("42", FLEET_ROLE_USER, NULL, NOW - 120, NOW - 60,
                       (const unsigned char *) KEY, KEY_LEN, tok,
                       sizeof(tok));
    is_int(verify(tok, &c), FLEET_JWT_EXPIRED, "expired");

    n = fleet_jwt_sign("42", FLEET_ROLE_USER, NULL, NOW, NOW,
                       (const unsigned char *) KEY, KEY_LEN, tok,
                       sizeof(tok));
    is_int(verify(tok, &c), FLEET_JWT_EXPIRED, "exp == now is expired");

    forge(hs256, "{\"sub\":\"1\",\"role\":\"user\",\"exp\":1760000100,"
          "\"nbf\":1760000050}", EVP_sha256(), tok);
    is_int(verify(tok, &c), FLEET_JWT_NOT_YET_VALID, "nbf in the future");

    forge(hs256, "{\"sub\":\"1\",\"role\":\"user\",\"exp\":1760000100.5}",
          EVP_sha256(), tok);
    is_int(verify(tok, &c), FLEET_JWT_OK, "fractional exp accepted");

    forge("{\"alg\":\"none\",\"typ\":\"JWT\"}",
          "{\"sub\":\"1\",\"role\":\"admin\",\"exp\":1760000100}", NULL, tok);
    is_int(verify(tok, &c), FLEET_JWT_BAD_ALG, "alg none refused");

    forge("{\"alg\":\"HS512\"}",
          "{\"sub\":\"1\",\"role\":\"admin\",\"exp\":1760000100}",
          EVP_sha512(), tok);
    is_int(verify(tok, &c), FLEET_JWT_BAD_ALG, "HS512 refused");

    forge("{\"typ\":\"JWT\"}",
          "{\"sub\":\"1\",\"role\":\"admin\",\"exp\":1760000100}",
          EVP_sha256(), tok);
    is_int(verify(tok, &c), FLEET_JWT_BAD_ALG, "missing alg refused");

    forge(hs256, "{\"sub\":\"1\",\"role\":\"admin\"}", EVP_sha256(), tok);
    is_int(verify(tok, &c), FLEET_JWT_BAD_CLAIMS, "missing exp refused");

    forge(hs256, "{\"sub\":1,\"role\":\"admin\",\"exp\":1760000100}",
          EVP_sha256(), tok);
    is_int(verify(tok, &c), FLEET_JWT_BAD_CLAIMS, "numeric sub refused");

    forge(hs256, "{\"sub\":\"1\",\"role\":\"root\",\"exp\":1760000100}",
          EVP_sha256(), tok);
    is_int(verify(tok, &c), FLEET_JWT_BAD_CLAIMS, "unknown role refused");

    forge(hs256, "{\"sub\":\"1\",\"role\":\"service\",\"exp\":1760000100}",
          EVP_sha256(), tok);
    is_int(verify(tok, &c), FLEET_JWT_OK, "service role accepted");

    /* tamper: change the payload, keep the signature */
    n = fleet_jwt_sign("42", FLEET_ROLE_USER, NULL, NOW, NOW + 60,
                       (const unsigned char *) KEY, KEY_LEN, tok,
                       sizeof(tok));
    {
        char   forged[2048], *dot;

        forge(hs256, "{\"sub\":\"42\",\"role\":\"admin\",\"exp\":1760000060}",
              EVP_sha256(), forged);
        dot = strrchr(tok, '.');
        strcpy(strrchr(forged, '.'), dot);
        is_int(verify(forged, &c), FLEET_JWT_BAD_SIGNATURE,
               "tampered payload refused");
    }

    tok[n - 1] = tok[n - 1] == 'A' ? 'B' : 'A';
    ok(verify(tok, &c) != FLEET_JWT_OK, "changed signature refused");

    is_int(verify("a.b", &c), FLEET_JWT_MALFORMED, "two parts");
    is_int(verify("a.b.c.d", &c), FLEET_JWT_MALFORMED, "four parts");
    is_int(verify("", &c), FLEET_JWT_MALFORMED, "empty");
    is_int(verify("!!!.e30.AAAA", &c), FLEET_JWT_MALFORMED, "bad base64");

    {
        unsigned char  buf[16];

        is_int(fleet_b64url_decode("TQ", 2, buf), 1, "b64url 1 byte");
        is_int(fleet_b64url_decode("TR", 2, buf), -1,
               "b64url non-canonical tail refused");
        is_int(fleet_b64url_decode("T", 1, buf), -1, "b64url bad length");
    }

    return done_testing();
}
