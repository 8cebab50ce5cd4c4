/*
 * fleetgate: device routes (SPEC section 4).
 */

#include "ngx_fleet_api.h"


static ngx_int_t ngx_fleet_is_mac(const char *s);
static ngx_int_t ngx_fleet_is_token(const char *s);


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

    if (ngx_fleet_is_token(chip) != NGX_OK) {
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
                              "SELECT fleet_need_register($1, $2, $3)",
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

static ngx_int_t
ngx_fleet_is_token(const char *s)
{
    u_char  c;

    for ( /* void */ ; *s; s++) {
        c = (u_char) *s;

        if (!isalnum(c) && c != '-' && c != '_' && c != ':' && c != '.') {
            return NGX_DECLINED;
        }
    }

    return NGX_OK;
}
