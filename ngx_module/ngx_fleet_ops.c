/*
 * fleetgate: /healthz for load balancers and orchestrators (SPEC 10).
 */

#include "ngx_fleet_module.h"


typedef struct {
    ngx_http_request_t         *request;
    ngx_fleet_pg_query_t        query;
} ngx_fleet_healthz_t;


static void ngx_fleet_healthz_done(ngx_fleet_pg_query_t *q, PGresult *res);
static ngx_int_t ngx_fleet_healthz_send(ngx_http_request_t *r,
    ngx_uint_t database, ngx_int_t bridges);
static void ngx_fleet_healthz_cleanup(void *data);


ngx_int_t
ngx_fleet_healthz_handler(ngx_http_request_t *r)
{
    ngx_int_t             rc;
    ngx_http_cleanup_t   *cln;
    ngx_fleet_healthz_t  *hz;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return ngx_fleet_send_error(r, NGX_HTTP_NOT_ALLOWED,
                                    "METHOD_NOT_ALLOWED", "use GET");
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    hz = ngx_pcalloc(r->pool, sizeof(ngx_fleet_healthz_t));
    cln = ngx_http_cleanup_add(r, 0);
    if (hz == NULL || cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    hz->request = r;
    cln->handler = ngx_fleet_healthz_cleanup;
    cln->data = hz;

    hz->query.sql = "SELECT fleet_health()";
    hz->query.handler = ngx_fleet_healthz_done;
    hz->query.data = hz;
    hz->query.log = r->connection->log;

    if (ngx_fleet_pg_send(&hz->query) != NGX_OK) {
        return ngx_fleet_healthz_send(r, 0, -1);
    }

    r->main->count++;

    return NGX_DONE;
}


static void
ngx_fleet_healthz_done(ngx_fleet_pg_query_t *q, PGresult *res)
{
    json_t               *j, *v;
    ngx_int_t             bridges;
    ngx_connection_t     *c;
    ngx_http_request_t   *r;
    ngx_fleet_healthz_t  *hz;

    hz = q->data;
    r = hz->request;
    c = r->connection;

    bridges = -1;

    if (res && PQntuples(res) == 1) {
        j = json_loads(PQgetvalue(res, 0, 0), 0, NULL);
        v = json_object_get(j, "bridges_alive");

        if (json_is_integer(v)) {
            bridges = (ngx_int_t) json_integer_value(v);
        }

        if (j) {
            json_decref(j);
        }
    }

    ngx_http_finalize_request(r, ngx_fleet_healthz_send(r, res != NULL,
                                                        bridges));
    ngx_http_run_posted_requests(c);
}


static ngx_int_t
ngx_fleet_healthz_send(ngx_http_request_t *r, ngx_uint_t database,
    ngx_int_t bridges)
{
    json_t      *body;
    ngx_int_t    rc;
    ngx_uint_t   bridge, mqtt, pg, ok;

    bridge = (ngx_fleet_bridge_status(&mqtt, &pg) == NGX_OK);
    ok = database && bridge && mqtt;

    body = json_pack("{s:s, s:b, s:b, s:b, s:i, s:i, s:i, s:s}",
                     "status", ok ? "ok" : "degraded",
                     "database", (int) database,
                     "bridge", (int) bridge,
                     "mqtt", (int) mqtt,
                     "bridges_alive", (int) bridges,
                     "worker", (int) ngx_worker,
                     "pg_connections", (int) ngx_fleet_pg_available(),
                     "version", NGX_FLEET_VERSION);
    if (body == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    rc = ngx_fleet_send_json(r, ok ? NGX_HTTP_OK
                                   : NGX_HTTP_SERVICE_UNAVAILABLE, body);
    json_decref(body);

    return rc;
}


static void
ngx_fleet_healthz_cleanup(void *data)
{
    ngx_fleet_healthz_t  *hz = data;

    ngx_fleet_pg_cancel(&hz->query);
}
