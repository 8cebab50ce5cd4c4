/*
 * fleetgate: REST routes — the router's types and the helpers route
 * handlers share.
 */

#ifndef _NGX_FLEET_API_H_INCLUDED_
#define _NGX_FLEET_API_H_INCLUDED_


#include "ngx_fleet_module.h"
#include "fleet_json.h"


#define NGX_FLEET_API_MAX_CAPTURES  2

/* a password field holds up to 1024 characters of up to 4 bytes each */
#define NGX_FLEET_PASSWORD_BUF      (4 * 1024 + 1)

/* ngx_fleet_route_t.json_body: 0 none, 1 a JSON object, or optional */
#define NGX_FLEET_BODY_OPTIONAL     2


typedef struct ngx_fleet_api_s  ngx_fleet_api_t;

/*
 * A route handler answers synchronously (returns what ngx_fleet_send_*
 * returned) or starts database work and returns NGX_DONE; it then ends
 * the request later with ngx_fleet_api_finish().
 */
typedef ngx_int_t (*ngx_fleet_route_pt)(ngx_fleet_api_t *api);


typedef enum {
    NGX_FLEET_AUTH_NONE = 0,
    NGX_FLEET_AUTH_DEVICE,
    NGX_FLEET_AUTH_USER,
    NGX_FLEET_AUTH_ADMIN,
    NGX_FLEET_AUTH_WEBHOOK      /* x-webhook-signature (SPEC 8) */
} ngx_fleet_auth_e;


typedef struct {
    ngx_uint_t                  method;
    const char                 *pattern;    /* "{}" matches one segment */
    ngx_fleet_auth_e            auth;
    ngx_uint_t                  json_body;
    ngx_fleet_route_pt          handler;
} ngx_fleet_route_t;


struct ngx_fleet_api_s {
    ngx_http_request_t         *request;
    const ngx_fleet_route_t    *route;
    ngx_str_t                   captures[NGX_FLEET_API_MAX_CAPTURES];
    ngx_str_t                   body;
    json_t                     *json;
    fleet_jwt_claims_t          claims;
    ngx_fleet_pg_query_t        query;
    void                       *data;
    void                      (*cleanup)(ngx_fleet_api_t *api);
    /* after a route function's success was sent */
    void                      (*succeeded)(ngx_fleet_api_t *api);
};


ngx_int_t ngx_fleet_api_call(ngx_fleet_api_t *api,
    ngx_fleet_pg_handler_pt handler, const char *sql, ngx_uint_t n, ...);
ngx_int_t ngx_fleet_api_send_sql_json(ngx_fleet_api_t *api, PGresult *res);
json_t *ngx_fleet_api_sql_value(ngx_fleet_api_t *api, PGresult *res);
ngx_int_t ngx_fleet_api_validate(ngx_fleet_api_t *api,
    const fleet_field_t *fields, ngx_int_t *rc);
ngx_int_t ngx_fleet_api_unavailable(ngx_fleet_api_t *api);
void ngx_fleet_api_finish(ngx_fleet_api_t *api, ngx_int_t rc);
const char *ngx_fleet_api_string(ngx_fleet_api_t *api, const char *key);
const char *ngx_fleet_api_capture(ngx_fleet_api_t *api, ngx_uint_t n);
const char *ngx_fleet_api_json_text(ngx_fleet_api_t *api, json_t *v);
const char *ngx_fleet_api_body_text(ngx_fleet_api_t *api);
const char *ngx_fleet_api_int_text(ngx_fleet_api_t *api, int64_t n);
const char *ngx_fleet_api_arg(ngx_fleet_api_t *api, const char *name);
ngx_int_t ngx_fleet_api_arg_int(ngx_fleet_api_t *api, const char *name,
    ngx_int_t def, ngx_int_t min, ngx_int_t max, ngx_int_t *value,
    ngx_int_t *rc);
ngx_int_t ngx_fleet_api_is_token(const char *s);
const char *ngx_fleet_api_device_id(ngx_fleet_api_t *api, ngx_int_t *rc);
ngx_int_t ngx_fleet_api_send_token(ngx_fleet_api_t *api, ngx_uint_t status,
    json_t *user, const char *message);

/* route handlers */
ngx_int_t ngx_fleet_api_login(ngx_fleet_api_t *api);
ngx_int_t ngx_fleet_api_users_me(ngx_fleet_api_t *api);
ngx_int_t ngx_fleet_api_need_register(ngx_fleet_api_t *api);
ngx_int_t ngx_fleet_api_sync_state(ngx_fleet_api_t *api);
ngx_int_t ngx_fleet_api_sync_configs(ngx_fleet_api_t *api);
ngx_int_t ngx_fleet_api_upload_logs(ngx_fleet_api_t *api);
ngx_int_t ngx_fleet_api_device_claim(ngx_fleet_api_t *api);
ngx_int_t ngx_fleet_api_devices_list(ngx_fleet_api_t *api);
ngx_int_t ngx_fleet_api_device_get(ngx_fleet_api_t *api);
ngx_int_t ngx_fleet_api_device_patch(ngx_fleet_api_t *api);
ngx_int_t ngx_fleet_api_device_delete(ngx_fleet_api_t *api);
ngx_int_t ngx_fleet_api_sensor_create(ngx_fleet_api_t *api);
ngx_int_t ngx_fleet_api_sensor_readings(ngx_fleet_api_t *api);
ngx_int_t ngx_fleet_api_apply_config(ngx_fleet_api_t *api);
ngx_int_t ngx_fleet_api_bulk_restart(ngx_fleet_api_t *api);
ngx_int_t ngx_fleet_api_restart(ngx_fleet_api_t *api);
ngx_int_t ngx_fleet_api_command(ngx_fleet_api_t *api);
ngx_int_t ngx_fleet_api_command_get(ngx_fleet_api_t *api);
ngx_int_t ngx_fleet_api_bulk_get(ngx_fleet_api_t *api);
ngx_int_t ngx_fleet_api_stream(ngx_fleet_api_t *api);
ngx_int_t ngx_fleet_api_ws_camera(ngx_fleet_api_t *api);
ngx_int_t ngx_fleet_api_ws_cameras(ngx_fleet_api_t *api);
ngx_int_t ngx_fleet_api_ws_sensors(ngx_fleet_api_t *api);
ngx_int_t ngx_fleet_api_ws_device(ngx_fleet_api_t *api);
ngx_int_t ngx_fleet_api_ws_sensor(ngx_fleet_api_t *api);
ngx_int_t ngx_fleet_api_camera_list(ngx_fleet_api_t *api);
ngx_int_t ngx_fleet_api_camera_get(ngx_fleet_api_t *api);
ngx_int_t ngx_fleet_api_socketio(ngx_fleet_api_t *api);
ngx_int_t ngx_fleet_api_events_emit(ngx_fleet_api_t *api);
ngx_int_t ngx_fleet_api_register(ngx_fleet_api_t *api);
ngx_int_t ngx_fleet_api_logout(ngx_fleet_api_t *api);
ngx_int_t ngx_fleet_api_users_me_patch(ngx_fleet_api_t *api);
ngx_int_t ngx_fleet_api_admin_users(ngx_fleet_api_t *api);
ngx_int_t ngx_fleet_api_admin_user_patch(ngx_fleet_api_t *api);
ngx_int_t ngx_fleet_api_admin_maintenance(ngx_fleet_api_t *api);
ngx_int_t ngx_fleet_api_admin_audit(ngx_fleet_api_t *api);
ngx_int_t ngx_fleet_api_payment_create(ngx_fleet_api_t *api);
ngx_int_t ngx_fleet_api_payment_status(ngx_fleet_api_t *api);
ngx_int_t ngx_fleet_api_payment_webhook(ngx_fleet_api_t *api);
ngx_int_t ngx_fleet_api_payment_confirm(ngx_fleet_api_t *api);
ngx_int_t ngx_fleet_api_payment_cancel(ngx_fleet_api_t *api);
ngx_int_t ngx_fleet_api_payment_get(ngx_fleet_api_t *api);
ngx_int_t ngx_fleet_api_payments_list(ngx_fleet_api_t *api);

/* NGX_OK, or NGX_DECLINED with the 401 sent and its result in *rc */
ngx_int_t ngx_fleet_api_webhook_auth(ngx_fleet_api_t *api, ngx_int_t *rc);


#endif /* _NGX_FLEET_API_H_INCLUDED_ */
