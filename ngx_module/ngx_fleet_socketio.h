/*
 * fleetgate: Socket.IO (Engine.IO 4 / Socket.IO 5) — what its WebSocket
 * and long-polling halves share.
 */

#ifndef _NGX_FLEET_SOCKETIO_H_INCLUDED_
#define _NGX_FLEET_SOCKETIO_H_INCLUDED_


#include "ngx_fleet_api.h"
#include "ngx_fleet_ws.h"
#include "ngx_fleet_rooms.h"
#include "fleet_sio.h"


#define NGX_FLEET_SIO_SID_LEN      20
#define NGX_FLEET_SIO_MAX_ROOM     128
#define NGX_FLEET_SIO_MAX_ROOMS    64
#define NGX_FLEET_SIO_SEQS         16


typedef struct ngx_fleet_sio_conn_s  ngx_fleet_sio_conn_t;


/*
 * A Socket.IO client as the packet handling sees it, whichever transport
 * it is on: a WebSocket in this worker, or a long-polling session in
 * shared memory that any worker may serve.
 */
typedef struct {
    /* queues one Engine.IO packet for the client */
    ngx_int_t                 (*send)(ngx_fleet_sio_conn_t *conn, u_char *pkt,
                                      size_t len);
    ngx_int_t                 (*join)(ngx_fleet_sio_conn_t *conn,
                                      u_char *room, size_t len);
    void                      (*leave)(ngx_fleet_sio_conn_t *conn,
                                       u_char *room, size_t len);
    /* the identity changed (CONNECT under way, accepted or refused):
     * a polling session writes it where every worker sees it */
    ngx_int_t                 (*sync)(ngx_fleet_sio_conn_t *conn);
    /* may the client send this message now (SPEC 7's rate limit);
     * NGX_OK, NGX_DECLINED (refused) or NGX_ABORT (flooding, closed) */
    ngx_int_t                 (*allow)(ngx_fleet_sio_conn_t *conn);
    /* a database call this connection waited for has finished */
    void                      (*resume)(ngx_fleet_sio_conn_t *conn);
    /* the client asked to go ("1", or DISCONNECT) */
    void                      (*close)(ngx_fleet_sio_conn_t *conn);
} ngx_fleet_sio_ops_t;


struct ngx_fleet_sio_conn_s {
    const ngx_fleet_sio_ops_t  *ops;
    ngx_log_t                  *log;
    ngx_queue_t                 calls;
    ngx_uint_t                  ncalls;
    fleet_role_t                role;
    unsigned                    connected:1;
    unsigned                    sees_all:1;
    unsigned                    connecting:1;
    char                        sid[NGX_FLEET_SIO_SID_LEN + 1];
    char                        sio_id[NGX_FLEET_SIO_SID_LEN + 1];
    char                        user_id[NGX_INT64_LEN + 1];
};


/* ngx_fleet_socketio.c */
ngx_int_t ngx_fleet_sio_refuse(ngx_http_request_t *r, ngx_int_t code,
    const char *message);
ngx_int_t ngx_fleet_sio_packet(ngx_fleet_sio_conn_t *conn, u_char *data,
    size_t len);
void ngx_fleet_sio_cancel_calls(ngx_fleet_sio_conn_t *conn);
void ngx_fleet_sio_new_sid(char *sid);
size_t ngx_fleet_sio_open_packet(u_char *out, size_t size, const char *sid,
    ngx_uint_t can_upgrade);
ngx_int_t ngx_fleet_sio_may_get(const char *user_id, ngx_uint_t sees_all,
    const char *owner);
ngx_int_t ngx_fleet_sio_seq_seen(int64_t *seqs, int64_t seq);

/* ngx_fleet_sio_polling.c */
ngx_int_t ngx_fleet_sio_polling_get(ngx_fleet_api_t *api, const char *sid);
ngx_int_t ngx_fleet_sio_polling_post(ngx_fleet_api_t *api, const char *sid);
ngx_int_t ngx_fleet_sio_polling_open(ngx_fleet_api_t *api);
void ngx_fleet_sio_polling_event(int64_t seq, json_t *rooms, u_char *pkt,
    size_t len, const char *owner, ngx_uint_t filtered);
ngx_int_t ngx_fleet_sio_polling_exists(const char *sid);
void ngx_fleet_sio_polling_probe(const char *sid);
ngx_uint_t ngx_fleet_sio_polling_count(void);
ngx_int_t ngx_fleet_sio_polling_upgrade(ngx_fleet_sio_conn_t *conn,
    ngx_pool_t *pool, ngx_array_t *rooms, ngx_array_t *pkts, int64_t *seqs);


#endif /* _NGX_FLEET_SOCKETIO_H_INCLUDED_ */
