/*
 * fleetgate: Engine.IO v4 / Socket.IO v5 text packet codec.  Pure
 * functions, no nginx types, no allocation: parsers return spans into
 * their input, writers fill a caller's buffer of an explicit size.  The
 * nginx side feeds it WebSocket text messages and polling bodies; the unit
 * tests (t/unit/test_sio.c) and the fuzzer (fuzz/fuzz_sio.c) do the same.
 *
 * Wire format (https://socket.io/docs/v4/engine-io-protocol/ and
 * https://socket.io/docs/v4/socket-io-protocol/):
 *
 *   Engine.IO packet   <type digit 0-6>[<data>]       e.g. 2probe, 4hello
 *                      b<base64>  (a binary message over polling; refused)
 *   polling payload    <packet>\x1e<packet>\x1e...    (no trailing \x1e)
 *   Socket.IO packet   the data of an Engine.IO message (the text after '4'):
 *                      <type>[<attachments>-][<nsp>,][<ack id>][<json>]
 *                      e.g. 2["hello",1]  2/admin,13["foo"]  312[]
 *                           51-["img",{"_placeholder":true,"num":0}]
 *
 * Engine.IO v4 heartbeat: the SERVER sends ping "2", the client answers
 * pong "3" (the reverse of v3).  Only the upgrade probe goes the other way:
 * the client sends "2probe" on the new WebSocket, the server answers
 * "3probe", the client then sends "5" (upgrade).
 *
 * Every function accepts arbitrary bytes (NULL with length 0 included)
 * and never reads outside [s, s + len).
 */

#ifndef FLEET_SIO_H
#define FLEET_SIO_H

#include <stddef.h>


/* Engine.IO packet types (the first character) */
enum {
    FLEET_EIO_OPEN = 0,
    FLEET_EIO_CLOSE,
    FLEET_EIO_PING,
    FLEET_EIO_PONG,
    FLEET_EIO_MESSAGE,
    FLEET_EIO_UPGRADE,
    FLEET_EIO_NOOP
};

/* fleet_eio_parse's *type for "b<base64>": a binary message over polling */
#define FLEET_EIO_BINARY_B64    (-2)

/* Socket.IO packet types */
enum {
    FLEET_SIO_CONNECT = 0,
    FLEET_SIO_DISCONNECT,
    FLEET_SIO_EVENT,
    FLEET_SIO_ACK,
    FLEET_SIO_CONNECT_ERROR,
    FLEET_SIO_BINARY_EVENT,
    FLEET_SIO_BINARY_ACK
};

#define FLEET_EIO_SEPARATOR     '\x1e'  /* between packets in a payload */

#define FLEET_SIO_MAX_NSP       256     /* bytes of a namespace, with '/' */
#define FLEET_SIO_MAX_ATTACH    1000    /* binary attachments of a packet */
#define FLEET_SIO_MAX_ACK_ID    9007199254740991LL  /* 2^53 - 1 */
#define FLEET_SIO_MAX_ACK_DIGITS 16
#define FLEET_SIO_MAX_DEPTH     64      /* JSON nesting of packet data */


/*
 * HTTP long-polling payload: packets separated by 0x1e.  Iterates: *off
 * starts at 0; returns 1 and the next packet's span, 0 at the end.  Empty
 * packets are returned as length 0 (the caller rejects them): an empty
 * payload is one empty packet, "4a\x1e" is "4a" and "".  The separator is
 * never inside valid UTF-8 multibyte characters nor inside JSON strings
 * (it must be escaped there), so splitting needs no parsing; a plain
 * Engine.IO message containing a raw 0x1e cannot be sent over polling.
 * After the end *off is len + 1 and further calls keep returning 0.
 */
int fleet_eio_payload_next(const char *payload, size_t len, size_t *off,
    const char **pkt, size_t *pkt_len);

/*
 * One Engine.IO text packet: the type digit and the data after it (any
 * bytes, possibly empty: "probe" of a ping, the Socket.IO packet of a
 * message).  Returns 0, or -1 with *err a static message: an empty
 * packet (*type -1), a type other than 0-6 (*type -1), or "b<base64>", a
 * binary message over polling, which is reported as *type
 * FLEET_EIO_BINARY_B64 (-2) with the base64 text as data so the caller can
 * refuse it knowingly.  Data of close/upgrade/noop is returned, not judged.
 */
int fleet_eio_parse(const char *pkt, size_t len, int *type,
    const char **data, size_t *data_len, const char **err);


typedef struct {
    int          type;          /* FLEET_SIO_* */
    int          attachments;   /* binary types: the count before '-', else 0 */
    const char  *nsp;           /* "/" when absent */
    size_t       nsp_len;
    long long    ack_id;        /* -1 when absent; 0..2^53-1 */
    const char  *data;          /* JSON text as sent (raw span), may be
                                   length 0 */
    size_t       data_len;
} fleet_sio_packet_t;


/*
 * Parses the data of an Engine.IO message (the text after '4'):
 * "<type>[<n>-][<nsp>,][<ackId>][<json>]".  nsp and data point into s (nsp
 * points to a static "/" when absent).  Returns 0, or -1 with *err a static
 * English message and *p reset to type -1.  Checks, stricter than the
 * reference parser where noted:
 *
 *   - type is one digit 0-6;
 *   - "<n>-" (1-4 digits, at most FLEET_SIO_MAX_ATTACH) for BINARY_EVENT
 *     and BINARY_ACK only, where it is required (the reference takes
 *     "5-" as 0 attachments);
 *   - a namespace starts with '/', ends at the first ',' (required: the
 *     reference runs an unterminated one to the end of the packet), is
 *     at most FLEET_SIO_MAX_NSP bytes with the '/', valid UTF-8 without
 *     control characters;
 *   - an ack id is 1-16 digits, at most 2^53 - 1; required on ACK and
 *     BINARY_ACK, refused on CONNECT, DISCONNECT and CONNECT_ERROR;
 *   - data is exactly one JSON value (RFC 8259: UTF-8, no control
 *     characters in strings, nesting at most FLEET_SIO_MAX_DEPTH, no
 *     whitespace before or after it) of the packet's kind:
 *       CONNECT        none or an object (auth data)
 *       DISCONNECT     none
 *       EVENT, BINARY_EVENT  an array whose first element is a string
 *                      (the reference also takes a number; reserved names,
 *                      see fleet_sio_event_reserved, are the caller's call)
 *       ACK, BINARY_ACK      an array (may be empty)
 *       CONNECT_ERROR  an object (the reference also takes a string)
 *
 * Binary attachments (which follow as separate binary frames) are not
 * handled here: attachments only reports their count.
 */
int fleet_sio_parse(const char *s, size_t len, fleet_sio_packet_t *p,
    const char **err);

/*
 * The event name of an EVENT packet's data (a JSON array), unescaped into
 * name (NUL-terminated, at most name_size - 1 bytes), and the raw span of
 * the first argument after it (*arg NULL and *arg_len 0 when there is
 * none).  Returns 0, or -1 when data is not a valid JSON array (same rules
 * as fleet_sio_parse) whose first element is a string, when the name does
 * not fit, or when it holds "\u0000" or an unpaired surrogate escape (no
 * NUL-terminated UTF-8 for those); on -1 name is "" (if name_size > 0).
 */
int fleet_sio_event_name(const char *data, size_t len, char *name,
    size_t name_size, const char **arg, size_t *arg_len);

/*
 * 1 when name is one the reference implementation refuses as an incoming
 * event ("connect", "connect_error", "disconnect", "disconnecting",
 * "newListener", "removeListener"), else 0.
 */
int fleet_sio_event_reserved(const char *name);

/*
 * 1 when s[0..len) is exactly one JSON value (whitespace around it
 * allowed), by the rules fleet_sio_parse applies to packet data, else 0.
 */
int fleet_sio_json_valid(const char *s, size_t len);


/*
 * Writers.  Each produces one Engine.IO packet as it goes in a WebSocket
 * text frame (or, joined with 0x1e, in a polling response), the leading
 * '4' of messages included.  They return the length written and add a NUL
 * after it when there is room, or return 0 when it does not fit in size
 * bytes or an argument is invalid (a string that is not UTF-8, JSON data
 * that is not one valid JSON value, an ack id out of range...).  Raw JSON
 * arguments are checked with fleet_sio_json_valid and inserted as they
 * are, so whatever a writer produces fleet_sio_parse accepts.
 */

/* 0{"sid":"…","upgrades":["websocket"] or [],"pingInterval":…,
 *  "pingTimeout":…,"maxPayload":…}; sid is JSON-escaped, times >= 0 */
size_t fleet_eio_open(char *out, size_t size, const char *sid,
    int ping_interval_ms, int ping_timeout_ms, size_t max_payload,
    int can_upgrade);

/* <type digit><data>: "2", "3probe", "6", "4hello"...  (type 0-6) */
size_t fleet_eio_packet(char *out, size_t size, int type, const char *data,
    size_t data_len);

/* 40{"sid":"…"}: the CONNECT answer on the main namespace */
size_t fleet_sio_connect_ok(char *out, size_t size, const char *sid);

/* 40/nsp,{"sid":"…"}: the same on any namespace ("/" or NULL: main) */
size_t fleet_sio_connect_ok_nsp(char *out, size_t size, const char *nsp,
    const char *sid);

/* 44{"message":"…"}, with "/nsp," when nsp is not "/" (or NULL) */
size_t fleet_sio_connect_error(char *out, size_t size, const char *nsp,
    const char *message);

/* 42["event",<data>]: data is raw JSON text inserted as is (one value,
 * checked); event JSON-escaped; data_len 0 gives 42["event"] */
size_t fleet_sio_event(char *out, size_t size, const char *event,
    const char *json_data, size_t data_len);

/* 43<id>[<data>]: data is one raw JSON value or nothing (43<id>[]) */
size_t fleet_sio_ack(char *out, size_t size, long long ack_id,
    const char *json_data, size_t data_len);

/*
 * Any Socket.IO packet, "4" and the fields of p as fleet_sio_parse reads
 * them (nsp omitted when it is "/" or empty, ack id when < 0); p must pass
 * the same checks, so fleet_sio_parse gives back the same fields.
 */
size_t fleet_sio_encode(char *out, size_t size, const fleet_sio_packet_t *p);

/*
 * A JSON string literal with the quotes: escapes '"', '\\' and control
 * characters (\b \f \n \r \t, others \u00xx, as JSON.stringify does);
 * valid UTF-8 is passed through.  Returns 0 if it does not fit or s is
 * not valid UTF-8 (no overlongs, surrogates or code points > U+10FFFF).
 */
size_t fleet_json_escape(char *out, size_t size, const char *s, size_t len);

#endif /* FLEET_SIO_H */
