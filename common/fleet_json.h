/*
 * fleetgate: request body parsing and validation with precise messages
 * (SPEC section 3).  Pure functions over jansson.
 */

#ifndef FLEET_JSON_H
#define FLEET_JSON_H

#include <stddef.h>

#include <jansson.h>

#define FLEET_JSON_MSG_MAX  160

typedef enum {
    FLEET_JSON_OK = 0,
    FLEET_JSON_INVALID,         /* INVALID_JSON */
    FLEET_JSON_VALIDATION       /* VALIDATION_ERROR */
} fleet_json_rc_t;

typedef enum {
    FLEET_FIELD_STRING = 1,
    FLEET_FIELD_INTEGER,
    FLEET_FIELD_NUMBER,
    FLEET_FIELD_BOOLEAN,
    FLEET_FIELD_OBJECT,
    FLEET_FIELD_ARRAY
} fleet_field_type_t;

typedef struct {
    const char          *name;
    fleet_field_type_t   type;
    int                  required;
    /* strings: length bounds in characters; integers: value bounds */
    long long            min;
    long long            max;
} fleet_field_t;

/*
 * Parses a request body that must be one JSON object.  On failure returns
 * FLEET_JSON_INVALID or FLEET_JSON_VALIDATION with a message in msg.
 */
fleet_json_rc_t fleet_json_parse_object(const char *buf, size_t len,
    json_t **out, char *msg, size_t msg_size);

/* checks fields (terminated by a NULL name) in order; first failure wins */
fleet_json_rc_t fleet_json_validate(json_t *obj, const fleet_field_t *fields,
    char *msg, size_t msg_size);

/* UTF-8 characters in a valid UTF-8 string */
size_t fleet_utf8_length(const char *s, size_t len);

/*
 * The raw text of a top-level member's value in a JSON object text, found
 * without parsing it into values (numbers stay exactly as written).
 * Returns 0 and the value's offset and length, or -1.
 */
int fleet_json_member(const char *s, size_t len, const char *key,
    size_t *off, size_t *vlen);

/* drops whitespace outside strings; out holds len bytes; new length */
size_t fleet_json_compact(const char *in, size_t len, char *out);

#endif /* FLEET_JSON_H */
