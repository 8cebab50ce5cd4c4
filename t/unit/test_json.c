/*
 * Unit tests: request body parsing and validation messages.
 */

#include <stdlib.h>

#include "tap.h"
#include "fleet_json.h"


static const fleet_field_t  fields[] = {
    { "chip_id", FLEET_FIELD_STRING, 1, 1, 8 },
    { "count", FLEET_FIELD_INTEGER, 0, 1, 100 },
    { "flag", FLEET_FIELD_BOOLEAN, 0, 0, 0 },
    { "cfg", FLEET_FIELD_OBJECT, 0, 0, 0 },
    { NULL, 0, 0, 0, 0 }
};


static fleet_json_rc_t
check(const char *text, char *msg)
{
    json_t           *j;
    fleet_json_rc_t   rc;

    rc = fleet_json_parse_object(text, strlen(text), &j, msg,
                                 FLEET_JSON_MSG_MAX);
    if (rc != FLEET_JSON_OK) {
        return rc;
    }

    rc = fleet_json_validate(j, fields, msg, FLEET_JSON_MSG_MAX);
    json_decref(j);

    return rc;
}


int
main(void)
{
    char    msg[FLEET_JSON_MSG_MAX];
    char   *deep;
    size_t  i;

    is_int(check("{\"chip_id\":\"abc\"}", msg), FLEET_JSON_OK, "valid");

    is_int(check("{}", msg), FLEET_JSON_VALIDATION, "missing field");
    is_str(msg, "chip_id is required", "missing message");

    is_int(check("{\"chip_id\":null}", msg), FLEET_JSON_VALIDATION, "null");
    is_str(msg, "chip_id is required", "null counts as missing");

    is_int(check("{\"chip_id\":5}", msg), FLEET_JSON_VALIDATION, "type");
    is_str(msg, "chip_id must be a string", "type message");

    is_int(check("{\"chip_id\":\"\"}", msg), FLEET_JSON_VALIDATION, "empty");
    is_str(msg, "chip_id must not be empty", "empty message");

    is_int(check("{\"chip_id\":\"123456789\"}", msg), FLEET_JSON_VALIDATION,
           "too long");
    is_str(msg, "chip_id must be at most 8 characters", "length message");

    is_int(check("{\"chip_id\":\"\xe0\xb8\xa3\xe0\xb8\xa3\xe0\xb8\xa3\"}",
                 msg), FLEET_JSON_OK, "length counts characters, not bytes");

    is_int(check("{\"chip_id\":\"a\\u0000b\"}", msg), FLEET_JSON_INVALID,
           "NUL escape refused: strings stay C strings");

    is_int(check("{\"chip_id\":\"a\",\"count\":0}", msg),
           FLEET_JSON_VALIDATION, "integer bound");
    is_str(msg, "count must be between 1 and 100", "bound message");

    is_int(check("{\"chip_id\":\"a\",\"count\":1.5}", msg),
           FLEET_JSON_VALIDATION, "real is not an integer");
    is_str(msg, "count must be an integer", "integer message");

    is_int(check("{\"chip_id\":\"a\",\"flag\":\"yes\"}", msg),
           FLEET_JSON_VALIDATION, "boolean");
    is_int(check("{\"chip_id\":\"a\",\"cfg\":[]}", msg),
           FLEET_JSON_VALIDATION, "object");
    is_str(msg, "cfg must be an object", "object message");

    is_int(check("[]", msg), FLEET_JSON_VALIDATION, "array body");
    is_str(msg, "body must be a JSON object", "array body message");

    is_int(check("{bad", msg), FLEET_JSON_INVALID, "bad JSON");
    is_int(check("{\"a\":1} x", msg), FLEET_JSON_INVALID, "trailing garbage");
    is_int(check("{\"a\":1,\"a\":2}", msg), FLEET_JSON_INVALID,
           "duplicate keys");
    is_int(check("{\"a\":\"\xff\"}", msg), FLEET_JSON_INVALID,
           "invalid UTF-8");
    is_int(check("", msg), FLEET_JSON_INVALID, "empty body");

    deep = malloc(20001);
    for (i = 0; i < 20000; i++) {
        deep[i] = '[';
    }
    deep[20000] = '\0';
    is_int(check(deep, msg), FLEET_JSON_INVALID, "deep nesting refused");
    free(deep);

    return done_testing();
}
