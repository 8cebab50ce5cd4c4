/*
 * fleetgate: RFC 6455 WebSocket protocol, server side.  Pure functions, no
 * nginx types: the handshake key, an incremental frame parser that
 * assembles messages, and the frame header writer.  The nginx side feeds
 * it bytes; the unit tests and the fuzzer do the same.
 */

#ifndef FLEET_WS_H
#define FLEET_WS_H

#include <stddef.h>
#include <stdint.h>

#define FLEET_WS_ACCEPT_LEN     28      /* base64 of a SHA-1 digest */
#define FLEET_WS_MAX_HEADER     10      /* a server frame's header */
#define FLEET_WS_MAX_CONTROL    125

#define FLEET_WS_OP_CONT        0x0
#define FLEET_WS_OP_TEXT        0x1
#define FLEET_WS_OP_BINARY      0x2
#define FLEET_WS_OP_CLOSE       0x8
#define FLEET_WS_OP_PING        0x9
#define FLEET_WS_OP_PONG        0xa

#define FLEET_WS_CLOSE_NORMAL       1000
#define FLEET_WS_CLOSE_GOING_AWAY   1001
#define FLEET_WS_CLOSE_PROTOCOL     1002
#define FLEET_WS_CLOSE_UNSUPPORTED  1003
#define FLEET_WS_CLOSE_NO_STATUS    1005
#define FLEET_WS_CLOSE_BAD_DATA     1007
#define FLEET_WS_CLOSE_POLICY       1008
#define FLEET_WS_CLOSE_TOO_BIG      1009
#define FLEET_WS_CLOSE_INTERNAL     1011


typedef enum {
    FLEET_WS_AGAIN = 0,         /* all input consumed, no event yet */
    FLEET_WS_MESSAGE,           /* a whole text or binary message */
    FLEET_WS_PING,
    FLEET_WS_PONG,
    FLEET_WS_CLOSE,             /* the peer's close; code and reason */
    FLEET_WS_ERROR              /* close the connection with close_code */
} fleet_ws_event_e;


typedef struct {
    fleet_ws_event_e     type;
    int                  opcode;        /* of a message */
    const unsigned char *data;          /* valid until the next call */
    size_t               len;
    int                  close_code;    /* FLEET_WS_CLOSE, FLEET_WS_ERROR */
    const char          *error;         /* why, for the log */
} fleet_ws_event_t;


/*
 * The parser keeps a partial frame header and the message being assembled
 * (malloc'd, at most max_message bytes, freed once delivered): an idle
 * connection holds no buffer.
 */
typedef struct {
    size_t               max_message;

    unsigned char        hdr[14];
    unsigned             hdr_len;
    unsigned             in_payload:1;
    unsigned             fin:1;
    unsigned             failed:1;
    int                  opcode;
    unsigned char        mask[4];
    uint64_t             remaining;
    unsigned             mask_off;

    int                  msg_opcode;    /* 0: no message under way */
    unsigned char       *msg;
    size_t               msg_len;
    size_t               msg_cap;
    unsigned             msg_delivered:1;

    unsigned char        ctl[FLEET_WS_MAX_CONTROL];
    size_t               ctl_len;
} fleet_ws_parser_t;


/* 1 when key is base64 of 16 bytes (RFC 6455 4.2.1), else 0 */
int fleet_ws_key_valid(const unsigned char *key, size_t len);

/* Sec-WebSocket-Accept for a key; out gets FLEET_WS_ACCEPT_LEN bytes + NUL */
void fleet_ws_accept(const unsigned char *key, size_t len, char *out);

void fleet_ws_parser_init(fleet_ws_parser_t *ps, size_t max_message);
void fleet_ws_parser_free(fleet_ws_parser_t *ps);

/*
 * Consumes input (unmasked into the parser's own buffers) until one event is complete or
 * the input is used up; *used says how much was consumed.  Call again with
 * the rest.  After FLEET_WS_ERROR the parser refuses everything.
 */
fleet_ws_event_e fleet_ws_parse(fleet_ws_parser_t *ps, unsigned char *in,
    size_t len, size_t *used, fleet_ws_event_t *ev);

/* a server frame's header (never masked); returns its length */
size_t fleet_ws_frame_header(unsigned char *out, int opcode, uint64_t len);

/* the payload of a close frame: code and a reason cut to fit; length */
size_t fleet_ws_close_payload(unsigned char *out, int code,
    const char *reason);

/* 1 when the bytes are valid UTF-8 (no overlongs, surrogates, > U+10FFFF) */
int fleet_utf8_valid(const unsigned char *p, size_t len);

#endif /* FLEET_WS_H */
