/*
 * fleet-bridge: the MQTT side, libmosquitto driven by our own poll loop
 * (mosquitto_socket, mosquitto_loop_read/_write/_misc, mosquitto_want_write).
 *
 * Each connection attempt gets a fresh mosquitto instance, destroyed when
 * the connection ends.  That way QoS 1 publishes the library still holds
 * after a disconnect are dropped instead of being re-sent on reconnect: the
 * requester has already been told "mqtt disconnected", and the command rows
 * in PostgreSQL, not libmosquitto's memory, decide what gets re-published.
 *
 * Callbacks only record what happened (state, the "lost" flag); tearing the
 * instance down happens in the loop, outside libmosquitto's own call stack.
 *
 * The session is persistent (clean session off, a stable client id): while
 * the bridge is away the broker keeps its subscription and queues the QoS 1
 * messages for it.  Received messages go to bridge_ingest.c, which queues
 * them for PostgreSQL; while that queue is full (or the bridge is flushing
 * it before exit) the socket is not read, so the broker holds the rest.
 */


#include <errno.h>
#include <netdb.h>
#include <sys/ioctl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mosquitto.h>

#include "bridge.h"


#define MQTT_MISC_INTERVAL_MS  1000
#define MQTT_READS_PER_WAKEUP  64       /* packets read per poll round */
#define MQTT_STABLE_MS         10000    /* a connection this old resets */
                                        /* the reconnect backoff */


static const char *
mqtt_strerror(int rc)
{
    if (rc == MOSQ_ERR_ERRNO) {
        return strerror(errno);
    }

    if (rc == MOSQ_ERR_EAI) {
        return gai_strerror(errno);
    }

    if (rc == MOSQ_ERR_KEEPALIVE) {
        return "broker did not answer within the keepalive";
    }

    return mosquitto_strerror(rc);
}


int
bridge_mqtt_connected(const struct bridge *b)
{
    return b->mqtt.state == MQTT_CONNECTED;
}


static void mqtt_mark_lost(struct bridge *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));


/* remember the first reason; the loop tears down and logs it once */
static void
mqtt_mark_lost(struct bridge *b, const char *fmt, ...)
{
    va_list  ap;

    if (!b->mqtt.lost) {
        va_start(ap, fmt);
        /* a cut reason is fine; a failed one is left empty, not garbage */
        if (vsnprintf(b->mqtt.lost_why, sizeof(b->mqtt.lost_why), fmt, ap)
            < 0)
        {
            b->mqtt.lost_why[0] = '\0';
        }
        va_end(ap);
        b->mqtt.lost = 1;
    }
}


/* ---- callbacks (run inside mosquitto_loop_*) ---- */

static void
subscribe_server_topics(struct bridge *b)
{
    int     rc, n, count = 1;
    char    server[256], *camera = NULL;
    char   *filters[2];
    size_t  len;

    /* one shared subscription: every message reaches one bridge of the group */
    n = snprintf(server, sizeof(server), "$share/%s/server/+/+",
                 b->opt.share_group);

    /* the group length is checked at start; a cut filter would subscribe
     * to the wrong topics */
    if (n < 0 || (size_t) n >= sizeof(server)) {
        mqtt_mark_lost(b, "share group name too long for a topic filter");
        return;
    }

    filters[0] = server;

    /* a camera topic outside server/+/+ needs a subscription of its own
     * (one inside it must not get one: it would arrive twice) */
    if (b->mqtt.camera_extra) {
        len = strlen(b->opt.share_group) + strlen(b->opt.camera_topic) + 9;
        camera = malloc(len);
        if (camera == NULL
            || snprintf(camera, len, "$share/%s/%s", b->opt.share_group,
                        b->opt.camera_topic) < 0)
        {
            free(camera);
            mqtt_mark_lost(b, "out of memory");
            return;
        }
        filters[count++] = camera;
    }

    rc = mosquitto_subscribe_multiple(b->mqtt.mosq, NULL, count, filters, 1,
                                      0, NULL);

    if (rc != MOSQ_ERR_SUCCESS) {
        free(camera);
        mqtt_mark_lost(b, "subscribe failed: %s", mqtt_strerror(rc));
        return;
    }

    blog(BLOG_DEBUG, "mqtt subscribing to %s%s%s", server,
         camera ? " and " : "", camera ? camera : "");
    free(camera);
}


/* is the camera filter inside server/+/+ (three levels, "server" first)? */
static int
camera_topic_covered(const char *filter)
{
    const char  *p;
    int          levels = 1;

    if (strncmp(filter, "server/", 7) != 0 || strchr(filter, '#') != NULL) {
        return 0;
    }

    for (p = filter; *p != '\0'; p++) {
        levels += (*p == '/');
    }

    return levels == 3;
}


static void
on_connect(struct mosquitto *mosq, void *ud, int rc)
{
    struct bridge  *b = ud;

    (void) mosq;

    if (rc != 0) {
        /* the library drops the connection next; on_disconnect follows */
        blog(BLOG_WARN, "mqtt broker refused the connection: %s",
             mosquitto_connack_string(rc));
        return;
    }

    /* the backoff is reset only once the connection proved stable: a
     * broker that drops us at once (another client took our client id)
     * must not make us reconnect every second */
    b->mqtt.state = MQTT_CONNECTED;
    b->mqtt.connected_at = bridge_now_ms();
    blog(BLOG_INFO, "mqtt connected to %s:%d as %s (persistent session)",
         b->opt.mqtt_host, b->opt.mqtt_port, b->opt.client_id);

    subscribe_server_topics(b);
}


static void
on_disconnect(struct mosquitto *mosq, void *ud, int rc)
{
    struct bridge  *b = ud;

    (void) mosq;

    if (b->mqtt.stopping) {
        blog(BLOG_INFO, "mqtt disconnected");
        return;
    }

    mqtt_mark_lost(b, "connection lost: %s",
                   rc == 0 ? "closed" : mqtt_strerror(rc));
}


static void
on_subscribe(struct mosquitto *mosq, void *ud, int mid, int qos_count,
    const int *granted_qos)
{
    int  i;

    (void) mosq;
    (void) ud;

    for (i = 0; i < qos_count; i++) {
        if (granted_qos[i] > 2) {
            blog(BLOG_ERROR, "mqtt broker refused the subscription "
                 "(code %d); no device messages will arrive", granted_qos[i]);
            return;
        }
    }

    blog(BLOG_INFO, "mqtt subscribed (mid %d, qos %d)", mid,
         qos_count > 0 ? granted_qos[0] : -1);
}


/* libmosquitto has already sent the PUBACK: from here the bridge alone
 * holds the message (bridge_ingest.c keeps it until PostgreSQL has it) */
static void
on_message(struct mosquitto *mosq, void *ud,
    const struct mosquitto_message *msg)
{
    struct bridge  *b = ud;

    (void) mosq;

    b->mqtt_in++;
    blog(BLOG_DEBUG, "mqtt in #%llu %s (%d bytes, qos %d%s)",
         (unsigned long long) b->mqtt_in, msg->topic, msg->payloadlen,
         msg->qos, msg->retain ? ", retained" : "");

    bridge_ingest_receive(b, msg->topic, msg->payload,
                          msg->payloadlen > 0 ? (size_t) msg->payloadlen : 0,
                          msg->retain);
}


/* QoS 0: the packet was written; QoS 1: the broker sent PUBACK */
static void
on_publish(struct mosquitto *mosq, void *ud, int mid)
{
    struct bridge  *b = ud;

    (void) mosq;

    b->mqtt_out++;

    /* mids are unique per instance: a command's, a payment status's or a
     * socket client's */
    if (!bridge_commands_publish_done(b, mid)
        && !bridge_payments_publish_done(b, mid))
    {
        bridge_sock_publish_done(b, mid);
    }
}


static void
on_log(struct mosquitto *mosq, void *ud, int level, const char *str)
{
    (void) mosq;
    (void) ud;

    if (level & (MOSQ_LOG_ERR | MOSQ_LOG_WARNING)) {
        blog(BLOG_DEBUG, "libmosquitto: %s", str);
    }
}


/* ---- connection lifecycle ---- */

static void
mqtt_destroy_instance(struct bridge *b)
{
    if (b->mqtt.mosq != NULL) {
        mosquitto_destroy(b->mqtt.mosq);
        b->mqtt.mosq = NULL;
    }

    b->mqtt.state = MQTT_IDLE;
    b->mqtt.lost = 0;
}


/* the connection is gone: answer waiting publishers, start over later */
static void
mqtt_teardown(struct bridge *b, int64_t now)
{
    int      brief;
    int64_t  delay;

    brief = b->mqtt.connected_at != 0
            && now - b->mqtt.connected_at < MQTT_STABLE_MS;

    if (b->mqtt.connected_at != 0 && !brief) {
        backoff_reset(&b->mqtt.backoff);
    }

    b->mqtt.connected_at = 0;
    delay = backoff_next_delay(&b->mqtt.backoff);

    blog(BLOG_WARN, "mqtt %s:%d %s%s%s%s; reconnecting in %lld ms",
         b->opt.mqtt_host, b->opt.mqtt_port,
         b->mqtt.lost && b->mqtt.lost_why[0] != '\0' ? b->mqtt.lost_why
                                                       : "connection lost",
         brief ? " soon after connecting (is another client using client "
                 "id " : "",
         brief ? b->opt.client_id : "",
         brief ? "?)" : "",
         (long long) delay);

    mqtt_destroy_instance(b);
    bridge_sock_fail_pending(b, "mqtt disconnected");
    bridge_commands_mqtt_lost(b);
    bridge_payments_mqtt_lost(b);
    b->mqtt.retry_at = now + delay;
}


static struct mosquitto *
mqtt_new_instance(struct bridge *b)
{
    struct mosquitto  *mosq;

    /* clean session off: the broker queues QoS 1 messages while we are
     * away (the client id must be stable and unique per bridge) */
    mosq = mosquitto_new(b->opt.client_id, false, b);
    if (mosq == NULL) {
        blog(BLOG_ERROR, "mosquitto_new: %s", strerror(errno));
        return NULL;
    }

    mosquitto_int_option(mosq, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V311);
    mosquitto_int_option(mosq, MOSQ_OPT_TCP_NODELAY, 1);

    mosquitto_connect_callback_set(mosq, on_connect);
    mosquitto_disconnect_callback_set(mosq, on_disconnect);
    mosquitto_subscribe_callback_set(mosq, on_subscribe);
    mosquitto_message_callback_set(mosq, on_message);
    mosquitto_publish_callback_set(mosq, on_publish);
    mosquitto_log_callback_set(mosq, on_log);

    return mosq;
}


static void
mqtt_start_connect(struct bridge *b, int64_t now)
{
    int  rc;

    b->mqtt.mosq = mqtt_new_instance(b);
    if (b->mqtt.mosq == NULL) {
        mqtt_mark_lost(b, "client setup failed: %s", strerror(errno));
        mqtt_teardown(b, now);
        return;
    }

    /* non-blocking TCP connect; only a host name lookup may block */
    rc = mosquitto_connect_async(b->mqtt.mosq, b->opt.mqtt_host,
                                 b->opt.mqtt_port, BRIDGE_MQTT_KEEPALIVE_S);

    if (rc != MOSQ_ERR_SUCCESS) {
        mqtt_mark_lost(b, "connect failed: %s", mqtt_strerror(rc));
        mqtt_teardown(b, now);
        return;
    }

    b->mqtt.state = MQTT_CONNECTING;
    b->mqtt.next_misc_at = now + MQTT_MISC_INTERVAL_MS;
    blog(BLOG_DEBUG, "mqtt connecting to %s:%d", b->opt.mqtt_host,
         b->opt.mqtt_port);
}


void
bridge_mqtt_init(struct bridge *b)
{
    b->mqtt.mosq = NULL;
    b->mqtt.state = MQTT_IDLE;
    b->mqtt.retry_at = 0;       /* connect on the first tick */
    b->mqtt.pfd = -1;
    b->mqtt.camera_extra = !camera_topic_covered(b->opt.camera_topic);
}


/* reading is stopped while the ingest queue is full or being flushed */
static int
mqtt_reading(const struct bridge *b)
{
    return !b->draining && !bridge_ingest_paused(b);
}


/* ---- loop steps ---- */

void
bridge_mqtt_tick(struct bridge *b, int64_t now)
{
    int  rc;

    if (b->mqtt.mosq == NULL) {
        if (now >= b->mqtt.retry_at && !b->draining) {
            mqtt_start_connect(b, now);
        }
        return;
    }

    if (now < b->mqtt.next_misc_at) {
        return;
    }

    /* keepalive: PINGREQ when idle, drop a broker that stopped answering */
    b->mqtt.next_misc_at = now + MQTT_MISC_INTERVAL_MS;
    rc = mosquitto_loop_misc(b->mqtt.mosq);

    if (rc != MOSQ_ERR_SUCCESS) {
        mqtt_mark_lost(b, "keepalive: %s", mqtt_strerror(rc));
    }

    if (b->mqtt.lost) {
        mqtt_teardown(b, now);
    }
}


void
bridge_mqtt_prepare(struct bridge *b, struct pollset *ps, int64_t now)
{
    int    fd;
    short  events = mqtt_reading(b) ? POLLIN : 0;

    b->mqtt.pfd = -1;

    if (b->mqtt.mosq == NULL) {
        if (!b->draining) {
            pollset_wake_at(ps, now, b->mqtt.retry_at);
        }
        return;
    }

    fd = mosquitto_socket(b->mqtt.mosq);
    if (fd >= 0) {
        if (mosquitto_want_write(b->mqtt.mosq)) {
            events |= POLLOUT;
        }
        /* even with no events: poll still reports POLLHUP/POLLERR */
        b->mqtt.pfd = pollset_add(ps, fd, events);
    }

    pollset_wake_at(ps, now, b->mqtt.next_misc_at);
}


/* read what the socket holds, a bounded number of packets, and stop as
 * soon as the ingest queue fills up */
static void
mqtt_read(struct bridge *b)
{
    int  i, rc, fd, avail;

    for (i = 0; i < MQTT_READS_PER_WAKEUP; i++) {
        rc = mosquitto_loop_read(b->mqtt.mosq, 1);
        if (rc != MOSQ_ERR_SUCCESS) {
            mqtt_mark_lost(b, "read: %s", mqtt_strerror(rc));
            return;
        }

        /* libmosquitto reads straight from the socket, no buffer of its
         * own (no TLS): the kernel says whether another packet may be
         * there */
        fd = mosquitto_socket(b->mqtt.mosq);
        if (b->mqtt.lost || !mqtt_reading(b) || fd < 0
            || ioctl(fd, FIONREAD, &avail) != 0 || avail <= 0)
        {
            return;
        }
    }
}


void
bridge_mqtt_dispatch(struct bridge *b, struct pollset *ps, int64_t now)
{
    int    rc, did_read = 0;
    short  revents;

    if (b->mqtt.pfd < 0 || b->mqtt.mosq == NULL) {
        return;
    }

    revents = ps->fds[b->mqtt.pfd].revents;

    if (!mqtt_reading(b)) {
        /* not reading: the broker holds further messages; a connection
         * that breaks meanwhile is rebuilt (nothing unread was PUBACKed) */
        if (revents & (POLLHUP | POLLERR | POLLNVAL)) {
            mqtt_mark_lost(b, "connection closed");
        }

    } else if (revents & (POLLIN | POLLHUP | POLLERR | POLLNVAL)) {
        did_read = 1;
        mqtt_read(b);
    }

    /* writable, or callbacks run by the read queued packets (SUBSCRIBE) */
    if (!b->mqtt.lost && ((revents & POLLOUT) || did_read)
        && mosquitto_want_write(b->mqtt.mosq)
        && mosquitto_socket(b->mqtt.mosq) >= 0)
    {
        rc = mosquitto_loop_write(b->mqtt.mosq, 1);
        if (rc != MOSQ_ERR_SUCCESS) {
            mqtt_mark_lost(b, "write: %s", mqtt_strerror(rc));
        }
    }

    if (b->mqtt.lost || mosquitto_socket(b->mqtt.mosq) < 0) {
        mqtt_teardown(b, now);
    }
}


/* ---- publishing ---- */

const char *
bridge_mqtt_publish(struct bridge *b, const char *topic, const void *payload,
    size_t len, int qos, int retain, int *mid)
{
    int  rc;

    if (b->mqtt.state != MQTT_CONNECTED || b->mqtt.lost) {
        return "mqtt disconnected";
    }

    if (len > (size_t) 256 * 1024 * 1024) {
        return "payload too large";
    }

    /* outside callbacks libmosquitto writes the packet right away */
    rc = mosquitto_publish(b->mqtt.mosq, mid, topic, (int) len, payload, qos,
                           retain ? true : false);

    switch (rc) {
    case MOSQ_ERR_SUCCESS:
        return NULL;
    case MOSQ_ERR_INVAL:
        return "invalid topic or arguments";
    case MOSQ_ERR_MALFORMED_UTF8:
        return "topic is not valid UTF-8";
    case MOSQ_ERR_NO_CONN:
    case MOSQ_ERR_CONN_LOST:
        mqtt_mark_lost(b, "publish: %s", mqtt_strerror(rc));
        return "mqtt disconnected";
    case MOSQ_ERR_PAYLOAD_SIZE:
    case MOSQ_ERR_OVERSIZE_PACKET:
        return "payload too large";
    default:
        blog(BLOG_WARN, "mqtt publish to %s: %s", topic, mqtt_strerror(rc));
        return mosquitto_strerror(rc);
    }
}


/* ---- shutdown ---- */

/* send DISCONNECT; wait at most a second for it to leave */
static void
mqtt_flush_disconnect(struct bridge *b)
{
    int            i;
    struct pollfd  pfd;

    for (i = 0; i < 10; i++) {
        pfd.fd = mosquitto_socket(b->mqtt.mosq);

        if (pfd.fd < 0 || !mosquitto_want_write(b->mqtt.mosq)) {
            return;
        }

        pfd.events = POLLOUT;
        if (poll(&pfd, 1, 100) < 0) {
            return;
        }

        if (mosquitto_loop_write(b->mqtt.mosq, 1) != MOSQ_ERR_SUCCESS) {
            return;
        }
    }
}


void
bridge_mqtt_shutdown(struct bridge *b)
{
    if (b->mqtt.mosq == NULL) {
        return;
    }

    b->mqtt.stopping = 1;

    if (b->mqtt.state == MQTT_CONNECTED
        && mosquitto_disconnect(b->mqtt.mosq) == MOSQ_ERR_SUCCESS)
    {
        mqtt_flush_disconnect(b);
    }

    mqtt_destroy_instance(b);
}
