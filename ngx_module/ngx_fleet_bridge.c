/*
 * fleetgate: each worker's link to the bridge daemon over its Unix socket.
 *
 * The protocol is newline-delimited JSON (bridge/README.md).  The worker
 * pings every few seconds; the bridge is "up" for this worker while pongs
 * keep coming.  The link reconnects with backoff when the bridge restarts.
 * It is a fast path only: anything the bridge must do is also a row in
 * PostgreSQL, so a dead link delays work, never loses it.
 */

#include "ngx_fleet_module.h"

#include <sys/un.h>


#define NGX_FLEET_BRIDGE_PING        3000
#define NGX_FLEET_BRIDGE_DEAD        10000
#define NGX_FLEET_BRIDGE_BACKOFF_MAX 5000
#define NGX_FLEET_BRIDGE_IN_SIZE     65536
#define NGX_FLEET_BRIDGE_OUT_SIZE    4096


typedef struct {
    ngx_log_t                  *log;
    struct sockaddr_un          addr;
    ngx_str_t                   name;
    ngx_peer_connection_t       peer;
    ngx_connection_t           *c;
    ngx_event_t                 timer;
    ngx_msec_t                  backoff;
    ngx_msec_t                  last_pong;
    ngx_uint_t                  next_id;
    ngx_uint_t                  mqtt;
    ngx_uint_t                  pg;
    size_t                      in_len;
    size_t                      out_pos;
    size_t                      out_len;
    u_char                      in[NGX_FLEET_BRIDGE_IN_SIZE];
    u_char                      out[NGX_FLEET_BRIDGE_OUT_SIZE];
    unsigned                    enabled:1;
} ngx_fleet_bridge_t;


static void ngx_fleet_bridge_connect(void);
static void ngx_fleet_bridge_close(const char *reason);
static void ngx_fleet_bridge_timer_handler(ngx_event_t *ev);
static void ngx_fleet_bridge_read_handler(ngx_event_t *ev);
static void ngx_fleet_bridge_write_handler(ngx_event_t *ev);
static ngx_int_t ngx_fleet_bridge_send(u_char *line, size_t len);
static void ngx_fleet_bridge_line(u_char *line, size_t len);


static ngx_fleet_bridge_t  *ngx_fleet_bridge;


ngx_int_t
ngx_fleet_bridge_init_process(ngx_cycle_t *cycle)
{
    ngx_fleet_main_conf_t  *fmcf;

    fmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_fleet_module);

    if (fmcf == NULL || fmcf->bridge_socket.len == 0) {
        return NGX_OK;
    }

    if (fmcf->bridge_socket.len >= sizeof(ngx_fleet_bridge->addr.sun_path)) {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, 0,
                      "fleet bridge: socket path \"%V\" is too long",
                      &fmcf->bridge_socket);
        return NGX_ERROR;
    }

    ngx_fleet_bridge = ngx_pcalloc(cycle->pool, sizeof(ngx_fleet_bridge_t));
    if (ngx_fleet_bridge == NULL) {
        return NGX_ERROR;
    }

    ngx_fleet_bridge->log = cycle->log;
    ngx_fleet_bridge->addr.sun_family = AF_UNIX;
    ngx_memcpy(ngx_fleet_bridge->addr.sun_path, fmcf->bridge_socket.data,
               fmcf->bridge_socket.len);
    ngx_fleet_bridge->name = fmcf->bridge_socket;

    ngx_fleet_bridge->timer.handler = ngx_fleet_bridge_timer_handler;
    ngx_fleet_bridge->timer.log = cycle->log;
    ngx_fleet_bridge->timer.data = ngx_fleet_bridge;
    ngx_fleet_bridge->timer.cancelable = 1;

    ngx_fleet_bridge->enabled = 1;

    ngx_fleet_bridge_connect();

    return NGX_OK;
}


void
ngx_fleet_bridge_exit_process(ngx_cycle_t *cycle)
{
    if (ngx_fleet_bridge == NULL || !ngx_fleet_bridge->enabled) {
        return;
    }

    ngx_fleet_bridge->enabled = 0;

    if (ngx_fleet_bridge->timer.timer_set) {
        ngx_del_timer(&ngx_fleet_bridge->timer);
    }

    ngx_fleet_bridge_close(NULL);
}


ngx_int_t
ngx_fleet_bridge_status(ngx_uint_t *mqtt, ngx_uint_t *pg)
{
    ngx_fleet_bridge_t  *b;

    b = ngx_fleet_bridge;

    if (b == NULL || b->c == NULL || b->last_pong == 0
        || ngx_current_msec - b->last_pong > NGX_FLEET_BRIDGE_DEAD)
    {
        *mqtt = 0;
        *pg = 0;
        return NGX_DECLINED;
    }

    *mqtt = b->mqtt;
    *pg = b->pg;

    return NGX_OK;
}


/* a one-line request whose answer nobody waits for; NGX_DECLINED when
 * the link is down (the bridge's own sweep catches up) */

ngx_int_t
ngx_fleet_bridge_nudge(const char *line)
{
    if (ngx_fleet_bridge == NULL || ngx_fleet_bridge->c == NULL
        || ngx_fleet_bridge->last_pong == 0)
    {
        return NGX_DECLINED;
    }

    return ngx_fleet_bridge_send((u_char *) line, ngx_strlen(line));
}


static void
ngx_fleet_bridge_connect(void)
{
    ngx_int_t            rc;
    ngx_fleet_bridge_t  *b;

    b = ngx_fleet_bridge;

    ngx_memzero(&b->peer, sizeof(ngx_peer_connection_t));
    b->peer.sockaddr = (struct sockaddr *) &b->addr;
    b->peer.socklen = sizeof(struct sockaddr_un);
    b->peer.name = &b->name;
    b->peer.get = ngx_event_get_peer;
    b->peer.log = b->log;
    b->peer.log_error = NGX_ERROR_ERR;

    rc = ngx_event_connect_peer(&b->peer);

    if (rc == NGX_ERROR || rc == NGX_BUSY || rc == NGX_DECLINED) {
        if (b->peer.connection) {
            ngx_close_connection(b->peer.connection);
            b->peer.connection = NULL;
        }

        b->backoff = b->backoff ? ngx_min(b->backoff * 2,
                                          NGX_FLEET_BRIDGE_BACKOFF_MAX)
                                : 250;
        ngx_add_timer(&b->timer, b->backoff);
        return;
    }

    b->c = b->peer.connection;
    b->c->data = b;
    b->c->read->handler = ngx_fleet_bridge_read_handler;
    b->c->write->handler = ngx_fleet_bridge_write_handler;
    b->c->log->action = "talking to the fleet bridge";
    b->c->idle = 1;

    b->in_len = 0;
    b->out_pos = 0;
    b->out_len = 0;
    b->last_pong = 0;

    /* the first ping goes out as soon as the socket is writable */
    (void) ngx_fleet_bridge_send((u_char *) "{\"op\":\"ping\",\"id\":0}\n",
                                 sizeof("{\"op\":\"ping\",\"id\":0}\n") - 1);

    ngx_add_timer(&b->timer, NGX_FLEET_BRIDGE_PING);

    if (rc == NGX_OK) {
        ngx_fleet_bridge_write_handler(b->c->write);
    }
}


static void
ngx_fleet_bridge_close(const char *reason)
{
    ngx_fleet_bridge_t  *b;

    b = ngx_fleet_bridge;

    if (reason && b->c) {
        ngx_log_error(NGX_LOG_WARN, b->log, 0,
                      "fleet bridge: link to \"%V\" closed: %s",
                      &b->name, reason);
    }

    if (b->c) {
        ngx_close_connection(b->c);
        b->c = NULL;
    }

    b->last_pong = 0;
    ngx_fleet_worker_metric_set(NGX_FLEET_W_BRIDGE_UP, 0);

    if (b->enabled && !ngx_exiting) {
        if (b->timer.timer_set) {
            ngx_del_timer(&b->timer);
        }

        b->backoff = b->backoff ? ngx_min(b->backoff * 2,
                                          NGX_FLEET_BRIDGE_BACKOFF_MAX)
                                : 250;
        ngx_add_timer(&b->timer, b->backoff);
    }
}


static void
ngx_fleet_bridge_timer_handler(ngx_event_t *ev)
{
    u_char               line[64], *p;
    ngx_fleet_bridge_t  *b;

    b = ngx_fleet_bridge;

    if (!b->enabled || ngx_exiting) {
        return;
    }

    if (b->c == NULL) {
        ngx_fleet_bridge_connect();
        return;
    }

    if (b->last_pong
        && ngx_current_msec - b->last_pong > NGX_FLEET_BRIDGE_DEAD)
    {
        ngx_fleet_bridge_close("no pong from the bridge");
        return;
    }

    p = ngx_sprintf(line, "{\"op\":\"ping\",\"id\":%ui}\n", ++b->next_id);

    if (ngx_fleet_bridge_send(line, p - line) != NGX_OK) {
        ngx_fleet_bridge_close("cannot send a ping");
        return;
    }

    ngx_add_timer(&b->timer, NGX_FLEET_BRIDGE_PING);
}


static ngx_int_t
ngx_fleet_bridge_send(u_char *line, size_t len)
{
    ngx_fleet_bridge_t  *b;

    b = ngx_fleet_bridge;

    if (b->out_len + len > NGX_FLEET_BRIDGE_OUT_SIZE) {
        if (b->out_pos == 0) {
            return NGX_ERROR;
        }

        ngx_memmove(b->out, b->out + b->out_pos, b->out_len - b->out_pos);
        b->out_len -= b->out_pos;
        b->out_pos = 0;

        if (b->out_len + len > NGX_FLEET_BRIDGE_OUT_SIZE) {
            return NGX_ERROR;
        }
    }

    ngx_memcpy(b->out + b->out_len, line, len);
    b->out_len += len;

    if (b->c->write->ready) {
        ngx_fleet_bridge_write_handler(b->c->write);
    }

    return NGX_OK;
}


static void
ngx_fleet_bridge_write_handler(ngx_event_t *wev)
{
    ssize_t              n;
    ngx_connection_t    *c;
    ngx_fleet_bridge_t  *b;

    c = wev->data;
    b = c->data;

    while (b->out_pos < b->out_len) {
        n = c->send(c, b->out + b->out_pos, b->out_len - b->out_pos);

        if (n == NGX_AGAIN) {
            if (ngx_handle_write_event(wev, 0) != NGX_OK) {
                ngx_fleet_bridge_close("cannot wait for the socket");
            }

            return;
        }

        if (n == NGX_ERROR) {
            ngx_fleet_bridge_close("write failed");
            return;
        }

        b->out_pos += n;
    }

    b->out_pos = 0;
    b->out_len = 0;
}


static void
ngx_fleet_bridge_read_handler(ngx_event_t *rev)
{
    u_char              *nl, *p;
    ssize_t              n;
    ngx_connection_t    *c;
    ngx_fleet_bridge_t  *b;

    c = rev->data;
    b = c->data;

    if (c->close) {
        /* graceful shutdown: the link is idle by design */
        ngx_fleet_bridge_close(NULL);
        return;
    }

    for ( ;; ) {
        if (b->in_len == NGX_FLEET_BRIDGE_IN_SIZE) {
            ngx_fleet_bridge_close("reply line too long");
            return;
        }

        n = c->recv(c, b->in + b->in_len, NGX_FLEET_BRIDGE_IN_SIZE - b->in_len);

        if (n == NGX_AGAIN) {
            break;
        }

        if (n == 0 || n == NGX_ERROR) {
            ngx_fleet_bridge_close(n == 0 ? "bridge closed the link"
                                          : "read failed");
            return;
        }

        b->in_len += n;

        p = b->in;

        while ((nl = ngx_strlchr(p, b->in + b->in_len, '\n')) != NULL) {
            ngx_fleet_bridge_line(p, nl - p);
            p = nl + 1;
        }

        b->in_len -= p - b->in;
        ngx_memmove(b->in, p, b->in_len);
    }

    if (ngx_handle_read_event(rev, 0) != NGX_OK) {
        ngx_fleet_bridge_close("cannot wait for the socket");
    }
}


static void
ngx_fleet_bridge_line(u_char *line, size_t len)
{
    json_t              *j, *v;
    const char          *op;
    ngx_fleet_bridge_t  *b;

    b = ngx_fleet_bridge;

    j = json_loadb((const char *) line, len, 0, NULL);
    if (j == NULL) {
        ngx_log_error(NGX_LOG_WARN, b->log, 0,
                      "fleet bridge: unparsable reply ignored");
        return;
    }

    op = json_string_value(json_object_get(j, "op"));

    if (op && ngx_strcmp(op, "pong") == 0) {
        b->last_pong = ngx_current_msec;
        b->backoff = 0;
        b->mqtt = json_is_true(json_object_get(j, "mqtt"));
        b->pg = json_is_true(json_object_get(j, "pg"));

        ngx_fleet_worker_metric_set(NGX_FLEET_W_BRIDGE_UP, 1);

        v = json_object_get(j, "mqtt_in");
        if (json_is_integer(v)) {
            ngx_fleet_metric_set(NGX_FLEET_M_MQTT_IN,
                                 (ngx_atomic_uint_t) json_integer_value(v));
        }

        v = json_object_get(j, "mqtt_out");
        if (json_is_integer(v)) {
            ngx_fleet_metric_set(NGX_FLEET_M_MQTT_OUT,
                                 (ngx_atomic_uint_t) json_integer_value(v));
        }
    }

    json_decref(j);
}
