/*
 * fleet-bridge: the Unix socket the nginx workers talk to.
 *
 * Protocol: newline-delimited JSON, one compact object per line in each
 * direction; a request line is at most 1 MiB (without its "\n").  Replies to
 * one connection may come in any order; match them by "id", which is echoed
 * back verbatim (any JSON value; left out when the request had none).
 *
 *   {"op":"ping","id":N}
 *     -> {"op":"pong","id":N,"mqtt":true|false,"pg":true|false,
 *         "bridge_id":"...","mqtt_in":N,"mqtt_out":N,"stored":N,
 *         "dropped_bad_signature":N,"dropped_invalid":N,
 *         "dropped_rejected":N,"unhandled":N,"queue_len":N,
 *         "commands_published":N,"commands_sent":N,
 *         "payments_published":N,"payments_sent":N,"payments_expired":N}
 *
 *   {"op":"publish","id":N,"topic":"device/x/command","qos":0|1,
 *    "retain":false,"payload":"<string>"}
 *     -> {"op":"publish","id":N,"ok":true}
 *          QoS 0: once mosquitto_publish() accepted it;
 *          QoS 1: once the broker's PUBACK arrived
 *     -> {"op":"publish","id":N,"ok":false,"error":"<reason>"}
 *          at once when MQTT is down or the request is invalid; later when
 *          the broker connection drops before the PUBACK
 *          ("mqtt disconnected") or the bridge stops ("bridge shutting down")
 *     "qos" defaults to 0, "retain" to false, "payload" to "".
 *
 *   {"op":"commands_pending","id":N}
 *     -> {"op":"commands_pending","id":N,"ok":true}
 *     a worker created command rows: sweep for PENDING rows at once (the
 *     sweep runs every second anyway; this is only the fast path)
 *
 *   {"op":"payments_pending","id":N}
 *     -> {"op":"payments_pending","id":N,"ok":true}
 *     a worker changed a payment's status: publish its event rows at once
 *
 *   any other op         -> {"op":"error","id":N,"error":"unknown op"}
 *   unparsable line      -> {"op":"error","error":"bad request"}
 *   (the connection stays open in both cases)
 *   line over 1 MiB      -> {"op":"error","error":"line too long"}, closed
 *
 * A client that half-closes (shutdown SHUT_WR) still gets every reply it is
 * owed; the bridge closes once they are written.  Each client has a 4 MiB
 * reply queue; a client that lets it overflow is disconnected.
 */

#define _GNU_SOURCE     /* accept4 */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <jansson.h>

#include "bridge.h"


#define SOCK_READ_CHUNK       ((size_t) 65536)
#define SOCK_ACCEPT_BATCH     64
#define SOCK_DRAIN_TIMEOUT_MS 5000
#define SOCK_KEEP_BUF         (2 * SOCK_READ_CHUNK)   /* idle buffers above */
                                                      /* this are freed */

enum client_state {
    CLIENT_OPEN,            /* reading requests */
    CLIENT_EOF,             /* peer sent everything; answer, then close */
    CLIENT_DRAIN,           /* fatal error queued; close once it is sent */
    CLIENT_DEAD             /* freed when the next poll set is built */
};

struct sock_client {
    struct sock_client  *next;
    int                  fd;
    unsigned             id;            /* for log lines only */
    enum client_state    state;
    int                  pfd;
    unsigned             npending;      /* publishes waiting for PUBACK */
    int64_t              drain_deadline;

    char                *in;
    size_t               in_len;
    size_t               in_cap;
    size_t               in_scanned;    /* no '\n' before this offset */

    char                *out;
    size_t               out_off;       /* sent up to here */
    size_t               out_len;
    size_t               out_cap;
};

/* a QoS 1 publish waiting for its PUBACK, found by message id */
struct sock_pending {
    struct sock_pending  *next;
    int                   mid;
    struct sock_client   *client;       /* NULL once the client has gone */
    json_t               *id;           /* the request's id, echoed back */
};


/* ---- client output ---- */

static void
client_kill(struct sock_client *c, const char *why)
{
    if (c->state != CLIENT_DEAD) {
        blog(BLOG_DEBUG, "client %u closed: %s", c->id, why);
        c->state = CLIENT_DEAD;
    }
}


/* nothing more to read or answer and nothing left to send: close */
static void
client_check_done(struct sock_client *c)
{
    if (c->state == CLIENT_DEAD || c->out_off < c->out_len) {
        return;
    }

    if (c->state == CLIENT_DRAIN) {
        client_kill(c, "error sent");

    } else if (c->state == CLIENT_EOF && c->npending == 0) {
        client_kill(c, "end of requests");
    }
}


static int
client_reserve_output(struct sock_client *c, size_t len)
{
    size_t  queued = c->out_len - c->out_off, cap;
    char   *out;

    if (queued + len > BRIDGE_SOCK_MAX_OUT) {
        blog(BLOG_WARN, "client %u does not read its replies (%zu bytes "
             "queued); disconnecting it", c->id, queued);
        client_kill(c, "reply queue full");
        return -1;
    }

    if (c->out_len + len <= c->out_cap) {
        return 0;
    }

    /* slide unsent bytes to the front before growing */
    if (c->out_off > 0) {
        memmove(c->out, c->out + c->out_off, queued);
        c->out_off = 0;
        c->out_len = queued;
        if (c->out_len + len <= c->out_cap) {
            return 0;
        }
    }

    cap = c->out_cap ? c->out_cap * 2 : 4096;
    while (cap < c->out_len + len) {
        cap *= 2;
    }

    out = realloc(c->out, cap);
    if (out == NULL) {
        client_kill(c, "out of memory");
        return -1;
    }

    c->out = out;
    c->out_cap = cap;

    return 0;
}


/* queue msg (reference stolen) as one line */
static void
client_send(struct sock_client *c, json_t *msg)
{
    char    *text;
    size_t   len;

    if (msg == NULL) {
        blog(BLOG_ERROR, "cannot build a reply for client %u", c->id);
        return;
    }

    text = c->state == CLIENT_DEAD ? NULL : json_dumps(msg, JSON_COMPACT);
    json_decref(msg);

    if (text == NULL) {
        return;
    }

    len = strlen(text);

    if (client_reserve_output(c, len + 1) == 0) {
        memcpy(c->out + c->out_len, text, len);
        c->out[c->out_len + len] = '\n';
        c->out_len += len + 1;
    }

    free(text);
}


static void
client_flush(struct sock_client *c)
{
    ssize_t  n;

    while (c->state != CLIENT_DEAD && c->out_off < c->out_len) {
        n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off,
                 MSG_NOSIGNAL | MSG_DONTWAIT);

        if (n > 0) {
            c->out_off += (size_t) n;

        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            return;

        } else if (errno != EINTR) {
            client_kill(c, strerror(errno));
            return;
        }
    }

    c->out_off = c->out_len = 0;

    if (c->out_cap > SOCK_KEEP_BUF) {
        free(c->out);
        c->out = NULL;
        c->out_cap = 0;
    }

    client_check_done(c);
}


/* ---- replies ---- */

static void
reply_error(struct sock_client *c, json_t *id, const char *error)
{
    client_send(c, json_pack("{s:s, s:O*, s:s}", "op", "error", "id", id,
                             "error", error));
}


static void
reply_publish_ok(struct sock_client *c, json_t *id)
{
    client_send(c, json_pack("{s:s, s:O*, s:b}", "op", "publish", "id", id,
                             "ok", 1));
}


static void
reply_publish_failed(struct sock_client *c, json_t *id, const char *error)
{
    client_send(c, json_pack("{s:s, s:O*, s:b, s:s}", "op", "publish",
                             "id", id, "ok", 0, "error", error));
}


/* a fatal error: say why, stop reading, close once the line is out */
static void
client_fail(struct sock_client *c, const char *error)
{
    reply_error(c, NULL, error);
    c->in_len = c->in_scanned = 0;

    if (c->state != CLIENT_DEAD) {
        c->state = CLIENT_DRAIN;
        c->drain_deadline = bridge_now_ms() + SOCK_DRAIN_TIMEOUT_MS;
    }
}


/* ---- pending publishes ---- */

static struct sock_pending **
pending_bucket(struct bridge_sock *s, int mid)
{
    return &s->pending[(unsigned) mid % BRIDGE_SOCK_PENDING_BUCKETS];
}


static int
pending_add(struct bridge_sock *s, int mid, struct sock_client *c,
    json_t *id)
{
    struct sock_pending  *p, **head;

    p = malloc(sizeof(*p));
    if (p == NULL) {
        return -1;
    }

    head = pending_bucket(s, mid);
    p->mid = mid;
    p->client = c;
    p->id = json_incref(id);
    p->next = *head;
    *head = p;
    c->npending++;

    return 0;
}


static struct sock_pending *
pending_take(struct bridge_sock *s, int mid)
{
    struct sock_pending  *p, **pp;

    for (pp = pending_bucket(s, mid); (p = *pp) != NULL; pp = &p->next) {
        if (p->mid == mid) {
            *pp = p->next;
            return p;
        }
    }

    return NULL;
}


/* answer (ok when reason is NULL) and free one pending publish */
static void
pending_finish(struct sock_pending *p, const char *reason)
{
    struct sock_client  *c = p->client;

    if (c != NULL) {
        if (reason == NULL) {
            reply_publish_ok(c, p->id);
        } else {
            reply_publish_failed(c, p->id, reason);
        }
        c->npending--;
        client_check_done(c);
    }

    json_decref(p->id);
    free(p);
}


void
bridge_sock_publish_done(struct bridge *b, int mid)
{
    struct sock_pending  *p = pending_take(&b->sock, mid);

    /* QoS 0 publishes also end up here; they have no pending entry */
    if (p != NULL) {
        pending_finish(p, NULL);
    }
}


void
bridge_sock_fail_pending(struct bridge *b, const char *reason)
{
    size_t                i;
    struct sock_pending  *p;

    for (i = 0; i < BRIDGE_SOCK_PENDING_BUCKETS; i++) {
        while ((p = b->sock.pending[i]) != NULL) {
            b->sock.pending[i] = p->next;
            pending_finish(p, reason);
        }
    }
}


static void
pending_forget_client(struct bridge_sock *s, struct sock_client *c)
{
    size_t                i;
    struct sock_pending  *p;

    for (i = 0; i < BRIDGE_SOCK_PENDING_BUCKETS && c->npending > 0; i++) {
        for (p = s->pending[i]; p != NULL; p = p->next) {
            if (p->client == c) {
                p->client = NULL;
                c->npending--;
            }
        }
    }
}


/* ---- requests ---- */

static void
handle_ping(struct bridge *b, struct sock_client *c, json_t *id)
{
    client_send(c, json_pack("{s:s, s:O*, s:b, s:b, s:s, s:I, s:I, s:I, s:I,"
                             " s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}",
                             "op", "pong", "id", id,
                             "mqtt", bridge_mqtt_connected(b),
                             "pg", bridge_pg_connected(b),
                             "bridge_id", b->opt.client_id,
                             "mqtt_in", (json_int_t) b->mqtt_in,
                             "mqtt_out", (json_int_t) b->mqtt_out,
                             "stored", (json_int_t) b->cnt.stored,
                             "dropped_bad_signature",
                             (json_int_t) b->cnt.dropped_bad_signature,
                             "dropped_invalid",
                             (json_int_t) b->cnt.dropped_invalid,
                             "dropped_rejected",
                             (json_int_t) b->cnt.dropped_rejected,
                             "unhandled", (json_int_t) b->cnt.unhandled,
                             "queue_len",
                             (json_int_t) bridge_ingest_queue_len(b),
                             "commands_published",
                             (json_int_t) b->cmd.published,
                             "commands_sent", (json_int_t) b->cmd.sent,
                             "payments_published",
                             (json_int_t) b->pay.published,
                             "payments_sent", (json_int_t) b->pay.sent,
                             "payments_expired",
                             (json_int_t) b->pay.expired));
}


struct publish_req {
    const char  *topic;
    const char  *payload;
    size_t       payload_len;
    int          qos;
    int          retain;
};


/* NULL when valid, else what is wrong with it */
static const char *
parse_publish(json_t *req, struct publish_req *p)
{
    json_t  *topic, *payload, *qos, *retain;

    topic = json_object_get(req, "topic");
    payload = json_object_get(req, "payload");
    qos = json_object_get(req, "qos");
    retain = json_object_get(req, "retain");

    if (!json_is_string(topic) || json_string_length(topic) == 0
        || strlen(json_string_value(topic)) != json_string_length(topic))
    {
        return "topic must be a non-empty string";
    }

    if (strpbrk(json_string_value(topic), "+#") != NULL) {
        return "topic must not contain wildcards";
    }

    if (qos != NULL && !(json_is_integer(qos)
                         && (json_integer_value(qos) == 0
                             || json_integer_value(qos) == 1)))
    {
        return "qos must be 0 or 1";
    }

    if (retain != NULL && !json_is_boolean(retain)) {
        return "retain must be a boolean";
    }

    if (payload != NULL && !json_is_string(payload)) {
        return "payload must be a string";
    }

    p->topic = json_string_value(topic);
    p->payload = payload ? json_string_value(payload) : "";
    p->payload_len = payload ? json_string_length(payload) : 0;
    p->qos = qos ? (int) json_integer_value(qos) : 0;
    p->retain = json_is_true(retain);

    return NULL;
}


static void
handle_publish(struct bridge *b, struct sock_client *c, json_t *req,
    json_t *id)
{
    int                  mid = 0;
    const char          *error;
    struct publish_req   p;

    error = parse_publish(req, &p);
    if (error == NULL) {
        error = bridge_mqtt_publish(b, p.topic, p.payload, p.payload_len,
                                    p.qos, p.retain, &mid);
    }

    if (error != NULL) {
        blog(BLOG_DEBUG, "client %u publish refused: %s", c->id, error);
        reply_publish_failed(c, id, error);
        return;
    }

    blog(BLOG_DEBUG, "client %u publish %s (%zu bytes, qos %d, mid %d)",
         c->id, p.topic, p.payload_len, p.qos, mid);

    if (p.qos == 0) {
        reply_publish_ok(c, id);

    } else if (pending_add(&b->sock, mid, c, id) != 0) {
        /* sent, but we cannot track it: say so rather than stay silent */
        reply_publish_failed(c, id, "out of memory");
    }
}


static void
handle_line(struct bridge *b, struct sock_client *c, const char *line,
    size_t len)
{
    json_t        *req, *id;
    const char    *op;
    json_error_t   err;

    req = json_loadb(line, len, JSON_ALLOW_NUL, &err);

    if (req == NULL || !json_is_object(req)) {
        blog(BLOG_DEBUG, "client %u bad request: %s", c->id,
             req ? "not an object" : err.text);
        reply_error(c, NULL, "bad request");
        json_decref(req);
        return;
    }

    id = json_object_get(req, "id");
    op = json_string_value(json_object_get(req, "op"));

    if (op != NULL && strcmp(op, "ping") == 0) {
        handle_ping(b, c, id);

    } else if (op != NULL && strcmp(op, "publish") == 0) {
        handle_publish(b, c, req, id);

    } else if (op != NULL && strcmp(op, "commands_pending") == 0) {
        /* the fast path: the sweep runs anyway every second */
        bridge_commands_wanted(b);
        client_send(c, json_pack("{s:s, s:O*, s:b}", "op", "commands_pending",
                                 "id", id, "ok", 1));

    } else if (op != NULL && strcmp(op, "payments_pending") == 0) {
        /* the same for payment status changes */
        bridge_payments_wanted(b);
        client_send(c, json_pack("{s:s, s:O*, s:b}", "op", "payments_pending",
                                 "id", id, "ok", 1));

    } else {
        reply_error(c, id, "unknown op");
    }

    json_decref(req);
}


/* ---- client input ---- */

static int
client_line_ok(struct sock_client *c)
{
    return c->state == CLIENT_OPEN || c->state == CLIENT_EOF;
}


static void
handle_one_line(struct bridge *b, struct sock_client *c, const char *line,
    size_t len)
{
    if (len > 0 && line[len - 1] == '\r') {
        len--;
    }

    if (len > 0) {
        handle_line(b, c, line, len);
    }
}


/* run every complete line in the input buffer */
static void
client_process_input(struct bridge *b, struct sock_client *c)
{
    char    *p = c->in, *end = c->in + c->in_len, *nl;
    size_t   scan_from = c->in_scanned, rest;

    while (client_line_ok(c)
           && (nl = memchr(p + scan_from, '\n', (size_t) (end - p)
                                                - scan_from)) != NULL)
    {
        if ((size_t) (nl - p) > BRIDGE_SOCK_MAX_LINE) {
            client_fail(c, "line too long");
            return;
        }

        handle_one_line(b, c, p, (size_t) (nl - p));
        p = nl + 1;
        scan_from = 0;
    }

    if (!client_line_ok(c)) {
        return;
    }

    rest = (size_t) (end - p);
    memmove(c->in, p, rest);
    c->in_len = c->in_scanned = rest;

    if (rest > BRIDGE_SOCK_MAX_LINE) {
        client_fail(c, "line too long");
    }
}


static int
client_reserve_input(struct sock_client *c)
{
    size_t   cap;
    char    *in;

    if (c->in_cap - c->in_len >= SOCK_READ_CHUNK) {
        return 0;
    }

    cap = c->in_cap ? c->in_cap * 2 : SOCK_READ_CHUNK;
    while (cap - c->in_len < SOCK_READ_CHUNK) {
        cap *= 2;
    }

    in = realloc(c->in, cap);
    if (in == NULL) {
        return -1;
    }

    c->in = in;
    c->in_cap = cap;

    return 0;
}


/* the peer finished sending: a last line without "\n" still counts */
static void
client_got_eof(struct bridge *b, struct sock_client *c)
{
    c->state = CLIENT_EOF;

    if (c->in_len > 0) {
        handle_one_line(b, c, c->in, c->in_len);
    }

    c->in_len = c->in_scanned = 0;
    client_check_done(c);
}


static void
client_read(struct bridge *b, struct sock_client *c)
{
    ssize_t  n;

    if (client_reserve_input(c) != 0) {
        client_kill(c, "out of memory");
        return;
    }

    n = read(c->fd, c->in + c->in_len, c->in_cap - c->in_len);

    if (n > 0) {
        c->in_len += (size_t) n;
        client_process_input(b, c);

    } else if (n == 0) {
        client_got_eof(b, c);

    } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        client_kill(c, strerror(errno));
        return;
    }

    if (c->in_len == 0 && c->in_cap > SOCK_KEEP_BUF) {
        free(c->in);
        c->in = NULL;
        c->in_cap = 0;
    }
}


static void
client_handle_events(struct bridge *b, struct sock_client *c, short revents)
{
    if (revents & POLLNVAL) {
        client_kill(c, "invalid fd");
        return;
    }

    if (c->state == CLIENT_OPEN && (revents & (POLLIN | POLLHUP | POLLERR))) {
        client_read(b, c);

    } else if (revents & (POLLHUP | POLLERR)) {
        /* no longer reading, and the peer is gone for good */
        client_kill(c, "peer hung up");
        return;
    }

    /* answer right away rather than one poll round later */
    if (c->out_off < c->out_len) {
        client_flush(c);
    }
}


/* ---- client lifecycle ---- */

static void
client_new(struct bridge_sock *s, int fd)
{
    struct sock_client  *c;

    c = calloc(1, sizeof(*c));
    if (c == NULL) {
        blog(BLOG_ERROR, "out of memory accepting a client");
        close(fd);
        return;
    }

    c->fd = fd;
    c->id = ++s->next_client_id;
    c->state = CLIENT_OPEN;
    c->pfd = -1;
    c->next = s->clients;
    s->clients = c;
    s->nclients++;

    blog(BLOG_DEBUG, "client %u connected (%zu open)", c->id, s->nclients);
}


static void
client_free(struct bridge_sock *s, struct sock_client *c)
{
    pending_forget_client(s, c);
    close(c->fd);
    free(c->in);
    free(c->out);
    free(c);
    s->nclients--;
}


static void
reap_dead_clients(struct bridge_sock *s, int64_t now)
{
    struct sock_client  *c, **pp = &s->clients;

    while ((c = *pp) != NULL) {
        if (c->state == CLIENT_DRAIN && now >= c->drain_deadline) {
            client_kill(c, "error not read in time");
        }

        if (c->state == CLIENT_DEAD) {
            *pp = c->next;
            client_free(s, c);
        } else {
            pp = &c->next;
        }
    }
}


static void
accept_clients(struct bridge_sock *s, int64_t now)
{
    int  i, fd;

    for (i = 0; i < SOCK_ACCEPT_BATCH; i++) {
        fd = accept4(s->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

        if (fd >= 0) {
            client_new(s, fd);
            continue;
        }

        switch (errno) {
        case EINTR:
        case ECONNABORTED:
            continue;
        case EAGAIN:
#if EAGAIN != EWOULDBLOCK
        case EWOULDBLOCK:
#endif
            return;
        case EMFILE:
        case ENFILE:
        case ENOBUFS:
        case ENOMEM:
            /* the backlog keeps them; do not spin on a readable listener */
            blog(BLOG_WARN, "accept: %s; pausing for a second",
                 strerror(errno));
            s->accept_resume_at = now + 1000;
            return;
        default:
            blog(BLOG_ERROR, "accept: %s", strerror(errno));
            return;
        }
    }
}


/* ---- listening socket ---- */

static int
socket_address(const char *path, struct sockaddr_un *sun)
{
    size_t  len = strlen(path);

    memset(sun, 0, sizeof(*sun));
    sun->sun_family = AF_UNIX;

    if (len >= sizeof(sun->sun_path)) {
        blog(BLOG_ERROR, "socket path too long (max %zu bytes): %s",
             sizeof(sun->sun_path) - 1, path);
        return -1;
    }

    memcpy(sun->sun_path, path, len + 1);

    return 0;
}


/* remove a socket file left by a dead bridge, but never a live one */
static int
remove_stale_socket(const char *path, const struct sockaddr_un *sun)
{
    int          fd, in_use;
    struct stat  st;

    if (lstat(path, &st) != 0) {
        return 0;
    }

    if (!S_ISSOCK(st.st_mode)) {
        blog(BLOG_ERROR, "%s exists and is not a socket; not removing it",
             path);
        return -1;
    }

    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        blog(BLOG_ERROR, "socket: %s", strerror(errno));
        return -1;
    }

    in_use = connect(fd, (const struct sockaddr *) sun, sizeof(*sun)) == 0
             || errno == EAGAIN;
    close(fd);

    if (in_use) {
        blog(BLOG_ERROR, "another process is listening on %s", path);
        return -1;
    }

    if (unlink(path) != 0 && errno != ENOENT) {
        blog(BLOG_ERROR, "cannot remove stale socket %s: %s", path,
             strerror(errno));
        return -1;
    }

    blog(BLOG_INFO, "removed stale socket %s", path);

    return 0;
}


static int
bind_and_listen(struct bridge_sock *s, const char *path,
    const struct sockaddr_un *sun)
{
    struct stat  st;

    s->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                          0);
    if (s->listen_fd < 0) {
        blog(BLOG_ERROR, "socket: %s", strerror(errno));
        return -1;
    }

    if (bind(s->listen_fd, (const struct sockaddr *) sun, sizeof(*sun)) != 0) {
        blog(BLOG_ERROR, "cannot bind %s: %s", path, strerror(errno));
        return -1;
    }

    /* nginx workers run as another user */
    if (chmod(sun->sun_path, 0666) != 0 || stat(sun->sun_path, &st) != 0) {
        blog(BLOG_ERROR, "cannot chmod %s: %s", path, strerror(errno));
        unlink(path);
        return -1;
    }

    s->dev = st.st_dev;
    s->ino = st.st_ino;

    if (listen(s->listen_fd, 128) != 0) {
        blog(BLOG_ERROR, "cannot listen on %s: %s", path, strerror(errno));
        unlink(path);
        return -1;
    }

    return 0;
}


int
bridge_sock_open(struct bridge *b)
{
    struct sockaddr_un  sun;

    b->sock.listen_fd = -1;
    b->sock.listen_pfd = -1;

    if (socket_address(b->opt.socket_path, &sun) != 0
        || remove_stale_socket(b->opt.socket_path, &sun) != 0
        || bind_and_listen(&b->sock, b->opt.socket_path, &sun) != 0)
    {
        if (b->sock.listen_fd >= 0) {
            close(b->sock.listen_fd);
            b->sock.listen_fd = -1;
        }
        return -1;
    }

    blog(BLOG_INFO, "listening on %s", b->opt.socket_path);

    return 0;
}


/* ---- loop steps ---- */

void
bridge_sock_prepare(struct bridge *b, struct pollset *ps, int64_t now)
{
    short                events;
    struct sock_client  *c;
    struct bridge_sock  *s = &b->sock;

    reap_dead_clients(s, now);
    s->listen_pfd = -1;

    if (now >= s->accept_resume_at) {
        s->listen_pfd = pollset_add(ps, s->listen_fd, POLLIN);
    } else {
        pollset_wake_at(ps, now, s->accept_resume_at);
    }

    for (c = s->clients; c != NULL; c = c->next) {
        events = c->state == CLIENT_OPEN ? POLLIN : 0;
        if (c->out_off < c->out_len) {
            events |= POLLOUT;
        }
        if (c->state == CLIENT_DRAIN) {
            pollset_wake_at(ps, now, c->drain_deadline);
        }

        /* even with no events: poll still reports POLLHUP/POLLERR */
        c->pfd = pollset_add(ps, c->fd, events);
    }
}


void
bridge_sock_dispatch(struct bridge *b, struct pollset *ps, int64_t now)
{
    struct sock_client  *c;
    struct bridge_sock  *s = &b->sock;

    for (c = s->clients; c != NULL; c = c->next) {
        if (c->pfd >= 0 && ps->fds[c->pfd].revents != 0
            && c->state != CLIENT_DEAD)
        {
            client_handle_events(b, c, ps->fds[c->pfd].revents);
        }
    }

    /* new clients go to the list head; they are polled from next round */
    if (s->listen_pfd >= 0 && ps->fds[s->listen_pfd].revents != 0) {
        accept_clients(s, now);
    }
}


/* only our own socket file: a newer bridge may have replaced it */
static void
unlink_our_socket(struct bridge *b)
{
    struct stat  st;

    if (stat(b->opt.socket_path, &st) == 0 && st.st_dev == b->sock.dev
        && st.st_ino == b->sock.ino)
    {
        unlink(b->opt.socket_path);
    }
}


void
bridge_sock_shutdown(struct bridge *b)
{
    struct sock_client  *c;
    struct bridge_sock  *s = &b->sock;

    if (s->listen_fd >= 0) {
        close(s->listen_fd);
        s->listen_fd = -1;
    }

    bridge_sock_fail_pending(b, "bridge shutting down");

    /* one last non-blocking attempt to deliver what is queued */
    for (c = s->clients; c != NULL; c = c->next) {
        client_flush(c);
        client_kill(c, "bridge shutting down");
    }

    reap_dead_clients(s, 0);
    unlink_our_socket(b);
}
