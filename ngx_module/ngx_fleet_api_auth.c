/*
 * fleetgate: login and the caller's own account (SPEC sections 2 and 9).
 *
 * Password verification is PBKDF2 with hundreds of thousands of
 * iterations: it runs in nginx's thread pool so the event loop keeps
 * serving while it works.  An unknown email is verified against a dummy
 * hash of the same cost, so response time does not reveal which emails
 * exist.
 */

#include "ngx_fleet_api.h"

#include "fleet_password.h"


typedef struct {
    ngx_fleet_api_t            *api;        /* NULL once the request is gone */
    json_t                     *user;
    char                        password[NGX_FLEET_PASSWORD_BUF];
    size_t                      password_len;
    char                        hash[FLEET_PASSWORD_HASH_MAX + 1];
    ngx_int_t                   match;
    unsigned                    in_thread:1;
} ngx_fleet_login_t;


static void ngx_fleet_login_found(ngx_fleet_pg_query_t *q, PGresult *res);
static ngx_int_t ngx_fleet_login_verify(ngx_fleet_api_t *api,
    ngx_fleet_login_t *lg);
static void ngx_fleet_login_verified(ngx_fleet_login_t *lg);
static ngx_int_t ngx_fleet_login_respond(ngx_fleet_api_t *api,
    ngx_fleet_login_t *lg);
static void ngx_fleet_login_recorded(ngx_fleet_pg_query_t *q,
    PGresult *res);
static void ngx_fleet_login_cleanup(ngx_fleet_api_t *api);
static void ngx_fleet_login_free(ngx_fleet_login_t *lg);
#if (NGX_THREADS)
static void ngx_fleet_login_thread(void *data, ngx_log_t *log);
static void ngx_fleet_login_thread_done(ngx_event_t *ev);
#endif


static const fleet_field_t  ngx_fleet_login_fields[] = {
    { "email", FLEET_FIELD_STRING, 1, 1, 254 },
    { "password", FLEET_FIELD_STRING, 1, 1, 1024 },
    { NULL, 0, 0, 0, 0 }
};


ngx_int_t
ngx_fleet_api_login(ngx_fleet_api_t *api)
{
    ngx_int_t  rc;

    if (ngx_fleet_api_validate(api, ngx_fleet_login_fields, &rc) != NGX_OK) {
        return rc;
    }

    return ngx_fleet_api_call(api, ngx_fleet_login_found,
                              "fleet_login_lookup($1)", 1,
                              ngx_fleet_api_string(api, "email"));
}


static void
ngx_fleet_login_found(ngx_fleet_pg_query_t *q, PGresult *res)
{
    json_t             *j, *user, *hash;
    ngx_int_t           rc;
    const char         *pw;
    ngx_fleet_api_t    *api;
    ngx_fleet_login_t  *lg;

    api = q->data;

    if (res == NULL) {
        ngx_fleet_api_finish(api, ngx_fleet_api_unavailable(api));
        return;
    }

    j = ngx_fleet_api_sql_value(api, res);
    if (j == NULL) {
        ngx_fleet_api_finish(api, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    lg = ngx_calloc(sizeof(ngx_fleet_login_t), api->request->connection->log);
    if (lg == NULL) {
        json_decref(j);
        ngx_fleet_api_finish(api, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    lg->api = api;
    api->data = lg;
    api->cleanup = ngx_fleet_login_cleanup;

    user = json_object_get(j, "user");
    hash = json_object_get(user, "password_hash");

    if (json_is_string(hash)
        && json_string_length(hash) <= FLEET_PASSWORD_HASH_MAX)
    {
        lg->user = json_incref(user);
        ngx_cpystrn((u_char *) lg->hash, (u_char *) json_string_value(hash),
                    sizeof(lg->hash));
        json_object_del(lg->user, "password_hash");

    }

    json_decref(j);

    /* 1024 characters (the field's limit) of up to 4 bytes each fit */
    pw = ngx_fleet_api_string(api, "password");
    lg->password_len = ngx_min(ngx_strlen(pw), sizeof(lg->password) - 1);
    ngx_memcpy(lg->password, pw, lg->password_len);

    rc = ngx_fleet_login_verify(api, lg);

    if (rc != NGX_DONE) {
        ngx_fleet_api_finish(api, rc);
    }
}


static ngx_int_t
ngx_fleet_login_verify(ngx_fleet_api_t *api, ngx_fleet_login_t *lg)
{
    ngx_fleet_main_conf_t  *fmcf;
#if (NGX_THREADS)
    ngx_thread_task_t      *task;
#endif

    fmcf = ngx_http_get_module_main_conf(api->request, ngx_fleet_module);

    if (lg->hash[0] == '\0') {
        /* unknown email: the same work against a hash nothing matches */
        ngx_snprintf((u_char *) lg->hash, sizeof(lg->hash) - 1,
                     "pbkdf2_sha256$%ui$fleetgateunknownuser00$"
                     "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=%Z",
                     fmcf->password_iterations);
    }

#if (NGX_THREADS)

    if (fmcf->thread_pool) {
        task = ngx_calloc(sizeof(ngx_thread_task_t),
                          api->request->connection->log);
        if (task == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        task->ctx = lg;
        task->handler = ngx_fleet_login_thread;
        task->event.data = task;
        task->event.handler = ngx_fleet_login_thread_done;

        if (ngx_thread_task_post(fmcf->thread_pool, task) != NGX_OK) {
            ngx_free(task);
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        lg->in_thread = 1;

        return NGX_DONE;
    }

#endif

    /* without threads the verification blocks this worker: the README
     * says to build nginx --with-threads */
    lg->match = fleet_password_verify(lg->password, lg->password_len,
                                      lg->hash, ngx_strlen(lg->hash));

    return ngx_fleet_login_respond(api, lg);
}


#if (NGX_THREADS)

static void
ngx_fleet_login_thread(void *data, ngx_log_t *log)
{
    ngx_fleet_login_t  *lg = data;

    lg->match = fleet_password_verify(lg->password, lg->password_len,
                                      lg->hash, ngx_strlen(lg->hash));
}


static void
ngx_fleet_login_thread_done(ngx_event_t *ev)
{
    ngx_thread_task_t  *task;
    ngx_fleet_login_t  *lg;

    task = ev->data;
    lg = task->ctx;

    ngx_free(task);

    lg->in_thread = 0;

    ngx_fleet_login_verified(lg);
}

#endif


static void
ngx_fleet_login_verified(ngx_fleet_login_t *lg)
{
    ngx_int_t         rc;
    ngx_fleet_api_t  *api;

    api = lg->api;

    if (api == NULL) {
        /* the client went away while the thread worked */
        ngx_fleet_login_free(lg);
        return;
    }

    rc = ngx_fleet_login_respond(api, lg);

    if (rc != NGX_DONE) {
        ngx_fleet_api_finish(api, rc);
    }
}


static ngx_int_t
ngx_fleet_login_respond(ngx_fleet_api_t *api, ngx_fleet_login_t *lg)
{
    json_t  *id;

    ngx_explicit_memzero(lg->password, sizeof(lg->password));

    if (lg->user == NULL || lg->match != 1) {
        ngx_fleet_metric_inc(NGX_FLEET_M_AUTH_FAILURES);
        ngx_log_error(NGX_LOG_INFO, api->request->connection->log, 0,
                      "fleet: login failed");
        return ngx_fleet_send_error(api->request, NGX_HTTP_UNAUTHORIZED,
                                    "UNAUTHORIZED",
                                    "invalid email or password");
    }

    id = json_object_get(lg->user, "id");

    if (!json_is_string(id)) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* recorded and announced (user:logged_in) before the answer; the
     * token carries the role as stored now */
    return ngx_fleet_api_call(api, ngx_fleet_login_recorded,
                              "fleet_user_logged_in($1)", 1,
                              json_string_value(id));
}


static void
ngx_fleet_login_recorded(ngx_fleet_pg_query_t *q, PGresult *res)
{
    json_t           *j, *user;
    ngx_int_t         rc;
    ngx_fleet_api_t  *api;

    api = q->data;

    if (res == NULL) {
        ngx_fleet_api_finish(api, ngx_fleet_api_unavailable(api));
        return;
    }

    j = ngx_fleet_api_sql_value(api, res);
    if (j == NULL) {
        ngx_fleet_api_finish(api, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    user = json_object_get(json_object_get(j, "data"), "user");

    if (json_is_object(user)) {
        ngx_fleet_metric_inc(NGX_FLEET_M_LOGINS);
        rc = ngx_fleet_api_send_token(api, NGX_HTTP_OK, user,
                                      "Login successful");

    } else {
        /* the account went away while its password was checked */
        rc = ngx_fleet_api_send_sql_json(api, res);
    }

    json_decref(j);

    ngx_fleet_api_finish(api, rc);
}


/*
 * login's answer, registration's too: a new token for user {id, email,
 * name, role} in {"success", "data": {token, token_type, expires_in,
 * user}, "message"}.
 */

ngx_int_t
ngx_fleet_api_send_token(ngx_fleet_api_t *api, ngx_uint_t status,
    json_t *user, const char *message)
{
    char                    token[FLEET_JWT_MAX_LEN];
    json_t                 *out, *id, *role;
    ngx_int_t               rc;
    fleet_role_t            r;
    ngx_fleet_main_conf_t  *fmcf;

    fmcf = ngx_http_get_module_main_conf(api->request, ngx_fleet_module);

    id = json_object_get(user, "id");
    role = json_object_get(user, "role");
    r = json_is_string(role) ? fleet_role_parse(json_string_value(role))
                             : FLEET_ROLE_NONE;

    if (!json_is_string(id) || r == FLEET_ROLE_NONE
        || ngx_fleet_auth_issue(api->request, json_string_value(id), r,
                                token, sizeof(token))
           == 0)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    out = json_pack("{s:b, s:{s:s, s:s, s:I, s:O}, s:s}",
                    "success", 1,
                    "data",
                      "token", token,
                      "token_type", "Bearer",
                      "expires_in", (json_int_t) fmcf->jwt_ttl,
                      "user", user,
                    "message", message);
    if (out == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    rc = ngx_fleet_send_json(api->request, status, out);
    json_decref(out);

    return rc;
}


/* the request ends: free lg, unless a thread still works on it */

static void
ngx_fleet_login_cleanup(ngx_fleet_api_t *api)
{
    ngx_fleet_login_t  *lg;

    lg = api->data;
    api->data = NULL;

    if (lg == NULL) {
        return;
    }

    if (lg->in_thread) {
        lg->api = NULL;
        return;
    }

    ngx_fleet_login_free(lg);
}


static void
ngx_fleet_login_free(ngx_fleet_login_t *lg)
{
    if (lg->user) {
        json_decref(lg->user);
    }

    ngx_explicit_memzero(lg->password, sizeof(lg->password));
    ngx_free(lg);
}


ngx_int_t
ngx_fleet_api_users_me(ngx_fleet_api_t *api)
{
    return ngx_fleet_api_call(api, NULL, "fleet_user_me($1, $2)", 2,
                              api->claims.sub,
                              fleet_role_name(api->claims.role));
}
