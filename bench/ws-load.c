/*
 * ws-load: WebSocket subscriber load generator for bench/ws.pl.
 *
 * One thread, one epoll set: opens N RFC 6455 client connections over plain
 * TCP (at a bounded rate, a bounded number of handshakes in flight), then
 * reads frames.  Server frames are unmasked; 16/64-bit lengths, pings
 * (answered with a masked pong), close frames (answered, counted) and
 * fragmented messages are handled.  For every data message the first JSON
 * number after "value": is taken as its publish time (microseconds since the
 * Unix epoch, CLOCK_REALTIME, set by the publisher): latency = now - value
 * goes into a histogram.
 *
 * Cheap per message: one shared 1 MiB read buffer, frames parsed in place;
 * a connection only keeps the tail of a frame cut by a read.
 *
 * Phases: SIGHUP, or once data messages have arrived a pause longer than
 * -i, ends the phase; one line is printed and the counters restart:
 *   phase=1 connected=1000 messages=100000 data=100000 elapsed=9.98 rate=10020
 *       p50_ms=.. p99_ms=.. max_ms=.. closes=0 lost=0
 * (rate = data messages / time from the phase's first to its last one).
 *
 *   cc -O2 bench/ws-load.c -o build/bench/ws-load
 *   ws-load -p PORT -u '/sub/room' -n 1000 [-H 'Authorization: Bearer ..']
 *           [-R ready-file] [-C counter-file] [-d max-seconds] [-e expect]
 *
 * -E TOKEN, -J ROOM: Socket.IO mode (bench/sio.pl): each connection speaks
 * Engine.IO 4 / Socket.IO 5 over the WebSocket: on the open packet "0{...}"
 * it sends 40{"token":TOKEN}, on the CONNECT answer "40..." it sends
 * 42["join_room",{"room":ROOM}], answers the server's "2" pings with "3",
 * and counts "42[...]" event packets as data messages.
 *
 * --counter-file: a 64-byte file, mapped shared, holding little-endian
 * uint64 counters (data messages in total, connections open, closes) that a
 * publisher reads to pace itself on what was delivered.
 */

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define RBUF_SIZE       (1u << 20)
#define MAX_FRAME_KEEP  (256u * 1024)   /* larger frames are skipped, not kept */
#define MAX_HS_BYTES    16384
#define MAX_EVENTS      1024

/* histogram: 10 us steps to 100 ms, then 1 ms steps to 100 s */
#define H_FINE          10000
#define H_COARSE        99900
#define H_BUCKETS       (H_FINE + H_COARSE + 1)

enum { C_FREE, C_CONNECTING, C_HANDSHAKE, C_OPEN, C_DONE };

typedef struct {
    int       fd;
    uint8_t   state;
    uint8_t   in_msg;           /* inside a fragmented message */
    uint8_t   skip_op;          /* opcode of the frame being skipped */
    uint8_t   skip_fin;
    uint32_t  len, cap;         /* kept bytes: handshake or a frame's head */
    char     *buf;
    uint64_t  skip;             /* payload bytes of a big frame still to skip */
    uint32_t  req_off;          /* handshake bytes written */
} conn_t;

static const char *o_host = "127.0.0.1";
static int         o_port = 80;
static const char *o_path = "/";
static long        o_n = 1;
static double      o_duration = 120;
static double      o_rate = 2000;       /* connects per second */
static long        o_inflight = 256;    /* handshakes at once */
static double      o_conn_timeout = 60; /* for the whole connect phase */
static const char *o_ready;
static const char *o_counter;
static double      o_idle = 1.0;
static long long   o_expect = -1;
static int         o_verbose;
static int         o_pdeath;
static long        o_batch_us;
static char        o_headers[8192];
static const char *o_eio_token;       /* Socket.IO mode */
static const char *o_eio_room = "dashboard";

static conn_t     *conns;
static int         ep;
static char       *req;
static size_t      req_len;
static unsigned char *rbuf;

static volatile sig_atomic_t stop_sig;
static volatile sig_atomic_t batching;
static volatile sig_atomic_t end_req;

/* counters */
static long      started, connecting, open_now, failed, disconnected, closes;
static long      ever_open;
static long long total_data, total_msgs;
static long long ph_msgs, ph_data, ph_closes, ph_reads, ph_waits;
static int64_t   ph_first, ph_last, ph_max, ph_seen;
static uint64_t *hist;
static long long hist_n;
static int       phase_no;
static char      first_error[256];
static volatile uint64_t *shared_ctr;

static int64_t now_us;

static int64_t
realtime_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static double
mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void
note_error(const char *fmt, const char *a, long b)
{
    if (first_error[0] == '\0') {
        snprintf(first_error, sizeof(first_error), fmt, a, b);
        for (char *p = first_error; *p; p++) {
            if (*p == ' ' || *p == '\r' || *p == '\n' || *p == '\t') {
                *p = '_';
            }
        }
    }
}

static void
publish_counters(void)
{
    if (shared_ctr) {
        shared_ctr[0] = (uint64_t) total_data;
        shared_ctr[1] = (uint64_t) open_now;
        shared_ctr[2] = (uint64_t) closes;
        shared_ctr[3] = (uint64_t) (failed + disconnected);
    }
}

static void
hist_add(int64_t lat)
{
    size_t b;

    if (lat < 0) {
        lat = 0;
    }
    if (lat > ph_max) {
        ph_max = lat;
    }
    if (lat < 100000) {
        b = (size_t) (lat / 10);
    } else if (lat < 100000000) {
        b = H_FINE + (size_t) ((lat - 100000) / 1000);
    } else {
        b = H_BUCKETS - 1;
    }
    hist[b]++;
    hist_n++;
}

/* the upper edge of the bucket holding quantile q, in ms */
static double
hist_q(double q)
{
    long long want, seen = 0;
    size_t b;

    if (hist_n == 0) {
        return -1;
    }
    want = (long long) (q * (double) hist_n);
    if (want >= hist_n) {
        want = hist_n - 1;
    }
    for (b = 0; b < H_BUCKETS; b++) {
        seen += (long long) hist[b];
        if (seen > want) {
            break;
        }
    }
    if (b < H_FINE) {
        return (b + 1) * 0.01;
    }
    if (b < H_FINE + H_COARSE) {
        return 100.0 + (double) (b - H_FINE + 1);
    }
    return ph_max / 1000.0;
}

static void
end_phase(void)
{
    double elapsed = (ph_last - ph_first) / 1e6;

    phase_no++;
    printf("phase=%d connected=%ld messages=%lld data=%lld elapsed=%.3f rate=%.0f "
           "p50_ms=%.3f p99_ms=%.3f max_ms=%.3f samples=%lld closes=%lld lost=%ld "
           "reads=%lld waits=%lld\n",
           phase_no, open_now, ph_msgs, ph_data, elapsed,
           elapsed > 0 ? ph_data / elapsed : 0.0,
           hist_q(0.50), hist_q(0.99), ph_max / 1000.0, hist_n, ph_closes,
           disconnected, ph_reads, ph_waits);
    fflush(stdout);
    memset(hist, 0, H_BUCKETS * sizeof(uint64_t));
    hist_n = 0;
    ph_msgs = ph_data = ph_closes = ph_reads = ph_waits = 0;
    ph_first = ph_last = ph_max = ph_seen = 0;
}

static void
close_conn(conn_t *c, int was_error)
{
    if (c->state == C_DONE || c->state == C_FREE) {
        return;
    }
    if (c->state == C_OPEN) {
        open_now--;
        if (was_error) {
            disconnected++;
        }
    } else {
        connecting--;
        failed++;
    }
    close(c->fd);       /* also leaves the epoll set */
    c->fd = -1;
    c->state = C_DONE;
    free(c->buf);
    c->buf = NULL;
    c->len = c->cap = 0;
    publish_counters();
}

static int
keep(conn_t *c, const unsigned char *p, size_t n)
{
    if (n > c->cap) {
        size_t cap = c->cap ? c->cap : 256;
        char *nb;
        while (cap < n) {
            cap *= 2;
        }
        nb = realloc(c->buf, cap);
        if (nb == NULL) {
            return -1;
        }
        c->buf = nb;
        c->cap = (uint32_t) cap;
    }
    memmove(c->buf, p, n);
    c->len = (uint32_t) n;
    return 0;
}

/* a frame to the server: masked (key 0x12345678 applied to the payload) */
static void
send_control(conn_t *c, int opcode, const unsigned char *payload, size_t len)
{
    unsigned char f[2 + 4 + 125];
    static const unsigned char key[4] = { 0x12, 0x34, 0x56, 0x78 };
    size_t i;

    if (len > 125) {
        len = 125;
    }
    f[0] = (unsigned char) (0x80 | opcode);
    f[1] = (unsigned char) (0x80 | len);
    memcpy(f + 2, key, 4);
    for (i = 0; i < len; i++) {
        f[6 + i] = payload[i] ^ key[i & 3];
    }
    /* a few bytes on an otherwise idle send buffer; a short write is a loss
     * the server will notice, not a reason to queue */
    if (write(c->fd, f, 6 + len) < 0) {
        /* ignored */
    }
}

/* a masked text frame of up to 64 KB: Engine.IO's packets from a client */
static void
send_text(conn_t *c, const char *text, size_t len)
{
    unsigned char f[4 + 4 + 2048];
    static const unsigned char key[4] = { 0x12, 0x34, 0x56, 0x78 };
    size_t i, h;

    if (len > 2048) {
        return;
    }
    f[0] = 0x81;
    if (len < 126) {
        f[1] = (unsigned char) (0x80 | len);
        h = 2;
    } else {
        f[1] = 0x80 | 126;
        f[2] = (unsigned char) (len >> 8);
        f[3] = (unsigned char) len;
        h = 4;
    }
    memcpy(f + h, key, 4);
    for (i = 0; i < len; i++) {
        f[h + 4 + i] = (unsigned char) text[i] ^ key[i & 3];
    }
    if (write(c->fd, f, h + 4 + len) < 0) {
        /* ignored, as for control frames */
    }
}

/* Socket.IO mode: the session's steps; 1 when the packet is an event */
static int
eio_packet(conn_t *c, const unsigned char *p, size_t len)
{
    char buf[2048];
    int n;

    if (len >= 2 && p[0] == '4' && p[1] == '2') {
        return 1;
    }
    if (len >= 1 && p[0] == '0') {
        n = snprintf(buf, sizeof(buf), "40{\"token\":\"%s\"}", o_eio_token);
        send_text(c, buf, (size_t) n);
    } else if (len >= 2 && p[0] == '4' && p[1] == '0') {
        n = snprintf(buf, sizeof(buf), "42[\"join_room\",{\"room\":\"%s\"}]",
                     o_eio_room);
        send_text(c, buf, (size_t) n);
    } else if (len == 1 && p[0] == '2') {
        send_text(c, "3", 1);
    } else if (len >= 2 && p[0] == '4' && p[1] == '4') {
        note_error("connect_error%s%ld", "", 0);
    }
    return 0;
}

/* the first JSON number after "value": (publish time in us), or -1 */
static int64_t
find_value(const unsigned char *p, size_t n)
{
    const unsigned char *e = p + n, *q;
    int64_t v = 0;

    q = memmem(p, n, "\"value\"", 7);
    if (q == NULL) {
        return -1;
    }
    q += 7;
    while (q < e && (*q == ' ' || *q == '\t' || *q == '\r' || *q == '\n')) {
        q++;
    }
    if (q >= e || *q != ':') {
        return -1;
    }
    q++;
    while (q < e && (*q == ' ' || *q == '\t' || *q == '\r' || *q == '\n')) {
        q++;
    }
    if (q >= e || *q < '0' || *q > '9') {
        return -1;
    }
    while (q < e && *q >= '0' && *q <= '9' && v < 1000000000000000000LL / 10) {
        v = v * 10 + (*q++ - '0');
    }
    /* a publish time, not some other sensor value: after 2001 */
    return v > 1000000000000000LL ? v : -1;
}

static void
got_data(const unsigned char *payload, size_t len, int opcode)
{
    int64_t v;

    total_msgs++;
    ph_msgs++;
    ph_seen = now_us;
    if (opcode != 1 || (v = find_value(payload, len)) < 0) {
        return;
    }
    total_data++;
    ph_data++;
    if (o_verbose && total_data == 1) {
        fprintf(stderr, "ws-load: first message (%zu bytes): %.*s\n", len, (int) len, payload);
    }
    if (ph_first == 0) {
        ph_first = now_us;
    }
    ph_last = now_us;
    hist_add(now_us - v);
}

/*
 * Parses frames in p[0..n); returns bytes consumed (the rest is a partial
 * frame), or -1 when the connection was closed.
 */
static ssize_t
parse_frames(conn_t *c, unsigned char *p, size_t n)
{
    size_t off = 0;

    if (c->skip) {
        size_t k = c->skip < n ? (size_t) c->skip : n;
        c->skip -= k;
        off = k;
        if (c->skip == 0 && c->skip_fin && (c->skip_op == 1 || c->skip_op == 2 || c->skip_op == 0)) {
            total_msgs++;       /* too big to look into */
            ph_msgs++;
            c->in_msg = 0;
        }
    }

    while (n - off >= 2) {
        unsigned char *f = p + off;
        int fin = f[0] & 0x80, op = f[0] & 0x0f, masked = f[1] & 0x80;
        uint64_t len = f[1] & 0x7f;
        size_t hl = 2, avail = n - off;
        unsigned char *pl;

        if (len == 126) {
            if (avail < 4) {
                break;
            }
            len = ((uint64_t) f[2] << 8) | f[3];
            hl = 4;
        } else if (len == 127) {
            if (avail < 10) {
                break;
            }
            len = 0;
            for (int i = 0; i < 8; i++) {
                len = (len << 8) | f[2 + i];
            }
            hl = 10;
        }
        if (masked) {
            hl += 4;
        }
        if (avail < hl) {
            break;
        }
        if (len > avail - hl) {
            if (hl + len <= MAX_FRAME_KEEP) {
                break;          /* kept, completed by the next read */
            }
            /* big frame: skip its payload */
            c->skip = len - (avail - hl);
            c->skip_op = (uint8_t) op;
            c->skip_fin = fin ? 1 : 0;
            return (ssize_t) n;
        }
        pl = f + hl;
        if (masked) {
            unsigned char *k = f + hl - 4;
            for (uint64_t i = 0; i < len; i++) {
                pl[i] ^= k[i & 3];
            }
        }
        off += hl + (size_t) len;

        switch (op) {
        case 0x1:
        case 0x2:
        case 0x0:
            if (fin && o_eio_token && !eio_packet(c, pl, (size_t) len)) {
                c->in_msg = 0;
            } else if (fin) {
                /* a fragmented message is looked into by its last frame */
                got_data(pl, (size_t) len, op == 0 ? 1 : op);
                c->in_msg = 0;
            } else {
                c->in_msg = 1;
            }
            break;
        case 0x9:
            send_control(c, 0xA, pl, (size_t) len);
            break;
        case 0xA:
            break;
        case 0x8:
            closes++;
            ph_closes++;
            if (len >= 2) {
                note_error("close_code_%s%ld", "", (long) ((pl[0] << 8) | pl[1]));
            } else {
                note_error("close%s%ld", "", 0);
            }
            send_control(c, 0x8, pl, len >= 2 ? 2 : 0);
            close_conn(c, 1);
            return -1;
        default:
            note_error("bad_opcode%s_%ld", "", op);
            close_conn(c, 1);
            return -1;
        }
    }
    return (ssize_t) off;
}

static void
handshake_input(conn_t *c, unsigned char *p, size_t n)
{
    unsigned char *end = memmem(p, n, "\r\n\r\n", 4);
    size_t hlen;
    ssize_t used;

    if (end == NULL) {
        if (n > MAX_HS_BYTES) {
            note_error("handshake_too_long%s%ld", "", (long) n);
            close_conn(c, 1);
        } else if (keep(c, p, n) != 0) {
            close_conn(c, 1);
        }
        return;
    }
    hlen = (size_t) (end - p) + 4;
    if (n < 12 || memcmp(p, "HTTP/1.1 101", 12) != 0) {
        char line[120];
        size_t l = 0;
        while (l < hlen && l < sizeof(line) - 1 && p[l] != '\r') {
            line[l] = (char) p[l];
            l++;
        }
        line[l] = '\0';
        note_error("handshake:%s%.0ld", line, 0);
        close_conn(c, 0);
        return;
    }
    c->state = C_OPEN;
    connecting--;
    open_now++;
    ever_open++;
    publish_counters();
    c->len = 0;
    used = parse_frames(c, p + hlen, n - hlen);
    if (used >= 0 && (size_t) used < n - hlen && keep(c, p + hlen + used, n - hlen - (size_t) used) != 0) {
        close_conn(c, 1);
    }
}

static void
on_readable(conn_t *c)
{
    for (int round = 0; round < 4; round++) {
        size_t have = c->len;
        ssize_t r, used;
        size_t n;

        if (have) {
            memcpy(rbuf, c->buf, have);
        }
        r = read(c->fd, rbuf + have, RBUF_SIZE - have);
        ph_reads++;
        if (r == 0) {
            if (c->state != C_OPEN) {
                note_error("eof_during_handshake%s%ld", "", 0);
            }
            close_conn(c, 1);
            return;
        }
        if (r < 0) {
            if (errno == EAGAIN || errno == EINTR) {
                return;
            }
            note_error("read_error_errno%s_%ld", "", errno);
            close_conn(c, 1);
            return;
        }
        now_us = realtime_us();
        n = have + (size_t) r;
        c->len = 0;
        if (c->state == C_HANDSHAKE) {
            handshake_input(c, rbuf, n);
            return;
        }
        used = parse_frames(c, rbuf, n);
        if (used < 0) {
            return;
        }
        if ((size_t) used < n && keep(c, rbuf + used, n - (size_t) used) != 0) {
            close_conn(c, 1);
            return;
        }
        if ((size_t) r < RBUF_SIZE - have) {
            return;             /* the socket is drained */
        }
    }
}

static void
send_request(conn_t *c)
{
    while (c->req_off < req_len) {
        ssize_t w = write(c->fd, req + c->req_off, req_len - c->req_off);
        if (w < 0) {
            if (errno == EAGAIN) {
                return;         /* EPOLLOUT stays on */
            }
            note_error("write_error_errno%s_%ld", "", errno);
            close_conn(c, 0);
            return;
        }
        c->req_off += (uint32_t) w;
    }
    struct epoll_event ev = { .events = EPOLLIN, .data.u32 = (uint32_t) (c - conns) };
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
    c->state = C_HANDSHAKE;
}

static void
start_conn(long i, struct sockaddr_in *sa)
{
    conn_t *c = &conns[i];
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;

    started++;
    if (fd < 0) {
        note_error("socket_errno%s_%ld", "", errno);
        failed++;
        c->state = C_DONE;
        return;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    c->fd = fd;
    c->state = C_CONNECTING;
    c->req_off = 0;
    connecting++;
    if (connect(fd, (struct sockaddr *) sa, sizeof(*sa)) < 0 && errno != EINPROGRESS) {
        note_error("connect_errno%s_%ld", "", errno);
        close_conn(c, 0);
        return;
    }
    struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT, .data.u32 = (uint32_t) i };
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
        note_error("epoll_ctl_errno%s_%ld", "", errno);
        close_conn(c, 0);
    }
}

static void
write_ready(double secs)
{
    char line[512];

    snprintf(line, sizeof(line), "ready connected=%ld failed=%ld connect_s=%.3f error=%s\n",
                       open_now, failed, secs, first_error[0] ? first_error : "none");

    fputs(line, stdout);
    fflush(stdout);
    if (o_ready) {
        char tmp[4096];
        FILE *f;
        snprintf(tmp, sizeof(tmp), "%s.tmp", o_ready);
        f = fopen(tmp, "w");
        if (f == NULL || fputs(line, f) < 0 || fclose(f) != 0 || rename(tmp, o_ready) != 0) {
            fprintf(stderr, "ws-load: cannot write %s\n", o_ready);
        }
    }
}

static void
on_signal(int s)
{
    stop_sig = s;
}

static void
on_usr(int s)
{
    if (s == SIGHUP) {
        end_req = 1;
    } else {
        batching = (s == SIGUSR1);
    }
}

static void
usage(void)
{
    fprintf(stderr,
        "usage: ws-load -p PORT [-h HOST] [-u PATH] [-n CONNS] [-H 'Header: v']...\n"
        "  -r RATE        connects per second (2000)\n"
        "  -c INFLIGHT    handshakes in flight at once (256)\n"
        "  -t SECONDS     bound on the whole connect phase (60)\n"
        "  -R FILE        written once every connection is open or failed\n"
        "  -C FILE        shared counters for a publisher (see the source)\n"
        "  -i SECONDS     a pause this long ends a phase (1.0; 0: only SIGHUP does)\n"
        "  -d SECONDS     exit after this long in all (120)\n"
        "  -e COUNT       exit once COUNT data messages have arrived\n"
        "  -b MICROS      while batching (SIGUSR1 on, SIGUSR2 off; -B: from the\n"
        "                 start), sleep this long after a wakeup with few\n"
        "                 connections ready, so that reads carry more frames\n"
        "  -P             exit when the parent process does\n"
        "  -v             progress on stderr\n");
    exit(2);
}

int
main(int argc, char **argv)
{
    struct sockaddr_in sa;
    struct epoll_event evs[MAX_EVENTS];
    double t0, t_ready = 0, last_progress;
    int opt, ready_done = 0;
    size_t hl = 0;

    while ((opt = getopt(argc, argv, "h:p:u:n:d:r:c:t:R:C:i:e:H:vPb:BE:J:")) != -1) {
        switch (opt) {
        case 'h': o_host = optarg; break;
        case 'p': o_port = atoi(optarg); break;
        case 'u': o_path = optarg; break;
        case 'n': o_n = atol(optarg); break;
        case 'd': o_duration = atof(optarg); break;
        case 'r': o_rate = atof(optarg); break;
        case 'c': o_inflight = atol(optarg); break;
        case 't': o_conn_timeout = atof(optarg); break;
        case 'R': o_ready = optarg; break;
        case 'C': o_counter = optarg; break;
        case 'i': o_idle = atof(optarg); break;
        case 'e': o_expect = atoll(optarg); break;
        case 'v': o_verbose = 1; break;
        case 'P': o_pdeath = 1; break;
        case 'b': o_batch_us = atol(optarg); break;
        case 'B': batching = 1; break;
        case 'E': o_eio_token = optarg; break;
        case 'J': o_eio_room = optarg; break;
        case 'H':
            if (hl + strlen(optarg) + 3 > sizeof(o_headers) || strpbrk(optarg, "\r\n")) {
                fprintf(stderr, "ws-load: bad or too many headers\n");
                return 2;
            }
            hl += (size_t) sprintf(o_headers + hl, "%s\r\n", optarg);
            break;
        default: usage();
        }
    }
    if (o_port <= 0 || o_port > 65535 || o_n < 1 || o_n > 1000000 || o_rate <= 0
        || o_inflight < 1 || o_duration <= 0 || o_idle < 0) {
        usage();
    }
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t) o_port);
    if (inet_pton(AF_INET, o_host, &sa.sin_addr) != 1) {
        fprintf(stderr, "ws-load: host must be an IPv4 address\n");
        return 2;
    }

    if (o_pdeath) {
        prctl(PR_SET_PDEATHSIG, SIGTERM);       /* die with the driver */
    }
    signal(SIGPIPE, SIG_IGN);
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    signal(SIGUSR1, on_usr);
    signal(SIGUSR2, on_usr);
    signal(SIGHUP, on_usr);

    {
        struct rlimit rl;
        rlim_t want = (rlim_t) o_n + 64;
        getrlimit(RLIMIT_NOFILE, &rl);
        if (rl.rlim_cur < want) {
            if (rl.rlim_max < want) {
                rl.rlim_max = want;     /* needs root (or CAP_SYS_RESOURCE) */
            }
            rl.rlim_cur = want;
            if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
                fprintf(stderr, "ws-load: cannot raise RLIMIT_NOFILE to %lu: %s\n",
                        (unsigned long) want, strerror(errno));
                return 1;
            }
        }
    }

    if (asprintf(&req, "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                 "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                 "Sec-WebSocket-Version: 13\r\n%s\r\n", o_path, o_host, o_port, o_headers) < 0) {
        return 1;
    }
    req_len = strlen(req);

    conns = calloc((size_t) o_n, sizeof(conn_t));
    rbuf = malloc(RBUF_SIZE);
    hist = calloc(H_BUCKETS, sizeof(uint64_t));
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (conns == NULL || rbuf == NULL || hist == NULL || ep < 0) {
        fprintf(stderr, "ws-load: out of memory\n");
        return 1;
    }
    if (o_counter) {
        int fd = open(o_counter, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0 || ftruncate(fd, 64) != 0
            || (shared_ctr = mmap(NULL, 64, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)) == MAP_FAILED) {
            fprintf(stderr, "ws-load: counter file %s: %s\n", o_counter, strerror(errno));
            return 1;
        }
        close(fd);
        publish_counters();
    }

    t0 = last_progress = mono();
    for (;;) {
        double t = mono();
        int n, timeout;

        if (stop_sig) {
            break;
        }
        if (t - t0 > o_duration) {
            break;
        }
        /* paced connects */
        if (started < o_n) {
            long allowed = (long) ((t - t0) * o_rate) + 1;
            while (started < o_n && started < allowed && connecting < o_inflight) {
                start_conn(started, &sa);
            }
        }
        /* the connect phase is bounded: what is not open by then failed */
        if (!ready_done && t - t0 > o_conn_timeout) {
            for (long i = 0; i < started; i++) {
                if (conns[i].state == C_CONNECTING || conns[i].state == C_HANDSHAKE) {
                    note_error("connect_timeout%s%ld", "", 0);
                    close_conn(&conns[i], 0);
                }
            }
            failed += o_n - started;
            started = o_n;
        }
        if (!ready_done && started == o_n && connecting == 0) {
            ready_done = 1;
            t_ready = t;
            write_ready(t - t0);
        }
        if (o_verbose && t - last_progress >= 1.0) {
            fprintf(stderr, "ws-load: %.0fs open=%ld connecting=%ld failed=%ld data=%lld\n",
                    t - t0, open_now, connecting, failed, total_data);
            last_progress = t;
        }

        timeout = started < o_n ? 2 : 50;
        n = epoll_wait(ep, evs, MAX_EVENTS, timeout);
        ph_waits++;
        if (n < 0 && errno != EINTR) {
            perror("epoll_wait");
            break;
        }
        for (int i = 0; i < n; i++) {
            conn_t *c = &conns[evs[i].data.u32];
            if (c->state == C_CONNECTING) {
                int err = 0;
                socklen_t el = sizeof(err);
                getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
                if (err != 0) {
                    note_error("connect_errno%s_%ld", "", err);
                    close_conn(c, 0);
                    continue;
                }
                if (evs[i].events & EPOLLOUT) {
                    send_request(c);
                }
                continue;
            }
            if (c->state != C_HANDSHAKE && c->state != C_OPEN) {
                continue;
            }
            if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
                on_readable(c);
            }
        }
        publish_counters();
        if (batching && o_batch_us > 0 && n > 0 && n < MAX_EVENTS / 4) {
            /* let more arrive: fewer reads, more frames per read */
            struct timespec ts = { 0, o_batch_us * 1000 };
            nanosleep(&ts, NULL);
        }

        if (end_req) {
            end_req = 0;
            end_phase();
        } else if (o_idle > 0 && (ph_data > 0 || ph_msgs > 0)) {
            int64_t now = realtime_us();
            if (ph_seen && now - ph_seen > (int64_t) (o_idle * 1e6)) {
                end_phase();
            }
        }
        if (o_expect >= 0 && total_data >= o_expect) {
            break;
        }
        if (ready_done && open_now == 0) {
            break;              /* everyone is gone */
        }
    }

    if (ph_data > 0 || ph_msgs > 0) {
        end_phase();
    }
    if (!ready_done) {
        write_ready(mono() - t0);
    }
    printf("final connected=%ld failed=%ld lost=%ld closes=%ld messages=%lld data=%lld "
           "elapsed=%.3f error=%s\n", open_now, failed, disconnected, closes, total_msgs,
           total_data, mono() - (t_ready ? t_ready : t0), first_error[0] ? first_error : "none");
    fflush(stdout);
    return 0;
}
