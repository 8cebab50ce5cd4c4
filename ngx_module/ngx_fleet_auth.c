/*
 * fleetgate: bearer tokens on requests (SPEC section 2).
 */

#include "ngx_fleet_module.h"

#include <openssl/rand.h>

#include "fleet_sig.h"


static ngx_int_t ngx_fleet_auth_token(ngx_http_request_t *r, ngx_str_t *tok);
static ngx_int_t ngx_fleet_auth_subprotocol(ngx_http_request_t *r,
    ngx_str_t *tok);


/*
 * Verifies the request's JWT.  NGX_OK fills claims; otherwise returns
 * NGX_HTTP_UNAUTHORIZED with the SPEC error code and a message.
 */

ngx_int_t
ngx_fleet_auth_bearer(ngx_http_request_t *r, fleet_jwt_claims_t *claims,
    const char **code, const char **message)
{
    int                     rc;
    ngx_str_t               tok;
    ngx_fleet_main_conf_t  *fmcf;

    fmcf = ngx_http_get_module_main_conf(r, ngx_fleet_module);

    *code = "UNAUTHORIZED";

    if (ngx_fleet_auth_token(r, &tok) != NGX_OK) {
        *message = "a bearer token is required";
        goto refused;
    }

    rc = fleet_jwt_verify((const char *) tok.data, tok.len,
                          fmcf->jwt_secret.data, fmcf->jwt_secret.len,
                          (long long) ngx_time(), claims);

    if (rc == FLEET_JWT_OK) {
        ngx_fleet_auth_token_key(tok.data, tok.len, claims);
        return NGX_OK;
    }

    if (rc == FLEET_JWT_EXPIRED) {
        *code = "TOKEN_EXPIRED";
    }

    *message = fleet_jwt_strerror(rc);

refused:

    ngx_fleet_metric_inc(NGX_FLEET_M_AUTH_FAILURES);

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "fleet: token refused for \"%V\": %s", &r->uri, *message);

    return NGX_HTTP_UNAUTHORIZED;
}


/*
 * Authorization: Bearer <jwt>; ?access_token= for EventSource/WebSocket;
 * or, for browsers' WebSocket, the token offered as a subprotocol
 * (new WebSocket(url, ["access_token", jwt])).
 */

static ngx_int_t
ngx_fleet_auth_token(ngx_http_request_t *r, ngx_str_t *tok)
{
    ngx_table_elt_t  *h;

    h = r->headers_in.authorization;

    if (h != NULL) {
        if (h->value.len <= sizeof("Bearer ") - 1
            || ngx_strncasecmp(h->value.data, (u_char *) "Bearer ",
                               sizeof("Bearer ") - 1)
               != 0)
        {
            return NGX_DECLINED;
        }

        tok->data = h->value.data + sizeof("Bearer ") - 1;
        tok->len = h->value.len - (sizeof("Bearer ") - 1);

        while (tok->len && *tok->data == ' ') {
            tok->data++;
            tok->len--;
        }

        return tok->len ? NGX_OK : NGX_DECLINED;
    }

    if (ngx_http_arg(r, (u_char *) "access_token", sizeof("access_token") - 1,
                     tok)
        == NGX_OK && tok->len)
    {
        return NGX_OK;
    }

    return ngx_fleet_auth_subprotocol(r, tok);
}


static ngx_int_t
ngx_fleet_auth_subprotocol(ngx_http_request_t *r, ngx_str_t *tok)
{
    u_char           *p, *end, *start;
    ngx_uint_t        dots;
    ngx_table_elt_t  *h;

    h = ngx_fleet_find_header(r, "Sec-WebSocket-Protocol",
                              sizeof("Sec-WebSocket-Protocol") - 1);
    if (h == NULL) {
        return NGX_DECLINED;
    }

    p = h->value.data;
    end = p + h->value.len;

    while (p < end) {
        while (p < end && (*p == ' ' || *p == ',')) {
            p++;
        }

        start = p;
        dots = 0;

        while (p < end && *p != ',' && *p != ' ') {
            dots += (*p == '.');
            p++;
        }

        /* a JWT is three base64url parts */
        if (dots == 2 && p - start > 16) {
            tok->data = start;
            tok->len = p - start;
            return NGX_OK;
        }
    }

    return NGX_DECLINED;
}


size_t
ngx_fleet_auth_issue(ngx_http_request_t *r, const char *sub,
    fleet_role_t role, char *out, size_t size)
{
    u_char                  rnd[12], jti[25];
    time_t                  now;
    ngx_fleet_main_conf_t  *fmcf;

    fmcf = ngx_http_get_module_main_conf(r, ngx_fleet_module);

    /* the jti names the token so logout can revoke exactly this one */
    if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
        return 0;
    }

    *ngx_hex_dump(jti, rnd, sizeof(rnd)) = '\0';

    now = ngx_time();

    return fleet_jwt_sign(sub, role, (const char *) jti, (long long) now,
                          (long long) now + fmcf->jwt_ttl,
                          fmcf->jwt_secret.data, fmcf->jwt_secret.len,
                          out, size);
}


/*
 * The key a token is revoked by (logout, SQL revoked_tokens): its jti.
 * Tokens this module issues always have one; an external issuer's token
 * without one gets "sha256:" and the first 48 hex digits of its digest in
 * claims->jti instead, so it can be revoked all the same.
 */

void
ngx_fleet_auth_token_key(const u_char *token, size_t len,
    fleet_jwt_claims_t *claims)
{
    char  hex[FLEET_SHA256_HEX_LEN + 1];

    if (claims->jti[0] != '\0') {
        return;
    }

    fleet_sig_hex(token, len, (const unsigned char *) "", 0, hex);

    (void) ngx_snprintf((u_char *) claims->jti, sizeof(claims->jti),
                        "sha256:%*s%Z", (size_t) 48, hex);
}
