/*
 * fleetgate: devices and sensors for browsers and API users (SPEC section
 * 9, devices part; SPEC section 5, sensors).  Every route runs one SQL
 * function with the caller's token identity; ownership is decided there,
 * and another user's device answers 404 exactly like a missing one.
 */

#include "ngx_fleet_api.h"


#define ngx_fleet_actor(api)                                                  \
    (api)->claims.sub, fleet_role_name((api)->claims.role)


static const fleet_field_t  ngx_fleet_claim_fields[] = {
    { "pin", FLEET_FIELD_STRING, 1, 4, 4 },
    { "name", FLEET_FIELD_STRING, 0, 1, 100 },
    { NULL, 0, 0, 0, 0 }
};


ngx_int_t
ngx_fleet_api_device_claim(ngx_fleet_api_t *api)
{
    ngx_int_t    rc;
    const char  *pin;

    if (ngx_fleet_api_validate(api, ngx_fleet_claim_fields, &rc) != NGX_OK) {
        return rc;
    }

    pin = ngx_fleet_api_string(api, "pin");

    if (!isdigit((u_char) pin[0]) || !isdigit((u_char) pin[1])
        || !isdigit((u_char) pin[2]) || !isdigit((u_char) pin[3]))
    {
        return ngx_fleet_send_error(api->request, NGX_HTTP_BAD_REQUEST,
                                    "VALIDATION_ERROR",
                                    "pin must be the 4 digits the device "
                                    "shows");
    }

    return ngx_fleet_api_call(api, NULL,
                              "fleet_device_claim($1, $2, $3, $4)", 4,
                              ngx_fleet_actor(api), pin,
                              ngx_fleet_api_string(api, "name"));
}


ngx_int_t
ngx_fleet_api_devices_list(ngx_fleet_api_t *api)
{
    ngx_int_t    rc, lim, off;
    const char  *limit, *offset;

    if (ngx_fleet_api_arg_int(api, "limit", 50, 1, 500, &lim, &rc) != NGX_OK
        || ngx_fleet_api_arg_int(api, "offset", 0, 0, NGX_MAX_INT32_VALUE,
                                 &off, &rc)
           != NGX_OK)
    {
        return rc;
    }

    limit = ngx_fleet_api_int_text(api, lim);
    offset = ngx_fleet_api_int_text(api, off);
    if (limit == NULL || offset == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_fleet_api_call(api, NULL,
                              "fleet_devices_list($1, $2, "
                              "$3::int, $4::int)", 4,
                              ngx_fleet_actor(api), limit, offset);
}


ngx_int_t
ngx_fleet_api_device_get(ngx_fleet_api_t *api)
{
    ngx_int_t    rc;
    const char  *id;

    id = ngx_fleet_api_device_id(api, &rc);
    if (id == NULL) {
        return rc;
    }

    return ngx_fleet_api_call(api, NULL, "fleet_device_get($1, $2, $3)",
                              3, ngx_fleet_actor(api), id);
}


static const fleet_field_t  ngx_fleet_patch_fields[] = {
    { "name", FLEET_FIELD_STRING, 0, 1, 100 },
    { "labels", FLEET_FIELD_OBJECT, 0, 0, 0 },
    { NULL, 0, 0, 0, 0 }
};


ngx_int_t
ngx_fleet_api_device_patch(ngx_fleet_api_t *api)
{
    json_t      *v;
    ngx_int_t    rc;
    const char  *id, *key;

    id = ngx_fleet_api_device_id(api, &rc);
    if (id == NULL) {
        return rc;
    }

    if (ngx_fleet_api_validate(api, ngx_fleet_patch_fields, &rc) != NGX_OK) {
        return rc;
    }

    /* name and labels for owners, owner_id for admins; nothing else */
    json_object_foreach(api->json, key, v) {
        if (ngx_strcmp(key, "name") != 0 && ngx_strcmp(key, "labels") != 0
            && ngx_strcmp(key, "owner_id") != 0)
        {
            return ngx_fleet_send_error(api->request, NGX_HTTP_BAD_REQUEST,
                                        "VALIDATION_ERROR",
                                        "only name, labels and owner_id can "
                                        "be changed");
        }
    }

    if (json_object_size(api->json) == 0) {
        return ngx_fleet_send_error(api->request, NGX_HTTP_BAD_REQUEST,
                                    "VALIDATION_ERROR",
                                    "nothing to change: give name, labels "
                                    "or owner_id");
    }

    v = json_object_get(api->json, "owner_id");

    if (v != NULL && !json_is_null(v) && !json_is_string(v)
        && !json_is_integer(v))
    {
        return ngx_fleet_send_error(api->request, NGX_HTTP_BAD_REQUEST,
                                    "VALIDATION_ERROR",
                                    "owner_id must be a user id or null");
    }

    return ngx_fleet_api_call(api, NULL,
                              "fleet_device_patch($1, $2, $3, $4::jsonb)",
                              4, ngx_fleet_actor(api), id,
                              ngx_fleet_api_body_text(api));
}


ngx_int_t
ngx_fleet_api_device_delete(ngx_fleet_api_t *api)
{
    ngx_int_t    rc;
    const char  *id;

    id = ngx_fleet_api_device_id(api, &rc);
    if (id == NULL) {
        return rc;
    }

    return ngx_fleet_api_call(api, NULL,
                              "fleet_device_delete($1, $2, $3)", 3,
                              ngx_fleet_actor(api), id);
}


static const fleet_field_t  ngx_fleet_sensor_fields[] = {
    { "type", FLEET_FIELD_STRING, 1, 1, 64 },
    { "unit", FLEET_FIELD_STRING, 0, 0, 32 },
    { "name", FLEET_FIELD_STRING, 0, 1, 100 },
    { NULL, 0, 0, 0, 0 }
};


ngx_int_t
ngx_fleet_api_sensor_create(ngx_fleet_api_t *api)
{
    ngx_int_t    rc;
    const char  *id;

    id = ngx_fleet_api_device_id(api, &rc);
    if (id == NULL) {
        return rc;
    }

    if (ngx_fleet_api_validate(api, ngx_fleet_sensor_fields, &rc) != NGX_OK) {
        return rc;
    }

    return ngx_fleet_api_call(api, NULL,
                              "fleet_sensor_create($1, $2, $3, $4, "
                              "$5, $6)", 6,
                              ngx_fleet_actor(api), id,
                              ngx_fleet_api_string(api, "type"),
                              ngx_fleet_api_string(api, "unit"),
                              ngx_fleet_api_string(api, "name"));
}


ngx_int_t
ngx_fleet_api_sensor_readings(ngx_fleet_api_t *api)
{
    ngx_int_t    rc, lim;
    const char  *id, *limit;

    id = ngx_fleet_api_capture(api, 0);
    if (id == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_fleet_api_arg_int(api, "limit", 100, 1, 10000, &lim, &rc)
        != NGX_OK)
    {
        return rc;
    }

    limit = ngx_fleet_api_int_text(api, lim);
    if (limit == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_fleet_api_call(api, NULL,
                              "fleet_sensor_readings($1, $2, $3, $4, "
                              "$5, $6::int)", 6,
                              ngx_fleet_actor(api), id,
                              ngx_fleet_api_arg(api, "from"),
                              ngx_fleet_api_arg(api, "to"), limit);
}
