/*
 * fleetgate: payments (SPEC 8; seed 004 "Device QR Code Payment" and
 * "Timeout Fallback").
 *
 * A device asks for a PromptPay QR (x-signature); the worker makes the
 * ids, builds the EMVCo payload in C (common/fleet_promptpay.c) and stores
 * the PENDING row with one SQL function.  The gateway confirms through the
 * webhook (x-webhook-signature: sha256=<hex HMAC-SHA256(body, secret)>,
 * checked here before the body is even parsed), an admin may confirm or
 * cancel, and the bridge's timer cancels what expired.  Each change is a
 * row change plus an event row in one transaction; the bridges publish the
 * event rows on device/{chargeId}/payment-status, and a worker that made a
 * change nudges its bridge over the Unix socket so that happens at once.
 */

#include <openssl/rand.h>

#include "ngx_fleet_api.h"
#include "fleet_promptpay.h"
#include "fleet_webhook.h"


/* 100,000.00 baht: far above a car wash or a charger, far below a typo in
 * the firmware that sends baht * 10000 */
#define NGX_FLEET_PAYMENT_MAX_AMOUNT     10000000
#define NGX_FLEET_PAYMENT_MAX_PAID       99999999999LL

#define NGX_FLEET_PAYMENT_PREFIX_MAX     6
#define NGX_FLEET_PAYMENT_REF_RANDOM     6
#define NGX_FLEET_PAYMENT_ID_RANDOM      16
#define NGX_FLEET_PAYMENT_CHARGE_RANDOM  27

#define ngx_fleet_actor(api)                                                  \
    (api)->claims.sub, fleet_role_name((api)->claims.role)


typedef struct {
    u_char                     *id;             /* "c" + 24 base36 */
    u_char                     *charge_id;      /* "ch_" + 27 base62 */
    u_char                     *reference_id;   /* CCW-1758650767283-JY1R54 */
    u_char                     *qr_reference;   /* CCW1758650767283JY1R54 */
} ngx_fleet_payment_ids_t;


static const char *ngx_fleet_payment_amount_error(json_t *v);
static ngx_int_t ngx_fleet_payment_make_ids(ngx_fleet_api_t *api,
    ngx_fleet_payment_ids_t *ids);
static ngx_int_t ngx_fleet_payment_random(u_char *dst, size_t n,
    const char *alphabet, ngx_uint_t radix);
static const char *ngx_fleet_payment_charge_id(ngx_fleet_api_t *api,
    ngx_int_t *rc);
static ngx_int_t ngx_fleet_payment_admin_set(ngx_fleet_api_t *api,
    const char *status);
static void ngx_fleet_payment_changed(ngx_fleet_api_t *api);
static char *ngx_fleet_payments_check_field(ngx_conf_t *cf, ngx_str_t *v,
    size_t max, const char *name);


static const char  ngx_fleet_base36[] = "0123456789abcdefghijklmnopqrstuvwxyz";
static const char  ngx_fleet_base62[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                        "abcdefghijklmnopqrstuvwxyz";
static const char  ngx_fleet_upper36[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";


static const fleet_field_t  ngx_fleet_payment_device_fields[] = {
    { "device_id", FLEET_FIELD_STRING, 1, 1, 64 },
    { NULL, 0, 0, 0, 0 }
};

static const fleet_field_t  ngx_fleet_payment_fields[] = {
    { "payment_method", FLEET_FIELD_STRING, 1, 1, 32 },
    { "description", FLEET_FIELD_STRING, 0, 0, 255 },
    { NULL, 0, 0, 0, 0 }
};


/* POST /api/v1/payment-gateway/payments (seed 004 "Payment Request") */

ngx_int_t
ngx_fleet_api_payment_create(ngx_fleet_api_t *api)
{
    char                      raw[FLEET_PROMPTPAY_MAX];
    u_char                   *p;
    json_t                   *v;
    ngx_int_t                 rc;
    json_int_t                amount;
    const char               *device, *msg, *desc, *amount_text, *ttl_text;
    ngx_fleet_main_conf_t    *fmcf;
    ngx_fleet_payment_ids_t   ids;

    fmcf = ngx_http_get_module_main_conf(api->request, ngx_fleet_module);

    if (fmcf->promptpay_biller_id.len == 0) {
        ngx_log_error(NGX_LOG_ERR, api->request->connection->log, 0,
                      "fleet: payment requested without "
                      "fleet_promptpay_biller_id");
        return ngx_fleet_send_error(api->request,
                                    NGX_HTTP_INTERNAL_SERVER_ERROR,
                                    "INTERNAL_ERROR",
                                    "PromptPay payments are not configured");
    }

    if (ngx_fleet_api_validate(api, ngx_fleet_payment_device_fields, &rc)
        != NGX_OK)
    {
        return rc;
    }

    device = ngx_fleet_api_string(api, "device_id");

    if (ngx_fleet_api_is_token(device) != NGX_OK) {
        return ngx_fleet_send_error(api->request, NGX_HTTP_BAD_REQUEST,
                                    "VALIDATION_ERROR",
                                    "device_id may contain only letters, "
                                    "digits, '-', '_', ':' and '.'");
    }

    v = json_object_get(api->json, "amount");
    msg = ngx_fleet_payment_amount_error(v);

    if (msg != NULL) {
        return ngx_fleet_send_error(api->request, NGX_HTTP_BAD_REQUEST,
                                    "VALIDATION_ERROR", msg);
    }

    amount = json_integer_value(v);

    if (ngx_fleet_api_validate(api, ngx_fleet_payment_fields, &rc)
        != NGX_OK)
    {
        return rc;
    }

    if (ngx_strcmp(ngx_fleet_api_string(api, "payment_method"),
                   "QR_PROMPT_PAY")
        != 0)
    {
        return ngx_fleet_send_error(api->request, NGX_HTTP_BAD_REQUEST,
                                    "VALIDATION_ERROR",
                                    "payment_method must be QR_PROMPT_PAY "
                                    "(the only method supported)");
    }

    desc = ngx_fleet_api_string(api, "description");

    if (ngx_fleet_payment_make_ids(api, &ids) != NGX_OK) {
        return ngx_fleet_send_error(api->request,
                                    NGX_HTTP_INTERNAL_SERVER_ERROR,
                                    "INTERNAL_ERROR", "internal error");
    }

    /* the configured values were checked at startup, the reference and the
     * amount above: a refusal here is a bug, not the client's fault */
    if (fleet_promptpay_bill((const char *) fmcf->promptpay_biller_id.data,
                             (const char *) fmcf->promptpay_merchant_ref.data,
                             (const char *) ids.qr_reference,
                             (long long) amount, raw, sizeof(raw))
        == 0)
    {
        ngx_log_error(NGX_LOG_ALERT, api->request->connection->log, 0,
                      "fleet: PromptPay payload refused for reference \"%s\"",
                      ids.qr_reference);
        return ngx_fleet_send_error(api->request,
                                    NGX_HTTP_INTERNAL_SERVER_ERROR,
                                    "INTERNAL_ERROR", "internal error");
    }

    p = ngx_pnalloc(api->request->pool, ngx_strlen(raw) + 1);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    (void) ngx_cpystrn(p, (u_char *) raw, ngx_strlen(raw) + 1);

    amount_text = ngx_fleet_api_int_text(api, amount);
    ttl_text = ngx_fleet_api_int_text(api, fmcf->payment_ttl);
    if (amount_text == NULL || ttl_text == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_fleet_api_call(api, NULL,
                              "fleet_payment_create($1, $2, $3, $4, "
                              "$5::bigint, $6, $7, $8::int)", 8,
                              (const char *) ids.id,
                              (const char *) ids.charge_id,
                              (const char *) ids.reference_id, device,
                              amount_text, desc, (const char *) p, ttl_text);
}


/* a precise refusal for each way firmware gets the amount wrong */

static const char *
ngx_fleet_payment_amount_error(json_t *v)
{
    json_int_t  n;

    if (v == NULL || json_is_null(v)) {
        return "amount is required";
    }

    if (json_is_string(v)) {
        return "amount must be a number of satang, not a string "
               "(100 = 1.00 baht)";
    }

    if (json_is_real(v)) {
        return "amount must be a whole number of satang (100 = 1.00 baht)";
    }

    if (!json_is_integer(v)) {
        return "amount must be an integer number of satang "
               "(100 = 1.00 baht)";
    }

    n = json_integer_value(v);

    if (n <= 0) {
        return "amount must be greater than 0 satang";
    }

    if (n > NGX_FLEET_PAYMENT_MAX_AMOUNT) {
        return "amount must be at most 10000000 satang (100000.00 baht)";
    }

    return NULL;
}


/*
 * Ids shaped like the seed's: id "cmfwv9cqw0001u20olfjb9nyx" (a cuid: "c",
 * the time in base 36, then random), chargeId "ch_336wKuViqvVwHGx3GUj5Us5JTjk"
 * (27 base-62 characters, here all random: 160 bits), reference_id
 * "CCW-1758650767283-JY1R54" (prefix, epoch milliseconds, 6 random
 * characters).  The QR's tag 62/07 takes the reference without its dashes:
 * bank apps accept only upper-case letters and digits there.
 */

static ngx_int_t
ngx_fleet_payment_make_ids(ngx_fleet_api_t *api,
    ngx_fleet_payment_ids_t *ids)
{
    u_char                 *p, rnd[NGX_FLEET_PAYMENT_REF_RANDOM];
    size_t                  len;
    uint64_t                ms, t;
    ngx_uint_t              i;
    ngx_time_t             *tp;
    ngx_pool_t             *pool;
    ngx_fleet_main_conf_t  *fmcf;

    pool = api->request->pool;
    fmcf = ngx_http_get_module_main_conf(api->request, ngx_fleet_module);

    tp = ngx_timeofday();
    ms = (uint64_t) tp->sec * 1000 + tp->msec;

    ids->id = ngx_pnalloc(pool, 1 + 8 + NGX_FLEET_PAYMENT_ID_RANDOM + 1);
    ids->charge_id = ngx_pnalloc(pool, 3 + NGX_FLEET_PAYMENT_CHARGE_RANDOM
                                       + 1);

    len = fmcf->payment_reference_prefix.len + NGX_INT64_LEN
          + NGX_FLEET_PAYMENT_REF_RANDOM + 3;

    ids->reference_id = ngx_pnalloc(pool, len);
    ids->qr_reference = ngx_pnalloc(pool, len);

    if (ids->id == NULL || ids->charge_id == NULL || ids->reference_id == NULL
        || ids->qr_reference == NULL)
    {
        return NGX_ERROR;
    }

    /* "c", 8 base-36 digits of the time (enough until 2059), 16 random */
    ids->id[0] = 'c';

    for (i = 8, t = ms; i > 0; i--, t /= 36) {
        ids->id[i] = (u_char) ngx_fleet_base36[t % 36];
    }

    if (ngx_fleet_payment_random(ids->id + 9, NGX_FLEET_PAYMENT_ID_RANDOM,
                                 ngx_fleet_base36, 36)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    ids->id[9 + NGX_FLEET_PAYMENT_ID_RANDOM] = '\0';

    ngx_memcpy(ids->charge_id, "ch_", 3);

    if (ngx_fleet_payment_random(ids->charge_id + 3,
                                 NGX_FLEET_PAYMENT_CHARGE_RANDOM,
                                 ngx_fleet_base62, 62)
        != NGX_OK
        || ngx_fleet_payment_random(rnd, NGX_FLEET_PAYMENT_REF_RANDOM,
                                    ngx_fleet_upper36, 36)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    ids->charge_id[3 + NGX_FLEET_PAYMENT_CHARGE_RANDOM] = '\0';

    p = ngx_snprintf(ids->reference_id, len - 1, "%V-%uL-%*s",
                     &fmcf->payment_reference_prefix, ms,
                     (size_t) NGX_FLEET_PAYMENT_REF_RANDOM, rnd);
    *p = '\0';

    p = ngx_snprintf(ids->qr_reference, len - 1, "%V%uL%*s",
                     &fmcf->payment_reference_prefix, ms,
                     (size_t) NGX_FLEET_PAYMENT_REF_RANDOM, rnd);
    *p = '\0';

    return NGX_OK;
}


/* n characters of alphabet from OpenSSL's generator, without modulo bias */

static ngx_int_t
ngx_fleet_payment_random(u_char *dst, size_t n, const char *alphabet,
    ngx_uint_t radix)
{
    u_char      buf[64];
    size_t      i, got;
    ngx_uint_t  limit;

    limit = 256 - 256 % radix;
    got = 0;

    while (got < n) {
        if (RAND_bytes(buf, sizeof(buf)) != 1) {
            ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, 0,
                          "fleet: RAND_bytes() failed");
            return NGX_ERROR;
        }

        for (i = 0; i < sizeof(buf) && got < n; i++) {
            if (buf[i] < limit) {
                dst[got++] = (u_char) alphabet[buf[i] % radix];
            }
        }
    }

    return NGX_OK;
}


/* the {chargeId} of the path; a malformed one is a payment that does not
 * exist */

static const char *
ngx_fleet_payment_charge_id(ngx_fleet_api_t *api, ngx_int_t *rc)
{
    const char  *id;

    id = ngx_fleet_api_capture(api, 0);

    if (id == NULL) {
        *rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
        return NULL;
    }

    if (ngx_fleet_api_is_token(id) != NGX_OK || ngx_strlen(id) > 64) {
        *rc = ngx_fleet_send_error(api->request, NGX_HTTP_NOT_FOUND,
                                   "PAYMENT_NOT_FOUND", "no such payment");
        return NULL;
    }

    return id;
}


/* GET /api/v1/payment-gateway/payments/{chargeId}/status: the device's
 * fallback when MQTT is late; the x-signature is over this path */

ngx_int_t
ngx_fleet_api_payment_status(ngx_fleet_api_t *api)
{
    ngx_int_t    rc;
    const char  *charge;

    charge = ngx_fleet_payment_charge_id(api, &rc);
    if (charge == NULL) {
        return rc;
    }

    return ngx_fleet_api_call(api, NULL, "fleet_payment_status($1)", 1,
                              charge);
}


/* ---- the gateway's webhook ---- */

/*
 * x-webhook-signature: sha256=<hex HMAC-SHA256(raw body, secret)>, checked
 * before the body is parsed (the router calls this for
 * NGX_FLEET_AUTH_WEBHOOK routes).  The comparison is constant-time; the
 * header and the secret are never logged.
 */

ngx_int_t
ngx_fleet_api_webhook_auth(ngx_fleet_api_t *api, ngx_int_t *rc)
{
    ngx_str_t              *secret;
    const char             *msg;
    ngx_table_elt_t        *h;
    ngx_http_request_t     *r;
    ngx_fleet_main_conf_t  *fmcf;

    r = api->request;
    fmcf = ngx_http_get_module_main_conf(r, ngx_fleet_module);
    secret = &fmcf->payment_webhook_secret;

    if (secret->len == 0) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "fleet: payment webhook without "
                      "fleet_payment_webhook_secret");
        *rc = ngx_fleet_send_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                   "INTERNAL_ERROR",
                                   "payment webhook secret is not configured");
        return NGX_DECLINED;
    }

    h = ngx_fleet_find_header(r, "x-webhook-signature",
                              sizeof("x-webhook-signature") - 1);

    if (h != NULL
        && fleet_webhook_verify(api->body.data, api->body.len,
                                secret->data, secret->len,
                                h->value.data, h->value.len))
    {
        return NGX_OK;
    }

    ngx_fleet_metric_inc(NGX_FLEET_M_SIG_FAILURES);

    if (h == NULL) {
        msg = "x-webhook-signature is missing";

    } else if (h->value.len != FLEET_WEBHOOK_SIG_LEN
               || ngx_strncasecmp(h->value.data, (u_char *) "sha256=", 7)
                  != 0)
    {
        msg = "x-webhook-signature must be sha256=<64 hex digits of "
              "HMAC-SHA256(body, secret)>";

    } else {
        msg = "x-webhook-signature does not match the body";
    }

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "fleet: %s x-webhook-signature for \"%V\"",
                  h ? "wrong" : "missing", &r->uri);

    *rc = ngx_fleet_send_error(r, NGX_HTTP_UNAUTHORIZED, "INVALID_SIGNATURE",
                               msg);

    return NGX_DECLINED;
}


static const fleet_field_t  ngx_fleet_webhook_fields[] = {
    { "chargeId", FLEET_FIELD_STRING, 1, 1, 64 },
    { "status", FLEET_FIELD_STRING, 1, 1, 16 },
    { "paid_amount", FLEET_FIELD_INTEGER, 0, 0, NGX_FLEET_PAYMENT_MAX_PAID },
    { "transaction_ref", FLEET_FIELD_STRING, 0, 1, 128 },
    { NULL, 0, 0, 0, 0 }
};


/* POST /api/v1/payment-gateway/webhook {chargeId, status, paid_amount?,
 * transaction_ref?, timestamp} */

ngx_int_t
ngx_fleet_api_payment_webhook(ngx_fleet_api_t *api)
{
    json_t      *v;
    ngx_int_t    rc;
    const char  *charge, *status, *paid;

    if (ngx_fleet_api_validate(api, ngx_fleet_webhook_fields, &rc)
        != NGX_OK)
    {
        return rc;
    }

    status = ngx_fleet_api_string(api, "status");

    if (ngx_strcmp(status, "SUCCEEDED") != 0
        && ngx_strcmp(status, "FAILED") != 0
        && ngx_strcmp(status, "CANCELLED") != 0)
    {
        return ngx_fleet_send_error(api->request, NGX_HTTP_BAD_REQUEST,
                                    "VALIDATION_ERROR",
                                    "status must be SUCCEEDED, FAILED or "
                                    "CANCELLED");
    }

    v = json_object_get(api->json, "timestamp");

    if (v == NULL || json_is_null(v)) {
        return ngx_fleet_send_error(api->request, NGX_HTTP_BAD_REQUEST,
                                    "VALIDATION_ERROR",
                                    "timestamp is required");
    }

    if (!json_is_integer(v) && !json_is_string(v)) {
        return ngx_fleet_send_error(api->request, NGX_HTTP_BAD_REQUEST,
                                    "VALIDATION_ERROR",
                                    "timestamp must be epoch milliseconds or "
                                    "an ISO 8601 string");
    }

    charge = ngx_fleet_api_string(api, "chargeId");

    if (ngx_fleet_api_is_token(charge) != NGX_OK) {
        return ngx_fleet_send_error(api->request, NGX_HTTP_NOT_FOUND,
                                    "PAYMENT_NOT_FOUND", "no such payment");
    }

    v = json_object_get(api->json, "paid_amount");
    paid = json_is_integer(v)
           ? ngx_fleet_api_int_text(api, json_integer_value(v)) : NULL;

    api->succeeded = ngx_fleet_payment_changed;

    return ngx_fleet_api_call(api, NULL,
                              "fleet_payment_webhook($1, $2, $3::bigint, $4, "
                              "$5::jsonb)", 5,
                              charge, status, paid,
                              ngx_fleet_api_string(api, "transaction_ref"),
                              ngx_fleet_api_body_text(api));
}


/* ---- admins ---- */

ngx_int_t
ngx_fleet_api_payment_confirm(ngx_fleet_api_t *api)
{
    return ngx_fleet_payment_admin_set(api, "SUCCEEDED");
}


ngx_int_t
ngx_fleet_api_payment_cancel(ngx_fleet_api_t *api)
{
    return ngx_fleet_payment_admin_set(api, "CANCELLED");
}


static const fleet_field_t  ngx_fleet_admin_set_fields[] = {
    { "reason", FLEET_FIELD_STRING, 0, 1, 500 },
    { NULL, 0, 0, 0, 0 }
};


/* POST .../payments/{chargeId}/confirm or /cancel, an optional {reason} */

static ngx_int_t
ngx_fleet_payment_admin_set(ngx_fleet_api_t *api, const char *status)
{
    ngx_int_t    rc;
    const char  *charge;

    charge = ngx_fleet_payment_charge_id(api, &rc);
    if (charge == NULL) {
        return rc;
    }

    if (api->json != NULL
        && ngx_fleet_api_validate(api, ngx_fleet_admin_set_fields, &rc)
           != NGX_OK)
    {
        return rc;
    }

    api->succeeded = ngx_fleet_payment_changed;

    return ngx_fleet_api_call(api, NULL,
                              "fleet_payment_admin_set($1, $2, $3, $4, $5)",
                              5, ngx_fleet_actor(api), charge, status,
                              api->json ? ngx_fleet_api_string(api, "reason")
                                        : NULL);
}


/* ---- users: their own payments; admins all ---- */

ngx_int_t
ngx_fleet_api_payment_get(ngx_fleet_api_t *api)
{
    ngx_int_t    rc;
    const char  *charge;

    charge = ngx_fleet_payment_charge_id(api, &rc);
    if (charge == NULL) {
        return rc;
    }

    return ngx_fleet_api_call(api, NULL, "fleet_payment_get($1, $2, $3)", 3,
                              ngx_fleet_actor(api), charge);
}


/* GET /api/v1/payment-gateway/payments?device_id=&status=&limit=&offset= */

ngx_int_t
ngx_fleet_api_payments_list(ngx_fleet_api_t *api)
{
    ngx_int_t    rc, lim, off;
    const char  *device, *status, *limit, *offset;

    if (ngx_fleet_api_arg_int(api, "limit", 50, 1, 500, &lim, &rc) != NGX_OK
        || ngx_fleet_api_arg_int(api, "offset", 0, 0, NGX_MAX_INT32_VALUE,
                                 &off, &rc)
           != NGX_OK)
    {
        return rc;
    }

    device = ngx_fleet_api_arg(api, "device_id");

    if (device != NULL
        && (ngx_fleet_api_is_token(device) != NGX_OK
            || ngx_strlen(device) > 64))
    {
        return ngx_fleet_send_error(api->request, NGX_HTTP_BAD_REQUEST,
                                    "VALIDATION_ERROR",
                                    "device_id may contain only letters, "
                                    "digits, '-', '_', ':' and '.'");
    }

    status = ngx_fleet_api_arg(api, "status");

    if (status != NULL
        && ngx_strcmp(status, "PENDING") != 0
        && ngx_strcmp(status, "SUCCEEDED") != 0
        && ngx_strcmp(status, "FAILED") != 0
        && ngx_strcmp(status, "CANCELLED") != 0)
    {
        return ngx_fleet_send_error(api->request, NGX_HTTP_BAD_REQUEST,
                                    "VALIDATION_ERROR",
                                    "status must be PENDING, SUCCEEDED, "
                                    "FAILED or CANCELLED");
    }

    limit = ngx_fleet_api_int_text(api, lim);
    offset = ngx_fleet_api_int_text(api, off);
    if (limit == NULL || offset == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_fleet_api_call(api, NULL,
                              "fleet_payments_list($1, $2, $3, $4, "
                              "$5::int, $6::int)", 6,
                              ngx_fleet_actor(api), device, status, limit,
                              offset);
}


/* the fast path: the bridge publishes the change at once instead of at its
 * next sweep (a lost nudge only costs that sweep's delay); a repeat that
 * changed nothing costs the bridge one empty claim */

static void
ngx_fleet_payment_changed(ngx_fleet_api_t *api)
{
    (void) ngx_fleet_bridge_nudge("{\"op\":\"payments_pending\"}\n");
}


/* ---- configuration (called from the main conf's init) ---- */

char *
ngx_fleet_payments_init_conf(ngx_conf_t *cf, ngx_fleet_main_conf_t *fmcf)
{
    ngx_conf_init_value(fmcf->payment_ttl, 1800);

    if (fmcf->payment_ttl < 1 || fmcf->payment_ttl > (time_t) 7 * 86400) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"fleet_payment_ttl\" must be between 1s and 7d");
        return NGX_CONF_ERROR;
    }

    if (fmcf->payment_reference_prefix.data == NULL) {
        ngx_str_set(&fmcf->payment_reference_prefix, "CCW");
    }

    if (ngx_fleet_payments_check_field(cf, &fmcf->payment_reference_prefix,
                                       NGX_FLEET_PAYMENT_PREFIX_MAX,
                                       "fleet_payment_reference_prefix")
        != NGX_CONF_OK)
    {
        return NGX_CONF_ERROR;
    }

    if ((fmcf->promptpay_biller_id.len == 0)
        != (fmcf->promptpay_merchant_ref.len == 0))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"fleet_promptpay_biller_id\" and "
                           "\"fleet_promptpay_merchant_ref\" go together");
        return NGX_CONF_ERROR;
    }

    /* the limits of tag 30's sub-tags in a Thai bill payment */
    if (fmcf->promptpay_biller_id.len
        && (ngx_fleet_payments_check_field(cf, &fmcf->promptpay_biller_id, 15,
                                           "fleet_promptpay_biller_id")
            != NGX_CONF_OK
            || ngx_fleet_payments_check_field(cf,
                                              &fmcf->promptpay_merchant_ref,
                                              20,
                                              "fleet_promptpay_merchant_ref")
               != NGX_CONF_OK))
    {
        return NGX_CONF_ERROR;
    }

    if (fmcf->payment_webhook_secret.len
        && fmcf->payment_webhook_secret.len < 16)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"fleet_payment_webhook_secret\" must be at "
                           "least 16 bytes");
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* values that go into the QR: 1..max upper-case letters or digits (what
 * Thai bank apps accept); configuration words are NUL-terminated */

static char *
ngx_fleet_payments_check_field(ngx_conf_t *cf, ngx_str_t *v, size_t max,
    const char *name)
{
    size_t  i;

    for (i = 0; i < v->len; i++) {
        if (!((v->data[i] >= 'A' && v->data[i] <= 'Z')
              || (v->data[i] >= '0' && v->data[i] <= '9')))
        {
            break;
        }
    }

    if (v->len == 0 || v->len > max || i != v->len) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%s\" must be 1 to %uz upper-case letters or "
                           "digits", name, max);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}
