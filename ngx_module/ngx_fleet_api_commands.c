/*
 * fleetgate: commands to devices (SPEC 6, seed 004).  Creating one writes
 * PENDING rows and their first progress event in one transaction; the
 * bridges publish PENDING rows (woken by NOTIFY, and by their own sweep
 * when nothing woke them), and turn ACKs and deadlines into outcomes.
 */

#include "ngx_fleet_api.h"


typedef struct {
    const char                 *name;
    ngx_uint_t                  require_ack;
} ngx_fleet_command_type_t;


static ngx_int_t ngx_fleet_commands_create(ngx_fleet_api_t *api,
    json_t *ids, const char *command, const char *payload_sql,
    ngx_int_t timeout, ngx_uint_t bulk);
static ngx_int_t ngx_fleet_check_device_ids(ngx_fleet_api_t *api,
    json_t *ids, ngx_int_t *rc);
static ngx_int_t ngx_fleet_check_firmware(ngx_fleet_api_t *api,
    json_t *payload, ngx_int_t *timeout, ngx_int_t *rc);
static void ngx_fleet_commands_created(ngx_fleet_api_t *api);


/*
 * The payload sent to devices is built in SQL from the raw body ($5), so
 * configs reach the device with their numbers exactly as the client wrote
 * them.
 */
#define NGX_FLEET_PAYLOAD_CONFIGS                                             \
    "jsonb_build_object('configs', $5::jsonb -> 'configs')"
#define NGX_FLEET_PAYLOAD_RESTART                                             \
    "jsonb_build_object('delay_seconds', "                                    \
    "coalesce($5::jsonb -> 'delay_seconds', '5'))"
#define NGX_FLEET_PAYLOAD_GIVEN                                               \
    "coalesce($5::jsonb -> 'payload', '{}')"


static const ngx_fleet_command_type_t  ngx_fleet_command_types[] = {
    { "APPLY_CONFIG", 1 },
    { "RESTART", 1 },
    { "UPDATE_FIRMWARE", 1 },
    { "RESET_CONFIG", 1 },
    { "PING", 0 },
    { "GET_STATUS", 0 },
    { NULL, 0 }
};


static const fleet_field_t  ngx_fleet_apply_config_fields[] = {
    { "device_ids", FLEET_FIELD_ARRAY, 1, 0, 0 },
    { "configs", FLEET_FIELD_OBJECT, 1, 0, 0 },
    { NULL, 0, 0, 0, 0 }
};


ngx_int_t
ngx_fleet_api_apply_config(ngx_fleet_api_t *api)
{
    json_t     *ids;
    ngx_int_t   rc;

    if (ngx_fleet_api_validate(api, ngx_fleet_apply_config_fields, &rc)
        != NGX_OK)
    {
        return rc;
    }

    ids = json_object_get(api->json, "device_ids");

    if (ngx_fleet_check_device_ids(api, ids, &rc) != NGX_OK) {
        return rc;
    }

    return ngx_fleet_commands_create(api, ids, "APPLY_CONFIG",
                                     NGX_FLEET_PAYLOAD_CONFIGS, 0, 1);
}


static const fleet_field_t  ngx_fleet_bulk_restart_fields[] = {
    { "device_ids", FLEET_FIELD_ARRAY, 1, 0, 0 },
    { "delay_seconds", FLEET_FIELD_INTEGER, 0, 0, 86400 },
    { NULL, 0, 0, 0, 0 }
};


ngx_int_t
ngx_fleet_api_bulk_restart(ngx_fleet_api_t *api)
{
    json_t     *ids;
    ngx_int_t   rc;

    if (ngx_fleet_api_validate(api, ngx_fleet_bulk_restart_fields, &rc)
        != NGX_OK)
    {
        return rc;
    }

    ids = json_object_get(api->json, "device_ids");

    if (ngx_fleet_check_device_ids(api, ids, &rc) != NGX_OK) {
        return rc;
    }

    return ngx_fleet_commands_create(api, ids, "RESTART",
                                     NGX_FLEET_PAYLOAD_RESTART, 0, 1);
}


/* POST /api/v1/devices/{id}/restart, with an optional {delay_seconds} */

ngx_int_t
ngx_fleet_api_restart(ngx_fleet_api_t *api)
{
    json_t      *ids, *delay;
    ngx_int_t    rc;
    const char  *id;

    id = ngx_fleet_api_device_id(api, &rc);
    if (id == NULL) {
        return rc;
    }

    delay = api->json ? json_object_get(api->json, "delay_seconds") : NULL;

    if (delay != NULL && (!json_is_integer(delay)
                          || json_integer_value(delay) < 0
                          || json_integer_value(delay) > 86400))
    {
        return ngx_fleet_send_error(api->request, NGX_HTTP_BAD_REQUEST,
                                    "VALIDATION_ERROR",
                                    "delay_seconds must be between 0 and "
                                    "86400");
    }

    ids = json_pack("[s]", id);

    rc = ngx_fleet_commands_create(api, ids, "RESTART",
                                   NGX_FLEET_PAYLOAD_RESTART, 0, 0);
    json_decref(ids);

    return rc;
}


static const fleet_field_t  ngx_fleet_command_fields[] = {
    { "command", FLEET_FIELD_STRING, 1, 1, 32 },
    { "payload", FLEET_FIELD_OBJECT, 0, 0, 0 },
    { NULL, 0, 0, 0, 0 }
};


/* POST /api/v1/devices/{id}/commands {command, payload} */

ngx_int_t
ngx_fleet_api_command(ngx_fleet_api_t *api)
{
    json_t                          *ids, *payload;
    ngx_int_t                        rc, timeout;
    const char                      *id, *name;
    const ngx_fleet_command_type_t  *t;

    id = ngx_fleet_api_device_id(api, &rc);
    if (id == NULL) {
        return rc;
    }

    if (ngx_fleet_api_validate(api, ngx_fleet_command_fields, &rc)
        != NGX_OK)
    {
        return rc;
    }

    name = ngx_fleet_api_string(api, "command");

    for (t = ngx_fleet_command_types; t->name; t++) {
        if (ngx_strcmp(t->name, name) == 0) {
            break;
        }
    }

    if (t->name == NULL) {
        return ngx_fleet_send_error(api->request, NGX_HTTP_BAD_REQUEST,
                                    "VALIDATION_ERROR",
                                    "command must be one of APPLY_CONFIG, "
                                    "RESTART, UPDATE_FIRMWARE, RESET_CONFIG, "
                                    "PING, GET_STATUS");
    }

    payload = json_object_get(api->json, "payload");
    timeout = 0;

    if (ngx_strcmp(name, "UPDATE_FIRMWARE") == 0
        && ngx_fleet_check_firmware(api, payload, &timeout, &rc) != NGX_OK)
    {
        return rc;
    }

    ids = json_pack("[s]", id);

    rc = ngx_fleet_commands_create(api, ids, t->name,
                                   NGX_FLEET_PAYLOAD_GIVEN, timeout, 0);
    json_decref(ids);

    return rc;
}


ngx_int_t
ngx_fleet_api_command_get(ngx_fleet_api_t *api)
{
    const char  *id;

    id = ngx_fleet_api_capture(api, 0);
    if (id == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_fleet_api_call(api, NULL, "fleet_command_get($1, $2, $3)",
                              3, api->claims.sub,
                              fleet_role_name(api->claims.role), id);
}


ngx_int_t
ngx_fleet_api_bulk_get(ngx_fleet_api_t *api)
{
    const char  *id;

    id = ngx_fleet_api_capture(api, 0);
    if (id == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_fleet_api_call(api, NULL, "fleet_bulk_get($1, $2, $3)",
                              3, api->claims.sub,
                              fleet_role_name(api->claims.role), id);
}


static ngx_int_t
ngx_fleet_commands_create(ngx_fleet_api_t *api, json_t *ids,
    const char *command, const char *payload_sql, ngx_int_t timeout,
    ngx_uint_t bulk)
{
    u_char                          *call;
    size_t                           len;
    const char                      *ack, *secs;
    ngx_fleet_main_conf_t           *fmcf;
    const ngx_fleet_command_type_t  *t;

    fmcf = ngx_http_get_module_main_conf(api->request, ngx_fleet_module);

    for (t = ngx_fleet_command_types; ngx_strcmp(t->name, command) != 0; t++)
    {
        /* void */
    }

    ack = t->require_ack ? "true" : "false";

    if (timeout == 0) {
        timeout = (ngx_int_t) fmcf->command_timeout;
    }

    len = sizeof("fleet_commands_create($1, $2, $3::jsonb, $4, , "
                  "$6::boolean, $7::int, $8::boolean)")
          + ngx_strlen(payload_sql);

    secs = ngx_fleet_api_int_text(api, timeout);
    call = ngx_pnalloc(api->request->pool, len);
    if (secs == NULL || call == NULL || ids == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    api->succeeded = ngx_fleet_commands_created;

    (void) ngx_snprintf(call, len, "fleet_commands_create($1, $2, $3::jsonb, "
                        "$4, %s, $6::boolean, $7::int, $8::boolean)%Z",
                        payload_sql);

    return ngx_fleet_api_call(api, NULL, (const char *) call, 8,
                              api->claims.sub,
                              fleet_role_name(api->claims.role),
                              ngx_fleet_api_json_text(api, ids), command,
                              ngx_fleet_api_body_text(api), ack,
                              secs, bulk ? "true" : "false");
}


static ngx_int_t
ngx_fleet_check_device_ids(ngx_fleet_api_t *api, json_t *ids, ngx_int_t *rc)
{
    size_t       i;
    json_t      *v;
    const char  *msg;

    msg = NULL;

    if (json_array_size(ids) == 0) {
        msg = "device_ids must be a non-empty array";

    } else if (json_array_size(ids) > 1000) {
        msg = "device_ids may hold at most 1000 devices";

    } else {
        json_array_foreach(ids, i, v) {
            if (!json_is_string(v)
                || ngx_fleet_api_is_token(json_string_value(v)) != NGX_OK)
            {
                msg = "device_ids must be device id strings";
                break;
            }
        }
    }

    if (msg == NULL) {
        return NGX_OK;
    }

    *rc = ngx_fleet_send_error(api->request, NGX_HTTP_BAD_REQUEST,
                               "VALIDATION_ERROR", msg);
    return NGX_DECLINED;
}


static const fleet_field_t  ngx_fleet_firmware_fields[] = {
    { "url", FLEET_FIELD_STRING, 1, 8, 2048 },
    { "version", FLEET_FIELD_STRING, 1, 1, 64 },
    { "sha256", FLEET_FIELD_STRING, 1, 64, 64 },
    { "size", FLEET_FIELD_INTEGER, 0, 1, 1LL << 32 },
    { "reboot_after", FLEET_FIELD_BOOLEAN, 0, 0, 0 },
    { "timeout_sec", FLEET_FIELD_INTEGER, 0, 1, 86400 },
    { NULL, 0, 0, 0, 0 }
};


/* seed 004's UPDATE_FIRMWARE payload; its timeout_sec is the deadline */

static ngx_int_t
ngx_fleet_check_firmware(ngx_fleet_api_t *api, json_t *payload,
    ngx_int_t *timeout, ngx_int_t *rc)
{
    char         msg[FLEET_JSON_MSG_MAX];
    size_t       i;
    json_t      *v;
    const char  *s;

    if (payload == NULL) {
        *rc = ngx_fleet_send_error(api->request, NGX_HTTP_BAD_REQUEST,
                                   "VALIDATION_ERROR",
                                   "UPDATE_FIRMWARE needs a payload with url, "
                                   "version and sha256");
        return NGX_DECLINED;
    }

    if (fleet_json_validate(payload, ngx_fleet_firmware_fields, msg,
                            sizeof(msg))
        != FLEET_JSON_OK)
    {
        *rc = ngx_fleet_send_error(api->request, NGX_HTTP_BAD_REQUEST,
                                   "VALIDATION_ERROR", msg);
        return NGX_DECLINED;
    }

    s = json_string_value(json_object_get(payload, "url"));

    if (ngx_strncmp(s, "https://", 8) != 0
        && ngx_strncmp(s, "http://", 7) != 0)
    {
        *rc = ngx_fleet_send_error(api->request, NGX_HTTP_BAD_REQUEST,
                                   "VALIDATION_ERROR",
                                   "payload.url must be an http(s) URL");
        return NGX_DECLINED;
    }

    s = json_string_value(json_object_get(payload, "sha256"));

    for (i = 0; i < 64; i++) {
        if (!isxdigit((u_char) s[i])) {
            *rc = ngx_fleet_send_error(api->request, NGX_HTTP_BAD_REQUEST,
                                       "VALIDATION_ERROR",
                                       "payload.sha256 must be 64 hex digits");
            return NGX_DECLINED;
        }
    }

    v = json_object_get(payload, "timeout_sec");
    *timeout = v ? (ngx_int_t) json_integer_value(v) : 0;

    return NGX_OK;
}


/* the fast path: the bridge publishes at once instead of at its next
 * sweep (a lost nudge only costs that sweep's delay) */

static void
ngx_fleet_commands_created(ngx_fleet_api_t *api)
{
    (void) ngx_fleet_bridge_nudge("{\"op\":\"commands_pending\"}\n");
}
