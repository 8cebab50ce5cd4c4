/*
 * fleetgate: WebSocket server (RFC 6455) inside nginx.
 *
 * After the 101 the HTTP request is logged and freed, the way nginx
 * itself frees a request before a keep-alive wait: the connection keeps
 * only its small pool and a malloc'd ngx_fleet_ws_t.  Reads go through one
 * worker-wide buffer into the frame parser (common/fleet_ws.c), which
 * holds a partial frame or message only while one is arriving.  Writes
 * go straight to c->send from a queue of shared, reference-counted
 * frames: a fan-out builds each frame once and a connection whose socket
 * takes it at once queues nothing.  A queue over fleet_ws_max_queue
 * bytes means a client that cannot keep up: it is cut off (1008) and its
 * memory freed, it never holds the others back.
 *
 * WebSockets are reusable connections: on a reload (or when the worker
 * runs out of connections) nginx asks them to go, they close with 1001
 * and clients reconnect to the new workers, which hear every event.
 */

#include "ngx_fleet_ws.h"


#define NGX_FLEET_WS_READ_BUDGET    ((size_t) 256 * 1024)
#define NGX_FLEET_WS_CLOSE_WAIT     3000


struct ngx_fleet_ws_out_s {
    ngx_fleet_ws_out_t         *next;
    ngx_fleet_ws_msg_t         *msg;
    size_t                      sent;
};


static ngx_int_t ngx_fleet_ws_has_token(ngx_table_elt_t *h,
    const char *token);
static void ngx_fleet_ws_detach(ngx_http_request_t *r, ngx_fleet_ws_t *ws);
static void ngx_fleet_ws_read_handler(ngx_event_t *rev);
static void ngx_fleet_ws_write_handler(ngx_event_t *wev);
static ngx_int_t ngx_fleet_ws_timer(ngx_fleet_ws_t *ws);
static ngx_int_t ngx_fleet_ws_process(ngx_fleet_ws_t *ws, u_char *buf,
    size_t len);
static ngx_int_t ngx_fleet_ws_rate_allows(ngx_fleet_ws_t *ws);
static ngx_int_t ngx_fleet_ws_control(ngx_fleet_ws_t *ws, ngx_int_t opcode,
    const u_char *data, size_t len);
static ngx_fleet_ws_out_t *ngx_fleet_ws_out_append(ngx_fleet_ws_t *ws,
    ngx_fleet_ws_msg_t *msg);
static ngx_int_t ngx_fleet_ws_flush(ngx_fleet_ws_t *ws);
static ssize_t ngx_fleet_ws_writev(ngx_fleet_ws_t *ws);
static ngx_int_t ngx_fleet_ws_overflow(ngx_fleet_ws_t *ws);
static void ngx_fleet_ws_terminate(ngx_fleet_ws_t *ws);
static ngx_fleet_ws_msg_t *ngx_fleet_ws_msg_raw(u_char *data, size_t len);
static ngx_fleet_ws_out_t *ngx_fleet_ws_out_alloc(void);
static void ngx_fleet_ws_out_free(ngx_fleet_ws_out_t *out);


/* one read buffer for every connection of the worker */
static u_char               ngx_fleet_ws_buffer[16384];
static ngx_fleet_ws_out_t  *ngx_fleet_ws_free_outs;
static ngx_fleet_ws_t      *ngx_fleet_ws_dirty;
static ngx_uint_t           ngx_fleet_ws_batching;
static ngx_uint_t           ngx_fleet_ws_nfree_outs;


ngx_int_t
ngx_fleet_ws_check_upgrade(ngx_http_request_t *r, const char **why)
{
    ngx_table_elt_t  *h;

    if (r->http_version != NGX_HTTP_VERSION_11) {
        *why = "WebSocket needs an HTTP/1.1 request";
        return NGX_DECLINED;
    }

    if (r->method != NGX_HTTP_GET) {
        *why = "WebSocket upgrades use GET";
        return NGX_DECLINED;
    }

    /* looked up by name: nginx keeps no pointer to every one of them */
    h = ngx_fleet_find_header(r, "Upgrade", sizeof("Upgrade") - 1);

    if (ngx_fleet_ws_has_token(h, "websocket") != NGX_OK)
    {
        *why = "this route needs \"Upgrade: websocket\"";
        return NGX_DECLINED;
    }

    h = ngx_fleet_find_header(r, "Connection", sizeof("Connection") - 1);

    if (ngx_fleet_ws_has_token(h, "upgrade") != NGX_OK)
    {
        *why = "this route needs \"Connection: Upgrade\"";
        return NGX_DECLINED;
    }

    h = ngx_fleet_find_header(r, "Sec-WebSocket-Version",
                              sizeof("Sec-WebSocket-Version") - 1);

    if (h == NULL || h->value.len != 2
        || ngx_strncmp(h->value.data, "13", 2) != 0)
    {
        *why = "Sec-WebSocket-Version must be 13";
        return NGX_DECLINED;
    }

    h = ngx_fleet_find_header(r, "Sec-WebSocket-Key",
                              sizeof("Sec-WebSocket-Key") - 1);

    if (h == NULL || !fleet_ws_key_valid(h->value.data, h->value.len)) {
        *why = "Sec-WebSocket-Key is missing or is not 16 bytes in base64";
        return NGX_DECLINED;
    }

    return NGX_OK;
}


/* a comma-separated header list contains token, in any case */

static ngx_int_t
ngx_fleet_ws_has_token(ngx_table_elt_t *h, const char *token)
{
    size_t   n;
    u_char  *p, *end, *start;

    if (h == NULL) {
        return NGX_DECLINED;
    }

    n = ngx_strlen(token);
    p = h->value.data;
    end = p + h->value.len;

    while (p < end) {
        while (p < end && (*p == ' ' || *p == '\t' || *p == ',')) {
            p++;
        }

        start = p;

        while (p < end && *p != ',' && *p != ' ' && *p != '\t') {
            p++;
        }

        if ((size_t) (p - start) == n
            && ngx_strncasecmp(start, (u_char *) token, n) == 0)
        {
            return NGX_OK;
        }
    }

    return NGX_DECLINED;
}


ngx_fleet_ws_t *
ngx_fleet_ws_accept(ngx_http_request_t *r,
    const ngx_fleet_ws_handler_t *handler, void *data, ngx_str_t *protocol)
{
    u_char                 *p, *text;
    size_t                  len;
    ngx_buf_t              *b;
    ngx_fleet_ws_t         *ws;
    ngx_connection_t       *c;
    ngx_table_elt_t        *key;
    ngx_fleet_ws_msg_t     *msg;
    ngx_fleet_main_conf_t  *fmcf;
    char                    accept[FLEET_WS_ACCEPT_LEN + 1];

    static const char  head[] = "HTTP/1.1 101 Switching Protocols" CRLF
                                "Upgrade: websocket" CRLF
                                "Connection: Upgrade" CRLF
                                "Sec-WebSocket-Accept: ";

    c = r->connection;
    fmcf = ngx_http_get_module_main_conf(r, ngx_fleet_module);

    key = ngx_fleet_find_header(r, "Sec-WebSocket-Key",
                                sizeof("Sec-WebSocket-Key") - 1);
    if (key == NULL) {
        goto failed;
    }

    fleet_ws_accept(key->value.data, key->value.len, accept);

    len = sizeof(head) - 1 + FLEET_WS_ACCEPT_LEN + 2 + 2;

    if (protocol && protocol->len) {
        len += sizeof("Sec-WebSocket-Protocol: ") - 1 + protocol->len + 2;
    }

    text = ngx_pnalloc(r->pool, len);
    ws = ngx_calloc(sizeof(ngx_fleet_ws_t), c->log);

    if (text == NULL || ws == NULL) {
        if (ws) {
            ngx_free(ws);
        }

        goto failed;
    }

    p = ngx_cpymem(text, head, sizeof(head) - 1);
    p = ngx_cpymem(p, accept, FLEET_WS_ACCEPT_LEN);
    *p++ = CR; *p++ = LF;

    if (protocol && protocol->len) {
        p = ngx_cpymem(p, "Sec-WebSocket-Protocol: ",
                       sizeof("Sec-WebSocket-Protocol: ") - 1);
        p = ngx_cpymem(p, protocol->data, protocol->len);
        *p++ = CR; *p++ = LF;
    }

    *p++ = CR; *p++ = LF;

    msg = ngx_fleet_ws_msg_raw(text, p - text);
    if (msg == NULL) {
        ngx_free(ws);
        goto failed;
    }

    ws->connection = c;
    ws->handler = handler;
    ws->data = data;
    ws->out_last = &ws->out;
    ws->heard = 1;
    ws->rate_last = ngx_current_msec;
    ws->rate_tokens = fmcf->ws_message_burst * 1000;

    fleet_ws_parser_init(&ws->parser, fmcf->ws_max_message);

    /* bytes the client sent right behind the upgrade request */
    b = r->header_in;

    if (b && b->pos < b->last) {
        ws->pending = ngx_alloc(b->last - b->pos, c->log);
        if (ws->pending == NULL) {
            ngx_fleet_ws_msg_release(msg);
            ngx_free(ws);
            goto failed;
        }

        ws->pending_len = b->last - b->pos;
        ngx_memcpy(ws->pending, b->pos, ws->pending_len);
    }

    r->headers_out.status = NGX_HTTP_SWITCHING_PROTOCOLS;

    ngx_fleet_ws_detach(r, ws);

    ngx_fleet_worker_metric_add(NGX_FLEET_W_WEBSOCKETS, 1);

    ngx_add_timer(c->read, fmcf->ws_ping_interval);

    /* a client gone before its 101 went out: the caller still owns data */
    ws->accepting = 1;

    if (ngx_fleet_ws_send(ws, msg) != NGX_OK) {
        ngx_fleet_ws_msg_release(msg);
        return NULL;
    }

    ngx_fleet_ws_msg_release(msg);

    if (ngx_handle_read_event(c->read, 0) != NGX_OK) {
        ngx_fleet_ws_terminate(ws);
        return NULL;
    }

    ws->accepting = 0;

    if (ngx_exiting || ngx_terminate) {
        /* the worker began leaving while this upgrade was decided: nginx
         * asked its idle connections to go already, this one is told now */
        c->close = 1;
        ngx_post_event(c->read, &ngx_posted_events);
        return ws;
    }

    if (ws->pending || c->read->ready) {
        ngx_post_event(c->read, &ngx_posted_events);
    }

    return ws;

failed:

    ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
    ngx_http_run_posted_requests(c);

    return NULL;
}


/*
 * Frees the request but keeps its connection (as nginx does before a
 * keep-alive wait), and with it only what a WebSocket needs.
 */

static void
ngx_fleet_ws_detach(ngx_http_request_t *r, ngx_fleet_ws_t *ws)
{
    ngx_buf_t              *b;
    ngx_chain_t            *cl, *ln;
    ngx_connection_t       *c;
    ngx_http_connection_t  *hc;

    c = r->connection;
    hc = r->http_connection;

    r->keepalive = 0;

    ngx_http_free_request(r, 0);

    c->data = ws;
    c->destroyed = 0;
    c->log->action = "serving WebSocket";

    b = c->buffer;

    if (b && b->start && ngx_pfree(c->pool, b->start) == NGX_OK) {
        b->start = NULL;
        b->pos = NULL;
        b->last = NULL;
    }

    for (cl = hc->free; cl; /* void */) {
        ln = cl;
        cl = cl->next;
        ngx_pfree(c->pool, ln->buf->start);
        ngx_free_chain(c->pool, ln);
    }

    hc->free = NULL;

    for (cl = hc->busy; cl; /* void */) {
        ln = cl;
        cl = cl->next;
        ngx_pfree(c->pool, ln->buf->start);
        ngx_free_chain(c->pool, ln);
    }

    hc->busy = NULL;
    hc->nbusy = 0;

#if (NGX_HTTP_SSL)
    if (c->ssl) {
        ngx_ssl_free_buffer(c);
    }
#endif

    if (c->read->timer_set) {
        ngx_del_timer(c->read);
    }

    if (c->write->timer_set) {
        ngx_del_timer(c->write);
    }

    c->read->handler = ngx_fleet_ws_read_handler;
    c->write->handler = ngx_fleet_ws_write_handler;

    /* small frames go out at once, not after the previous one's ACK */
    if (c->tcp_nodelay == NGX_TCP_NODELAY_UNSET
        && c->type == SOCK_STREAM
        && ngx_tcp_nodelay(c) != NGX_OK)
    {
        ngx_log_error(NGX_LOG_INFO, c->log, 0,
                      "fleet: cannot set TCP_NODELAY on a WebSocket");
    }

    c->idle = 1;
    ngx_reusable_connection(c, 1);
}


static void
ngx_fleet_ws_read_handler(ngx_event_t *rev)
{
    ssize_t            n;
    size_t             total;
    u_char            *pending;
    ngx_fleet_ws_t    *ws;
    ngx_connection_t  *c;

    c = rev->data;
    ws = c->data;

    if (c->close) {
        /* a reload, or the worker needs the connection */
        if (ngx_fleet_ws_close(ws, FLEET_WS_CLOSE_GOING_AWAY,
                               "server going away")
            == NGX_OK)
        {
            /* no waiting for the client while the worker leaves */
            ngx_fleet_ws_terminate(ws);
        }

        return;
    }

    if (rev->timedout) {
        rev->timedout = 0;

        if (ngx_fleet_ws_timer(ws) != NGX_OK) {
            return;
        }
    }

    ws->handling = 1;

    if (ws->pending) {
        pending = ws->pending;
        ws->pending = NULL;

        (void) ngx_fleet_ws_process(ws, pending, ws->pending_len);
        ngx_free(pending);
    }

    total = 0;

    while (!ws->terminate && total < NGX_FLEET_WS_READ_BUDGET) {

        n = c->recv(c, ngx_fleet_ws_buffer, sizeof(ngx_fleet_ws_buffer));

        if (n == NGX_AGAIN) {
            break;
        }

        if (n == NGX_ERROR || n == 0) {
            ngx_log_debug0(NGX_LOG_DEBUG_HTTP, c->log, 0,
                           "fleet ws: client closed the connection");
            ws->terminate = 1;
            break;
        }

        ws->heard = 1;
        total += n;

        if (ngx_fleet_ws_process(ws, ngx_fleet_ws_buffer, n) != NGX_OK) {
            break;
        }
    }

    ws->handling = 0;

    if (ws->terminate) {
        ngx_fleet_ws_terminate(ws);
        return;
    }

    if (total >= NGX_FLEET_WS_READ_BUDGET && rev->ready) {
        /* let the other connections of the worker have their turn */
        ngx_post_event(rev, &ngx_posted_events);
        return;
    }

    if (ngx_handle_read_event(rev, 0) != NGX_OK) {
        ngx_fleet_ws_terminate(ws);
    }
}


/*
 * The read timer: every ping interval a ping; a client that sent nothing
 * since the previous one is dead.  While closing: the peer's close frame
 * did not come.
 */

static ngx_int_t
ngx_fleet_ws_timer(ngx_fleet_ws_t *ws)
{
    ngx_fleet_main_conf_t  *fmcf;

    if (ws->closing) {
        ngx_fleet_ws_terminate(ws);
        return NGX_ERROR;
    }

    if (!ws->heard && ws->ping_sent) {
        ngx_log_error(NGX_LOG_INFO, ws->connection->log, 0,
                      "fleet: WebSocket client did not answer a ping");
        ngx_fleet_ws_terminate(ws);
        return NGX_ERROR;
    }

    ws->heard = 0;
    ws->ping_sent = 1;

    fmcf = ngx_http_cycle_get_module_main_conf(ngx_cycle, ngx_fleet_module);
    ngx_add_timer(ws->connection->read, fmcf->ws_ping_interval);

    if (ws->handler->ping) {
        return ws->handler->ping(ws);
    }

    return ngx_fleet_ws_control(ws, FLEET_WS_OP_PING, NULL, 0);
}


/* NGX_OK to go on reading; otherwise the connection is closing or gone
 * (ws->terminate set, or the close frame on its way) */

static ngx_int_t
ngx_fleet_ws_process(ngx_fleet_ws_t *ws, u_char *buf, size_t len)
{
    size_t              used;
    fleet_ws_event_t    ev;
    fleet_ws_event_e    rc;

    while (len) {
        rc = fleet_ws_parse(&ws->parser, buf, len, &used, &ev);

        buf += used;
        len -= used;

        switch (rc) {

        case FLEET_WS_AGAIN:
            break;

        case FLEET_WS_MESSAGE:
            if (ws->closing) {
                break;
            }

            if (ngx_fleet_ws_rate_allows(ws) != NGX_OK) {
                if (ws->terminate || ws->closing) {
                    return NGX_ERROR;
                }

                break;
            }

            ws->handler->message(ws, ev.opcode, (u_char *) ev.data, ev.len);
            break;

        case FLEET_WS_PING:
            if (ngx_fleet_ws_control(ws, FLEET_WS_OP_PONG, ev.data, ev.len)
                != NGX_OK)
            {
                return NGX_ERROR;
            }

            break;

        case FLEET_WS_PONG:
            ws->ping_sent = 0;
            break;

        case FLEET_WS_CLOSE:
            ws->close_received = 1;

            if (ws->closing) {
                /* our close was answered */
                ws->terminate = 1;
                return NGX_ERROR;
            }

            /* echo the code (RFC 6455 5.5.1); 1005 means there was none */
            ngx_fleet_ws_close(ws, ev.close_code == FLEET_WS_CLOSE_NO_STATUS
                                   ? 0 : ev.close_code, NULL);
            return NGX_ERROR;

        default: /* FLEET_WS_ERROR */
            ngx_log_error(NGX_LOG_INFO, ws->connection->log, 0,
                          "fleet: WebSocket client error: %s, closing "
                          "with %d", ev.error, ev.close_code);

            ws->close_received = 1;     /* nothing more will be read */
            ngx_fleet_ws_close(ws, ev.close_code, ev.error);
            return NGX_ERROR;
        }

        if (ws->terminate) {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/*
 * A token bucket per client (fleet_ws_message_rate per second, up to
 * fleet_ws_message_burst): NGX_OK, NGX_DECLINED for a message over the
 * rate, NGX_ABORT for a client refused burst times in a row: flooding.
 * Socket.IO's polling sessions keep the same three numbers in shared
 * memory.
 */

ngx_int_t
ngx_fleet_rate_take(ngx_msec_t *last, ngx_uint_t *tokens,
    ngx_uint_t *refused)
{
    ngx_uint_t              t, cap;
    ngx_msec_int_t          elapsed;
    ngx_fleet_main_conf_t  *fmcf;

    fmcf = ngx_http_cycle_get_module_main_conf(ngx_cycle, ngx_fleet_module);

    if (fmcf->ws_message_rate == 0) {
        return NGX_OK;
    }

    cap = fmcf->ws_message_burst * 1000;
    elapsed = (ngx_msec_int_t) (ngx_current_msec - *last);
    *last = ngx_current_msec;

    t = *tokens;

    if (elapsed > 0) {
        t += ngx_min((ngx_uint_t) elapsed, 3600000) * fmcf->ws_message_rate;
    }

    *tokens = ngx_min(t, cap);

    if (*tokens >= 1000) {
        *tokens -= 1000;
        *refused = 0;
        return NGX_OK;
    }

    return (++*refused > fmcf->ws_message_burst) ? NGX_ABORT : NGX_DECLINED;
}


static ngx_int_t
ngx_fleet_ws_rate_allows(ngx_fleet_ws_t *ws)
{
    ngx_int_t  rc;

    rc = ngx_fleet_rate_take(&ws->rate_last, &ws->rate_tokens,
                             &ws->rate_refused);

    if (rc == NGX_OK) {
        return NGX_OK;
    }

    if (rc == NGX_ABORT) {
        ngx_log_error(NGX_LOG_INFO, ws->connection->log, 0,
                      "fleet: WebSocket client keeps flooding, closing");
        ngx_fleet_ws_close(ws, FLEET_WS_CLOSE_POLICY,
                           "message rate exceeded");
        return NGX_DECLINED;
    }

    if (ws->handler->limited) {
        ws->handler->limited(ws);
    }

    return NGX_DECLINED;
}


static ngx_int_t
ngx_fleet_ws_control(ngx_fleet_ws_t *ws, ngx_int_t opcode,
    const u_char *data, size_t len)
{
    ngx_int_t            rc;
    ngx_fleet_ws_msg_t  *msg;

    msg = ngx_fleet_ws_msg(opcode, (u_char *) data, len, 0);
    if (msg == NULL) {
        ngx_fleet_ws_terminate(ws);
        return NGX_ERROR;
    }

    rc = ngx_fleet_ws_send(ws, msg);
    ngx_fleet_ws_msg_release(msg);

    return rc;
}


ngx_int_t
ngx_fleet_ws_close(ngx_fleet_ws_t *ws, ngx_int_t code, const char *reason)
{
    size_t               len;
    ngx_fleet_ws_msg_t  *msg;
    u_char               payload[FLEET_WS_MAX_CONTROL];

    if (ws->closing) {
        return NGX_OK;
    }

    len = code ? fleet_ws_close_payload(payload, (int) code, reason) : 0;

    msg = ngx_fleet_ws_msg(FLEET_WS_OP_CLOSE, payload, len, 0);
    if (msg == NULL) {
        ngx_fleet_ws_terminate(ws);
        return NGX_ERROR;
    }

    /* the close frame must not be dropped for a full queue */
    msg->refs++;

    if (ngx_fleet_ws_out_append(ws, msg) == NULL) {
        ngx_fleet_ws_msg_release(msg);
        ngx_fleet_ws_msg_release(msg);
        ngx_fleet_ws_terminate(ws);
        return NGX_ERROR;
    }

    ngx_fleet_ws_msg_release(msg);

    ws->closing = 1;

    /* waiting for the peer's close frame, for a while */
    ngx_add_timer(ws->connection->read, NGX_FLEET_WS_CLOSE_WAIT);

    return ngx_fleet_ws_flush(ws);
}


ngx_fleet_ws_msg_t *
ngx_fleet_ws_msg(ngx_int_t opcode, u_char *payload, size_t len, uint32_t tag)
{
    size_t               n;
    ngx_fleet_ws_msg_t  *msg;

    msg = ngx_alloc(offsetof(ngx_fleet_ws_msg_t, data) + FLEET_WS_MAX_HEADER
                    + len, ngx_cycle->log);
    if (msg == NULL) {
        return NULL;
    }

    n = fleet_ws_frame_header(msg->data, (int) opcode, len);

    if (len) {
        ngx_memcpy(msg->data + n, payload, len);
    }

    msg->refs = 1;
    msg->tag = tag;
    msg->len = n + len;

    return msg;
}


static ngx_fleet_ws_msg_t *
ngx_fleet_ws_msg_raw(u_char *data, size_t len)
{
    ngx_fleet_ws_msg_t  *msg;

    msg = ngx_alloc(offsetof(ngx_fleet_ws_msg_t, data) + len, ngx_cycle->log);
    if (msg == NULL) {
        return NULL;
    }

    ngx_memcpy(msg->data, data, len);

    msg->refs = 1;
    msg->tag = 0;
    msg->len = len;

    return msg;
}


void
ngx_fleet_ws_msg_release(ngx_fleet_ws_msg_t *msg)
{
    if (--msg->refs == 0) {
        ngx_free(msg);
    }
}


ngx_int_t
ngx_fleet_ws_send_text(ngx_fleet_ws_t *ws, u_char *text, size_t len)
{
    ngx_int_t            rc;
    ngx_fleet_ws_msg_t  *msg;

    msg = ngx_fleet_ws_msg(FLEET_WS_OP_TEXT, text, len, 0);
    if (msg == NULL) {
        ngx_fleet_ws_terminate(ws);
        return NGX_ERROR;
    }

    rc = ngx_fleet_ws_send(ws, msg);
    ngx_fleet_ws_msg_release(msg);

    return rc;
}


ngx_int_t
ngx_fleet_ws_send(ngx_fleet_ws_t *ws, ngx_fleet_ws_msg_t *msg)
{
    ngx_fleet_ws_out_t     *out;
    ngx_fleet_main_conf_t  *fmcf;

    if (ws->closing || ws->terminate) {
        /* nothing goes after a close frame */
        return NGX_OK;
    }

    if (msg->tag) {
        /* latest wins: replace a queued frame of the same stream that
         * has not started to go out */
        for (out = ws->out; out; out = out->next) {
            if (out->msg->tag == msg->tag && out->sent == 0) {
                ws->queued -= out->msg->len;
                ngx_fleet_ws_msg_release(out->msg);

                out->msg = msg;
                msg->refs++;
                ws->queued += msg->len;

                return NGX_OK;
            }
        }
    }

    fmcf = ngx_http_cycle_get_module_main_conf(ngx_cycle, ngx_fleet_module);

    if (ws->queued + msg->len > fmcf->ws_max_queue && ws->out) {
        return ngx_fleet_ws_overflow(ws);
    }

    msg->refs++;

    out = ngx_fleet_ws_out_append(ws, msg);

    if (out == NULL) {
        ngx_fleet_ws_msg_release(msg);
        ngx_fleet_ws_terminate(ws);
        return NGX_ERROR;
    }

    if (ws->out != out) {
        /* the socket is full already; the write handler goes on */
        return NGX_OK;
    }

    if (ngx_fleet_ws_batching) {
        if (!ws->in_dirty) {
            ws->dirty_next = ngx_fleet_ws_dirty;
            ngx_fleet_ws_dirty = ws;
            ws->in_dirty = 1;
        }

        return NGX_OK;
    }

    return ngx_fleet_ws_flush(ws);
}


void
ngx_fleet_ws_batch_begin(void)
{
    ngx_fleet_ws_batching++;
}


void
ngx_fleet_ws_batch_end(void)
{
    ngx_fleet_ws_t  *ws;

    if (--ngx_fleet_ws_batching) {
        return;
    }

    while ((ws = ngx_fleet_ws_dirty) != NULL) {
        ngx_fleet_ws_dirty = ws->dirty_next;
        ws->in_dirty = 0;

        (void) ngx_fleet_ws_flush(ws);
    }
}


/* takes over a reference to msg; the queue link, or NULL */

static ngx_fleet_ws_out_t *
ngx_fleet_ws_out_append(ngx_fleet_ws_t *ws, ngx_fleet_ws_msg_t *msg)
{
    ngx_fleet_ws_out_t  *out;

    out = ngx_fleet_ws_out_alloc();
    if (out == NULL) {
        return NULL;
    }

    out->msg = msg;
    out->sent = 0;
    out->next = NULL;

    *ws->out_last = out;
    ws->out_last = &out->next;
    ws->queued += msg->len;

    return out;
}


static ngx_int_t
ngx_fleet_ws_flush(ngx_fleet_ws_t *ws)
{
    ssize_t                 n;
    ngx_event_t            *wev;
    ngx_connection_t       *c;
    ngx_fleet_ws_out_t     *out;
    ngx_fleet_main_conf_t  *fmcf;

    c = ws->connection;
    wev = c->write;

    while ((out = ws->out) != NULL) {

        if (out->next && c->ssl == NULL) {
            n = ngx_fleet_ws_writev(ws);

            if (n == NGX_ERROR) {
                ngx_fleet_ws_terminate(ws);
                return NGX_ERROR;
            }

            if (n == NGX_AGAIN) {
                break;
            }

            continue;
        }

        n = c->send(c, out->msg->data + out->sent,
                    out->msg->len - out->sent);

        if (n == NGX_ERROR) {
            ngx_fleet_ws_terminate(ws);
            return NGX_ERROR;
        }

        if (n == NGX_AGAIN) {
            break;
        }

        out->sent += n;

        if (out->sent < out->msg->len) {
            break;
        }

        ws->out = out->next;
        if (ws->out == NULL) {
            ws->out_last = &ws->out;
        }

        ws->queued -= out->msg->len;
        ngx_fleet_ws_msg_release(out->msg);
        ngx_fleet_ws_out_free(out);
    }

    if (ws->out) {
        if (!wev->timer_set) {
            /* a client that takes nothing for a ping interval is gone */
            fmcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                                       ngx_fleet_module);
            ngx_add_timer(wev, fmcf->ws_ping_interval);
        }

        if (ngx_handle_write_event(wev, 0) != NGX_OK) {
            ngx_fleet_ws_terminate(ws);
            return NGX_ERROR;
        }

        return NGX_OK;
    }

    if (wev->timer_set) {
        ngx_del_timer(wev);
    }

    if (ws->closing && ws->close_received) {
        /* the closing handshake is complete: the server closes TCP */
        ngx_fleet_ws_terminate(ws);
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * Several queued frames in one writev (plain TCP; TLS records go one
 * frame at a time through c->send).  Returns NGX_OK when it wrote some
 * (the written frames are released), NGX_AGAIN, or NGX_ERROR.
 */

static ssize_t
ngx_fleet_ws_writev(ngx_fleet_ws_t *ws)
{
    size_t               k;
    ssize_t              n;
    ngx_uint_t           i;
    ngx_iovec_t          vec;
    ngx_fleet_ws_out_t  *out;
    struct iovec         iovs[64];

    i = 0;

    for (out = ws->out; out && i < 64; out = out->next) {
        iovs[i].iov_base = out->msg->data + out->sent;
        iovs[i].iov_len = out->msg->len - out->sent;
        i++;
    }

    vec.iovs = iovs;
    vec.count = i;
    vec.size = 0;
    vec.nalloc = 64;

    n = ngx_writev(ws->connection, &vec);

    if (n == NGX_AGAIN) {
        ws->connection->write->ready = 0;
    }

    if (n == NGX_ERROR || n == NGX_AGAIN) {
        return n;
    }

    /* release what went out, keep the offset into a frame cut short */
    while ((out = ws->out) != NULL && n > 0) {
        k = out->msg->len - out->sent;

        if ((size_t) n < k) {
            /* the socket is full */
            out->sent += n;
            ws->connection->write->ready = 0;
            return NGX_AGAIN;
        }

        n -= (ssize_t) k;

        ws->out = out->next;
        if (ws->out == NULL) {
            ws->out_last = &ws->out;
        }

        ws->queued -= out->msg->len;
        ngx_fleet_ws_msg_release(out->msg);
        ngx_fleet_ws_out_free(out);
    }

    return NGX_OK;
}


static void
ngx_fleet_ws_write_handler(ngx_event_t *wev)
{
    ngx_fleet_ws_t    *ws;
    ngx_connection_t  *c;

    c = wev->data;
    ws = c->data;

    if (wev->timedout) {
        ngx_log_error(NGX_LOG_INFO, c->log, NGX_ETIMEDOUT,
                      "fleet: WebSocket client stopped reading");
        ngx_fleet_worker_metric_add(NGX_FLEET_W_WS_SLOW_CLOSED, 1);
        ngx_fleet_ws_terminate(ws);
        return;
    }

    (void) ngx_fleet_ws_flush(ws);
}


/*
 * The send queue is full: the client is cut off and its memory freed.  A
 * close frame goes out only when it can without waiting.
 */

static ngx_int_t
ngx_fleet_ws_overflow(ngx_fleet_ws_t *ws)
{
    size_t               len;
    ngx_connection_t    *c;
    u_char               frame[FLEET_WS_MAX_HEADER + FLEET_WS_MAX_CONTROL];

    c = ws->connection;

    ngx_log_error(NGX_LOG_INFO, c->log, 0,
                  "fleet: WebSocket client too slow, %uz bytes queued, "
                  "closing", ws->queued);

    ngx_fleet_worker_metric_add(NGX_FLEET_W_WS_SLOW_CLOSED, 1);

    if (ws->out == NULL || ws->out->sent == 0) {
        len = fleet_ws_close_payload(frame + 2, FLEET_WS_CLOSE_POLICY,
                                     "client too slow");
        (void) fleet_ws_frame_header(frame, FLEET_WS_OP_CLOSE, len);
        (void) c->send(c, frame, len + 2);
    }

    ngx_fleet_ws_terminate(ws);

    return NGX_ERROR;
}


static void
ngx_fleet_ws_terminate(ngx_fleet_ws_t *ws)
{
    ngx_connection_t    *c;
    ngx_fleet_ws_t     **wp;
    ngx_fleet_ws_out_t  *out;

    if (ws->handling) {
        /* the read handler finishes the job once it unwinds */
        ws->terminate = 1;
        return;
    }

    c = ws->connection;

    if (ws->in_dirty) {
        /* only during a batch, when a send found the client gone */
        for (wp = &ngx_fleet_ws_dirty; *wp; wp = &(*wp)->dirty_next) {
            if (*wp == ws) {
                *wp = ws->dirty_next;
                break;
            }
        }

        ws->in_dirty = 0;
    }

    if (ws->handler->closed && !ws->accepting) {
        ws->handler->closed(ws);
    }

    while ((out = ws->out) != NULL) {
        ws->out = out->next;
        ngx_fleet_ws_msg_release(out->msg);
        ngx_fleet_ws_out_free(out);
    }

    fleet_ws_parser_free(&ws->parser);

    if (ws->pending) {
        ngx_free(ws->pending);
    }

    ngx_free(ws);

    ngx_fleet_worker_metric_add(NGX_FLEET_W_WEBSOCKETS, -1);

    ngx_http_close_connection(c);
}


/* queue links are recycled: a busy fan-out allocates none */

static ngx_fleet_ws_out_t *
ngx_fleet_ws_out_alloc(void)
{
    ngx_fleet_ws_out_t  *out;

    out = ngx_fleet_ws_free_outs;

    if (out) {
        ngx_fleet_ws_free_outs = out->next;
        ngx_fleet_ws_nfree_outs--;
        return out;
    }

    return ngx_alloc(sizeof(ngx_fleet_ws_out_t), ngx_cycle->log);
}


static void
ngx_fleet_ws_out_free(ngx_fleet_ws_out_t *out)
{
    if (ngx_fleet_ws_nfree_outs >= 4096) {
        ngx_free(out);
        return;
    }

    out->next = ngx_fleet_ws_free_outs;
    ngx_fleet_ws_free_outs = out;
    ngx_fleet_ws_nfree_outs++;
}

