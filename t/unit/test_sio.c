/*
 * Unit tests: Engine.IO v4 / Socket.IO v5 packet codec
 * (common/fleet_sio.c): polling payloads, Engine.IO packets, Socket.IO
 * packets and event names, the writers, round trips.  Most examples are
 * the ones of the protocol documents.
 */

#include <stdlib.h>

#include "tap.h"
#include "fleet_sio.h"


/* s made printable for a test's description (4 rotating buffers) */
static const char *
show(const char *s)
{
    static char    bufs[4][256];
    static int     next;
    char          *b;
    size_t         n;
    unsigned char  c;

    b = bufs[next++ & 3];

    for (n = 0; *s != '\0' && n + 5 < sizeof(bufs[0]); s++) {
        c = (unsigned char) *s;

        if (c < 0x20 || c >= 0x7f) {
            n += snprintf(b + n, sizeof(bufs[0]) - n, "\\x%02x", c);

        } else {
            b[n++] = (char) c;
        }
    }

    b[n] = '\0';

    return b;
}


/* a span equals a C string */
static int
span_eq(const char *p, size_t len, const char *want)
{
    return p != NULL && len == strlen(want) && memcmp(p, want, len) == 0;
}


/* parses a NUL-terminated Socket.IO packet */
static int
sio(const char *s, fleet_sio_packet_t *p, const char **err)
{
    *err = NULL;
    return fleet_sio_parse(s, strlen(s), p, err);
}


/* ------------------------------------------------------------------ */

static void
test_eio_parse(void)
{
    size_t       i, dlen;
    int          rc, type;
    const char  *data, *err;

    static const struct {
        const char  *pkt;
        int          type;
        const char  *data;
    } good[] = {
        { "0{\"sid\":\"lv_VI97HAXpY6yYWAAAC\",\"upgrades\":[\"websocket\"],"
          "\"pingInterval\":25000,\"pingTimeout\":20000,"
          "\"maxPayload\":1000000}", FLEET_EIO_OPEN,
          "{\"sid\":\"lv_VI97HAXpY6yYWAAAC\",\"upgrades\":[\"websocket\"],"
          "\"pingInterval\":25000,\"pingTimeout\":20000,"
          "\"maxPayload\":1000000}" },
        { "1", FLEET_EIO_CLOSE, "" },
        { "2", FLEET_EIO_PING, "" },
        { "3", FLEET_EIO_PONG, "" },
        { "2probe", FLEET_EIO_PING, "probe" },
        { "3probe", FLEET_EIO_PONG, "probe" },
        { "4hello", FLEET_EIO_MESSAGE, "hello" },
        { "4", FLEET_EIO_MESSAGE, "" },
        { "42[\"hey\",\"Jude\"]", FLEET_EIO_MESSAGE, "2[\"hey\",\"Jude\"]" },
        { "5", FLEET_EIO_UPGRADE, "" },
        { "6", FLEET_EIO_NOOP, "" },
        { "4\xe2\x82\xac\xe2\x82\xac", FLEET_EIO_MESSAGE,
          "\xe2\x82\xac\xe2\x82\xac" },
    };

    for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        err = NULL;
        rc = fleet_eio_parse(good[i].pkt, strlen(good[i].pkt), &type, &data,
                             &dlen, &err);
        ok(rc == 0 && type == good[i].type
           && span_eq(data, dlen, good[i].data) && err == NULL,
           "eio '%.20s': type %d, data '%.20s'", good[i].pkt, good[i].type,
           good[i].data);
    }

    rc = fleet_eio_parse("", 0, &type, &data, &dlen, &err);
    ok(rc == -1 && type == -1 && err != NULL && dlen == 0,
       "eio: empty packet refused (%s)", err);

    rc = fleet_eio_parse(NULL, 0, &type, &data, &dlen, &err);
    ok(rc == -1 && type == -1 && err != NULL, "eio: NULL packet refused");

    rc = fleet_eio_parse("9", 1, &type, &data, &dlen, &err);
    ok(rc == -1 && type == -1 && err != NULL, "eio: type 9 refused (%s)", err);

    rc = fleet_eio_parse("7hello", 6, &type, &data, &dlen, &err);
    ok(rc == -1 && type == -1, "eio: type 7 refused");

    rc = fleet_eio_parse("/", 1, &type, &data, &dlen, &err);
    ok(rc == -1 && type == -1, "eio: '/' (just below '0') refused");

    rc = fleet_eio_parse("hello", 5, &type, &data, &dlen, &err);
    ok(rc == -1 && type == -1, "eio: garbage refused");

    rc = fleet_eio_parse("\x1e", 1, &type, &data, &dlen, &err);
    ok(rc == -1 && type == -1, "eio: a separator is no packet");

    rc = fleet_eio_parse("bAQIDBA==", 9, &type, &data, &dlen, &err);
    ok(rc == -1 && type == FLEET_EIO_BINARY_B64 && type == -2
       && span_eq(data, dlen, "AQIDBA==") && err != NULL,
       "eio: 'b' base64 binary reported as type -2 (%s)", err);

    rc = fleet_eio_parse("b", 1, &type, &data, &dlen, &err);
    ok(rc == -1 && type == -2 && dlen == 0, "eio: bare 'b' is type -2 too");
}


/* splits a payload; the packets joined with '|' */
static void
split(const char *payload, size_t len, char *out, size_t size, int *count)
{
    size_t       off, plen, n;
    const char  *pkt;

    off = 0;
    n = 0;
    *count = 0;

    while (fleet_eio_payload_next(payload, len, &off, &pkt, &plen)) {
        if (pkt == NULL || (plen && (pkt < payload
                                     || pkt + plen > payload + len)))
        {
            snprintf(out, size, "bad span");
            return;
        }

        if (*count) {
            n += snprintf(out + n, size - n, "|");
        }

        n += snprintf(out + n, size - n, "%.*s", (int) plen, pkt);
        (*count)++;

        if (*count > 100) {
            break;
        }
    }
}


static void
test_payload(void)
{
    int          count, rc;
    char         got[256];
    size_t       off, plen;
    const char  *pkt;

    static const struct {
        const char  *payload;
        size_t       len;
        const char  *want;
        int          count;
    } v[] = {
        { "4hello\x1e" "4world", 13, "4hello|4world", 2 },
        { "4hello\x1e" "2\x1e" "4world", 15, "4hello|2|4world", 3 },
        { "42[\"hello\"]\x1e" "42[\"world\"]", 23,
          "42[\"hello\"]|42[\"world\"]", 2 },
        { "2probe", 6, "2probe", 1 },
        { "4hello\x1e" "bAQIDBA==", 16, "4hello|bAQIDBA==", 2 },
        { "", 0, "", 1 },
        { "4a\x1e", 3, "4a|", 2 },
        { "\x1e" "4a", 3, "|4a", 2 },
        { "\x1e", 1, "|", 2 },
        { "4a\x1e\x1e" "4b", 6, "4a||4b", 3 },
        { "4\xe2\x82\xac\x1e" "4\xe2\x82\xac", 9,
          "4\xe2\x82\xac|4\xe2\x82\xac", 2 },
    };
    size_t  i;

    for (i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        split(v[i].payload, v[i].len, got, sizeof(got), &count);
        ok(count == v[i].count && strcmp(got, v[i].want) == 0,
           "payload %zu: %d packet(s) '%s'", i, v[i].count, show(v[i].want));
        if (count != v[i].count || strcmp(got, v[i].want) != 0) {
            printf("#   got %d '%s'\n", count, show(got));
        }
    }

    /* a NUL inside a packet is kept */
    off = 0;
    rc = fleet_eio_payload_next("4a\0b\x1e" "1", 6, &off, &pkt, &plen);
    ok(rc == 1 && plen == 4 && memcmp(pkt, "4a\0b", 4) == 0 && off == 5,
       "payload: a NUL stays inside its packet");

    /* the end is sticky */
    off = 0;
    rc = fleet_eio_payload_next("2", 1, &off, &pkt, &plen);
    ok(rc == 1 && plen == 1 && off == 2, "payload: one packet, off past end");
    rc = fleet_eio_payload_next("2", 1, &off, &pkt, &plen);
    ok(rc == 0 && plen == 0, "payload: then the end");
    rc = fleet_eio_payload_next("2", 1, &off, &pkt, &plen);
    ok(rc == 0, "payload: and the end again");

    off = 100;
    rc = fleet_eio_payload_next("2", 1, &off, &pkt, &plen);
    ok(rc == 0, "payload: an offset beyond the input ends it");

    off = 0;
    rc = fleet_eio_payload_next(NULL, 0, &off, &pkt, &plen);
    ok(rc == 1 && plen == 0 && pkt != NULL,
       "payload: NULL is one empty packet");
    rc = fleet_eio_payload_next(NULL, 0, &off, &pkt, &plen);
    ok(rc == 0, "payload: NULL then the end");
}


/* ------------------------------------------------------------------ */

static void
test_sio_good(void)
{
    int                  rc;
    size_t               i;
    const char          *err;
    fleet_sio_packet_t   p;
    char                 deep[200];

    static const struct {
        const char  *s;
        int          type;
        int          attachments;
        const char  *nsp;
        long long    ack;
        const char  *data;
    } v[] = {
        { "0", FLEET_SIO_CONNECT, 0, "/", -1, "" },
        { "0{\"token\":\"abc\"}", FLEET_SIO_CONNECT, 0, "/", -1,
          "{\"token\":\"abc\"}" },
        { "0{\"sid\":\"wZX3oN0bSVIhsaknAAAI\"}", FLEET_SIO_CONNECT, 0, "/",
          -1, "{\"sid\":\"wZX3oN0bSVIhsaknAAAI\"}" },
        { "0/admin,", FLEET_SIO_CONNECT, 0, "/admin", -1, "" },
        { "0/admin,{\"token\":\"x\"}", FLEET_SIO_CONNECT, 0, "/admin", -1,
          "{\"token\":\"x\"}" },
        { "0/admin,{\"sid\":\"oSO0OpakMV_3jnilAAAA\"}", FLEET_SIO_CONNECT, 0,
          "/admin", -1, "{\"sid\":\"oSO0OpakMV_3jnilAAAA\"}" },
        { "0{}", FLEET_SIO_CONNECT, 0, "/", -1, "{}" },
        { "1", FLEET_SIO_DISCONNECT, 0, "/", -1, "" },
        { "1/admin,", FLEET_SIO_DISCONNECT, 0, "/admin", -1, "" },
        { "2[\"foo\"]", FLEET_SIO_EVENT, 0, "/", -1, "[\"foo\"]" },
        { "2[\"hello\",1]", FLEET_SIO_EVENT, 0, "/", -1, "[\"hello\",1]" },
        { "2/admin,[\"a\"]", FLEET_SIO_EVENT, 0, "/admin", -1, "[\"a\"]" },
        { "21[\"ev\",{\"a\":1}]", FLEET_SIO_EVENT, 0, "/", 1,
          "[\"ev\",{\"a\":1}]" },
        { "212[\"foo\"]", FLEET_SIO_EVENT, 0, "/", 12, "[\"foo\"]" },
        { "2/admin,13[\"foo\"]", FLEET_SIO_EVENT, 0, "/admin", 13,
          "[\"foo\"]" },
        { "2/admin,1[\"tellme\"]", FLEET_SIO_EVENT, 0, "/admin", 1,
          "[\"tellme\"]" },
        { "2[\"hey\",\"Jude\"]", FLEET_SIO_EVENT, 0, "/", -1,
          "[\"hey\",\"Jude\"]" },
        { "20[\"x\"]", FLEET_SIO_EVENT, 0, "/", 0, "[\"x\"]" },
        { "29007199254740991[\"x\"]", FLEET_SIO_EVENT, 0, "/",
          9007199254740991LL, "[\"x\"]" },
        { "2/,[\"x\"]", FLEET_SIO_EVENT, 0, "/", -1, "[\"x\"]" },
        { "2[ \"a\" , 1 , {\"k\" : [true,false,null]} ]", FLEET_SIO_EVENT, 0,
          "/", -1, "[ \"a\" , 1 , {\"k\" : [true,false,null]} ]" },
        { "2[\"\",-0.5e+10,1E-2,0,\"\\u00e9\\ud83d\\ude00\\\"\\\\\\/\"]",
          FLEET_SIO_EVENT, 0, "/", -1,
          "[\"\",-0.5e+10,1E-2,0,\"\\u00e9\\ud83d\\ude00\\\"\\\\\\/\"]" },
        { "2[\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"]", FLEET_SIO_EVENT, 0,
          "/", -1, "[\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"]" },
        { "2[\"lone\",\"\\ud800\"]", FLEET_SIO_EVENT, 0, "/", -1,
          "[\"lone\",\"\\ud800\"]" },
        { "2/\xc3\xa9t\xc3\xa9,[\"x\"]", FLEET_SIO_EVENT, 0,
          "/\xc3\xa9t\xc3\xa9", -1, "[\"x\"]" },
        { "31[{\"ok\":true}]", FLEET_SIO_ACK, 0, "/", 1, "[{\"ok\":true}]" },
        { "312[]", FLEET_SIO_ACK, 0, "/", 12, "[]" },
        { "314[\"bar\"]", FLEET_SIO_ACK, 0, "/", 14, "[\"bar\"]" },
        { "3/admin,13[\"bar\"]", FLEET_SIO_ACK, 0, "/admin", 13,
          "[\"bar\"]" },
        { "4{\"message\":\"Not authorized\"}", FLEET_SIO_CONNECT_ERROR, 0,
          "/", -1, "{\"message\":\"Not authorized\"}" },
        { "4/admin,{\"message\":\"x\"}", FLEET_SIO_CONNECT_ERROR, 0,
          "/admin", -1, "{\"message\":\"x\"}" },
        { "51-[\"img\",{\"_placeholder\":true,\"num\":0}]",
          FLEET_SIO_BINARY_EVENT, 1, "/", -1,
          "[\"img\",{\"_placeholder\":true,\"num\":0}]" },
        { "52-/admin,[\"baz\",{\"_placeholder\":true,\"num\":0},"
          "{\"_placeholder\":true,\"num\":1}]", FLEET_SIO_BINARY_EVENT, 2,
          "/admin", -1, "[\"baz\",{\"_placeholder\":true,\"num\":0},"
          "{\"_placeholder\":true,\"num\":1}]" },
        { "51-14[\"foo\",{\"_placeholder\":true,\"num\":0}]",
          FLEET_SIO_BINARY_EVENT, 1, "/", 14,
          "[\"foo\",{\"_placeholder\":true,\"num\":0}]" },
        { "50-[\"x\"]", FLEET_SIO_BINARY_EVENT, 0, "/", -1, "[\"x\"]" },
        { "51000-[\"x\"]", FLEET_SIO_BINARY_EVENT, 1000, "/", -1, "[\"x\"]" },
        { "61-15[\"bar\",{\"_placeholder\":true,\"num\":0}]",
          FLEET_SIO_BINARY_ACK, 1, "/", 15,
          "[\"bar\",{\"_placeholder\":true,\"num\":0}]" },
        { "61-/admin,1[{\"_placeholder\":true,\"num\":0}]",
          FLEET_SIO_BINARY_ACK, 1, "/admin", 1,
          "[{\"_placeholder\":true,\"num\":0}]" },
    };

    for (i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        rc = sio(v[i].s, &p, &err);
        ok(rc == 0 && p.type == v[i].type
           && p.attachments == v[i].attachments
           && span_eq(p.nsp, p.nsp_len, v[i].nsp) && p.ack_id == v[i].ack
           && span_eq(p.data, p.data_len, v[i].data),
           "sio '%s': type %d, %d att, nsp %s, ack %lld", show(v[i].s),
           v[i].type, v[i].attachments, show(v[i].nsp), v[i].ack);
        if (rc != 0) {
            printf("#   error: %s\n", err);
        }
    }

    /* spans point into the input */
    {
        const char  *s = "2/admin,7[\"a\"]";

        rc = sio(s, &p, &err);
        ok(rc == 0 && p.nsp == s + 1 && p.data == s + 9,
           "sio: nsp and data are spans of the input");
    }

    /* a namespace of exactly FLEET_SIO_MAX_NSP bytes */
    {
        char  s[FLEET_SIO_MAX_NSP + 16];

        s[0] = '2';
        s[1] = '/';
        memset(s + 2, 'n', FLEET_SIO_MAX_NSP - 1);
        strcpy(s + 1 + FLEET_SIO_MAX_NSP, ",[\"x\"]");

        rc = sio(s, &p, &err);
        ok(rc == 0 && p.nsp_len == FLEET_SIO_MAX_NSP,
           "sio: a %d-byte namespace passes", FLEET_SIO_MAX_NSP);

        s[1 + FLEET_SIO_MAX_NSP] = 'n';
        strcpy(s + 2 + FLEET_SIO_MAX_NSP, ",[\"x\"]");
        rc = sio(s, &p, &err);
        ok(rc == -1 && strcmp(err, "namespace too long") == 0,
           "sio: one byte more is refused (%s)", err);
    }

    /* nesting: FLEET_SIO_MAX_DEPTH levels pass, one more does not */
    {
        size_t  d;

        strcpy(deep, "2[\"d\",");
        for (d = 1; d < FLEET_SIO_MAX_DEPTH; d++) {
            strcat(deep, "[");
        }
        for (d = 0; d < FLEET_SIO_MAX_DEPTH; d++) {
            strcat(deep, "]");
        }

        rc = sio(deep, &p, &err);
        ok(rc == 0, "sio: JSON nested %d deep passes", FLEET_SIO_MAX_DEPTH);

        strcpy(deep, "2[\"d\",");
        for (d = 0; d < FLEET_SIO_MAX_DEPTH; d++) {
            strcat(deep, "[");
        }
        for (d = 0; d <= FLEET_SIO_MAX_DEPTH; d++) {
            strcat(deep, "]");
        }

        rc = sio(deep, &p, &err);
        ok(rc == -1, "sio: one level more is refused");
    }
}


static void
test_sio_bad(void)
{
    int                  rc;
    size_t               i;
    const char          *err;
    fleet_sio_packet_t   p;
    char                 s[512];

    static const struct {
        const char  *s;
        const char  *err;           /* NULL: any message */
    } v[] = {
        { "", "empty Socket.IO packet" },
        { "9", "unknown Socket.IO packet type" },
        { "7[\"a\"]", "unknown Socket.IO packet type" },
        { "a", "unknown Socket.IO packet type" },
        { " 2[\"a\"]", "unknown Socket.IO packet type" },
        { "2", "event without data" },
        { "2/admin,", "event without data" },
        { "21", "event without data" },
        { "2{\"a\":1}", "event data must be a JSON array" },
        { "2[1]", "event name must be a string" },
        { "2[]", "event name must be a string" },
        { "2[null,\"a\"]", "event name must be a string" },
        { "2[[\"a\"]]", "event name must be a string" },
        { "2\"a\"", "event data must be a JSON array" },
        { "2 [\"a\"]", "event data must be a JSON array" },
        { "2[\"a\"] ", "event data must be a JSON array" },
        { "2[\"a\"]\n", "event data must be a JSON array" },
        { "2[\"a\"]]", "event data must be a JSON array" },
        { "2[\"a\"][\"b\"]", "event data must be a JSON array" },
        { "2[\"a\"", "event data must be a JSON array" },
        { "2[\"a", "event data must be a JSON array" },
        { "2[\"a\",]", "event data must be a JSON array" },
        { "2[\"a\",,1]", "event data must be a JSON array" },
        { "2[\"a\" 1]", "event data must be a JSON array" },
        { "2[\"a\",01]", "event data must be a JSON array" },
        { "2[\"a\",1.]", "event data must be a JSON array" },
        { "2[\"a\",.5]", "event data must be a JSON array" },
        { "2[\"a\",1e]", "event data must be a JSON array" },
        { "2[\"a\",-]", "event data must be a JSON array" },
        { "2[\"a\",+1]", "event data must be a JSON array" },
        { "2[\"a\",tru]", "event data must be a JSON array" },
        { "2[\"a\",True]", "event data must be a JSON array" },
        { "2[\"a\",NaN]", "event data must be a JSON array" },
        { "2[\"a\",{\"k\"}]", "event data must be a JSON array" },
        { "2[\"a\",{1:2}]", "event data must be a JSON array" },
        { "2[\"a\",{\"k\":1,}]", "event data must be a JSON array" },
        { "2[\"a\",{\"k\":1]]", "event data must be a JSON array" },
        { "2[\"a\",'b']", "event data must be a JSON array" },
        { "2[\"a\\x\"]", "event data must be a JSON array" },
        { "2[\"a\\u12\"]", "event data must be a JSON array" },
        { "2[\"a\\u12g4\"]", "event data must be a JSON array" },
        { "2[\"a\x01\"]", "event data must be a JSON array" },
        { "2[\"a\tb\"]", "event data must be a JSON array" },
        { "2[\"\xff\"]", "event data must be a JSON array" },
        { "2[\"\xc0\xaf\"]", "event data must be a JSON array" },
        { "2[\"\xed\xa0\x80\"]", "event data must be a JSON array" },
        { "2[\"\xf4\x90\x80\x80\"]", "event data must be a JSON array" },
        { "2[\"\xe2\x82\"]", "event data must be a JSON array" },
        { "2[\"a\"]\xff", "event data must be a JSON array" },
        { "2/admin[\"a\"]", "namespace not terminated by ','" },
        { "0/admin", "namespace not terminated by ','" },
        { "2/admin[\"a\",\"b\"]", NULL },   /* the ',' inside ends it */
        { "2/ad\x01min,[\"a\"]", "invalid namespace" },
        { "2/ad\x7fmin,[\"a\"]", "invalid namespace" },
        { "2/\xff,[\"a\"]", "invalid namespace" },
        { "2admin,[\"a\"]", "event data must be a JSON array" },
        { "212345678901234567[\"a\"]", "ack id too long" },
        { "29007199254740992[\"a\"]", "ack id too large" },
        { "29999999999999999[\"a\"]", "ack id too large" },
        { "1[\"x\"]", "DISCONNECT takes no data" },
        { "1{}", "DISCONNECT takes no data" },
        { "1x", "DISCONNECT takes no data" },
        { "1/admin,{}", "DISCONNECT takes no data" },
        { "12", "ack id not allowed on this packet type" },
        { "01{}", "ack id not allowed on this packet type" },
        { "0/admin,1", "ack id not allowed on this packet type" },
        { "41{\"message\":\"x\"}", "ack id not allowed on this packet type" },
        { "0[\"a\"]", "CONNECT data must be a JSON object" },
        { "0\"token\"", "CONNECT data must be a JSON object" },
        { "0{\"token\"", "CONNECT data must be a JSON object" },
        { "0/admin,x", "CONNECT data must be a JSON object" },
        { "3[\"ok\"]", "ACK without an ack id" },
        { "3", "ACK without an ack id" },
        { "31", "ACK data must be a JSON array" },
        { "31{\"ok\":true}", "ACK data must be a JSON array" },
        { "31\"ok\"", "ACK data must be a JSON array" },
        { "4", "CONNECT_ERROR data must be a JSON object" },
        { "4\"Not authorized\"", "CONNECT_ERROR data must be a JSON object" },
        { "4[\"x\"]", "CONNECT_ERROR data must be a JSON object" },
        { "5[\"a\"]", "invalid attachment count" },
        { "5-[\"a\"]", "invalid attachment count" },
        { "51[\"a\"]", "invalid attachment count" },
        { "51", "invalid attachment count" },
        { "5x-[\"a\"]", "invalid attachment count" },
        { "512345-[\"a\"]", "invalid attachment count" },
        { "51001-[\"a\"]", "too many attachments" },
        { "51-", "event without data" },
        { "51-[1]", "event name must be a string" },
        { "61-[\"a\"]", "ACK without an ack id" },
        { "61-1{}", "ACK data must be a JSON array" },
        { "42[\"a\"]", "ack id not allowed on this packet type" },
        { "\xff\xfe", "unknown Socket.IO packet type" },
        { "\x1e", "unknown Socket.IO packet type" },
    };

    for (i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        rc = sio(v[i].s, &p, &err);
        ok(rc == -1 && err != NULL && (v[i].err == NULL
                                       || strcmp(err, v[i].err) == 0)
           && p.type == -1 && p.ack_id == -1 && p.data_len == 0,
           "sio refuses '%s': %s", show(v[i].s), v[i].err ? v[i].err : "(any)");
        if (rc != -1 || err == NULL
            || (v[i].err && strcmp(err, v[i].err) != 0))
        {
            printf("#   got rc %d, '%s'\n", rc, err ? err : "(null)");
        }
    }

    rc = fleet_sio_parse(NULL, 0, &p, &err);
    ok(rc == -1 && err != NULL, "sio: NULL refused");

    /* an embedded NUL is no JSON */
    rc = fleet_sio_parse("2[\"a\0\"]", 7, &p, &err);
    ok(rc == -1, "sio: a raw NUL in a string is refused");

    /* too long a namespace, with and without a comma after it */
    s[0] = '2';
    memset(s + 1, 'a', 400);
    s[1] = '/';
    strcpy(s + 401, ",[\"x\"]");
    rc = sio(s, &p, &err);
    ok(rc == -1 && strcmp(err, "namespace too long") == 0,
       "sio: a 400-byte namespace is refused (%s)", err);

    s[401] = '\0';
    rc = sio(s, &p, &err);
    ok(rc == -1 && strcmp(err, "namespace too long") == 0,
       "sio: so is an unterminated one (%s)", err);

    /* nesting far too deep */
    strcpy(s, "2[\"x\",");
    memset(s + 6, '[', 400);
    s[406] = '\0';
    rc = sio(s, &p, &err);
    ok(rc == -1, "sio: 400 open brackets refused");
}


static void
test_json_valid(void)
{
    size_t  i;

    static const struct {
        const char  *s;
        int          valid;
    } v[] = {
        { "1", 1 }, { "-0", 1 }, { "0.5", 1 }, { "1e5", 1 }, { "\"x\"", 1 },
        { "true", 1 }, { "false", 1 }, { "null", 1 }, { "[]", 1 },
        { "{}", 1 }, { " [ 1 , 2 ] ", 1 }, { "\t{\"a\":{}}\r\n", 1 },
        { "{\"a\":1,\"a\":2}", 1 },         /* duplicates are JSON */
        { "", 0 }, { " ", 0 }, { "nul", 0 }, { "nulll", 0 }, { "1 2", 0 },
        { "[1,2", 0 }, { "{\"a\"}", 0 }, { "00", 0 }, { "-", 0 },
        { "\"\\u00\"", 0 }, { "}", 0 }, { "]", 0 }, { "[}", 0 }, { "{]", 0 },
        { "[1]]", 0 }, { "\"", 0 }, { "\"\\\"", 0 }, { "\x0c" "1", 0 },
    };

    for (i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        is_int(fleet_sio_json_valid(v[i].s, strlen(v[i].s)), v[i].valid,
               "json '%s' is %s", show(v[i].s),
               v[i].valid ? "valid" : "invalid");
    }

    ok(!fleet_sio_json_valid(NULL, 0), "json: NULL is invalid");
}


/* ------------------------------------------------------------------ */

static void
test_event_name(void)
{
    int          rc;
    size_t       i, alen;
    char         name[64];
    const char  *arg;

    static const struct {
        const char  *data;
        const char  *name;
        const char  *arg;           /* NULL: none */
    } v[] = {
        { "[\"hello\",1]", "hello", "1" },
        { "[\"hello\"]", "hello", NULL },
        { "[\"\"]", "", NULL },
        { "[\"ev\",{\"a\":1}]", "ev", "{\"a\":1}" },
        { "[ \"hi\" , {\"a\":[1,2]} , 3 ]", "hi", "{\"a\":[1,2]}" },
        { "[\"x\",\"s,]\\\"\",2]", "x", "\"s,]\\\"\"" },
        { "[\"x\",[[]],2]", "x", "[[]]" },
        { "[\"x\",-1.5e3]", "x", "-1.5e3" },
        { "[\"x\",null ]", "x", "null" },
        { "[\"a\\\"b\\\\c\\/d\\n\\t\\r\\b\\f\"]", "a\"b\\c/d\n\t\r\b\f",
          NULL },
        { "[\"\\u00e9\\u20AC\\ud83d\\ude00\\u0041\"]",
          "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80" "A", NULL },
        { "[\"\xc3\xa9\xe2\x82\xac\"]", "\xc3\xa9\xe2\x82\xac", NULL },
        { "[\"img\",{\"_placeholder\":true,\"num\":0}]", "img",
          "{\"_placeholder\":true,\"num\":0}" },
    };

    for (i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        rc = fleet_sio_event_name(v[i].data, strlen(v[i].data), name,
                                  sizeof(name), &arg, &alen);
        ok(rc == 0 && strcmp(name, v[i].name) == 0
           && (v[i].arg ? span_eq(arg, alen, v[i].arg)
                        : (arg == NULL && alen == 0)),
           "event name of '%s'", show(v[i].data));
    }

    /* the name must fit with its NUL */
    rc = fleet_sio_event_name("[\"abc\"]", 7, name, 4, &arg, &alen);
    ok(rc == 0 && strcmp(name, "abc") == 0, "event name: 3 bytes fit in 4");

    memset(name, 'x', sizeof(name));
    rc = fleet_sio_event_name("[\"abcd\",1]", 10, name, 4, &arg, &alen);
    ok(rc == -1 && name[0] == '\0' && arg == NULL && alen == 0,
       "event name: 4 bytes do not");

    rc = fleet_sio_event_name("[\"\\u00e9\"]", 10, name, 2, &arg, &alen);
    ok(rc == -1 && name[0] == '\0', "event name: an escape's 2 bytes in 1");

    rc = fleet_sio_event_name("[\"\\u00e9\"]", 10, name, 3, &arg, &alen);
    ok(rc == 0 && strcmp(name, "\xc3\xa9") == 0, "event name: ... in 2");

    rc = fleet_sio_event_name("[\"\\ud83d\\ude00\"]", 16, name, 4, &arg,
                              &alen);
    ok(rc == -1, "event name: 4-byte character in 3 bytes refused");

    rc = fleet_sio_event_name("[\"\\ud83d\\ude00\"]", 16, name, 5, &arg,
                              &alen);
    ok(rc == 0 && strcmp(name, "\xf0\x9f\x98\x80") == 0,
       "event name: ... in 4");

    rc = fleet_sio_event_name("[\"a\"]", 5, name, 1, &arg, &alen);
    ok(rc == -1 && name[0] == '\0', "event name: name_size 1 holds only \"\"");

    rc = fleet_sio_event_name("[\"\"]", 4, name, 1, &arg, &alen);
    ok(rc == 0 && name[0] == '\0', "event name: \"\" fits in 1");

    rc = fleet_sio_event_name("[\"a\"]", 5, name, 0, &arg, &alen);
    ok(rc == -1, "event name: name_size 0 refused");

    /* what no C string can hold */
    {
        static const char  *bad[] = {
            "[\"a\\u0000b\"]",
            "[\"\\ud800\"]",
            "[\"\\udc00\"]",
            "[\"\\ud800x\"]",
            "[\"\\ud800\\u0041\"]",
            "[\"\\ud800\\ud800\"]",
            "[\"\\ude00\\ud83d\"]",
            "[1,\"a\"]",
            "[]",
            "{\"a\":1}",
            "\"a\"",
            "[\"a\",]",
            "[\"a\",1",
            "[\"a\"] ",
            " [\"a\"]",
            "",
        };

        for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
            memset(name, 'x', sizeof(name));
            rc = fleet_sio_event_name(bad[i], strlen(bad[i]), name,
                                      sizeof(name), &arg, &alen);
            ok(rc == -1 && name[0] == '\0' && arg == NULL && alen == 0,
               "event name refused: '%s'", show(bad[i]));
        }
    }

    rc = fleet_sio_event_name(NULL, 0, name, sizeof(name), &arg, &alen);
    ok(rc == -1, "event name: NULL data refused");

    ok(fleet_sio_event_reserved("connect")
       && fleet_sio_event_reserved("connect_error")
       && fleet_sio_event_reserved("disconnect")
       && fleet_sio_event_reserved("disconnecting")
       && fleet_sio_event_reserved("newListener")
       && fleet_sio_event_reserved("removeListener"),
       "reserved event names");
    ok(!fleet_sio_event_reserved("message")
       && !fleet_sio_event_reserved("Connect")
       && !fleet_sio_event_reserved("connect ")
       && !fleet_sio_event_reserved("")
       && !fleet_sio_event_reserved(NULL),
       "other names are not reserved");
}


/* ------------------------------------------------------------------ */

/*
 * A writer's output against want: exact with room to spare (NUL added),
 * exact with no room for the NUL (nothing written past size), 0 for every
 * smaller buffer.
 */
#define WRITER(call_with_out_size, want, ...)                                \
    do {                                                                     \
        char    w_buf[1024];                                                 \
        size_t  w_n, w_len = strlen(want), w_sz;                             \
        int     w_small = 1;                                                 \
        char   *out;                                                         \
        size_t  size;                                                        \
                                                                             \
        out = w_buf;                                                         \
        size = sizeof(w_buf);                                                \
        memset(w_buf, 'x', sizeof(w_buf));                                   \
        w_n = call_with_out_size;                                            \
        ok(w_n == w_len && memcmp(w_buf, want, w_len) == 0                   \
           && w_buf[w_len] == '\0', __VA_ARGS__);                            \
        if (w_n != w_len || memcmp(w_buf, want, w_len) != 0) {              \
            printf("#   got %zu '%.*s'\n#  want %zu '%s'\n", w_n,           \
                   (int) (w_n < sizeof(w_buf) ? w_n : 0), w_buf, w_len,     \
                   want);                                                    \
        }                                                                    \
                                                                             \
        memset(w_buf, 'x', sizeof(w_buf));                                   \
        size = w_len;                                                        \
        w_n = call_with_out_size;                                            \
        ok(w_n == w_len && memcmp(w_buf, want, w_len) == 0                   \
           && w_buf[w_len] == 'x', "  ... fits exactly without the NUL");   \
                                                                             \
        for (w_sz = 0; w_sz < w_len; w_sz++) {                               \
            memset(w_buf, 'x', sizeof(w_buf));                               \
            size = w_sz;                                                     \
            w_n = call_with_out_size;                                        \
            if (w_n != 0 || w_buf[w_sz] != 'x') {                            \
                w_small = 0;                                                 \
            }                                                                \
        }                                                                    \
        ok(w_small, "  ... and gives 0 in every smaller buffer");           \
    } while (0)


static void
test_writers(void)
{
    char    buf[256];
    size_t  n;

    /* the handshake of the protocol document's sample session */
    WRITER(fleet_eio_open(out, size, "lv_VI97HAXpY6yYWAAAC", 25000, 5000,
                          1000000, 1),
           "0{\"sid\":\"lv_VI97HAXpY6yYWAAAC\",\"upgrades\":[\"websocket\"],"
           "\"pingInterval\":25000,\"pingTimeout\":5000,"
           "\"maxPayload\":1000000}", "open packet, upgradable");

    WRITER(fleet_eio_open(out, size, "s\"id", 300, 200, 0, 0),
           "0{\"sid\":\"s\\\"id\",\"upgrades\":[],"
           "\"pingInterval\":300,\"pingTimeout\":200,\"maxPayload\":0}",
           "open packet, no upgrades, sid escaped");

    ok(fleet_eio_open(buf, sizeof(buf), "a", -1, 5000, 1, 1) == 0
       && fleet_eio_open(buf, sizeof(buf), "a", 1, -1, 1, 1) == 0
       && fleet_eio_open(buf, sizeof(buf), NULL, 1, 1, 1, 1) == 0,
       "open: negative times and NULL sid refused");

    WRITER(fleet_eio_packet(out, size, FLEET_EIO_PONG, "probe", 5), "3probe",
           "eio packet 3probe");
    WRITER(fleet_eio_packet(out, size, FLEET_EIO_PING, NULL, 0), "2",
           "eio packet 2");
    WRITER(fleet_eio_packet(out, size, FLEET_EIO_NOOP, NULL, 0), "6",
           "eio packet 6");
    WRITER(fleet_eio_packet(out, size, FLEET_EIO_MESSAGE, "hello", 5),
           "4hello", "eio packet 4hello");
    ok(fleet_eio_packet(buf, sizeof(buf), 7, NULL, 0) == 0
       && fleet_eio_packet(buf, sizeof(buf), -1, NULL, 0) == 0
       && fleet_eio_packet(buf, sizeof(buf), 2, NULL, 3) == 0,
       "eio packet: bad type or NULL data refused");

    WRITER(fleet_sio_connect_ok(out, size, "wZX3oN0bSVIhsaknAAAI"),
           "40{\"sid\":\"wZX3oN0bSVIhsaknAAAI\"}", "connect ok");
    WRITER(fleet_sio_connect_ok_nsp(out, size, "/admin",
                                    "oSO0OpakMV_3jnilAAAA"),
           "40/admin,{\"sid\":\"oSO0OpakMV_3jnilAAAA\"}", "connect ok /admin");
    WRITER(fleet_sio_connect_ok_nsp(out, size, "/", "x"),
           "40{\"sid\":\"x\"}", "connect ok on \"/\" has no namespace");
    ok(fleet_sio_connect_ok(buf, sizeof(buf), NULL) == 0
       && fleet_sio_connect_ok_nsp(buf, sizeof(buf), "admin", "x") == 0,
       "connect ok: NULL sid, bad namespace refused");

    WRITER(fleet_sio_connect_error(out, size, "/", "Not authorized"),
           "44{\"message\":\"Not authorized\"}", "connect error");
    WRITER(fleet_sio_connect_error(out, size, NULL, "Not authorized"),
           "44{\"message\":\"Not authorized\"}", "connect error, NULL nsp");
    WRITER(fleet_sio_connect_error(out, size, "/admin", "say \"please\""),
           "44/admin,{\"message\":\"say \\\"please\\\"\"}",
           "connect error /admin, message escaped");
    ok(fleet_sio_connect_error(buf, sizeof(buf), "admin", "x") == 0
       && fleet_sio_connect_error(buf, sizeof(buf), "/a,b", "x") == 0
       && fleet_sio_connect_error(buf, sizeof(buf), "/a\nb", "x") == 0
       && fleet_sio_connect_error(buf, sizeof(buf), "/", NULL) == 0
       && fleet_sio_connect_error(buf, sizeof(buf), "/", "\xff") == 0,
       "connect error: bad namespace, NULL or non-UTF-8 message refused");

    WRITER(fleet_sio_event(out, size, "hey", "\"Jude\"", 6),
           "42[\"hey\",\"Jude\"]", "event with data");
    WRITER(fleet_sio_event(out, size, "hello", NULL, 0),
           "42[\"hello\"]", "event without data");
    WRITER(fleet_sio_event(out, size, "reading",
                           "{\"t\":21.5,\"ok\":[true,null]}", 27),
           "42[\"reading\",{\"t\":21.5,\"ok\":[true,null]}]",
           "event with an object");
    WRITER(fleet_sio_event(out, size,
                           "a\"b\\c\n\x01\x1f\xc3\xa9\xf0\x9f\x98\x80", "1", 1),
           "42[\"a\\\"b\\\\c\\n\\u0001\\u001f\xc3\xa9\xf0\x9f\x98\x80\",1]",
           "event name escaped, UTF-8 kept");
    WRITER(fleet_sio_event(out, size, "x", " [1] ", 5),
           "42[\"x\", [1] ]", "event data's outer whitespace kept");
    ok(fleet_sio_event(buf, sizeof(buf), "x", "{", 1) == 0
       && fleet_sio_event(buf, sizeof(buf), "x", "1 2", 3) == 0
       && fleet_sio_event(buf, sizeof(buf), "x", "1]", 2) == 0
       && fleet_sio_event(buf, sizeof(buf), "x", "1],[2", 5) == 0
       && fleet_sio_event(buf, sizeof(buf), "x", " ", 1) == 0
       && fleet_sio_event(buf, sizeof(buf), "x", NULL, 1) == 0
       && fleet_sio_event(buf, sizeof(buf), NULL, "1", 1) == 0
       && fleet_sio_event(buf, sizeof(buf), "\xc3", "1", 1) == 0,
       "event: data not one JSON value, NULLs, non-UTF-8 name refused");

    WRITER(fleet_sio_ack(out, size, 12, NULL, 0), "4312[]", "ack, no data");
    WRITER(fleet_sio_ack(out, size, 1, "{\"ok\":true}", 11),
           "431[{\"ok\":true}]", "ack with data");
    WRITER(fleet_sio_ack(out, size, 0, "\"bar\"", 5), "430[\"bar\"]",
           "ack id 0");
    WRITER(fleet_sio_ack(out, size, 9007199254740991LL, "1", 1),
           "439007199254740991[1]", "ack id 2^53 - 1");
    ok(fleet_sio_ack(buf, sizeof(buf), -1, NULL, 0) == 0
       && fleet_sio_ack(buf, sizeof(buf), 9007199254740992LL, NULL, 0) == 0
       && fleet_sio_ack(buf, sizeof(buf), 1, "[", 1) == 0,
       "ack: id out of range or bad data refused");

    WRITER(fleet_json_escape(out, size, "", 0), "\"\"", "escape \"\"");
    WRITER(fleet_json_escape(out, size, "plain text/ok", 13),
           "\"plain text/ok\"", "escape: '/' stays");
    WRITER(fleet_json_escape(out, size, "a\"b", 3), "\"a\\\"b\"",
           "escape a quote");
    WRITER(fleet_json_escape(out, size, "\\", 1), "\"\\\\\"",
           "escape a backslash");
    WRITER(fleet_json_escape(out, size, "\b\f\n\r\t", 5),
           "\"\\b\\f\\n\\r\\t\"", "escape short forms");
    WRITER(fleet_json_escape(out, size, "\0\x01\x1e\x1f", 4),
           "\"\\u0000\\u0001\\u001e\\u001f\"", "escape \\u00xx, NUL too");
    WRITER(fleet_json_escape(out, size,
                             "\x7f \xc3\xa9\xe2\x80\xa8\xf4\x8f\xbf\xbf", 11),
           "\"\x7f \xc3\xa9\xe2\x80\xa8\xf4\x8f\xbf\xbf\"",
           "escape: DEL, U+00E9, U+2028, U+10FFFF pass as they are");
    ok(fleet_json_escape(buf, sizeof(buf), "\xc3", 1) == 0
       && fleet_json_escape(buf, sizeof(buf), "\xc0\xaf", 2) == 0
       && fleet_json_escape(buf, sizeof(buf), "\xed\xa0\x80", 3) == 0
       && fleet_json_escape(buf, sizeof(buf), "\xf4\x90\x80\x80", 4) == 0
       && fleet_json_escape(buf, sizeof(buf), "a\xff", 2) == 0
       && fleet_json_escape(buf, sizeof(buf), "\x80", 1) == 0,
       "escape: invalid UTF-8 refused");
    ok(fleet_json_escape(buf, sizeof(buf), NULL, 0) == 2
       && fleet_json_escape(buf, sizeof(buf), NULL, 1) == 0
       && fleet_json_escape(NULL, 10, "a", 1) == 0,
       "escape: NULL string or output");

    /* an output buffer of size 0 is never touched */
    n = fleet_sio_event(buf + 10, 0, "x", NULL, 0);
    ok(n == 0, "size 0 gives 0");

    /* the same writers through fleet_sio_encode */
    {
        fleet_sio_packet_t  p;

        memset(&p, 0, sizeof(p));
        p.type = FLEET_SIO_BINARY_ACK;
        p.attachments = 1;
        p.nsp = "/admin";
        p.nsp_len = 6;
        p.ack_id = 1;
        p.data = "[{\"_placeholder\":true,\"num\":0}]";
        p.data_len = strlen(p.data);
        WRITER(fleet_sio_encode(out, size, &p),
               "461-/admin,1[{\"_placeholder\":true,\"num\":0}]",
               "encode a BINARY_ACK with namespace and id");

        p.type = FLEET_SIO_DISCONNECT;
        p.attachments = 0;
        p.ack_id = -1;
        p.data = NULL;
        p.data_len = 0;
        WRITER(fleet_sio_encode(out, size, &p), "41/admin,",
               "encode a DISCONNECT");

        p.type = FLEET_SIO_CONNECT;
        p.nsp = "/";
        p.nsp_len = 1;
        WRITER(fleet_sio_encode(out, size, &p), "40", "encode a CONNECT");

        p.nsp = NULL;
        p.nsp_len = 0;
        p.type = FLEET_SIO_EVENT;
        p.data = "[\"foo\"]";
        p.data_len = 7;
        p.ack_id = 12;
        WRITER(fleet_sio_encode(out, size, &p), "4212[\"foo\"]",
               "encode an EVENT with an id, nsp NULL");

        p.attachments = 1;
        ok(fleet_sio_encode(buf, sizeof(buf), &p) == 0,
           "encode: attachments on EVENT refused");
        p.attachments = 0;
        p.data = "[1]";
        p.data_len = 3;
        ok(fleet_sio_encode(buf, sizeof(buf), &p) == 0,
           "encode: an event name that is no string refused");
        p.type = FLEET_SIO_ACK;
        p.ack_id = -1;
        ok(fleet_sio_encode(buf, sizeof(buf), &p) == 0,
           "encode: ACK without an id refused");
        p.type = 7;
        ok(fleet_sio_encode(buf, sizeof(buf), &p) == 0
           && fleet_sio_encode(buf, sizeof(buf), NULL) == 0,
           "encode: type 7 and NULL refused");
    }
}


/* ------------------------------------------------------------------ */

/* one WebSocket text message through both parsers */
static int
message(const char *msg, size_t len, fleet_sio_packet_t *p)
{
    int          type;
    size_t       dlen;
    const char  *data, *err;

    if (fleet_eio_parse(msg, len, &type, &data, &dlen, &err) != 0
        || type != FLEET_EIO_MESSAGE)
    {
        return -1;
    }

    return fleet_sio_parse(data, dlen, p, &err);
}


static void
test_round_trip(void)
{
    int                  type;
    char                 buf[512], name[64];
    size_t               i, n, n2, dlen, alen;
    const char          *data, *err, *arg;
    fleet_sio_packet_t   p, q;

    static const char   *names[] = {
        "hello", "", "a\"b", "back\\slash", "new\nline", "\x01\x1f",
        "\xc3\xa9t\xc3\xa9", "\xf0\x9f\x98\x80", "sp ace", "[\"]",
    };
    static const char   *args[] = {
        "", "1", "\"Jude\"", "{\"a\":[1,{\"b\":null}]}", "[]", "-0.0e-0",
        "\"\\u0000\\ud800\"", "true",
    };

    for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        const char  *a = args[i % (sizeof(args) / sizeof(args[0]))];

        n = fleet_sio_event(buf, sizeof(buf), names[i], a, strlen(a));
        ok(n > 0 && message(buf, n, &p) == 0 && p.type == FLEET_SIO_EVENT
           && p.ack_id == -1 && span_eq(p.nsp, p.nsp_len, "/")
           && fleet_sio_event_name(p.data, p.data_len, name, sizeof(name),
                                   &arg, &alen) == 0
           && strcmp(name, names[i]) == 0
           && (a[0] ? span_eq(arg, alen, a) : (arg == NULL && alen == 0)),
           "round trip: event %zu with '%s'", i, show(a));
    }

    n = fleet_sio_ack(buf, sizeof(buf), 42, "{\"ok\":true}", 11);
    ok(n > 0 && message(buf, n, &p) == 0 && p.type == FLEET_SIO_ACK
       && p.ack_id == 42 && span_eq(p.data, p.data_len, "[{\"ok\":true}]"),
       "round trip: ack");

    n = fleet_sio_connect_ok(buf, sizeof(buf), "abc");
    ok(n > 0 && message(buf, n, &p) == 0 && p.type == FLEET_SIO_CONNECT
       && span_eq(p.data, p.data_len, "{\"sid\":\"abc\"}"),
       "round trip: connect ok");

    n = fleet_sio_connect_error(buf, sizeof(buf), "/admin", "No \"way\"\n");
    ok(n > 0 && message(buf, n, &p) == 0
       && p.type == FLEET_SIO_CONNECT_ERROR
       && span_eq(p.nsp, p.nsp_len, "/admin"),
       "round trip: connect error");

    n = fleet_eio_open(buf, sizeof(buf), "sid\x01", 25000, 20000, 1000000, 1);
    ok(n > 0 && fleet_eio_parse(buf, n, &type, &data, &dlen, &err) == 0
       && type == FLEET_EIO_OPEN && fleet_sio_json_valid(data, dlen),
       "round trip: open packet data is valid JSON");

    /* several writers' packets as one polling payload */
    {
        size_t       off, plen, total;
        const char  *pkt;
        int          k;

        total = fleet_sio_event(buf, sizeof(buf), "a", "1", 1);
        buf[total++] = FLEET_EIO_SEPARATOR;
        total += fleet_eio_packet(buf + total, sizeof(buf) - total,
                                  FLEET_EIO_PING, NULL, 0);
        buf[total++] = FLEET_EIO_SEPARATOR;
        total += fleet_sio_ack(buf + total, sizeof(buf) - total, 3, NULL, 0);

        off = 0;
        k = 0;
        while (fleet_eio_payload_next(buf, total, &off, &pkt, &plen)) {
            if (fleet_eio_parse(pkt, plen, &type, &data, &dlen, &err) != 0) {
                break;
            }
            k++;
        }

        ok(k == 3, "round trip: three written packets in one payload");
    }

    /* every good packet: parse, encode, parse gives the same fields */
    {
        static const char  *v[] = {
            "0", "0{\"token\":\"abc\"}", "0/admin,{\"token\":\"x\"}",
            "0/admin,", "1", "1/admin,", "2[\"hello\",1]", "2/admin,[\"a\"]",
            "21[\"ev\",{\"a\":1}]", "2/admin,13[\"foo\"]", "31[{\"ok\":true}]",
            "312[]", "4{\"message\":\"Not authorized\"}",
            "51-[\"img\",{\"_placeholder\":true,\"num\":0}]",
            ("52-/admin,[\"baz\",{\"_placeholder\":true,\"num\":0},"
             "{\"_placeholder\":true,\"num\":1}]"),
            "61-15[\"bar\",{\"_placeholder\":true,\"num\":0}]",
            "2/,[\"x\"]", "2007[\"x\"]", "5007-[\"x\"]",
        };

        for (i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
            n = 0;
            n2 = 0;

            if (sio(v[i], &p, &err) == 0) {
                n = fleet_sio_encode(buf, sizeof(buf), &p);
            }

            ok(n > 1 && buf[0] == '4' && sio(buf + 1, &q, &err) == 0
               && q.type == p.type && q.attachments == p.attachments
               && q.nsp_len == p.nsp_len
               && memcmp(q.nsp, p.nsp, p.nsp_len) == 0
               && q.ack_id == p.ack_id && q.data_len == p.data_len
               && memcmp(q.data, p.data, p.data_len) == 0,
               "round trip: '%s' encodes as '%s'", show(v[i]),
               n ? show(buf) : "");

            /* canonical forms come back byte for byte */
            if (i < 16) {
                n2 = strlen(v[i]);
                ok(n == n2 + 1 && memcmp(buf + 1, v[i], n2) == 0,
                   "  ... exactly");
            }
        }
    }

}


int
main(void)
{
    test_eio_parse();
    test_payload();
    test_sio_good();
    test_sio_bad();
    test_json_valid();
    test_event_name();
    test_writers();
    test_round_trip();

    return done_testing();
}
