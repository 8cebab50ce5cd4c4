/*
 * Unit tests: RFC 6455 server side (common/fleet_ws.c): handshake key,
 * the incremental frame parser, frame headers, close payloads, UTF-8.
 */

#include <stdint.h>
#include <stdlib.h>

#include "tap.h"
#include "fleet_ws.h"

#define RFC_KEY     "dGhlIHNhbXBsZSBub25jZQ=="

#define FIN         0x80
#define RSV1        0x40
#define RSV2        0x20
#define RSV3        0x10

/* how a frame's length is written: the shortest form, or a forced one */
#define LEN_AUTO    0
#define LEN_16      126
#define LEN_64      127

#define MAX_EVENTS  16


static const unsigned char  mask_key[4] = { 0x37, 0xfa, 0x21, 0x3d };


/*
 * A client frame: b0 is FIN | RSV | opcode; the payload is masked with
 * mask_key unless masked is 0.  Returns the frame's length.
 */
static size_t
client_frame(unsigned char *out, int b0, const void *payload, size_t len,
    int form, int masked)
{
    size_t                i, n;
    const unsigned char  *p = payload;

    n = 0;
    out[n++] = (unsigned char) b0;

    if (form == LEN_AUTO) {
        form = (len < 126) ? 0 : (len <= 0xffff) ? LEN_16 : LEN_64;
    }

    if (form == LEN_16) {
        out[n++] = (masked ? 0x80 : 0) | 126;
        out[n++] = (unsigned char) (len >> 8);
        out[n++] = (unsigned char) len;

    } else if (form == LEN_64) {
        out[n++] = (masked ? 0x80 : 0) | 127;

        for (i = 0; i < 8; i++) {
            out[n++] = (unsigned char) ((uint64_t) len >> (56 - 8 * i));
        }

    } else {
        out[n++] = (unsigned char) ((masked ? 0x80 : 0) | len);
    }

    if (masked) {
        memcpy(out + n, mask_key, 4);
        n += 4;
    }

    for (i = 0; i < len; i++) {
        out[n + i] = masked ? (p[i] ^ mask_key[i & 3]) : p[i];
    }

    return n + len;
}


/* a close frame's payload from a code and a reason */
static size_t
close_frame(unsigned char *out, int code, const char *reason, size_t rlen)
{
    unsigned char  pl[FLEET_WS_MAX_CONTROL + 10];

    pl[0] = (unsigned char) (code >> 8);
    pl[1] = (unsigned char) code;
    memcpy(pl + 2, reason, rlen);

    return client_frame(out, FIN | FLEET_WS_OP_CLOSE, pl, 2 + rlen,
                        LEN_AUTO, 1);
}


typedef struct {
    fleet_ws_event_e  type;
    int               opcode;
    unsigned char    *data;         /* a copy: the parser's is short-lived */
    size_t            len;
    int               close_code;
} event_t;


typedef struct {
    event_t  ev[MAX_EVENTS];
    int      n;
    int      bad_used;      /* a call consumed more than it was given */
    int      stalled;       /* an event without consuming anything */
    int      again_short;   /* AGAIN without consuming all of its input */
} events_t;


static void
events_free(events_t *es)
{
    int  i;

    for (i = 0; i < es->n; i++) {
        free(es->ev[i].data);
    }

    es->n = 0;
}


/*
 * Feeds a copy of buf to a parser chunk bytes at a time (0: all at once),
 * recording every event, until the input is used up or the parser quits.
 */
static void
feed(fleet_ws_parser_t *ps, const unsigned char *buf, size_t len,
    size_t chunk, events_t *es)
{
    size_t             pos, end, used;
    unsigned char     *copy;
    event_t           *e;
    fleet_ws_event_t   ev;
    fleet_ws_event_e   rc;

    memset(es, 0, sizeof(events_t));

    copy = malloc(len ? len : 1);
    memcpy(copy, buf, len);

    pos = 0;

    while (pos < len) {
        end = (chunk == 0 || len - pos < chunk) ? len : pos + chunk;

        while (pos < end) {
            rc = fleet_ws_parse(ps, copy + pos, end - pos, &used, &ev);

            if (used > end - pos) {
                es->bad_used++;
                used = end - pos;
            }

            pos += used;

            if (rc == FLEET_WS_AGAIN) {
                if (pos != end) {
                    es->again_short++;
                    pos = end;
                }

                continue;
            }

            if (used == 0) {
                es->stalled++;
            }

            if (es->n < MAX_EVENTS) {
                e = &es->ev[es->n++];
                e->type = rc;
                e->opcode = ev.opcode;
                e->len = ev.len;
                e->close_code = ev.close_code;
                e->data = malloc(ev.len + 1);
                if (ev.len) {
                    memcpy(e->data, ev.data, ev.len);
                }
                e->data[ev.len] = '\0';
            }

            if (rc == FLEET_WS_ERROR || rc == FLEET_WS_CLOSE) {
                free(copy);
                return;
            }
        }
    }

    free(copy);
}


static int
events_clean(const events_t *es)
{
    return es->bad_used == 0 && es->stalled == 0 && es->again_short == 0;
}


/* a fresh parser fed buf: the single event it must produce, or -1 */
static int
one_event(const unsigned char *buf, size_t len, size_t max, size_t chunk,
    event_t *out)
{
    int                rc;
    events_t           es;
    fleet_ws_parser_t  ps;

    fleet_ws_parser_init(&ps, max);
    feed(&ps, buf, len, chunk, &es);
    fleet_ws_parser_free(&ps);

    rc = (es.n == 1 && events_clean(&es)) ? 0 : -1;

    if (rc == 0) {
        *out = es.ev[0];
        out->data = NULL;
    }

    events_free(&es);

    return rc;
}


/* the close code a parser fails with, or 0 when it does not fail */
static int
error_code(const unsigned char *buf, size_t len, size_t max)
{
    event_t  e;

    if (one_event(buf, len, max, 0, &e) != 0 || e.type != FLEET_WS_ERROR) {
        return 0;
    }

    return e.close_code;
}


static void
test_key(void)
{
    char        out[FLEET_WS_ACCEPT_LEN + 1];
    const char *k = RFC_KEY;

    ok(fleet_ws_key_valid((const unsigned char *) k, 24) == 1,
       "RFC 6455 example key is valid");
    ok(fleet_ws_key_valid((const unsigned char *)
                          "AAAAAAAAAAAAAAAAAAAAAA==", 24) == 1,
       "all-A key is valid");
    ok(fleet_ws_key_valid((const unsigned char *)
                          "+/+/+/+/+/+/+/+/+/+/+w==", 24) == 1,
       "key with + and / is valid");
    ok(fleet_ws_key_valid((const unsigned char *) k, 23) == 0,
       "23 bytes: invalid");
    ok(fleet_ws_key_valid((const unsigned char *)
                          "dGhlIHNhbXBsZSBub25jZQ===", 25) == 0,
       "25 bytes: invalid");
    ok(fleet_ws_key_valid((const unsigned char *) "", 0) == 0,
       "empty key: invalid");
    ok(fleet_ws_key_valid((const unsigned char *)
                          "dGhlIHNhbXBsZSBub25jZQAA", 24) == 0,
       "no trailing == : invalid");
    ok(fleet_ws_key_valid((const unsigned char *)
                          "dGhlIHNhbXBsZSBub25jZ===", 24) == 0,
       "=== padding: invalid");
    ok(fleet_ws_key_valid((const unsigned char *)
                          "dGhlIHNhbXBsZSBub25jZQ=A", 24) == 0,
       "half padding: invalid");
    ok(fleet_ws_key_valid((const unsigned char *)
                          "dGhlIHNh*XBsZSBub25jZQ==", 24) == 0,
       "'*' in the key: invalid");
    ok(fleet_ws_key_valid((const unsigned char *)
                          "dGhlIHNh-XBsZSBub25jZQ==", 24) == 0,
       "base64url '-' in the key: invalid");
    ok(fleet_ws_key_valid((const unsigned char *)
                          "dGhlIHNh_XBsZSBub25jZQ==", 24) == 0,
       "base64url '_' in the key: invalid");
    ok(fleet_ws_key_valid((const unsigned char *)
                          "dGhlIHNh XBsZSBub25jZQ==", 24) == 0,
       "space in the key: invalid");
    ok(fleet_ws_key_valid((const unsigned char *)
                          "dGhlIHNh\0XBsZSBub25jZQ==", 24) == 0,
       "NUL in the key: invalid");

    memset(out, 'x', sizeof(out));
    fleet_ws_accept((const unsigned char *) k, 24, out);
    is_str(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=",
           "RFC 6455 example Sec-WebSocket-Accept");
    is_int(strlen(out), FLEET_WS_ACCEPT_LEN, "accept is 28 characters");

    fleet_ws_accept((const unsigned char *) "", 0, out);
    is_int(strlen(out), FLEET_WS_ACCEPT_LEN, "empty key still answered");

    {
        unsigned char  big[200];

        memset(big, 'A', sizeof(big));
        fleet_ws_accept(big, sizeof(big), out);
        is_int(strlen(out), FLEET_WS_ACCEPT_LEN,
               "an oversized key is answered without overflow");
    }
}


static void
test_hello(void)
{
    size_t             i, used;
    event_t            e;
    unsigned char      in[11];
    fleet_ws_event_t   ev;
    fleet_ws_event_e   rc;
    fleet_ws_parser_t  ps;

    static const unsigned char  hello[11] = {
        0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58
    };
    static const unsigned char  hello_unmasked[7] = {
        0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f
    };

    /* the whole frame in one call */
    memcpy(in, hello, sizeof(hello));
    fleet_ws_parser_init(&ps, 4096);
    rc = fleet_ws_parse(&ps, in, sizeof(in), &used, &ev);
    is_int(rc, FLEET_WS_MESSAGE, "RFC 5.7 masked \"Hello\": a message");
    is_int(used, 11, "all 11 bytes used");
    is_int(ev.type, FLEET_WS_MESSAGE, "event type set");
    is_int(ev.opcode, FLEET_WS_OP_TEXT, "text opcode");
    ok(ev.len == 5 && memcmp(ev.data, "Hello", 5) == 0, "payload \"Hello\"");

    /* the parser is done with it; the next call holds no buffer */
    rc = fleet_ws_parse(&ps, in, 0, &used, &ev);
    is_int(rc, FLEET_WS_AGAIN, "empty input: AGAIN");
    is_int(used, 0, "nothing used");
    ok(ps.msg == NULL && ps.msg_len == 0 && ps.msg_opcode == 0,
       "idle parser holds no message buffer");
    fleet_ws_parser_free(&ps);

    /* one byte at a time */
    memcpy(in, hello, sizeof(hello));
    fleet_ws_parser_init(&ps, 4096);

    for (i = 0; i < 10; i++) {
        rc = fleet_ws_parse(&ps, in + i, 1, &used, &ev);
        if (rc != FLEET_WS_AGAIN || used != 1) {
            break;
        }
    }

    is_int(i, 10, "byte at a time: first 10 bytes give AGAIN, each used");
    rc = fleet_ws_parse(&ps, in + 10, 1, &used, &ev);
    is_int(rc, FLEET_WS_MESSAGE, "byte at a time: 11th byte completes it");
    is_int(used, 1, "byte at a time: last byte used");
    ok(ev.len == 5 && memcmp(ev.data, "Hello", 5) == 0,
       "byte at a time: payload \"Hello\"");
    fleet_ws_parser_free(&ps);

    /* every chunk size gives the same */
    for (i = 1; i <= 11; i++) {
        if (one_event(hello, sizeof(hello), 4096, i, &e) != 0
            || e.type != FLEET_WS_MESSAGE || e.len != 5)
        {
            break;
        }
    }

    is_int(i, 12, "chunk sizes 1..11 all give one 5-byte message");

    is_int(error_code(hello_unmasked, sizeof(hello_unmasked), 4096), 1002,
           "RFC 5.7 unmasked \"Hello\" from a client: 1002");
}


static void
test_fragments(void)
{
    size_t             n, i;
    int                good;
    events_t           es;
    unsigned char      buf[256];
    fleet_ws_parser_t  ps;

    n = client_frame(buf, FLEET_WS_OP_TEXT, "Hel", 3, LEN_AUTO, 1);
    n += client_frame(buf + n, FIN | FLEET_WS_OP_PING, "are you there", 13,
                      LEN_AUTO, 1);
    n += client_frame(buf + n, FIN | FLEET_WS_OP_CONT, "lo", 2, LEN_AUTO, 1);

    for (i = 0; i <= 7; i++) {
        fleet_ws_parser_init(&ps, 4096);
        feed(&ps, buf, n, i, &es);
        fleet_ws_parser_free(&ps);

        good = events_clean(&es) && es.n == 2
               && es.ev[0].type == FLEET_WS_PING
               && es.ev[0].len == 13
               && memcmp(es.ev[0].data, "are you there", 13) == 0
               && es.ev[1].type == FLEET_WS_MESSAGE
               && es.ev[1].opcode == FLEET_WS_OP_TEXT
               && es.ev[1].len == 5
               && memcmp(es.ev[1].data, "Hello", 5) == 0;

        ok(good, "fragmented text with a ping between (chunk %zu): "
           "ping first, then \"Hello\"", i);
        events_free(&es);
    }

    /* three fragments, binary, a pong and an empty fragment inside */
    n = client_frame(buf, FLEET_WS_OP_BINARY, "\x00\x01", 2, LEN_AUTO, 1);
    n += client_frame(buf + n, FLEET_WS_OP_CONT, "", 0, LEN_AUTO, 1);
    n += client_frame(buf + n, FIN | FLEET_WS_OP_PONG, "", 0, LEN_AUTO, 1);
    n += client_frame(buf + n, FIN | FLEET_WS_OP_CONT, "\xff", 1, LEN_AUTO, 1);

    fleet_ws_parser_init(&ps, 4096);
    feed(&ps, buf, n, 0, &es);
    fleet_ws_parser_free(&ps);
    ok(events_clean(&es) && es.n == 2
       && es.ev[0].type == FLEET_WS_PONG && es.ev[0].len == 0
       && es.ev[1].type == FLEET_WS_MESSAGE
       && es.ev[1].opcode == FLEET_WS_OP_BINARY && es.ev[1].len == 3
       && memcmp(es.ev[1].data, "\x00\x01\xff", 3) == 0,
       "binary in three fragments (one empty) around a pong");
    events_free(&es);

    /* a multibyte character split across fragments is still valid */
    n = client_frame(buf, FLEET_WS_OP_TEXT, "\xe2\x82", 2, LEN_AUTO, 1);
    n += client_frame(buf + n, FIN | FLEET_WS_OP_CONT, "\xac", 1, LEN_AUTO,
                      1);
    fleet_ws_parser_init(&ps, 4096);
    feed(&ps, buf, n, 0, &es);
    fleet_ws_parser_free(&ps);
    ok(events_clean(&es) && es.n == 1 && es.ev[0].type == FLEET_WS_MESSAGE
       && es.ev[0].len == 3 && memcmp(es.ev[0].data, "\xe2\x82\xac", 3) == 0,
       "U+20AC split across two fragments is valid text");
    events_free(&es);

    /* a close in the middle of a fragmented message: the parser still
     * holds the partial message, parser_free releases it (LSan checks) */
    n = client_frame(buf, FLEET_WS_OP_TEXT, "partial", 7, LEN_AUTO, 1);
    n += close_frame(buf + n, 1001, "", 0);
    fleet_ws_parser_init(&ps, 4096);
    feed(&ps, buf, n, 0, &es);
    ok(events_clean(&es) && es.n == 1 && es.ev[0].type == FLEET_WS_CLOSE
       && es.ev[0].close_code == 1001,
       "close during a fragmented message: CLOSE 1001");
    fleet_ws_parser_free(&ps);
    ok(ps.msg == NULL, "parser_free releases the partial message");
    events_free(&es);
}


static void
test_lengths(void)
{
    size_t             sizes[] = { 125, 126, 200, 65535, 65536, 70000 };
    size_t             i, j, n, chunks[] = { 0, 1, 3, 7, 1000 };
    int                good;
    unsigned char     *payload, *buf;
    events_t           es;
    fleet_ws_parser_t  ps;

    payload = malloc(70000);
    buf = malloc(70000 + 14);

    for (i = 0; i < 70000; i++) {
        payload[i] = (unsigned char) (i * 7 + (i >> 8));
    }

    for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        n = client_frame(buf, FIN | FLEET_WS_OP_BINARY, payload, sizes[i],
                         LEN_AUTO, 1);

        for (j = 0; j < sizeof(chunks) / sizeof(chunks[0]); j++) {
            if (sizes[i] > 1000 && chunks[j] == 1) {
                continue;
            }

            fleet_ws_parser_init(&ps, 1 << 20);
            feed(&ps, buf, n, chunks[j], &es);
            fleet_ws_parser_free(&ps);

            good = events_clean(&es) && es.n == 1
                   && es.ev[0].type == FLEET_WS_MESSAGE
                   && es.ev[0].opcode == FLEET_WS_OP_BINARY
                   && es.ev[0].len == sizes[i]
                   && memcmp(es.ev[0].data, payload, sizes[i]) == 0;

            ok(good, "%zu-byte binary frame (%s length, chunk %zu)",
               sizes[i],
               sizes[i] < 126 ? "7-bit"
               : sizes[i] <= 0xffff ? "16-bit" : "64-bit", chunks[j]);
            events_free(&es);
        }
    }

    /* exactly at the limit passes; one more fails from the header alone */
    n = client_frame(buf, FIN | FLEET_WS_OP_BINARY, payload, 65536,
                     LEN_AUTO, 1);
    is_int(error_code(buf, n, 65536), 0, "65536 bytes with max 65536: fine");
    is_int(error_code(buf, n, 65535), 1009,
           "65536 bytes with max 65535: 1009");
    is_int(error_code(buf, 14, 65535), 1009,
           "1009 as soon as the header announces too much");

    free(payload);
    free(buf);
}


static void
test_protocol_errors(void)
{
    int            op, ok_all;
    size_t         n;
    unsigned char  buf[512], big[300];
    event_t        e;

    static const unsigned char  nonmin16_125[] = {
        0x82, 0xfe, 0x00, 0x7d, 1, 2, 3, 4
    };
    static const unsigned char  nonmin16_0[] = {
        0x82, 0xfe, 0x00, 0x00, 1, 2, 3, 4
    };
    static const unsigned char  nonmin64_65535[] = {
        0x82, 0xff, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 1, 2, 3, 4
    };
    static const unsigned char  nonmin64_5[] = {
        0x82, 0xff, 0, 0, 0, 0, 0, 0, 0, 5, 1, 2, 3, 4
    };
    static const unsigned char  topbit64[] = {
        0x82, 0xff, 0x80, 0, 0, 0, 0, 1, 0, 0, 1, 2, 3, 4
    };

    memset(big, 'a', sizeof(big));

    is_int(error_code(nonmin16_125, sizeof(nonmin16_125), 4096), 1002,
           "125 in the 16-bit form: 1002");
    is_int(error_code(nonmin16_0, sizeof(nonmin16_0), 4096), 1002,
           "0 in the 16-bit form: 1002");
    is_int(error_code(nonmin64_65535, sizeof(nonmin64_65535), 1 << 20), 1002,
           "65535 in the 64-bit form: 1002");
    is_int(error_code(nonmin64_5, sizeof(nonmin64_5), 1 << 20), 1002,
           "5 in the 64-bit form: 1002");
    is_int(error_code(topbit64, sizeof(topbit64), 1 << 20), 1002,
           "64-bit length with the top bit set: 1002");

    /* the same check works on a header that comes in byte by byte */
    ok(one_event(nonmin64_65535, sizeof(nonmin64_65535), 1 << 20, 1, &e) == 0
       && e.type == FLEET_WS_ERROR && e.close_code == 1002,
       "non-minimal 64-bit length byte by byte: 1002");

    n = client_frame(buf, FIN | FLEET_WS_OP_TEXT, "hi", 2, LEN_AUTO, 0);
    is_int(error_code(buf, n, 4096), 1002, "unmasked text frame: 1002");
    n = client_frame(buf, FIN | FLEET_WS_OP_PING, "", 0, LEN_AUTO, 0);
    is_int(error_code(buf, n, 4096), 1002, "unmasked ping: 1002");

    n = client_frame(buf, FIN | RSV1 | FLEET_WS_OP_TEXT, "hi", 2, LEN_AUTO, 1);
    is_int(error_code(buf, n, 4096), 1002, "RSV1 set: 1002");
    n = client_frame(buf, FIN | RSV2 | FLEET_WS_OP_TEXT, "hi", 2, LEN_AUTO, 1);
    is_int(error_code(buf, n, 4096), 1002, "RSV2 set: 1002");
    n = client_frame(buf, FIN | RSV3 | FLEET_WS_OP_TEXT, "hi", 2, LEN_AUTO, 1);
    is_int(error_code(buf, n, 4096), 1002, "RSV3 set: 1002");
    n = client_frame(buf, FIN | RSV1 | FLEET_WS_OP_PING, "", 0, LEN_AUTO, 1);
    is_int(error_code(buf, n, 4096), 1002, "RSV1 on a ping: 1002");

    ok_all = 1;
    for (op = 3; op <= 0xf; op++) {
        if (op == FLEET_WS_OP_CLOSE || op == FLEET_WS_OP_PING
            || op == FLEET_WS_OP_PONG)
        {
            continue;
        }

        n = client_frame(buf, FIN | op, "x", 1, LEN_AUTO, 1);
        if (error_code(buf, n, 4096) != 1002) {
            ok_all = 0;
            printf("# opcode 0x%x not rejected\n", op);
        }
    }
    ok(ok_all, "reserved opcodes 0x3-0x7, 0xb-0xf: 1002");

    n = client_frame(buf, FIN | FLEET_WS_OP_CONT, "x", 1, LEN_AUTO, 1);
    is_int(error_code(buf, n, 4096), 1002,
           "continuation without a message: 1002");

    n = client_frame(buf, FIN | FLEET_WS_OP_TEXT, "a", 1, LEN_AUTO, 1);
    n += client_frame(buf + n, FIN | FLEET_WS_OP_CONT, "b", 1, LEN_AUTO, 1);
    {
        events_t           es;
        fleet_ws_parser_t  ps;

        fleet_ws_parser_init(&ps, 4096);
        feed(&ps, buf, n, 0, &es);
        fleet_ws_parser_free(&ps);
        ok(events_clean(&es) && es.n == 2
           && es.ev[0].type == FLEET_WS_MESSAGE
           && es.ev[1].type == FLEET_WS_ERROR && es.ev[1].close_code == 1002,
           "continuation after a finished message: 1002");
        events_free(&es);
    }

    n = client_frame(buf, FLEET_WS_OP_TEXT, "a", 1, LEN_AUTO, 1);
    n += client_frame(buf + n, FIN | FLEET_WS_OP_TEXT, "b", 1, LEN_AUTO, 1);
    is_int(error_code(buf, n, 4096), 1002,
           "new text frame inside a fragmented message: 1002");

    n = client_frame(buf, FLEET_WS_OP_TEXT, "a", 1, LEN_AUTO, 1);
    n += client_frame(buf + n, FIN | FLEET_WS_OP_BINARY, "b", 1, LEN_AUTO, 1);
    is_int(error_code(buf, n, 4096), 1002,
           "new binary frame inside a fragmented message: 1002");

    n = client_frame(buf, FIN | FLEET_WS_OP_PING, big, 126, LEN_AUTO, 1);
    is_int(error_code(buf, n, 4096), 1002, "126-byte ping: 1002");
    n = client_frame(buf, FIN | FLEET_WS_OP_PONG, big, 200, LEN_AUTO, 1);
    is_int(error_code(buf, n, 4096), 1002, "200-byte pong: 1002");
    n = client_frame(buf, FIN | FLEET_WS_OP_CLOSE, big, 126, LEN_AUTO, 1);
    is_int(error_code(buf, n, 4096), 1002, "126-byte close: 1002");
    is_int(error_code(buf, 8, 4096), 1002,
           "oversized control frame fails from the header alone");

    n = client_frame(buf, FIN | FLEET_WS_OP_PING, big, 125, LEN_AUTO, 1);
    ok(one_event(buf, n, 4096, 0, &e) == 0 && e.type == FLEET_WS_PING
       && e.len == 125, "125-byte ping is fine");

    n = client_frame(buf, FLEET_WS_OP_PING, "x", 1, LEN_AUTO, 1);
    is_int(error_code(buf, n, 4096), 1002, "fragmented ping: 1002");
    n = client_frame(buf, FLEET_WS_OP_CLOSE, "", 0, LEN_AUTO, 1);
    is_int(error_code(buf, n, 4096), 1002, "fragmented close: 1002");
    n = client_frame(buf, FLEET_WS_OP_PONG, "", 0, LEN_AUTO, 1);
    is_int(error_code(buf, n, 4096), 1002, "fragmented pong: 1002");
}


static void
test_too_big(void)
{
    size_t             n;
    unsigned char      buf[256], big[64];
    event_t            e;
    events_t           es;
    fleet_ws_parser_t  ps;

    memset(big, 'z', sizeof(big));

    n = client_frame(buf, FIN | FLEET_WS_OP_TEXT, big, 16, LEN_AUTO, 1);
    ok(one_event(buf, n, 16, 0, &e) == 0 && e.type == FLEET_WS_MESSAGE
       && e.len == 16, "16 bytes with max_message 16: fine");

    n = client_frame(buf, FIN | FLEET_WS_OP_TEXT, big, 17, LEN_AUTO, 1);
    is_int(error_code(buf, n, 16), 1009,
           "17-byte frame with max_message 16: 1009");
    is_int(error_code(buf, 6, 16), 1009,
           "... found from the header alone");

    n = client_frame(buf, FLEET_WS_OP_BINARY, big, 10, LEN_AUTO, 1);
    n += client_frame(buf + n, FLEET_WS_OP_CONT, big, 4, LEN_AUTO, 1);
    n += client_frame(buf + n, FIN | FLEET_WS_OP_CONT, big, 2, LEN_AUTO, 1);
    ok(one_event(buf, n, 16, 0, &e) == 0 && e.type == FLEET_WS_MESSAGE
       && e.len == 16, "10+4+2 fragments with max_message 16: fine");

    n = client_frame(buf, FLEET_WS_OP_BINARY, big, 10, LEN_AUTO, 1);
    n += client_frame(buf + n, FLEET_WS_OP_CONT, big, 4, LEN_AUTO, 1);
    n += client_frame(buf + n, FIN | FLEET_WS_OP_CONT, big, 3, LEN_AUTO, 1);
    is_int(error_code(buf, n, 16), 1009,
           "10+4+3 fragments with max_message 16: 1009");

    /* the limit is per message: a second message starts from zero */
    n = client_frame(buf, FIN | FLEET_WS_OP_TEXT, big, 12, LEN_AUTO, 1);
    n += client_frame(buf + n, FIN | FLEET_WS_OP_TEXT, big, 12, LEN_AUTO, 1);
    fleet_ws_parser_init(&ps, 16);
    feed(&ps, buf, n, 0, &es);
    fleet_ws_parser_free(&ps);
    ok(events_clean(&es) && es.n == 2 && es.ev[0].type == FLEET_WS_MESSAGE
       && es.ev[1].type == FLEET_WS_MESSAGE && es.ev[1].len == 12,
       "two 12-byte messages with max_message 16: both fine");
    events_free(&es);

    /* control frames do not count against a message */
    n = client_frame(buf, FLEET_WS_OP_TEXT, big, 16, LEN_AUTO, 1);
    n += client_frame(buf + n, FIN | FLEET_WS_OP_PING, big, 50, LEN_AUTO, 1);
    n += client_frame(buf + n, FIN | FLEET_WS_OP_CONT, "", 0, LEN_AUTO, 1);
    fleet_ws_parser_init(&ps, 16);
    feed(&ps, buf, n, 0, &es);
    fleet_ws_parser_free(&ps);
    ok(events_clean(&es) && es.n == 2 && es.ev[0].type == FLEET_WS_PING
       && es.ev[0].len == 50 && es.ev[1].type == FLEET_WS_MESSAGE
       && es.ev[1].len == 16,
       "a 50-byte ping inside a full 16-byte message: fine");
    events_free(&es);

    n = client_frame(buf, FIN | FLEET_WS_OP_TEXT, "", 0, LEN_AUTO, 1);
    ok(one_event(buf, n, 0, 0, &e) == 0 && e.type == FLEET_WS_MESSAGE
       && e.len == 0, "empty message with max_message 0: fine");
    n = client_frame(buf, FIN | FLEET_WS_OP_TEXT, "a", 1, LEN_AUTO, 1);
    is_int(error_code(buf, n, 0), 1009,
           "1-byte message with max_message 0: 1009");
}


static void
test_utf8_messages(void)
{
    size_t         i, n;
    unsigned char  buf[64];
    event_t        e;

    static const struct {
        const char  *bytes;
        size_t       len;
        const char  *name;
    } bad[] = {
        { "\xc0\xaf", 2, "overlong '/' (2 bytes)" },
        { "\xe0\x80\xaf", 3, "overlong '/' (3 bytes)" },
        { "\xf0\x80\x80\xaf", 4, "overlong '/' (4 bytes)" },
        { "\xed\xa0\x80", 3, "surrogate U+D800" },
        { "\xed\xbf\xbf", 3, "surrogate U+DFFF" },
        { "ab\xe2\x82", 4, "truncated U+20AC at the end" },
        { "\xe2\x82" "ab", 4, "truncated U+20AC in the middle" },
        { "\xf4\x90\x80\x80", 4, "U+110000" },
        { "\xf7\xbf\xbf\xbf", 4, "U+1FFFFF" },
        { "\x80", 1, "lone continuation byte" },
        { "\xff", 1, "0xff" },
        { "\xf8\x88\x80\x80\x80", 5, "5-byte form" },
    };

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        n = client_frame(buf, FIN | FLEET_WS_OP_TEXT, bad[i].bytes,
                         bad[i].len, LEN_AUTO, 1);
        is_int(error_code(buf, n, 4096), 1007, "text with %s: 1007",
               bad[i].name);

        n = client_frame(buf, FIN | FLEET_WS_OP_BINARY, bad[i].bytes,
                         bad[i].len, LEN_AUTO, 1);
        ok(one_event(buf, n, 4096, 0, &e) == 0
           && e.type == FLEET_WS_MESSAGE && e.opcode == FLEET_WS_OP_BINARY
           && e.len == bad[i].len, "the same bytes as binary: fine");
    }

    n = client_frame(buf, FIN | FLEET_WS_OP_TEXT,
                     "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5"
                     "\xf0\x9f\x98\x80", 15, LEN_AUTO, 1);
    ok(one_event(buf, n, 4096, 0, &e) == 0 && e.type == FLEET_WS_MESSAGE
       && e.len == 15, "valid multibyte text (2, 3 and 4 bytes): fine");

    n = client_frame(buf, FIN | FLEET_WS_OP_TEXT, "a\0b", 3, LEN_AUTO, 1);
    ok(one_event(buf, n, 4096, 0, &e) == 0 && e.type == FLEET_WS_MESSAGE
       && e.len == 3, "text with a NUL is valid UTF-8");
}


static void
test_close(void)
{
    int            codes_bad[] = { 0, 999, 1004, 1005, 1006, 1015, 1016,
                                   2000, 2999, 5000, 65535 };
    int            codes_good[] = { 1000, 1001, 1002, 1003, 1007, 1008,
                                    1009, 1010, 1011, 1012, 1013, 1014,
                                    3000, 4000, 4999 };
    size_t         i, n;
    char           reason[124];
    unsigned char  buf[256];
    event_t        e;
    events_t       es;
    fleet_ws_parser_t  ps;

    n = client_frame(buf, FIN | FLEET_WS_OP_CLOSE, "", 0, LEN_AUTO, 1);
    ok(one_event(buf, n, 4096, 0, &e) == 0 && e.type == FLEET_WS_CLOSE
       && e.close_code == 1005 && e.len == 0,
       "empty close: CLOSE with 1005 (no status)");

    n = close_frame(buf, 1000, "bye now", 7);
    fleet_ws_parser_init(&ps, 4096);
    feed(&ps, buf, n, 0, &es);
    fleet_ws_parser_free(&ps);
    ok(events_clean(&es) && es.n == 1 && es.ev[0].type == FLEET_WS_CLOSE
       && es.ev[0].close_code == 1000 && es.ev[0].len == 7
       && memcmp(es.ev[0].data, "bye now", 7) == 0,
       "close 1000 with reason \"bye now\"");
    events_free(&es);

    n = close_frame(buf, 1000, "", 0);
    ok(one_event(buf, n, 4096, 0, &e) == 0 && e.type == FLEET_WS_CLOSE
       && e.close_code == 1000 && e.len == 0, "close 1000, no reason");

    memset(reason, 'r', 123);
    n = close_frame(buf, 4000, reason, 123);
    ok(one_event(buf, n, 4096, 1, &e) == 0 && e.type == FLEET_WS_CLOSE
       && e.close_code == 4000 && e.len == 123,
       "close 4000 with a 123-byte reason, byte by byte");

    n = client_frame(buf, FIN | FLEET_WS_OP_CLOSE, "\x03", 1, LEN_AUTO, 1);
    is_int(error_code(buf, n, 4096), 1002, "1-byte close payload: 1002");

    for (i = 0; i < sizeof(codes_bad) / sizeof(codes_bad[0]); i++) {
        n = close_frame(buf, codes_bad[i], "", 0);
        is_int(error_code(buf, n, 4096), 1002, "close code %d: 1002",
               codes_bad[i]);
    }

    for (i = 0; i < sizeof(codes_good) / sizeof(codes_good[0]); i++) {
        n = close_frame(buf, codes_good[i], "x", 1);
        ok(one_event(buf, n, 4096, 0, &e) == 0 && e.type == FLEET_WS_CLOSE
           && e.close_code == codes_good[i], "close code %d accepted",
           codes_good[i]);
    }

    n = close_frame(buf, 1000, "\xc0\xaf", 2);
    is_int(error_code(buf, n, 4096), 1007, "overlong UTF-8 reason: 1007");
    n = close_frame(buf, 1000, "ok\xed\xa0\x80", 5);
    is_int(error_code(buf, n, 4096), 1007, "surrogate in the reason: 1007");
    n = close_frame(buf, 1000, "\xe2\x82", 2);
    is_int(error_code(buf, n, 4096), 1007, "truncated reason: 1007");
    n = close_frame(buf, 1001, "\xe0\xb8\x9a\xe0\xb8\xb2\xe0\xb8\xa2", 9);
    ok(one_event(buf, n, 4096, 0, &e) == 0 && e.type == FLEET_WS_CLOSE
       && e.close_code == 1001 && e.len == 9, "Thai reason is fine");
}


static void
test_after_end(void)
{
    size_t             n, n1, used;
    unsigned char      buf[64];
    fleet_ws_event_t   ev;
    fleet_ws_event_e   rc;
    fleet_ws_parser_t  ps;

    /* an error, then a perfectly good frame */
    n1 = client_frame(buf, FIN | FLEET_WS_OP_TEXT, "x", 1, LEN_AUTO, 0);
    n = n1 + client_frame(buf + n1, FIN | FLEET_WS_OP_TEXT, "ok", 2,
                          LEN_AUTO, 1);
    fleet_ws_parser_init(&ps, 4096);
    rc = fleet_ws_parse(&ps, buf, n, &used, &ev);
    is_int(rc, FLEET_WS_ERROR, "unmasked frame: ERROR");
    is_int(ev.close_code, 1002, "... 1002");
    ok(ev.error != NULL, "... with a reason for the log (%s)",
       ev.error ? ev.error : "none");
    ok(used <= n, "... used %zu of %zu", used, n);
    rc = fleet_ws_parse(&ps, buf + n1, n - n1, &used, &ev);
    is_int(rc, FLEET_WS_ERROR, "after ERROR a good frame is refused");
    is_int(used, n - n1, "... and its input swallowed");
    rc = fleet_ws_parse(&ps, buf, 0, &used, &ev);
    is_int(rc, FLEET_WS_ERROR, "after ERROR even empty input is refused");
    fleet_ws_parser_free(&ps);

    /* a close, then a good frame in the same buffer */
    n1 = client_frame(buf, FIN | FLEET_WS_OP_CLOSE, "", 0, LEN_AUTO, 1);
    n = n1 + client_frame(buf + n1, FIN | FLEET_WS_OP_TEXT, "ok", 2,
                          LEN_AUTO, 1);
    fleet_ws_parser_init(&ps, 4096);
    rc = fleet_ws_parse(&ps, buf, n, &used, &ev);
    is_int(rc, FLEET_WS_CLOSE, "close frame: CLOSE");
    is_int(used, n1, "... only the close frame used");
    rc = fleet_ws_parse(&ps, buf + used, n - used, &used, &ev);
    is_int(rc, FLEET_WS_ERROR, "a frame after CLOSE is refused");
    fleet_ws_parser_free(&ps);
}


static void
test_two_frames(void)
{
    size_t             n1, n2, used;
    unsigned char      buf[64];
    fleet_ws_event_t   ev;
    fleet_ws_event_e   rc;
    fleet_ws_parser_t  ps;

    n1 = client_frame(buf, FIN | FLEET_WS_OP_TEXT, "first", 5, LEN_AUTO, 1);
    n2 = client_frame(buf + n1, FIN | FLEET_WS_OP_BINARY, "second!", 7,
                      LEN_AUTO, 1);
    fleet_ws_parser_init(&ps, 4096);

    rc = fleet_ws_parse(&ps, buf, n1 + n2, &used, &ev);
    is_int(rc, FLEET_WS_MESSAGE, "two frames in one buffer: first message");
    is_int(used, n1, "... used is the first frame's length");
    ok(ev.opcode == FLEET_WS_OP_TEXT && ev.len == 5
       && memcmp(ev.data, "first", 5) == 0, "... \"first\"");

    rc = fleet_ws_parse(&ps, buf + used, n1 + n2 - used, &used, &ev);
    is_int(rc, FLEET_WS_MESSAGE, "second call: second message");
    is_int(used, n2, "... used is the second frame's length");
    ok(ev.opcode == FLEET_WS_OP_BINARY && ev.len == 7
       && memcmp(ev.data, "second!", 7) == 0, "... \"second!\"");

    /* a ping and a message: the ping alone first */
    n1 = client_frame(buf, FIN | FLEET_WS_OP_PING, "p", 1, LEN_AUTO, 1);
    n2 = client_frame(buf + n1, FIN | FLEET_WS_OP_TEXT, "m", 1, LEN_AUTO, 1);
    rc = fleet_ws_parse(&ps, buf, n1 + n2, &used, &ev);
    ok(rc == FLEET_WS_PING && used == n1 && ev.len == 1 && ev.data[0] == 'p',
       "ping then text: the ping, %zu bytes used", used);
    rc = fleet_ws_parse(&ps, buf + used, n1 + n2 - used, &used, &ev);
    ok(rc == FLEET_WS_MESSAGE && used == n2 && ev.len == 1
       && ev.data[0] == 'm', "... then the text");

    fleet_ws_parser_free(&ps);
}


static void
test_empty_message(void)
{
    size_t             n, used;
    unsigned char      buf[16];
    fleet_ws_event_t   ev;
    fleet_ws_event_e   rc;
    fleet_ws_parser_t  ps;

    n = client_frame(buf, FIN | FLEET_WS_OP_TEXT, "", 0, LEN_AUTO, 1);
    is_int(n, 6, "empty masked frame is 6 bytes");

    fleet_ws_parser_init(&ps, 4096);
    rc = fleet_ws_parse(&ps, buf, n, &used, &ev);
    is_int(rc, FLEET_WS_MESSAGE, "zero-length text: a message");
    is_int(used, 6, "... 6 bytes used");
    ok(ev.opcode == FLEET_WS_OP_TEXT && ev.len == 0 && ev.data != NULL,
       "... text, length 0, data not NULL");

    /* fragmented empty message: FIN=0 empty text + empty continuation */
    n = client_frame(buf, FLEET_WS_OP_TEXT, "", 0, LEN_AUTO, 1);
    n += client_frame(buf + n, FIN | FLEET_WS_OP_CONT, "", 0, LEN_AUTO, 1);
    rc = fleet_ws_parse(&ps, buf, n, &used, &ev);
    ok(rc == FLEET_WS_MESSAGE && used == 12 && ev.len == 0,
       "empty text in two empty fragments: one empty message");
    fleet_ws_parser_free(&ps);
}


static void
test_frame_header(void)
{
    unsigned char  h[FLEET_WS_MAX_HEADER];
    size_t         n;

    n = fleet_ws_frame_header(h, FLEET_WS_OP_TEXT, 0);
    ok(n == 2 && h[0] == 0x81 && h[1] == 0x00, "header for 0 bytes");

    n = fleet_ws_frame_header(h, FLEET_WS_OP_BINARY, 125);
    ok(n == 2 && h[0] == 0x82 && h[1] == 125, "header for 125 bytes");

    n = fleet_ws_frame_header(h, FLEET_WS_OP_TEXT, 126);
    ok(n == 4 && h[0] == 0x81 && h[1] == 126 && h[2] == 0x00 && h[3] == 126,
       "header for 126 bytes: 16-bit form");

    n = fleet_ws_frame_header(h, FLEET_WS_OP_TEXT, 65535);
    ok(n == 4 && h[1] == 126 && h[2] == 0xff && h[3] == 0xff,
       "header for 65535 bytes: 16-bit form");

    n = fleet_ws_frame_header(h, FLEET_WS_OP_TEXT, 65536);
    ok(n == 10 && h[1] == 127
       && memcmp(h + 2, "\x00\x00\x00\x00\x00\x01\x00\x00", 8) == 0,
       "header for 65536 bytes: 64-bit form");

    n = fleet_ws_frame_header(h, FLEET_WS_OP_BINARY, 0x0102030405060708ULL);
    ok(n == 10 && memcmp(h + 2, "\x01\x02\x03\x04\x05\x06\x07\x08", 8) == 0,
       "64-bit length in network byte order");

    n = fleet_ws_frame_header(h, FLEET_WS_OP_CLOSE, 2);
    ok(n == 2 && h[0] == 0x88 && h[1] == 2, "close header: FIN, opcode 8");
    n = fleet_ws_frame_header(h, FLEET_WS_OP_PONG, 5);
    ok(n == 2 && h[0] == 0x8a && !(h[1] & 0x80),
       "pong header: FIN, opcode 0xa, not masked");
}


static void
test_close_payload(void)
{
    int            good;
    size_t         n, pre, i;
    char           reason[512];
    unsigned char  out[FLEET_WS_MAX_CONTROL + 16];

    n = fleet_ws_close_payload(out, 1000, "bye");
    ok(n == 5 && out[0] == 0x03 && out[1] == 0xe8
       && memcmp(out + 2, "bye", 3) == 0, "close payload 1000 \"bye\"");

    n = fleet_ws_close_payload(out, 1009, NULL);
    ok(n == 2 && out[0] == 0x03 && out[1] == 0xf1, "close payload, no reason");

    n = fleet_ws_close_payload(out, 1011, "");
    ok(n == 2 && out[0] == 0x03 && out[1] == 0xf3,
       "close payload, empty reason");

    memset(reason, 'a', 123);
    reason[123] = '\0';
    n = fleet_ws_close_payload(out, 1000, reason);
    is_int(n, 125, "123-byte ASCII reason kept whole");

    memset(reason, 'a', 300);
    reason[300] = '\0';
    n = fleet_ws_close_payload(out, 1000, reason);
    is_int(n, 125, "300-byte ASCII reason cut to 123");

    /* Thai (3 bytes a character): 60 characters are 180 bytes */
    reason[0] = '\0';
    for (i = 0; i < 60; i++) {
        strcat(reason, "\xe0\xb8\x81");
    }
    n = fleet_ws_close_payload(out, 1001, reason);
    ok(n <= FLEET_WS_MAX_CONTROL && n >= FLEET_WS_MAX_CONTROL - 2
       && fleet_utf8_valid(out + 2, n - 2) && (n - 2) % 3 == 0,
       "long Thai reason: %zu bytes, whole characters", n);

    /* every alignment of 2-, 3- and 4-byte characters against the cut */
    good = 1;
    for (pre = 0; pre < 4; pre++) {
        const char  *chars[] = { "\xc3\xa9", "\xe2\x82\xac",
                                 "\xf0\x9f\x98\x80" };

        for (i = 0; i < 3; i++) {
            memset(reason, 'x', pre);
            reason[pre] = '\0';
            while (strlen(reason) < 200) {
                strcat(reason, chars[i]);
            }

            n = fleet_ws_close_payload(out, 1000, reason);
            if (n > FLEET_WS_MAX_CONTROL || n + 3 < FLEET_WS_MAX_CONTROL
                || !fleet_utf8_valid(out + 2, n - 2)
                || memcmp(out + 2, reason, n - 2) != 0)
            {
                good = 0;
                printf("# prefix %zu, %zu-byte chars: %zu\n", pre, i + 2, n);
            }
        }
    }
    ok(good, "multibyte reasons at every alignment: <= 125, valid UTF-8");
}


static void
test_utf8(void)
{
    size_t  i;

    static const struct {
        const char  *s;
        size_t       len;
        int          valid;
    } v[] = {
        { "", 0, 1 },
        { "hello", 5, 1 },
        { "a\0b", 3, 1 },
        { "\x7f", 1, 1 },
        { "\xc2\x80", 2, 1 },                   /* U+0080 */
        { "\xdf\xbf", 2, 1 },                   /* U+07FF */
        { "\xe0\xa0\x80", 3, 1 },               /* U+0800 */
        { "\xed\x9f\xbf", 3, 1 },               /* U+D7FF */
        { "\xee\x80\x80", 3, 1 },               /* U+E000 */
        { "\xef\xbf\xbf", 3, 1 },               /* U+FFFF */
        { "\xf0\x90\x80\x80", 4, 1 },           /* U+10000 */
        { "\xf4\x8f\xbf\xbf", 4, 1 },           /* U+10FFFF */
        { "\xe0\xb8\x81\xe0\xb8\xb2", 6, 1 },   /* Thai */
        { "\x80", 1, 0 },
        { "\xbf", 1, 0 },
        { "\xc0\x80", 2, 0 },                   /* overlong NUL */
        { "\xc1\xbf", 2, 0 },
        { "\xe0\x9f\xbf", 3, 0 },               /* overlong U+07FF */
        { "\xf0\x8f\xbf\xbf", 4, 0 },           /* overlong U+FFFF */
        { "\xed\xa0\x80", 3, 0 },               /* U+D800 */
        { "\xed\xaf\xbf\xed\xb0\x80", 6, 0 },   /* surrogate pair */
        { "\xed\xbf\xbf", 3, 0 },               /* U+DFFF */
        { "\xf4\x90\x80\x80", 4, 0 },           /* U+110000 */
        { "\xf5\x80\x80\x80", 4, 0 },
        { "\xf8\x88\x80\x80\x80", 5, 0 },
        { "\xfc\x84\x80\x80\x80\x80", 6, 0 },
        { "\xfe", 1, 0 },
        { "\xff", 1, 0 },
        { "\xc2", 1, 0 },                       /* truncated */
        { "\xe2\x82", 2, 0 },
        { "\xf0\x9f\x98", 3, 0 },
        { "\xc2\x41", 2, 0 },                   /* bad continuation */
        { "\xe2\x28\xa1", 3, 0 },
        { "\xf0\x9f\x98\xc0", 4, 0 },
        { "ok\xc3", 3, 0 },
    };

    for (i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        is_int(fleet_utf8_valid((const unsigned char *) v[i].s, v[i].len),
               v[i].valid, "utf8 case %zu (%zu bytes): %s", i, v[i].len,
               v[i].valid ? "valid" : "invalid");
    }

    /* a valid sequence cut short anywhere is invalid */
    ok(fleet_utf8_valid((const unsigned char *) "\xf0\x9f\x98\x80", 4)
       && !fleet_utf8_valid((const unsigned char *) "\xf0\x9f\x98\x80", 3)
       && !fleet_utf8_valid((const unsigned char *) "\xf0\x9f\x98\x80", 2)
       && !fleet_utf8_valid((const unsigned char *) "\xf0\x9f\x98\x80", 1),
       "U+1F600 is valid only whole");
}


int
main(void)
{
    test_key();
    test_hello();
    test_fragments();
    test_lengths();
    test_protocol_errors();
    test_too_big();
    test_utf8_messages();
    test_close();
    test_after_end();
    test_two_frames();
    test_empty_message();
    test_frame_header();
    test_close_payload();
    test_utf8();

    return done_testing();
}
