/*
 * libFuzzer target: the RFC 6455 frame parser, handshake key, frame
 * header and close payload writers (common/fleet_ws.c).
 *
 * Input: byte 0 picks max_message, byte 1 the chunk sizes, the rest is
 * what a client sends.  The stream is parsed twice, once in chunks and
 * once whole; both must give the same events, and every event must keep
 * the parser's promises.
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fleet_ws.h"


typedef struct {
    uint64_t  hash;         /* of the event sequence */
    unsigned  events;
    int       last;         /* the last event type */
} run_t;


static uint64_t
mix(uint64_t h, const unsigned char *p, size_t len)
{
    size_t  i;

    for (i = 0; i < len; i++) {
        h = (h ^ p[i]) * 0x100000001b3ULL;
    }

    return h;
}


static void
check_event(const fleet_ws_parser_t *ps, fleet_ws_event_e rc,
    const fleet_ws_event_t *ev, size_t max)
{
    if (ev->type != rc) {
        abort();
    }

    switch (rc) {

    case FLEET_WS_MESSAGE:
        if (ev->len > max || ev->data == NULL) {
            abort();
        }

        if (ev->opcode != FLEET_WS_OP_TEXT
            && ev->opcode != FLEET_WS_OP_BINARY)
        {
            abort();
        }

        if (ev->opcode == FLEET_WS_OP_TEXT
            && !fleet_utf8_valid(ev->data, ev->len))
        {
            abort();
        }

        break;

    case FLEET_WS_PING:
    case FLEET_WS_PONG:
        if (ev->len > FLEET_WS_MAX_CONTROL
            || (ev->len && ev->data == NULL))
        {
            abort();
        }

        break;

    case FLEET_WS_CLOSE:
        if (ev->len > FLEET_WS_MAX_CONTROL - 2
            || (ev->len && ev->data == NULL)
            || !fleet_utf8_valid(ev->data, ev->len))
        {
            abort();
        }

        if (ev->close_code == FLEET_WS_CLOSE_NO_STATUS ? ev->len != 0
            : !((ev->close_code >= 1000 && ev->close_code <= 1003)
                || (ev->close_code >= 1007 && ev->close_code <= 1014)
                || (ev->close_code >= 3000 && ev->close_code <= 4999)))
        {
            abort();
        }

        break;

    case FLEET_WS_ERROR:
        if (ev->error == NULL
            || (ev->close_code != FLEET_WS_CLOSE_PROTOCOL
                && ev->close_code != FLEET_WS_CLOSE_BAD_DATA
                && ev->close_code != FLEET_WS_CLOSE_TOO_BIG
                && ev->close_code != FLEET_WS_CLOSE_INTERNAL))
        {
            abort();
        }

        /* a failed parser keeps no message */
        if (ps->msg != NULL) {
            abort();
        }

        break;

    default:
        abort();
    }

    /* the parser's own bounds */
    if (ps->msg_len > max || ps->msg_len > ps->msg_cap
        || ps->ctl_len > FLEET_WS_MAX_CONTROL)
    {
        abort();
    }
}


static void
record(run_t *r, fleet_ws_event_e rc, const fleet_ws_event_t *ev)
{
    unsigned char  h[16];

    memset(h, 0, sizeof(h));
    h[0] = (unsigned char) rc;
    h[1] = (unsigned char) ev->opcode;
    h[2] = (unsigned char) (ev->close_code >> 8);
    h[3] = (unsigned char) ev->close_code;
    memcpy(h + 4, &ev->len, sizeof(ev->len));

    r->hash = mix(r->hash, h, sizeof(h));

    /* reading every byte also lets ASan check ev->data */
    r->hash = mix(r->hash, ev->data ? ev->data : (const unsigned char *) "",
                  ev->len);
    r->events++;
    r->last = rc;
}


/*
 * Parses buf (a private copy: the parser may unmask in place) in chunks:
 * chunk_seed 0 means all at once, else sizes 1..chunk_seed from an LCG.
 */
static void
run(const unsigned char *data, size_t len, size_t max, unsigned chunk_seed,
    run_t *r)
{
    size_t             pos, end, used, clen;
    uint32_t           lcg;
    unsigned char     *buf;
    fleet_ws_event_t   ev;
    fleet_ws_event_e   rc;
    fleet_ws_parser_t  ps;

    memset(r, 0, sizeof(run_t));
    r->hash = 0xcbf29ce484222325ULL;

    buf = malloc(len ? len : 1);
    if (buf == NULL) {
        return;
    }

    memcpy(buf, data, len);

    fleet_ws_parser_init(&ps, max);

    lcg = chunk_seed * 2654435761u + 1;
    pos = 0;

    /* an empty call is harmless at the start */
    rc = fleet_ws_parse(&ps, buf, 0, &used, &ev);
    if (rc != FLEET_WS_AGAIN || used != 0) {
        abort();
    }

    while (pos < len) {
        if (chunk_seed == 0) {
            clen = len - pos;

        } else {
            lcg = lcg * 1103515245u + 12345u;
            clen = 1 + (lcg >> 16) % chunk_seed;

            if (clen > len - pos) {
                clen = len - pos;
            }
        }

        end = pos + clen;

        while (pos < end) {
            rc = fleet_ws_parse(&ps, buf + pos, end - pos, &used, &ev);

            if (used > end - pos) {
                abort();
            }

            if (rc == FLEET_WS_AGAIN) {
                /* AGAIN means the input was used up */
                if (used != end - pos || ev.type != FLEET_WS_AGAIN) {
                    abort();
                }

                pos = end;
                continue;
            }

            /* an event always takes at least one byte */
            if (used == 0) {
                abort();
            }

            pos += used;

            check_event(&ps, rc, &ev, max);
            record(r, rc, &ev);

            if (rc == FLEET_WS_ERROR || rc == FLEET_WS_CLOSE) {
                if (rc == FLEET_WS_ERROR && pos != end) {
                    abort();        /* an error swallows the input */
                }

                /* nothing more is accepted, not even nothing */
                rc = fleet_ws_parse(&ps, buf + pos, len - pos, &used, &ev);
                if (rc != FLEET_WS_ERROR || used != len - pos) {
                    abort();
                }

                goto done;
            }
        }
    }

done:

    fleet_ws_parser_free(&ps);

    if (ps.msg != NULL) {
        abort();
    }

    free(buf);
}


static void
check_key(const unsigned char *p, size_t len)
{
    char    out[FLEET_WS_ACCEPT_LEN + 8];
    size_t  k;

    k = len < 100 ? len : 100;

    memset(out, 'x', sizeof(out));
    fleet_ws_accept(p, k, out);

    if (strlen(out) != FLEET_WS_ACCEPT_LEN || out[27] != '=') {
        abort();
    }

    if (fleet_ws_key_valid(p, k) && (k != 24 || p[22] != '=' || p[23] != '='))
    {
        abort();
    }

    if (len >= 24) {
        (void) fleet_ws_key_valid(p, 24);
    }
}


static void
check_writers(const unsigned char *p, size_t len, int code)
{
    int            i;
    char          *reason;
    size_t         n, rlen, hl;
    uint64_t       flen, got;
    unsigned char  out[FLEET_WS_MAX_CONTROL + 16], h[FLEET_WS_MAX_HEADER];

    /* close payload: a reason cut to fit, at a character boundary */
    rlen = len < 300 ? len : 300;
    reason = malloc(rlen + 1);
    if (reason == NULL) {
        return;
    }

    memcpy(reason, p, rlen);
    reason[rlen] = '\0';
    rlen = strlen(reason);

    n = fleet_ws_close_payload(out, code, reason);

    if (n < 2 || n > FLEET_WS_MAX_CONTROL
        || out[0] != (unsigned char) (code >> 8)
        || out[1] != (unsigned char) code
        || memcmp(out + 2, reason, n - 2) != 0
        || (rlen <= FLEET_WS_MAX_CONTROL - 2 && n - 2 != rlen)
        || (rlen > FLEET_WS_MAX_CONTROL - 2 && n + 3 < FLEET_WS_MAX_CONTROL
            && fleet_utf8_valid((unsigned char *) reason, rlen)))
    {
        abort();
    }

    if (fleet_utf8_valid((unsigned char *) reason, rlen)
        && !fleet_utf8_valid(out + 2, n - 2))
    {
        abort();
    }

    free(reason);

    /* frame header: decodes back to what was asked */
    flen = 0;
    for (i = 0; i < 8 && (size_t) i < len; i++) {
        flen = (flen << 8) | p[i];
    }
    flen >>= (len ? p[0] : 0) & 63;

    hl = fleet_ws_frame_header(h, code & 0xf, flen);

    if ((h[0] & 0xf0) != 0x80 || (h[0] & 0x0f) != (code & 0xf)
        || (h[1] & 0x80))
    {
        abort();
    }

    if (flen < 126) {
        got = h[1];
        if (hl != 2) {
            abort();
        }

    } else if (flen <= 0xffff) {
        got = ((uint64_t) h[2] << 8) | h[3];
        if (hl != 4 || h[1] != 126) {
            abort();
        }

    } else {
        got = 0;
        for (i = 0; i < 8; i++) {
            got = (got << 8) | h[2 + i];
        }
        if (hl != 10 || h[1] != 127) {
            abort();
        }
    }

    if (got != flen) {
        abort();
    }
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t  max;
    run_t   whole, chunked;

    if (size < 2) {
        return 0;
    }

    /* 0x80: 4096; 0xc0: 1 MiB (64-bit lengths pass); else 0..508 */
    if ((data[0] & 0xc0) == 0xc0) {
        max = 1 << 20;

    } else if (data[0] & 0x80) {
        max = 4096;

    } else {
        max = (size_t) (data[0] & 0x7f) * 4;
    }

    run(data + 2, size - 2, max, 0, &whole);

    /* chunk sizes 1..data[1] (0: byte by byte) */
    run(data + 2, size - 2, max, data[1] ? data[1] : 1, &chunked);

    if (whole.events != chunked.events || whole.hash != chunked.hash
        || whole.last != chunked.last)
    {
        abort();
    }

    check_key(data + 2, size - 2);
    check_writers(data + 2, size - 2, (data[0] << 8) | data[1]);

    return 0;
}
