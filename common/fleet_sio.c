/*
 * fleetgate: Engine.IO v4 / Socket.IO v5 text packet codec (see
 * fleet_sio.h).
 */

#include "fleet_sio.h"

#include <stdio.h>
#include <string.h>


/* the "/" namespace and the empty span handed out for absent parts */
static const char  fleet_sio_root[] = "/";
static const char  fleet_sio_empty[] = "";


/* ------------------------------------------------------------------ */
/* UTF-8 and JSON scanning: no allocation, no recursion */

/*
 * The length (1-4) of the valid UTF-8 character at s[i], or 0: no
 * overlongs, surrogates or code points above U+10FFFF.
 */
static size_t
fleet_sio_utf8_char(const char *s, size_t i, size_t len)
{
    size_t          n, k;
    unsigned char   c, c1, lo, hi;
    const unsigned char  *p = (const unsigned char *) s;

    c = p[i];

    if (c < 0x80) {
        return 1;
    }

    lo = 0x80;
    hi = 0xbf;

    if (c >= 0xc2 && c <= 0xdf) {
        n = 2;

    } else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        if (c == 0xe0) {
            lo = 0xa0;              /* overlong */
        } else if (c == 0xed) {
            hi = 0x9f;              /* surrogates */
        }

    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        if (c == 0xf0) {
            lo = 0x90;              /* overlong */
        } else if (c == 0xf4) {
            hi = 0x8f;              /* above U+10FFFF */
        }

    } else {
        return 0;
    }

    if (len - i < n) {
        return 0;
    }

    c1 = p[i + 1];
    if (c1 < lo || c1 > hi) {
        return 0;
    }

    for (k = 2; k < n; k++) {
        if ((p[i + k] & 0xc0) != 0x80) {
            return 0;
        }
    }

    return n;
}


static int
fleet_sio_utf8_valid(const char *s, size_t len)
{
    size_t  i, n;

    for (i = 0; i < len; i += n) {
        n = fleet_sio_utf8_char(s, i, len);
        if (n == 0) {
            return 0;
        }
    }

    return 1;
}


static size_t
fleet_sio_skip_ws(const char *s, size_t i, size_t len)
{
    while (i < len && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n'
                       || s[i] == '\r'))
    {
        i++;
    }

    return i;
}


static int
fleet_sio_hex(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }

    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }

    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }

    return -1;
}


/* the 4 hex digits at s[i]: their value, or -1 */
static long
fleet_sio_hex4(const char *s, size_t i, size_t len)
{
    int     h;
    long    v;
    size_t  k;

    if (len - i < 4) {
        return -1;
    }

    v = 0;

    for (k = 0; k < 4; k++) {
        h = fleet_sio_hex(s[i + k]);
        if (h < 0) {
            return -1;
        }

        v = v * 16 + h;
    }

    return v;
}


/* s[i] is '"'; returns the index after the closing quote, or 0 */
static size_t
fleet_sio_json_string(const char *s, size_t i, size_t len)
{
    size_t         n;
    unsigned char  c;

    for (i++; i < len; i += n) {
        c = (unsigned char) s[i];

        if (c == '"') {
            return i + 1;
        }

        if (c < 0x20) {
            return 0;
        }

        if (c == '\\') {
            if (i + 1 >= len) {
                return 0;
            }

            switch (s[i + 1]) {
            case '"': case '\\': case '/': case 'b': case 'f': case 'n':
            case 'r': case 't':
                n = 2;
                break;

            case 'u':
                /* grammar only: an unpaired surrogate is valid JSON */
                if (fleet_sio_hex4(s, i + 2, len) < 0) {
                    return 0;
                }

                n = 6;
                break;

            default:
                return 0;
            }

            continue;
        }

        n = fleet_sio_utf8_char(s, i, len);
        if (n == 0) {
            return 0;
        }
    }

    return 0;
}


static size_t
fleet_sio_digits(const char *s, size_t i, size_t len)
{
    while (i < len && s[i] >= '0' && s[i] <= '9') {
        i++;
    }

    return i;
}


/* -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?; the end, or 0 */
static size_t
fleet_sio_json_number(const char *s, size_t i, size_t len)
{
    size_t  j;

    if (s[i] == '-') {
        i++;
    }

    if (i >= len || s[i] < '0' || s[i] > '9') {
        return 0;
    }

    i = (s[i] == '0') ? i + 1 : fleet_sio_digits(s, i, len);

    if (i < len && s[i] == '.') {
        j = fleet_sio_digits(s, i + 1, len);
        if (j == i + 1) {
            return 0;
        }

        i = j;
    }

    if (i < len && (s[i] == 'e' || s[i] == 'E')) {
        i++;

        if (i < len && (s[i] == '+' || s[i] == '-')) {
            i++;
        }

        j = fleet_sio_digits(s, i, len);
        if (j == i) {
            return 0;
        }

        i = j;
    }

    return i;
}


static size_t
fleet_sio_json_literal(const char *s, size_t i, size_t len)
{
    static const char  *lit[] = { "true", "false", "null" };
    size_t              k, n;

    for (k = 0; k < 3; k++) {
        n = strlen(lit[k]);

        if (len - i >= n && memcmp(s + i, lit[k], n) == 0) {
            return i + n;
        }
    }

    return 0;
}


/* a scalar at s[i] (i < len): the index after it, or 0 */
static size_t
fleet_sio_json_scalar(const char *s, size_t i, size_t len)
{
    if (s[i] == '"') {
        return fleet_sio_json_string(s, i, len);
    }

    if (s[i] == '-' || (s[i] >= '0' && s[i] <= '9')) {
        return fleet_sio_json_number(s, i, len);
    }

    return fleet_sio_json_literal(s, i, len);
}


/* in an object, after '{' or ',': "key" ws ':' ws; the index after, or 0 */
static size_t
fleet_sio_json_key(const char *s, size_t i, size_t len)
{
    i = fleet_sio_skip_ws(s, i, len);

    if (i >= len || s[i] != '"') {
        return 0;
    }

    i = fleet_sio_json_string(s, i, len);
    if (i == 0) {
        return 0;
    }

    i = fleet_sio_skip_ws(s, i, len);

    if (i >= len || s[i] != ':') {
        return 0;
    }

    return i + 1;
}


/*
 * One JSON value at s[i] (leading whitespace skipped): the index after it
 * (trailing whitespace not included), or 0 when it is invalid, cut short
 * or nested deeper than FLEET_SIO_MAX_DEPTH.  Iterative: the containers
 * open so far are kept in a small stack.
 */
static size_t
fleet_sio_json_value(const char *s, size_t i, size_t len)
{
    char    closer;
    size_t  depth;
    char    stack[FLEET_SIO_MAX_DEPTH];

    depth = 0;

    for ( ;; ) {

        /* a value is expected at i */

        i = fleet_sio_skip_ws(s, i, len);
        if (i >= len) {
            return 0;
        }

        if (s[i] == '[' || s[i] == '{') {
            if (depth == FLEET_SIO_MAX_DEPTH) {
                return 0;
            }

            closer = (s[i] == '[') ? ']' : '}';
            stack[depth++] = closer;

            i = fleet_sio_skip_ws(s, i + 1, len);

            if (i < len && s[i] == closer) {
                i++;
                depth--;

            } else {
                if (closer == '}') {
                    i = fleet_sio_json_key(s, i, len);
                    if (i == 0) {
                        return 0;
                    }
                }

                continue;
            }

        } else {
            i = fleet_sio_json_scalar(s, i, len);
            if (i == 0) {
                return 0;
            }
        }

        /* after a value: close containers until one goes on */

        for ( ;; ) {
            if (depth == 0) {
                return i;
            }

            i = fleet_sio_skip_ws(s, i, len);
            if (i >= len) {
                return 0;
            }

            if (s[i] == stack[depth - 1]) {
                i++;
                depth--;
                continue;
            }

            if (s[i] != ',') {
                return 0;
            }

            i++;

            if (stack[depth - 1] == '}') {
                i = fleet_sio_json_key(s, i, len);
                if (i == 0) {
                    return 0;
                }
            }

            break;
        }
    }
}


int
fleet_sio_json_valid(const char *s, size_t len)
{
    size_t  end;

    if (s == NULL || len == 0) {
        return 0;
    }

    end = fleet_sio_json_value(s, 0, len);
    if (end == 0) {
        return 0;
    }

    return fleet_sio_skip_ws(s, end, len) == len;
}


/* exactly one value starting at s[0] and ending at s[len - 1] */
static int
fleet_sio_json_exact(const char *s, size_t len)
{
    return len > 0 && fleet_sio_json_value(s, 0, len) == len;
}


/* ------------------------------------------------------------------ */
/* Engine.IO */

int
fleet_eio_payload_next(const char *payload, size_t len, size_t *off,
    const char **pkt, size_t *pkt_len)
{
    size_t       start, i;
    const char  *sep;

    *pkt = NULL;
    *pkt_len = 0;

    /* len + 1 marks the end; no buffer is SIZE_MAX bytes long */
    if (*off > len || len == (size_t) -1) {
        return 0;
    }

    start = *off;

    if (payload == NULL) {
        *pkt = fleet_sio_empty;
        *off = len + 1;
        return 1;
    }

    sep = memchr(payload + start, FLEET_EIO_SEPARATOR, len - start);

    if (sep == NULL) {
        i = len;
        *off = len + 1;

    } else {
        i = (size_t) (sep - payload);
        *off = i + 1;
    }

    *pkt = payload + start;
    *pkt_len = i - start;

    return 1;
}


int
fleet_eio_parse(const char *pkt, size_t len, int *type, const char **data,
    size_t *data_len, const char **err)
{
    *type = -1;
    *data = fleet_sio_empty;
    *data_len = 0;

    if (pkt == NULL || len == 0) {
        *err = "empty Engine.IO packet";
        return -1;
    }

    if (pkt[0] == 'b') {
        *type = FLEET_EIO_BINARY_B64;
        *data = pkt + 1;
        *data_len = len - 1;
        *err = "binary (base64) Engine.IO packets are not supported";
        return -1;
    }

    if (pkt[0] < '0' || pkt[0] > '6') {
        *err = "unknown Engine.IO packet type";
        return -1;
    }

    *type = pkt[0] - '0';
    *data = pkt + 1;
    *data_len = len - 1;

    return 0;
}


/* ------------------------------------------------------------------ */
/* Socket.IO */

static void
fleet_sio_reset(fleet_sio_packet_t *p)
{
    p->type = -1;
    p->attachments = 0;
    p->nsp = fleet_sio_root;
    p->nsp_len = 1;
    p->ack_id = -1;
    p->data = fleet_sio_empty;
    p->data_len = 0;
}


/* a namespace: '/', at most FLEET_SIO_MAX_NSP bytes, no ',' or controls */
static int
fleet_sio_nsp_valid(const char *s, size_t len)
{
    size_t  i;

    if (len == 0 || len > FLEET_SIO_MAX_NSP || s[0] != '/') {
        return 0;
    }

    for (i = 0; i < len; i++) {
        if ((unsigned char) s[i] < 0x20 || s[i] == 0x7f || s[i] == ',') {
            return 0;
        }
    }

    return fleet_sio_utf8_valid(s, len);
}


/* the data of a packet of this type; NULL or the reason it is refused */
static const char *
fleet_sio_check_data(int type, const char *d, size_t len)
{
    size_t  i;

    switch (type) {

    case FLEET_SIO_CONNECT:
        if (len == 0) {
            return NULL;
        }

        if (d[0] != '{' || !fleet_sio_json_exact(d, len)) {
            return "CONNECT data must be a JSON object";
        }

        return NULL;

    case FLEET_SIO_DISCONNECT:
        return len ? "DISCONNECT takes no data" : NULL;

    case FLEET_SIO_EVENT:
    case FLEET_SIO_BINARY_EVENT:
        if (len == 0) {
            return "event without data";
        }

        if (d[0] != '[' || !fleet_sio_json_exact(d, len)) {
            return "event data must be a JSON array";
        }

        i = fleet_sio_skip_ws(d, 1, len);

        if (d[i] != '"') {      /* valid: i < len, ']' at worst */
            return "event name must be a string";
        }

        return NULL;

    case FLEET_SIO_ACK:
    case FLEET_SIO_BINARY_ACK:
        if (len == 0 || d[0] != '[' || !fleet_sio_json_exact(d, len)) {
            return "ACK data must be a JSON array";
        }

        return NULL;

    case FLEET_SIO_CONNECT_ERROR:
        if (len == 0 || d[0] != '{' || !fleet_sio_json_exact(d, len)) {
            return "CONNECT_ERROR data must be a JSON object";
        }

        return NULL;

    default:
        return "unknown Socket.IO packet type";
    }
}


/* the ack id rules of a type: NULL or the reason */
static const char *
fleet_sio_check_ack(int type, long long ack_id)
{
    if (ack_id > FLEET_SIO_MAX_ACK_ID) {
        return "ack id too large";
    }

    switch (type) {

    case FLEET_SIO_ACK:
    case FLEET_SIO_BINARY_ACK:
        return ack_id < 0 ? "ACK without an ack id" : NULL;

    case FLEET_SIO_EVENT:
    case FLEET_SIO_BINARY_EVENT:
        return NULL;

    default:
        return ack_id >= 0 ? "ack id not allowed on this packet type" : NULL;
    }
}


static int
fleet_sio_fail(fleet_sio_packet_t *p, const char **err, const char *why)
{
    fleet_sio_reset(p);
    *err = why;
    return -1;
}


int
fleet_sio_parse(const char *s, size_t len, fleet_sio_packet_t *p,
    const char **err)
{
    int          n;
    size_t       i, j;
    long long    id;
    const char  *comma, *why;

    fleet_sio_reset(p);

    if (s == NULL || len == 0) {
        return fleet_sio_fail(p, err, "empty Socket.IO packet");
    }

    if (s[0] < '0' || s[0] > '6') {
        return fleet_sio_fail(p, err, "unknown Socket.IO packet type");
    }

    p->type = s[0] - '0';
    i = 1;

    /* <attachments>- */

    if (p->type == FLEET_SIO_BINARY_EVENT || p->type == FLEET_SIO_BINARY_ACK)
    {
        j = fleet_sio_digits(s, i, len);

        if (j == i || j - i > 4 || j >= len || s[j] != '-') {
            return fleet_sio_fail(p, err, "invalid attachment count");
        }

        for (n = 0; i < j; i++) {
            n = n * 10 + (s[i] - '0');
        }

        if (n > FLEET_SIO_MAX_ATTACH) {
            return fleet_sio_fail(p, err, "too many attachments");
        }

        p->attachments = n;
        i = j + 1;
    }

    /* <nsp>, */

    if (i < len && s[i] == '/') {
        j = len - i;
        if (j > FLEET_SIO_MAX_NSP + 1) {
            j = FLEET_SIO_MAX_NSP + 1;
        }

        comma = memchr(s + i, ',', j);
        if (comma == NULL) {
            return fleet_sio_fail(p, err, j > FLEET_SIO_MAX_NSP
                                  ? "namespace too long"
                                  : "namespace not terminated by ','");
        }

        j = (size_t) (comma - s);

        if (!fleet_sio_nsp_valid(s + i, j - i)) {
            return fleet_sio_fail(p, err, "invalid namespace");
        }

        p->nsp = s + i;
        p->nsp_len = j - i;
        i = j + 1;
    }

    /* <ack id> */

    j = fleet_sio_digits(s, i, len);

    if (j > i) {
        if (j - i > FLEET_SIO_MAX_ACK_DIGITS) {
            return fleet_sio_fail(p, err, "ack id too long");
        }

        for (id = 0; i < j; i++) {
            id = id * 10 + (s[i] - '0');
        }

        p->ack_id = id;
    }

    why = fleet_sio_check_ack(p->type, p->ack_id);
    if (why != NULL) {
        return fleet_sio_fail(p, err, why);
    }

    /* <json> */

    why = fleet_sio_check_data(p->type, s + i, len - i);
    if (why != NULL) {
        return fleet_sio_fail(p, err, why);
    }

    p->data = s + i;
    p->data_len = len - i;

    return 0;
}


/* appends the code point as UTF-8 to name; 0, or -1 if it does not fit */
static int
fleet_sio_put_utf8(char *name, size_t name_size, size_t *n, unsigned long cp)
{
    size_t         k, need;
    unsigned char  b[4];

    if (cp < 0x80) {
        b[0] = (unsigned char) cp;
        need = 1;

    } else if (cp < 0x800) {
        b[0] = (unsigned char) (0xc0 | (cp >> 6));
        b[1] = (unsigned char) (0x80 | (cp & 0x3f));
        need = 2;

    } else if (cp < 0x10000) {
        b[0] = (unsigned char) (0xe0 | (cp >> 12));
        b[1] = (unsigned char) (0x80 | ((cp >> 6) & 0x3f));
        b[2] = (unsigned char) (0x80 | (cp & 0x3f));
        need = 3;

    } else {
        b[0] = (unsigned char) (0xf0 | (cp >> 18));
        b[1] = (unsigned char) (0x80 | ((cp >> 12) & 0x3f));
        b[2] = (unsigned char) (0x80 | ((cp >> 6) & 0x3f));
        b[3] = (unsigned char) (0x80 | (cp & 0x3f));
        need = 4;
    }

    if (name_size - 1 - *n < need) {
        return -1;
    }

    for (k = 0; k < need; k++) {
        name[(*n)++] = (char) b[k];
    }

    return 0;
}


/*
 * Unescapes the body of a JSON string already checked by
 * fleet_sio_json_string (s[0..len) between the quotes) into name.
 */
static int
fleet_sio_unescape(const char *s, size_t len, char *name, size_t name_size)
{
    char           c;
    long           lo;
    size_t         i, n;
    unsigned long  cp;

    n = 0;

    for (i = 0; i < len; ) {
        c = s[i];

        if (c != '\\') {
            if (n >= name_size - 1) {
                return -1;
            }

            name[n++] = c;
            i++;
            continue;
        }

        c = s[i + 1];
        i += 2;

        switch (c) {
        case 'b': cp = '\b'; break;
        case 'f': cp = '\f'; break;
        case 'n': cp = '\n'; break;
        case 'r': cp = '\r'; break;
        case 't': cp = '\t'; break;
        case 'u':
            cp = (unsigned long) fleet_sio_hex4(s, i, len);
            i += 4;

            if (cp >= 0xdc00 && cp <= 0xdfff) {
                return -1;              /* a low surrogate alone */
            }

            if (cp >= 0xd800 && cp <= 0xdbff) {
                if (len - i < 6 || s[i] != '\\' || s[i + 1] != 'u') {
                    return -1;
                }

                lo = fleet_sio_hex4(s, i + 2, len);
                if (lo < 0xdc00 || lo > 0xdfff) {
                    return -1;
                }

                cp = 0x10000 + ((cp - 0xd800) << 10)
                     + ((unsigned long) lo - 0xdc00);
                i += 6;
            }

            if (cp == 0) {
                return -1;              /* would end the C string */
            }

            break;
        default:                        /* '"', '\\', '/' */
            cp = (unsigned char) c;
            break;
        }

        if (fleet_sio_put_utf8(name, name_size, &n, cp) != 0) {
            return -1;
        }
    }

    name[n] = '\0';

    return 0;
}


int
fleet_sio_event_name(const char *data, size_t len, char *name,
    size_t name_size, const char **arg, size_t *arg_len)
{
    size_t  i, end;

    *arg = NULL;
    *arg_len = 0;

    if (name == NULL || name_size == 0) {
        return -1;
    }

    name[0] = '\0';

    if (data == NULL || len == 0 || data[0] != '['
        || !fleet_sio_json_exact(data, len))
    {
        return -1;
    }

    /* the array is valid: every index below stays inside it */

    i = fleet_sio_skip_ws(data, 1, len);
    if (data[i] != '"') {
        return -1;
    }

    end = fleet_sio_json_string(data, i, len);

    if (fleet_sio_unescape(data + i + 1, end - i - 2, name, name_size) != 0) {
        name[0] = '\0';
        return -1;
    }

    i = fleet_sio_skip_ws(data, end, len);

    if (data[i] == ',') {
        i = fleet_sio_skip_ws(data, i + 1, len);
        end = fleet_sio_json_value(data, i, len);

        *arg = data + i;
        *arg_len = end - i;
    }

    return 0;
}


int
fleet_sio_event_reserved(const char *name)
{
    static const char  *reserved[] = {
        "connect", "connect_error", "disconnect", "disconnecting",
        "newListener", "removeListener", NULL
    };
    const char        **r;

    if (name == NULL) {
        return 0;
    }

    for (r = reserved; *r != NULL; r++) {
        if (strcmp(name, *r) == 0) {
            return 1;
        }
    }

    return 0;
}


/* ------------------------------------------------------------------ */
/* writers: a bounded buffer that remembers running out */

typedef struct {
    char    *out;
    size_t   size;
    size_t   len;
    int      failed;
} fleet_sio_buf_t;


static void
fleet_sio_buf_init(fleet_sio_buf_t *b, char *out, size_t size)
{
    b->out = out;
    b->size = (out == NULL) ? 0 : size;
    b->len = 0;
    b->failed = 0;
}


static void
fleet_sio_put(fleet_sio_buf_t *b, const char *s, size_t n)
{
    if (b->failed || b->size - b->len < n) {
        b->failed = 1;
        return;
    }

    if (n) {
        memcpy(b->out + b->len, s, n);
        b->len += n;
    }
}


static void
fleet_sio_puts(fleet_sio_buf_t *b, const char *s)
{
    fleet_sio_put(b, s, strlen(s));
}


static void
fleet_sio_putc(fleet_sio_buf_t *b, char c)
{
    fleet_sio_put(b, &c, 1);
}


static void
fleet_sio_put_num(fleet_sio_buf_t *b, unsigned long long v)
{
    char  num[24];
    int   n;

    n = snprintf(num, sizeof(num), "%llu", v);
    fleet_sio_put(b, num, (size_t) n);
}


/* a JSON string literal for s[0..len) */
static void
fleet_sio_put_string(fleet_sio_buf_t *b, const char *s, size_t len)
{
    static const char  hex[] = "0123456789abcdef";
    char               esc[6];
    size_t             i, k, n;
    unsigned char      c;

    if (len && (s == NULL || !fleet_sio_utf8_valid(s, len))) {
        b->failed = 1;
        return;
    }

    fleet_sio_putc(b, '"');

    for (i = 0; i < len && !b->failed; i = k) {

        /* the run of bytes that pass as they are */
        for (k = i; k < len; k++) {
            c = (unsigned char) s[k];
            if (c < 0x20 || c == '"' || c == '\\') {
                break;
            }
        }

        fleet_sio_put(b, s + i, k - i);

        if (k == len) {
            break;
        }

        c = (unsigned char) s[k++];
        esc[0] = '\\';
        n = 2;

        switch (c) {
        case '"':  esc[1] = '"'; break;
        case '\\': esc[1] = '\\'; break;
        case '\b': esc[1] = 'b'; break;
        case '\f': esc[1] = 'f'; break;
        case '\n': esc[1] = 'n'; break;
        case '\r': esc[1] = 'r'; break;
        case '\t': esc[1] = 't'; break;
        default:
            esc[1] = 'u';
            esc[2] = '0';
            esc[3] = '0';
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 0xf];
            n = 6;
            break;
        }

        fleet_sio_put(b, esc, n);
    }

    fleet_sio_putc(b, '"');
}


/* the length written, with a NUL after it when there is room; or 0 */
static size_t
fleet_sio_buf_done(fleet_sio_buf_t *b)
{
    if (b->failed || b->len == 0) {
        if (b->size) {
            b->out[0] = '\0';
        }

        return 0;
    }

    if (b->len < b->size) {
        b->out[b->len] = '\0';
    }

    return b->len;
}


/* the "/nsp," prefix: none for NULL, "" and "/"; 0, or -1 if invalid */
static int
fleet_sio_put_nsp(fleet_sio_buf_t *b, const char *nsp, size_t len)
{
    if (nsp == NULL || len == 0 || (len == 1 && nsp[0] == '/')) {
        return 0;
    }

    if (!fleet_sio_nsp_valid(nsp, len)) {
        b->failed = 1;
        return -1;
    }

    fleet_sio_put(b, nsp, len);
    fleet_sio_putc(b, ',');

    return 0;
}


size_t
fleet_json_escape(char *out, size_t size, const char *s, size_t len)
{
    fleet_sio_buf_t  b;

    fleet_sio_buf_init(&b, out, size);
    fleet_sio_put_string(&b, s, len);

    return fleet_sio_buf_done(&b);
}


size_t
fleet_eio_open(char *out, size_t size, const char *sid, int ping_interval_ms,
    int ping_timeout_ms, size_t max_payload, int can_upgrade)
{
    fleet_sio_buf_t  b;

    fleet_sio_buf_init(&b, out, size);

    if (sid == NULL || ping_interval_ms < 0 || ping_timeout_ms < 0) {
        b.failed = 1;
    }

    fleet_sio_puts(&b, "0{\"sid\":");
    fleet_sio_put_string(&b, sid, sid ? strlen(sid) : 0);
    fleet_sio_puts(&b, can_upgrade ? ",\"upgrades\":[\"websocket\"]"
                                   : ",\"upgrades\":[]");
    fleet_sio_puts(&b, ",\"pingInterval\":");
    fleet_sio_put_num(&b, (unsigned long long) (ping_interval_ms < 0
                                                 ? 0 : ping_interval_ms));
    fleet_sio_puts(&b, ",\"pingTimeout\":");
    fleet_sio_put_num(&b, (unsigned long long) (ping_timeout_ms < 0
                                                 ? 0 : ping_timeout_ms));
    fleet_sio_puts(&b, ",\"maxPayload\":");
    fleet_sio_put_num(&b, (unsigned long long) max_payload);
    fleet_sio_putc(&b, '}');

    return fleet_sio_buf_done(&b);
}


size_t
fleet_eio_packet(char *out, size_t size, int type, const char *data,
    size_t data_len)
{
    fleet_sio_buf_t  b;

    fleet_sio_buf_init(&b, out, size);

    if (type < FLEET_EIO_OPEN || type > FLEET_EIO_NOOP
        || (data == NULL && data_len))
    {
        b.failed = 1;
    }

    fleet_sio_putc(&b, (char) ('0' + (type & 7)));
    fleet_sio_put(&b, data, data_len);

    return fleet_sio_buf_done(&b);
}


size_t
fleet_sio_connect_ok_nsp(char *out, size_t size, const char *nsp,
    const char *sid)
{
    fleet_sio_buf_t  b;

    fleet_sio_buf_init(&b, out, size);

    if (sid == NULL) {
        b.failed = 1;
    }

    fleet_sio_puts(&b, "40");
    (void) fleet_sio_put_nsp(&b, nsp, nsp ? strlen(nsp) : 0);
    fleet_sio_puts(&b, "{\"sid\":");
    fleet_sio_put_string(&b, sid, sid ? strlen(sid) : 0);
    fleet_sio_putc(&b, '}');

    return fleet_sio_buf_done(&b);
}


size_t
fleet_sio_connect_ok(char *out, size_t size, const char *sid)
{
    return fleet_sio_connect_ok_nsp(out, size, NULL, sid);
}


size_t
fleet_sio_connect_error(char *out, size_t size, const char *nsp,
    const char *message)
{
    fleet_sio_buf_t  b;

    fleet_sio_buf_init(&b, out, size);

    if (message == NULL) {
        b.failed = 1;
    }

    fleet_sio_puts(&b, "44");
    (void) fleet_sio_put_nsp(&b, nsp, nsp ? strlen(nsp) : 0);
    fleet_sio_puts(&b, "{\"message\":");
    fleet_sio_put_string(&b, message, message ? strlen(message) : 0);
    fleet_sio_putc(&b, '}');

    return fleet_sio_buf_done(&b);
}


/* raw JSON: nothing, or one valid value (whitespace around it allowed) */
static int
fleet_sio_raw_ok(const char *d, size_t len)
{
    return len == 0 || (d != NULL && fleet_sio_json_valid(d, len));
}


size_t
fleet_sio_event(char *out, size_t size, const char *event,
    const char *json_data, size_t data_len)
{
    fleet_sio_buf_t  b;

    fleet_sio_buf_init(&b, out, size);

    if (event == NULL || !fleet_sio_raw_ok(json_data, data_len)) {
        b.failed = 1;
    }

    fleet_sio_puts(&b, "42[");
    fleet_sio_put_string(&b, event, event ? strlen(event) : 0);

    if (data_len) {
        fleet_sio_putc(&b, ',');
        fleet_sio_put(&b, json_data, data_len);
    }

    fleet_sio_putc(&b, ']');

    return fleet_sio_buf_done(&b);
}


size_t
fleet_sio_ack(char *out, size_t size, long long ack_id, const char *json_data,
    size_t data_len)
{
    fleet_sio_buf_t  b;

    fleet_sio_buf_init(&b, out, size);

    if (ack_id < 0 || ack_id > FLEET_SIO_MAX_ACK_ID
        || !fleet_sio_raw_ok(json_data, data_len))
    {
        b.failed = 1;
    }

    fleet_sio_puts(&b, "43");
    fleet_sio_put_num(&b, (unsigned long long) (ack_id < 0 ? 0 : ack_id));
    fleet_sio_putc(&b, '[');
    fleet_sio_put(&b, json_data, data_len);
    fleet_sio_putc(&b, ']');

    return fleet_sio_buf_done(&b);
}


size_t
fleet_sio_encode(char *out, size_t size, const fleet_sio_packet_t *p)
{
    int              binary;
    fleet_sio_buf_t  b;

    fleet_sio_buf_init(&b, out, size);

    if (p == NULL || p->type < FLEET_SIO_CONNECT
        || p->type > FLEET_SIO_BINARY_ACK)
    {
        return fleet_sio_buf_done(&b);
    }

    binary = (p->type == FLEET_SIO_BINARY_EVENT
              || p->type == FLEET_SIO_BINARY_ACK);

    if ((binary ? (p->attachments < 0
                   || p->attachments > FLEET_SIO_MAX_ATTACH)
                : p->attachments != 0)
        || fleet_sio_check_ack(p->type, p->ack_id < 0 ? -1 : p->ack_id)
           != NULL
        || (p->data == NULL && p->data_len)
        || fleet_sio_check_data(p->type, p->data, p->data_len) != NULL)
    {
        b.failed = 1;
        return fleet_sio_buf_done(&b);
    }

    fleet_sio_putc(&b, '4');
    fleet_sio_putc(&b, (char) ('0' + p->type));

    if (binary) {
        fleet_sio_put_num(&b, (unsigned long long) p->attachments);
        fleet_sio_putc(&b, '-');
    }

    (void) fleet_sio_put_nsp(&b, p->nsp, p->nsp ? p->nsp_len : 0);

    if (p->ack_id >= 0) {
        fleet_sio_put_num(&b, (unsigned long long) p->ack_id);
    }

    fleet_sio_put(&b, p->data, p->data_len);

    return fleet_sio_buf_done(&b);
}
