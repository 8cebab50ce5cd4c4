/*
 * fleetgate: the device x-signature check (SPEC section 2).
 *
 * "fleet_signature on" guards any location, whatever serves it (proxy_pass
 * to an existing backend, "return", a static file): the body is read first
 * (like ngx_http_mirror_module does), then x-signature = hex SHA256(body ||
 * secret) is checked in constant time.  A request without a body signs its
 * request target (path and query).
 *
 * The check runs at the start of the location's rewrite phase rather than
 * in the access phase, so that "return" and "rewrite" in the same location
 * (which act in the rewrite phase) cannot bypass it.
 */

#include "ngx_fleet_module.h"

#include "fleet_sig.h"


static ngx_int_t ngx_fleet_signature_handler(ngx_http_request_t *r);
static void ngx_fleet_signature_body_handler(ngx_http_request_t *r);
static ngx_int_t ngx_fleet_signature_verdict(ngx_http_request_t *r);
static ngx_int_t ngx_fleet_signature_refuse(ngx_http_request_t *r,
    ngx_int_t status);


ngx_int_t
ngx_fleet_signature_init(ngx_conf_t *cf)
{
    ngx_http_handler_pt        *h;
    ngx_http_core_main_conf_t  *cmcf;

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    /* handlers of a phase run last-registered first: ours precedes the
     * rewrite module's, which registered before any add-on module */
    h = ngx_array_push(&cmcf->phases[NGX_HTTP_REWRITE_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_fleet_signature_handler;

    return NGX_OK;
}


/*
 * NGX_OK when the signature is right, NGX_HTTP_UNAUTHORIZED otherwise.
 * body empty: the request target is what the device signed.
 */

ngx_int_t
ngx_fleet_signature_check(ngx_http_request_t *r, ngx_str_t *secret,
    ngx_str_t *body)
{
    ngx_str_t         *signed_part;
    ngx_table_elt_t   *h;

    h = ngx_fleet_find_header(r, "x-signature", sizeof("x-signature") - 1);

    signed_part = body->len ? body : &r->unparsed_uri;

    if (h != NULL
        && fleet_sig_verify(signed_part->data, signed_part->len,
                            secret->data, secret->len,
                            h->value.data, h->value.len))
    {
        return NGX_OK;
    }

    ngx_fleet_metric_inc(NGX_FLEET_M_SIG_FAILURES);

    /* INFO: a client's fault; the signature itself is never logged */
    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "fleet: %s x-signature for \"%V\"",
                  h ? "wrong" : "missing", &r->uri);

    return NGX_HTTP_UNAUTHORIZED;
}


static ngx_int_t
ngx_fleet_signature_handler(ngx_http_request_t *r)
{
    ngx_int_t              rc;
    ngx_str_t              empty;
    ngx_fleet_ctx_t       *ctx;
    ngx_fleet_loc_conf_t  *flcf;

    flcf = ngx_http_get_module_loc_conf(r, ngx_fleet_module);

    if (!flcf->signature || r != r->main) {
        return NGX_DECLINED;
    }

    ctx = ngx_fleet_get_ctx(r);
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ctx->sig_checked) {
        return ngx_fleet_signature_verdict(r);
    }

    if (r->headers_in.content_length_n <= 0 && !r->headers_in.chunked) {
        ngx_str_null(&empty);

        ctx->sig_checked = 1;
        ctx->sig_status = ngx_fleet_signature_check(r, &flcf->device_secret,
                                                    &empty);

        return ngx_fleet_signature_verdict(r);
    }

    if (r->headers_in.content_length_n > (off_t) flcf->max_body_size) {
        return ngx_fleet_signature_refuse(r, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE);
    }

    rc = ngx_http_read_client_request_body(r,
                                           ngx_fleet_signature_body_handler);
    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    ngx_http_finalize_request(r, NGX_DONE);

    return NGX_DONE;
}


static void
ngx_fleet_signature_body_handler(ngx_http_request_t *r)
{
    ngx_str_t              body;
    ngx_fleet_ctx_t       *ctx;
    ngx_fleet_loc_conf_t  *flcf;

    ctx = ngx_http_get_module_ctx(r, ngx_fleet_module);
    flcf = ngx_http_get_module_loc_conf(r, ngx_fleet_module);

    ctx->sig_checked = 1;

    switch (ngx_fleet_request_body(r, &body)) {

    case NGX_OK:
        if (body.len > flcf->max_body_size) {
            ctx->sig_status = NGX_HTTP_REQUEST_ENTITY_TOO_LARGE;

        } else {
            ctx->sig_status = ngx_fleet_signature_check(r,
                                                        &flcf->device_secret,
                                                        &body);
        }
        break;

    case NGX_DECLINED:
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "fleet: request body was buffered to a file; make "
                      "client_body_buffer_size at least fleet_max_body_size");
        ctx->sig_status = NGX_HTTP_REQUEST_ENTITY_TOO_LARGE;
        break;

    default:
        ctx->sig_status = NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* the body stays in r->request_body for the content handler */
    r->preserve_body = 1;

    r->write_event_handler = ngx_http_core_run_phases;
    ngx_http_core_run_phases(r);
}


static ngx_int_t
ngx_fleet_signature_verdict(ngx_http_request_t *r)
{
    ngx_fleet_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_fleet_module);

    if (ctx->sig_status == NGX_OK) {
        /* NGX_DECLINED lets the rewrite phase go on */
        return NGX_DECLINED;
    }

    return ngx_fleet_signature_refuse(r, ctx->sig_status);
}


/* answers with the JSON envelope instead of nginx's HTML error page */

static ngx_int_t
ngx_fleet_signature_refuse(ngx_http_request_t *r, ngx_int_t status)
{
    ngx_int_t  rc;

    switch (status) {

    case NGX_HTTP_UNAUTHORIZED:
        rc = ngx_fleet_send_error(r, status, "INVALID_SIGNATURE",
                                  "x-signature is missing or does not match "
                                  "the request");
        break;

    case NGX_HTTP_REQUEST_ENTITY_TOO_LARGE:
        rc = ngx_fleet_send_error(r, status, "PAYLOAD_TOO_LARGE",
                                  "request body is too large");
        break;

    default:
        rc = ngx_fleet_send_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                  "INTERNAL_ERROR", "internal error");
    }

    ngx_http_finalize_request(r, rc);

    return NGX_DONE;
}
