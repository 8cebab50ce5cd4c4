/*
 * libFuzzer target: request body parsing and validation
 * (common/fleet_json.c).
 */

#include <stdint.h>
#include <stdlib.h>

#include "fleet_json.h"


static const fleet_field_t  fields[] = {
    { "chip_id", FLEET_FIELD_STRING, 1, 1, 64 },
    { "amount", FLEET_FIELD_INTEGER, 0, 1, 100000000 },
    { "value", FLEET_FIELD_NUMBER, 0, 0, 0 },
    { "enabled", FLEET_FIELD_BOOLEAN, 0, 0, 0 },
    { "configs", FLEET_FIELD_OBJECT, 0, 0, 0 },
    { "device_ids", FLEET_FIELD_ARRAY, 0, 0, 0 },
    { NULL, 0, 0, 0, 0 }
};


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char     msg[FLEET_JSON_MSG_MAX];
    json_t  *j;

    if (fleet_json_parse_object((const char *) data, size, &j, msg,
                                sizeof(msg))
        == FLEET_JSON_OK)
    {
        (void) fleet_json_validate(j, fields, msg, sizeof(msg));
        json_decref(j);
    }

    return 0;
}
