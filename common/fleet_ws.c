/*
 * fleetgate: RFC 6455 WebSocket protocol, server side (see fleet_ws.h).
 */

#include "fleet_ws.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>


#define FLEET_WS_GUID  "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


static fleet_ws_event_e fleet_ws_fail(fleet_ws_parser_t *ps,
    fleet_ws_event_t *ev, int code, const char *why);
static int fleet_ws_header_need(const fleet_ws_parser_t *ps);
static fleet_ws_event_e fleet_ws_header_done(fleet_ws_parser_t *ps,
    fleet_ws_event_t *ev);
static int fleet_ws_reserve(fleet_ws_parser_t *ps, size_t n);
static fleet_ws_event_e fleet_ws_frame_done(fleet_ws_parser_t *ps,
    fleet_ws_event_t *ev);
static int fleet_ws_close_code_valid(int code);


static int
fleet_ws_b64char(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')
           || (c >= '0' && c <= '9') || c == '+' || c == '/';
}


int
fleet_ws_key_valid(const unsigned char *key, size_t len)
{
    size_t  i;

    /* 16 bytes encode to 22 characters and "==" */
    if (len != 24 || key[22] != '=' || key[23] != '=') {
        return 0;
    }

    for (i = 0; i < 22; i++) {
        if (!fleet_ws_b64char(key[i])) {
            return 0;
        }
    }

    return 1;
}


void
fleet_ws_accept(const unsigned char *key, size_t len, char *out)
{
    unsigned int   dlen;
    unsigned char  buf[64 + sizeof(FLEET_WS_GUID)];
    unsigned char  digest[EVP_MAX_MD_SIZE];

    /* a valid key is 24 bytes; longer ones are answered, never accepted */
    if (len > 64) {
        len = 64;
    }

    memcpy(buf, key, len);
    memcpy(buf + len, FLEET_WS_GUID, sizeof(FLEET_WS_GUID) - 1);

    dlen = 0;
    EVP_Digest(buf, len + sizeof(FLEET_WS_GUID) - 1, digest, &dlen,
               EVP_sha1(), NULL);

    EVP_EncodeBlock((unsigned char *) out, digest, (int) dlen);
}


void
fleet_ws_parser_init(fleet_ws_parser_t *ps, size_t max_message)
{
    memset(ps, 0, sizeof(fleet_ws_parser_t));
    ps->max_message = max_message;
}


void
fleet_ws_parser_free(fleet_ws_parser_t *ps)
{
    free(ps->msg);
    ps->msg = NULL;
    ps->msg_len = 0;
    ps->msg_cap = 0;
    ps->msg_opcode = 0;
    ps->msg_delivered = 0;
}


fleet_ws_event_e
fleet_ws_parse(fleet_ws_parser_t *ps, unsigned char *in, size_t len,
    size_t *used, fleet_ws_event_t *ev)
{
    size_t            i, n, k;
    unsigned char    *dst;
    fleet_ws_event_e  rc;

    memset(ev, 0, sizeof(fleet_ws_event_t));
    *used = 0;

    if (ps->failed) {
        *used = len;
        ev->type = FLEET_WS_ERROR;
        ev->close_code = FLEET_WS_CLOSE_PROTOCOL;
        ev->error = "connection already failed";
        return FLEET_WS_ERROR;
    }

    if (ps->msg_delivered) {
        /* the caller is done with the last message: an idle connection
         * holds no buffer */
        fleet_ws_parser_free(ps);
    }

    i = 0;

    for ( ;; ) {

        if (!ps->in_payload) {
            while (ps->hdr_len < (unsigned) fleet_ws_header_need(ps)
                   && i < len)
            {
                ps->hdr[ps->hdr_len++] = in[i++];
            }

            if (ps->hdr_len < (unsigned) fleet_ws_header_need(ps)) {
                *used = i;
                return FLEET_WS_AGAIN;
            }

            rc = fleet_ws_header_done(ps, ev);
            if (rc != FLEET_WS_AGAIN) {
                *used = len;
                return rc;
            }
        }

        n = len - i;
        if (n > ps->remaining) {
            n = (size_t) ps->remaining;
        }

        if (n == 0) {
            /* an empty frame */

        } else if (ps->opcode & 0x8) {
            dst = ps->ctl + ps->ctl_len;
            ps->ctl_len += n;

            for (k = 0; k < n; k++) {
                dst[k] = in[i + k] ^ ps->mask[(ps->mask_off + k) & 3];
            }

        } else {
            if (fleet_ws_reserve(ps, n) != 0) {
                *used = len;
                return fleet_ws_fail(ps, ev, FLEET_WS_CLOSE_INTERNAL,
                                     "out of memory");
            }

            dst = ps->msg + ps->msg_len;
            ps->msg_len += n;

            for (k = 0; k < n; k++) {
                dst[k] = in[i + k] ^ ps->mask[(ps->mask_off + k) & 3];
            }
        }

        ps->mask_off = (ps->mask_off + n) & 3;
        ps->remaining -= n;
        i += n;

        if (ps->remaining) {
            *used = i;
            return FLEET_WS_AGAIN;
        }

        ps->in_payload = 0;

        rc = fleet_ws_frame_done(ps, ev);

        if (rc != FLEET_WS_AGAIN) {
            *used = (rc == FLEET_WS_ERROR) ? len : i;
            return rc;
        }
    }
}


/* bytes of header this frame has: known once the first two are in */

static int
fleet_ws_header_need(const fleet_ws_parser_t *ps)
{
    int  need, len7;

    if (ps->hdr_len < 2) {
        return 2;
    }

    len7 = ps->hdr[1] & 0x7f;
    need = 2 + ((ps->hdr[1] & 0x80) ? 4 : 0);

    if (len7 == 126) {
        need += 2;

    } else if (len7 == 127) {
        need += 8;
    }

    return need;
}


static fleet_ws_event_e
fleet_ws_header_done(fleet_ws_parser_t *ps, fleet_ws_event_t *ev)
{
    int            op, len7, i;
    uint64_t       plen;
    unsigned char *p;

    p = ps->hdr;
    op = p[0] & 0x0f;
    len7 = p[1] & 0x7f;

    if (p[0] & 0x70) {
        /* no extension was negotiated */
        return fleet_ws_fail(ps, ev, FLEET_WS_CLOSE_PROTOCOL,
                             "reserved bits set");
    }

    if (!(p[1] & 0x80)) {
        return fleet_ws_fail(ps, ev, FLEET_WS_CLOSE_PROTOCOL,
                             "client frame is not masked");
    }

    p += 2;

    if (len7 == 126) {
        plen = ((uint64_t) p[0] << 8) | p[1];
        p += 2;

        if (plen < 126) {
            return fleet_ws_fail(ps, ev, FLEET_WS_CLOSE_PROTOCOL,
                                 "length not minimally encoded");
        }

    } else if (len7 == 127) {
        plen = 0;

        for (i = 0; i < 8; i++) {
            plen = (plen << 8) | p[i];
        }

        p += 8;

        if (plen >> 63) {
            return fleet_ws_fail(ps, ev, FLEET_WS_CLOSE_PROTOCOL,
                                 "length has its top bit set");
        }

        if (plen <= 0xffff) {
            return fleet_ws_fail(ps, ev, FLEET_WS_CLOSE_PROTOCOL,
                                 "length not minimally encoded");
        }

    } else {
        plen = (uint64_t) len7;
    }

    memcpy(ps->mask, p, 4);

    ps->fin = (ps->hdr[0] & 0x80) ? 1 : 0;
    ps->opcode = op;
    ps->remaining = plen;
    ps->mask_off = 0;
    ps->hdr_len = 0;
    ps->in_payload = 1;

    switch (op) {

    case FLEET_WS_OP_CLOSE:
    case FLEET_WS_OP_PING:
    case FLEET_WS_OP_PONG:
        if (!ps->fin) {
            return fleet_ws_fail(ps, ev, FLEET_WS_CLOSE_PROTOCOL,
                                 "fragmented control frame");
        }

        if (plen > FLEET_WS_MAX_CONTROL) {
            return fleet_ws_fail(ps, ev, FLEET_WS_CLOSE_PROTOCOL,
                                 "control frame longer than 125 bytes");
        }

        ps->ctl_len = 0;
        break;

    case FLEET_WS_OP_CONT:
        if (ps->msg_opcode == 0) {
            return fleet_ws_fail(ps, ev, FLEET_WS_CLOSE_PROTOCOL,
                                 "continuation frame without a message");
        }

        break;

    case FLEET_WS_OP_TEXT:
    case FLEET_WS_OP_BINARY:
        if (ps->msg_opcode != 0) {
            return fleet_ws_fail(ps, ev, FLEET_WS_CLOSE_PROTOCOL,
                                 "new message inside a fragmented one");
        }

        ps->msg_opcode = op;
        break;

    default:
        return fleet_ws_fail(ps, ev, FLEET_WS_CLOSE_PROTOCOL,
                             "unknown opcode");
    }

    if (!(op & 0x8) && plen > ps->max_message - ps->msg_len) {
        return fleet_ws_fail(ps, ev, FLEET_WS_CLOSE_TOO_BIG,
                             "message too big");
    }

    return FLEET_WS_AGAIN;
}


/* room for n more message bytes; grows with the data that arrives, not
 * with the length a frame announces */

static int
fleet_ws_reserve(fleet_ws_parser_t *ps, size_t n)
{
    size_t          need, cap, whole;
    unsigned char  *p;

    need = ps->msg_len + n;

    if (need <= ps->msg_cap) {
        return 0;
    }

    whole = ps->msg_len + (size_t) ps->remaining;
    cap = ps->msg_cap ? ps->msg_cap * 2 : 256;

    if (cap > whole) {
        cap = whole;
    }

    if (cap < need) {
        cap = need;
    }

    p = realloc(ps->msg, cap);
    if (p == NULL) {
        return -1;
    }

    ps->msg = p;
    ps->msg_cap = cap;

    return 0;
}


static fleet_ws_event_e
fleet_ws_frame_done(fleet_ws_parser_t *ps, fleet_ws_event_t *ev)
{
    int  code;

    switch (ps->opcode) {

    case FLEET_WS_OP_PING:
    case FLEET_WS_OP_PONG:
        ev->type = (ps->opcode == FLEET_WS_OP_PING) ? FLEET_WS_PING
                                                     : FLEET_WS_PONG;
        ev->data = ps->ctl;
        ev->len = ps->ctl_len;
        return ev->type;

    case FLEET_WS_OP_CLOSE:
        if (ps->ctl_len == 1) {
            return fleet_ws_fail(ps, ev, FLEET_WS_CLOSE_PROTOCOL,
                                 "close frame with a one-byte payload");
        }

        code = FLEET_WS_CLOSE_NO_STATUS;

        if (ps->ctl_len >= 2) {
            code = (ps->ctl[0] << 8) | ps->ctl[1];

            if (!fleet_ws_close_code_valid(code)) {
                return fleet_ws_fail(ps, ev, FLEET_WS_CLOSE_PROTOCOL,
                                     "invalid close code");
            }

            if (!fleet_utf8_valid(ps->ctl + 2, ps->ctl_len - 2)) {
                return fleet_ws_fail(ps, ev, FLEET_WS_CLOSE_BAD_DATA,
                                     "close reason is not UTF-8");
            }
        }

        ev->type = FLEET_WS_CLOSE;
        ev->close_code = code;
        ev->data = ps->ctl + (ps->ctl_len >= 2 ? 2 : 0);
        ev->len = ps->ctl_len >= 2 ? ps->ctl_len - 2 : 0;
        ps->failed = 1;     /* nothing may follow a close */
        return FLEET_WS_CLOSE;

    default:
        if (!ps->fin) {
            return FLEET_WS_AGAIN;
        }

        if (ps->msg_opcode == FLEET_WS_OP_TEXT
            && !fleet_utf8_valid(ps->msg, ps->msg_len))
        {
            return fleet_ws_fail(ps, ev, FLEET_WS_CLOSE_BAD_DATA,
                                 "text message is not UTF-8");
        }

        ev->type = FLEET_WS_MESSAGE;
        ev->opcode = ps->msg_opcode;
        ev->data = ps->msg ? ps->msg : (const unsigned char *) "";
        ev->len = ps->msg_len;
        ps->msg_delivered = 1;
        return FLEET_WS_MESSAGE;
    }
}


static fleet_ws_event_e
fleet_ws_fail(fleet_ws_parser_t *ps, fleet_ws_event_t *ev, int code,
    const char *why)
{
    fleet_ws_parser_free(ps);

    ps->failed = 1;
    ev->type = FLEET_WS_ERROR;
    ev->close_code = code;
    ev->error = why;

    return FLEET_WS_ERROR;
}


static int
fleet_ws_close_code_valid(int code)
{
    return (code >= 1000 && code <= 1003)
           || (code >= 1007 && code <= 1014)
           || (code >= 3000 && code <= 4999);
}


size_t
fleet_ws_frame_header(unsigned char *out, int opcode, uint64_t len)
{
    int  i;

    /* cppcheck's cross-file check misreads the callers' arrays */
    /* cppcheck-suppress ctuArrayIndex */
    out[0] = (unsigned char) (0x80 | (opcode & 0x0f));

    if (len < 126) {
        out[1] = (unsigned char) len;
        return 2;
    }

    if (len <= 0xffff) {
        out[1] = 126;
        out[2] = (unsigned char) (len >> 8);
        out[3] = (unsigned char) len;
        return 4;
    }

    out[1] = 127;

    for (i = 0; i < 8; i++) {
        out[2 + i] = (unsigned char) (len >> (56 - 8 * i));
    }

    return 10;
}


size_t
fleet_ws_close_payload(unsigned char *out, int code, const char *reason)
{
    size_t  n;

    /* cppcheck-suppress ctuArrayIndex */
    out[0] = (unsigned char) (code >> 8);
    out[1] = (unsigned char) code;

    n = reason ? strlen(reason) : 0;

    /* cut at a character boundary so the reason stays UTF-8 */
    if (n > FLEET_WS_MAX_CONTROL - 2) {
        n = FLEET_WS_MAX_CONTROL - 2;

        while (n && ((unsigned char) reason[n] & 0xc0) == 0x80) {
            n--;
        }
    }

    if (n) {
        memcpy(out + 2, reason, n);
    }

    return n + 2;
}


int
fleet_utf8_valid(const unsigned char *p, size_t len)
{
    size_t    i, n, k;
    uint32_t  cp, min;

    i = 0;

    while (i < len) {
        if (p[i] < 0x80) {
            i++;
            continue;
        }

        if ((p[i] & 0xe0) == 0xc0) {
            n = 1; cp = p[i] & 0x1f; min = 0x80;

        } else if ((p[i] & 0xf0) == 0xe0) {
            n = 2; cp = p[i] & 0x0f; min = 0x800;

        } else if ((p[i] & 0xf8) == 0xf0) {
            n = 3; cp = p[i] & 0x07; min = 0x10000;

        } else {
            return 0;
        }

        if (len - i <= n) {
            return 0;
        }

        for (k = 1; k <= n; k++) {
            if ((p[i + k] & 0xc0) != 0x80) {
                return 0;
            }

            cp = (cp << 6) | (p[i + k] & 0x3f);
        }

        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
            return 0;
        }

        i += n + 1;
    }

    return 1;
}
