/*
 * fleet-bridge: the PostgreSQL side, non-blocking libpq in the poll loop.
 *
 * One connection, one query in flight, a FIFO of the rest.  Connecting uses
 * PQconnectStart/PQconnectPoll; queries PQsendQueryParams + PQflush, results
 * PQconsumeInput/PQisBusy/PQgetResult.  When the server goes away every
 * queued query is answered with a NULL result and the connection is rebuilt
 * with exponential backoff.
 *
 * Queries: the heartbeat here,
 *   SELECT fleet_bridge_heartbeat(<bridge id>, '{"mqtt":..,"mqtt_in":..,..}')
 * the ingest calls and the offline check of bridge_ingest.c, and the
 * command sweep and deadline timer of bridge_commands.c.
 */


#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge.h"


struct pg_query {
    struct pg_query  *next;
    bridge_pg_cb      cb;
    void             *arg;
    int               nparams;
    char             *sql;
    char            **params;
    int               answered;     /* cb already had a result */
};


static const char  heartbeat_sql[] = "SELECT fleet_bridge_heartbeat($1, $2)";


int
bridge_pg_connected(const struct bridge *b)
{
    return b->pg.state == PG_READY;
}


/* ---- the query queue ---- */

static void
pg_query_free(struct pg_query *q)
{
    int  i;

    for (i = 0; i < q->nparams; i++) {
        free(q->params[i]);
    }

    free(q->params);
    free(q->sql);
    free(q);
}


static struct pg_query *
pg_query_new(const char *sql, int nparams, const char *const *params)
{
    int               i;
    struct pg_query  *q;

    q = calloc(1, sizeof(*q));
    if (q == NULL) {
        return NULL;
    }

    q->sql = strdup(sql);
    q->params = calloc((size_t) nparams + 1, sizeof(char *));

    if (q->sql == NULL || q->params == NULL) {
        pg_query_free(q);
        return NULL;
    }

    for (i = 0; i < nparams; i++) {
        if (params[i] != NULL) {
            q->params[i] = strdup(params[i]);
            if (q->params[i] == NULL) {
                q->nparams = i;
                pg_query_free(q);
                return NULL;
            }
        }
    }

    q->nparams = nparams;

    return q;
}


static struct pg_query *
pg_queue_pop(struct bridge_pg *pg)
{
    struct pg_query  *q = pg->head;

    if (q != NULL) {
        pg->head = q->next;
        if (pg->head == NULL) {
            pg->tail = NULL;
        }
    }

    return q;
}


/* the connection died: every caller still waiting gets a NULL result */
static void
pg_fail_all_queries(struct bridge *b)
{
    struct pg_query  *q;

    b->pg.busy = 0;
    b->pg.flush_pending = 0;

    while ((q = pg_queue_pop(&b->pg)) != NULL) {
        if (!q->answered && q->cb != NULL) {
            q->cb(b, NULL, q->arg);
        }
        pg_query_free(q);
    }
}


/* ---- connection lifecycle ---- */

static void
pg_log_notice(void *arg, const char *message)
{
    (void) arg;

    blog(BLOG_INFO, "postgresql: %s", message);
}


/* libpq's last error without its trailing newline */
static const char *
pg_error_text(PGconn *conn, char *buf, size_t size)
{
    size_t  len;

    /* a cut message is fine; on failure buf is undefined, so empty it */
    if (snprintf(buf, size, "%s",
                 conn ? PQerrorMessage(conn) : "out of memory") < 0)
    {
        buf[0] = '\0';
    }

    len = strlen(buf);

    while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == ' ')) {
        buf[--len] = '\0';
    }

    return buf;
}


/* give up on this connection; why is libpq's message unless given */
static void
pg_teardown_why(struct bridge *b, int64_t now, const char *what,
    const char *why)
{
    char     err[512];
    int64_t  delay = backoff_next_delay(&b->pg.backoff);

    blog(BLOG_WARN, "postgresql %s: %s; reconnecting in %lld ms", what,
         why ? why : pg_error_text(b->pg.conn, err, sizeof(err)),
         (long long) delay);

    PQfinish(b->pg.conn);
    b->pg.conn = NULL;
    b->pg.state = PG_IDLE;
    b->pg.retry_at = now + delay;
    pg_fail_all_queries(b);
}


static void
pg_teardown(struct bridge *b, int64_t now, const char *what)
{
    pg_teardown_why(b, now, what, NULL);
}


static void
pg_start_connect(struct bridge *b, int64_t now)
{
    b->pg.conn = PQconnectStart(b->opt.pg_dsn);

    if (b->pg.conn == NULL || PQstatus(b->pg.conn) == CONNECTION_BAD) {
        pg_teardown(b, now, "connect failed");
        return;
    }

    PQsetNoticeProcessor(b->pg.conn, pg_log_notice, NULL);

    /* libpq: after PQconnectStart behave as if PQconnectPoll said WRITING */
    b->pg.state = PG_CONNECTING;
    b->pg.poll_dir = PGRES_POLLING_WRITING;
    b->pg.connect_deadline = now + BRIDGE_PG_CONNECT_TIMEOUT_MS;
    blog(BLOG_DEBUG, "postgresql connecting");
}


static void
pg_connected(struct bridge *b, int64_t now)
{
    if (PQsetnonblocking(b->pg.conn, 1) != 0) {
        pg_teardown(b, now, "set non-blocking");
        return;
    }

    b->pg.state = PG_READY;
    b->pg.next_heartbeat_at = now;
    backoff_reset(&b->pg.backoff);

    blog(BLOG_INFO, "postgresql connected (database %s on %s:%s, server %d)",
         PQdb(b->pg.conn), PQhost(b->pg.conn), PQport(b->pg.conn),
         PQserverVersion(b->pg.conn));
}


static void
pg_continue_connect(struct bridge *b, int64_t now)
{
    b->pg.poll_dir = PQconnectPoll(b->pg.conn);

    switch (b->pg.poll_dir) {
    case PGRES_POLLING_OK:
        pg_connected(b, now);
        break;
    case PGRES_POLLING_FAILED:
        pg_teardown(b, now, "connect failed");
        break;
    default:
        break;              /* READING or WRITING: wait on PQsocket() */
    }
}


void
bridge_pg_init(struct bridge *b)
{
    b->pg.conn = NULL;
    b->pg.state = PG_IDLE;
    b->pg.retry_at = 0;         /* connect on the first tick */
    b->pg.pfd = -1;
}


/* ---- running queries ---- */

/* PQflush until done or the socket is full; -1 when the connection broke */
static int
pg_flush(struct bridge *b)
{
    int  rc = PQflush(b->pg.conn);

    b->pg.flush_pending = (rc == 1);

    return rc < 0 ? -1 : 0;
}


static void
pg_send_next(struct bridge *b, int64_t now)
{
    struct pg_query  *q = b->pg.head;

    if (b->pg.state != PG_READY || b->pg.busy || q == NULL) {
        return;
    }

    if (!PQsendQueryParams(b->pg.conn, q->sql, q->nparams, NULL,
                           (const char *const *) q->params, NULL, NULL, 0))
    {
        pg_teardown(b, now, "send query");
        return;
    }

    b->pg.busy = 1;

    if (pg_flush(b) != 0) {
        pg_teardown(b, now, "send query");
    }
}


int
bridge_pg_query(struct bridge *b, const char *sql, int nparams,
    const char *const *params, bridge_pg_cb cb, void *arg)
{
    struct pg_query  *q;

    if (b->pg.state != PG_READY) {
        return -1;
    }

    q = pg_query_new(sql, nparams, params);
    if (q == NULL) {
        blog(BLOG_ERROR, "out of memory queueing a query");
        return -1;
    }

    q->cb = cb;
    q->arg = arg;

    if (b->pg.tail != NULL) {
        b->pg.tail->next = q;
    } else {
        b->pg.head = q;
    }
    b->pg.tail = q;

    pg_send_next(b, bridge_now_ms());

    return 0;
}


/* hand every complete result to its query; start the next query */
static void
pg_drain_results(struct bridge *b, int64_t now)
{
    PGresult         *res;
    struct pg_query  *q;

    while (b->pg.busy && !PQisBusy(b->pg.conn)) {
        q = b->pg.head;
        res = PQgetResult(b->pg.conn);

        if (res != NULL) {
            if (!q->answered && q->cb != NULL) {
                q->cb(b, res, q->arg);
            }
            q->answered = 1;
            PQclear(res);
            continue;
        }

        /* NULL: this query is complete */
        pg_query_free(pg_queue_pop(&b->pg));
        b->pg.busy = 0;
        pg_send_next(b, now);
    }
}


/* the bridge does not LISTEN; drop anything that arrives anyway */
static void
pg_drop_notifies(struct bridge *b)
{
    PGnotify  *n;

    while ((n = PQnotifies(b->pg.conn)) != NULL) {
        PQfreemem(n);
    }
}


static void
pg_handle_io(struct bridge *b, short revents, int64_t now)
{
    if ((revents & POLLOUT) && b->pg.flush_pending && pg_flush(b) != 0) {
        pg_teardown(b, now, "connection lost");
        return;
    }

    if (!(revents & (POLLIN | POLLHUP | POLLERR | POLLNVAL))) {
        return;
    }

    /* libpq: after read-ready, consume input and then flush again */
    if (!PQconsumeInput(b->pg.conn)
        || (b->pg.flush_pending && pg_flush(b) != 0))
    {
        pg_teardown(b, now, "connection lost");
        return;
    }

    pg_drain_results(b, now);

    if (b->pg.conn != NULL && PQstatus(b->pg.conn) == CONNECTION_BAD) {
        pg_teardown(b, now, "connection lost");
        return;
    }

    if (b->pg.conn != NULL) {
        pg_drop_notifies(b);
    }
}


/* ---- heartbeat ---- */

static void
heartbeat_done(struct bridge *b, const PGresult *res, void *arg)
{
    (void) arg;

    b->pg.heartbeat_busy = 0;

    if (res == NULL) {
        return;                 /* connection lost; already logged */
    }

    if (PQresultStatus(res) == PGRES_TUPLES_OK
        || PQresultStatus(res) == PGRES_COMMAND_OK)
    {
        if (b->pg.heartbeat_failing) {
            blog(BLOG_INFO, "heartbeat succeeds again");
        }
        b->pg.heartbeat_failing = 0;
        blog(BLOG_DEBUG, "heartbeat stored");
        return;
    }

    /* log the first failure loudly, repeats only in debug */
    blog(b->pg.heartbeat_failing ? BLOG_DEBUG : BLOG_ERROR,
         "heartbeat failed: %s", PQresultErrorMessage(res));
    b->pg.heartbeat_failing = 1;
}


static void
send_heartbeat(struct bridge *b)
{
    int          n;
    char         status[512];
    const char  *params[2];

    n = snprintf(status, sizeof(status),
                 "{\"mqtt\":%s,\"mqtt_in\":%llu,\"mqtt_out\":%llu,"
                 "\"stored\":%llu,\"dropped_bad_signature\":%llu,"
                 "\"dropped_invalid\":%llu,\"dropped_rejected\":%llu,"
                 "\"unhandled\":%llu,\"queue_len\":%zu,"
                 "\"commands_published\":%llu,\"commands_sent\":%llu,"
                 "\"payments_published\":%llu,\"payments_sent\":%llu,"
                 "\"payments_expired\":%llu}",
                 bridge_mqtt_connected(b) ? "true" : "false",
                 (unsigned long long) b->mqtt_in,
                 (unsigned long long) b->mqtt_out,
                 (unsigned long long) b->cnt.stored,
                 (unsigned long long) b->cnt.dropped_bad_signature,
                 (unsigned long long) b->cnt.dropped_invalid,
                 (unsigned long long) b->cnt.dropped_rejected,
                 (unsigned long long) b->cnt.unhandled,
                 bridge_ingest_queue_len(b),
                 (unsigned long long) b->cmd.published,
                 (unsigned long long) b->cmd.sent,
                 (unsigned long long) b->pay.published,
                 (unsigned long long) b->pay.sent,
                 (unsigned long long) b->pay.expired);

    /* cannot happen with these 20-digit counters, but never send cut JSON */
    if (n < 0 || (size_t) n >= sizeof(status)) {
        blog(BLOG_ERROR, "heartbeat: cannot format the status");
        return;
    }

    params[0] = b->opt.client_id;
    params[1] = status;

    /* set first: a failed send answers (NULL) inside the call */
    b->pg.heartbeat_busy = 1;

    if (bridge_pg_query(b, heartbeat_sql, 2, params, heartbeat_done, NULL)
        != 0)
    {
        b->pg.heartbeat_busy = 0;
    }
}


/* ---- loop steps ---- */

void
bridge_pg_tick(struct bridge *b, int64_t now)
{
    switch (b->pg.state) {
    case PG_IDLE:
        if (now >= b->pg.retry_at) {
            pg_start_connect(b, now);
        }
        break;

    case PG_CONNECTING:
        if (now >= b->pg.connect_deadline) {
            pg_teardown_why(b, now, "connect", "timed out");

        } else if (PQsocket(b->pg.conn) < 0) {
            /* between two hosts/attempts libpq may have no socket */
            pg_continue_connect(b, now);
        }
        break;

    case PG_READY:
        if (now >= b->pg.next_heartbeat_at) {
            /* a heartbeat still running means the server is slow: skip */
            if (!b->pg.heartbeat_busy) {
                send_heartbeat(b);
            }
            b->pg.next_heartbeat_at = now
                + (int64_t) b->opt.heartbeat_interval_s * 1000;
        }
        break;
    }
}


void
bridge_pg_prepare(struct bridge *b, struct pollset *ps, int64_t now)
{
    int    fd;
    short  events;

    b->pg.pfd = -1;

    switch (b->pg.state) {
    case PG_IDLE:
        pollset_wake_at(ps, now, b->pg.retry_at);
        return;

    case PG_CONNECTING:
        events = b->pg.poll_dir == PGRES_POLLING_READING ? POLLIN : POLLOUT;
        pollset_wake_at(ps, now, b->pg.connect_deadline);
        break;

    default:
        events = POLLIN | (b->pg.flush_pending ? POLLOUT : 0);
        pollset_wake_at(ps, now, b->pg.next_heartbeat_at);
        break;
    }

    /* re-read every time: PQconnectPoll may switch sockets */
    fd = PQsocket(b->pg.conn);
    if (fd >= 0) {
        b->pg.pfd = pollset_add(ps, fd, events);
    } else {
        pollset_wake_at(ps, now, now);
    }
}


void
bridge_pg_dispatch(struct bridge *b, struct pollset *ps, int64_t now)
{
    short  revents;

    if (b->pg.pfd < 0 || b->pg.conn == NULL) {
        return;
    }

    revents = ps->fds[b->pg.pfd].revents;
    if (revents == 0) {
        return;
    }

    if (b->pg.state == PG_CONNECTING) {
        pg_continue_connect(b, now);
    } else {
        pg_handle_io(b, revents, now);
    }
}


void
bridge_pg_shutdown(struct bridge *b)
{
    b->pg.state = PG_IDLE;      /* callbacks below must not queue more */
    pg_fail_all_queries(b);

    if (b->pg.conn != NULL) {
        PQfinish(b->pg.conn);
        b->pg.conn = NULL;
    }

    blog(BLOG_DEBUG, "postgresql connection closed");
}
