/*
 * libFuzzer target: the Engine.IO v4 / Socket.IO v5 codec
 * (common/fleet_sio.c).
 *
 * Input: byte 0 picks the name buffer's size and the writers' buffer
 * sizes, the rest is a polling payload.  It is split into packets, each
 * parsed as an Engine.IO packet and, for messages, as a Socket.IO packet
 * whose event name is read; every span must lie inside the input, and
 * what is accepted must agree with jansson and survive a write/parse round
 * trip.  The writers get slices of the input and their output is parsed
 * back (jansson for the JSON, the codec for the packets).
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "fleet_sio.h"
#include "fleet_ws.h"           /* fleet_utf8_valid */


#define MAX_NAME    64


static int
inside(const char *p, size_t len, const char *base, size_t base_len)
{
    return p != NULL && p >= base && len <= base_len
           && (size_t) (p - base) <= base_len - len;
}


/* nesting of JSON text, brackets outside strings (valid text only) */
static size_t
json_depth(const char *s, size_t len)
{
    size_t  i, d, max;
    int     str;

    d = max = 0;
    str = 0;

    for (i = 0; i < len; i++) {
        if (str) {
            if (s[i] == '\\') {
                i++;
            } else if (s[i] == '"') {
                str = 0;
            }
            continue;
        }

        if (s[i] == '"') {
            str = 1;
        } else if (s[i] == '[' || s[i] == '{') {
            if (++d > max) {
                max = d;
            }
        } else if ((s[i] == ']' || s[i] == '}') && d > 0) {
            d--;
        }
    }

    return max;
}


/*
 * The validator against jansson: what jansson takes (shallow enough) the
 * codec takes; what the codec takes jansson takes unless jansson is the
 * stricter one: unpaired surrogates, numbers beyond double or int64 ("too
 * big integer", "too big negative integer", "real number overflow") and
 * "\u0000" in object keys, even with JSON_ALLOW_NUL.
 */
static void
check_json(const char *s, size_t len)
{
    int           ours;
    json_t       *j;
    json_error_t  e;

    ours = fleet_sio_json_valid(s, len);

    j = json_loadb(s, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &e);

    if (j != NULL) {
        json_decref(j);

        if (!ours && json_depth(s, len) <= FLEET_SIO_MAX_DEPTH) {
            abort();
        }

    } else if (ours && strstr(e.text, "invalid Unicode") == NULL
               && strstr(e.text, "number overflow") == NULL
               && strstr(e.text, "too big") == NULL
               && strstr(e.text, "NUL byte in object key") == NULL)
    {
        abort();
    }
}


/* an event name as read back; the rest of the checks of one name */
static void
check_name(const char *data, size_t len, size_t name_size)
{
    int           rc, rc_big;
    char          name[MAX_NAME + 1];
    char         *big;
    size_t        alen, alen_big, nlen;
    json_t       *j, *first;
    const char   *arg, *arg_big;
    json_error_t  e;

    memset(name, 'x', sizeof(name));

    rc = fleet_sio_event_name(data, len, name, name_size, &arg, &alen);

    /* always NUL-terminated within name_size */
    if (memchr(name, '\0', name_size) == NULL) {
        abort();
    }

    nlen = strlen(name);

    if (rc == 0) {
        if (nlen >= name_size || !fleet_utf8_valid((unsigned char *) name,
                                                   nlen))
        {
            abort();
        }

        if (arg == NULL ? alen != 0
            : (!inside(arg, alen, data, len) || alen == 0
               || !fleet_sio_json_valid(arg, alen)))
        {
            abort();
        }

    } else if (nlen != 0 || arg != NULL || alen != 0) {
        abort();
    }

    /* unescaping never grows: len + 1 bytes always hold the name */
    big = malloc(len + 1);
    if (big == NULL) {
        return;
    }

    rc_big = fleet_sio_event_name(data, len, big, len + 1, &arg_big,
                                  &alen_big);

    if (rc == 0 && (rc_big != 0 || strcmp(big, name) != 0
                    || arg_big != arg || alen_big != alen))
    {
        abort();
    }

    if (rc_big == 0) {
        /* the same name as jansson reads, when jansson reads it */
        j = json_loadb(data, len, JSON_DECODE_ANY, &e);

        if (j != NULL) {
            first = json_array_get(j, 0);

            if (!json_is_string(first)
                || json_string_length(first) != strlen(big)
                || memcmp(json_string_value(first), big, strlen(big)) != 0)
            {
                abort();
            }

            json_decref(j);
        }
    }

    free(big);
}


/* parse, encode, parse: the same fields */
static void
check_encode(const fleet_sio_packet_t *p, size_t in_len)
{
    int                  rc;
    char                *buf;
    size_t               n;
    const char          *err;
    fleet_sio_packet_t   q;

    /* never longer than the input and the '4' */
    buf = malloc(in_len + 2);
    if (buf == NULL) {
        return;
    }

    n = fleet_sio_encode(buf, in_len + 2, p);

    if (n == 0 || n > in_len + 1 || buf[0] != '4') {
        abort();
    }

    rc = fleet_sio_parse(buf + 1, n - 1, &q, &err);

    if (rc != 0 || q.type != p->type || q.attachments != p->attachments
        || q.nsp_len != p->nsp_len || memcmp(q.nsp, p->nsp, p->nsp_len) != 0
        || q.ack_id != p->ack_id || q.data_len != p->data_len
        || memcmp(q.data, p->data, p->data_len) != 0)
    {
        abort();
    }

    free(buf);
}


static void
check_sio(const char *s, size_t len, size_t name_size)
{
    int                  rc;
    const char          *err;
    fleet_sio_packet_t   p;

    err = NULL;
    rc = fleet_sio_parse(s, len, &p, &err);

    if (rc != 0) {
        if (rc != -1 || err == NULL || p.type != -1 || p.ack_id != -1
            || p.attachments != 0 || p.data_len != 0 || p.nsp_len != 1
            || p.nsp[0] != '/')
        {
            abort();
        }

        /* the event name reader is safe on anything */
        check_name(s, len, name_size);
        return;
    }

    if (p.type < FLEET_SIO_CONNECT || p.type > FLEET_SIO_BINARY_ACK) {
        abort();
    }

    if ((p.type == FLEET_SIO_BINARY_EVENT || p.type == FLEET_SIO_BINARY_ACK)
        ? (p.attachments < 0 || p.attachments > FLEET_SIO_MAX_ATTACH)
        : p.attachments != 0)
    {
        abort();
    }

    /* the namespace: "/" of its own or a span of the input */
    if (p.nsp_len == 0 || p.nsp_len > FLEET_SIO_MAX_NSP || p.nsp[0] != '/'
        || memchr(p.nsp, ',', p.nsp_len) != NULL
        || (!inside(p.nsp, p.nsp_len, s, len)
            && !(p.nsp_len == 1 && strcmp(p.nsp, "/") == 0)))
    {
        abort();
    }

    if (p.ack_id < -1 || p.ack_id > FLEET_SIO_MAX_ACK_ID) {
        abort();
    }

    /* the data ends the packet */
    if (!inside(p.data, p.data_len, s, len)
        || p.data + p.data_len != s + len)
    {
        abort();
    }

    if (p.data_len) {
        if (!fleet_sio_json_valid(p.data, p.data_len)) {
            abort();
        }

        check_json(p.data, p.data_len);
    }

    switch (p.type) {
    case FLEET_SIO_EVENT:
    case FLEET_SIO_BINARY_EVENT:
        if (p.data_len < 4 || p.data[0] != '[') {
            abort();
        }

        check_name(p.data, p.data_len, name_size);
        break;

    case FLEET_SIO_ACK:
    case FLEET_SIO_BINARY_ACK:
        if (p.ack_id < 0 || p.data_len < 2 || p.data[0] != '[') {
            abort();
        }
        break;

    case FLEET_SIO_DISCONNECT:
        if (p.data_len != 0) {
            abort();
        }
        break;

    default:
        if (p.ack_id != -1
            || (p.data_len && p.data[0] != '{')
            || (p.type == FLEET_SIO_CONNECT_ERROR && p.data_len == 0))
        {
            abort();
        }
    }

    check_encode(&p, len);
}


static void
check_payload(const char *in, size_t len, size_t name_size)
{
    int          rc, type;
    size_t       off, prev, plen, dlen, total, count;
    const char  *pkt, *data, *err;

    off = 0;
    total = 0;
    count = 0;

    for ( ;; ) {
        prev = off;

        if (!fleet_eio_payload_next(in, len, &off, &pkt, &plen)) {
            break;
        }

        /* consecutive spans, each ended by a separator or the input */
        if (pkt == NULL || (len && pkt != in + prev)
            || !(plen == 0 || inside(pkt, plen, in, len))
            || memchr(pkt, FLEET_EIO_SEPARATOR, plen) != NULL
            || off != prev + plen + 1
            || (off <= len && in[off - 1] != FLEET_EIO_SEPARATOR))
        {
            abort();
        }

        total += plen;
        count++;

        err = NULL;
        rc = fleet_eio_parse(pkt, plen, &type, &data, &dlen, &err);

        if (rc == 0) {
            if (type < FLEET_EIO_OPEN || type > FLEET_EIO_NOOP
                || pkt[0] != '0' + type || data != pkt + 1
                || dlen != plen - 1 || err != NULL)
            {
                abort();
            }

            if (type == FLEET_EIO_MESSAGE) {
                check_sio(data, dlen, name_size);
            }

        } else if (rc != -1 || err == NULL
                   || (type == FLEET_EIO_BINARY_B64) != (plen && pkt[0] == 'b')
                   || (type != -1 && type != FLEET_EIO_BINARY_B64))
        {
            abort();
        }
    }

    /* the packets and their separators are the whole input */
    if (count == 0 || total + count - 1 != len || off != len + 1) {
        abort();
    }

    /* the end stays the end */
    if (fleet_eio_payload_next(in, len, &off, &pkt, &plen)) {
        abort();
    }
}


/* fleet_json_escape: jansson reads back what went in */
static void
check_escape(const char *s, size_t len, size_t small)
{
    char          *out;
    size_t         n, need, cap;
    json_t        *j;
    json_error_t   e;

    cap = 6 * len + 3;
    out = malloc(cap);
    if (out == NULL) {
        return;
    }

    need = fleet_json_escape(out, cap, s, len);

    if (need == 0) {
        if (fleet_utf8_valid((const unsigned char *) s, len)) {
            abort();
        }

        free(out);
        return;
    }

    if (need < len + 2 || need >= cap || out[need] != '\0' || out[0] != '"'
        || out[need - 1] != '"')
    {
        abort();
    }

    j = json_loadb(out, need, JSON_DECODE_ANY | JSON_ALLOW_NUL, &e);

    if (!json_is_string(j) || json_string_length(j) != len
        || memcmp(json_string_value(j), s, len) != 0)
    {
        abort();
    }

    json_decref(j);

    /* a smaller buffer: all or nothing, nothing written past it */
    memset(out, 'x', cap);
    n = fleet_json_escape(out, small, s, len);

    if ((small >= need ? n != need : n != 0) || (small < cap
                                                 && out[small] != 'x'))
    {
        abort();
    }

    free(out);
}


/* the writers on a slice: their packets parse back */
static void
check_writers(const char *in, size_t len, size_t small)
{
    int                  type;
    char                *str, buf[2048], name[256], ev[256];
    size_t               n, slen, dlen, alen, half;
    json_t              *j;
    long long            id;
    const char          *data, *err, *arg, *json_arg;
    json_error_t         e;
    fleet_sio_packet_t   p;

    slen = len < 200 ? len : 200;

    str = malloc(slen + 1);
    if (str == NULL) {
        return;
    }

    memcpy(str, in, slen);
    str[slen] = '\0';
    slen = strlen(str);

    check_escape(in, len < 300 ? len : 300, small);

    /* an event named by the slice's first half, its second half as data */
    half = slen / 2;
    json_arg = str + half;

    memcpy(ev, str, half);
    ev[half] = '\0';

    n = fleet_sio_event(buf, sizeof(buf), ev, json_arg, slen - half);

    if (n) {
        if (fleet_eio_parse(buf, n, &type, &data, &dlen, &err) != 0
            || type != FLEET_EIO_MESSAGE
            || fleet_sio_parse(data, dlen, &p, &err) != 0
            || p.type != FLEET_SIO_EVENT
            || fleet_sio_event_name(p.data, p.data_len, name, sizeof(name),
                                    &arg, &alen) != 0
            || strcmp(name, ev) != 0
            || (slen - half ? !fleet_sio_json_valid(json_arg, slen - half)
                : arg != NULL))
        {
            abort();
        }

    } else if (fleet_utf8_valid((unsigned char *) ev, half)
               && (slen == half
                   || fleet_sio_json_valid(json_arg, slen - half)))
    {
        abort();        /* 2 KiB always fits 200 escaped bytes */
    }

    /* the slice as a whole: the data of an ack, a message, a namespace */

    id = 0;
    for (n = 0; n < 7 && n < len; n++) {
        id = (id << 8) | (unsigned char) in[n];
    }

    n = fleet_sio_ack(buf, sizeof(buf), id, str, slen);

    if (n) {
        if (fleet_sio_parse(buf + 1, n - 1, &p, &err) != 0
            || p.type != FLEET_SIO_ACK || p.ack_id != id)
        {
            abort();
        }

    } else if (id <= FLEET_SIO_MAX_ACK_ID
               && (slen == 0 || fleet_sio_json_valid(str, slen)))
    {
        abort();
    }

    n = fleet_sio_connect_error(buf, sizeof(buf), "/fuzz", str);

    if (n ? (fleet_sio_parse(buf + 1, n - 1, &p, &err) != 0
             || p.type != FLEET_SIO_CONNECT_ERROR || p.nsp_len != 5)
        : fleet_utf8_valid((unsigned char *) str, slen))
    {
        abort();
    }

    n = fleet_sio_connect_error(buf, sizeof(buf), str, "x");

    if (n && (fleet_sio_parse(buf + 1, n - 1, &p, &err) != 0
              || p.type != FLEET_SIO_CONNECT_ERROR
              || (slen > 1 && (p.nsp_len != slen
                               || memcmp(p.nsp, str, slen) != 0))))
    {
        abort();
    }

    n = fleet_eio_open(buf, small < sizeof(buf) ? small : sizeof(buf), str,
                       25000, 20000, len, len & 1);

    if (n) {
        if (fleet_eio_parse(buf, n, &type, &data, &dlen, &err) != 0
            || type != FLEET_EIO_OPEN)
        {
            abort();
        }

        j = json_loadb(data, dlen, JSON_ALLOW_NUL, &e);

        if (!json_is_object(j)
            || strcmp(json_string_value(json_object_get(j, "sid")), str) != 0
            || json_integer_value(json_object_get(j, "maxPayload"))
               != (json_int_t) len)
        {
            abort();
        }

        json_decref(j);
    }

    free(str);
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t       name_size, small;
    const char  *in;

    if (size < 1) {
        return 0;
    }

    name_size = 1 + (data[0] & 63);
    small = (size_t) data[0] * 3;

    in = (const char *) data + 1;
    size--;

    check_payload(in, size, name_size);

    /* the whole input as one Socket.IO packet and one event's data */
    check_sio(in, size, name_size);

    check_writers(in, size, small);

    return 0;
}
