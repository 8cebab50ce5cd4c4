/*
 * fleetgate: accounts (SPEC sections 2 and 9, seed 003's account and admin
 * events): registration, logout, the caller's profile, and the admin's
 * users, maintenance notice and audit log.
 *
 * Passwords are hashed and verified with PBKDF2 in nginx's thread pool,
 * as login does (ngx_fleet_api_auth.c): the event loop keeps serving while
 * a hash takes its hundreds of milliseconds.  A password never reaches
 * PostgreSQL or a log: the worker sends the hash.  The SQL functions
 * (sql/005_users.sql) make each change and emit its events atomically.
 */

#include "ngx_fleet_api.h"

#include "fleet_account.h"
#include "fleet_password.h"


#define ngx_fleet_actor(api)                                                  \
    (api)->claims.sub, fleet_role_name((api)->claims.role)


typedef struct ngx_fleet_pw_job_s  ngx_fleet_pw_job_t;

/* returns NGX_DONE, or a response already sent, like a route handler */
typedef ngx_int_t (*ngx_fleet_pw_done_pt)(ngx_fleet_api_t *api,
    ngx_fleet_pw_job_t *job);


/*
 * Password work for one request: verify "current" against "stored",
 * then (when it matched, or nothing had to be verified) hash "password".
 * Heap memory, not the request pool: a thread may still use it when the
 * client goes away.
 */
struct ngx_fleet_pw_job_s {
    ngx_fleet_api_t            *api;        /* NULL once the request is gone */
    ngx_fleet_pw_done_pt        done;
    ngx_uint_t                  iterations;
    const char                 *changes;    /* PATCH: {name, email} */
    char                        current[NGX_FLEET_PASSWORD_BUF];
    size_t                      current_len;
    char                        stored[FLEET_PASSWORD_HASH_MAX + 1];
    char                        password[NGX_FLEET_PASSWORD_BUF];
    size_t                      password_len;
    char                        hash[FLEET_PASSWORD_HASH_MAX + 1];
    int                         verified;   /* 1 match, 0 not, -1 bad hash */
    int                         hashed;     /* 0 when hash is made */
    unsigned                    verify:1;
    unsigned                    make_hash:1;
    unsigned                    in_thread:1;
};


static ngx_fleet_pw_job_t *ngx_fleet_pw_job(ngx_fleet_api_t *api,
    ngx_fleet_pw_done_pt done);
static ngx_int_t ngx_fleet_pw_copy(char *dst, size_t size, size_t *len,
    const char *src);
static ngx_int_t ngx_fleet_pw_start(ngx_fleet_api_t *api,
    ngx_fleet_pw_job_t *job);
static void ngx_fleet_pw_work(ngx_fleet_pw_job_t *job);
#if (NGX_THREADS)
static void ngx_fleet_pw_thread(void *data, ngx_log_t *log);
static void ngx_fleet_pw_thread_done(ngx_event_t *ev);
#endif
static void ngx_fleet_pw_cleanup(ngx_fleet_api_t *api);
static void ngx_fleet_pw_free(ngx_fleet_pw_job_t *job);

static ngx_int_t ngx_fleet_only_keys(ngx_fleet_api_t *api,
    const char **keys, const char *message, ngx_int_t *rc);
static ngx_int_t ngx_fleet_refuse(ngx_fleet_api_t *api, const char *message);
static ngx_int_t ngx_fleet_register_hashed(ngx_fleet_api_t *api,
    ngx_fleet_pw_job_t *job);
static void ngx_fleet_register_done(ngx_fleet_pg_query_t *q, PGresult *res);
static void ngx_fleet_me_secret(ngx_fleet_pg_query_t *q, PGresult *res);
static ngx_int_t ngx_fleet_me_checked(ngx_fleet_api_t *api,
    ngx_fleet_pw_job_t *job);
static ngx_int_t ngx_fleet_me_update(ngx_fleet_api_t *api,
    const char *changes, const char *hash, const char *checked);
static ngx_int_t ngx_fleet_page(ngx_fleet_api_t *api, const char *call);


/* ------------------------------------------------------------------ */
/* POST /api/v1/auth/register {email, password, name} */

static const fleet_field_t  ngx_fleet_register_fields[] = {
    { "email", FLEET_FIELD_STRING, 1, 1, FLEET_EMAIL_MAX },
    { "password", FLEET_FIELD_STRING, 1, 1, FLEET_PASSWORD_MAX_CHARS },
    { "name", FLEET_FIELD_STRING, 1, 1, FLEET_NAME_MAX_CHARS },
    { NULL, 0, 0, 0, 0 }
};

static const char  *ngx_fleet_register_keys[] = {
    "email", "password", "name", NULL
};


ngx_int_t
ngx_fleet_api_register(ngx_fleet_api_t *api)
{
    ngx_int_t               rc;
    const char             *email, *name, *pw, *msg;
    ngx_fleet_pw_job_t     *job;
    ngx_fleet_main_conf_t  *fmcf;

    fmcf = ngx_http_get_module_main_conf(api->request, ngx_fleet_module);

    if (!fmcf->registration) {
        return ngx_fleet_send_error(api->request, NGX_HTTP_FORBIDDEN,
                                    "FORBIDDEN", "registration is closed");
    }

    if (ngx_fleet_api_validate(api, ngx_fleet_register_fields, &rc) != NGX_OK
        || ngx_fleet_only_keys(api, ngx_fleet_register_keys,
                               "only email, password and name can be given",
                               &rc)
           != NGX_OK)
    {
        return rc;
    }

    email = ngx_fleet_api_string(api, "email");
    name = ngx_fleet_api_string(api, "name");
    pw = ngx_fleet_api_string(api, "password");

    msg = fleet_account_email_check(email, ngx_strlen(email));

    if (msg == NULL) {
        msg = fleet_account_name_check(name, ngx_strlen(name));
    }

    if (msg == NULL) {
        msg = fleet_account_password_check(pw, ngx_strlen(pw), email,
                                           ngx_strlen(email));
    }

    if (msg) {
        return ngx_fleet_refuse(api, msg);
    }

    job = ngx_fleet_pw_job(api, ngx_fleet_register_hashed);
    if (job == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_fleet_pw_copy(job->password, sizeof(job->password),
                          &job->password_len, pw)
        != NGX_OK)
    {
        return ngx_fleet_refuse(api, "password must be at most 1024 "
                                     "characters");
    }

    job->make_hash = 1;

    return ngx_fleet_pw_start(api, job);
}


static ngx_int_t
ngx_fleet_register_hashed(ngx_fleet_api_t *api, ngx_fleet_pw_job_t *job)
{
    if (job->hashed != 0) {
        ngx_log_error(NGX_LOG_ALERT, api->request->connection->log, 0,
                      "fleet: password hashing failed");
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_fleet_api_call(api, ngx_fleet_register_done,
                              "fleet_register($1, $2, $3)", 3,
                              ngx_fleet_api_string(api, "email"),
                              ngx_fleet_api_string(api, "name"), job->hash);
}


static void
ngx_fleet_register_done(ngx_fleet_pg_query_t *q, PGresult *res)
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
        /* signed in at once: login's answer, 201 */
        rc = ngx_fleet_api_send_token(api, NGX_HTTP_CREATED, user,
                                      "Registration successful");

    } else {
        /* 409: the email is taken */
        rc = ngx_fleet_api_send_sql_json(api, res);
    }

    json_decref(j);

    ngx_fleet_api_finish(api, rc);
}


/* ------------------------------------------------------------------ */
/*
 * POST /api/v1/auth/logout: the presented token is revoked (its jti goes
 * on the revocation list; the case for a list rather than short-lived
 * tokens is made in sql/005_users.sql).  Every later request with it is
 * refused 401 by the check ngx_fleet_api_call adds to each route's query,
 * and Socket.IO refuses it at CONNECT.
 */

ngx_int_t
ngx_fleet_api_logout(ngx_fleet_api_t *api)
{
    const char  *exp;

    exp = ngx_fleet_api_int_text(api, api->claims.exp);
    if (exp == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_fleet_api_call(api, NULL,
                              "fleet_logout($1, $2, $3, $4::bigint)", 4,
                              ngx_fleet_actor(api), api->claims.jti, exp);
}


/* ------------------------------------------------------------------ */
/*
 * PATCH /api/v1/users/me {name?, email?, password?, current_password?}.
 * A new email or password needs the current password (a stolen token
 * alone cannot take the account over).  Steps: the stored hash
 * (fleet_user_secret), current_password verified and the new password
 * hashed in a thread, then fleet_user_me_patch, which refuses the change
 * if the password changed in between.
 */

static const fleet_field_t  ngx_fleet_me_fields[] = {
    { "name", FLEET_FIELD_STRING, 0, 1, FLEET_NAME_MAX_CHARS },
    { "email", FLEET_FIELD_STRING, 0, 1, FLEET_EMAIL_MAX },
    { "password", FLEET_FIELD_STRING, 0, 1, FLEET_PASSWORD_MAX_CHARS },
    { "current_password", FLEET_FIELD_STRING, 0, 1,
      FLEET_PASSWORD_MAX_CHARS },
    { NULL, 0, 0, 0, 0 }
};

static const char  *ngx_fleet_me_keys[] = {
    "name", "email", "password", "current_password", NULL
};


ngx_int_t
ngx_fleet_api_users_me_patch(ngx_fleet_api_t *api)
{
    json_t              *changes;
    ngx_int_t            rc;
    const char          *name, *email, *pw, *current, *msg, *text;
    ngx_fleet_pw_job_t  *job;

    if (ngx_fleet_only_keys(api, ngx_fleet_me_keys,
                            "only name, email and password can be changed "
                            "(with current_password)", &rc)
        != NGX_OK
        || ngx_fleet_api_validate(api, ngx_fleet_me_fields, &rc) != NGX_OK)
    {
        return rc;
    }

    name = ngx_fleet_api_string(api, "name");
    email = ngx_fleet_api_string(api, "email");
    pw = ngx_fleet_api_string(api, "password");
    current = ngx_fleet_api_string(api, "current_password");

    if (name == NULL && email == NULL && pw == NULL) {
        return ngx_fleet_refuse(api, "nothing to change: give name, email "
                                     "or password");
    }

    if ((email || pw) && current == NULL) {
        return ngx_fleet_refuse(api, "current_password is required to "
                                     "change the email or the password");
    }

    msg = NULL;

    if (name) {
        msg = fleet_account_name_check(name, ngx_strlen(name));
    }

    if (msg == NULL && email) {
        msg = fleet_account_email_check(email, ngx_strlen(email));
    }

    if (msg == NULL && pw) {
        msg = fleet_account_password_check(pw, ngx_strlen(pw), email,
                                           email ? ngx_strlen(email) : 0);
    }

    if (msg) {
        return ngx_fleet_refuse(api, msg);
    }

    /* what the database gets: never a password */
    changes = json_object();
    if (changes == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (name) {
        json_object_set(changes, "name", json_object_get(api->json, "name"));
    }

    if (email) {
        json_object_set(changes, "email",
                        json_object_get(api->json, "email"));
    }

    text = ngx_fleet_api_json_text(api, changes);
    json_decref(changes);

    if (text == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (current == NULL) {
        return ngx_fleet_me_update(api, text, NULL, NULL);
    }

    job = ngx_fleet_pw_job(api, ngx_fleet_me_checked);
    if (job == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    job->changes = text;
    job->verify = 1;

    if (ngx_fleet_pw_copy(job->current, sizeof(job->current),
                          &job->current_len, current)
        != NGX_OK
        || (pw && ngx_fleet_pw_copy(job->password, sizeof(job->password),
                                    &job->password_len, pw)
                  != NGX_OK))
    {
        return ngx_fleet_refuse(api, "password must be at most 1024 "
                                     "characters");
    }

    job->make_hash = (pw != NULL);

    return ngx_fleet_api_call(api, ngx_fleet_me_secret,
                              "fleet_user_secret($1, $2)", 2,
                              ngx_fleet_actor(api));
}


static void
ngx_fleet_me_secret(ngx_fleet_pg_query_t *q, PGresult *res)
{
    json_t              *j, *hash;
    ngx_int_t            rc;
    ngx_fleet_api_t     *api;
    ngx_fleet_pw_job_t  *job;

    api = q->data;
    job = api->data;

    if (res == NULL) {
        ngx_fleet_api_finish(api, ngx_fleet_api_unavailable(api));
        return;
    }

    j = ngx_fleet_api_sql_value(api, res);
    if (j == NULL) {
        ngx_fleet_api_finish(api, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    hash = json_object_get(json_object_get(j, "data"), "password_hash");

    if (!json_is_string(hash)) {
        /* 401: unknown user, or a revoked token */
        json_decref(j);
        ngx_fleet_api_finish(api, ngx_fleet_api_send_sql_json(api, res));
        return;
    }

    ngx_cpystrn((u_char *) job->stored, (u_char *) json_string_value(hash),
                sizeof(job->stored));
    json_decref(j);

    rc = ngx_fleet_pw_start(api, job);

    if (rc != NGX_DONE) {
        ngx_fleet_api_finish(api, rc);
    }
}


static ngx_int_t
ngx_fleet_me_checked(ngx_fleet_api_t *api, ngx_fleet_pw_job_t *job)
{
    if (job->verified != 1) {
        ngx_fleet_metric_inc(NGX_FLEET_M_AUTH_FAILURES);
        ngx_log_error(NGX_LOG_INFO, api->request->connection->log, 0,
                      "fleet: profile change refused: wrong current "
                      "password for user \"%s\"", api->claims.sub);
        return ngx_fleet_send_error(api->request, NGX_HTTP_FORBIDDEN,
                                    "FORBIDDEN",
                                    "current_password is incorrect");
    }

    if (job->make_hash && job->hashed != 0) {
        ngx_log_error(NGX_LOG_ALERT, api->request->connection->log, 0,
                      "fleet: password hashing failed");
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_fleet_me_update(api, job->changes,
                               job->make_hash ? job->hash : NULL,
                               job->stored);
}


static ngx_int_t
ngx_fleet_me_update(ngx_fleet_api_t *api, const char *changes,
    const char *hash, const char *checked)
{
    return ngx_fleet_api_call(api, NULL,
                              "fleet_user_me_patch($1, $2, $3::jsonb, $4, "
                              "$5)", 5,
                              ngx_fleet_actor(api), changes, hash, checked);
}


/* ------------------------------------------------------------------ */
/* admin: users, roles, maintenance, audit */

ngx_int_t
ngx_fleet_api_admin_users(ngx_fleet_api_t *api)
{
    return ngx_fleet_page(api, "fleet_admin_users($1, $2, $3::int, $4::int)");
}


ngx_int_t
ngx_fleet_api_admin_audit(ngx_fleet_api_t *api)
{
    return ngx_fleet_page(api, "fleet_admin_audit($1, $2, $3::int, $4::int)");
}


/* a list route with ?limit (1..500, 50) and ?offset */

static ngx_int_t
ngx_fleet_page(ngx_fleet_api_t *api, const char *call)
{
    ngx_int_t    rc, lim, off;
    const char  *limit, *offset;

    if (ngx_fleet_api_arg_int(api, "limit", 50, 1, 500, &lim, &rc) != NGX_OK
        || ngx_fleet_api_arg_int(api, "offset", 0, 0, NGX_MAX_INT32_VALUE,
                                 &off, &rc)
           != NGX_OK)
    {
        return rc;
    }

    limit = ngx_fleet_api_int_text(api, lim);
    offset = ngx_fleet_api_int_text(api, off);
    if (limit == NULL || offset == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_fleet_api_call(api, NULL, call, 4, ngx_fleet_actor(api),
                              limit, offset);
}


static const fleet_field_t  ngx_fleet_role_fields[] = {
    { "role", FLEET_FIELD_STRING, 1, 1, 16 },
    { NULL, 0, 0, 0, 0 }
};

static const char  *ngx_fleet_role_keys[] = { "role", NULL };


ngx_int_t
ngx_fleet_api_admin_user_patch(ngx_fleet_api_t *api)
{
    size_t       i, len;
    ngx_int_t    rc;
    const char  *id, *role;

    id = ngx_fleet_api_capture(api, 0);
    if (id == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    len = ngx_strlen(id);

    for (i = 0; i < len; i++) {
        if (id[i] < '0' || id[i] > '9') {
            break;
        }
    }

    if (i != len || len > 18) {
        return ngx_fleet_send_error(api->request, NGX_HTTP_NOT_FOUND,
                                    "NOT_FOUND", "no such user");
    }

    if (ngx_fleet_only_keys(api, ngx_fleet_role_keys,
                            "only role can be changed", &rc)
        != NGX_OK
        || ngx_fleet_api_validate(api, ngx_fleet_role_fields, &rc) != NGX_OK)
    {
        return rc;
    }

    role = ngx_fleet_api_string(api, "role");

    if (ngx_strcmp(role, "admin") != 0 && ngx_strcmp(role, "user") != 0) {
        return ngx_fleet_refuse(api, "role must be admin or user");
    }

    return ngx_fleet_api_call(api, NULL,
                              "fleet_admin_user_patch($1, $2, $3, $4)", 4,
                              ngx_fleet_actor(api), id, role);
}


static const fleet_field_t  ngx_fleet_maintenance_fields[] = {
    { "enabled", FLEET_FIELD_BOOLEAN, 1, 0, 0 },
    { "message", FLEET_FIELD_STRING, 0, 0, 500 },
    { NULL, 0, 0, 0, 0 }
};

static const char  *ngx_fleet_maintenance_keys[] = {
    "enabled", "message", NULL
};


ngx_int_t
ngx_fleet_api_admin_maintenance(ngx_fleet_api_t *api)
{
    ngx_int_t  rc;

    if (ngx_fleet_only_keys(api, ngx_fleet_maintenance_keys,
                            "only enabled and message can be given", &rc)
        != NGX_OK
        || ngx_fleet_api_validate(api, ngx_fleet_maintenance_fields, &rc)
           != NGX_OK)
    {
        return rc;
    }

    return ngx_fleet_api_call(api, NULL,
                              "fleet_admin_maintenance($1, $2, $3::boolean, "
                              "$4)", 4,
                              ngx_fleet_actor(api),
                              json_is_true(json_object_get(api->json,
                                                           "enabled"))
                              ? "true" : "false",
                              ngx_fleet_api_string(api, "message"));
}


/* ------------------------------------------------------------------ */
/* shared helpers */

/* NGX_OK, or NGX_DECLINED with the 400 sent and its result in *rc */

static ngx_int_t
ngx_fleet_only_keys(ngx_fleet_api_t *api, const char **keys,
    const char *message, ngx_int_t *rc)
{
    u_char        msg[64];
    json_t       *v;
    const char   *key, **k;

    json_object_foreach(api->json, key, v) {
        for (k = keys; *k; k++) {
            if (ngx_strcmp(key, *k) == 0) {
                break;
            }
        }

        if (*k == NULL) {
            *rc = ngx_fleet_refuse(api, message);
            return NGX_DECLINED;
        }

        if (json_is_null(v)) {
            /* "name": null is neither a change nor an absence */
            (void) ngx_snprintf(msg, sizeof(msg), "%s must not be null%Z",
                                *k);
            *rc = ngx_fleet_refuse(api, (const char *) msg);
            return NGX_DECLINED;
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_fleet_refuse(ngx_fleet_api_t *api, const char *message)
{
    return ngx_fleet_send_error(api->request, NGX_HTTP_BAD_REQUEST,
                                "VALIDATION_ERROR", message);
}


/* ------------------------------------------------------------------ */
/* password work in nginx's thread pool */

static ngx_fleet_pw_job_t *
ngx_fleet_pw_job(ngx_fleet_api_t *api, ngx_fleet_pw_done_pt done)
{
    ngx_fleet_pw_job_t     *job;
    ngx_fleet_main_conf_t  *fmcf;

    fmcf = ngx_http_get_module_main_conf(api->request, ngx_fleet_module);

    job = ngx_calloc(sizeof(ngx_fleet_pw_job_t),
                     api->request->connection->log);
    if (job == NULL) {
        return NULL;
    }

    job->api = api;
    job->done = done;
    job->iterations = fmcf->password_iterations;

    api->data = job;
    api->cleanup = ngx_fleet_pw_cleanup;

    return job;
}


static ngx_int_t
ngx_fleet_pw_copy(char *dst, size_t size, size_t *len, const char *src)
{
    *len = ngx_strlen(src);

    if (*len >= size) {
        *len = 0;
        return NGX_ERROR;
    }

    ngx_memcpy(dst, src, *len);
    dst[*len] = '\0';

    return NGX_OK;
}


static ngx_int_t
ngx_fleet_pw_start(ngx_fleet_api_t *api, ngx_fleet_pw_job_t *job)
{
#if (NGX_THREADS)
    ngx_thread_task_t      *task;
    ngx_fleet_main_conf_t  *fmcf;

    fmcf = ngx_http_get_module_main_conf(api->request, ngx_fleet_module);

    if (fmcf->thread_pool) {
        task = ngx_calloc(sizeof(ngx_thread_task_t),
                          api->request->connection->log);
        if (task == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        task->ctx = job;
        task->handler = ngx_fleet_pw_thread;
        task->event.data = task;
        task->event.handler = ngx_fleet_pw_thread_done;

        if (ngx_thread_task_post(fmcf->thread_pool, task) != NGX_OK) {
            ngx_free(task);
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        job->in_thread = 1;

        return NGX_DONE;
    }

#endif

    /* without threads the work blocks this worker: the README says to
     * build nginx --with-threads */
    ngx_fleet_pw_work(job);

    return job->done(api, job);
}


/* runs in a thread: no nginx calls, only the job's own memory */

static void
ngx_fleet_pw_work(ngx_fleet_pw_job_t *job)
{
    if (job->verify) {
        job->verified = fleet_password_verify(job->current, job->current_len,
                                              job->stored,
                                              ngx_strlen(job->stored));
        ngx_explicit_memzero(job->current, sizeof(job->current));
    }

    if (job->make_hash && (!job->verify || job->verified == 1)) {
        job->hashed = fleet_password_hash(job->password, job->password_len,
                                          (unsigned) job->iterations,
                                          job->hash, sizeof(job->hash));
    }

    ngx_explicit_memzero(job->password, sizeof(job->password));
}


#if (NGX_THREADS)

static void
ngx_fleet_pw_thread(void *data, ngx_log_t *log)
{
    ngx_fleet_pw_work(data);
}


static void
ngx_fleet_pw_thread_done(ngx_event_t *ev)
{
    ngx_int_t            rc;
    ngx_fleet_api_t     *api;
    ngx_thread_task_t   *task;
    ngx_fleet_pw_job_t  *job;

    task = ev->data;
    job = task->ctx;

    ngx_free(task);

    job->in_thread = 0;
    api = job->api;

    if (api == NULL) {
        /* the client went away while the thread worked */
        ngx_fleet_pw_free(job);
        return;
    }

    rc = job->done(api, job);

    if (rc != NGX_DONE) {
        ngx_fleet_api_finish(api, rc);
    }
}

#endif


/* the request ends: free the job, unless a thread still works on it */

static void
ngx_fleet_pw_cleanup(ngx_fleet_api_t *api)
{
    ngx_fleet_pw_job_t  *job;

    job = api->data;
    api->data = NULL;

    if (job == NULL) {
        return;
    }

    if (job->in_thread) {
        job->api = NULL;
        return;
    }

    ngx_fleet_pw_free(job);
}


static void
ngx_fleet_pw_free(ngx_fleet_pw_job_t *job)
{
    ngx_explicit_memzero(job->current, sizeof(job->current));
    ngx_explicit_memzero(job->password, sizeof(job->password));
    ngx_free(job);
}
