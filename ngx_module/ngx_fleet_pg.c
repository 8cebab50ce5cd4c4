/*
 * fleetgate: asynchronous PostgreSQL inside the worker's event loop.
 *
 * Each worker keeps a small pool of non-blocking libpq connections and one
 * more connection that only LISTENs.  Sockets are registered level-triggered
 * for reading and, only while libpq has output pending, for writing: libpq
 * does its own reads and writes, so nginx's edge-triggered "ready" bookkeeping
 * would not be kept up to date and could strand a connection.
 *
 * A query that finds no idle connection waits in a bounded queue with its own
 * timer; a query in flight is bounded by a timer on its connection, and a
 * timed-out connection is closed (PQcancel would block) and reopened.
 * Connections lost when the database restarts are reopened with a jittered
 * exponential backoff; the listener re-issues its LISTENs every time.
 */

#include "ngx_fleet_module.h"


#define NGX_FLEET_PG_BACKOFF_MIN   100
#define NGX_FLEET_PG_BACKOFF_MAX   5000


typedef enum {
    NGX_FLEET_PG_DOWN = 0,
    NGX_FLEET_PG_CONNECTING,
    NGX_FLEET_PG_SETUP,
    NGX_FLEET_PG_IDLE,
    NGX_FLEET_PG_BUSY
} ngx_fleet_pg_state_e;


typedef struct {
    PGconn                     *pg;
    ngx_connection_t           *c;
    ngx_fleet_pg_state_e        state;
    ngx_fleet_pg_query_t       *query;
    PGresult                   *result;
    ngx_event_t                 retry;
    ngx_msec_t                  backoff;
    unsigned                    listener:1;
    unsigned                    detached:1;
} ngx_fleet_pg_conn_t;


typedef struct {
    ngx_str_t                   channel;
    ngx_fleet_notify_pt         handler;
    void                       *data;
} ngx_fleet_pg_listener_t;


typedef struct {
    ngx_fleet_main_conf_t      *fmcf;
    ngx_log_t                  *log;
    char                       *dsn;
    ngx_fleet_pg_conn_t        *conns;
    ngx_uint_t                  nconns;
    ngx_fleet_pg_conn_t         listen;
    ngx_queue_t                 waiting;
    ngx_uint_t                  nwaiting;
    ngx_array_t                 listeners;
    unsigned                    enabled:1;
} ngx_fleet_pg_t;


static void ngx_fleet_pg_connect(ngx_fleet_pg_conn_t *pc);
static void ngx_fleet_pg_retry_handler(ngx_event_t *ev);
static void ngx_fleet_pg_schedule_retry(ngx_fleet_pg_conn_t *pc);
static ngx_int_t ngx_fleet_pg_attach(ngx_fleet_pg_conn_t *pc);
static void ngx_fleet_pg_detach(ngx_fleet_pg_conn_t *pc);
static void ngx_fleet_pg_close(ngx_fleet_pg_conn_t *pc);
static void ngx_fleet_pg_fail(ngx_fleet_pg_conn_t *pc, const char *reason);
static void ngx_fleet_pg_event_handler(ngx_event_t *ev);
static void ngx_fleet_pg_poll_connect(ngx_fleet_pg_conn_t *pc);
static void ngx_fleet_pg_connected(ngx_fleet_pg_conn_t *pc);
static ngx_int_t ngx_fleet_pg_want_write(ngx_fleet_pg_conn_t *pc,
    ngx_uint_t on);
static ngx_int_t ngx_fleet_pg_flush(ngx_fleet_pg_conn_t *pc);
static void ngx_fleet_pg_process(ngx_fleet_pg_conn_t *pc);
static void ngx_fleet_pg_dispatch_notifies(ngx_fleet_pg_conn_t *pc);
static void ngx_fleet_pg_complete(ngx_fleet_pg_conn_t *pc);
static void ngx_fleet_pg_deliver(ngx_fleet_pg_query_t *q, PGresult *res);
static ngx_int_t ngx_fleet_pg_run(ngx_fleet_pg_conn_t *pc,
    ngx_fleet_pg_query_t *q);
static void ngx_fleet_pg_dispatch_waiting(void);
static void ngx_fleet_pg_fail_waiting(const char *reason);
static ngx_uint_t ngx_fleet_pg_any_alive(void);
static void ngx_fleet_pg_wait_timeout_handler(ngx_event_t *ev);
static ngx_int_t ngx_fleet_pg_send_listens(ngx_fleet_pg_conn_t *pc);
static void ngx_fleet_pg_set_idle(ngx_fleet_pg_conn_t *pc);


static ngx_fleet_pg_t  ngx_fleet_pg;


ngx_int_t
ngx_fleet_pg_init_process(ngx_cycle_t *cycle)
{
    ngx_uint_t              i;
    ngx_fleet_main_conf_t  *fmcf;

    fmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_fleet_module);

    if (fmcf == NULL || fmcf->pg_dsn.len == 0) {
        return NGX_OK;
    }

    ngx_fleet_pg.fmcf = fmcf;
    ngx_fleet_pg.log = cycle->log;

    ngx_fleet_pg.dsn = ngx_pnalloc(cycle->pool, fmcf->pg_dsn.len + 1);
    if (ngx_fleet_pg.dsn == NULL) {
        return NGX_ERROR;
    }

    (void) ngx_cpystrn((u_char *) ngx_fleet_pg.dsn, fmcf->pg_dsn.data,
                       fmcf->pg_dsn.len + 1);

    ngx_fleet_pg.nconns = fmcf->pg_pool_size;
    ngx_fleet_pg.conns = ngx_pcalloc(cycle->pool,
                               fmcf->pg_pool_size * sizeof(ngx_fleet_pg_conn_t));
    if (ngx_fleet_pg.conns == NULL) {
        return NGX_ERROR;
    }

    ngx_queue_init(&ngx_fleet_pg.waiting);

    if (ngx_fleet_pg.listeners.elts == NULL
        && ngx_array_init(&ngx_fleet_pg.listeners, cycle->pool, 4,
                          sizeof(ngx_fleet_pg_listener_t))
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    ngx_fleet_pg.enabled = 1;

    for (i = 0; i < ngx_fleet_pg.nconns; i++) {
        ngx_fleet_pg_connect(&ngx_fleet_pg.conns[i]);
    }

    ngx_fleet_pg.listen.listener = 1;
    ngx_fleet_pg_connect(&ngx_fleet_pg.listen);

    return NGX_OK;
}


void
ngx_fleet_pg_exit_process(ngx_cycle_t *cycle)
{
    ngx_uint_t  i;

    if (!ngx_fleet_pg.enabled) {
        return;
    }

    ngx_fleet_pg.enabled = 0;

    ngx_fleet_pg_fail_waiting("worker is exiting");

    for (i = 0; i < ngx_fleet_pg.nconns; i++) {
        ngx_fleet_pg_close(&ngx_fleet_pg.conns[i]);
    }

    ngx_fleet_pg_close(&ngx_fleet_pg.listen);
}


ngx_int_t
ngx_fleet_pg_listen(ngx_cycle_t *cycle, const char *channel,
    ngx_fleet_notify_pt handler, void *data)
{
    ngx_fleet_pg_listener_t  *l;

    if (ngx_fleet_pg.listeners.elts == NULL
        && ngx_array_init(&ngx_fleet_pg.listeners, cycle->pool, 4,
                          sizeof(ngx_fleet_pg_listener_t))
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    l = ngx_array_push(&ngx_fleet_pg.listeners);
    if (l == NULL) {
        return NGX_ERROR;
    }

    l->channel.data = (u_char *) channel;
    l->channel.len = ngx_strlen(channel);
    l->handler = handler;
    l->data = data;

    /* a listener added after connecting takes effect on the next
     * (re)connect; modules register theirs in init_process, before that */
    return NGX_OK;
}


ngx_uint_t
ngx_fleet_pg_available(void)
{
    ngx_uint_t  i, n;

    n = 0;

    for (i = 0; i < ngx_fleet_pg.nconns; i++) {
        if (ngx_fleet_pg.conns[i].state >= NGX_FLEET_PG_IDLE) {
            n++;
        }
    }

    return n;
}


ngx_int_t
ngx_fleet_pg_send(ngx_fleet_pg_query_t *q)
{
    ngx_uint_t            i;
    ngx_fleet_pg_conn_t  *pc;

    q->conn = NULL;
    q->error = NULL;
    q->waiting = 0;

    if (!ngx_fleet_pg.enabled) {
        q->error = "database is not configured (fleet_pg_dsn)";
        return NGX_ERROR;
    }

    for (i = 0; i < ngx_fleet_pg.nconns; i++) {
        pc = &ngx_fleet_pg.conns[i];

        if (pc->state == NGX_FLEET_PG_IDLE) {
            return ngx_fleet_pg_run(pc, q);
        }
    }

    if (!ngx_fleet_pg_any_alive()) {
        q->error = "database unavailable";
        return NGX_ERROR;
    }

    if (ngx_fleet_pg.nwaiting >= ngx_fleet_pg.fmcf->pg_max_waiting) {
        q->error = "too many queries waiting for a database connection";
        return NGX_ERROR;
    }

    ngx_queue_insert_tail(&ngx_fleet_pg.waiting, &q->queue);
    ngx_fleet_pg.nwaiting++;
    ngx_fleet_worker_metric_add(NGX_FLEET_W_PG_WAITING, 1);
    q->waiting = 1;

    q->timeout.handler = ngx_fleet_pg_wait_timeout_handler;
    q->timeout.data = q;
    q->timeout.log = q->log;
    ngx_add_timer(&q->timeout, ngx_fleet_pg.fmcf->pg_query_timeout);

    return NGX_OK;
}


/* the owner of q goes away (request finalized): forget it, never call it */

void
ngx_fleet_pg_cancel(ngx_fleet_pg_query_t *q)
{
    ngx_fleet_pg_conn_t  *pc;

    if (q->timeout.timer_set) {
        ngx_del_timer(&q->timeout);
    }

    if (q->waiting) {
        ngx_queue_remove(&q->queue);
        ngx_fleet_pg.nwaiting--;
        ngx_fleet_worker_metric_add(NGX_FLEET_W_PG_WAITING, -1);
        q->waiting = 0;
    }

    pc = q->conn;

    if (pc != NULL && pc->query == q) {
        /* the result is drained and dropped when it arrives; the
         * connection's own timer still bounds the wait */
        pc->query = NULL;
    }

    q->conn = NULL;
}


static ngx_uint_t
ngx_fleet_pg_any_alive(void)
{
    ngx_uint_t  i;

    for (i = 0; i < ngx_fleet_pg.nconns; i++) {
        if (ngx_fleet_pg.conns[i].state != NGX_FLEET_PG_DOWN) {
            return 1;
        }
    }

    return 0;
}


static void
ngx_fleet_pg_connect(ngx_fleet_pg_conn_t *pc)
{
    ngx_log_t  *log;

    log = ngx_fleet_pg.log;

    pc->state = NGX_FLEET_PG_DOWN;

    /* hostaddr or a numeric host keeps PQconnectStart from resolving
     * names synchronously; the README says so */
    pc->pg = PQconnectStart(ngx_fleet_pg.dsn);

    if (pc->pg == NULL) {
        ngx_log_error(NGX_LOG_ALERT, log, 0,
                      "fleet pg: PQconnectStart() failed: out of memory");
        ngx_fleet_pg_schedule_retry(pc);
        return;
    }

    if (PQstatus(pc->pg) == CONNECTION_BAD
        || PQsetnonblocking(pc->pg, 1) != 0)
    {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "fleet pg: cannot start connecting: %s",
                      PQerrorMessage(pc->pg));
        PQfinish(pc->pg);
        pc->pg = NULL;
        ngx_fleet_pg_schedule_retry(pc);
        return;
    }

    if (ngx_fleet_pg_attach(pc) != NGX_OK) {
        PQfinish(pc->pg);
        pc->pg = NULL;
        ngx_fleet_pg_schedule_retry(pc);
        return;
    }

    pc->state = NGX_FLEET_PG_CONNECTING;

    /* a connect in progress must not hold up a worker's exit; a query in
     * flight must (the timer flag is cleared once connected) */
    pc->c->read->cancelable = 1;
    ngx_add_timer(pc->c->read, ngx_fleet_pg.fmcf->pg_query_timeout);

    ngx_fleet_pg_poll_connect(pc);
}


static ngx_int_t
ngx_fleet_pg_attach(ngx_fleet_pg_conn_t *pc)
{
    int                fd;
    ngx_connection_t  *c;

    fd = PQsocket(pc->pg);
    if (fd == -1) {
        ngx_log_error(NGX_LOG_ERR, ngx_fleet_pg.log, 0,
                      "fleet pg: no socket: %s", PQerrorMessage(pc->pg));
        return NGX_ERROR;
    }

    c = ngx_get_connection(fd, ngx_fleet_pg.log);
    if (c == NULL) {
        return NGX_ERROR;
    }

    c->data = pc;
    c->number = ngx_atomic_fetch_add(ngx_connection_counter, 1);
    c->read->handler = ngx_fleet_pg_event_handler;
    c->write->handler = ngx_fleet_pg_event_handler;
    c->read->log = c->log;
    c->write->log = c->log;
    c->log->action = pc->listener ? "listening to PostgreSQL notifications"
                                  : "talking to PostgreSQL";

    pc->c = c;
    pc->detached = 0;

    if (ngx_add_event(c->read, NGX_READ_EVENT, 0) != NGX_OK) {
        ngx_fleet_pg_detach(pc);
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* forgets the nginx side of the socket; libpq still owns (and closes) it */

static void
ngx_fleet_pg_detach(ngx_fleet_pg_conn_t *pc)
{
    ngx_connection_t  *c;

    c = pc->c;
    if (c == NULL) {
        return;
    }

    if (c->read->timer_set) {
        ngx_del_timer(c->read);
    }

    if (c->write->timer_set) {
        ngx_del_timer(c->write);
    }

    if (c->read->posted) {
        ngx_delete_posted_event(c->read);
    }

    if (c->write->posted) {
        ngx_delete_posted_event(c->write);
    }

    if (c->read->active) {
        (void) ngx_del_event(c->read, NGX_READ_EVENT, NGX_CLOSE_EVENT);
    }

    if (c->write->active) {
        (void) ngx_del_event(c->write, NGX_WRITE_EVENT, NGX_CLOSE_EVENT);
    }

    ngx_free_connection(c);
    c->fd = (ngx_socket_t) -1;

    pc->c = NULL;
    pc->detached = 1;
}


static void
ngx_fleet_pg_close(ngx_fleet_pg_conn_t *pc)
{
    if (pc->retry.timer_set) {
        ngx_del_timer(&pc->retry);
    }

    if (pc->state >= NGX_FLEET_PG_IDLE) {
        ngx_fleet_worker_metric_add(pc->listener ? NGX_FLEET_W_LISTEN_UP
                                                 : NGX_FLEET_W_PG_CONNECTED,
                                    -1);
    }

    ngx_fleet_pg_detach(pc);

    if (pc->result) {
        PQclear(pc->result);
        pc->result = NULL;
    }

    if (pc->pg) {
        PQfinish(pc->pg);
        pc->pg = NULL;
    }

    pc->state = NGX_FLEET_PG_DOWN;
}


static void
ngx_fleet_pg_fail(ngx_fleet_pg_conn_t *pc, const char *reason)
{
    ngx_fleet_pg_query_t  *q;

    ngx_log_error(NGX_LOG_ERR, ngx_fleet_pg.log, 0,
                  "fleet pg: %s connection lost: %s",
                  pc->listener ? "listen" : "pool", reason);

    ngx_fleet_metric_inc(NGX_FLEET_M_PG_RECONNECTS);

    q = pc->query;
    pc->query = NULL;

    ngx_fleet_pg_close(pc);

    if (ngx_fleet_pg.enabled && !ngx_exiting) {
        ngx_fleet_pg_schedule_retry(pc);
    }

    if (q) {
        q->conn = NULL;
        q->error = "database connection lost";
        ngx_fleet_metric_inc(NGX_FLEET_M_PG_ERRORS);
        q->handler(q, NULL);
    }

    if (!pc->listener && !ngx_fleet_pg_any_alive()) {
        ngx_fleet_pg_fail_waiting("database unavailable");
    }
}


static void
ngx_fleet_pg_schedule_retry(ngx_fleet_pg_conn_t *pc)
{
    ngx_msec_t  delay;

    if (pc->backoff == 0) {
        pc->backoff = NGX_FLEET_PG_BACKOFF_MIN;

    } else {
        pc->backoff = ngx_min(pc->backoff * 2, NGX_FLEET_PG_BACKOFF_MAX);
    }

    /* jitter spreads the reconnect storm of many workers and nodes */
    delay = pc->backoff / 2 + (ngx_msec_t) ngx_random() % (pc->backoff / 2 + 1);

    pc->retry.handler = ngx_fleet_pg_retry_handler;
    pc->retry.data = pc;
    pc->retry.log = ngx_fleet_pg.log;
    pc->retry.cancelable = 1;

    ngx_add_timer(&pc->retry, delay);
}


static void
ngx_fleet_pg_retry_handler(ngx_event_t *ev)
{
    ngx_fleet_pg_conn_t  *pc;

    pc = ev->data;

    if (!ngx_fleet_pg.enabled || ngx_exiting) {
        return;
    }

    ngx_fleet_pg_connect(pc);
}


static void
ngx_fleet_pg_event_handler(ngx_event_t *ev)
{
    ngx_connection_t     *c;
    ngx_fleet_pg_conn_t  *pc;

    c = ev->data;
    pc = c->data;

    if (c->close) {
        /* graceful shutdown or reload: the idle listener just goes away */
        ngx_fleet_pg_close(pc);
        return;
    }

    if (ev->timedout) {
        ev->timedout = 0;
        ngx_fleet_pg_fail(pc, pc->state == NGX_FLEET_PG_CONNECTING
                              ? "connect timed out" : "query timed out");
        return;
    }

    if (pc->state == NGX_FLEET_PG_CONNECTING) {
        ngx_fleet_pg_poll_connect(pc);
        return;
    }

    ngx_fleet_pg_process(pc);
}


static void
ngx_fleet_pg_poll_connect(ngx_fleet_pg_conn_t *pc)
{
    PostgresPollingStatusType  st;

    st = PQconnectPoll(pc->pg);

    /* libpq may move to a new socket (next address, SSL fallback) */
    if (st != PGRES_POLLING_FAILED && PQsocket(pc->pg) != pc->c->fd) {
        ngx_fleet_pg_detach(pc);

        if (ngx_fleet_pg_attach(pc) != NGX_OK) {
            ngx_fleet_pg_fail(pc, "cannot register the new socket");
            return;
        }

        pc->c->read->cancelable = 1;
        ngx_add_timer(pc->c->read, ngx_fleet_pg.fmcf->pg_query_timeout);
    }

    switch (st) {

    case PGRES_POLLING_OK:
        ngx_fleet_pg_connected(pc);
        return;

    case PGRES_POLLING_FAILED:
        ngx_fleet_pg_fail(pc, PQerrorMessage(pc->pg));
        return;

    case PGRES_POLLING_WRITING:
        if (ngx_fleet_pg_want_write(pc, 1) != NGX_OK) {
            ngx_fleet_pg_fail(pc, "cannot register write event");
        }
        return;

    default: /* PGRES_POLLING_READING */
        if (ngx_fleet_pg_want_write(pc, 0) != NGX_OK) {
            ngx_fleet_pg_fail(pc, "cannot unregister write event");
        }
        return;
    }
}


static void
ngx_fleet_pg_connected(ngx_fleet_pg_conn_t *pc)
{
    if (pc->c->read->timer_set) {
        ngx_del_timer(pc->c->read);
    }

    pc->c->read->cancelable = 0;

    if (ngx_fleet_pg_want_write(pc, 0) != NGX_OK) {
        ngx_fleet_pg_fail(pc, "cannot unregister write event");
        return;
    }

    pc->backoff = 0;

    ngx_log_error(NGX_LOG_INFO, ngx_fleet_pg.log, 0,
                  "fleet pg: %s connection ready (server pid %d)",
                  pc->listener ? "listen" : "pool", PQbackendPID(pc->pg));

    ngx_fleet_worker_metric_add(pc->listener ? NGX_FLEET_W_LISTEN_UP
                                             : NGX_FLEET_W_PG_CONNECTED, 1);

    if (pc->listener) {
        if (ngx_fleet_pg_send_listens(pc) != NGX_OK) {
            ngx_fleet_pg_fail(pc, PQerrorMessage(pc->pg));
        }

        return;
    }

    ngx_fleet_pg_set_idle(pc);
    ngx_fleet_pg_dispatch_waiting();
}


static ngx_int_t
ngx_fleet_pg_send_listens(ngx_fleet_pg_conn_t *pc)
{
    char                     *ident;
    u_char                   *p, *sql;
    size_t                    len;
    ngx_uint_t                i;
    ngx_fleet_pg_listener_t  *l;

    l = ngx_fleet_pg.listeners.elts;

    len = 1;
    for (i = 0; i < ngx_fleet_pg.listeners.nelts; i++) {
        len += sizeof("LISTEN ;") + 2 * l[i].channel.len + 2;
    }

    sql = ngx_alloc(len, ngx_fleet_pg.log);
    if (sql == NULL) {
        return NGX_ERROR;
    }

    p = sql;

    for (i = 0; i < ngx_fleet_pg.listeners.nelts; i++) {
        ident = PQescapeIdentifier(pc->pg, (char *) l[i].channel.data,
                                   l[i].channel.len);
        if (ident == NULL) {
            ngx_free(sql);
            return NGX_ERROR;
        }

        p = ngx_sprintf(p, "LISTEN %s;", ident);
        PQfreemem(ident);
    }

    *p = '\0';

    if (p == sql) {
        ngx_free(sql);
        ngx_fleet_pg_set_idle(pc);
        return NGX_OK;
    }

    if (!PQsendQuery(pc->pg, (char *) sql)) {
        ngx_free(sql);
        return NGX_ERROR;
    }

    ngx_free(sql);

    pc->state = NGX_FLEET_PG_SETUP;
    pc->c->idle = 0;
    ngx_add_timer(pc->c->read, ngx_fleet_pg.fmcf->pg_query_timeout);

    return ngx_fleet_pg_flush(pc);
}


static void
ngx_fleet_pg_set_idle(ngx_fleet_pg_conn_t *pc)
{
    pc->state = NGX_FLEET_PG_IDLE;

    if (pc->c->read->timer_set) {
        ngx_del_timer(pc->c->read);
    }

    /*
     * Only the listener counts as idle for ngx_close_idle_connections():
     * a worker shutting down gracefully still finishes the requests it
     * holds, and those may need the pool until the very end.  The pool
     * is closed in exit_process; it never keeps the worker alive, as only
     * timers do and an idle pool connection has none.
     */
    pc->c->idle = pc->listener;

    if (pc->listener && ngx_exiting) {
        ngx_fleet_pg_close(pc);
    }
}


static ngx_int_t
ngx_fleet_pg_want_write(ngx_fleet_pg_conn_t *pc, ngx_uint_t on)
{
    ngx_event_t  *wev;

    wev = pc->c->write;

    if (on && !wev->active) {
        return ngx_add_event(wev, NGX_WRITE_EVENT, 0);
    }

    if (!on && wev->active) {
        return ngx_del_event(wev, NGX_WRITE_EVENT, 0);
    }

    return NGX_OK;
}


static ngx_int_t
ngx_fleet_pg_flush(ngx_fleet_pg_conn_t *pc)
{
    int  rc;

    rc = PQflush(pc->pg);

    if (rc < 0) {
        return NGX_ERROR;
    }

    return ngx_fleet_pg_want_write(pc, rc == 1);
}


static void
ngx_fleet_pg_process(ngx_fleet_pg_conn_t *pc)
{
    PGresult  *res;

    if (ngx_fleet_pg_flush(pc) != NGX_OK) {
        ngx_fleet_pg_fail(pc, PQerrorMessage(pc->pg));
        return;
    }

    if (!PQconsumeInput(pc->pg)) {
        ngx_fleet_pg_fail(pc, PQerrorMessage(pc->pg));
        return;
    }

    ngx_fleet_pg_dispatch_notifies(pc);

    if (pc->state == NGX_FLEET_PG_DOWN) {
        return;
    }

    while (!PQisBusy(pc->pg)) {
        res = PQgetResult(pc->pg);

        if (res == NULL) {
            if (pc->state == NGX_FLEET_PG_BUSY
                || pc->state == NGX_FLEET_PG_SETUP)
            {
                ngx_fleet_pg_complete(pc);
            }

            break;
        }

        /* a statement has one result that matters: the first */
        if (pc->result == NULL && pc->state != NGX_FLEET_PG_IDLE) {
            pc->result = res;

        } else {
            PQclear(res);
        }
    }

    if (pc->state != NGX_FLEET_PG_DOWN && PQstatus(pc->pg) == CONNECTION_BAD)
    {
        ngx_fleet_pg_fail(pc, PQerrorMessage(pc->pg));
    }
}


static void
ngx_fleet_pg_dispatch_notifies(ngx_fleet_pg_conn_t *pc)
{
    ngx_str_t                 channel, payload;
    PGnotify                 *n;
    ngx_uint_t                i;
    ngx_fleet_pg_listener_t  *l;

    l = ngx_fleet_pg.listeners.elts;

    /* the frames of all these events go out together (ngx_fleet_ws.c) */
    ngx_fleet_ws_batch_begin();

    while ((n = PQnotifies(pc->pg)) != NULL) {
        ngx_fleet_worker_metric_add(NGX_FLEET_W_NOTIFY_RECEIVED, 1);

        channel.data = (u_char *) n->relname;
        channel.len = ngx_strlen(n->relname);
        payload.data = (u_char *) n->extra;
        payload.len = ngx_strlen(n->extra);

        ngx_log_debug2(NGX_LOG_DEBUG_HTTP, ngx_fleet_pg.log, 0,
                       "fleet pg: notify \"%V\" %V", &channel, &payload);

        for (i = 0; i < ngx_fleet_pg.listeners.nelts; i++) {
            if (l[i].channel.len == channel.len
                && ngx_strncmp(l[i].channel.data, channel.data, channel.len)
                   == 0)
            {
                l[i].handler(&channel, &payload, l[i].data);
            }
        }

        PQfreemem(n);
    }

    ngx_fleet_ws_batch_end();
}


static void
ngx_fleet_pg_complete(ngx_fleet_pg_conn_t *pc)
{
    PGresult              *res;
    ngx_fleet_pg_query_t  *q;

    res = pc->result;
    pc->result = NULL;

    if (pc->state == NGX_FLEET_PG_SETUP) {
        if (res == NULL || PQresultStatus(res) != PGRES_COMMAND_OK) {
            ngx_log_error(NGX_LOG_ERR, ngx_fleet_pg.log, 0,
                          "fleet pg: LISTEN failed: %s",
                          res ? PQresultErrorMessage(res) : "no result");
            if (res) {
                PQclear(res);
            }

            ngx_fleet_pg_fail(pc, "LISTEN failed");
            return;
        }

        PQclear(res);
        ngx_fleet_pg_set_idle(pc);
        return;
    }

    q = pc->query;
    pc->query = NULL;

    ngx_fleet_pg_set_idle(pc);

    if (q) {
        q->conn = NULL;
        ngx_fleet_pg_deliver(q, res);
    }

    if (res) {
        PQclear(res);
    }

    ngx_fleet_pg_dispatch_waiting();
}


static void
ngx_fleet_pg_deliver(ngx_fleet_pg_query_t *q, PGresult *res)
{
    ExecStatusType  st;

    st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;

    if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK) {
        q->handler(q, res);
        return;
    }

    q->error = res ? PQresultErrorMessage(res) : "no result";

    ngx_log_error(NGX_LOG_ERR, q->log, 0, "fleet pg: query failed: %s",
                  q->error);

    ngx_fleet_metric_inc(NGX_FLEET_M_PG_ERRORS);

    q->handler(q, NULL);
}


static ngx_int_t
ngx_fleet_pg_run(ngx_fleet_pg_conn_t *pc, ngx_fleet_pg_query_t *q)
{
    if (!PQsendQueryParams(pc->pg, q->sql, q->nparams, NULL, q->params,
                           q->lengths, NULL, 0))
    {
        q->error = "cannot send query";
        ngx_log_error(NGX_LOG_ERR, q->log, 0, "fleet pg: %s: %s", q->error,
                      PQerrorMessage(pc->pg));
        ngx_fleet_pg_fail(pc, "send failed");
        return NGX_ERROR;
    }

    pc->query = q;
    pc->state = NGX_FLEET_PG_BUSY;
    pc->c->idle = 0;
    q->conn = pc;

    ngx_fleet_metric_inc(NGX_FLEET_M_PG_QUERIES);

    ngx_add_timer(pc->c->read, ngx_fleet_pg.fmcf->pg_query_timeout);

    if (ngx_fleet_pg_flush(pc) != NGX_OK) {
        /* the connection is broken; the caller hears it through the
         * handler like any other lost connection, so report NGX_OK */
        ngx_fleet_pg_fail(pc, PQerrorMessage(pc->pg));
    }

    return NGX_OK;
}


static void
ngx_fleet_pg_dispatch_waiting(void)
{
    ngx_uint_t             i;
    ngx_queue_t           *qq;
    ngx_fleet_pg_conn_t   *pc;
    ngx_fleet_pg_query_t  *q;

    for (i = 0; i < ngx_fleet_pg.nconns; i++) {
        pc = &ngx_fleet_pg.conns[i];

        while (pc->state == NGX_FLEET_PG_IDLE
               && !ngx_queue_empty(&ngx_fleet_pg.waiting))
        {
            qq = ngx_queue_head(&ngx_fleet_pg.waiting);
            q = ngx_queue_data(qq, ngx_fleet_pg_query_t, queue);

            ngx_queue_remove(qq);
            ngx_fleet_pg.nwaiting--;
            ngx_fleet_worker_metric_add(NGX_FLEET_W_PG_WAITING, -1);
            q->waiting = 0;

            if (q->timeout.timer_set) {
                ngx_del_timer(&q->timeout);
            }

            if (ngx_fleet_pg_run(pc, q) != NGX_OK) {
                q->handler(q, NULL);
            }
        }
    }
}


static void
ngx_fleet_pg_fail_waiting(const char *reason)
{
    ngx_queue_t           *qq;
    ngx_fleet_pg_query_t  *q;

    while (!ngx_queue_empty(&ngx_fleet_pg.waiting)) {
        qq = ngx_queue_head(&ngx_fleet_pg.waiting);
        q = ngx_queue_data(qq, ngx_fleet_pg_query_t, queue);

        ngx_queue_remove(qq);
        ngx_fleet_pg.nwaiting--;
        ngx_fleet_worker_metric_add(NGX_FLEET_W_PG_WAITING, -1);
        q->waiting = 0;

        if (q->timeout.timer_set) {
            ngx_del_timer(&q->timeout);
        }

        q->error = reason;
        q->handler(q, NULL);
    }
}


static void
ngx_fleet_pg_wait_timeout_handler(ngx_event_t *ev)
{
    ngx_fleet_pg_query_t  *q;

    q = ev->data;

    if (!q->waiting) {
        return;
    }

    ngx_queue_remove(&q->queue);
    ngx_fleet_pg.nwaiting--;
    ngx_fleet_worker_metric_add(NGX_FLEET_W_PG_WAITING, -1);
    q->waiting = 0;

    q->error = "timed out waiting for a database connection";

    ngx_log_error(NGX_LOG_ERR, q->log, 0, "fleet pg: %s", q->error);

    q->handler(q, NULL);
}
