/*
 * fleet-bridge: shared types of the daemon.
 *
 * One process, one poll loop, no threads.  Each concern (MQTT, PostgreSQL,
 * the Unix socket for nginx workers) keeps its state in an explicit struct
 * below and exposes the same four steps to the loop in fleet_bridge.c:
 *   tick      act on timers (reconnect, heartbeat, keepalive)
 *   prepare   add its fds to the poll set and lower the poll timeout
 *   dispatch  handle the poll results for its fds
 *   shutdown  release everything on exit
 */

#ifndef BRIDGE_H
#define BRIDGE_H

#include <stddef.h>
#include <stdint.h>
#include <poll.h>
#include <sys/types.h>

#include <libpq-fe.h>

#define BRIDGE_NAME               "fleet-bridge"

#define BRIDGE_BACKOFF_MIN_MS     1000
#define BRIDGE_BACKOFF_MAX_MS     30000
#define BRIDGE_MQTT_KEEPALIVE_S   30
#define BRIDGE_PG_CONNECT_TIMEOUT_MS  10000
#define BRIDGE_SHARE_GROUP_MAX    128   /* bytes; checked at start */

/* limits of a request line (without "\n") and of one client's queued replies */
#define BRIDGE_SOCK_MAX_LINE      ((size_t) 1024 * 1024)
#define BRIDGE_SOCK_MAX_OUT       ((size_t) 4 * 1024 * 1024)
#define BRIDGE_SOCK_PENDING_BUCKETS  1024

/* MQTT ingest: message size limits and the default FIFO bounds */
#define BRIDGE_MAX_IMAGE_BYTES    ((size_t) 2 * 1024 * 1024)
#define BRIDGE_MAX_MESSAGE_BYTES  ((size_t) 64 * 1024)
#define BRIDGE_QUEUE_MAX_MESSAGES 10000
#define BRIDGE_QUEUE_MAX_BYTES    ((size_t) 64 * 1024 * 1024)
#define BRIDGE_DRAIN_TIMEOUT_MS   5000   /* SIGTERM: flush the FIFO this long */


/* ---- logging, time, helpers (fleet_bridge.c) ---- */

enum blog_level { BLOG_ERROR, BLOG_WARN, BLOG_INFO, BLOG_DEBUG };

extern int bridge_verbose;

void blog(enum blog_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

int64_t bridge_now_ms(void);

/* exponential reconnect delay, 1 s doubling to 30 s, +-20 % jitter */
struct backoff {
    int64_t  base_ms;                   /* 0: next delay is the minimum */
};

int64_t backoff_next_delay(struct backoff *bo);
void backoff_reset(struct backoff *bo);

/* the fds of one loop iteration; rebuilt every time round */
struct pollset {
    struct pollfd  *fds;
    size_t          n;
    size_t          cap;
    int             timeout_ms;         /* -1: no timer pending */
};

int pollset_add(struct pollset *ps, int fd, short events);  /* index or -1 */
void pollset_wake_at(struct pollset *ps, int64_t now, int64_t when);


/* ---- options ---- */

struct bridge_options {
    const char  *mqtt_host;
    int          mqtt_port;
    const char  *pg_dsn;
    const char  *socket_path;
    const char  *device_secret;         /* never logged */
    char       **camera_keys;           /* never logged; NULL-terminated */
    size_t       ncamera_keys;
    const char  *camera_topic;          /* MQTT filter, e.g. server/+/image */
    const char  *share_group;
    const char  *client_id;             /* also the bridge id in PostgreSQL */
    int          heartbeat_interval_s;
    int          offline_after_s;
    int          offline_check_interval_s;
    size_t       queue_max_messages;
    size_t       queue_max_bytes;
};


/* ---- MQTT (bridge_mqtt.c) ---- */

enum mqtt_state {
    MQTT_IDLE,                          /* no connection; retry at retry_at */
    MQTT_CONNECTING,                    /* TCP/CONNECT under way, no CONNACK */
    MQTT_CONNECTED                      /* CONNACK accepted, subscribed */
};

struct bridge_mqtt {
    struct mosquitto  *mosq;            /* one instance per connection */
    enum mqtt_state    state;
    int                lost;            /* set by callbacks, acted on by loop */
    char               lost_why[160];   /* for the one log line about it */
    int                stopping;
    int64_t            retry_at;
    int64_t            next_misc_at;    /* keepalive bookkeeping */
    int64_t            connected_at;    /* CONNACK time, 0 when not */
    struct backoff     backoff;
    int                pfd;             /* index in the poll set or -1 */
    int                camera_extra;    /* camera filter needs its own sub */
};


/* ---- PostgreSQL (bridge_pg.c) ---- */

struct bridge;

/* res is NULL when the connection was lost before the query completed */
typedef void (*bridge_pg_cb)(struct bridge *b, const PGresult *res, void *arg);

struct pg_query;

enum pg_state {
    PG_IDLE,                            /* no connection; retry at retry_at */
    PG_CONNECTING,                      /* PQconnectPoll in progress */
    PG_READY                            /* connected; queries may run */
};

struct bridge_pg {
    PGconn            *conn;
    enum pg_state      state;
    PostgresPollingStatusType  poll_dir;
    int64_t            retry_at;
    int64_t            connect_deadline;
    int64_t            next_heartbeat_at;
    struct backoff     backoff;
    struct pg_query   *head;            /* FIFO; head is in flight if busy */
    struct pg_query   *tail;
    int                busy;
    int                flush_pending;   /* PQflush returned 1 */
    int                heartbeat_busy;
    int                heartbeat_failing;
    int                pfd;
};


/* ---- Unix socket server (bridge_sock.c) ---- */

struct sock_client;
struct sock_pending;

struct bridge_sock {
    int                   listen_fd;
    int                   listen_pfd;
    dev_t                 dev;          /* identity of the socket file we */
    ino_t                 ino;          /* made, so we unlink only our own */
    int64_t               accept_resume_at;   /* after EMFILE */
    unsigned              next_client_id;
    size_t                nclients;
    struct sock_client   *clients;
    struct sock_pending  *pending[BRIDGE_SOCK_PENDING_BUCKETS];
};


/* ---- MQTT ingest (bridge_ingest.c) ---- */

struct ingest_msg;

/* "at most one warning a minute per topic": topic hash -> last logged */
#define INGEST_WARN_SLOTS  256

struct ingest_warn_slot {
    uint64_t  topic_hash;
    int64_t   logged_at;                /* 0: free */
};

struct bridge_ingest {
    struct ingest_msg  *head;           /* FIFO, oldest first */
    struct ingest_msg  *tail;
    size_t              count;
    size_t              bytes;
    unsigned            inflight;       /* handed to bridge_pg_query */
    int                 paused;         /* full: MQTT reads stopped */
    int                 pause_logged;   /* this pause was logged at warn */
    int64_t             pause_logged_at;
    int64_t             retry_at;       /* after a transient error */
    int64_t             next_offline_at;
    int                 offline_busy;
    int                 offline_failing;
    unsigned char      *scratch;        /* for fleet_mqtt_sig_verify */

    struct ingest_warn_slot  warn[INGEST_WARN_SLOTS];
    int64_t             warn_window_at; /* global cap on warning lines */
    unsigned            warn_window_n;
    uint64_t            warn_suppressed;
};

/* ---- command publishing and deadlines (bridge_commands.c) ---- */

#define BRIDGE_CMD_CLAIM_MAX      100   /* rows per fleet_commands_claim */
#define BRIDGE_CMD_INFLIGHT_MAX   256   /* publishes waiting for PUBACK */
#define BRIDGE_CMD_SWEEP_MS       1000
#define BRIDGE_CMD_TIMEOUT_MS     1000

/* a claimed command published QoS 1, waiting for its PUBACK */
struct cmd_inflight {
    int    mid;                         /* 0: free slot */
    char  *command_id;
};

struct bridge_commands {
    int64_t             next_sweep_at;
    int64_t             next_timeout_at;
    int                 sweep_wanted;   /* nudge, reconnect, full claim */
    int                 sweep_busy;     /* claim query in flight */
    int                 sweep_failing;
    int                 timeout_busy;
    int                 timeout_failing;
    int                 pg_up;          /* last seen states, to notice */
    int                 mqtt_up;        /* (re)connects */
    int                 no_secret_logged;
    size_t              ninflight;
    uint64_t            published;      /* mosquitto_publish accepted */
    uint64_t            sent;           /* PUBACK, fleet_command_sent done */
    struct cmd_inflight inflight[BRIDGE_CMD_INFLIGHT_MAX];
};

/* ---- payment-status publishing and expiry (bridge_payments.c) ---- */

#define BRIDGE_PAY_CLAIM_MAX      100   /* rows per fleet_payment_events_claim */
#define BRIDGE_PAY_INFLIGHT_MAX   256   /* publishes waiting for PUBACK */
#define BRIDGE_PAY_SWEEP_MS       1000
#define BRIDGE_PAY_EXPIRE_MS      1000

/* a claimed payment event published QoS 1, waiting for its PUBACK */
struct pay_inflight {
    int    mid;                         /* 0: free slot */
    char  *event_id;
};

struct bridge_payments {
    int64_t             next_sweep_at;
    int64_t             next_expire_at;
    int                 sweep_wanted;   /* nudge, reconnect, expiry, full claim */
    int                 sweep_busy;     /* claim query in flight */
    int                 sweep_failing;
    int                 expire_busy;
    int                 expire_failing;
    int                 pg_up;          /* last seen states, to notice */
    int                 mqtt_up;        /* (re)connects */
    int                 no_secret_logged;
    size_t              ninflight;
    uint64_t            published;      /* mosquitto_publish accepted */
    uint64_t            sent;           /* PUBACK, marked published */
    uint64_t            expired;        /* payments the timer cancelled */
    struct pay_inflight inflight[BRIDGE_PAY_INFLIGHT_MAX];
};

struct bridge_counters {
    uint64_t  stored;
    uint64_t  dropped_bad_signature;
    uint64_t  dropped_invalid;
    uint64_t  dropped_rejected;
    uint64_t  unhandled;
};


/* ---- the daemon ---- */

struct bridge {
    struct bridge_options  opt;
    uint64_t               mqtt_in;     /* messages received from the broker */
    uint64_t               mqtt_out;    /* publishes the broker accepted */
    struct bridge_counters cnt;
    int                    draining;    /* SIGTERM: reads stopped, flushing */
    struct bridge_mqtt     mqtt;
    struct bridge_pg       pg;
    struct bridge_sock     sock;
    struct bridge_ingest   ing;
    struct bridge_commands cmd;
    struct bridge_payments pay;
};


void bridge_mqtt_init(struct bridge *b);
void bridge_mqtt_tick(struct bridge *b, int64_t now);
void bridge_mqtt_prepare(struct bridge *b, struct pollset *ps, int64_t now);
void bridge_mqtt_dispatch(struct bridge *b, struct pollset *ps, int64_t now);
void bridge_mqtt_shutdown(struct bridge *b);
int bridge_mqtt_connected(const struct bridge *b);
/* NULL on success (mid set), else a short reason for the requester */
const char *bridge_mqtt_publish(struct bridge *b, const char *topic,
    const void *payload, size_t len, int qos, int retain, int *mid);

void bridge_pg_init(struct bridge *b);
void bridge_pg_tick(struct bridge *b, int64_t now);
void bridge_pg_prepare(struct bridge *b, struct pollset *ps, int64_t now);
void bridge_pg_dispatch(struct bridge *b, struct pollset *ps, int64_t now);
void bridge_pg_shutdown(struct bridge *b);
int bridge_pg_connected(const struct bridge *b);
/* queues a parameterised query (text params); -1 when not connected */
int bridge_pg_query(struct bridge *b, const char *sql, int nparams,
    const char *const *params, bridge_pg_cb cb, void *arg);

int bridge_ingest_init(struct bridge *b);
/* one message as libmosquitto delivered it: verify, then queue or drop */
void bridge_ingest_receive(struct bridge *b, const char *topic,
    const void *payload, size_t len, int retained);
/* hand queued messages to PostgreSQL; run the offline timer */
void bridge_ingest_tick(struct bridge *b, int64_t now);
void bridge_ingest_prepare(struct bridge *b, struct pollset *ps, int64_t now);
/* 1 while the FIFO is full: MQTT must not read */
int bridge_ingest_paused(const struct bridge *b);
size_t bridge_ingest_queue_len(const struct bridge *b);
void bridge_ingest_shutdown(struct bridge *b);
/* 1 when the topic matches the camera filter */
int bridge_camera_topic_match(const struct bridge *b, const char *topic);

/* the sweep (claim, sign, publish QoS 1) and the deadline timer */
void bridge_commands_tick(struct bridge *b, int64_t now);
void bridge_commands_prepare(struct bridge *b, struct pollset *ps,
    int64_t now);
/* {"op":"commands_pending"}: sweep as soon as possible */
void bridge_commands_wanted(struct bridge *b);
/* on_publish: 1 when mid was a command publish (then handled) */
int bridge_commands_publish_done(struct bridge *b, int mid);
/* the broker connection is gone: release the claims still unacknowledged */
void bridge_commands_mqtt_lost(struct bridge *b);
void bridge_commands_shutdown(struct bridge *b);

/* payment-status publishing (claim, sign, publish QoS 1) and expiry */
void bridge_payments_tick(struct bridge *b, int64_t now);
void bridge_payments_prepare(struct bridge *b, struct pollset *ps,
    int64_t now);
/* {"op":"payments_pending"}: sweep as soon as possible */
void bridge_payments_wanted(struct bridge *b);
/* on_publish: 1 when mid was a payment-status publish (then handled) */
int bridge_payments_publish_done(struct bridge *b, int mid);
/* the broker connection is gone: release the claims still unacknowledged */
void bridge_payments_mqtt_lost(struct bridge *b);
void bridge_payments_shutdown(struct bridge *b);

int bridge_sock_open(struct bridge *b);
void bridge_sock_prepare(struct bridge *b, struct pollset *ps, int64_t now);
void bridge_sock_dispatch(struct bridge *b, struct pollset *ps, int64_t now);
void bridge_sock_shutdown(struct bridge *b);
/* MQTT side events for requests waiting on a PUBACK */
void bridge_sock_publish_done(struct bridge *b, int mid);
void bridge_sock_fail_pending(struct bridge *b, const char *reason);

#endif /* BRIDGE_H */
