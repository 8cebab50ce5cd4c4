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
    OPT_HEARTBEAT
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
"  --camera-api-key K       camera X-API-KEY     (FLEET_CAMERA_API_KEY)\n"
"  --share-group G          MQTT shared-subscription group\n"
"                                          (FLEET_SHARE_GROUP, fleet)\n"
"  --client-id ID           MQTT client id and bridge id\n"
"                          (FLEET_BRIDGE_ID, bridge-<hostname>-<pid>)\n"
"  --heartbeat-interval SEC PostgreSQL heartbeat period (5)\n"
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

    n = snprintf(NULL, 0, "bridge-%s-%d", host, (int) getpid());
    if (n < 0) {
        return NULL;
    }

    id = malloc((size_t) n + 1);

    if (id != NULL
        && snprintf(id, (size_t) n + 1, "bridge-%s-%d", host, (int) getpid())
           != n)
    {
        free(id);
        id = NULL;
    }

    return id;
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
    o->camera_api_key = env_or("FLEET_CAMERA_API_KEY", NULL);
    o->share_group = env_or("FLEET_SHARE_GROUP", "fleet");
    o->client_id = env_or("FLEET_BRIDGE_ID", NULL);
    o->heartbeat_interval_s = 5;
}


/* returns 0, 1 for --help, -1 on a bad option */
static int
options_from_argv(struct bridge_options *o, int argc, char **argv)
{
    int  c;

    while ((c = getopt_long(argc, argv, "vh", long_options, NULL)) != -1) {
        switch (c) {
        case OPT_MQTT_HOST:      o->mqtt_host = optarg; break;
        case OPT_PG_DSN:         o->pg_dsn = optarg; break;
        case OPT_SOCKET:         o->socket_path = optarg; break;
        case OPT_DEVICE_SECRET:  o->device_secret = optarg; break;
        case OPT_CAMERA_API_KEY: o->camera_api_key = optarg; break;
        case OPT_SHARE_GROUP:    o->share_group = optarg; break;
        case OPT_CLIENT_ID:      o->client_id = optarg; break;
        case 'v':                bridge_verbose = 1; break;
        case 'h':                return 1;

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

    if (o->pg_dsn == NULL) {
        blog(BLOG_ERROR, "no database: set --pg-dsn or FLEET_PG_DSN");
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
}


static int
run_loop(struct bridge *b, const sigset_t *wait_mask)
{
    int              n;
    int64_t          now;
    struct pollset   ps;
    struct timespec  ts, *tsp;

    memset(&ps, 0, sizeof(ps));

    while (!stop_signal) {
        now = bridge_now_ms();
        bridge_mqtt_tick(b, now);
        bridge_pg_tick(b, now);
        prepare_iteration(b, &ps, now);

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

    blog(BLOG_INFO, "%s received, shutting down",
         stop_signal == SIGINT ? "SIGINT" : "SIGTERM");
    free(ps.fds);

    return 0;
}


static void
log_startup(const struct bridge_options *o)
{
    blog(BLOG_INFO, "starting: bridge id %s, mqtt %s:%d, share group %s, "
         "socket %s, heartbeat %ds, device secret %s, camera key %s",
         o->client_id, o->mqtt_host, o->mqtt_port, o->share_group,
         o->socket_path, o->heartbeat_interval_s,
         o->device_secret ? "set" : "not set",
         o->camera_api_key ? "set" : "not set");
}


int
main(int argc, char **argv)
{
    int             rc;
    char           *default_id = NULL;
    sigset_t        wait_mask;
    struct bridge   b;

    if (argc > 1 && strcmp(argv[1], "hash-password") == 0) {
        return cmd_hash_password(argc - 1, argv + 1);
    }

    memset(&b, 0, sizeof(b));
    options_from_env(&b.opt);

    rc = options_from_argv(&b.opt, argc, argv);
    if (rc > 0) {
        return print_usage(stdout) == 0 ? 0 : 1;
    }

    if (rc < 0) {
        (void) fprintf(stderr, "see: fleet-bridge --help\n");
        return 2;
    }

    if (b.opt.client_id == NULL) {
        b.opt.client_id = default_id = default_bridge_id();
    }

    if (options_validate(&b.opt) != 0) {
        free(default_id);
        return 2;
    }

    srandom((unsigned) time(NULL) ^ ((unsigned) getpid() << 16));
    install_signals(&wait_mask);
    log_startup(&b.opt);

    mosquitto_lib_init();
    bridge_mqtt_init(&b);
    bridge_pg_init(&b);

    if (bridge_sock_open(&b) != 0) {
        mosquitto_lib_cleanup();
        free(default_id);
        return 1;
    }

    rc = run_loop(&b, &wait_mask);

    /* order matters: stop accepting and answer clients before MQTT goes */
    bridge_sock_shutdown(&b);
    bridge_mqtt_shutdown(&b);
    bridge_pg_shutdown(&b);

    mosquitto_lib_cleanup();
    blog(BLOG_INFO, "stopped (mqtt in %llu, out %llu)",
         (unsigned long long) b.mqtt_in, (unsigned long long) b.mqtt_out);
    free(default_id);

    return rc == 0 ? 0 : 1;
}
