/*
 * fleetgate: counters in shared memory and the Prometheus /metrics page.
 *
 * Workers share nothing but PostgreSQL (ARCHITECTURE.md); counters are the
 * one exception, like stub_status: plain atomics in a small zone, so any
 * worker can report every worker.  The zone survives reloads; a worker
 * that is shutting down stops writing its slot so the new worker that
 * takes the same slot owns it alone.
 */

#include "ngx_fleet_module.h"


typedef struct {
    ngx_atomic_t   global[NGX_FLEET_M_LAST];
    ngx_atomic_t   worker[NGX_FLEET_MAX_WORKERS][NGX_FLEET_W_LAST];
} ngx_fleet_metrics_shm_t;


typedef struct {
    const char    *name;
    const char    *type;
    const char    *help;
    const char    *label;
} ngx_fleet_metric_desc_t;


static ngx_int_t ngx_fleet_metrics_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
static ngx_atomic_t *ngx_fleet_worker_slot(ngx_fleet_worker_metric_e m);


static ngx_fleet_metrics_shm_t  *ngx_fleet_metrics;


static ngx_fleet_metric_desc_t  ngx_fleet_global_desc[] = {
    { "fleet_requests_total", "counter",
      "Requests handled by fleetgate locations.", NULL },
    { "fleet_signature_failures_total", "counter",
      "Requests refused for a missing or wrong x-signature.", NULL },
    { "fleet_auth_failures_total", "counter",
      "Requests refused for a missing or invalid bearer token.", NULL },
    { "fleet_pg_queries_total", "counter",
      "Queries sent to PostgreSQL.", NULL },
    { "fleet_pg_errors_total", "counter",
      "Queries that failed (error, timeout or lost connection).", NULL },
    { "fleet_pg_reconnects_total", "counter",
      "PostgreSQL connections lost and reopened.", NULL },
    { "fleet_responses_total", "counter",
      "Responses by status class.", "class=\"2xx\"" },
    { "fleet_responses_total", NULL, NULL, "class=\"4xx\"" },
    { "fleet_responses_total", NULL, NULL, "class=\"5xx\"" },
    { "fleet_logins_total", "counter",
      "Successful logins.", NULL },
    { "fleet_mqtt_messages_in_total", "counter",
      "MQTT messages the bridge received (as last reported).", NULL },
    { "fleet_mqtt_messages_out_total", "counter",
      "MQTT messages the bridge published (as last reported).", NULL },
};


static ngx_fleet_metric_desc_t  ngx_fleet_worker_desc[] = {
    { "fleet_notify_received_total", "counter",
      "PostgreSQL notifications received by the worker.", NULL },
    { "fleet_pg_connections", "gauge",
      "Pool connections ready to serve queries.", NULL },
    { "fleet_pg_waiting", "gauge",
      "Queries waiting for a free pool connection.", NULL },
    { "fleet_pg_listen_up", "gauge",
      "1 when the worker's LISTEN connection is up.", NULL },
    { "fleet_bridge_up", "gauge",
      "1 when the worker's link to the bridge answers pings.", NULL },
    { "fleet_open_streams", "gauge",
      "Event streams (SSE) the worker holds open.", NULL },
    { "fleet_websockets", "gauge",
      "WebSocket connections the worker holds open.", NULL },
    { "fleet_ws_slow_closed_total", "counter",
      "WebSocket clients cut off because their send queue overflowed.",
      NULL },
};


ngx_int_t
ngx_fleet_metrics_add_zone(ngx_conf_t *cf, ngx_fleet_main_conf_t *fmcf)
{
    ngx_str_t        name;
    ngx_shm_zone_t  *zone;

    ngx_str_set(&name, "fleet_metrics");

    zone = ngx_shared_memory_add(cf, &name,
                                 8 * ngx_pagesize
                                 + sizeof(ngx_fleet_metrics_shm_t),
                                 &ngx_fleet_module);
    if (zone == NULL) {
        return NGX_ERROR;
    }

    zone->init = ngx_fleet_metrics_init_zone;
    zone->noreuse = 0;
    fmcf->metrics_zone = zone;

    return NGX_OK;
}


static ngx_int_t
ngx_fleet_metrics_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_slab_pool_t  *shpool;

    if (data) {
        shm_zone->data = data;
        ngx_fleet_metrics = data;
        return NGX_OK;
    }

    shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (shm_zone->shm.exists) {
        shm_zone->data = shpool->data;
        ngx_fleet_metrics = shpool->data;
        return NGX_OK;
    }

    ngx_fleet_metrics = ngx_slab_calloc(shpool,
                                        sizeof(ngx_fleet_metrics_shm_t));
    if (ngx_fleet_metrics == NULL) {
        return NGX_ERROR;
    }

    shpool->data = ngx_fleet_metrics;
    shm_zone->data = ngx_fleet_metrics;

    return NGX_OK;
}


void
ngx_fleet_metric_inc(ngx_fleet_metric_e m)
{
    if (ngx_fleet_metrics) {
        (void) ngx_atomic_fetch_add(&ngx_fleet_metrics->global[m], 1);
    }
}


void
ngx_fleet_metric_set(ngx_fleet_metric_e m, ngx_atomic_uint_t value)
{
    if (ngx_fleet_metrics) {
        ngx_fleet_metrics->global[m] = value;
    }
}


static ngx_atomic_t *
ngx_fleet_worker_slot(ngx_fleet_worker_metric_e m)
{
    if (ngx_fleet_metrics == NULL || ngx_exiting
        || ngx_worker >= NGX_FLEET_MAX_WORKERS)
    {
        return NULL;
    }

    return &ngx_fleet_metrics->worker[ngx_worker][m];
}


void
ngx_fleet_worker_metric_add(ngx_fleet_worker_metric_e m,
    ngx_atomic_int_t delta)
{
    ngx_atomic_t  *slot;

    slot = ngx_fleet_worker_slot(m);
    if (slot) {
        (void) ngx_atomic_fetch_add(slot, delta);
    }
}


void
ngx_fleet_worker_metric_set(ngx_fleet_worker_metric_e m,
    ngx_atomic_uint_t value)
{
    ngx_uint_t     i;
    ngx_atomic_t  *slot;

    slot = ngx_fleet_worker_slot(m);
    if (slot == NULL) {
        return;
    }

    if (m == NGX_FLEET_W_PID) {
        /* a new process in this slot starts from zero */
        for (i = 0; i < NGX_FLEET_W_LAST; i++) {
            ngx_fleet_metrics->worker[ngx_worker][i] = 0;
        }
    }

    *slot = value;
}


void
ngx_fleet_metrics_count_status(ngx_uint_t status)
{
    ngx_fleet_metric_inc(NGX_FLEET_M_REQUESTS);

    if (status >= 500) {
        ngx_fleet_metric_inc(NGX_FLEET_M_RESP_5XX);

    } else if (status >= 400) {
        ngx_fleet_metric_inc(NGX_FLEET_M_RESP_4XX);

    } else {
        ngx_fleet_metric_inc(NGX_FLEET_M_RESP_2XX);
    }
}


ngx_int_t
ngx_fleet_metrics_handler(ngx_http_request_t *r)
{
    size_t                    size;
    ngx_int_t                 rc;
    ngx_buf_t                *b;
    ngx_uint_t                i, w, workers;
    ngx_chain_t               out;
    ngx_core_conf_t          *ccf;
    ngx_fleet_metric_desc_t  *d;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    if (ngx_fleet_metrics == NULL) {
        return NGX_HTTP_SERVICE_UNAVAILABLE;
    }

    ccf = (ngx_core_conf_t *) ngx_get_conf(ngx_cycle->conf_ctx,
                                           ngx_core_module);
    workers = ngx_min((ngx_uint_t) ccf->worker_processes,
                      NGX_FLEET_MAX_WORKERS);
    if (workers == 0) {
        workers = 1;
    }

    size = (size_t) NGX_FLEET_M_LAST * 256
           + (size_t) NGX_FLEET_W_LAST * (256 + workers * 80);

    b = ngx_create_temp_buf(r->pool, size);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    for (i = 0; i < NGX_FLEET_M_LAST; i++) {
        d = &ngx_fleet_global_desc[i];

        if (d->type) {
            b->last = ngx_sprintf(b->last, "# HELP %s %s\n# TYPE %s %s\n",
                                  d->name, d->help, d->name, d->type);
        }

        if (d->label) {
            b->last = ngx_sprintf(b->last, "%s{%s} %uA\n", d->name, d->label,
                                  ngx_fleet_metrics->global[i]);

        } else {
            b->last = ngx_sprintf(b->last, "%s %uA\n", d->name,
                                  ngx_fleet_metrics->global[i]);
        }
    }

    for (i = 0; i < NGX_FLEET_W_LAST - 1; i++) {
        d = &ngx_fleet_worker_desc[i];

        b->last = ngx_sprintf(b->last, "# HELP %s %s\n# TYPE %s %s\n",
                              d->name, d->help, d->name, d->type);

        for (w = 0; w < workers; w++) {
            b->last = ngx_sprintf(b->last, "%s{worker=\"%ui\"} %uA\n",
                                  d->name, w, ngx_fleet_metrics->worker[w][i]);
        }
    }

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = b->last - b->pos;
    ngx_str_set(&r->headers_out.content_type,
                "text/plain; version=0.0.4; charset=utf-8");
    r->headers_out.content_type_len = r->headers_out.content_type.len;

    rc = ngx_http_send_header(r);
    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}
