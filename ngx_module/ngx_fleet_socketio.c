/*
 * fleetgate: Socket.IO at /socket.io/ (SPEC 7, seeds 001 and 003).
 *
 * Engine.IO 4 over WebSocket, or over HTTP long-polling until the client
 * upgrades (ngx_fleet_sio_polling.c keeps those sessions in shared memory,
 * so their requests may land on any worker).  Socket.IO 5 on top: the main
 * namespace only, identity from the CONNECT's auth token and nothing
 * else, rooms with rights checked in PostgreSQL, acknowledgements.
 *
 * Events come from the PostgreSQL bus like every stream's: the envelope's
 * "sio" member says which event goes to which rooms with which data, each
 * worker builds the packet once and hands it to its members of those
 * rooms (once per socket, however many of the rooms it is in) and to the
 * polling sessions.  In the shared rooms a member only gets events about
 * devices it may see.
 */

#include "ngx_fleet_socketio.h"

#include <openssl/rand.h>


/* a Socket.IO client on a WebSocket of this worker */
typedef struct ngx_fleet_sio_ws_s  ngx_fleet_sio_ws_t;

typedef struct ngx_fleet_sio_link_s  ngx_fleet_sio_link_t;

struct ngx_fleet_sio_link_s {
    ngx_fleet_room_member_t     member;
    ngx_fleet_sio_link_t       *next;
};

struct ngx_fleet_sio_ws_s {
    ngx_fleet_sio_conn_t        conn;
    ngx_fleet_ws_t             *ws;
    ngx_fleet_sio_link_t       *rooms;
    ngx_uint_t                  nrooms;
    ngx_uint_t                  last_emit;
    ngx_event_t                *retry;          /* an upgrade waiting */
    ngx_uint_t                  retries;
    unsigned                    probing:1;      /* upgrading from polling */
    unsigned                    from_polling:1;
    /* events the polling session got already (the other workers may
     * have queued them there before this one hears them) */
    int64_t                     seqs[NGX_FLEET_SIO_SEQS];
};


/* a database call a packet needs */
typedef struct {
    ngx_queue_t                 queue;
    ngx_fleet_pg_query_t        query;
    ngx_fleet_sio_conn_t       *conn;
    ngx_uint_t                  kind;
    long long                   ack_id;
    size_t                      room_len;
    u_char                      room[NGX_FLEET_SIO_MAX_ROOM + 8];
    char                        page[NGX_FLEET_SIO_MAX_ROOM + 1];
} ngx_fleet_sio_call_t;

enum {
    NGX_FLEET_SIO_CALL_CONNECT = 0,
    NGX_FLEET_SIO_CALL_JOIN,
    NGX_FLEET_SIO_CALL_PAGE
};


typedef struct {
    ngx_fleet_api_t            *api;
    ngx_event_t                 ev;
    char                        sid[NGX_FLEET_SIO_SID_LEN + 1];
} ngx_fleet_sio_upgrade_t;


typedef struct {
    ngx_fleet_ws_msg_t         *msg;
    const char                 *owner;
    ngx_uint_t                  filtered;
    ngx_uint_t                  emit;
    int64_t                     seq;
} ngx_fleet_sio_delivery_t;


static void ngx_fleet_sio_ws_start(ngx_event_t *ev);
static void ngx_fleet_sio_ws_message(ngx_fleet_ws_t *ws, ngx_int_t opcode,
    u_char *data, size_t len);
static void ngx_fleet_sio_ws_limited(ngx_fleet_ws_t *ws);
static ngx_int_t ngx_fleet_sio_rate_limited(ngx_fleet_sio_conn_t *conn);
static void ngx_fleet_sio_ws_closed(ngx_fleet_ws_t *ws);
static ngx_int_t ngx_fleet_sio_ws_ping(ngx_fleet_ws_t *ws);
static ngx_int_t ngx_fleet_sio_ws_send(ngx_fleet_sio_conn_t *conn,
    u_char *pkt, size_t len);
static ngx_int_t ngx_fleet_sio_ws_join(ngx_fleet_sio_conn_t *conn,
    u_char *room, size_t len);
static void ngx_fleet_sio_ws_leave(ngx_fleet_sio_conn_t *conn, u_char *room,
    size_t len);
static ngx_int_t ngx_fleet_sio_ws_sync(ngx_fleet_sio_conn_t *conn);
static ngx_int_t ngx_fleet_sio_ws_allow(ngx_fleet_sio_conn_t *conn);
static void ngx_fleet_sio_ws_resume(ngx_fleet_sio_conn_t *conn);
static void ngx_fleet_sio_ws_close(ngx_fleet_sio_conn_t *conn);
static ngx_int_t ngx_fleet_sio_ws_upgrade(ngx_fleet_sio_ws_t *sw);
static void ngx_fleet_sio_ws_retry(ngx_event_t *ev);
static ngx_int_t ngx_fleet_sio_connect(ngx_fleet_sio_conn_t *conn,
    fleet_sio_packet_t *p);
static ngx_int_t ngx_fleet_sio_event(ngx_fleet_sio_conn_t *conn,
    fleet_sio_packet_t *p);
static ngx_int_t ngx_fleet_sio_call(ngx_fleet_sio_conn_t *conn,
    ngx_uint_t kind, long long ack_id, const char *sql, const char *room,
    size_t room_len);
static void ngx_fleet_sio_called(ngx_fleet_pg_query_t *q, PGresult *res);
static void ngx_fleet_sio_joined(ngx_fleet_sio_call_t *call, json_t *j);
static ngx_int_t ngx_fleet_sio_emit(ngx_fleet_sio_conn_t *conn,
    const char *event, json_t *data);
static ngx_int_t ngx_fleet_sio_ack(ngx_fleet_sio_conn_t *conn,
    long long ack_id, json_t *data);
static ngx_int_t ngx_fleet_sio_send_text(ngx_fleet_sio_conn_t *conn,
    char *text);
static ngx_int_t ngx_fleet_sio_room_arg(fleet_sio_packet_t *p,
    const char *key, u_char *room, size_t *len, const char **why);
static void ngx_fleet_sio_deliver(ngx_fleet_room_member_t *m, void *arg);
static void ngx_fleet_sio_stats_schedule(void);
static void ngx_fleet_sio_stats_timer(ngx_event_t *ev);
static void ngx_fleet_sio_stats_fetched(ngx_fleet_pg_query_t *q,
    PGresult *res);


static const ngx_fleet_ws_handler_t  ngx_fleet_sio_ws_handler = {
    ngx_fleet_sio_ws_message,
    ngx_fleet_sio_ws_limited,
    ngx_fleet_sio_ws_closed,
    ngx_fleet_sio_ws_ping
};

static const ngx_fleet_sio_ops_t  ngx_fleet_sio_ws_ops = {
    ngx_fleet_sio_ws_send,
    ngx_fleet_sio_ws_join,
    ngx_fleet_sio_ws_leave,
    ngx_fleet_sio_ws_sync,
    ngx_fleet_sio_ws_allow,
    ngx_fleet_sio_ws_resume,
    ngx_fleet_sio_ws_close
};


static ngx_uint_t            ngx_fleet_sio_emits;
static ngx_event_t           ngx_fleet_sio_stats_ev;
static ngx_fleet_pg_query_t  ngx_fleet_sio_stats_query;
static ngx_uint_t            ngx_fleet_sio_stats_busy;
static ngx_uint_t            ngx_fleet_sio_stats_again;


/* GET and POST /socket.io/?EIO=4&transport=...[&sid=...] */

ngx_int_t
ngx_fleet_api_socketio(ngx_fleet_api_t *api)
{
    const char               *eio, *transport, *sid, *why;
    ngx_http_request_t       *r;
    ngx_fleet_sio_upgrade_t  *up;

    r = api->request;

    eio = ngx_fleet_api_arg(api, "EIO");
    transport = ngx_fleet_api_arg(api, "transport");
    sid = ngx_fleet_api_arg(api, "sid");

    /* the answers engine.io itself gives, so clients react the same */
    if (eio == NULL || ngx_strcmp(eio, "4") != 0) {
        return ngx_fleet_sio_refuse(r, 5, "Unsupported protocol version");
    }

    if (transport == NULL
        || (ngx_strcmp(transport, "polling") != 0
            && ngx_strcmp(transport, "websocket") != 0))
    {
        return ngx_fleet_sio_refuse(r, 0, "Transport unknown");
    }

    if (sid && (ngx_strlen(sid) != NGX_FLEET_SIO_SID_LEN
                || ngx_fleet_api_is_token(sid) != NGX_OK))
    {
        return ngx_fleet_sio_refuse(r, 1, "Session ID unknown");
    }

    if (transport[0] == 'p') {
        if (r->method == NGX_HTTP_POST) {
            if (sid == NULL) {
                return ngx_fleet_sio_refuse(r, 1, "Session ID unknown");
            }

            return ngx_fleet_sio_polling_post(api, sid);
        }

        return sid ? ngx_fleet_sio_polling_get(api, sid)
                   : ngx_fleet_sio_polling_open(api);
    }

    if (r->method != NGX_HTTP_GET
        || ngx_fleet_ws_check_upgrade(r, &why) != NGX_OK)
    {
        return ngx_fleet_sio_refuse(r, 3, "Bad request");
    }

    /*
     * The request must be freed outside of the content handler that holds
     * it: the 101 goes out from a posted event.
     */
    up = ngx_pcalloc(r->pool, sizeof(ngx_fleet_sio_upgrade_t));
    if (up == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    up->api = api;

    if (sid) {
        ngx_memcpy(up->sid, sid, NGX_FLEET_SIO_SID_LEN + 1);
    }

    up->ev.handler = ngx_fleet_sio_ws_start;
    up->ev.data = up;
    up->ev.log = r->connection->log;

    ngx_post_event(&up->ev, &ngx_posted_events);

    return NGX_DONE;
}


/* engine.io's refusals: 400 {"code": N, "message": "..."} */

ngx_int_t
ngx_fleet_sio_refuse(ngx_http_request_t *r, ngx_int_t code,
    const char *message)
{
    u_char  *p, buf[128];

    p = ngx_snprintf(buf, sizeof(buf), "{\"code\":%i,\"message\":\"%s\"}",
                     code, message);

    return ngx_fleet_send_text(r, NGX_HTTP_BAD_REQUEST, buf, p - buf);
}


static void
ngx_fleet_sio_ws_start(ngx_event_t *ev)
{
    u_char                    pkt[256];
    size_t                    n;
    ngx_fleet_sio_ws_t       *sw;
    ngx_http_request_t       *r;
    ngx_fleet_sio_upgrade_t  *up;

    up = ev->data;
    r = up->api->request;

    sw = ngx_calloc(sizeof(ngx_fleet_sio_ws_t), r->connection->log);
    if (sw == NULL) {
        ngx_fleet_api_finish(up->api, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    sw->conn.ops = &ngx_fleet_sio_ws_ops;
    ngx_queue_init(&sw->conn.calls);

    if (up->sid[0]) {
        /* the upgrade of a polling session: identity and rooms come over
         * with the upgrade packet */
        if (ngx_fleet_sio_polling_exists(up->sid) != NGX_OK) {
            ngx_free(sw);
            ngx_fleet_api_finish(up->api,
                                 ngx_fleet_sio_refuse(r, 1,
                                                      "Session ID unknown"));
            return;
        }

        ngx_memcpy(sw->conn.sid, up->sid, NGX_FLEET_SIO_SID_LEN + 1);
        sw->probing = 1;

    } else {
        ngx_fleet_sio_new_sid(sw->conn.sid);
        ngx_fleet_sio_new_sid(sw->conn.sio_id);
    }

    /* from here on the request is gone */
    sw->ws = ngx_fleet_ws_accept(r, &ngx_fleet_sio_ws_handler, sw, NULL);

    if (sw->ws == NULL) {
        ngx_free(sw);
        return;
    }

    sw->conn.log = sw->ws->connection->log;

    if (sw->probing) {
        return;
    }

    n = ngx_fleet_sio_open_packet(pkt, sizeof(pkt), sw->conn.sid, 0);

    (void) ngx_fleet_ws_send_text(sw->ws, pkt, n);
}


static void
ngx_fleet_sio_ws_message(ngx_fleet_ws_t *ws, ngx_int_t opcode, u_char *data,
    size_t len)
{
    ngx_fleet_sio_ws_t  *sw;

    sw = ws->data;

    if (opcode != FLEET_WS_OP_TEXT) {
        /* binary attachments are not taken: the client is told why */
        (void) ngx_fleet_ws_close(ws, FLEET_WS_CLOSE_UNSUPPORTED,
                                  "binary messages are not supported");
        return;
    }

    if (sw->probing) {
        if (len == 6 && ngx_strncmp(data, "2probe", 6) == 0) {
            ngx_fleet_sio_polling_probe(sw->conn.sid);
            (void) ngx_fleet_ws_send_text(ws, (u_char *) "3probe", 6);
            return;
        }

        if (len == 1 && data[0] == '5') {
            (void) ngx_fleet_sio_ws_upgrade(sw);
            return;
        }

        (void) ngx_fleet_ws_close(ws, FLEET_WS_CLOSE_PROTOCOL,
                                  "expected the upgrade");
        return;
    }

    (void) ngx_fleet_sio_packet(&sw->conn, data, len);
}


/*
 * "5": identity, rooms and queued packets of the polling session come
 * over at once, and from then on this socket is the session.  A CONNECT
 * still in the database on another worker is waited for.
 */

static ngx_int_t
ngx_fleet_sio_ws_upgrade(ngx_fleet_sio_ws_t *sw)
{
    ngx_int_t    rc;
    ngx_str_t   *pkt, *room;
    ngx_uint_t   i;
    ngx_pool_t  *pool;
    ngx_array_t  pkts, rooms;

    pool = ngx_create_pool(1024, sw->conn.log);
    if (pool == NULL) {
        return NGX_ERROR;
    }

    if (ngx_array_init(&pkts, pool, 8, sizeof(ngx_str_t)) != NGX_OK
        || ngx_array_init(&rooms, pool, 8, sizeof(ngx_str_t)) != NGX_OK)
    {
        ngx_destroy_pool(pool);
        return NGX_ERROR;
    }

    rc = ngx_fleet_sio_polling_upgrade(&sw->conn, pool, &rooms, &pkts,
                                       sw->seqs);

    if (rc == NGX_AGAIN) {
        ngx_destroy_pool(pool);

        sw->retry = ngx_calloc(sizeof(ngx_event_t), sw->conn.log);
        if (sw->retry == NULL) {
            return NGX_ERROR;
        }

        sw->retry->handler = ngx_fleet_sio_ws_retry;
        sw->retry->data = sw;
        sw->retry->log = sw->conn.log;
        ngx_add_timer(sw->retry, 20);

        return NGX_OK;
    }

    if (rc != NGX_OK) {
        ngx_destroy_pool(pool);
        return ngx_fleet_ws_close(sw->ws, FLEET_WS_CLOSE_GOING_AWAY,
                                  "session expired");
    }

    sw->probing = 0;
    sw->from_polling = 1;

    room = rooms.elts;

    for (i = 0; i < rooms.nelts; i++) {
        (void) ngx_fleet_sio_ws_join(&sw->conn, room[i].data, room[i].len);
    }

    pkt = pkts.elts;

    for (i = 0; i < pkts.nelts; i++) {
        if (ngx_fleet_ws_send_text(sw->ws, pkt[i].data, pkt[i].len)
            != NGX_OK)
        {
            ngx_destroy_pool(pool);
            return NGX_ERROR;
        }
    }

    ngx_destroy_pool(pool);

    return NGX_OK;
}


static void
ngx_fleet_sio_ws_retry(ngx_event_t *ev)
{
    ngx_fleet_sio_ws_t  *sw;

    sw = ev->data;

    ngx_free(sw->retry);
    sw->retry = NULL;

    if (++sw->retries > 500) {
        /* ten seconds: the database never answered the CONNECT */
        (void) ngx_fleet_ws_close(sw->ws, FLEET_WS_CLOSE_INTERNAL,
                                  "session not ready");
        return;
    }

    (void) ngx_fleet_sio_ws_upgrade(sw);
}


static void
ngx_fleet_sio_ws_limited(ngx_fleet_ws_t *ws)
{
    ngx_fleet_sio_ws_t  *sw;

    sw = ws->data;

    (void) ngx_fleet_sio_rate_limited(&sw->conn);
}


/* SPEC 7: a message over the client's rate is answered, not handled */

static ngx_int_t
ngx_fleet_sio_rate_limited(ngx_fleet_sio_conn_t *conn)
{
    json_t     *j;
    ngx_int_t   rc;

    j = json_pack("{s:s}", "message", "too many messages, slow down");
    if (j == NULL) {
        return NGX_ERROR;
    }

    rc = ngx_fleet_sio_emit(conn, "rate_limited", j);
    json_decref(j);

    return rc;
}


static ngx_int_t
ngx_fleet_sio_ws_ping(ngx_fleet_ws_t *ws)
{
    return ngx_fleet_ws_send_text(ws, (u_char *) "2", 1);
}


static void
ngx_fleet_sio_ws_closed(ngx_fleet_ws_t *ws)
{
    ngx_fleet_sio_ws_t    *sw;
    ngx_fleet_sio_link_t  *l;

    sw = ws->data;

    if (sw->retry) {
        if (sw->retry->timer_set) {
            ngx_del_timer(sw->retry);
        }

        ngx_free(sw->retry);
    }

    while ((l = sw->rooms) != NULL) {
        sw->rooms = l->next;
        ngx_fleet_room_leave(&l->member);
        ngx_free(l);
    }

    ngx_fleet_sio_cancel_calls(&sw->conn);
    ngx_free(sw);
}


static ngx_int_t
ngx_fleet_sio_ws_send(ngx_fleet_sio_conn_t *conn, u_char *pkt, size_t len)
{
    ngx_fleet_sio_ws_t  *sw = (ngx_fleet_sio_ws_t *) conn;

    return ngx_fleet_ws_send_text(sw->ws, pkt, len);
}


/* local room names carry a prefix: the raw streams share the index */

static ngx_int_t
ngx_fleet_sio_ws_join(ngx_fleet_sio_conn_t *conn, u_char *room, size_t len)
{
    u_char                 name[NGX_FLEET_SIO_MAX_ROOM + 8];
    ngx_fleet_sio_ws_t    *sw = (ngx_fleet_sio_ws_t *) conn;
    ngx_fleet_sio_link_t  *l;

    if (len > NGX_FLEET_SIO_MAX_ROOM) {
        return NGX_DECLINED;
    }

    for (l = sw->rooms; l; l = l->next) {
        if (l->member.room->sn.str.len == len + 4
            && ngx_strncmp(l->member.room->name + 4, room, len) == 0)
        {
            return NGX_OK;
        }
    }

    if (sw->nrooms >= NGX_FLEET_SIO_MAX_ROOMS) {
        return NGX_DECLINED;
    }

    l = ngx_calloc(sizeof(ngx_fleet_sio_link_t), conn->log);
    if (l == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(ngx_cpymem(name, "sio:", 4), room, len);

    l->member.data = sw;

    if (ngx_fleet_room_join(&l->member, name, len + 4) != NGX_OK) {
        ngx_free(l);
        return NGX_ERROR;
    }

    l->next = sw->rooms;
    sw->rooms = l;
    sw->nrooms++;

    return NGX_OK;
}


static void
ngx_fleet_sio_ws_leave(ngx_fleet_sio_conn_t *conn, u_char *room, size_t len)
{
    ngx_fleet_sio_ws_t     *sw = (ngx_fleet_sio_ws_t *) conn;
    ngx_fleet_sio_link_t  **ll, *l;

    for (ll = &sw->rooms; (l = *ll) != NULL; ll = &l->next) {
        if (l->member.room->sn.str.len == len + 4
            && ngx_strncmp(l->member.room->name + 4, room, len) == 0)
        {
            *ll = l->next;
            ngx_fleet_room_leave(&l->member);
            ngx_free(l);
            sw->nrooms--;
            return;
        }
    }
}


static ngx_int_t
ngx_fleet_sio_ws_sync(ngx_fleet_sio_conn_t *conn)
{
    return NGX_OK;
}


/* the WebSocket layer counted the message already */

static ngx_int_t
ngx_fleet_sio_ws_allow(ngx_fleet_sio_conn_t *conn)
{
    return NGX_OK;
}


static void
ngx_fleet_sio_ws_resume(ngx_fleet_sio_conn_t *conn)
{
}


static void
ngx_fleet_sio_ws_close(ngx_fleet_sio_conn_t *conn)
{
    ngx_fleet_sio_ws_t  *sw = (ngx_fleet_sio_ws_t *) conn;

    (void) ngx_fleet_ws_close(sw->ws, FLEET_WS_CLOSE_NORMAL, NULL);
}


/* ------------------------------------------------------------------ */
/* Engine.IO and Socket.IO packets, whatever the transport */

/* NGX_OK when handled, NGX_AGAIN when a database call will resume it */

ngx_int_t
ngx_fleet_sio_packet(ngx_fleet_sio_conn_t *conn, u_char *data, size_t len)
{
    int                  type;
    size_t               dlen;
    ngx_int_t            rc;
    const char          *d, *err;
    fleet_sio_packet_t   p;

    if (fleet_eio_parse((const char *) data, len, &type, &d, &dlen, &err)
        != 0)
    {
        ngx_log_error(NGX_LOG_INFO, conn->log, 0,
                      "fleet: bad Engine.IO packet: %s", err);
        conn->ops->close(conn);
        return NGX_ERROR;
    }

    switch (type) {

    case FLEET_EIO_MESSAGE:
        rc = conn->ops->allow(conn);

        if (rc == NGX_ABORT) {
            return NGX_ERROR;
        }

        if (rc == NGX_DECLINED) {
            return ngx_fleet_sio_rate_limited(conn);
        }

        break;

    case FLEET_EIO_CLOSE:
        conn->ops->close(conn);
        return NGX_ERROR;

    case FLEET_EIO_PONG:
        return NGX_OK;

    case FLEET_EIO_PING:
        /* clients do not ping in Engine.IO 4; answer anyway */
        return conn->ops->send(conn, (u_char *) "3", 1);

    default:
        ngx_log_error(NGX_LOG_INFO, conn->log, 0,
                      "fleet: unexpected Engine.IO packet type %d", type);
        conn->ops->close(conn);
        return NGX_ERROR;
    }

    if (fleet_sio_parse(d, dlen, &p, &err) != 0) {
        ngx_log_error(NGX_LOG_INFO, conn->log, 0,
                      "fleet: bad Socket.IO packet: %s", err);
        conn->ops->close(conn);
        return NGX_ERROR;
    }

    if (p.nsp_len != 1) {
        /* only the main namespace exists */
        char  out[NGX_FLEET_SIO_MAX_ROOM + FLEET_SIO_MAX_NSP];
        char  nsp[FLEET_SIO_MAX_NSP + 1];

        if (p.type != FLEET_SIO_CONNECT) {
            return NGX_OK;
        }

        ngx_memcpy(nsp, p.nsp, p.nsp_len);
        nsp[p.nsp_len] = '\0';

        if (fleet_sio_connect_error(out, sizeof(out), nsp,
                                    "Invalid namespace")
            == 0)
        {
            return NGX_OK;
        }

        return ngx_fleet_sio_send_text(conn, out);
    }

    switch (p.type) {

    case FLEET_SIO_CONNECT:
        return ngx_fleet_sio_connect(conn, &p);

    case FLEET_SIO_DISCONNECT:
        conn->ops->close(conn);
        return NGX_ERROR;

    case FLEET_SIO_EVENT:
        if (!conn->connected) {
            return NGX_OK;
        }

        return ngx_fleet_sio_event(conn, &p);

    case FLEET_SIO_ACK:
        /* the server asks for no acknowledgements */
        return NGX_OK;

    default:
        ngx_log_error(NGX_LOG_INFO, conn->log, 0,
                      "fleet: Socket.IO packet type %d refused", p.type);
        conn->ops->close(conn);
        return NGX_ERROR;
    }
}


/* 40{"token": "..."}: the identity is the token's, checked in the
 * database (a user that does not exist is refused) */

static ngx_int_t
ngx_fleet_sio_connect(ngx_fleet_sio_conn_t *conn, fleet_sio_packet_t *p)
{
    int                     rc;
    char                    out[256];
    json_t                 *auth, *tok;
    const char             *why;
    fleet_jwt_claims_t      claims;
    ngx_fleet_main_conf_t  *fmcf;

    if (conn->connected || conn->connecting) {
        return NGX_OK;
    }

    fmcf = ngx_http_cycle_get_module_main_conf(ngx_cycle, ngx_fleet_module);

    auth = p->data_len ? json_loadb(p->data, p->data_len, 0, NULL) : NULL;
    tok = json_object_get(auth, "token");

    why = "a token is required: auth: {token}";

    if (json_is_string(tok)) {
        rc = fleet_jwt_verify(json_string_value(tok), json_string_length(tok),
                              fmcf->jwt_secret.data, fmcf->jwt_secret.len,
                              (long long) ngx_time(), &claims);

        if (rc == FLEET_JWT_OK) {
            /* the token's revocation key goes in the room's place: a
             * logged-out token is refused (sql/005_users.sql) */
            ngx_fleet_auth_token_key((u_char *) json_string_value(tok),
                                     json_string_length(tok), &claims);

            json_decref(auth);

            ngx_cpystrn((u_char *) conn->user_id, (u_char *) claims.sub,
                        sizeof(conn->user_id));
            conn->role = claims.role;
            conn->connecting = 1;
            (void) conn->ops->sync(conn);

            return ngx_fleet_sio_call(conn, NGX_FLEET_SIO_CALL_CONNECT, -1,
                                      "SELECT fleet_sio_connect($1, $2, $3)",
                                      claims.jti, ngx_strlen(claims.jti));
        }

        why = fleet_jwt_strerror(rc);
    }

    if (auth) {
        json_decref(auth);
    }

    ngx_fleet_metric_inc(NGX_FLEET_M_AUTH_FAILURES);

    if (fleet_sio_connect_error(out, sizeof(out), "/", why) == 0) {
        return NGX_ERROR;
    }

    return ngx_fleet_sio_send_text(conn, out);
}


/* 42["join_room", {"room": ...}], leave_room, client:authenticate */

static ngx_int_t
ngx_fleet_sio_event(ngx_fleet_sio_conn_t *conn, fleet_sio_packet_t *p)
{
    char         name[64];
    u_char       room[NGX_FLEET_SIO_MAX_ROOM + 8];
    size_t       room_len, arg_len;
    json_t      *j;
    ngx_int_t    rc;
    const char  *arg, *why;

    if (fleet_sio_event_name(p->data, p->data_len, name, sizeof(name), &arg,
                             &arg_len)
        != 0)
    {
        name[0] = '\0';
    }

    if (ngx_strcmp(name, "join_room") == 0
        || ngx_strcmp(name, "client:authenticate") == 0)
    {
        if (conn->ncalls >= 8) {
            why = "too many requests waiting";
            goto refused;
        }

        if (name[0] == 'j') {
            rc = ngx_fleet_sio_room_arg(p, "room", room, &room_len, &why);

        } else {
            ngx_memcpy(room, "page_", 5);
            rc = ngx_fleet_sio_room_arg(p, "page", room + 5, &room_len, &why);
        }

        if (rc != NGX_OK) {
            goto refused;
        }

        if (name[0] != 'j') {
            room_len += 5;
        }

        return ngx_fleet_sio_call(conn,
                                  name[0] == 'j' ? NGX_FLEET_SIO_CALL_JOIN
                                                 : NGX_FLEET_SIO_CALL_PAGE,
                                  p->ack_id,
                                  "SELECT fleet_sio_join($1, $2, $3)",
                                  (const char *) room, room_len);
    }

    if (ngx_strcmp(name, "leave_room") == 0) {
        if (ngx_fleet_sio_room_arg(p, "room", room, &room_len, &why)
            != NGX_OK)
        {
            goto refused;
        }

        /* "*" (every socket) is nobody's to leave */
        if (room_len != 1 || room[0] != '*') {
            conn->ops->leave(conn, room, room_len);
        }

        if (p->ack_id < 0) {
            return NGX_OK;
        }

        j = json_pack("{s:b}", "ok", 1);
        rc = ngx_fleet_sio_ack(conn, p->ack_id, j);
        json_decref(j);

        return rc;
    }

    why = "unknown event";

refused:

    if (p->ack_id < 0) {
        return NGX_OK;
    }

    j = json_pack("{s:b, s:s}", "ok", 0, "error", why);
    rc = ngx_fleet_sio_ack(conn, p->ack_id, j);
    json_decref(j);

    return rc;
}


/* the room named by data[1][key], a string of 1-128 bytes */

static ngx_int_t
ngx_fleet_sio_room_arg(fleet_sio_packet_t *p, const char *key, u_char *room,
    size_t *len, const char **why)
{
    json_t  *j, *v;

    j = json_loadb(p->data, p->data_len, 0, NULL);
    v = json_object_get(json_array_get(j, 1), key);

    if (!json_is_string(v) || json_string_length(v) == 0
        || json_string_length(v) > NGX_FLEET_SIO_MAX_ROOM)
    {
        *why = (key[0] == 'r') ? "room must be a string of 1 to 128 bytes"
                               : "page must be a string of 1 to 128 bytes";
        if (j) {
            json_decref(j);
        }

        return NGX_DECLINED;
    }

    *len = json_string_length(v);
    ngx_memcpy(room, json_string_value(v), *len);
    json_decref(j);

    return NGX_OK;
}


static ngx_int_t
ngx_fleet_sio_call(ngx_fleet_sio_conn_t *conn, ngx_uint_t kind,
    long long ack_id, const char *sql, const char *room, size_t room_len)
{
    ngx_fleet_sio_call_t  *call;

    call = ngx_calloc(sizeof(ngx_fleet_sio_call_t), conn->log);
    if (call == NULL) {
        return NGX_ERROR;
    }

    call->conn = conn;
    call->kind = kind;
    call->ack_id = ack_id;

    if (room) {
        ngx_memcpy(call->room, room, room_len);
        call->room_len = room_len;
    }

    call->query.sql = sql;
    call->query.nparams = room ? 3 : 2;
    call->query.params[0] = conn->user_id;
    call->query.params[1] = fleet_role_name(conn->role);
    call->query.params[2] = (const char *) call->room;
    call->query.handler = ngx_fleet_sio_called;
    call->query.data = call;
    call->query.log = conn->log;

    if (ngx_fleet_pg_send(&call->query) != NGX_OK) {
        ngx_free(call);
        conn->connecting = 0;
        return ngx_fleet_sio_send_text(conn,
                   "44{\"message\":\"database unavailable, retry later\"}");
    }

    ngx_queue_insert_tail(&conn->calls, &call->queue);
    conn->ncalls++;

    return NGX_AGAIN;
}


static void
ngx_fleet_sio_called(ngx_fleet_pg_query_t *q, PGresult *res)
{
    char                   out[256];
    json_t                *j, *rooms, *v;
    size_t                 i;
    ngx_fleet_sio_call_t  *call;
    ngx_fleet_sio_conn_t  *conn;

    call = q->data;
    conn = call->conn;

    ngx_queue_remove(&call->queue);
    conn->ncalls--;

    j = NULL;

    if (res && PQntuples(res) == 1 && !PQgetisnull(res, 0, 0)) {
        j = json_loadb(PQgetvalue(res, 0, 0), PQgetlength(res, 0, 0), 0,
                       NULL);
    }

    if (call->kind == NGX_FLEET_SIO_CALL_CONNECT) {
        conn->connecting = 0;

        if (j == NULL || json_is_string(json_object_get(j, "error"))) {
            ngx_fleet_metric_inc(NGX_FLEET_M_AUTH_FAILURES);
            (void) conn->ops->sync(conn);

            if (fleet_sio_connect_error(out, sizeof(out), "/",
                    j ? json_string_value(json_object_get(j, "error"))
                      : "database unavailable, retry later")
                != 0)
            {
                (void) ngx_fleet_sio_send_text(conn, out);
            }

            goto done;
        }

        ngx_cpystrn((u_char *) conn->user_id,
                    (u_char *) json_string_value(json_object_get(j,
                                                                 "user_id")),
                    sizeof(conn->user_id));
        conn->sees_all = json_is_true(json_object_get(j, "sees_all"));
        conn->connected = 1;

        rooms = json_object_get(j, "rooms");

        json_array_foreach(rooms, i, v) {
            (void) conn->ops->join(conn, (u_char *) json_string_value(v),
                                   json_string_length(v));
        }

        if (conn->ops->sync(conn) == NGX_OK
            && fleet_sio_connect_ok(out, sizeof(out), conn->sio_id) != 0)
        {
            (void) ngx_fleet_sio_send_text(conn, out);
        }

        goto done;
    }

    ngx_fleet_sio_joined(call, j);

done:

    if (j) {
        json_decref(j);
    }

    ngx_free(call);

    conn->ops->resume(conn);
}


/* the answer to join_room / client:authenticate */

static void
ngx_fleet_sio_joined(ngx_fleet_sio_call_t *call, json_t *j)
{
    json_t                *out, *room;
    ngx_int_t              rc;
    const char            *why;
    ngx_fleet_sio_conn_t  *conn;

    conn = call->conn;

    room = json_stringn((const char *) call->room, call->room_len);

    if (j == NULL) {
        why = "database unavailable, retry later";

    } else if (json_is_string(json_object_get(j, "error"))) {
        why = json_string_value(json_object_get(j, "error"));

    } else if (conn->ops->join(conn, call->room, call->room_len) != NGX_OK) {
        why = "too many rooms";

    } else {
        why = NULL;
    }

    if (why) {
        out = json_pack("{s:O, s:s}", "room", room, "message", why);
        rc = ngx_fleet_sio_emit(conn, "room_error", out);
        json_decref(out);

        if (rc == NGX_OK && call->ack_id >= 0) {
            out = json_pack("{s:b, s:s}", "ok", 0, "error", why);
            (void) ngx_fleet_sio_ack(conn, call->ack_id, out);
            json_decref(out);
        }

        json_decref(room);
        return;
    }

    rc = NGX_OK;

    if (call->kind == NGX_FLEET_SIO_CALL_PAGE) {
        /* seed 003: client:authenticated {userId, role, page} */
        out = json_pack("{s:s, s:s, s:s#}", "userId", conn->user_id,
                        "role", fleet_role_name(conn->role),
                        "page", (const char *) call->room + 5,
                        call->room_len - 5);
        rc = ngx_fleet_sio_emit(conn, "client:authenticated", out);
        json_decref(out);
    }

    if (rc == NGX_OK && call->ack_id >= 0) {
        out = json_pack("{s:b}", "ok", 1);
        (void) ngx_fleet_sio_ack(conn, call->ack_id, out);
        json_decref(out);
    }

    json_decref(room);
}


void
ngx_fleet_sio_cancel_calls(ngx_fleet_sio_conn_t *conn)
{
    ngx_queue_t           *q, *next;
    ngx_fleet_sio_call_t  *call;

    for (q = ngx_queue_head(&conn->calls);
         q != ngx_queue_sentinel(&conn->calls);
         q = next)
    {
        next = ngx_queue_next(q);
        call = ngx_queue_data(q, ngx_fleet_sio_call_t, queue);
        ngx_fleet_pg_cancel(&call->query);
        ngx_free(call);
    }

    ngx_queue_init(&conn->calls);

    conn->ncalls = 0;
}


static ngx_int_t
ngx_fleet_sio_emit(ngx_fleet_sio_conn_t *conn, const char *event,
    json_t *data)
{
    char       *text, *out;
    size_t      len, size, n;
    ngx_int_t   rc;

    text = json_dumps(data, JSON_COMPACT | JSON_ENCODE_ANY);
    if (text == NULL) {
        return NGX_ERROR;
    }

    len = ngx_strlen(text);
    size = len + 6 * ngx_strlen(event) + 16;

    out = ngx_alloc(size, conn->log);
    if (out == NULL) {
        free(text);
        return NGX_ERROR;
    }

    n = fleet_sio_event(out, size, event, text, len);
    free(text);

    rc = n ? conn->ops->send(conn, (u_char *) out, n) : NGX_ERROR;
    ngx_free(out);

    return rc;
}


static ngx_int_t
ngx_fleet_sio_ack(ngx_fleet_sio_conn_t *conn, long long ack_id,
    json_t *data)
{
    char       *text, out[512];
    size_t      n;

    text = json_dumps(data, JSON_COMPACT);
    if (text == NULL) {
        return NGX_ERROR;
    }

    n = fleet_sio_ack(out, sizeof(out), ack_id, text, ngx_strlen(text));
    free(text);

    if (n == 0) {
        return NGX_ERROR;
    }

    return conn->ops->send(conn, (u_char *) out, n);
}


static ngx_int_t
ngx_fleet_sio_send_text(ngx_fleet_sio_conn_t *conn, char *text)
{
    return conn->ops->send(conn, (u_char *) text, ngx_strlen(text));
}


void
ngx_fleet_sio_new_sid(char *sid)
{
    u_char     rnd[15];
    ngx_str_t  src, dst;

    if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
        /* not expected; a sid only has to be unique */
        ngx_memzero(rnd, sizeof(rnd));
        *(ngx_msec_t *) rnd = ngx_current_msec;
        *(ngx_pid_t *) (rnd + sizeof(ngx_msec_t)) = ngx_pid;
    }

    src.data = rnd;
    src.len = sizeof(rnd);
    dst.data = (u_char *) sid;

    ngx_encode_base64url(&dst, &src);
    sid[dst.len] = '\0';
}


size_t
ngx_fleet_sio_open_packet(u_char *out, size_t size, const char *sid,
    ngx_uint_t can_upgrade)
{
    size_t                  max;
    ngx_fleet_main_conf_t  *fmcf;

    fmcf = ngx_http_cycle_get_module_main_conf(ngx_cycle, ngx_fleet_module);

    /* pingTimeout: the WebSocket layer closes a client silent for two
     * ping intervals */
    max = ngx_min(fmcf->ws_max_message, (size_t) 1000000);

    return fleet_eio_open((char *) out, size, sid,
                          (int) fmcf->ws_ping_interval,
                          (int) fmcf->ws_ping_interval, max,
                          (int) can_upgrade);
}


/* ------------------------------------------------------------------ */
/* events from PostgreSQL */

ngx_int_t
ngx_fleet_sio_may_get(const char *user_id, ngx_uint_t sees_all,
    const char *owner)
{
    return sees_all || (owner && ngx_strcmp(owner, user_id) == 0);
}


ngx_int_t
ngx_fleet_sio_seq_seen(int64_t *seqs, int64_t seq)
{
    ngx_uint_t  i;

    for (i = 0; i < NGX_FLEET_SIO_SEQS; i++) {
        if (seqs[i] == seq) {
            return 1;
        }
    }

    return 0;
}


void
ngx_fleet_socketio_event(const char *type, json_t *j, ngx_str_t *payload)
{
    char                      *pkt;
    size_t                     i, k, off, len, size, n;
    json_t                    *sio, *em, *rooms, *room, *data, *ref, *owner;
    int64_t                    seq;
    u_char                     name[NGX_FLEET_SIO_MAX_ROOM + 8];
    const char                *event, *dtext;
    ngx_uint_t                 filtered;
    ngx_fleet_room_t          *r;
    ngx_fleet_ws_msg_t        *msg;
    ngx_fleet_sio_delivery_t   d;

    sio = json_object_get(j, "sio");
    seq = json_integer_value(json_object_get(j, "seq"));

    /* an event about a device: shared rooms filter on its owner */
    filtered = json_object_get(j, "device_id") != NULL;
    owner = json_object_get(j, "owner_id");

    if (ngx_strcmp(type, "device_status") == 0
        || ngx_strcmp(type, "device_claimed") == 0
        || ngx_strcmp(type, "user_registered") == 0
        || ngx_strcmp(type, "device_owner_changed") == 0)
    {
        ngx_fleet_sio_stats_schedule();
    }

    json_array_foreach(sio, i, em) {
        event = json_string_value(json_object_get(em, "event"));
        rooms = json_object_get(em, "rooms");
        ref = json_object_get(em, "data_ref");

        if (event == NULL || !json_is_array(rooms)) {
            continue;
        }

        /* data as PostgreSQL wrote it: a raw span of the envelope */
        if (json_is_string(ref)) {
            if (fleet_json_member((const char *) payload->data, payload->len,
                                  json_string_value(ref), &off, &len)
                != 0)
            {
                ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                              "fleet: event \"%s\" without its data (too "
                              "big for a notification): not emitted", event);
                continue;
            }

            dtext = (const char *) payload->data + off;

        } else {
            data = json_object_get(em, "data");
            dtext = NULL;
            len = 0;

            if (data) {
                /* built in SQL from JSON already: numbers are as sent */
                dtext = json_dumps(data, JSON_COMPACT | JSON_ENCODE_ANY
                                         | JSON_REAL_PRECISION(17));
                if (dtext == NULL) {
                    continue;
                }

                len = ngx_strlen(dtext);
            }
        }

        size = len + 6 * ngx_strlen(event) + 16;
        pkt = ngx_alloc(size, ngx_cycle->log);

        n = 0;

        if (pkt) {
            /* compact: PostgreSQL's text has spaces after ':' and ',' */
            n = fleet_sio_event(pkt, size, event, dtext, len);

            if (n) {
                n = fleet_json_compact(pkt, n, pkt);
            }
        }

        if (!json_is_string(ref) && dtext) {
            free((void *) dtext);
        }

        if (n == 0) {
            if (pkt) {
                ngx_free(pkt);
            }

            continue;
        }

        msg = ngx_fleet_ws_msg(FLEET_WS_OP_TEXT, (u_char *) pkt, n, 0);

        if (msg) {
            d.msg = msg;
            d.owner = json_string_value(owner);
            d.filtered = filtered;
            d.emit = ++ngx_fleet_sio_emits;
            d.seq = seq;

            json_array_foreach(rooms, k, room) {
                if (!json_is_string(room)
                    || json_string_length(room) > NGX_FLEET_SIO_MAX_ROOM)
                {
                    continue;
                }

                len = ngx_cpymem(ngx_cpymem(name, "sio:", 4),
                                 json_string_value(room),
                                 json_string_length(room))
                      - name;

                r = ngx_fleet_room_find(name, len);

                if (r) {
                    ngx_fleet_room_each(r, ngx_fleet_sio_deliver, &d);
                }
            }

            ngx_fleet_ws_msg_release(msg);
        }

        ngx_fleet_sio_polling_event(seq, rooms, (u_char *) pkt, n,
                                    json_string_value(owner), filtered);
        ngx_free(pkt);
    }
}


static void
ngx_fleet_sio_deliver(ngx_fleet_room_member_t *m, void *arg)
{
    ngx_fleet_sio_delivery_t  *d = arg;

    ngx_fleet_sio_ws_t  *sw;

    sw = m->data;

    /* once per socket, however many of the rooms it is in */
    if (sw->last_emit == d->emit || sw->probing) {
        return;
    }

    sw->last_emit = d->emit;

    if (sw->from_polling && d->seq
        && ngx_fleet_sio_seq_seen(sw->seqs, d->seq))
    {
        return;
    }

    if (d->filtered
        && !ngx_fleet_sio_may_get(sw->conn.user_id, sw->conn.sees_all,
                                  d->owner))
    {
        return;
    }

    (void) ngx_fleet_ws_send(sw->ws, d->msg);
}


/* ------------------------------------------------------------------ */
/* admin:stats:updated, at most once a second per worker */

static void
ngx_fleet_sio_stats_schedule(void)
{
    if (ngx_fleet_sio_stats_busy) {
        /* a change while the counts are being read: read them again */
        ngx_fleet_sio_stats_again = 1;
        return;
    }

    if (ngx_fleet_sio_stats_ev.timer_set) {
        return;
    }

    /* worker 0 serves the polling sessions too (once, not per worker) */
    if (ngx_fleet_room_find((u_char *) "sio:admin", 9) == NULL
        && (ngx_worker != 0 || ngx_fleet_sio_polling_count() == 0))
    {
        return;
    }

    ngx_fleet_sio_stats_ev.handler = ngx_fleet_sio_stats_timer;
    ngx_fleet_sio_stats_ev.log = ngx_cycle->log;
    ngx_fleet_sio_stats_ev.cancelable = 1;

    ngx_add_timer(&ngx_fleet_sio_stats_ev, 1000);
}


static void
ngx_fleet_sio_stats_timer(ngx_event_t *ev)
{
    ngx_fleet_pg_query_t  *q;

    q = &ngx_fleet_sio_stats_query;
    ngx_memzero(q, sizeof(ngx_fleet_pg_query_t));

    q->sql = "SELECT fleet_admin_stats()";
    q->handler = ngx_fleet_sio_stats_fetched;
    q->log = ngx_cycle->log;

    if (ngx_fleet_pg_send(q) == NGX_OK) {
        ngx_fleet_sio_stats_busy = 1;
    }
}


static void
ngx_fleet_sio_stats_fetched(ngx_fleet_pg_query_t *q, PGresult *res)
{
    char                      *pkt;
    size_t                     n, size;
    json_t                    *rooms;
    ngx_fleet_room_t          *r;
    ngx_fleet_ws_msg_t        *msg;
    ngx_fleet_sio_delivery_t   d;

    ngx_fleet_sio_stats_busy = 0;

    if (ngx_fleet_sio_stats_again) {
        ngx_fleet_sio_stats_again = 0;
        ngx_fleet_sio_stats_schedule();
    }

    r = ngx_fleet_room_find((u_char *) "sio:admin", 9);

    if (res == NULL || PQntuples(res) != 1 || PQgetisnull(res, 0, 0)) {
        return;
    }

    size = PQgetlength(res, 0, 0) + 64;
    pkt = ngx_alloc(size, ngx_cycle->log);
    if (pkt == NULL) {
        return;
    }

    n = fleet_sio_event(pkt, size, "admin:stats:updated",
                        PQgetvalue(res, 0, 0), PQgetlength(res, 0, 0));

    if (n) {
        n = fleet_json_compact(pkt, n, pkt);
        msg = r ? ngx_fleet_ws_msg(FLEET_WS_OP_TEXT, (u_char *) pkt, n, 0)
                : NULL;

        if (msg) {
            d.msg = msg;
            d.owner = NULL;
            d.filtered = 0;
            d.emit = ++ngx_fleet_sio_emits;
            d.seq = 0;

            ngx_fleet_room_each(r, ngx_fleet_sio_deliver, &d);
            ngx_fleet_ws_msg_release(msg);
        }

        if (ngx_worker == 0) {
            rooms = json_pack("[s]", "admin");

            if (rooms) {
                ngx_fleet_sio_polling_event(0, rooms, (u_char *) pkt, n,
                                            NULL, 0);
                json_decref(rooms);
            }
        }
    }

    ngx_free(pkt);
}


/* ------------------------------------------------------------------ */
/* POST /api/v1/events {room, event, data, device_id?}: a backend (service
 * token) or an admin emits to one room */

static const fleet_field_t  ngx_fleet_events_fields[] = {
    { "room", FLEET_FIELD_STRING, 1, 1, NGX_FLEET_SIO_MAX_ROOM },
    { "event", FLEET_FIELD_STRING, 1, 1, 64 },
    { "device_id", FLEET_FIELD_STRING, 0, 1, 64 },
    { NULL, 0, 0, 0, 0 }
};


ngx_int_t
ngx_fleet_api_events_emit(ngx_fleet_api_t *api)
{
    ngx_int_t  rc;

    if (api->claims.role != FLEET_ROLE_SERVICE
        && api->claims.role != FLEET_ROLE_ADMIN)
    {
        return ngx_fleet_send_error(api->request, NGX_HTTP_FORBIDDEN,
                                    "FORBIDDEN", "events are emitted with a "
                                    "service or admin token");
    }

    if (ngx_fleet_api_validate(api, ngx_fleet_events_fields, &rc) != NGX_OK) {
        return rc;
    }

    if (json_object_get(api->json, "data") == NULL) {
        return ngx_fleet_send_error(api->request, NGX_HTTP_BAD_REQUEST,
                                    "VALIDATION_ERROR", "data is required");
    }

    /* the body goes as it came: numbers stay exactly as sent */
    return ngx_fleet_api_call(api, NULL,
                              "fleet_events_emit($1, $2, $3::jsonb)", 3,
                              api->claims.sub,
                              fleet_role_name(api->claims.role),
                              ngx_fleet_api_body_text(api));
}
