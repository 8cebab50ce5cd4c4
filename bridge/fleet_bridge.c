/*
 * fleet-bridge: main, options, signals and the poll loop.
 *
 * The loop is modelled on mosquitto's own clients: a single thread, every
 * connection in one poll set, explicit state per connection.  Signals are
 * blocked except inside ppoll(), so a SIGTERM can never slip in between the
 * "should we stop?" check and the wait.
 */

#define _GNU_SOURCE     /* ppoll */

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <mosquitto.h>
#include <openssl/crypto.h>

#include "bridge.h"
#include "fleet_password.h"


int  bridge_verbose;

static volatile sig_atomic_t  stop_signal;
static volatile sig_atomic_t  stop_count;


/* ---- logging ---- */

static const char *const  level_names[] = { "error", "warn", "info", "debug" };


/* one event, one line: newlines and tabs (libpq) become single spaces */
static void
flatten_line(char *s)
{
    char  *out = s, *start = s;
    int    space = 0;

    for (; *s != '\0'; s++) {
        if (*s == '\n' || *s == '\r' || *s == '\t' || *s == ' ') {
            space = 1;
            continue;
        }

        if (space && out != start) {
            *out++ = ' ';
        }

        space = 0;
        *out++ = *s;
    }

    *out = '\0';
}


void
blog(enum blog_level level, const char *fmt, ...)
{
    int        n;
    char       line[4096];
    size_t     len;
    va_list    ap;
    time_t     now;
    struct tm  tm;

    if (level == BLOG_DEBUG && !bridge_verbose) {
        return;
    }

    now = time(NULL);
    gmtime_r(&now, &tm);
    len = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%SZ ", &tm);
    n = snprintf(line + len, sizeof(line) - len, "%s[%d] %s ",
                 BRIDGE_NAME, (int) getpid(), level_names[level]);

    /* the prefix is short; should it still fail, log the message alone */
    if (n < 0 || (size_t) n >= sizeof(line) - len - 1) {
        n = 0;
    }

    len += (size_t) n;

    va_start(ap, fmt);
    /* a cut message is fine (one byte is kept for the "\n"); a failed one
     * leaves the buffer undefined, so only the prefix is logged */
    if (vsnprintf(line + len, sizeof(line) - len - 1, fmt, ap) < 0) {
        line[len] = '\0';
    }
    va_end(ap);

    flatten_line(line + len);
    len = strlen(line);
    line[len++] = '\n';

    /* one write(2) per line, so concurrent writers never interleave */
    if (write(STDERR_FILENO, line, len) < 0) {
        /* nowhere left to report it */
    }
}


/* ---- time, backoff, poll set ---- */

int64_t
bridge_now_ms(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);

    return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}


int64_t
backoff_next_delay(struct backoff *bo)
{
    int64_t  base, jitter;

    base = bo->base_ms ? bo->base_ms : BRIDGE_BACKOFF_MIN_MS;

    /* jitter spreads the reconnects of many bridges after a broker restart */
    jitter = base / 5;

    bo->base_ms = base * 2 > BRIDGE_BACKOFF_MAX_MS ? BRIDGE_BACKOFF_MAX_MS
                                                   : base * 2;

    return base - jitter + random() % (2 * jitter + 1);
}


void
backoff_reset(struct backoff *bo)
{
    bo->base_ms = 0;
}


int
pollset_add(struct pollset *ps, int fd, short events)
{
    size_t          cap;
    struct pollfd  *fds;

    if (ps->n == ps->cap) {
        cap = ps->cap ? ps->cap * 2 : 16;
        fds = realloc(ps->fds, cap * sizeof(*fds));

        if (fds == NULL) {
            blog(BLOG_ERROR, "out of memory growing the poll set");
            return -1;
        }

        ps->fds = fds;
        ps->cap = cap;
    }

    ps->fds[ps->n].fd = fd;
    ps->fds[ps->n].events = events;
    ps->fds[ps->n].revents = 0;

    return (int) ps->n++;
}


/* lower the poll timeout so the loop wakes up at "when" */
void
pollset_wake_at(struct pollset *ps, int64_t now, int64_t when)
{
    int64_t  ms = when > now ? when - now : 0;

    if (ms > INT_MAX) {
        ms = INT_MAX;
    }

    if (ps->timeout_ms < 0 || ms < ps->timeout_ms) {
        ps->timeout_ms = (int) ms;
    }
}


/* ---- options ---- */

enum {
    OPT_MQTT_HOST = 256,
    OPT_MQTT_PORT,
    OPT_PG_DSN,
    OPT_SOCKET,
    OPT_DEVICE_SECRET,
    OPT_CAMERA_API_KEY,
    OPT_SHARE_GROUP,
    OPT_CLIENT_ID,
    OPT_HEARTBEAT,
    OPT_CAMERA_TOPIC,
    OPT_OFFLINE_AFTER,
    OPT_OFFLINE_CHECK,
    OPT_QUEUE_MESSAGES,
    OPT_QUEUE_BYTES
};

static const struct option  long_options[] = {
    { "mqtt-host",          required_argument, NULL, OPT_MQTT_HOST },
    { "mqtt-port",          required_argument, NULL, OPT_MQTT_PORT },
    { "pg-dsn",             required_argument, NULL, OPT_PG_DSN },
    { "socket",             required_argument, NULL, OPT_SOCKET },
    { "device-secret",      required_argument, NULL, OPT_DEVICE_SECRET },
    { "camera-api-key",     required_argument, NULL, OPT_CAMERA_API_KEY },
    { "share-group",        required_argument, NULL, OPT_SHARE_GROUP },
    { "client-id",          required_argument, NULL, OPT_CLIENT_ID },
    { "heartbeat-interval", required_argument, NULL, OPT_HEARTBEAT },
    { "camera-topic",       required_argument, NULL, OPT_CAMERA_TOPIC },
    { "offline-after",      required_argument, NULL, OPT_OFFLINE_AFTER },
    { "offline-check-interval", required_argument, NULL, OPT_OFFLINE_CHECK },
    { "queue-max-messages", required_argument, NULL, OPT_QUEUE_MESSAGES },
    { "queue-max-bytes",    required_argument, NULL, OPT_QUEUE_BYTES },
    { "verbose",            no_argument,       NULL, 'v' },
    { "help",               no_argument,       NULL, 'h' },
    { NULL, 0, NULL, 0 }
};


/* 0, or -1 if the text could not be written */
static int
print_usage(FILE *out)
{
    int  n;

    n = fprintf(out,
"usage: fleet-bridge [options]\n"
"       fleet-bridge hash-password [--iterations N] < password-line\n"
"\n"
"  --mqtt-host H            broker host          (FLEET_MQTT_HOST, 127.0.0.1)\n"
"  --mqtt-port P            broker port          (FLEET_MQTT_PORT, 1883)\n"
"  --pg-dsn DSN             libpq conninfo       (FLEET_PG_DSN, required)\n"
"  --socket PATH            Unix socket for nginx workers\n"
"                                          (FLEET_BRIDGE_SOCKET, required)\n"
"  --device-secret S        device signing secret (FLEET_DEVICE_SECRET)\n"
"  --camera-api-key K[,K]   camera X-API-KEY(s); may be repeated\n"
"                                          (FLEET_CAMERA_API_KEY)\n"
"  --camera-topic FILTER    camera frames   (FLEET_CAMERA_TOPIC, server/+/image)\n"
"  --share-group G          MQTT shared-subscription group\n"
"                                          (FLEET_SHARE_GROUP, fleet)\n"
"  --client-id ID           MQTT client id and bridge id, unique per bridge\n"
"                          (FLEET_BRIDGE_ID, fleet-bridge-<hostname>)\n"
"  --heartbeat-interval SEC PostgreSQL heartbeat period (5)\n"
"  --offline-after SEC      silence before a device is offline\n"
"                                          (FLEET_OFFLINE_AFTER_S, 180)\n"
"  --offline-check-interval SEC  offline check period (5)\n"
"  --queue-max-messages N   ingest queue bound (10000)\n"
"  --queue-max-bytes N      ingest queue bound in bytes (67108864)\n"
"  -v, --verbose            debug logging\n"
"  -h, --help               this text\n");

    return (n < 0 || fflush(out) != 0) ? -1 : 0;
}


static const char *
env_or(const char *name, const char *fallback)
{
    const char  *v = getenv(name);

    return (v != NULL && v[0] != '\0') ? v : fallback;
}


/* strict decimal in [min, max]; -1 on anything else */
static long
parse_long(const char *s, long min, long max)
{
    char  *end;
    long   v;

    if (s == NULL || s[0] == '\0') {
        return -1;
    }

    errno = 0;
    v = strtol(s, &end, 10);

    if (errno != 0 || *end != '\0' || v < min || v > max) {
        return -1;
    }

    return v;
}


static char *
default_bridge_id(void)
{
    char   host[256], *id;
    int    n;

    if (gethostname(host, sizeof(host)) != 0) {
        strcpy(host, "localhost");
    }

    host[sizeof(host) - 1] = '\0';

    /* stable across restarts: the broker keeps the persistent session */
    n = snprintf(NULL, 0, "fleet-bridge-%s", host);
    if (n < 0) {
        return NULL;
    }

    id = malloc((size_t) n + 1);

    if (id != NULL
        && snprintf(id, (size_t) n + 1, "fleet-bridge-%s", host) != n)
    {
        free(id);
        id = NULL;
    }

    return id;
}


/* appends the comma-separated keys of list (empty items skipped) */
static int
camera_keys_add(struct bridge_options *o, const char *list)
{
    char         **keys;
    const char    *p, *end;
    size_t         len;

    for (p = list; *p != '\0'; p = *end ? end + 1 : end) {
        end = strchr(p, ',');
        if (end == NULL) {
            end = p + strlen(p);
        }

        len = (size_t) (end - p);
        if (len == 0) {
            continue;
        }

        keys = realloc(o->camera_keys, (o->ncamera_keys + 2) * sizeof(char *));
        if (keys == NULL) {
            return -1;
        }
        o->camera_keys = keys;

        keys[o->ncamera_keys] = strndup(p, len);
        if (keys[o->ncamera_keys] == NULL) {
            return -1;
        }
        keys[++o->ncamera_keys] = NULL;
    }

    return 0;
}


static void
camera_keys_free(struct bridge_options *o)
{
    size_t  i;

    for (i = 0; i < o->ncamera_keys; i++) {
        OPENSSL_cleanse(o->camera_keys[i], strlen(o->camera_keys[i]));
        free(o->camera_keys[i]);
    }

    free(o->camera_keys);
    o->camera_keys = NULL;
    o->ncamera_keys = 0;
}


static void
options_from_env(struct bridge_options *o)
{
    o->mqtt_host = env_or("FLEET_MQTT_HOST", "127.0.0.1");
    o->mqtt_port = (int) parse_long(env_or("FLEET_MQTT_PORT", "1883"),
                                    1, 65535);
    o->pg_dsn = env_or("FLEET_PG_DSN", NULL);
    o->socket_path = env_or("FLEET_BRIDGE_SOCKET", NULL);
    o->device_secret = env_or("FLEET_DEVICE_SECRET", NULL);
    o->camera_topic = env_or("FLEET_CAMERA_TOPIC", "server/+/image");
    o->share_group = env_or("FLEET_SHARE_GROUP", "fleet");
    o->client_id = env_or("FLEET_BRIDGE_ID", NULL);
    o->heartbeat_interval_s = 5;
    o->offline_after_s = (int) parse_long(env_or("FLEET_OFFLINE_AFTER_S",
                                                 "180"), 1, 31536000);
    o->offline_check_interval_s = 5;
    o->queue_max_messages = BRIDGE_QUEUE_MAX_MESSAGES;
    o->queue_max_bytes = BRIDGE_QUEUE_MAX_BYTES;
}


/* strict decimal seconds option into *out; -1 after logging */
static int
option_seconds(const char *name, const char *arg, long max, int *out)
{
    long  v = parse_long(arg, 1, max);

    if (v < 0) {
        blog(BLOG_ERROR, "--%s: want 1..%ld seconds, got %s", name, max, arg);
        return -1;
    }

    *out = (int) v;

    return 0;
}


/* returns 0, 1 for --help, -1 on a bad option */
static int
options_from_argv(struct bridge_options *o, int argc, char **argv)
{
    int    c, keys_from_argv = 0;
    long   v;

    while ((c = getopt_long(argc, argv, "vh", long_options, NULL)) != -1) {
        switch (c) {
        case OPT_MQTT_HOST:      o->mqtt_host = optarg; break;
        case OPT_PG_DSN:         o->pg_dsn = optarg; break;
        case OPT_SOCKET:         o->socket_path = optarg; break;
        case OPT_DEVICE_SECRET:  o->device_secret = optarg; break;
        case OPT_CAMERA_TOPIC:   o->camera_topic = optarg; break;
        case OPT_SHARE_GROUP:    o->share_group = optarg; break;
        case OPT_CLIENT_ID:      o->client_id = optarg; break;
        case 'v':                bridge_verbose = 1; break;
        case 'h':                return 1;

        case OPT_CAMERA_API_KEY:
            /* options win over the environment: its keys go */
            if (!keys_from_argv) {
                camera_keys_free(o);
                keys_from_argv = 1;
            }
            if (camera_keys_add(o, optarg) != 0) {
                blog(BLOG_ERROR, "out of memory");
                return -1;
            }
            break;

        case OPT_OFFLINE_AFTER:
            if (option_seconds("offline-after", optarg, 31536000,
                               &o->offline_after_s) != 0)
            {
                return -1;
            }
            break;

        case OPT_OFFLINE_CHECK:
            if (option_seconds("offline-check-interval", optarg, 86400,
                               &o->offline_check_interval_s) != 0)
            {
                return -1;
            }
            break;

        case OPT_QUEUE_MESSAGES:
            v = parse_long(optarg, 1, 100000000);
            if (v < 0) {
                blog(BLOG_ERROR, "--queue-max-messages: want 1..100000000, "
                     "got %s", optarg);
                return -1;
            }
            o->queue_max_messages = (size_t) v;
            break;

        case OPT_QUEUE_BYTES:
            v = parse_long(optarg, 4L * 1024 * 1024, LONG_MAX);
            if (v < 0) {
                blog(BLOG_ERROR, "--queue-max-bytes: want at least 4194304 "
                     "(two camera frames), got %s", optarg);
                return -1;
            }
            o->queue_max_bytes = (size_t) v;
            break;

        case OPT_MQTT_PORT:
            o->mqtt_port = (int) parse_long(optarg, 1, 65535);
            if (o->mqtt_port < 0) {
                blog(BLOG_ERROR, "--mqtt-port: not a port number: %s", optarg);
                return -1;
            }
            break;

        case OPT_HEARTBEAT:
            o->heartbeat_interval_s = (int) parse_long(optarg, 1, 86400);
            if (o->heartbeat_interval_s < 0) {
                blog(BLOG_ERROR, "--heartbeat-interval: want 1..86400 "
                     "seconds, got %s", optarg);
                return -1;
            }
            break;

        default:
            return -1;
        }
    }

    if (optind < argc) {
        blog(BLOG_ERROR, "unexpected argument: %s", argv[optind]);
        return -1;
    }

    return 0;
}


static int
utf8_valid(const char *s)
{
    json_t  *j = json_string(s);

    json_decref(j);

    return j != NULL;
}


/* only the syntax: the server may well be down at start */
static int
pg_dsn_valid(const char *dsn)
{
    char              *err = NULL;
    PQconninfoOption  *opts = PQconninfoParse(dsn, &err);

    /* err may quote part of the string, password included: not logged */
    PQfreemem(err);
    PQconninfoFree(opts);

    return opts != NULL;
}


static int
options_validate(const struct bridge_options *o)
{
    if (o->mqtt_port < 0) {
        blog(BLOG_ERROR, "FLEET_MQTT_PORT is not a port number");
        return -1;
    }

    if (o->offline_after_s < 0) {
        blog(BLOG_ERROR, "FLEET_OFFLINE_AFTER_S: want 1..31536000 seconds");
        return -1;
    }

    if (o->pg_dsn == NULL) {
        blog(BLOG_ERROR, "no database: set --pg-dsn or FLEET_PG_DSN");
        return -1;
    }

    /* a subscription filter of its own (not a shared one), '+' for the
     * MAC level; '#' would swallow device topics */
    if (mosquitto_sub_topic_check(o->camera_topic) != MOSQ_ERR_SUCCESS
        || strchr(o->camera_topic, '#') != NULL
        || strncmp(o->camera_topic, "$", 1) == 0
        || !utf8_valid(o->camera_topic))
    {
        blog(BLOG_ERROR, "camera topic must be an MQTT filter without '#' "
             "or '$share/', e.g. server/+/image: %s", o->camera_topic);
        return -1;
    }

    if (!pg_dsn_valid(o->pg_dsn)) {
        blog(BLOG_ERROR, "the database DSN is not a valid libpq connection "
             "string");
        return -1;
    }

    if (o->socket_path == NULL) {
        blog(BLOG_ERROR, "no socket path: set --socket or FLEET_BRIDGE_SOCKET");
        return -1;
    }

    /* a group name is a single topic level (MQTT 5, 4.8.2) */
    if (o->share_group[0] == '\0' || strpbrk(o->share_group, "/+#") != NULL) {
        blog(BLOG_ERROR, "share group must be one topic level without "
             "'/', '+' or '#': %s", o->share_group);
        return -1;
    }

    if (strlen(o->share_group) > BRIDGE_SHARE_GROUP_MAX) {
        blog(BLOG_ERROR, "share group longer than %d bytes",
             BRIDGE_SHARE_GROUP_MAX);
        return -1;
    }

    if (o->client_id == NULL || o->client_id[0] == '\0') {
        blog(BLOG_ERROR, "cannot build a default bridge id");
        return -1;
    }

    /* it goes into MQTT CONNECT and JSON replies, both UTF-8 only */
    if (!utf8_valid(o->client_id)) {
        blog(BLOG_ERROR, "bridge id is not valid UTF-8");
        return -1;
    }

    return 0;
}


/* ---- hash-password subcommand ---- */

static int
cmd_hash_password(int argc, char **argv)
{
    char     *line = NULL, out[FLEET_PASSWORD_HASH_MAX];
    size_t    cap = 0;
    ssize_t   len;
    long      iterations = FLEET_PASSWORD_DEFAULT_ITERATIONS;
    int       rc = 1;

    if (argc == 3 && strcmp(argv[1], "--iterations") == 0) {
        iterations = parse_long(argv[2], 1, 100000000);
    } else if (argc != 1) {
        iterations = -1;
    }

    if (iterations < 0) {
        (void) fprintf(stderr, "usage: fleet-bridge hash-password "
                       "[--iterations N] < password-line\n");
        return 2;
    }

    len = getline(&line, &cap, stdin);

    if (len < 0) {
        (void) fprintf(stderr, "fleet-bridge hash-password: no password on "
                       "stdin\n");
        free(line);
        return 1;
    }

    if (len > 0 && line[len - 1] == '\n') {
        line[--len] = '\0';
    }

    if (len == 0) {
        (void) fprintf(stderr, "fleet-bridge hash-password: empty password\n");

    } else if (fleet_password_hash(line, (size_t) len, (unsigned) iterations,
                                   out, sizeof(out)) != 0)
    {
        (void) fprintf(stderr, "fleet-bridge hash-password: hashing failed\n");

    } else {
        rc = (printf("%s\n", out) >= 0 && fflush(stdout) == 0) ? 0 : 1;
    }

    OPENSSL_cleanse(line, cap);
    free(line);

    return rc;
}


/* ---- signals ---- */

static void
on_stop_signal(int sig)
{
    stop_signal = sig;
    stop_count++;
}


/* blocks SIGTERM/SIGINT; *wait_mask is the mask to use inside ppoll() */
static void
install_signals(sigset_t *wait_mask)
{
    struct sigaction  sa;
    sigset_t          block;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);

    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    sigprocmask(SIG_BLOCK, &block, wait_mask);
    sigdelset(wait_mask, SIGTERM);
    sigdelset(wait_mask, SIGINT);
}


/* ---- the loop ---- */

static void
prepare_iteration(struct bridge *b, struct pollset *ps, int64_t now)
{
    ps->n = 0;
    ps->timeout_ms = -1;

    bridge_sock_prepare(b, ps, now);
    bridge_mqtt_prepare(b, ps, now);
    bridge_pg_prepare(b, ps, now);
    bridge_ingest_prepare(b, ps, now);
    bridge_commands_prepare(b, ps, now);
    bridge_payments_prepare(b, ps, now);
}


/*
 * SIGTERM/SIGINT: MQTT reads stop and the loop runs on until the ingest
 * queue is in PostgreSQL, for at most BRIDGE_DRAIN_TIMEOUT_MS (a second
 * signal ends it at once).  1 when the loop should end.
 */
static int
drain_done(struct bridge *b, int64_t now, int64_t *deadline)
{
    if (!stop_signal) {
        return 0;
    }

    if (!b->draining) {
        b->draining = 1;
        *deadline = now + BRIDGE_DRAIN_TIMEOUT_MS;
        blog(BLOG_INFO, "%s received, shutting down (%zu queued messages to "
             "store first)", stop_signal == SIGINT ? "SIGINT" : "SIGTERM",
             bridge_ingest_queue_len(b));
    }

    if (bridge_ingest_queue_len(b) == 0) {
        return 1;
    }

    if (stop_count > 1 || now >= *deadline) {
        blog(BLOG_WARN, "%s: giving up on storing the ingest queue",
             stop_count > 1 ? "second signal" : "flush timed out");
        return 1;
    }

    return 0;
}


static int
run_loop(struct bridge *b, const sigset_t *wait_mask)
{
    int              n;
    int64_t          now, deadline = 0;
    struct pollset   ps;
    struct timespec  ts, *tsp;

    memset(&ps, 0, sizeof(ps));

    for ( ;; ) {
        now = bridge_now_ms();

        if (drain_done(b, now, &deadline)) {
            break;
        }

        bridge_mqtt_tick(b, now);
        bridge_pg_tick(b, now);
        bridge_ingest_tick(b, now);
        bridge_commands_tick(b, now);
        bridge_payments_tick(b, now);
        prepare_iteration(b, &ps, now);

        if (b->draining) {
            pollset_wake_at(&ps, now, deadline);
        }

        tsp = NULL;
        if (ps.timeout_ms >= 0) {
            ts.tv_sec = ps.timeout_ms / 1000;
            ts.tv_nsec = (long) (ps.timeout_ms % 1000) * 1000000;
            tsp = &ts;
        }

        n = ppoll(ps.fds, ps.n, tsp, wait_mask);

        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }

            blog(BLOG_ERROR, "poll: %s", strerror(errno));
            free(ps.fds);
            return -1;
        }

        now = bridge_now_ms();
        bridge_sock_dispatch(b, &ps, now);
        bridge_mqtt_dispatch(b, &ps, now);
        bridge_pg_dispatch(b, &ps, now);
    }

    free(ps.fds);

    return 0;
}


static void
log_startup(const struct bridge_options *o)
{
    blog(BLOG_INFO, "starting: bridge id %s, mqtt %s:%d, share group %s, "
         "socket %s, heartbeat %ds, offline after %ds (checked every %ds), "
         "camera topic %s, device secret %s, camera keys %zu, queue %zu "
         "messages / %zu bytes",
         o->client_id, o->mqtt_host, o->mqtt_port, o->share_group,
         o->socket_path, o->heartbeat_interval_s, o->offline_after_s,
         o->offline_check_interval_s, o->camera_topic,
         o->device_secret ? "set" : "not set", o->ncamera_keys,
         o->queue_max_messages, o->queue_max_bytes);
}


/* everything options_* allocated */
static void
options_free(struct bridge_options *o, char *default_id)
{
    camera_keys_free(o);
    free(default_id);
}


int
main(int argc, char **argv)
{
    int             rc;
    char           *default_id = NULL;
    const char     *env_keys;
    sigset_t        wait_mask;
    struct bridge   b;

    if (argc > 1 && strcmp(argv[1], "hash-password") == 0) {
        return cmd_hash_password(argc - 1, argv + 1);
    }

    memset(&b, 0, sizeof(b));
    options_from_env(&b.opt);

    env_keys = env_or("FLEET_CAMERA_API_KEY", NULL);
    if (env_keys != NULL && camera_keys_add(&b.opt, env_keys) != 0) {
        blog(BLOG_ERROR, "out of memory");
        options_free(&b.opt, NULL);
        return 1;
    }

    rc = options_from_argv(&b.opt, argc, argv);
    if (rc > 0) {
        options_free(&b.opt, NULL);
        return print_usage(stdout) == 0 ? 0 : 1;
    }

    if (rc < 0) {
        options_free(&b.opt, NULL);
        (void) fprintf(stderr, "see: fleet-bridge --help\n");
        return 2;
    }

    if (b.opt.client_id == NULL) {
        b.opt.client_id = default_id = default_bridge_id();
    }

    if (options_validate(&b.opt) != 0) {
        options_free(&b.opt, default_id);
        return 2;
    }

    srandom((unsigned) time(NULL) ^ ((unsigned) getpid() << 16));
    install_signals(&wait_mask);
    log_startup(&b.opt);

    mosquitto_lib_init();
    bridge_mqtt_init(&b);
    bridge_pg_init(&b);

    if (bridge_ingest_init(&b) != 0 || bridge_sock_open(&b) != 0) {
        bridge_ingest_shutdown(&b);
        mosquitto_lib_cleanup();
        options_free(&b.opt, default_id);
        return 1;
    }

    rc = run_loop(&b, &wait_mask);

    /* order matters: stop accepting and answer clients before MQTT goes;
     * PostgreSQL answers the queries still queued (NULL) before the
     * ingest queue they point into is freed */
    bridge_sock_shutdown(&b);
    bridge_mqtt_shutdown(&b);
    bridge_pg_shutdown(&b);
    bridge_ingest_shutdown(&b);
    bridge_commands_shutdown(&b);
    bridge_payments_shutdown(&b);

    mosquitto_lib_cleanup();
    blog(BLOG_INFO, "stopped (mqtt in %llu, out %llu, stored %llu, dropped: "
         "bad signature %llu, invalid %llu, rejected %llu; unhandled %llu; "
         "commands published %llu, sent %llu; payment statuses published "
         "%llu, sent %llu; payments expired %llu)",
         (unsigned long long) b.mqtt_in, (unsigned long long) b.mqtt_out,
         (unsigned long long) b.cnt.stored,
         (unsigned long long) b.cnt.dropped_bad_signature,
         (unsigned long long) b.cnt.dropped_invalid,
         (unsigned long long) b.cnt.dropped_rejected,
         (unsigned long long) b.cnt.unhandled,
         (unsigned long long) b.cmd.published,
         (unsigned long long) b.cmd.sent,
         (unsigned long long) b.pay.published,
         (unsigned long long) b.pay.sent,
         (unsigned long long) b.pay.expired);
    options_free(&b.opt, default_id);

    return rc == 0 ? 0 : 1;
}
