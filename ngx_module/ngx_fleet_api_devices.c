/*
 * fleetgate: device-facing routes, signed with x-signature (SPEC section 4).
 */

#include "ngx_fleet_api.h"


static ngx_int_t ngx_fleet_is_mac(const char *s);
static ngx_int_t ngx_fleet_check_device_id(ngx_fleet_api_t *api,
    const char *id, ngx_int_t *rc);


static const fleet_field_t  ngx_fleet_register_fields[] = {
    { "chip_id", FLEET_FIELD_STRING, 1, 1, 64 },
    { "mac_address", FLEET_FIELD_STRING, 1, 1, 32 },
    { "firmware_version", FLEET_FIELD_STRING, 1, 1, 64 },
    { NULL, 0, 0, 0, 0 }
};


ngx_int_t
ngx_fleet_api_need_register(ngx_fleet_api_t *api)
{
    ngx_int_t    rc;
    const char  *chip, *mac, *fw;

    if (ngx_fleet_api_validate(api, ngx_fleet_register_fields, &rc)
        != NGX_OK)
    {
        return rc;
    }

    chip = ngx_fleet_api_string(api, "chip_id");
    mac = ngx_fleet_api_string(api, "mac_address");
    fw = ngx_fleet_api_string(api, "firmware_version");

    if (ngx_fleet_api_is_token(chip) != NGX_OK) {
        return ngx_fleet_send_error(api->request, NGX_HTTP_BAD_REQUEST,
                                    "VALIDATION_ERROR",
                                    "chip_id may contain only letters, "
                                    "digits, '-', '_', ':' and '.'");
    }

    if (ngx_fleet_is_mac(mac) != NGX_OK) {
        return ngx_fleet_send_error(api->request, NGX_HTTP_BAD_REQUEST,
                                    "VALIDATION_ERROR",
                                    "mac_address must look like "
                                    "24:6F:28:AB:3C:91");
    }

    return ngx_fleet_api_call(api, NULL,
                              "fleet_need_register($1, $2, $3)",
                              3, chip, mac, fw);
}


/* six hex pairs separated by ':' or '-' */

static ngx_int_t
ngx_fleet_is_mac(const char *s)
{
    ngx_uint_t  i;

    for (i = 0; i < 17; i++) {
        if (i % 3 == 2) {
            if (s[i] != ':' && s[i] != '-') {
                return NGX_DECLINED;
            }

        } else if (!isxdigit((unsigned char) s[i])) {
            return NGX_DECLINED;
        }
    }

    return s[17] == '\0' ? NGX_OK : NGX_DECLINED;
}


/* identifiers end up in MQTT topics: no '/', '+', '#' or spaces */

ngx_int_t
ngx_fleet_api_is_token(const char *s)
{
    u_char  c;

    if (*s == '\0') {
        return NGX_DECLINED;
    }

    for ( /* void */ ; *s; s++) {
        c = (u_char) *s;

        if (!isalnum(c) && c != '-' && c != '_' && c != ':' && c != '.') {
            return NGX_DECLINED;
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_fleet_check_device_id(ngx_fleet_api_t *api, const char *id,
    ngx_int_t *rc)
{
    if (ngx_fleet_api_is_token(id) == NGX_OK) {
        return NGX_OK;
    }

    *rc = ngx_fleet_send_error(api->request, NGX_HTTP_BAD_REQUEST,
                               "VALIDATION_ERROR",
                               "device_id may contain only letters, digits, "
                               "'-', '_', ':' and '.'");
    return NGX_DECLINED;
}


static const fleet_field_t  ngx_fleet_sync_state_fields[] = {
    { "topic_request", FLEET_FIELD_STRING, 1, 1, 16 },
    { "device_id", FLEET_FIELD_STRING, 1, 1, 64 },
    { "device_status", FLEET_FIELD_STRING, 1, 1, 32 },
    { "payload", FLEET_FIELD_OBJECT, 0, 0, 0 },
    { "timestamp", FLEET_FIELD_NUMBER, 0, 0, 0 },
    { NULL, 0, 0, 0, 0 }
};


/* seed 004 "Sync Device start up and shutdown" */

ngx_int_t
ngx_fleet_api_sync_state(ngx_fleet_api_t *api)
{
    json_t      *configs;
    ngx_int_t    rc;
    const char  *id, *req;

    if (ngx_fleet_api_validate(api, ngx_fleet_sync_state_fields, &rc)
        != NGX_OK)
    {
        return rc;
    }

    id = ngx_fleet_api_string(api, "device_id");
    req = ngx_fleet_api_string(api, "topic_request");

    if (ngx_fleet_check_device_id(api, id, &rc) != NGX_OK) {
        return rc;
    }

    if (ngx_strcmp(req, "startup") != 0 && ngx_strcmp(req, "shutdown") != 0) {
        return ngx_fleet_send_error(api->request, NGX_HTTP_BAD_REQUEST,
                                    "VALIDATION_ERROR",
                                    "topic_request must be startup or "
                                    "shutdown");
    }

    configs = json_object_get(json_object_get(api->json, "payload"),
                              "configs");

    if (configs != NULL && !json_is_object(configs)) {
        return ngx_fleet_send_error(api->request, NGX_HTTP_BAD_REQUEST,
                                    "VALIDATION_ERROR",
                                    "payload.configs must be an object");
    }

    /* the configs go to PostgreSQL as the device wrote them */
    return ngx_fleet_api_call(api, NULL,
                              "fleet_sync_state($1, $2, $3, "
                              "$4::jsonb -> 'payload' -> 'configs')",
                              4, id, req,
                              ngx_fleet_api_string(api, "device_status"),
                              ngx_fleet_api_body_text(api));
}


/* seed 004 "Sync Device Configs": the body is the configs object */

ngx_int_t
ngx_fleet_api_sync_configs(ngx_fleet_api_t *api)
{
    json_t      *v;
    ngx_int_t    rc;
    const char  *id;

    id = ngx_fleet_api_capture(api, 0);
    if (id == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_fleet_check_device_id(api, id, &rc) != NGX_OK) {
        return rc;
    }

    v = json_object_get(api->json, "device_id");

    if (v != NULL && (!json_is_string(v)
                      || ngx_strcmp(json_string_value(v), id) != 0))
    {
        return ngx_fleet_send_error(api->request, NGX_HTTP_BAD_REQUEST,
                                    "VALIDATION_ERROR",
                                    "device_id in the body does not match "
                                    "the path");
    }

    return ngx_fleet_api_call(api, NULL,
                              "fleet_sync_configs($1, $2::jsonb)", 2,
                              id, ngx_fleet_api_body_text(api));
}


static const fleet_field_t  ngx_fleet_logs_fields[] = {
    { "device_id", FLEET_FIELD_STRING, 1, 1, 64 },
    { "items", FLEET_FIELD_ARRAY, 1, 0, 0 },
    { NULL, 0, 0, 0, 0 }
};


/* seed 004 "Logs Event Upload"; item shapes are checked in SQL, all
 * before any is stored */

ngx_int_t
ngx_fleet_api_upload_logs(ngx_fleet_api_t *api)
{
    json_t      *items;
    ngx_int_t    rc;
    const char  *id;

    if (ngx_fleet_api_validate(api, ngx_fleet_logs_fields, &rc) != NGX_OK) {
        return rc;
    }

    id = ngx_fleet_api_string(api, "device_id");

    if (ngx_fleet_check_device_id(api, id, &rc) != NGX_OK) {
        return rc;
    }

    items = json_object_get(api->json, "items");

    if (json_array_size(items) > 1000) {
        return ngx_fleet_send_error(api->request, NGX_HTTP_BAD_REQUEST,
                                    "VALIDATION_ERROR",
                                    "items may hold at most 1000 entries");
    }

    return ngx_fleet_api_call(api, NULL,
                              "fleet_upload_logs($1, $2::jsonb -> 'items')",
                              2, id, ngx_fleet_api_body_text(api));
}
