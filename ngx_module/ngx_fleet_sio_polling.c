/*
 * fleetgate: Engine.IO long-polling sessions, shared by every worker.
 *
 * A browser's polling GET and POST use different connections and land on
 * any worker; so does the WebSocket it upgrades to.  A session therefore
 * lives in shared memory (the zone follows ngx_http_limit_req_module's
 * reload-safe pattern): identity, rooms, and the packets waiting for the
 * next GET, bounded.  Every worker hears every event from PostgreSQL; the
 * first to queue an event for a session records its sequence number
 * there, so the others do not queue it again.  A GET with nothing to
 * take is held by its worker, which looks at the session every 25 ms
 * while it holds any: packets queued by another worker, an upgrade done
 * elsewhere, or the ping interval ending all answer it.
 */

#include "ngx_fleet_socketio.h"


#define NGX_FLEET_SIO_TICK          25
#define NGX_FLEET_SIO_UPGRADED_TTL  10000


typedef struct ngx_fleet_sio_pkt_s    ngx_fleet_sio_pkt_t;
typedef struct ngx_fleet_sio_sroom_s  ngx_fleet_sio_sroom_t;

struct ngx_fleet_sio_pkt_s {
    ngx_fleet_sio_pkt_t        *next;
    size_t                      len;
    u_char                      data[1];
};

struct ngx_fleet_sio_sroom_s {
    ngx_fleet_sio_sroom_t      *next;
    size_t                      len;
    u_char                      name[1];
};


typedef struct {
    ngx_str_node_t              sn;
    ngx_queue_t                 queue;
    ngx_msec_t                  expires;
    ngx_fleet_sio_pkt_t        *head;
    ngx_fleet_sio_pkt_t        *tail;
    size_t                      queued;
    ngx_fleet_sio_sroom_t      *rooms;
    ngx_uint_t                  nrooms;
    int64_t                     seqs[NGX_FLEET_SIO_SEQS];
    ngx_uint_t                  seq_pos;
    ngx_msec_t                  rate_last;
    ngx_uint_t                  rate_tokens;
    ngx_uint_t                  rate_refused;
    fleet_role_t                role;
    unsigned                    connected:1;
    unsigned                    connecting:1;
    unsigned                    sees_all:1;
    unsigned                    probing:1;
    unsigned                    upgraded:1;
    unsigned                    closed:1;
    unsigned                    get_held:1;
    u_char                      sid[NGX_FLEET_SIO_SID_LEN];
    char                        sio_id[NGX_FLEET_SIO_SID_LEN + 1];
    char                        user_id[NGX_INT64_LEN + 1];
} ngx_fleet_sio_session_t;


typedef struct {
    ngx_rbtree_t                rbtree;
    ngx_rbtree_node_t           sentinel;
    ngx_queue_t                 sessions;     /* oldest activity first */
    ngx_uint_t                  count;
} ngx_fleet_sio_shm_t;


/* a GET this worker holds */
typedef struct {
    ngx_queue_t                 queue;
    ngx_fleet_api_t            *api;
    ngx_msec_t                  since;
    unsigned                    answered:1;
    char                        sid[NGX_FLEET_SIO_SID_LEN + 1];
} ngx_fleet_sio_held_t;


/* a POST going through its packets */
typedef struct {
    ngx_fleet_sio_conn_t        conn;
    ngx_fleet_api_t            *api;
    size_t                      off;
    unsigned                    waiting:1;
    unsigned                    closed:1;
} ngx_fleet_sio_post_t;


static ngx_int_t ngx_fleet_sio_polling_zone_init(ngx_shm_zone_t *zone,
    void *data);
static ngx_fleet_sio_session_t *ngx_fleet_sio_lookup(const char *sid);
static void ngx_fleet_sio_touch(ngx_fleet_sio_session_t *s);
static void ngx_fleet_sio_free_session(ngx_fleet_sio_session_t *s);
static void ngx_fleet_sio_expire(void);
static ngx_int_t ngx_fleet_sio_append(ngx_fleet_sio_session_t *s,
    u_char *data, size_t len);
static ngx_int_t ngx_fleet_sio_in_rooms(ngx_fleet_sio_session_t *s,
    json_t *rooms);
static ngx_int_t ngx_fleet_sio_take(ngx_fleet_sio_session_t *s,
    ngx_http_request_t *r, ngx_str_t *out);
static ngx_int_t ngx_fleet_sio_reply(ngx_fleet_api_t *api, u_char *data,
    size_t len);
static void ngx_fleet_sio_held_cleanup(ngx_fleet_api_t *api);
static void ngx_fleet_sio_tick(ngx_event_t *ev);
static void ngx_fleet_sio_check_held(const char *only_sid);
static void ngx_fleet_sio_post_next(ngx_fleet_sio_post_t *pp);
static void ngx_fleet_sio_post_cleanup(ngx_fleet_api_t *api);
static ngx_int_t ngx_fleet_sio_p_send(ngx_fleet_sio_conn_t *conn,
    u_char *pkt, size_t len);
static ngx_int_t ngx_fleet_sio_p_join(ngx_fleet_sio_conn_t *conn,
    u_char *room, size_t len);
static void ngx_fleet_sio_p_leave(ngx_fleet_sio_conn_t *conn, u_char *room,
    size_t len);
static ngx_int_t ngx_fleet_sio_p_sync(ngx_fleet_sio_conn_t *conn);
static ngx_int_t ngx_fleet_sio_p_allow(ngx_fleet_sio_conn_t *conn);
static void ngx_fleet_sio_p_resume(ngx_fleet_sio_conn_t *conn);
static void ngx_fleet_sio_p_close(ngx_fleet_sio_conn_t *conn);


static const ngx_fleet_sio_ops_t  ngx_fleet_sio_polling_ops = {
    ngx_fleet_sio_p_send,
    ngx_fleet_sio_p_join,
    ngx_fleet_sio_p_leave,
    ngx_fleet_sio_p_sync,
    ngx_fleet_sio_p_allow,
    ngx_fleet_sio_p_resume,
    ngx_fleet_sio_p_close
};


static ngx_shm_zone_t       *ngx_fleet_sio_zone;
static ngx_slab_pool_t      *ngx_fleet_sio_shpool;
static ngx_fleet_sio_shm_t  *ngx_fleet_sio_sh;
static ngx_queue_t           ngx_fleet_sio_held;
static ngx_uint_t            ngx_fleet_sio_held_init;
static ngx_event_t           ngx_fleet_sio_tick_ev;


ngx_int_t
ngx_fleet_sio_polling_init_zone(ngx_conf_t *cf)
{
    ngx_str_t               name;
    ngx_fleet_main_conf_t  *fmcf;

    fmcf = ngx_http_conf_get_module_main_conf(cf, ngx_fleet_module);

    ngx_str_set(&name, "fleet_socketio");

    ngx_fleet_sio_zone = ngx_shared_memory_add(cf, &name,
                                               fmcf->sio_zone_size,
                                               &ngx_fleet_module);
    if (ngx_fleet_sio_zone == NULL) {
        return NGX_ERROR;
    }

    ngx_fleet_sio_zone->init = ngx_fleet_sio_polling_zone_init;

    return NGX_OK;
}


static ngx_int_t
ngx_fleet_sio_polling_zone_init(ngx_shm_zone_t *zone, void *data)
{
    ngx_slab_pool_t      *shpool;
    ngx_fleet_sio_shm_t  *sh;

    shpool = (ngx_slab_pool_t *) zone->shm.addr;
    ngx_fleet_sio_shpool = shpool;

    if (data) {
        /* a reload: sessions carry on in the same zone */
        zone->data = data;
        ngx_fleet_sio_sh = data;
        return NGX_OK;
    }

    if (zone->shm.exists) {
        zone->data = shpool->data;
        ngx_fleet_sio_sh = shpool->data;
        return NGX_OK;
    }

    sh = ngx_slab_calloc(shpool, sizeof(ngx_fleet_sio_shm_t));
    if (sh == NULL) {
        return NGX_ERROR;
    }

    ngx_rbtree_init(&sh->rbtree, &sh->sentinel, ngx_str_rbtree_insert_value);
    ngx_queue_init(&sh->sessions);

    shpool->data = sh;
    zone->data = sh;
    ngx_fleet_sio_sh = sh;

    shpool->log_nomem = 0;

    return NGX_OK;
}


/* all of these run with the zone locked */

static ngx_fleet_sio_session_t *
ngx_fleet_sio_lookup(const char *sid)
{
    ngx_str_t  key;

    key.data = (u_char *) sid;
    key.len = NGX_FLEET_SIO_SID_LEN;

    return (ngx_fleet_sio_session_t *)
           ngx_str_rbtree_lookup(&ngx_fleet_sio_sh->rbtree, &key,
                                 ngx_crc32_short(key.data, key.len));
}


/* a client that neither polls nor posts for two ping intervals is gone */

static void
ngx_fleet_sio_touch(ngx_fleet_sio_session_t *s)
{
    ngx_fleet_main_conf_t  *fmcf;

    fmcf = ngx_http_cycle_get_module_main_conf(ngx_cycle, ngx_fleet_module);

    if (!s->upgraded) {
        s->expires = ngx_current_msec + 2 * fmcf->ws_ping_interval;
    }

    ngx_queue_remove(&s->queue);
    ngx_queue_insert_tail(&ngx_fleet_sio_sh->sessions, &s->queue);
}


static void
ngx_fleet_sio_free_session(ngx_fleet_sio_session_t *s)
{
    ngx_fleet_sio_pkt_t    *p;
    ngx_fleet_sio_sroom_t  *room;

    while ((p = s->head) != NULL) {
        s->head = p->next;
        ngx_slab_free_locked(ngx_fleet_sio_shpool, p);
    }

    while ((room = s->rooms) != NULL) {
        s->rooms = room->next;
        ngx_slab_free_locked(ngx_fleet_sio_shpool, room);
    }

    ngx_rbtree_delete(&ngx_fleet_sio_sh->rbtree, &s->sn.node);
    ngx_queue_remove(&s->queue);
    ngx_fleet_sio_sh->count--;

    ngx_slab_free_locked(ngx_fleet_sio_shpool, s);
}


static void
ngx_fleet_sio_expire(void)
{
    ngx_queue_t              *q, *next;
    ngx_fleet_sio_session_t  *s;

    for (q = ngx_queue_head(&ngx_fleet_sio_sh->sessions);
         q != ngx_queue_sentinel(&ngx_fleet_sio_sh->sessions);
         q = next)
    {
        next = ngx_queue_next(q);
        s = ngx_queue_data(q, ngx_fleet_sio_session_t, queue);

        /* upgraded sessions are out of activity order: all are looked at */
        if ((ngx_msec_int_t) (s->expires - ngx_current_msec) > 0
            || s->get_held)
        {
            continue;
        }

        ngx_fleet_sio_free_session(s);
    }
}


/* a session whose client cannot keep up is closed: memory stays bounded */

static ngx_int_t
ngx_fleet_sio_append(ngx_fleet_sio_session_t *s, u_char *data, size_t len)
{
    ngx_fleet_sio_pkt_t    *p;
    ngx_fleet_main_conf_t  *fmcf;

    fmcf = ngx_http_cycle_get_module_main_conf(ngx_cycle, ngx_fleet_module);

    if (s->closed) {
        return NGX_ERROR;
    }

    if (s->queued + len > fmcf->ws_max_queue) {
        ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                      "fleet: Socket.IO polling client too slow, %uz bytes "
                      "queued, closing", s->queued);
        ngx_fleet_worker_metric_add(NGX_FLEET_W_WS_SLOW_CLOSED, 1);
        s->closed = 1;
        return NGX_ERROR;
    }

    p = ngx_slab_alloc_locked(ngx_fleet_sio_shpool,
                              offsetof(ngx_fleet_sio_pkt_t, data) + len);
    if (p == NULL) {
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "fleet: the Socket.IO zone is full "
                      "(fleet_socketio_zone_size), closing a session");
        s->closed = 1;
        return NGX_ERROR;
    }

    p->next = NULL;
    p->len = len;
    ngx_memcpy(p->data, data, len);

    if (s->tail) {
        s->tail->next = p;

    } else {
        s->head = p;
    }

    s->tail = p;
    s->queued += len;

    return NGX_OK;
}


static ngx_int_t
ngx_fleet_sio_in_rooms(ngx_fleet_sio_session_t *s, json_t *rooms)
{
    size_t                  i;
    json_t                 *v;
    ngx_fleet_sio_sroom_t  *room;

    for (room = s->rooms; room; room = room->next) {
        json_array_foreach(rooms, i, v) {
            if (json_string_length(v) == room->len
                && ngx_strncmp(json_string_value(v), room->name, room->len)
                   == 0)
            {
                return 1;
            }
        }
    }

    return 0;
}


/*
 * The queued packets, joined with 0x1e, into the request's pool; for a
 * closed session followed by the close packet "1" (what it was told before
 * it was closed, rate_limited for one, still reaches it).
 */

static ngx_int_t
ngx_fleet_sio_take(ngx_fleet_sio_session_t *s, ngx_http_request_t *r,
    ngx_str_t *out)
{
    u_char               *p;
    size_t                len;
    ngx_fleet_sio_pkt_t  *pkt;

    len = 2;

    for (pkt = s->head; pkt; pkt = pkt->next) {
        len += pkt->len + 1;
    }

    out->data = ngx_pnalloc(r->pool, len);
    if (out->data == NULL) {
        return NGX_ERROR;
    }

    p = out->data;

    while ((pkt = s->head) != NULL) {
        if (p != out->data) {
            *p++ = 0x1e;
        }

        p = ngx_cpymem(p, pkt->data, pkt->len);

        s->head = pkt->next;
        ngx_slab_free_locked(ngx_fleet_sio_shpool, pkt);
    }

    if (s->closed) {
        if (p != out->data) {
            *p++ = 0x1e;
        }

        *p++ = '1';
    }

    s->tail = NULL;
    s->queued = 0;
    out->len = p - out->data;

    return NGX_OK;
}


static ngx_int_t
ngx_fleet_sio_reply(ngx_fleet_api_t *api, u_char *data, size_t len)
{
    return ngx_fleet_send_body(api->request, NGX_HTTP_OK,
                               "text/plain; charset=UTF-8", data, len, 0);
}


/* GET ?EIO=4&transport=polling: a new session, answered with "0{...}" */

ngx_int_t
ngx_fleet_sio_polling_open(ngx_fleet_api_t *api)
{
    u_char                    pkt[256];
    size_t                    n;
    ngx_fleet_main_conf_t    *fmcf;
    ngx_fleet_sio_session_t  *s;

    ngx_shmtx_lock(&ngx_fleet_sio_shpool->mutex);

    ngx_fleet_sio_expire();

    s = ngx_slab_calloc_locked(ngx_fleet_sio_shpool,
                               sizeof(ngx_fleet_sio_session_t));
    if (s == NULL) {
        ngx_shmtx_unlock(&ngx_fleet_sio_shpool->mutex);
        ngx_log_error(NGX_LOG_WARN, api->request->connection->log, 0,
                      "fleet: the Socket.IO zone is full "
                      "(fleet_socketio_zone_size)");
        return ngx_fleet_send_error(api->request,
                                    NGX_HTTP_SERVICE_UNAVAILABLE,
                                    "SERVICE_UNAVAILABLE",
                                    "too many Socket.IO sessions");
    }

    do {
        ngx_fleet_sio_new_sid((char *) pkt);
    } while (ngx_fleet_sio_lookup((char *) pkt) != NULL);

    ngx_memcpy(s->sid, pkt, NGX_FLEET_SIO_SID_LEN);
    ngx_fleet_sio_new_sid(s->sio_id);

    fmcf = ngx_http_cycle_get_module_main_conf(ngx_cycle, ngx_fleet_module);

    s->rate_last = ngx_current_msec;
    s->rate_tokens = 1000 * fmcf->ws_message_burst;

    s->sn.str.data = s->sid;
    s->sn.str.len = NGX_FLEET_SIO_SID_LEN;
    s->sn.node.key = ngx_crc32_short(s->sid, NGX_FLEET_SIO_SID_LEN);

    ngx_rbtree_insert(&ngx_fleet_sio_sh->rbtree, &s->sn.node);
    ngx_queue_insert_tail(&ngx_fleet_sio_sh->sessions, &s->queue);
    ngx_fleet_sio_sh->count++;

    ngx_fleet_sio_touch(s);

    ngx_shmtx_unlock(&ngx_fleet_sio_shpool->mutex);

    pkt[NGX_FLEET_SIO_SID_LEN] = '\0';
    n = ngx_fleet_sio_open_packet(pkt + 32, sizeof(pkt) - 32,
                                  (const char *) pkt, 1);

    return ngx_fleet_sio_reply(api, pkt + 32, n);
}


/* GET ?sid=: what is queued, or held until something is */

ngx_int_t
ngx_fleet_sio_polling_get(ngx_fleet_api_t *api, const char *sid)
{
    ngx_str_t                 out;
    ngx_int_t                 rc;
    ngx_fleet_sio_held_t     *h;
    ngx_fleet_sio_session_t  *s;

    ngx_shmtx_lock(&ngx_fleet_sio_shpool->mutex);

    s = ngx_fleet_sio_lookup(sid);

    if (s == NULL || s->upgraded || s->get_held) {
        ngx_shmtx_unlock(&ngx_fleet_sio_shpool->mutex);

        /* engine.io refuses a second GET too */
        return s ? ngx_fleet_sio_refuse(api->request, 3, "Bad request")
                 : ngx_fleet_sio_refuse(api->request, 1,
                                        "Session ID unknown");
    }

    ngx_fleet_sio_touch(s);

    if (s->closed) {
        rc = ngx_fleet_sio_take(s, api->request, &out);
        ngx_fleet_sio_free_session(s);
        ngx_shmtx_unlock(&ngx_fleet_sio_shpool->mutex);

        if (rc != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        return ngx_fleet_sio_reply(api, out.data, out.len);
    }

    if (s->head) {
        rc = ngx_fleet_sio_take(s, api->request, &out);
        ngx_shmtx_unlock(&ngx_fleet_sio_shpool->mutex);

        if (rc != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        return ngx_fleet_sio_reply(api, out.data, out.len);
    }

    h = ngx_pcalloc(api->request->pool, sizeof(ngx_fleet_sio_held_t));
    if (h == NULL) {
        ngx_shmtx_unlock(&ngx_fleet_sio_shpool->mutex);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    s->get_held = 1;

    ngx_shmtx_unlock(&ngx_fleet_sio_shpool->mutex);

    h->api = api;
    h->since = ngx_current_msec;
    ngx_memcpy(h->sid, sid, NGX_FLEET_SIO_SID_LEN + 1);

    if (!ngx_fleet_sio_held_init) {
        ngx_queue_init(&ngx_fleet_sio_held);
        ngx_fleet_sio_held_init = 1;
    }

    ngx_queue_insert_tail(&ngx_fleet_sio_held, &h->queue);

    api->data = h;
    api->cleanup = ngx_fleet_sio_held_cleanup;

    if (!ngx_fleet_sio_tick_ev.timer_set) {
        /* not cancelable: a leaving worker answers its held GETs before
         * it exits (with a ping), it does not drop them */
        ngx_fleet_sio_tick_ev.handler = ngx_fleet_sio_tick;
        ngx_fleet_sio_tick_ev.log = ngx_cycle->log;
        ngx_add_timer(&ngx_fleet_sio_tick_ev, NGX_FLEET_SIO_TICK);
    }

    return NGX_DONE;
}


/* the request ends (answered, or the client went): the GET is free */

static void
ngx_fleet_sio_held_cleanup(ngx_fleet_api_t *api)
{
    ngx_fleet_sio_held_t     *h;
    ngx_fleet_sio_session_t  *s;

    h = api->data;

    if (h == NULL) {
        return;
    }

    api->data = NULL;
    ngx_queue_remove(&h->queue);

    if (h->answered) {
        /* the session was told when the answer was made */
        return;
    }

    ngx_shmtx_lock(&ngx_fleet_sio_shpool->mutex);

    s = ngx_fleet_sio_lookup(h->sid);

    if (s) {
        s->get_held = 0;
        ngx_fleet_sio_touch(s);
    }

    ngx_shmtx_unlock(&ngx_fleet_sio_shpool->mutex);
}


static void
ngx_fleet_sio_tick(ngx_event_t *ev)
{
    ngx_fleet_sio_check_held(NULL);

    ngx_shmtx_lock(&ngx_fleet_sio_shpool->mutex);
    ngx_fleet_sio_expire();
    ngx_shmtx_unlock(&ngx_fleet_sio_shpool->mutex);

    if (!ngx_queue_empty(&ngx_fleet_sio_held)) {
        ngx_add_timer(&ngx_fleet_sio_tick_ev, NGX_FLEET_SIO_TICK);
    }
}


/* answers the held GETs (of one session, or all) that have an answer */

static void
ngx_fleet_sio_check_held(const char *only_sid)
{
    u_char                    *answer;
    size_t                     len;
    ngx_str_t                  out;
    ngx_int_t                  rc;
    ngx_queue_t               *q, *next;
    ngx_fleet_sio_held_t      *h;
    ngx_fleet_main_conf_t     *fmcf;
    ngx_fleet_sio_session_t   *s;

    if (!ngx_fleet_sio_held_init) {
        return;
    }

    fmcf = ngx_http_cycle_get_module_main_conf(ngx_cycle, ngx_fleet_module);

    for (q = ngx_queue_head(&ngx_fleet_sio_held);
         q != ngx_queue_sentinel(&ngx_fleet_sio_held);
         q = next)
    {
        next = ngx_queue_next(q);
        h = ngx_queue_data(q, ngx_fleet_sio_held_t, queue);

        if (only_sid && ngx_strcmp(h->sid, only_sid) != 0) {
            continue;
        }

        answer = NULL;
        len = 0;
        rc = NGX_OK;
        ngx_str_null(&out);

        ngx_shmtx_lock(&ngx_fleet_sio_shpool->mutex);

        s = ngx_fleet_sio_lookup(h->sid);

        if (s == NULL || s->closed) {
            answer = (u_char *) "1";
            len = 1;

            if (s) {
                rc = ngx_fleet_sio_take(s, h->api->request, &out);
                answer = out.data;
                len = out.len;
                ngx_fleet_sio_free_session(s);
                s = NULL;
            }

        } else if (s->head) {
            rc = ngx_fleet_sio_take(s, h->api->request, &out);
            answer = out.data;
            len = out.len;

        } else if (s->upgraded || s->probing) {
            /* the client waits for its GET to end before it upgrades */
            answer = (u_char *) "6";
            len = 1;

        } else if (ngx_current_msec - h->since >= fmcf->ws_ping_interval
                   || ngx_exiting || ngx_terminate)
        {
            /* the server's ping goes out as the answer of a GET */
            answer = (u_char *) "2";
            len = 1;
        }

        if (answer || rc != NGX_OK) {
            /*
             * The next GET may reach another worker as soon as this
             * answer is out, before this request's cleanup runs: the
             * session is free for it from now on.
             */
            h->answered = 1;

            if (s) {
                s->get_held = 0;
                ngx_fleet_sio_touch(s);
            }
        }

        ngx_shmtx_unlock(&ngx_fleet_sio_shpool->mutex);

        if (answer == NULL && rc == NGX_OK) {
            continue;
        }

        /* the cleanup frees the GET: unlinks h, clears get_held */
        ngx_fleet_api_finish(h->api,
                             rc == NGX_OK
                             ? ngx_fleet_sio_reply(h->api, answer, len)
                             : NGX_HTTP_INTERNAL_SERVER_ERROR);
    }
}


/* an event for the polling sessions in its rooms (see the file's top) */

void
ngx_fleet_sio_polling_event(int64_t seq, json_t *rooms, u_char *pkt,
    size_t len, const char *owner, ngx_uint_t filtered)
{
    ngx_uint_t                queued;
    ngx_queue_t              *q;
    ngx_fleet_sio_session_t  *s;

    if (ngx_fleet_sio_sh == NULL || ngx_fleet_sio_sh->count == 0) {
        return;
    }

    queued = 0;

    ngx_shmtx_lock(&ngx_fleet_sio_shpool->mutex);

    for (q = ngx_queue_head(&ngx_fleet_sio_sh->sessions);
         q != ngx_queue_sentinel(&ngx_fleet_sio_sh->sessions);
         q = ngx_queue_next(q))
    {
        s = ngx_queue_data(q, ngx_fleet_sio_session_t, queue);

        if (!s->connected || s->upgraded || s->closed
            || !ngx_fleet_sio_in_rooms(s, rooms)
            || (filtered
                && !ngx_fleet_sio_may_get(s->user_id, s->sees_all, owner))
            || (seq && ngx_fleet_sio_seq_seen(s->seqs, seq)))
        {
            continue;
        }

        if (seq) {
            s->seqs[s->seq_pos++ % NGX_FLEET_SIO_SEQS] = seq;
        }

        (void) ngx_fleet_sio_append(s, pkt, len);
        queued = 1;
    }

    ngx_shmtx_unlock(&ngx_fleet_sio_shpool->mutex);

    if (queued) {
        ngx_fleet_sio_check_held(NULL);
    }
}


ngx_uint_t
ngx_fleet_sio_polling_count(void)
{
    return ngx_fleet_sio_sh ? ngx_fleet_sio_sh->count : 0;
}


/* "2probe" on the WebSocket: a held GET is released with "6" */

void
ngx_fleet_sio_polling_probe(const char *sid)
{
    ngx_fleet_sio_session_t  *s;

    ngx_shmtx_lock(&ngx_fleet_sio_shpool->mutex);

    s = ngx_fleet_sio_lookup(sid);

    if (s) {
        s->probing = 1;
    }

    ngx_shmtx_unlock(&ngx_fleet_sio_shpool->mutex);

    ngx_fleet_sio_check_held(sid);
}


/* the WebSocket of an upgrade may only start for a live session */

ngx_int_t
ngx_fleet_sio_polling_exists(const char *sid)
{
    ngx_int_t                 rc;
    ngx_fleet_sio_session_t  *s;

    ngx_shmtx_lock(&ngx_fleet_sio_shpool->mutex);

    s = ngx_fleet_sio_lookup(sid);
    rc = (s && !s->upgraded && !s->closed) ? NGX_OK : NGX_DECLINED;

    ngx_shmtx_unlock(&ngx_fleet_sio_shpool->mutex);

    return rc;
}


/*
 * "5" on the WebSocket: identity, rooms and queued packets move to it,
 * the session is marked upgraded (a held GET answers "6") and expires
 * soon.  NGX_AGAIN while its CONNECT is still in the database.
 */

ngx_int_t
ngx_fleet_sio_polling_upgrade(ngx_fleet_sio_conn_t *conn, ngx_pool_t *pool,
    ngx_array_t *rooms, ngx_array_t *pkts, int64_t *seqs)
{
    ngx_str_t                *v;
    ngx_fleet_sio_pkt_t      *p;
    ngx_fleet_sio_sroom_t    *room;
    ngx_fleet_sio_session_t  *s;

    ngx_shmtx_lock(&ngx_fleet_sio_shpool->mutex);

    s = ngx_fleet_sio_lookup(conn->sid);

    if (s == NULL || s->upgraded || s->closed) {
        ngx_shmtx_unlock(&ngx_fleet_sio_shpool->mutex);
        return NGX_DECLINED;
    }

    if (s->connecting) {
        ngx_shmtx_unlock(&ngx_fleet_sio_shpool->mutex);
        return NGX_AGAIN;
    }

    for (room = s->rooms; room; room = room->next) {
        v = ngx_array_push(rooms);
        if (v == NULL) {
            goto failed;
        }

        v->data = ngx_pnalloc(pool, room->len);
        if (v->data == NULL) {
            goto failed;
        }

        ngx_memcpy(v->data, room->name, room->len);
        v->len = room->len;
    }

    for (p = s->head; p; p = p->next) {
        v = ngx_array_push(pkts);
        if (v == NULL) {
            goto failed;
        }

        v->data = ngx_pnalloc(pool, p->len);
        if (v->data == NULL) {
            goto failed;
        }

        ngx_memcpy(v->data, p->data, p->len);
        v->len = p->len;
    }

    while ((p = s->head) != NULL) {
        s->head = p->next;
        ngx_slab_free_locked(ngx_fleet_sio_shpool, p);
    }

    s->tail = NULL;
    s->queued = 0;

    conn->connected = s->connected;
    conn->sees_all = s->sees_all;
    conn->role = s->role;
    ngx_memcpy(conn->user_id, s->user_id, sizeof(conn->user_id));
    ngx_memcpy(conn->sio_id, s->sio_id, sizeof(conn->sio_id));
    ngx_memcpy(seqs, s->seqs, sizeof(s->seqs));

    s->upgraded = 1;
    s->expires = ngx_current_msec + NGX_FLEET_SIO_UPGRADED_TTL;

    ngx_shmtx_unlock(&ngx_fleet_sio_shpool->mutex);

    return NGX_OK;

failed:

    ngx_shmtx_unlock(&ngx_fleet_sio_shpool->mutex);

    return NGX_ERROR;
}


/* ------------------------------------------------------------------ */
/* POST ?sid=: the client's packets, in order, then "ok" */

ngx_int_t
ngx_fleet_sio_polling_post(ngx_fleet_api_t *api, const char *sid)
{
    ngx_fleet_sio_post_t     *pp;
    ngx_fleet_sio_session_t  *s;

    pp = ngx_pcalloc(api->request->pool, sizeof(ngx_fleet_sio_post_t));
    if (pp == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_shmtx_lock(&ngx_fleet_sio_shpool->mutex);

    s = ngx_fleet_sio_lookup(sid);

    if (s && s->closed) {
        /*
         * Closed by the server (flooding, too slow): the packets are
         * dropped, and the client learns of the close from its GET, after
         * what it was told before.  A 400 here would make it drop that GET.
         */
        ngx_shmtx_unlock(&ngx_fleet_sio_shpool->mutex);
        return ngx_fleet_sio_reply(api, (u_char *) "ok", 2);
    }

    if (s == NULL || s->upgraded) {
        ngx_shmtx_unlock(&ngx_fleet_sio_shpool->mutex);

        return ngx_fleet_sio_refuse(api->request, 1, "Session ID unknown");
    }

    ngx_fleet_sio_touch(s);

    pp->conn.connected = s->connected;
    pp->conn.connecting = s->connecting;
    pp->conn.sees_all = s->sees_all;
    pp->conn.role = s->role;
    ngx_memcpy(pp->conn.user_id, s->user_id, sizeof(pp->conn.user_id));
    ngx_memcpy(pp->conn.sio_id, s->sio_id, sizeof(pp->conn.sio_id));

    ngx_shmtx_unlock(&ngx_fleet_sio_shpool->mutex);

    ngx_memcpy(pp->conn.sid, sid, NGX_FLEET_SIO_SID_LEN + 1);
    pp->conn.ops = &ngx_fleet_sio_polling_ops;
    pp->conn.log = api->request->connection->log;
    ngx_queue_init(&pp->conn.calls);
    pp->api = api;

    api->data = pp;
    api->cleanup = ngx_fleet_sio_post_cleanup;

    ngx_fleet_sio_post_next(pp);

    return NGX_DONE;
}


static void
ngx_fleet_sio_post_next(ngx_fleet_sio_post_t *pp)
{
    size_t            len;
    ngx_int_t         rc;
    const char       *pkt;
    ngx_fleet_api_t  *api;

    api = pp->api;
    pp->waiting = 0;

    while (!pp->closed
           && fleet_eio_payload_next((const char *) api->body.data,
                                     api->body.len, &pp->off, &pkt, &len))
    {
        if (len == 0) {
            continue;
        }

        rc = ngx_fleet_sio_packet(&pp->conn, (u_char *) pkt, len);

        if (rc == NGX_AGAIN) {
            /* ngx_fleet_sio_p_resume() goes on */
            pp->waiting = 1;
            return;
        }
    }

    ngx_fleet_sio_check_held(pp->conn.sid);

    ngx_fleet_api_finish(api, ngx_fleet_sio_reply(api, (u_char *) "ok", 2));
}


static void
ngx_fleet_sio_post_cleanup(ngx_fleet_api_t *api)
{
    ngx_fleet_sio_post_t  *pp;

    pp = api->data;

    if (pp) {
        ngx_fleet_sio_cancel_calls(&pp->conn);
        api->data = NULL;
    }
}


static ngx_int_t
ngx_fleet_sio_p_send(ngx_fleet_sio_conn_t *conn, u_char *pkt, size_t len)
{
    ngx_int_t                 rc;
    ngx_fleet_sio_session_t  *s;

    ngx_shmtx_lock(&ngx_fleet_sio_shpool->mutex);

    s = ngx_fleet_sio_lookup(conn->sid);
    rc = s ? ngx_fleet_sio_append(s, pkt, len) : NGX_ERROR;

    ngx_shmtx_unlock(&ngx_fleet_sio_shpool->mutex);

    /* a GET this worker holds for it answers now */
    ngx_fleet_sio_check_held(conn->sid);

    return rc;
}


static ngx_int_t
ngx_fleet_sio_p_join(ngx_fleet_sio_conn_t *conn, u_char *name, size_t len)
{
    ngx_int_t                 rc;
    ngx_fleet_sio_sroom_t    *room;
    ngx_fleet_sio_session_t  *s;

    rc = NGX_OK;

    ngx_shmtx_lock(&ngx_fleet_sio_shpool->mutex);

    s = ngx_fleet_sio_lookup(conn->sid);

    if (s == NULL) {
        rc = NGX_ERROR;
        goto done;
    }

    for (room = s->rooms; room; room = room->next) {
        if (room->len == len && ngx_strncmp(room->name, name, len) == 0) {
            goto done;
        }
    }

    if (s->nrooms >= NGX_FLEET_SIO_MAX_ROOMS) {
        rc = NGX_DECLINED;
        goto done;
    }

    room = ngx_slab_alloc_locked(ngx_fleet_sio_shpool,
                                 offsetof(ngx_fleet_sio_sroom_t, name) + len);
    if (room == NULL) {
        rc = NGX_ERROR;
        goto done;
    }

    ngx_memcpy(room->name, name, len);
    room->len = len;
    room->next = s->rooms;
    s->rooms = room;
    s->nrooms++;

done:

    ngx_shmtx_unlock(&ngx_fleet_sio_shpool->mutex);

    return rc;
}


static void
ngx_fleet_sio_p_leave(ngx_fleet_sio_conn_t *conn, u_char *name, size_t len)
{
    ngx_fleet_sio_sroom_t    *room, **rr;
    ngx_fleet_sio_session_t  *s;

    ngx_shmtx_lock(&ngx_fleet_sio_shpool->mutex);

    s = ngx_fleet_sio_lookup(conn->sid);

    if (s) {
        for (rr = &s->rooms; (room = *rr) != NULL; rr = &room->next) {
            if (room->len == len && ngx_strncmp(room->name, name, len) == 0) {
                *rr = room->next;
                ngx_slab_free_locked(ngx_fleet_sio_shpool, room);
                s->nrooms--;
                break;
            }
        }
    }

    ngx_shmtx_unlock(&ngx_fleet_sio_shpool->mutex);
}


static ngx_int_t
ngx_fleet_sio_p_sync(ngx_fleet_sio_conn_t *conn)
{
    ngx_int_t                 rc;
    ngx_fleet_sio_session_t  *s;

    ngx_shmtx_lock(&ngx_fleet_sio_shpool->mutex);

    s = ngx_fleet_sio_lookup(conn->sid);

    if (s) {
        s->connected = conn->connected;
        s->connecting = conn->connecting;
        s->sees_all = conn->sees_all;
        s->role = conn->role;
        ngx_memcpy(s->user_id, conn->user_id, sizeof(s->user_id));
        rc = NGX_OK;

    } else {
        rc = NGX_ERROR;
    }

    ngx_shmtx_unlock(&ngx_fleet_sio_shpool->mutex);

    return rc;
}


/* the rate limit of SPEC 7, kept with the session: POSTs may come to
 * any worker */

static ngx_int_t
ngx_fleet_sio_p_allow(ngx_fleet_sio_conn_t *conn)
{
    ngx_int_t                 rc;
    ngx_fleet_sio_session_t  *s;

    ngx_shmtx_lock(&ngx_fleet_sio_shpool->mutex);

    s = ngx_fleet_sio_lookup(conn->sid);
    rc = s ? ngx_fleet_rate_take(&s->rate_last, &s->rate_tokens,
                                 &s->rate_refused)
           : NGX_ABORT;

    if (rc == NGX_ABORT && s) {
        ngx_log_error(NGX_LOG_INFO, conn->log, 0,
                      "fleet: Socket.IO polling client keeps flooding, "
                      "closing");
        s->closed = 1;
    }

    ngx_shmtx_unlock(&ngx_fleet_sio_shpool->mutex);

    return rc;
}


static void
ngx_fleet_sio_p_resume(ngx_fleet_sio_conn_t *conn)
{
    ngx_fleet_sio_post_t  *pp = (ngx_fleet_sio_post_t *) conn;

    if (pp->waiting) {
        ngx_fleet_sio_post_next(pp);
    }
}


static void
ngx_fleet_sio_p_close(ngx_fleet_sio_conn_t *conn)
{
    ngx_fleet_sio_post_t     *pp = (ngx_fleet_sio_post_t *) conn;
    ngx_fleet_sio_session_t  *s;

    pp->closed = 1;

    ngx_shmtx_lock(&ngx_fleet_sio_shpool->mutex);

    s = ngx_fleet_sio_lookup(conn->sid);

    if (s) {
        s->closed = 1;
    }

    ngx_shmtx_unlock(&ngx_fleet_sio_shpool->mutex);
}
