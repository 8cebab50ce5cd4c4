/*
 * fleet-bridge: MQTT ingest (SPEC sections 2 and 5).
 *
 * Every message libmosquitto delivers on server/{id}/{kind} (or on the camera
 * topic) is checked here at once, inside the message callback:
 *   - size (64 KiB, 2 MiB for camera frames), one JSON object, no NUL byte;
 *   - device messages: the trailing "sha256" member (fleet_mqtt_sig_verify);
 *     camera frames: X-API-KEY against the configured keys (constant time)
 *     and an X-MAC-ADDRESS member.
 * A message that fails is dropped and counted; a warning is logged at most
 * once a minute per topic.  A message that passes goes into an in-memory
 * FIFO and from there, in order, into PostgreSQL: one SQL function call per
 * message, each its own transaction, e.g.
 *   SELECT fleet_ingest_streaming($1, $2::jsonb)   -- device id, message
 *
 * Why a FIFO: libmosquitto 2.0 sends the PUBACK of a QoS 1 message before
 * our callback runs, so from then on the bridge alone holds the message.  It
 * stays queued until PostgreSQL has answered for it; a lost connection or an
 * unavailable server leaves it queued for the next connection.  A full FIFO
 * stops MQTT reads (bridge_ingest_paused) until it has drained to half, so
 * the broker holds further messages (TCP backpressure).
 *
 * Up to INGEST_MAX_INFLIGHT messages are handed to the PostgreSQL queue at
 * once (it runs them one after another without waiting for the poll loop).
 * They are stored in arrival order, except that a message retried after a
 * transient error (deadlock, serialization failure) can land after the
 * ones that followed it.
 *
 * The offline timer lives here too: every --offline-check-interval seconds
 * SELECT fleet_mark_offline(<offline-after seconds>), idempotent SQL, so
 * several bridges never double-act.
 */


#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <mosquitto.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>

#include "bridge.h"
#include "fleet_sig.h"


#define INGEST_MAX_INFLIGHT      8
#define INGEST_RETRY_MS          1000   /* server unavailable: retry after */
#define INGEST_TRANSIENT_TRIES   5      /* deadlocks etc.: then dropped */
#define INGEST_WARN_EVERY_MS     60000
#define INGEST_WARN_PER_MINUTE   100    /* over all topics */
#define INGEST_BACKLOG_MS        2000   /* offline check waits for backlog */
#define INGEST_LOG_TOPIC_MAX     200


enum ingest_kind {
    KIND_STREAMING,
    KIND_SENSOR,
    KIND_EVENT,
    KIND_STATUS,
    KIND_ACK,
    KIND_IMAGE
};

static const struct {
    const char  *name;          /* topic level, "" for the camera topic */
    const char  *sql;
} kinds[] = {
    { "streaming", "SELECT fleet_ingest_streaming($1, $2::jsonb)" },
    { "sensor",    "SELECT fleet_ingest_sensor($1, $2::jsonb)" },
    { "event",     "SELECT fleet_ingest_event($1, $2::jsonb)" },
    { "status",    "SELECT fleet_ingest_status($1, $2::jsonb)" },
    { "ack",       "SELECT fleet_ingest_ack($1, $2::jsonb)" },
    { "",          "SELECT fleet_ingest_image($1, $2::jsonb)" }
};

#define NKINDS  (sizeof(kinds) / sizeof(kinds[0]))

enum msg_state {
    MSG_QUEUED,                 /* waiting to be sent */
    MSG_INFLIGHT                /* handed to bridge_pg_query */
};

struct ingest_msg {
    struct ingest_msg  *prev;
    struct ingest_msg  *next;
    enum ingest_kind    kind;
    enum msg_state      state;
    int                 tries;          /* transient errors so far */
    int64_t             received_at;
    size_t              size;           /* counted against queue_max_bytes */
    char               *key;            /* device id or camera MAC */
    char               *payload;        /* NUL-terminated JSON text */
    char                data[];         /* key and payload live here */
};

/* how a failed query is handled */
enum pg_err_class {
    PGERR_UNAVAILABLE,          /* server or connection: keep, retry */
    PGERR_TRANSIENT,            /* this attempt: retry a few times */
    PGERR_NO_FUNCTION,          /* SQL function missing: unhandled */
    PGERR_DATA                  /* this message: log, drop, move on */
};


static const char  offline_sql[] = "SELECT fleet_mark_offline($1)";

/* SHA-256 of each camera key, compared in constant time */
static unsigned char  (*camera_digests)[SHA256_DIGEST_LENGTH];

/* topic level holding the MAC in the camera filter (its first '+'), or -1 */
static int  camera_key_level = -1;


/* ---- helpers ---- */

static uint64_t
topic_hash(const char *s)
{
    uint64_t  h = 1469598103934665603ULL;      /* FNV-1a */

    for (; *s != '\0'; s++) {
        h ^= (unsigned char) *s;
        h *= 1099511628211ULL;
    }

    return h;
}


/* may this warning about topic be logged now?  once a minute per topic,
 * and at most INGEST_WARN_PER_MINUTE lines a minute over all topics */
static int
warn_allowed(struct bridge_ingest *ing, const char *topic, int64_t now)
{
    size_t                    i;
    uint64_t                  h = topic_hash(topic);
    struct ingest_warn_slot  *slot, *pick = NULL;

    for (i = 0; i < INGEST_WARN_SLOTS; i++) {
        slot = &ing->warn[i];

        if (slot->logged_at != 0 && slot->topic_hash == h) {
            if (now - slot->logged_at < INGEST_WARN_EVERY_MS) {
                return 0;
            }
            pick = slot;
            break;
        }

        /* a free or expired slot, else the one logged longest ago */
        if (pick == NULL || slot->logged_at == 0
            || (pick->logged_at != 0 && slot->logged_at < pick->logged_at))
        {
            pick = slot;
        }
    }

    if (now - ing->warn_window_at >= INGEST_WARN_EVERY_MS) {
        if (ing->warn_suppressed > 0) {
            blog(BLOG_WARN, "%llu more warnings about dropped messages were "
                 "not logged in the last minute",
                 (unsigned long long) ing->warn_suppressed);
        }
        ing->warn_window_at = now;
        ing->warn_window_n = 0;
        ing->warn_suppressed = 0;
    }

    if (ing->warn_window_n >= INGEST_WARN_PER_MINUTE) {
        ing->warn_suppressed++;
        return 0;
    }

    ing->warn_window_n++;
    pick->topic_hash = h;
    pick->logged_at = now > 0 ? now : 1;

    return 1;
}


static void ingest_warn(struct bridge *b, const char *topic, const char *fmt,
    ...) __attribute__((format(printf, 3, 4)));


static void
ingest_warn(struct bridge *b, const char *topic, const char *fmt, ...)
{
    char     why[512];
    va_list  ap;

    if (!warn_allowed(&b->ing, topic, bridge_now_ms())) {
        return;
    }

    va_start(ap, fmt);
    if (vsnprintf(why, sizeof(why), fmt, ap) < 0) {
        why[0] = '\0';
    }
    va_end(ap);

    blog(BLOG_WARN, "mqtt message on %.*s dropped: %s (logged once a minute "
         "per topic)", INGEST_LOG_TOPIC_MAX, topic, why);
}


/* "server/<key>/<kind>" for log lines about a queued message */
static void
msg_topic(const struct ingest_msg *m, char *buf, size_t size)
{
    if (snprintf(buf, size, m->kind == KIND_IMAGE ? "camera %s" : "server/%s/%s",
                 m->key, kinds[m->kind].name) < 0)
    {
        buf[0] = '\0';
    }
}


/* ---- topics ---- */

/* level n (from 0) of a topic or filter; -1 when it has fewer levels */
static int
topic_level(const char *topic, int n, const char **start, size_t *len)
{
    const char  *p = topic, *slash;

    for (; n > 0; n--) {
        slash = strchr(p, '/');
        if (slash == NULL) {
            return -1;
        }
        p = slash + 1;
    }

    slash = strchr(p, '/');
    *start = p;
    *len = slash ? (size_t) (slash - p) : strlen(p);

    return 0;
}


int
bridge_camera_topic_match(const struct bridge *b, const char *topic)
{
    bool  match = false;

    return mosquitto_topic_matches_sub(b->opt.camera_topic, topic, &match)
               == MOSQ_ERR_SUCCESS && match;
}


/* server/{id}/{kind}: the id and the kind, or -1 for any other shape */
static int
split_server_topic(const char *topic, const char **id, size_t *id_len,
    const char **kind)
{
    const char  *p, *slash;

    if (strncmp(topic, "server/", 7) != 0) {
        return -1;
    }

    p = topic + 7;
    slash = strchr(p, '/');

    if (slash == NULL || strchr(slash + 1, '/') != NULL) {
        return -1;
    }

    *id = p;
    *id_len = (size_t) (slash - p);
    *kind = slash + 1;

    return 0;
}


/* ---- the FIFO ---- */

static void
ingest_maybe_resume(struct bridge *b)
{
    struct bridge_ingest  *ing = &b->ing;

    if (ing->paused && ing->count <= b->opt.queue_max_messages / 2
        && ing->bytes <= b->opt.queue_max_bytes / 2)
    {
        ing->paused = 0;
        blog(ing->pause_logged ? BLOG_INFO : BLOG_DEBUG,
             "ingest queue down to %zu messages: MQTT reads resume",
             ing->count);
        ing->pause_logged = 0;
    }
}


static void
ingest_remove(struct bridge *b, struct ingest_msg *m)
{
    struct bridge_ingest  *ing = &b->ing;

    if (m->prev != NULL) {
        m->prev->next = m->next;
    } else {
        ing->head = m->next;
    }

    if (m->next != NULL) {
        m->next->prev = m->prev;
    } else {
        ing->tail = m->prev;
    }

    ing->count--;
    ing->bytes -= m->size;
    free(m);

    ingest_maybe_resume(b);
}


static void
ingest_enqueue(struct bridge *b, const char *topic, enum ingest_kind kind,
    const char *key, size_t key_len, const void *payload, size_t len)
{
    size_t                 size;
    struct ingest_msg     *m;
    struct bridge_ingest  *ing = &b->ing;

    size = sizeof(*m) + key_len + 1 + len + 1;
    m = malloc(size);

    if (m == NULL) {
        /* already acknowledged to the broker: this one is lost */
        b->cnt.dropped_invalid++;
        blog(BLOG_ERROR, "out of memory: mqtt message on %.*s lost",
             INGEST_LOG_TOPIC_MAX, topic);
        return;
    }

    m->prev = ing->tail;
    m->next = NULL;
    m->kind = kind;
    m->state = MSG_QUEUED;
    m->tries = 0;
    m->received_at = bridge_now_ms();
    m->size = size;
    m->key = m->data;
    memcpy(m->key, key, key_len);
    m->key[key_len] = '\0';
    m->payload = m->key + key_len + 1;
    memcpy(m->payload, payload, len);
    m->payload[len] = '\0';

    if (ing->tail != NULL) {
        ing->tail->next = m;
    } else {
        ing->head = m;
    }
    ing->tail = m;
    ing->count++;
    ing->bytes += size;

    if (!ing->paused && (ing->count >= b->opt.queue_max_messages
                         || ing->bytes >= b->opt.queue_max_bytes))
    {
        /* under steady overload this flips often: one warning a minute */
        ing->paused = 1;
        ing->pause_logged = m->received_at - ing->pause_logged_at
                            >= INGEST_WARN_EVERY_MS || ing->pause_logged_at == 0;
        if (ing->pause_logged) {
            ing->pause_logged_at = m->received_at;
        }
        blog(ing->pause_logged ? BLOG_WARN : BLOG_DEBUG,
             "ingest queue full (%zu messages, %zu bytes): MQTT reads paused "
             "until it drains to half", ing->count, ing->bytes);
    }
}


/* ---- verification ---- */

static int
camera_key_ok(const struct bridge *b, const char *key, size_t len)
{
    size_t         i;
    int            ok = 0;
    unsigned char  got[SHA256_DIGEST_LENGTH];

    /* digests have one length, so the compare is constant-time whatever
     * the key lengths; every configured key is compared */
    SHA256((const unsigned char *) key, len, got);

    for (i = 0; i < b->opt.ncamera_keys; i++) {
        ok |= CRYPTO_memcmp(got, camera_digests[i], sizeof(got)) == 0;
    }

    return ok;
}


/* NULL when the frame may be stored, else the reason; *mac is its MAC */
static const char *
camera_check(const struct bridge *b, json_t *msg, const char **mac,
    int *bad_key)
{
    json_t  *key = json_object_get(msg, "X-API-KEY");
    json_t  *m = json_object_get(msg, "X-MAC-ADDRESS");

    *bad_key = 1;

    if (!json_is_string(key)) {
        return "no X-API-KEY";
    }

    if (!camera_key_ok(b, json_string_value(key), json_string_length(key))) {
        return "wrong X-API-KEY";
    }

    *bad_key = 0;

    if (!json_is_string(m) || json_string_length(m) == 0) {
        return "no X-MAC-ADDRESS";
    }

    *mac = json_string_value(m);

    return NULL;
}


static int
kind_from_name(const char *name, enum ingest_kind *kind)
{
    size_t  i;

    for (i = 0; i < NKINDS; i++) {
        if (kinds[i].name[0] != '\0' && strcmp(name, kinds[i].name) == 0) {
            *kind = (enum ingest_kind) i;
            return 0;
        }
    }

    return -1;
}


void
bridge_ingest_receive(struct bridge *b, const char *topic,
    const void *payload, size_t len, int retained)
{
    int                bad_key;
    size_t             key_len = 0, max;
    json_t            *msg;
    const char        *key = NULL, *kind_name, *why;
    json_error_t       err;
    enum ingest_kind   kind;

    /* a retained message is an old one replayed on (re)subscription */
    if (retained) {
        b->cnt.unhandled++;
        blog(BLOG_DEBUG, "retained message on %.*s ignored",
             INGEST_LOG_TOPIC_MAX, topic);
        return;
    }

    if (bridge_camera_topic_match(b, topic)) {
        kind = KIND_IMAGE;
        max = BRIDGE_MAX_IMAGE_BYTES;

        if (camera_key_level >= 0) {
            (void) topic_level(topic, camera_key_level, &key, &key_len);
        }

    } else if (split_server_topic(topic, &key, &key_len, &kind_name) == 0
               && kind_from_name(kind_name, &kind) == 0)
    {
        max = BRIDGE_MAX_MESSAGE_BYTES;

    } else {
        b->cnt.unhandled++;
        blog(BLOG_DEBUG, "no handler for topic %.*s", INGEST_LOG_TOPIC_MAX,
             topic);
        return;
    }

    if (kind != KIND_IMAGE && key_len == 0) {
        b->cnt.dropped_invalid++;
        ingest_warn(b, topic, "empty device id in the topic");
        return;
    }

    if (len > max) {
        b->cnt.dropped_invalid++;
        ingest_warn(b, topic, "%zu bytes, over the %zu byte limit", len, max);
        return;
    }

    /* PostgreSQL takes text parameters: no NUL byte may hide inside */
    msg = NULL;
    if (memchr(payload, '\0', len) == NULL) {
        msg = json_loadb(payload, len, JSON_DECODE_INT_AS_REAL, &err);
    }

    if (!json_is_object(msg)) {
        json_decref(msg);
        b->cnt.dropped_invalid++;
        ingest_warn(b, topic, "not a JSON object");
        return;
    }

    if (kind == KIND_IMAGE) {
        const char  *mac = NULL;

        why = camera_check(b, msg, &mac, &bad_key);

        if (why != NULL) {
            json_decref(msg);
            if (bad_key) {
                b->cnt.dropped_bad_signature++;
            } else {
                b->cnt.dropped_invalid++;
            }
            ingest_warn(b, topic, "%s", why);
            return;
        }

        /* a filter without '+': the MAC comes from the frame itself */
        if (key == NULL) {
            key = mac;
            key_len = strlen(mac);
        }

        ingest_enqueue(b, topic, kind, key, key_len, payload, len);
        json_decref(msg);
        return;
    }

    json_decref(msg);

    if (b->opt.device_secret == NULL
        || fleet_mqtt_sig_verify(payload, len,
                                 (const unsigned char *) b->opt.device_secret,
                                 strlen(b->opt.device_secret),
                                 b->ing.scratch) != 1)
    {
        b->cnt.dropped_bad_signature++;
        ingest_warn(b, topic, b->opt.device_secret == NULL
                              ? "no device secret configured"
                              : "missing or wrong sha256 signature");
        return;
    }

    ingest_enqueue(b, topic, kind, key, key_len, payload, len);
}


/* ---- storing ---- */

static enum pg_err_class
classify_error(const char *state)
{
    /* libpq's own errors carry no SQLSTATE: the connection is in trouble */
    if (state == NULL || strlen(state) != 5) {
        return PGERR_UNAVAILABLE;
    }

    if (strncmp(state, "08", 2) == 0            /* connection exception */
        || strncmp(state, "53", 2) == 0         /* insufficient resources */
        || strncmp(state, "57P", 3) == 0        /* shutdown, cannot connect */
        || strncmp(state, "58", 2) == 0         /* system error (I/O) */
        || strcmp(state, "25006") == 0)         /* read-only (a standby) */
    {
        return PGERR_UNAVAILABLE;
    }

    if (strcmp(state, "40001") == 0             /* serialization failure */
        || strcmp(state, "40P01") == 0          /* deadlock */
        || strcmp(state, "55P03") == 0          /* lock not available */
        || strcmp(state, "57014") == 0          /* statement timeout */
        || strncmp(state, "XX", 2) == 0)        /* internal error */
    {
        return PGERR_TRANSIENT;
    }

    if (strcmp(state, "42883") == 0) {
        return PGERR_NO_FUNCTION;
    }

    return PGERR_DATA;
}


/* the function answered {"stored": true|false, "reason": "..."} */
static void
ingest_result(struct bridge *b, const struct ingest_msg *m,
    const PGresult *res)
{
    char         topic[INGEST_LOG_TOPIC_MAX + 32];
    json_t      *j = NULL, *reason;
    const char  *v = NULL;

    if (PQntuples(res) == 1 && PQnfields(res) >= 1 && !PQgetisnull(res, 0, 0))
    {
        v = PQgetvalue(res, 0, 0);
        j = json_loads(v, 0, NULL);
    }

    if (json_is_true(json_object_get(j, "stored"))) {
        b->cnt.stored++;
        json_decref(j);
        return;
    }

    b->cnt.dropped_rejected++;

    if (bridge_verbose) {
        msg_topic(m, topic, sizeof(topic));
        reason = json_object_get(j, "reason");
        blog(BLOG_DEBUG, "message on %s not stored: %s", topic,
             json_is_string(reason) ? json_string_value(reason)
                                    : v ? v : "no result");
    }

    json_decref(j);
}


static void
ingest_done(struct bridge *b, const PGresult *res, void *arg)
{
    char                topic[INGEST_LOG_TOPIC_MAX + 32];
    const char         *state, *text;
    int64_t             now;
    struct ingest_msg  *m = arg;

    b->ing.inflight--;

    /* connection lost before the answer: keep it for the next connection
     * (it may have been committed already: at-least-once) */
    if (res == NULL) {
        m->state = MSG_QUEUED;
        return;
    }

    if (PQresultStatus(res) == PGRES_TUPLES_OK) {
        ingest_result(b, m, res);
        ingest_remove(b, m);
        return;
    }

    now = bridge_now_ms();
    state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    text = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    if (text == NULL) {
        text = PQresultErrorMessage(res);
    }
    msg_topic(m, topic, sizeof(topic));

    switch (classify_error(state)) {
    case PGERR_UNAVAILABLE:
        m->state = MSG_QUEUED;
        b->ing.retry_at = now + INGEST_RETRY_MS;
        blog(BLOG_DEBUG, "message on %s kept for a retry: %s", topic, text);
        return;

    case PGERR_TRANSIENT:
        if (++m->tries < INGEST_TRANSIENT_TRIES) {
            m->state = MSG_QUEUED;
            b->ing.retry_at = now + (int64_t) 200 * m->tries;
            blog(BLOG_INFO, "message on %s: %s (SQLSTATE %s); retrying",
                 topic, text, state);
            return;
        }

        b->cnt.dropped_invalid++;
        blog(BLOG_ERROR, "message on %s dropped after %d tries: %s "
             "(SQLSTATE %s)", topic, m->tries, text, state);
        break;

    case PGERR_NO_FUNCTION:
        b->cnt.unhandled++;
        if (m->kind == KIND_ACK) {
            blog(BLOG_DEBUG, "message on %s unhandled: %s", topic, text);
        } else if (warn_allowed(&b->ing, kinds[m->kind].sql, now)) {
            blog(BLOG_ERROR, "message on %s unhandled: %s (is the schema "
                 "migrated?)", topic, text);
        }
        break;

    case PGERR_DATA:
        b->cnt.dropped_invalid++;
        if (warn_allowed(&b->ing, topic, now)) {
            blog(BLOG_WARN, "message on %s not stored: %s (SQLSTATE %s; "
                 "logged once a minute per topic)", topic, text, state);
        }
        break;
    }

    ingest_remove(b, m);
}


/* hand the oldest queued messages to PostgreSQL */
static void
ingest_pump(struct bridge *b, int64_t now)
{
    const char            *params[2];
    struct ingest_msg     *m;
    struct bridge_ingest  *ing = &b->ing;

    if (!bridge_pg_connected(b) || now < ing->retry_at) {
        return;
    }

    for (m = ing->head; m != NULL && ing->inflight < INGEST_MAX_INFLIGHT;
         m = m->next)
    {
        if (m->state != MSG_QUEUED) {
            continue;
        }

        params[0] = m->key;
        params[1] = m->payload;

        /* marked first: a failed send answers (NULL) inside the call */
        m->state = MSG_INFLIGHT;
        ing->inflight++;

        if (bridge_pg_query(b, kinds[m->kind].sql, 2, params, ingest_done, m)
            != 0)
        {
            m->state = MSG_QUEUED;
            ing->inflight--;
            return;
        }

        if (!bridge_pg_connected(b)) {
            return;
        }
    }
}


/* ---- offline timer ---- */

static void
offline_done(struct bridge *b, const PGresult *res, void *arg)
{
    long long    n;
    const char  *state;

    (void) arg;

    b->ing.offline_busy = 0;

    if (res == NULL) {
        return;
    }

    if (PQresultStatus(res) == PGRES_TUPLES_OK) {
        if (b->ing.offline_failing) {
            blog(BLOG_INFO, "offline check succeeds again");
        }
        b->ing.offline_failing = 0;

        n = (PQntuples(res) == 1 && !PQgetisnull(res, 0, 0))
            ? strtoll(PQgetvalue(res, 0, 0), NULL, 10) : 0;

        if (n > 0) {
            blog(BLOG_INFO, "%lld device%s marked offline (silent for %d s)",
                 n, n == 1 ? "" : "s", b->opt.offline_after_s);
        }
        return;
    }

    state = PQresultErrorField(res, PG_DIAG_SQLSTATE);

    blog(b->ing.offline_failing ? BLOG_DEBUG : BLOG_ERROR,
         "offline check failed: %s%s", PQresultErrorMessage(res),
         state != NULL && strcmp(state, "42883") == 0
             ? " (is the schema migrated?)" : "");
    b->ing.offline_failing = 1;
}


static void
offline_check(struct bridge *b)
{
    char         after[24];
    const char  *params[1];

    if (snprintf(after, sizeof(after), "%d", b->opt.offline_after_s) < 0) {
        return;
    }

    params[0] = after;

    /* set first: a failed send answers (NULL) inside the call */
    b->ing.offline_busy = 1;

    if (bridge_pg_query(b, offline_sql, 1, params, offline_done, NULL) != 0) {
        b->ing.offline_busy = 0;
    }
}


/* ---- loop steps ---- */

int
bridge_ingest_init(struct bridge *b)
{
    size_t       i, len;
    const char  *lvl;
    int          n;

    b->ing.scratch = malloc(BRIDGE_MAX_MESSAGE_BYTES);
    camera_digests = calloc(b->opt.ncamera_keys + 1, sizeof(*camera_digests));

    if (b->ing.scratch == NULL || camera_digests == NULL) {
        blog(BLOG_ERROR, "out of memory");
        return -1;
    }

    for (i = 0; i < b->opt.ncamera_keys; i++) {
        SHA256((const unsigned char *) b->opt.camera_keys[i],
               strlen(b->opt.camera_keys[i]), camera_digests[i]);
    }

    camera_key_level = -1;
    for (n = 0; topic_level(b->opt.camera_topic, n, &lvl, &len) == 0; n++) {
        if (len == 1 && lvl[0] == '+') {
            camera_key_level = n;
            break;
        }
    }

    b->ing.next_offline_at = bridge_now_ms()
        + (int64_t) b->opt.offline_check_interval_s * 1000;

    return 0;
}


int
bridge_ingest_paused(const struct bridge *b)
{
    return b->ing.paused;
}


size_t
bridge_ingest_queue_len(const struct bridge *b)
{
    return b->ing.count;
}


void
bridge_ingest_tick(struct bridge *b, int64_t now)
{
    struct bridge_ingest  *ing = &b->ing;

    ingest_pump(b, now);

    if (!bridge_pg_connected(b) || now < ing->next_offline_at) {
        return;
    }

    ing->next_offline_at = now + (int64_t) b->opt.offline_check_interval_s
                                 * 1000;

    /* messages waiting since before a PostgreSQL outage may well be the
     * ones that keep their devices online: store them first */
    if (ing->head != NULL && now - ing->head->received_at > INGEST_BACKLOG_MS)
    {
        ing->next_offline_at = now + 1000;
        return;
    }

    if (!ing->offline_busy) {
        offline_check(b);
    }
}


void
bridge_ingest_prepare(struct bridge *b, struct pollset *ps, int64_t now)
{
    if (!bridge_pg_connected(b)) {
        return;
    }

    if (b->ing.head != NULL && b->ing.retry_at > now) {
        pollset_wake_at(ps, now, b->ing.retry_at);
    }

    pollset_wake_at(ps, now, b->ing.next_offline_at);
}


void
bridge_ingest_shutdown(struct bridge *b)
{
    struct ingest_msg  *m, *next;

    if (b->ing.count > 0) {
        blog(BLOG_ERROR, "%zu received messages could not be stored before "
             "exit and are lost", b->ing.count);
    }

    for (m = b->ing.head; m != NULL; m = next) {
        next = m->next;
        free(m);
    }

    b->ing.head = b->ing.tail = NULL;
    b->ing.count = 0;
    b->ing.bytes = 0;

    free(b->ing.scratch);
    b->ing.scratch = NULL;
    free(camera_digests);
    camera_digests = NULL;
}
