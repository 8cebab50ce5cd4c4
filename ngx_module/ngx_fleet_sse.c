/*
 * fleetgate: Server-Sent Events for command progress (SPEC 6, seed 004).
 *
 * Events are rows (command_events).  A stream opens with every event after
 * Last-Event-ID, then waits: the worker's LISTEN connection hears
 * "command_event" notifications, and the worker fetches the new rows of
 * that scope once for all of its subscribers to it, then writes to each
 * the events it has not seen.  The stream ends after "results".
 *
 * Memory per stream is bounded: event text lives in malloc'd buffers freed
 * as soon as nginx has sent them, the request pool only holds the buffer
 * headers, reused; a client that lets more than fleet_sse_max_buffered
 * bytes pile up is cut off (it reconnects with Last-Event-ID and loses
 * nothing).
 */

#include "ngx_fleet_api.h"


typedef struct ngx_fleet_sse_scope_s  ngx_fleet_sse_scope_t;

typedef struct {
    ngx_queue_t                 queue;
    ngx_http_request_t         *request;
    ngx_fleet_sse_scope_t      *scope;
    int64_t                     last_id;
    size_t                      buffered;
    ngx_chain_t                *busy;
    ngx_chain_t                *free;
    ngx_event_t                 heartbeat;
    unsigned                    done:1;
} ngx_fleet_sse_t;


struct ngx_fleet_sse_scope_s {
    ngx_queue_t                 queue;
    ngx_queue_t                 subscribers;
    ngx_fleet_pg_query_t        query;
    char                        after[NGX_INT64_LEN + 1];
    unsigned                    querying:1;
    unsigned                    again:1;
    unsigned                    iterating:1;
    size_t                      len;
    char                        name[1];
};


static ngx_int_t ngx_fleet_sse_start(ngx_fleet_api_t *api, json_t *events);
static ngx_int_t ngx_fleet_sse_write_events(ngx_fleet_sse_t *sse,
    json_t *events);
static ngx_int_t ngx_fleet_sse_write(ngx_fleet_sse_t *sse, u_char *data,
    size_t len);
static void ngx_fleet_sse_reclaim(ngx_fleet_sse_t *sse);
static ngx_int_t ngx_fleet_sse_wait_writable(ngx_http_request_t *r);
static void ngx_fleet_sse_end(ngx_fleet_sse_t *sse, ngx_int_t rc);
static void ngx_fleet_sse_heartbeat(ngx_event_t *ev);
static void ngx_fleet_sse_write_handler(ngx_http_request_t *r);
static void ngx_fleet_sse_cleanup(void *data);
static ngx_fleet_sse_scope_t *ngx_fleet_sse_scope(const char *name,
    size_t len, ngx_uint_t create);
static void ngx_fleet_sse_fetch(ngx_fleet_sse_scope_t *scope);
static void ngx_fleet_sse_fetched(ngx_fleet_pg_query_t *q, PGresult *res);
static void ngx_fleet_sse_opened(ngx_fleet_pg_query_t *q, PGresult *res);


/* scopes with subscribers in this worker; few at a time, so a list */
static ngx_queue_t  ngx_fleet_sse_scopes;
static ngx_uint_t   ngx_fleet_sse_scopes_init;


/*
 * GET /api/v1/devices/events/{id}, /command-events/{id}: a single command;
 * /bulk-events/{id}: a bulk operation.
 */

ngx_int_t
ngx_fleet_api_stream(ngx_fleet_api_t *api)
{
    int64_t           after;
    ngx_str_t         v;
    const char       *scope, *kind, *after_text;
    ngx_table_elt_t  *h;

    scope = ngx_fleet_api_capture(api, 0);
    if (scope == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* the route says which stream this is (r->uri is not NUL-terminated) */
    kind = ngx_strstr(api->route->pattern, "/bulk-events/") ? "bulk"
                                                            : "command";

    /* Last-Event-ID, or ?lastEventId= for clients that cannot set it */
    after = 0;
    h = ngx_fleet_find_header(api->request, "Last-Event-ID",
                              sizeof("Last-Event-ID") - 1);

    if (h) {
        v = h->value;

    } else if (ngx_http_arg(api->request, (u_char *) "lastEventId",
                            sizeof("lastEventId") - 1, &v) != NGX_OK)
    {
        ngx_str_null(&v);
    }

    if (v.len) {
        after = ngx_atoof(v.data, v.len);
        if (after < 0) {
            return ngx_fleet_send_error(api->request, NGX_HTTP_BAD_REQUEST,
                                        "VALIDATION_ERROR",
                                        "Last-Event-ID must be an event id");
        }
    }

    after_text = ngx_fleet_api_int_text(api, after);
    if (after_text == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_fleet_api_call(api, ngx_fleet_sse_opened,
                              "fleet_stream_open($1, $2, $3, $4, "
                              "$5::bigint)", 5,
                              api->claims.sub,
                              fleet_role_name(api->claims.role), kind, scope,
                              after_text);
}


static void
ngx_fleet_sse_opened(ngx_fleet_pg_query_t *q, PGresult *res)
{
    json_t           *j, *body;
    ngx_int_t         rc;
    ngx_fleet_api_t  *api;

    api = q->data;

    if (res == NULL) {
        ngx_fleet_api_finish(api, ngx_fleet_api_unavailable(api));
        return;
    }

    j = ngx_fleet_api_sql_value(api, res);
    body = json_object_get(j, "body");

    if (!json_is_array(body)) {
        /* a refusal (404, 401): the usual JSON error */
        if (j) {
            json_decref(j);
        }

        ngx_fleet_api_finish(api, ngx_fleet_api_send_sql_json(api, res));
        return;
    }

    rc = ngx_fleet_sse_start(api, body);
    json_decref(j);

    if (rc != NGX_DONE) {
        ngx_fleet_api_finish(api, rc);
        return;
    }

    ngx_http_run_posted_requests(api->request->connection);
}


static ngx_int_t
ngx_fleet_sse_start(ngx_fleet_api_t *api, json_t *events)
{
    ngx_int_t               rc;
    ngx_table_elt_t        *h;
    ngx_fleet_sse_t        *sse;
    ngx_http_request_t     *r;
    ngx_http_cleanup_t     *cln;
    ngx_fleet_main_conf_t  *fmcf;

    r = api->request;
    fmcf = ngx_http_get_module_main_conf(r, ngx_fleet_module);

    sse = ngx_pcalloc(r->pool, sizeof(ngx_fleet_sse_t));
    cln = ngx_http_cleanup_add(r, 0);
    if (sse == NULL || cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    sse->request = r;
    sse->last_id = 0;
    cln->handler = ngx_fleet_sse_cleanup;
    cln->data = sse;
    api->data = sse;

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = -1;
    ngx_str_set(&r->headers_out.content_type,
                "text/event-stream; charset=utf-8");
    r->headers_out.content_type_len = sizeof("text/event-stream") - 1;

    /* proxies in front (nginx included) must pass events as they come */
    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "X-Accel-Buffering");
    ngx_str_set(&h->value, "no");

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "Cache-Control");
    ngx_str_set(&h->value, "no-cache");

    ngx_fleet_metrics_count_status(NGX_HTTP_OK);

    rc = ngx_http_send_header(r);
    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    if (ngx_fleet_sse_write(sse, (u_char *) ": fleetgate\n\n",
                            sizeof(": fleetgate\n\n") - 1)
        != NGX_OK
        || ngx_fleet_sse_write_events(sse, events) != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (sse->done) {
        /* every event, results included, was already there */
        return ngx_http_send_special(r, NGX_HTTP_LAST);
    }

    sse->scope = ngx_fleet_sse_scope((const char *) api->captures[0].data,
                                     api->captures[0].len, 1);
    if (sse->scope == NULL) {
        return NGX_ERROR;
    }

    ngx_queue_insert_tail(&sse->scope->subscribers, &sse->queue);
    ngx_fleet_worker_metric_add(NGX_FLEET_W_OPEN_STREAMS, 1);

    /* not cancelable: a worker shutting down lets its streams end, at the
     * next heartbeat at the latest (clients resume with Last-Event-ID) */
    sse->heartbeat.handler = ngx_fleet_sse_heartbeat;
    sse->heartbeat.data = sse;
    sse->heartbeat.log = r->connection->log;
    ngx_add_timer(&sse->heartbeat, fmcf->sse_heartbeat);

    /* the request stays open until the stream ends: the reference the
     * API handler holds is released by ngx_fleet_sse_end() */
    r->read_event_handler = ngx_http_test_reading;
    r->write_event_handler = ngx_fleet_sse_write_handler;

    /* events may have landed between the query and now */
    ngx_fleet_sse_fetch(sse->scope);

    return NGX_DONE;
}


/* id:, event:, data: lines; data is one line of compact JSON */

static ngx_int_t
ngx_fleet_sse_write_events(ngx_fleet_sse_t *sse, json_t *events)
{
    char        *data;
    size_t       i, len;
    u_char      *buf, *p;
    int64_t      id;
    json_t      *ev;
    ngx_int_t    rc;
    const char  *name;

    rc = NGX_OK;

    json_array_foreach(events, i, ev) {
        id = (int64_t) json_integer_value(json_object_get(ev, "id"));
        name = json_string_value(json_object_get(ev, "event"));

        if (id <= sse->last_id || name == NULL || sse->done) {
            continue;
        }

        data = json_dumps(json_object_get(ev, "data"),
                          JSON_COMPACT | JSON_REAL_PRECISION(15));
        if (data == NULL) {
            return NGX_ERROR;
        }

        len = ngx_strlen(data);

        buf = ngx_alloc(len + ngx_strlen(name) + NGX_INT64_LEN + 32,
                        sse->request->connection->log);
        if (buf == NULL) {
            free(data);
            return NGX_ERROR;
        }

        p = ngx_sprintf(buf, "id: %L\nevent: %s\ndata: ", id, name);
        p = ngx_cpymem(p, data, len);
        *p++ = '\n';
        *p++ = '\n';
        free(data);

        sse->last_id = id;

        if (ngx_strcmp(name, "results") == 0) {
            sse->done = 1;
        }

        rc = ngx_fleet_sse_write(sse, buf, p - buf);
        ngx_free(buf);

        if (rc != NGX_OK) {
            return rc;
        }
    }

    return rc;
}


/* copies data into a malloc'd buffer that is freed once sent */

static ngx_int_t
ngx_fleet_sse_write(ngx_fleet_sse_t *sse, u_char *data, size_t len)
{
    ngx_buf_t              *b;
    ngx_int_t               rc;
    ngx_chain_t            *cl;
    ngx_http_request_t     *r;
    ngx_fleet_main_conf_t  *fmcf;

    r = sse->request;
    fmcf = ngx_http_get_module_main_conf(r, ngx_fleet_module);

    if (sse->buffered + len > fmcf->sse_max_buffered) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "fleet: event stream client too slow, closing");
        return NGX_ERROR;
    }

    cl = ngx_chain_get_free_buf(r->pool, &sse->free);
    if (cl == NULL) {
        return NGX_ERROR;
    }

    b = cl->buf;
    ngx_memzero(b, sizeof(ngx_buf_t));

    b->start = ngx_alloc(len, r->connection->log);
    if (b->start == NULL) {
        return NGX_ERROR;
    }

    b->pos = b->start;
    b->last = ngx_cpymem(b->start, data, len);
    b->end = b->last;
    b->memory = 1;
    b->flush = 1;
    b->tag = (ngx_buf_tag_t) &ngx_fleet_api_stream;

    sse->buffered += len;

    rc = ngx_http_output_filter(r, cl);

    cl->next = sse->busy;
    sse->busy = cl;

    ngx_fleet_sse_reclaim(sse);

    if (rc == NGX_ERROR) {
        return NGX_ERROR;
    }

    return ngx_fleet_sse_wait_writable(r);
}


/* a client that does not read for send_timeout is gone */

static ngx_int_t
ngx_fleet_sse_wait_writable(ngx_http_request_t *r)
{
    ngx_event_t               *wev;
    ngx_http_core_loc_conf_t  *clcf;

    wev = r->connection->write;
    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

    if (r->connection->buffered) {
        if (!wev->delayed) {
            ngx_add_timer(wev, clcf->send_timeout);
        }

    } else if (wev->timer_set) {
        ngx_del_timer(wev);
    }

    return ngx_handle_write_event(wev, clcf->send_lowat);
}


/* frees the memory of buffers nginx has fully sent, keeps their headers */

static void
ngx_fleet_sse_reclaim(ngx_fleet_sse_t *sse)
{
    ngx_chain_t  *cl, **ll;

    ll = &sse->busy;

    for (cl = sse->busy; cl; cl = *ll) {
        if (cl->buf->pos != cl->buf->last) {
            ll = &cl->next;
            continue;
        }

        sse->buffered -= cl->buf->end - cl->buf->start;
        ngx_free(cl->buf->start);
        cl->buf->start = NULL;

        *ll = cl->next;
        cl->next = sse->free;
        sse->free = cl;
    }
}


static void
ngx_fleet_sse_write_handler(ngx_http_request_t *r)
{
    ngx_int_t         rc;
    ngx_fleet_ctx_t  *ctx;
    ngx_fleet_api_t  *api;
    ngx_fleet_sse_t  *sse;

    ctx = ngx_http_get_module_ctx(r, ngx_fleet_module);
    api = ctx->api;
    sse = api->data;

    if (r->connection->write->timedout) {
        ngx_fleet_sse_end(sse, NGX_ERROR);
        return;
    }

    rc = ngx_http_output_filter(r, NULL);

    ngx_fleet_sse_reclaim(sse);

    if (rc == NGX_ERROR || ngx_fleet_sse_wait_writable(r) != NGX_OK) {
        ngx_fleet_sse_end(sse, NGX_ERROR);
    }
}


static void
ngx_fleet_sse_heartbeat(ngx_event_t *ev)
{
    ngx_fleet_sse_t        *sse;
    ngx_fleet_main_conf_t  *fmcf;

    sse = ev->data;

    if (ngx_exiting || ngx_terminate) {
        /* this worker is leaving; the client resumes elsewhere */
        ngx_fleet_sse_end(sse, NGX_OK);
        return;
    }

    if (ngx_fleet_sse_write(sse, (u_char *) ":\n\n", 3) != NGX_OK) {
        ngx_fleet_sse_end(sse, NGX_ERROR);
        return;
    }

    fmcf = ngx_http_get_module_main_conf(sse->request, ngx_fleet_module);
    ngx_add_timer(&sse->heartbeat, fmcf->sse_heartbeat);
}


/* ends the stream: after results (NGX_OK), or on a write error */

static void
ngx_fleet_sse_end(ngx_fleet_sse_t *sse, ngx_int_t rc)
{
    ngx_connection_t    *c;
    ngx_http_request_t  *r;

    r = sse->request;
    c = r->connection;

    if (rc == NGX_OK) {
        rc = ngx_http_send_special(r, NGX_HTTP_LAST);
    }

    ngx_http_finalize_request(r, rc);
    ngx_http_run_posted_requests(c);
}


static void
ngx_fleet_sse_cleanup(void *data)
{
    ngx_fleet_sse_t  *sse = data;

    ngx_chain_t            *cl;
    ngx_fleet_sse_scope_t  *scope;

    if (sse->heartbeat.timer_set) {
        ngx_del_timer(&sse->heartbeat);
    }

    scope = sse->scope;

    if (scope) {
        ngx_queue_remove(&sse->queue);
        sse->scope = NULL;
        ngx_fleet_worker_metric_add(NGX_FLEET_W_OPEN_STREAMS, -1);

        /* a scope being iterated is freed by its iterator */
        if (ngx_queue_empty(&scope->subscribers) && !scope->iterating) {
            ngx_fleet_pg_cancel(&scope->query);
            ngx_queue_remove(&scope->queue);
            ngx_free(scope);
        }
    }

    for (cl = sse->busy; cl; cl = cl->next) {
        if (cl->buf->start) {
            ngx_free(cl->buf->start);
            cl->buf->start = NULL;
        }
    }

    sse->busy = NULL;
}


static ngx_fleet_sse_scope_t *
ngx_fleet_sse_scope(const char *name, size_t len, ngx_uint_t create)
{
    ngx_queue_t            *q;
    ngx_fleet_sse_scope_t  *scope;

    if (!ngx_fleet_sse_scopes_init) {
        ngx_queue_init(&ngx_fleet_sse_scopes);
        ngx_fleet_sse_scopes_init = 1;
    }

    for (q = ngx_queue_head(&ngx_fleet_sse_scopes);
         q != ngx_queue_sentinel(&ngx_fleet_sse_scopes);
         q = ngx_queue_next(q))
    {
        scope = ngx_queue_data(q, ngx_fleet_sse_scope_t, queue);

        if (scope->len == len && ngx_strncmp(scope->name, name, len) == 0) {
            return scope;
        }
    }

    if (!create) {
        return NULL;
    }

    scope = ngx_calloc(sizeof(ngx_fleet_sse_scope_t) + len, ngx_cycle->log);
    if (scope == NULL) {
        return NULL;
    }

    ngx_memcpy(scope->name, name, len);
    scope->name[len] = '\0';
    scope->len = len;
    ngx_queue_init(&scope->subscribers);
    ngx_queue_insert_tail(&ngx_fleet_sse_scopes, &scope->queue);

    return scope;
}


/* the LISTEN connection heard of a new event of some scope */

void
ngx_fleet_sse_notify(const char *scope_name, size_t len)
{
    ngx_fleet_sse_scope_t  *scope;

    if (!ngx_fleet_sse_scopes_init) {
        return;
    }

    scope = ngx_fleet_sse_scope(scope_name, len, 0);

    if (scope != NULL) {
        ngx_fleet_sse_fetch(scope);
    }
}


/* one query per scope for all its subscribers in this worker */

static void
ngx_fleet_sse_fetch(ngx_fleet_sse_scope_t *scope)
{
    int64_t           after;
    ngx_queue_t      *q;
    ngx_fleet_sse_t  *sse;

    if (scope->querying) {
        scope->again = 1;
        return;
    }

    after = -1;

    for (q = ngx_queue_head(&scope->subscribers);
         q != ngx_queue_sentinel(&scope->subscribers);
         q = ngx_queue_next(q))
    {
        sse = ngx_queue_data(q, ngx_fleet_sse_t, queue);

        if (after < 0 || sse->last_id < after) {
            after = sse->last_id;
        }
    }

    if (after < 0) {
        return;
    }

    *ngx_sprintf((u_char *) scope->after, "%L", after) = '\0';

    ngx_memzero(&scope->query, sizeof(ngx_fleet_pg_query_t));
    scope->query.sql = "SELECT fleet_stream_events($1, $2::bigint)";
    scope->query.nparams = 2;
    scope->query.params[0] = scope->name;
    scope->query.params[1] = scope->after;
    scope->query.handler = ngx_fleet_sse_fetched;
    scope->query.data = scope;
    scope->query.log = ngx_cycle->log;

    scope->again = 0;

    if (ngx_fleet_pg_send(&scope->query) == NGX_OK) {
        scope->querying = 1;
        return;
    }

    /* the database is away: the next notification or heartbeat-driven
     * reconnect of the client catches up from the rows */
    ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                  "fleet: cannot fetch events of \"%s\": %s",
                  scope->name, scope->query.error);
}


static void
ngx_fleet_sse_fetched(ngx_fleet_pg_query_t *q, PGresult *res)
{
    json_t                 *events;
    ngx_queue_t            *qq, *next;
    ngx_fleet_sse_t        *sse;
    ngx_fleet_sse_scope_t  *scope;

    scope = q->data;
    scope->querying = 0;

    events = NULL;

    if (res && PQntuples(res) == 1 && !PQgetisnull(res, 0, 0)) {
        events = json_loadb(PQgetvalue(res, 0, 0), PQgetlength(res, 0, 0), 0,
                            NULL);
    }

    /* writing may end streams (their cleanup unlinks them): keep the
     * next element before touching the current one, and the scope alive */
    scope->iterating = 1;

    if (json_is_array(events)) {
        for (qq = ngx_queue_head(&scope->subscribers);
             qq != ngx_queue_sentinel(&scope->subscribers);
             qq = next)
        {
            next = ngx_queue_next(qq);
            sse = ngx_queue_data(qq, ngx_fleet_sse_t, queue);

            if (ngx_fleet_sse_write_events(sse, events) != NGX_OK) {
                ngx_fleet_sse_end(sse, NGX_ERROR);

            } else if (sse->done) {
                ngx_fleet_sse_end(sse, NGX_OK);
            }
        }
    }

    scope->iterating = 0;

    if (events) {
        json_decref(events);
    }

    if (ngx_queue_empty(&scope->subscribers)) {
        ngx_queue_remove(&scope->queue);
        ngx_free(scope);
        return;
    }

    if (scope->again) {
        ngx_fleet_sse_fetch(scope);
    }
}
