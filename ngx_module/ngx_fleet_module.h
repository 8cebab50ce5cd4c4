/*
 * fleetgate: shared types of the nginx side.
 */

#ifndef _NGX_FLEET_MODULE_H_INCLUDED_
#define _NGX_FLEET_MODULE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <libpq-fe.h>
#include <jansson.h>

#include "fleet_jwt.h"


#define NGX_FLEET_VERSION            "0.1.0"
#define NGX_FLEET_MAX_WORKERS        64
#define NGX_FLEET_PG_MAX_PARAMS      10
#define NGX_FLEET_NOTIFY_CHANNEL     "fleet_events"


typedef struct ngx_fleet_pg_query_s  ngx_fleet_pg_query_t;

/* res is NULL when the query failed; q->error then says why */
typedef void (*ngx_fleet_pg_handler_pt)(ngx_fleet_pg_query_t *q,
    PGresult *res);

typedef void (*ngx_fleet_notify_pt)(ngx_str_t *channel, ngx_str_t *payload,
    void *data);


struct ngx_fleet_pg_query_s {
    ngx_queue_t                 queue;
    const char                 *sql;
    int                         nparams;
    const char                 *params[NGX_FLEET_PG_MAX_PARAMS];
    int                         lengths[NGX_FLEET_PG_MAX_PARAMS];
    ngx_fleet_pg_handler_pt     handler;
    void                       *data;
    ngx_log_t                  *log;
    void                       *conn;
    const char                 *error;
    ngx_event_t                 timeout;
    unsigned                    waiting:1;
};


typedef struct {
    ngx_str_t                   pg_dsn;
    ngx_uint_t                  pg_pool_size;
    ngx_msec_t                  pg_query_timeout;
    ngx_uint_t                  pg_max_waiting;
    ngx_str_t                   bridge_socket;
    ngx_str_t                   jwt_secret;
    time_t                      jwt_ttl;
    ngx_uint_t                  password_iterations;
    ngx_flag_t                  registration;
    time_t                      command_timeout;
    ngx_msec_t                  sse_heartbeat;
    size_t                      sse_max_buffered;
    size_t                      ws_max_message;
    size_t                      ws_max_queue;
    ngx_msec_t                  ws_ping_interval;
    ngx_uint_t                  ws_message_rate;
    ngx_uint_t                  ws_message_burst;
    size_t                      sio_zone_size;
    ngx_str_t                   promptpay_biller_id;
    ngx_str_t                   promptpay_merchant_ref;
    ngx_str_t                   payment_reference_prefix;
    ngx_str_t                   payment_webhook_secret;
    time_t                      payment_ttl;
    ngx_shm_zone_t             *metrics_zone;
    ngx_uint_t                  api_used;
#if (NGX_THREADS)
    ngx_str_t                   thread_pool_name;
    ngx_thread_pool_t          *thread_pool;
#endif
} ngx_fleet_main_conf_t;


/* the module's request context: the signature check and the API share it */
typedef struct {
    ngx_int_t                   sig_status;
    unsigned                    sig_checked:1;
    void                       *api;
} ngx_fleet_ctx_t;


typedef struct {
    ngx_str_t                   device_secret;
    ngx_flag_t                  signature;
    size_t                      max_body_size;
} ngx_fleet_loc_conf_t;


/* counters kept in shared memory so /metrics shows every worker */
typedef enum {
    NGX_FLEET_M_REQUESTS = 0,
    NGX_FLEET_M_SIG_FAILURES,
    NGX_FLEET_M_AUTH_FAILURES,
    NGX_FLEET_M_PG_QUERIES,
    NGX_FLEET_M_PG_ERRORS,
    NGX_FLEET_M_PG_RECONNECTS,
    NGX_FLEET_M_RESP_2XX,
    NGX_FLEET_M_RESP_4XX,
    NGX_FLEET_M_RESP_5XX,
    NGX_FLEET_M_LOGINS,
    NGX_FLEET_M_MQTT_IN,
    NGX_FLEET_M_MQTT_OUT,
    NGX_FLEET_M_LAST
} ngx_fleet_metric_e;

typedef enum {
    NGX_FLEET_W_NOTIFY_RECEIVED = 0,
    NGX_FLEET_W_PG_CONNECTED,
    NGX_FLEET_W_PG_WAITING,
    NGX_FLEET_W_LISTEN_UP,
    NGX_FLEET_W_BRIDGE_UP,
    NGX_FLEET_W_OPEN_STREAMS,
    NGX_FLEET_W_WEBSOCKETS,
    NGX_FLEET_W_WS_SLOW_CLOSED,
    NGX_FLEET_W_PID,
    NGX_FLEET_W_LAST
} ngx_fleet_worker_metric_e;


extern ngx_module_t  ngx_fleet_module;


/* ngx_fleet_module.c */
ngx_int_t ngx_fleet_send_json(ngx_http_request_t *r, ngx_uint_t status,
    json_t *body);
ngx_int_t ngx_fleet_send_error(ngx_http_request_t *r, ngx_uint_t status,
    const char *code, const char *message);
ngx_int_t ngx_fleet_send_text(ngx_http_request_t *r, ngx_uint_t status,
    u_char *text, size_t len);
ngx_int_t ngx_fleet_send_body(ngx_http_request_t *r, ngx_uint_t status,
    const char *type, u_char *text, size_t len, ngx_uint_t newline);
ngx_int_t ngx_fleet_request_body(ngx_http_request_t *r, ngx_str_t *body);
ngx_table_elt_t *ngx_fleet_find_header(ngx_http_request_t *r,
    const char *name, size_t len);
ngx_fleet_ctx_t *ngx_fleet_get_ctx(ngx_http_request_t *r);
u_char *ngx_fleet_iso_time(u_char *p, ngx_time_t *tp);

/* ngx_fleet_pg.c */
ngx_int_t ngx_fleet_pg_init_process(ngx_cycle_t *cycle);
void ngx_fleet_pg_exit_process(ngx_cycle_t *cycle);
ngx_int_t ngx_fleet_pg_send(ngx_fleet_pg_query_t *q);
void ngx_fleet_pg_cancel(ngx_fleet_pg_query_t *q);
ngx_int_t ngx_fleet_pg_listen(ngx_cycle_t *cycle, const char *channel,
    ngx_fleet_notify_pt handler, void *data);
ngx_uint_t ngx_fleet_pg_available(void);

/* ngx_fleet_bridge.c */
ngx_int_t ngx_fleet_bridge_init_process(ngx_cycle_t *cycle);
void ngx_fleet_bridge_exit_process(ngx_cycle_t *cycle);
ngx_int_t ngx_fleet_bridge_status(ngx_uint_t *mqtt, ngx_uint_t *pg);
ngx_int_t ngx_fleet_bridge_nudge(const char *line);

/* ngx_fleet_metrics.c */
ngx_int_t ngx_fleet_metrics_add_zone(ngx_conf_t *cf,
    ngx_fleet_main_conf_t *fmcf);
void ngx_fleet_metric_inc(ngx_fleet_metric_e m);
void ngx_fleet_metric_set(ngx_fleet_metric_e m, ngx_atomic_uint_t value);
void ngx_fleet_worker_metric_add(ngx_fleet_worker_metric_e m,
    ngx_atomic_int_t delta);
void ngx_fleet_worker_metric_set(ngx_fleet_worker_metric_e m,
    ngx_atomic_uint_t value);
void ngx_fleet_metrics_count_status(ngx_uint_t status);
ngx_int_t ngx_fleet_metrics_handler(ngx_http_request_t *r);

/* ngx_fleet_signature.c */
ngx_int_t ngx_fleet_signature_init(ngx_conf_t *cf);
ngx_int_t ngx_fleet_signature_check(ngx_http_request_t *r,
    ngx_str_t *secret, ngx_str_t *body);

/* ngx_fleet_auth.c */
ngx_int_t ngx_fleet_auth_bearer(ngx_http_request_t *r,
    fleet_jwt_claims_t *claims, const char **code, const char **message);
size_t ngx_fleet_auth_issue(ngx_http_request_t *r, const char *sub,
    fleet_role_t role, char *out, size_t size);
void ngx_fleet_auth_token_key(const u_char *token, size_t len,
    fleet_jwt_claims_t *claims);

/* ngx_fleet_api.c */
ngx_int_t ngx_fleet_api_handler(ngx_http_request_t *r);

/* ngx_fleet_sse.c */
void ngx_fleet_sse_notify(const char *scope, size_t len);

/*
 * ngx_fleet_ws.c: between these, WebSocket frames are only queued; the
 * end writes each connection's frames with one writev, so a burst of
 * events costs one system call per connection, not one per event.
 */
void ngx_fleet_ws_batch_begin(void);
void ngx_fleet_ws_batch_end(void);

/* ngx_fleet_streams.c */
void ngx_fleet_streams_event(const char *type, json_t *j,
    ngx_str_t *payload);

/* ngx_fleet_socketio.c, ngx_fleet_sio_polling.c */
void ngx_fleet_socketio_event(const char *type, json_t *j,
    ngx_str_t *payload);
ngx_int_t ngx_fleet_sio_polling_init_zone(ngx_conf_t *cf);

/* ngx_fleet_api_payments.c */
char *ngx_fleet_payments_init_conf(ngx_conf_t *cf,
    ngx_fleet_main_conf_t *fmcf);

/* ngx_fleet_ops.c */
ngx_int_t ngx_fleet_healthz_handler(ngx_http_request_t *r);


#endif /* _NGX_FLEET_MODULE_H_INCLUDED_ */
