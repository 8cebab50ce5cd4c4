/*
 * fleetgate: request body parsing and validation.
 */

#include <stdio.h>
#include <string.h>

#include "fleet_json.h"


fleet_json_rc_t
fleet_json_parse_object(const char *buf, size_t len, json_t **out,
    char *msg, size_t msg_size)
{
    json_t        *j;
    json_error_t   err;

    *out = NULL;

    if (len == 0) {
        (void) snprintf(msg, msg_size, "request body is empty");
        return FLEET_JSON_INVALID;
    }

    /* jansson rejects invalid UTF-8, "\u0000" (strings stay C strings),
     * trailing garbage and nesting deeper
     * than its compile-time limit, and never recurses on the C stack
     * beyond that limit */
    j = json_loadb(buf, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &err);
    if (j == NULL) {
        (void) snprintf(msg, msg_size, "invalid JSON at line %d column %d: %s",
                        err.line, err.column, err.text);
        return FLEET_JSON_INVALID;
    }

    if (!json_is_object(j)) {
        json_decref(j);
        (void) snprintf(msg, msg_size, "body must be a JSON object");
        return FLEET_JSON_VALIDATION;
    }

    *out = j;

    return FLEET_JSON_OK;
}


size_t
fleet_utf8_length(const char *s, size_t len)
{
    size_t  i, n;

    for (i = 0, n = 0; i < len; i++) {
        if (((unsigned char) s[i] & 0xc0) != 0x80) {
            n++;
        }
    }

    return n;
}


static const char *
fleet_field_type_name(fleet_field_type_t type)
{
    switch (type) {
    case FLEET_FIELD_STRING:
        return "a string";
    case FLEET_FIELD_INTEGER:
        return "an integer";
    case FLEET_FIELD_NUMBER:
        return "a number";
    case FLEET_FIELD_BOOLEAN:
        return "a boolean";
    case FLEET_FIELD_OBJECT:
        return "an object";
    default:
        return "an array";
    }
}


static int
fleet_field_has_type(json_t *v, fleet_field_type_t type)
{
    switch (type) {
    case FLEET_FIELD_STRING:
        return json_is_string(v);
    case FLEET_FIELD_INTEGER:
        return json_is_integer(v);
    case FLEET_FIELD_NUMBER:
        return json_is_number(v);
    case FLEET_FIELD_BOOLEAN:
        return json_is_boolean(v);
    case FLEET_FIELD_OBJECT:
        return json_is_object(v);
    default:
        return json_is_array(v);
    }
}


static fleet_json_rc_t
fleet_field_check_bounds(const fleet_field_t *f, json_t *v, char *msg,
    size_t msg_size)
{
    size_t     n;
    long long  i;

    if (f->type == FLEET_FIELD_STRING) {
        n = fleet_utf8_length(json_string_value(v), json_string_length(v));

        if (f->min > 0 && n < (size_t) f->min) {
            if (f->min == 1) {
                (void) snprintf(msg, msg_size, "%s must not be empty", f->name);

            } else {
                (void) snprintf(msg, msg_size, "%s must be at least %lld characters",
                                f->name, f->min);
            }

            return FLEET_JSON_VALIDATION;
        }

        if (f->max > 0 && n > (size_t) f->max) {
            (void) snprintf(msg, msg_size, "%s must be at most %lld characters",
                            f->name, f->max);
            return FLEET_JSON_VALIDATION;
        }

    } else if (f->type == FLEET_FIELD_INTEGER && f->min < f->max) {
        i = json_integer_value(v);

        if (i < f->min || i > f->max) {
            (void) snprintf(msg, msg_size, "%s must be between %lld and %lld",
                            f->name, f->min, f->max);
            return FLEET_JSON_VALIDATION;
        }
    }

    return FLEET_JSON_OK;
}


fleet_json_rc_t
fleet_json_validate(json_t *obj, const fleet_field_t *fields, char *msg,
    size_t msg_size)
{
    json_t               *v;
    fleet_json_rc_t       rc;
    const fleet_field_t  *f;

    for (f = fields; f->name != NULL; f++) {
        v = json_object_get(obj, f->name);

        if (v == NULL || json_is_null(v)) {
            if (f->required) {
                (void) snprintf(msg, msg_size, "%s is required", f->name);
                return FLEET_JSON_VALIDATION;
            }

            continue;
        }

        if (!fleet_field_has_type(v, f->type)) {
            (void) snprintf(msg, msg_size, "%s must be %s", f->name,
                            fleet_field_type_name(f->type));
            return FLEET_JSON_VALIDATION;
        }

        rc = fleet_field_check_bounds(f, v, msg, msg_size);
        if (rc != FLEET_JSON_OK) {
            return rc;
        }
    }

    return FLEET_JSON_OK;
}


/* ------------------------------------------------------------------ */
/* raw text spans: parts of a JSON text passed on without re-encoding */

static size_t
fleet_json_skip_ws(const char *s, size_t i, size_t len)
{
    while (i < len && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n'
                       || s[i] == '\r'))
    {
        i++;
    }

    return i;
}


/* i at an opening quote; returns the index after the closing one, or 0 */

static size_t
fleet_json_skip_string(const char *s, size_t i, size_t len)
{
    for (i++; i < len; i++) {
        if (s[i] == '\\') {
            i++;

        } else if (s[i] == '"') {
            return i + 1;
        }
    }

    return 0;
}


/* i at a value; returns the index after it, or 0 when it is cut short */

static size_t
fleet_json_skip_value(const char *s, size_t i, size_t len)
{
    size_t  depth;

    if (i >= len) {
        return 0;
    }

    if (s[i] == '"') {
        return fleet_json_skip_string(s, i, len);
    }

    if (s[i] != '{' && s[i] != '[') {
        while (i < len && s[i] != ',' && s[i] != '}' && s[i] != ']'
               && s[i] != ' ' && s[i] != '\t' && s[i] != '\n' && s[i] != '\r')
        {
            i++;
        }

        return i;
    }

    depth = 0;

    while (i < len) {
        if (s[i] == '"') {
            i = fleet_json_skip_string(s, i, len);
            if (i == 0) {
                return 0;
            }

            continue;
        }

        if (s[i] == '{' || s[i] == '[') {
            depth++;

        } else if (s[i] == '}' || s[i] == ']') {
            if (--depth == 0) {
                return i + 1;
            }
        }

        i++;
    }

    return 0;
}


int
fleet_json_member(const char *s, size_t len, const char *key, size_t *off,
    size_t *vlen)
{
    size_t  i, k, kend, klen, end;

    klen = strlen(key);

    i = fleet_json_skip_ws(s, 0, len);
    if (i >= len || s[i] != '{') {
        return -1;
    }

    i++;

    for ( ;; ) {
        i = fleet_json_skip_ws(s, i, len);

        if (i >= len || s[i] != '"') {
            return -1;
        }

        k = i + 1;
        kend = fleet_json_skip_string(s, i, len);
        if (kend == 0) {
            return -1;
        }

        i = fleet_json_skip_ws(s, kend, len);
        if (i >= len || s[i] != ':') {
            return -1;
        }

        i = fleet_json_skip_ws(s, i + 1, len);

        end = fleet_json_skip_value(s, i, len);
        if (end == 0 || end == i) {
            return -1;
        }

        if (kend - 1 - k == klen && memcmp(s + k, key, klen) == 0) {
            *off = i;
            *vlen = end - i;
            return 0;
        }

        i = fleet_json_skip_ws(s, end, len);

        if (i >= len || s[i] != ',') {
            return -1;
        }

        i++;
    }
}


size_t
fleet_json_compact(const char *in, size_t len, char *out)
{
    size_t  i, n;
    int     in_string;

    n = 0;
    in_string = 0;

    for (i = 0; i < len; i++) {
        if (in_string) {
            out[n++] = in[i];

            if (in[i] == '\\' && i + 1 < len) {
                out[n++] = in[++i];

            } else if (in[i] == '"') {
                in_string = 0;
            }

            continue;
        }

        if (in[i] == ' ' || in[i] == '\t' || in[i] == '\n' || in[i] == '\r') {
            continue;
        }

        if (in[i] == '"') {
            in_string = 1;
        }

        out[n++] = in[i];
    }

    return n;
}
