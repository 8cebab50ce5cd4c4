/*
 * fleetgate: the WebSocket server (RFC 6455) that streams and Socket.IO
 * stand on.
 */

#ifndef _NGX_FLEET_WS_H_INCLUDED_
#define _NGX_FLEET_WS_H_INCLUDED_


#include "ngx_fleet_module.h"
#include "fleet_ws.h"


typedef struct ngx_fleet_ws_s      ngx_fleet_ws_t;
typedef struct ngx_fleet_ws_out_s  ngx_fleet_ws_out_t;


/*
 * One outgoing frame, built once and shared by every connection it goes
 * to (reference counted, malloc'd).  Frames with the same non-zero tag
 * replace each other in a lagging client's queue: the latest one wins.
 */
typedef struct {
    ngx_uint_t                  refs;
    uint32_t                    tag;
    size_t                      len;
    u_char                      data[1];
} ngx_fleet_ws_msg_t;


typedef struct {
    /* a whole text or binary message from the client */
    void                      (*message)(ngx_fleet_ws_t *ws, ngx_int_t opcode,
                                         u_char *data, size_t len);
    /* a message over the client's rate (SPEC 7); the connection stays */
    void                      (*limited)(ngx_fleet_ws_t *ws);
    /* the connection is going away: drop every reference to ws */
    void                      (*closed)(ngx_fleet_ws_t *ws);
    /* optional: the keep-alive probe of a protocol on top (Engine.IO's
     * "2"); without it a ping frame goes out */
    ngx_int_t                 (*ping)(ngx_fleet_ws_t *ws);
} ngx_fleet_ws_handler_t;


struct ngx_fleet_ws_s {
    ngx_connection_t           *connection;
    const ngx_fleet_ws_handler_t *handler;
    void                       *data;

    fleet_ws_parser_t           parser;

    ngx_fleet_ws_out_t         *out;
    ngx_fleet_ws_out_t        **out_last;
    size_t                      queued;

    ngx_fleet_ws_t             *dirty_next;     /* frames to write */

    u_char                     *pending;        /* read with the upgrade */
    size_t                      pending_len;

    ngx_msec_t                  rate_last;
    ngx_uint_t                  rate_tokens;     /* thousandths */
    ngx_uint_t                  rate_refused;

    unsigned                    accepting:1;
    unsigned                    in_dirty:1;
    unsigned                    handling:1;
    unsigned                    terminate:1;
    unsigned                    closing:1;      /* our close frame queued */
    unsigned                    close_received:1;
    unsigned                    ping_sent:1;
    unsigned                    heard:1;        /* since the last ping */
};


/* checks an upgrade request; NGX_OK, or a reason for the 400 */
ngx_int_t ngx_fleet_ws_check_upgrade(ngx_http_request_t *r,
    const char **why);

/*
 * Answers 101 and takes the connection over from the HTTP request, which
 * is logged and freed: a WebSocket holds only its connection and a small
 * malloc'd state.  Call it when nothing else refers to the request (from
 * a database callback, not from a content handler).  protocol is the
 * subprotocol to confirm, or NULL.  Returns NULL after closing everything
 * but data, which stays the caller's: handler->closed is not called.
 */
ngx_fleet_ws_t *ngx_fleet_ws_accept(ngx_http_request_t *r,
    const ngx_fleet_ws_handler_t *handler, void *data, ngx_str_t *protocol);

ngx_fleet_ws_msg_t *ngx_fleet_ws_msg(ngx_int_t opcode, u_char *payload,
    size_t len, uint32_t tag);
void ngx_fleet_ws_msg_release(ngx_fleet_ws_msg_t *msg);

/*
 * Queues a frame (sending at once when the socket takes it).  NGX_OK, or
 * NGX_ERROR when the connection is gone: it must not be touched again.
 */
ngx_int_t ngx_fleet_ws_send(ngx_fleet_ws_t *ws, ngx_fleet_ws_msg_t *msg);
ngx_int_t ngx_fleet_ws_send_text(ngx_fleet_ws_t *ws, u_char *text,
    size_t len);

/* starts the closing handshake; the connection goes once it is sent */
ngx_int_t ngx_fleet_ws_close(ngx_fleet_ws_t *ws, ngx_int_t code,
    const char *reason);

ngx_int_t ngx_fleet_rate_take(ngx_msec_t *last, ngx_uint_t *tokens,
    ngx_uint_t *refused);


#endif /* _NGX_FLEET_WS_H_INCLUDED_ */
