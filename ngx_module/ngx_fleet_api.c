/*
 * fleetgate: the REST router.
 *
 * fleet_api serves every /api/v1 route of SPEC sections 4, 6, 8 and 9, and
 * the WebSocket upgrades and camera routes of section 7.  A
 * request is matched to a route, its body read (bounded), authenticated
 * (device signature or bearer token), parsed and validated, and only then
 * handed to the route, which usually runs one SQL function: PostgreSQL
 * holds the logic that must be atomic, the worker stays a thin,
 * non-blocking shell around it.
 */

#include "ngx_fleet_api.h"


static const ngx_fleet_route_t *ngx_fleet_api_match(ngx_http_request_t *r,
    ngx_str_t *captures, ngx_uint_t *path_found);
static ngx_int_t ngx_fleet_api_match_pattern(const char *pattern,
    ngx_str_t *uri, ngx_str_t *captures);
static ngx_int_t ngx_fleet_api_check_media_type(ngx_http_request_t *r);
static void ngx_fleet_api_body_handler(ngx_http_request_t *r);
static ngx_int_t ngx_fleet_api_run(ngx_fleet_api_t *api);
static ngx_int_t ngx_fleet_api_authenticate(ngx_fleet_api_t *api,
    ngx_int_t *rc);
static ngx_int_t ngx_fleet_api_nginx_error(ngx_http_request_t *r,
    ngx_int_t status);
static void ngx_fleet_api_cleanup(void *data);
static void ngx_fleet_api_http_done(ngx_fleet_pg_query_t *q, PGresult *res);


static const ngx_fleet_route_t  ngx_fleet_routes[] = {

    /* devices (x-signature) */

    { NGX_HTTP_POST, "/api/v1/devices/need-register",
      NGX_FLEET_AUTH_DEVICE, 1, ngx_fleet_api_need_register },

    { NGX_HTTP_POST, "/api/v1/devices/sync-state",
      NGX_FLEET_AUTH_DEVICE, 1, ngx_fleet_api_sync_state },

    { NGX_HTTP_POST, "/api/v1/device/sync-configs/{}",
      NGX_FLEET_AUTH_DEVICE, 1, ngx_fleet_api_sync_configs },

    { NGX_HTTP_POST, "/api/v1/device-event-logs/uploads",
      NGX_FLEET_AUTH_DEVICE, 1, ngx_fleet_api_upload_logs },

    /* payments (SPEC 8, seed 004): devices create and poll, the gateway
     * confirms (x-webhook-signature), admins confirm or cancel, users read
     * their own */

    { NGX_HTTP_POST, "/api/v1/payment-gateway/payments",
      NGX_FLEET_AUTH_DEVICE, 1, ngx_fleet_api_payment_create },

    { NGX_HTTP_GET, "/api/v1/payment-gateway/payments/{}/status",
      NGX_FLEET_AUTH_DEVICE, 0, ngx_fleet_api_payment_status },

    { NGX_HTTP_POST, "/api/v1/payment-gateway/webhook",
      NGX_FLEET_AUTH_WEBHOOK, 1, ngx_fleet_api_payment_webhook },

    { NGX_HTTP_POST, "/api/v1/payment-gateway/payments/{}/confirm",
      NGX_FLEET_AUTH_ADMIN, NGX_FLEET_BODY_OPTIONAL,
      ngx_fleet_api_payment_confirm },

    { NGX_HTTP_POST, "/api/v1/payment-gateway/payments/{}/cancel",
      NGX_FLEET_AUTH_ADMIN, NGX_FLEET_BODY_OPTIONAL,
      ngx_fleet_api_payment_cancel },

    { NGX_HTTP_GET, "/api/v1/payment-gateway/payments",
      NGX_FLEET_AUTH_USER, 0, ngx_fleet_api_payments_list },

    { NGX_HTTP_GET, "/api/v1/payment-gateway/payments/{}",
      NGX_FLEET_AUTH_USER, 0, ngx_fleet_api_payment_get },

    /* web (bearer token) */

    { NGX_HTTP_POST, "/api/v1/devices/claim",
      NGX_FLEET_AUTH_USER, 1, ngx_fleet_api_device_claim },

    { NGX_HTTP_GET, "/api/v1/devices",
      NGX_FLEET_AUTH_USER, 0, ngx_fleet_api_devices_list },

    { NGX_HTTP_GET, "/api/v1/devices/{}",
      NGX_FLEET_AUTH_USER, 0, ngx_fleet_api_device_get },

    { NGX_HTTP_PATCH, "/api/v1/devices/{}",
      NGX_FLEET_AUTH_USER, 1, ngx_fleet_api_device_patch },

    { NGX_HTTP_DELETE, "/api/v1/devices/{}",
      NGX_FLEET_AUTH_USER, 0, ngx_fleet_api_device_delete },

    { NGX_HTTP_POST, "/api/v1/devices/{}/sensors",
      NGX_FLEET_AUTH_USER, 1, ngx_fleet_api_sensor_create },

    { NGX_HTTP_GET, "/api/v1/sensors/{}/readings",
      NGX_FLEET_AUTH_USER, 0, ngx_fleet_api_sensor_readings },

    /* commands (SPEC 6) */

    { NGX_HTTP_POST, "/api/v1/devices/apply-config",
      NGX_FLEET_AUTH_USER, 1, ngx_fleet_api_apply_config },

    { NGX_HTTP_POST, "/api/v1/devices/bulk-restart",
      NGX_FLEET_AUTH_USER, 1, ngx_fleet_api_bulk_restart },

    { NGX_HTTP_POST, "/api/v1/devices/{}/restart",
      NGX_FLEET_AUTH_USER, NGX_FLEET_BODY_OPTIONAL, ngx_fleet_api_restart },

    { NGX_HTTP_POST, "/api/v1/devices/{}/commands",
      NGX_FLEET_AUTH_USER, 1, ngx_fleet_api_command },

    { NGX_HTTP_GET, "/api/v1/commands/{}",
      NGX_FLEET_AUTH_USER, 0, ngx_fleet_api_command_get },

    { NGX_HTTP_GET, "/api/v1/bulk/{}",
      NGX_FLEET_AUTH_USER, 0, ngx_fleet_api_bulk_get },

    { NGX_HTTP_GET, "/api/v1/devices/events/{}",
      NGX_FLEET_AUTH_USER, 0, ngx_fleet_api_stream },

    { NGX_HTTP_GET, "/api/v1/devices/command-events/{}",
      NGX_FLEET_AUTH_USER, 0, ngx_fleet_api_stream },

    { NGX_HTTP_GET, "/api/v1/devices/bulk-events/{}",
      NGX_FLEET_AUTH_USER, 0, ngx_fleet_api_stream },

    /* browser streams (SPEC 7): WebSocket upgrades */

    { NGX_HTTP_GET, "/ws/device",
      NGX_FLEET_AUTH_USER, 0, ngx_fleet_api_ws_camera },

    { NGX_HTTP_GET, "/ws/devices/all",
      NGX_FLEET_AUTH_ADMIN, 0, ngx_fleet_api_ws_cameras },

    { NGX_HTTP_GET, "/ws/sensor-data",
      NGX_FLEET_AUTH_USER, 0, ngx_fleet_api_ws_sensors },

    { NGX_HTTP_GET, "/ws/device/{}",
      NGX_FLEET_AUTH_USER, 0, ngx_fleet_api_ws_device },

    { NGX_HTTP_GET, "/ws/sensor/{}",
      NGX_FLEET_AUTH_USER, 0, ngx_fleet_api_ws_sensor },

    /* Socket.IO (SPEC 7): the token comes in the CONNECT packet */

    { NGX_HTTP_GET, "/socket.io",
      NGX_FLEET_AUTH_NONE, 0, ngx_fleet_api_socketio },

    { NGX_HTTP_POST, "/socket.io",
      NGX_FLEET_AUTH_NONE, 0, ngx_fleet_api_socketio },

    { NGX_HTTP_POST, "/api/v1/events",
      NGX_FLEET_AUTH_USER, 1, ngx_fleet_api_events_emit },

    /* seed 000's camera REST */

    { NGX_HTTP_GET, "/v1/devices",
      NGX_FLEET_AUTH_ADMIN, 0, ngx_fleet_api_camera_list },

    { NGX_HTTP_GET, "/v1/devices/{}",
      NGX_FLEET_AUTH_ADMIN, 0, ngx_fleet_api_camera_get },

    { NGX_HTTP_POST, "/api/v1/auth/login",
      NGX_FLEET_AUTH_NONE, 1, ngx_fleet_api_login },

    { NGX_HTTP_GET, "/api/v1/users/me",
      NGX_FLEET_AUTH_USER, 0, ngx_fleet_api_users_me },

    /* accounts (SPEC 9): ngx_fleet_api_users.c */

    { NGX_HTTP_POST, "/api/v1/auth/register",
      NGX_FLEET_AUTH_NONE, 1, ngx_fleet_api_register },

    { NGX_HTTP_POST, "/api/v1/auth/logout",
      NGX_FLEET_AUTH_USER, NGX_FLEET_BODY_OPTIONAL, ngx_fleet_api_logout },

    { NGX_HTTP_PATCH, "/api/v1/users/me",
      NGX_FLEET_AUTH_USER, 1, ngx_fleet_api_users_me_patch },

    { NGX_HTTP_GET, "/api/v1/admin/users",
      NGX_FLEET_AUTH_ADMIN, 0, ngx_fleet_api_admin_users },

    { NGX_HTTP_PATCH, "/api/v1/admin/users/{}",
      NGX_FLEET_AUTH_ADMIN, 1, ngx_fleet_api_admin_user_patch },

    { NGX_HTTP_POST, "/api/v1/admin/maintenance",
      NGX_FLEET_AUTH_ADMIN, 1, ngx_fleet_api_admin_maintenance },

    { NGX_HTTP_GET, "/api/v1/admin/audit",
      NGX_FLEET_AUTH_ADMIN, 0, ngx_fleet_api_admin_audit },

    { 0, NULL, 0, 0, NULL }
};


ngx_int_t
ngx_fleet_api_handler(ngx_http_request_t *r)
{
    ngx_int_t                  rc;
    ngx_uint_t                 path_found;
    ngx_fleet_ctx_t           *ctx;
    ngx_fleet_api_t           *api;
    ngx_fleet_loc_conf_t      *flcf;
    ngx_http_cleanup_t        *cln;
    const ngx_fleet_route_t   *route;
    ngx_str_t                  captures[NGX_FLEET_API_MAX_CAPTURES];

    route = ngx_fleet_api_match(r, captures, &path_found);

    if (route == NULL) {
        if (path_found) {
            return ngx_fleet_send_error(r, NGX_HTTP_NOT_ALLOWED,
                                        "METHOD_NOT_ALLOWED",
                                        "method not allowed on this route");
        }

        return ngx_fleet_send_error(r, NGX_HTTP_NOT_FOUND, "NOT_FOUND",
                                    "no such route");
    }

    flcf = ngx_http_get_module_loc_conf(r, ngx_fleet_module);

    if (route->json_body
        && (r->headers_in.content_length_n > 0 || r->headers_in.chunked
            || route->json_body != NGX_FLEET_BODY_OPTIONAL))
    {
        if (ngx_fleet_api_check_media_type(r) != NGX_OK) {
            return ngx_fleet_send_error(r, NGX_HTTP_UNSUPPORTED_MEDIA_TYPE,
                                        "UNSUPPORTED_MEDIA_TYPE",
                                        "Content-Type must be "
                                        "application/json");
        }
    }

    if (r->headers_in.content_length_n > (off_t) flcf->max_body_size) {
        return ngx_fleet_send_error(r, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                    "PAYLOAD_TOO_LARGE",
                                    "request body is too large");
    }

    ctx = ngx_fleet_get_ctx(r);
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    api = ngx_pcalloc(r->pool, sizeof(ngx_fleet_api_t));
    if (api == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln = ngx_http_cleanup_add(r, 0);
    if (cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln->handler = ngx_fleet_api_cleanup;
    cln->data = api;

    api->request = r;
    api->route = route;
    ngx_memcpy(api->captures, captures, sizeof(captures));
    ctx->api = api;

    rc = ngx_http_read_client_request_body(r, ngx_fleet_api_body_handler);

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return ngx_fleet_api_nginx_error(r, rc);
    }

    return NGX_DONE;
}


static const ngx_fleet_route_t *
ngx_fleet_api_match(ngx_http_request_t *r, ngx_str_t *captures,
    ngx_uint_t *path_found)
{
    ngx_uint_t                method, pass;
    const ngx_fleet_route_t  *route;

    *path_found = 0;

    /* HEAD is answered like GET, without the body */
    method = (r->method == NGX_HTTP_HEAD) ? NGX_HTTP_GET : r->method;

    /* literal paths first: GET on /devices/need-register is a 405, not a
     * device named "need-register" */
    for (pass = 0; pass < 2; pass++) {
        for (route = ngx_fleet_routes; route->pattern; route++) {
            if ((ngx_strstr(route->pattern, "{}") != NULL) != pass
                || ngx_fleet_api_match_pattern(route->pattern, &r->uri,
                                               captures)
                   != NGX_OK)
            {
                continue;
            }

            *path_found = 1;

            if (route->method == method) {
                return route;
            }
        }

        if (*path_found) {
            return NULL;
        }
    }

    return NULL;
}


/* "/api/v1/devices/{}/sensors": each {} captures one non-empty segment */

static ngx_int_t
ngx_fleet_api_match_pattern(const char *pattern, ngx_str_t *uri,
    ngx_str_t *captures)
{
    u_char      *p, *end, *start;
    ngx_uint_t   n;

    p = uri->data;
    end = uri->data + uri->len;
    n = 0;

    while (*pattern) {

        if (pattern[0] == '{' && pattern[1] == '}') {
            start = p;

            while (p < end && *p != '/') {
                p++;
            }

            if (p == start || n == NGX_FLEET_API_MAX_CAPTURES) {
                return NGX_DECLINED;
            }

            captures[n].data = start;
            captures[n].len = p - start;
            n++;

            pattern += 2;
            continue;
        }

        if (p == end || *p != (u_char) *pattern) {
            return NGX_DECLINED;
        }

        p++;
        pattern++;
    }

    /* a trailing slash is tolerated: clients differ */
    if (p < end && *p == '/' && p + 1 == end) {
        p++;
    }

    return (p == end) ? NGX_OK : NGX_DECLINED;
}


static ngx_int_t
ngx_fleet_api_check_media_type(ngx_http_request_t *r)
{
    size_t      len;
    u_char     *p, *end;
    ngx_str_t  *ct;

    if (r->headers_in.content_type == NULL) {
        /* ESP32 firmware often sends none; the body must still be JSON */
        return NGX_OK;
    }

    ct = &r->headers_in.content_type->value;
    p = ct->data;
    end = ct->data + ct->len;

    while (p < end && *p != ';' && *p != ' ') {
        p++;
    }

    len = p - ct->data;

    if ((len == sizeof("application/json") - 1
         && ngx_strncasecmp(ct->data, (u_char *) "application/json", len) == 0)
        || (len > sizeof("+json") - 1
            && ngx_strncasecmp(p - 5, (u_char *) "+json", 5) == 0))
    {
        return NGX_OK;
    }

    return NGX_DECLINED;
}


static void
ngx_fleet_api_body_handler(ngx_http_request_t *r)
{
    ngx_int_t         rc;
    ngx_fleet_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_fleet_module);

    rc = ngx_fleet_api_run(ctx->api);

    if (rc != NGX_DONE) {
        ngx_http_finalize_request(r, rc);
    }
}


static ngx_int_t
ngx_fleet_api_run(ngx_fleet_api_t *api)
{
    char                   msg[FLEET_JSON_MSG_MAX];
    ngx_int_t              rc;
    fleet_json_rc_t        jrc;
    ngx_http_request_t    *r;
    ngx_fleet_loc_conf_t  *flcf;

    r = api->request;
    flcf = ngx_http_get_module_loc_conf(r, ngx_fleet_module);

    switch (ngx_fleet_request_body(r, &api->body)) {

    case NGX_OK:
        break;

    case NGX_DECLINED:
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "fleet: request body was buffered to a file; make "
                      "client_body_buffer_size at least fleet_max_body_size");
        return ngx_fleet_send_error(r, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                    "PAYLOAD_TOO_LARGE",
                                    "request body is too large");

    default:
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (api->body.len > flcf->max_body_size) {
        return ngx_fleet_send_error(r, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                    "PAYLOAD_TOO_LARGE",
                                    "request body is too large");
    }

    if (ngx_fleet_api_authenticate(api, &rc) != NGX_OK) {
        return rc;
    }

    if (api->route->json_body == NGX_FLEET_BODY_OPTIONAL
        && api->body.len == 0)
    {
        return api->route->handler(api);
    }

    if (api->route->json_body) {
        jrc = fleet_json_parse_object((const char *) api->body.data,
                                      api->body.len, &api->json,
                                      msg, sizeof(msg));
        if (jrc != FLEET_JSON_OK) {
            return ngx_fleet_send_error(r, NGX_HTTP_BAD_REQUEST,
                                        jrc == FLEET_JSON_INVALID
                                        ? "INVALID_JSON" : "VALIDATION_ERROR",
                                        msg);
        }
    }

    return api->route->handler(api);
}


/* NGX_OK, or NGX_DECLINED with the refusal sent and its result in *rc */

static ngx_int_t
ngx_fleet_api_authenticate(ngx_fleet_api_t *api, ngx_int_t *rc)
{
    const char            *code, *message;
    ngx_http_request_t    *r;
    ngx_fleet_loc_conf_t  *flcf;

    r = api->request;

    switch (api->route->auth) {

    case NGX_FLEET_AUTH_DEVICE:
        flcf = ngx_http_get_module_loc_conf(r, ngx_fleet_module);

        if (flcf->device_secret.len == 0) {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "fleet: device route without fleet_device_secret");
            *rc = ngx_fleet_send_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                       "INTERNAL_ERROR",
                                       "device secret is not configured");
            return NGX_DECLINED;
        }

        if (ngx_fleet_signature_check(r, &flcf->device_secret, &api->body)
            != NGX_OK)
        {
            *rc = ngx_fleet_send_error(r, NGX_HTTP_UNAUTHORIZED,
                                       "INVALID_SIGNATURE",
                                       "x-signature is missing or does not "
                                       "match the request");
            return NGX_DECLINED;
        }

        return NGX_OK;

    case NGX_FLEET_AUTH_USER:
    case NGX_FLEET_AUTH_ADMIN:
        if (ngx_fleet_auth_bearer(r, &api->claims, &code, &message)
            != NGX_OK)
        {
            *rc = ngx_fleet_send_error(r, NGX_HTTP_UNAUTHORIZED, code,
                                       message);
            return NGX_DECLINED;
        }

        if (api->route->auth == NGX_FLEET_AUTH_ADMIN
            && api->claims.role != FLEET_ROLE_ADMIN)
        {
            *rc = ngx_fleet_send_error(r, NGX_HTTP_FORBIDDEN, "FORBIDDEN",
                                       "this route is for admins only");
            return NGX_DECLINED;
        }

        return NGX_OK;

    case NGX_FLEET_AUTH_WEBHOOK:
        return ngx_fleet_api_webhook_auth(api, rc);

    default:
        return NGX_OK;
    }
}


/* nginx's own refusals while reading the body, in our envelope */

static ngx_int_t
ngx_fleet_api_nginx_error(ngx_http_request_t *r, ngx_int_t status)
{
    switch (status) {

    case NGX_HTTP_REQUEST_ENTITY_TOO_LARGE:
        return ngx_fleet_send_error(r, status, "PAYLOAD_TOO_LARGE",
                                    "request body is too large");

    case NGX_HTTP_BAD_REQUEST:
        return ngx_fleet_send_error(r, status, "VALIDATION_ERROR",
                                    "malformed request body");

    default:
        return status;
    }
}


static void
ngx_fleet_api_cleanup(void *data)
{
    ngx_fleet_api_t  *api = data;

    ngx_fleet_pg_cancel(&api->query);

    if (api->cleanup) {
        api->cleanup(api);
    }

    if (api->json) {
        json_decref(api->json);
        api->json = NULL;
    }
}


/*
 * Runs a route function "fn($1, ...)" with C-string parameters (NULL is
 * SQL NULL).  Without a handler the answer goes through fleet_http() and
 * is sent as it is; a handler gets "SELECT fn(...)" raw.  Returns NGX_DONE,
 * or the response already sent when the database is unavailable.
 *
 * A request with a bearer token also has its token checked against the
 * revocation list (logout, sql/005_users.sql) in that same statement, so
 * the check costs no round trip: "CASE WHEN revoked THEN 401 ELSE fn(...)
 * END" evaluates fn only for a token still valid, so a revoked token
 * changes nothing.  Route functions return jsonb.
 */

ngx_int_t
ngx_fleet_api_call(ngx_fleet_api_t *api, ngx_fleet_pg_handler_pt handler,
    const char *call, ngx_uint_t n, ...)
{
    u_char                *sql, *p;
    size_t                 len;
    va_list                args;
    ngx_uint_t             i, guard;
    ngx_fleet_pg_query_t  *q;

    q = &api->query;

    /* set only when the route took a bearer token */
    guard = (api->claims.jti[0] != '\0');

    if (n + guard > NGX_FLEET_PG_MAX_PARAMS) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    len = ngx_strlen(call) + sizeof("SELECT * FROM fleet_http()")
          + sizeof("CASE WHEN fleet_token_revoked($NN) THEN "
                   "fleet_token_refused() ELSE  END") - 1;

    sql = ngx_pnalloc(api->request->pool, len);
    if (sql == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_cpymem(sql, "SELECT ", sizeof("SELECT ") - 1);

    if (handler == NULL) {
        p = ngx_cpymem(p, "* FROM fleet_http(",
                       sizeof("* FROM fleet_http(") - 1);
    }

    if (guard) {
        p = ngx_sprintf(p, "CASE WHEN fleet_token_revoked($%ui) THEN "
                        "fleet_token_refused() ELSE %s END", n + 1, call);

    } else {
        p = ngx_sprintf(p, "%s", call);
    }

    if (handler == NULL) {
        *p++ = ')';
    }

    *p = '\0';

    ngx_memzero(q, sizeof(ngx_fleet_pg_query_t));

    va_start(args, n);
    for (i = 0; i < n; i++) {
        q->params[i] = va_arg(args, const char *);
    }
    va_end(args);

    if (guard) {
        q->params[n] = api->claims.jti;
    }

    q->sql = (const char *) sql;
    q->nparams = (int) (n + guard);
    q->handler = handler ? handler : ngx_fleet_api_http_done;
    q->data = api;
    q->log = api->request->connection->log;

    if (ngx_fleet_pg_send(q) != NGX_OK) {
        ngx_log_error(NGX_LOG_ERR, q->log, 0, "fleet: %s", q->error);
        return ngx_fleet_api_unavailable(api);
    }

    return NGX_DONE;
}


ngx_int_t
ngx_fleet_api_unavailable(ngx_fleet_api_t *api)
{
    return ngx_fleet_send_error(api->request, NGX_HTTP_SERVICE_UNAVAILABLE,
                                "SERVICE_UNAVAILABLE",
                                "database unavailable, retry later");
}


void
ngx_fleet_api_finish(ngx_fleet_api_t *api, ngx_int_t rc)
{
    ngx_connection_t    *c;
    ngx_http_request_t  *r;

    r = api->request;
    c = r->connection;

    ngx_http_finalize_request(r, rc);
    ngx_http_run_posted_requests(c);
}


/* the jsonb the SQL functions return: first column of the first row */

json_t *
ngx_fleet_api_sql_value(ngx_fleet_api_t *api, PGresult *res)
{
    json_t        *j;
    json_error_t   err;

    if (PQntuples(res) != 1 || PQnfields(res) < 1 || PQgetisnull(res, 0, 0)) {
        ngx_log_error(NGX_LOG_ERR, api->request->connection->log, 0,
                      "fleet: SQL function returned no value");
        return NULL;
    }

    j = json_loadb(PQgetvalue(res, 0, 0), PQgetlength(res, 0, 0), 0, &err);
    if (j == NULL || !json_is_object(j)) {
        ngx_log_error(NGX_LOG_ERR, api->request->connection->log, 0,
                      "fleet: SQL function returned bad JSON: %s", err.text);
        if (j) {
            json_decref(j);
        }

        return NULL;
    }

    return j;
}


/*
 * SQL functions answer {"status": N, "data": ..., "message": ...} on
 * success, {"status": N, "error": CODE, "message": ...} on refusal, or
 * {"status": N, "body": ...} for routes with a seed's own shape.
 */

ngx_int_t
ngx_fleet_api_send_sql_json(ngx_fleet_api_t *api, PGresult *res)
{
    json_t     *j, *v, *out;
    ngx_int_t   rc, status;

    j = ngx_fleet_api_sql_value(api, res);
    if (j == NULL) {
        return ngx_fleet_send_error(api->request,
                                    NGX_HTTP_INTERNAL_SERVER_ERROR,
                                    "INTERNAL_ERROR", "internal error");
    }

    v = json_object_get(j, "status");
    status = json_is_integer(v) ? (ngx_int_t) json_integer_value(v) : 500;

    if (status < 200 || status > 599) {
        status = 500;
    }

    v = json_object_get(j, "error");

    if (json_is_string(v)) {
        rc = ngx_fleet_send_error(api->request, status, json_string_value(v),
                 json_string_value(json_object_get(j, "message"))
                 ? json_string_value(json_object_get(j, "message"))
                 : json_string_value(v));
        json_decref(j);
        return rc;
    }

    v = json_object_get(j, "body");

    if (v != NULL) {
        rc = ngx_fleet_send_json(api->request, status, v);
        json_decref(j);
        return rc;
    }

    out = json_object();
    if (out == NULL) {
        json_decref(j);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    json_object_set_new(out, "success", json_true());

    v = json_object_get(j, "data");
    if (v != NULL) {
        json_object_set(out, "data", v);
    }

    v = json_object_get(j, "message");
    if (v != NULL) {
        json_object_set(out, "message", v);
    }

    rc = ngx_fleet_send_json(api->request, status, out);

    json_decref(out);
    json_decref(j);

    return rc;
}


/* fleet_http() columns: status, error, message, body */

static void
ngx_fleet_api_http_done(ngx_fleet_pg_query_t *q, PGresult *res)
{
    ngx_int_t         rc, status;
    ngx_fleet_api_t  *api;

    api = q->data;

    if (res == NULL) {
        ngx_fleet_api_finish(api, ngx_fleet_api_unavailable(api));
        return;
    }

    if (PQntuples(res) != 1 || PQnfields(res) != 4 || PQgetisnull(res, 0, 0)) {
        ngx_log_error(NGX_LOG_ERR, q->log, 0,
                      "fleet: route function returned no answer");
        ngx_fleet_api_finish(api, ngx_fleet_send_error(api->request,
                                  NGX_HTTP_INTERNAL_SERVER_ERROR,
                                  "INTERNAL_ERROR", "internal error"));
        return;
    }

    status = ngx_atoi((u_char *) PQgetvalue(res, 0, 0),
                      PQgetlength(res, 0, 0));
    if (status < 200 || status > 599) {
        status = NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (!PQgetisnull(res, 0, 1)) {
        rc = ngx_fleet_send_error(api->request, status, PQgetvalue(res, 0, 1),
                                  PQgetisnull(res, 0, 2)
                                  ? PQgetvalue(res, 0, 1)
                                  : PQgetvalue(res, 0, 2));

    } else {
        rc = ngx_fleet_send_text(api->request, status,
                                 (u_char *) PQgetvalue(res, 0, 3),
                                 PQgetlength(res, 0, 3));

        if (api->succeeded) {
            api->succeeded(api);
        }
    }

    ngx_fleet_api_finish(api, rc);
}


/* NGX_OK, or NGX_DECLINED with the 400 sent and its result in *rc */

ngx_int_t
ngx_fleet_api_validate(ngx_fleet_api_t *api, const fleet_field_t *fields,
    ngx_int_t *rc)
{
    char  msg[FLEET_JSON_MSG_MAX];

    if (fleet_json_validate(api->json, fields, msg, sizeof(msg))
        == FLEET_JSON_OK)
    {
        return NGX_OK;
    }

    *rc = ngx_fleet_send_error(api->request, NGX_HTTP_BAD_REQUEST,
                               "VALIDATION_ERROR", msg);

    return NGX_DECLINED;
}


/* a validated string member of the body, or NULL */

const char *
ngx_fleet_api_string(ngx_fleet_api_t *api, const char *key)
{
    json_t  *v;

    v = json_object_get(api->json, key);

    return json_is_string(v) ? json_string_value(v) : NULL;
}


/* the n-th {} of the route, as a C string */

const char *
ngx_fleet_api_capture(ngx_fleet_api_t *api, ngx_uint_t n)
{
    u_char  *p;

    p = ngx_pnalloc(api->request->pool, api->captures[n].len + 1);
    if (p == NULL) {
        return NULL;
    }

    (void) ngx_cpystrn(p, api->captures[n].data, api->captures[n].len + 1);

    return (const char *) p;
}


/* compact JSON text of v, kept in the request pool until the query ran */

const char *
ngx_fleet_api_json_text(ngx_fleet_api_t *api, json_t *v)
{
    char    *text;
    size_t   len;
    u_char  *p;

    text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(15));
    if (text == NULL) {
        return NULL;
    }

    len = ngx_strlen(text);

    p = ngx_pnalloc(api->request->pool, len + 1);
    if (p != NULL) {
        ngx_memcpy(p, text, len + 1);
    }

    free(text);

    return (const char *) p;
}


/* a query argument, URL-decoded, as a C string; NULL when absent */

const char *
ngx_fleet_api_arg(ngx_fleet_api_t *api, const char *name)
{
    u_char     *dst, *src;
    ngx_str_t   v;

    if (ngx_http_arg(api->request, (u_char *) name, ngx_strlen(name), &v)
        != NGX_OK)
    {
        return NULL;
    }

    dst = ngx_pnalloc(api->request->pool, v.len + 1);
    if (dst == NULL) {
        return NULL;
    }

    src = v.data;
    v.data = dst;
    ngx_unescape_uri(&dst, &src, v.len, NGX_UNESCAPE_URI);
    *dst = '\0';

    return (const char *) v.data;
}


/*
 * An integer query argument within [min, max], def when absent.  NGX_OK,
 * or NGX_DECLINED with the 400 sent and its result in *rc.
 */

ngx_int_t
ngx_fleet_api_arg_int(ngx_fleet_api_t *api, const char *name, ngx_int_t def,
    ngx_int_t min, ngx_int_t max, ngx_int_t *value, ngx_int_t *rc)
{
    u_char       msg[128], *p;
    ngx_int_t    n;
    const char  *s;

    s = ngx_fleet_api_arg(api, name);

    if (s == NULL) {
        *value = def;
        return NGX_OK;
    }

    n = ngx_atoi((u_char *) s, ngx_strlen(s));

    if (n != NGX_ERROR && n >= min && n <= max) {
        *value = n;
        return NGX_OK;
    }

    p = ngx_snprintf(msg, sizeof(msg) - 1, "%s must be an integer between "
                     "%i and %i", name, min, max);
    *p = '\0';

    *rc = ngx_fleet_send_error(api->request, NGX_HTTP_BAD_REQUEST,
                               "VALIDATION_ERROR", (const char *) msg);

    return NGX_DECLINED;
}


/* the raw request body as a C string: JSON passed to PostgreSQL as the
 * client wrote it, numbers included */

const char *
ngx_fleet_api_body_text(ngx_fleet_api_t *api)
{
    u_char  *p;

    if (api->body.len == 0) {
        return "{}";
    }

    p = ngx_pnalloc(api->request->pool, api->body.len + 1);
    if (p == NULL) {
        return NULL;
    }

    ngx_memcpy(p, api->body.data, api->body.len);
    p[api->body.len] = '\0';

    return (const char *) p;
}


/* the {id} of the path; a malformed one is a device that does not exist */

const char *
ngx_fleet_api_device_id(ngx_fleet_api_t *api, ngx_int_t *rc)
{
    const char  *id;

    id = ngx_fleet_api_capture(api, 0);

    if (id == NULL) {
        *rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
        return NULL;
    }

    if (ngx_fleet_api_is_token(id) != NGX_OK || ngx_strlen(id) > 64) {
        *rc = ngx_fleet_send_error(api->request, NGX_HTTP_NOT_FOUND,
                                   "DEVICE_NOT_FOUND", "no such device");
        return NULL;
    }

    return id;
}


/* a number as a query parameter, kept in the request pool */

const char *
ngx_fleet_api_int_text(ngx_fleet_api_t *api, int64_t n)
{
    u_char  *p;

    p = ngx_pnalloc(api->request->pool, NGX_INT64_LEN + 1);
    if (p == NULL) {
        return NULL;
    }

    *ngx_sprintf(p, "%L", n) = '\0';

    return (const char *) p;
}
