/*
 * fleetgate: directives, configuration and process hooks, plus the JSON
 * response helpers every handler shares (SPEC section 3 envelope).
 */

#include "ngx_fleet_module.h"


static ngx_int_t ngx_fleet_postconfiguration(ngx_conf_t *cf);
static void *ngx_fleet_create_main_conf(ngx_conf_t *cf);
static char *ngx_fleet_init_main_conf(ngx_conf_t *cf, void *conf);
static void *ngx_fleet_create_loc_conf(ngx_conf_t *cf);
static char *ngx_fleet_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static char *ngx_fleet_secret(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
static char *ngx_fleet_secret_file(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_fleet_content(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_fleet_init_process(ngx_cycle_t *cycle);
static void ngx_fleet_exit_process(ngx_cycle_t *cycle);
static void ngx_fleet_event_received(ngx_str_t *channel, ngx_str_t *payload,
    void *data);


static ngx_conf_num_bounds_t  ngx_fleet_pool_size_bounds = {
    ngx_conf_check_num_bounds, 1, 64
};

static ngx_conf_num_bounds_t  ngx_fleet_iterations_bounds = {
    ngx_conf_check_num_bounds, 1000, 10000000
};


static ngx_command_t  ngx_fleet_commands[] = {

    { ngx_string("fleet_pg_dsn"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_fleet_main_conf_t, pg_dsn),
      NULL },

    { ngx_string("fleet_pg_pool_size"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_fleet_main_conf_t, pg_pool_size),
      &ngx_fleet_pool_size_bounds },

    { ngx_string("fleet_pg_query_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_fleet_main_conf_t, pg_query_timeout),
      NULL },

    { ngx_string("fleet_pg_max_waiting"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_fleet_main_conf_t, pg_max_waiting),
      NULL },

    { ngx_string("fleet_bridge_socket"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_fleet_main_conf_t, bridge_socket),
      NULL },

    { ngx_string("fleet_jwt_secret"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_fleet_secret,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_fleet_main_conf_t, jwt_secret),
      NULL },

    { ngx_string("fleet_jwt_secret_file"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_fleet_secret_file,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_fleet_main_conf_t, jwt_secret),
      NULL },

    { ngx_string("fleet_jwt_ttl"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_fleet_main_conf_t, jwt_ttl),
      NULL },

    { ngx_string("fleet_password_iterations"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_fleet_main_conf_t, password_iterations),
      &ngx_fleet_iterations_bounds },

    { ngx_string("fleet_registration"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_fleet_main_conf_t, registration),
      NULL },

    { ngx_string("fleet_command_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_fleet_main_conf_t, command_timeout),
      NULL },

    { ngx_string("fleet_sse_heartbeat"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_fleet_main_conf_t, sse_heartbeat),
      NULL },

    { ngx_string("fleet_sse_max_buffered"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_fleet_main_conf_t, sse_max_buffered),
      NULL },

    { ngx_string("fleet_ws_max_message"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_fleet_main_conf_t, ws_max_message),
      NULL },

    { ngx_string("fleet_ws_max_queue"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_fleet_main_conf_t, ws_max_queue),
      NULL },

    { ngx_string("fleet_ws_ping_interval"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_fleet_main_conf_t, ws_ping_interval),
      NULL },

    { ngx_string("fleet_ws_message_rate"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_fleet_main_conf_t, ws_message_rate),
      NULL },

    { ngx_string("fleet_socketio_zone_size"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_fleet_main_conf_t, sio_zone_size),
      NULL },

    { ngx_string("fleet_ws_message_burst"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_fleet_main_conf_t, ws_message_burst),
      NULL },

    { ngx_string("fleet_promptpay_biller_id"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_fleet_main_conf_t, promptpay_biller_id),
      NULL },

    { ngx_string("fleet_promptpay_merchant_ref"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_fleet_main_conf_t, promptpay_merchant_ref),
      NULL },

    { ngx_string("fleet_payment_reference_prefix"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_fleet_main_conf_t, payment_reference_prefix),
      NULL },

    { ngx_string("fleet_payment_webhook_secret"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_fleet_secret,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_fleet_main_conf_t, payment_webhook_secret),
      NULL },

    { ngx_string("fleet_payment_webhook_secret_file"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_fleet_secret_file,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_fleet_main_conf_t, payment_webhook_secret),
      NULL },

    { ngx_string("fleet_payment_ttl"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_fleet_main_conf_t, payment_ttl),
      NULL },

#if (NGX_THREADS)
    { ngx_string("fleet_thread_pool"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_fleet_main_conf_t, thread_pool_name),
      NULL },
#endif

    { ngx_string("fleet_device_secret"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_fleet_secret,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_fleet_loc_conf_t, device_secret),
      NULL },

    { ngx_string("fleet_device_secret_file"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_fleet_secret_file,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_fleet_loc_conf_t, device_secret),
      NULL },

    { ngx_string("fleet_signature"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_fleet_loc_conf_t, signature),
      NULL },

    { ngx_string("fleet_max_body_size"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_fleet_loc_conf_t, max_body_size),
      NULL },

    { ngx_string("fleet_api"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_fleet_content,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      ngx_fleet_api_handler },

    { ngx_string("fleet_healthz"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_fleet_content,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      ngx_fleet_healthz_handler },

    { ngx_string("fleet_metrics"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_fleet_content,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      ngx_fleet_metrics_handler },

      ngx_null_command
};


static ngx_http_module_t  ngx_fleet_module_ctx = {
    NULL,                                  /* preconfiguration */
    ngx_fleet_postconfiguration,           /* postconfiguration */

    ngx_fleet_create_main_conf,            /* create main configuration */
    ngx_fleet_init_main_conf,              /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_fleet_create_loc_conf,             /* create location configuration */
    ngx_fleet_merge_loc_conf               /* merge location configuration */
};


ngx_module_t  ngx_fleet_module = {
    NGX_MODULE_V1,
    &ngx_fleet_module_ctx,                 /* module context */
    ngx_fleet_commands,                    /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_fleet_init_process,                /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_fleet_exit_process,                /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static void *
ngx_fleet_create_main_conf(ngx_conf_t *cf)
{
    ngx_fleet_main_conf_t  *fmcf;

    fmcf = ngx_pcalloc(cf->pool, sizeof(ngx_fleet_main_conf_t));
    if (fmcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     fmcf->pg_dsn = { 0, NULL };
     *     fmcf->bridge_socket = { 0, NULL };
     *     fmcf->jwt_secret = { 0, NULL };
     *     fmcf->metrics_zone = NULL;
     *     fmcf->api_used = 0;
     */

    fmcf->pg_pool_size = NGX_CONF_UNSET_UINT;
    fmcf->pg_query_timeout = NGX_CONF_UNSET_MSEC;
    fmcf->pg_max_waiting = NGX_CONF_UNSET_UINT;
    fmcf->jwt_ttl = NGX_CONF_UNSET;
    fmcf->password_iterations = NGX_CONF_UNSET_UINT;
    fmcf->registration = NGX_CONF_UNSET;
    fmcf->command_timeout = NGX_CONF_UNSET;
    fmcf->sse_heartbeat = NGX_CONF_UNSET_MSEC;
    fmcf->sse_max_buffered = NGX_CONF_UNSET_SIZE;
    fmcf->ws_max_message = NGX_CONF_UNSET_SIZE;
    fmcf->ws_max_queue = NGX_CONF_UNSET_SIZE;
    fmcf->ws_ping_interval = NGX_CONF_UNSET_MSEC;
    fmcf->ws_message_rate = NGX_CONF_UNSET_UINT;
    fmcf->ws_message_burst = NGX_CONF_UNSET_UINT;
    fmcf->sio_zone_size = NGX_CONF_UNSET_SIZE;
    fmcf->payment_ttl = NGX_CONF_UNSET;

    return fmcf;
}


static char *
ngx_fleet_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_fleet_main_conf_t  *fmcf = conf;

    ngx_conf_init_uint_value(fmcf->pg_pool_size, 4);
    ngx_conf_init_msec_value(fmcf->pg_query_timeout, 10000);
    ngx_conf_init_uint_value(fmcf->pg_max_waiting, 1024);
    ngx_conf_init_value(fmcf->jwt_ttl, 3600);
    ngx_conf_init_uint_value(fmcf->password_iterations, 600000);
    ngx_conf_init_value(fmcf->registration, 1);
    ngx_conf_init_value(fmcf->command_timeout, 30);
    ngx_conf_init_msec_value(fmcf->sse_heartbeat, 15000);
    ngx_conf_init_size_value(fmcf->sse_max_buffered, (size_t) 1024 * 1024);
    ngx_conf_init_size_value(fmcf->ws_max_message, (size_t) 64 * 1024);
    ngx_conf_init_size_value(fmcf->ws_max_queue, (size_t) 1024 * 1024);
    ngx_conf_init_msec_value(fmcf->ws_ping_interval, 30000);
    ngx_conf_init_uint_value(fmcf->ws_message_rate, 10);
    ngx_conf_init_uint_value(fmcf->ws_message_burst,
                             2 * fmcf->ws_message_rate);

    ngx_conf_init_size_value(fmcf->sio_zone_size, (size_t) 8 * 1024 * 1024);

    if (fmcf->sio_zone_size < (size_t) 8 * ngx_pagesize) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"fleet_socketio_zone_size\" is too small");
        return NGX_CONF_ERROR;
    }

    if (fmcf->ws_max_message < 125) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"fleet_ws_max_message\" must be at least 125");
        return NGX_CONF_ERROR;
    }

    if (fmcf->ws_message_rate && fmcf->ws_message_burst == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"fleet_ws_message_burst\" must be at least 1");
        return NGX_CONF_ERROR;
    }

    if (fmcf->api_used) {
        if (fmcf->pg_dsn.len == 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"fleet_api\" requires \"fleet_pg_dsn\"");
            return NGX_CONF_ERROR;
        }

        if (fmcf->jwt_secret.len < 32) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"fleet_api\" requires \"fleet_jwt_secret\" "
                               "of at least 32 bytes");
            return NGX_CONF_ERROR;
        }

#if (NGX_THREADS)
        if (fmcf->thread_pool_name.len == 0) {
            ngx_str_set(&fmcf->thread_pool_name, "default");
        }

        /* password hashing runs in threads: a PBKDF2 verification takes
         * hundreds of milliseconds of CPU the event loop must not lose */
        fmcf->thread_pool = ngx_thread_pool_add(cf, &fmcf->thread_pool_name);
        if (fmcf->thread_pool == NULL) {
            return NGX_CONF_ERROR;
        }
#endif
    }

    if (ngx_fleet_payments_init_conf(cf, fmcf) != NGX_CONF_OK) {
        return NGX_CONF_ERROR;
    }

    if (ngx_fleet_sio_polling_init_zone(cf) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    if (ngx_fleet_metrics_add_zone(cf, fmcf) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static void *
ngx_fleet_create_loc_conf(ngx_conf_t *cf)
{
    ngx_fleet_loc_conf_t  *flcf;

    flcf = ngx_pcalloc(cf->pool, sizeof(ngx_fleet_loc_conf_t));
    if (flcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     flcf->device_secret = { 0, NULL };
     */

    flcf->signature = NGX_CONF_UNSET;
    flcf->max_body_size = NGX_CONF_UNSET_SIZE;

    return flcf;
}


static char *
ngx_fleet_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_fleet_loc_conf_t  *prev = parent;
    ngx_fleet_loc_conf_t  *conf = child;

    ngx_conf_merge_str_value(conf->device_secret, prev->device_secret, "");
    ngx_conf_merge_value(conf->signature, prev->signature, 0);
    ngx_conf_merge_size_value(conf->max_body_size, prev->max_body_size,
                              (size_t) 1024 * 1024);

    if (conf->signature && conf->device_secret.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"fleet_signature\" requires "
                           "\"fleet_device_secret\"");
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_fleet_postconfiguration(ngx_conf_t *cf)
{
    return ngx_fleet_signature_init(cf);
}


static char *
ngx_fleet_secret(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_str_t  *field, *value;

    field = (ngx_str_t *) ((char *) conf + cmd->offset);

    if (field->data) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (value[1].len == 0) {
        return "must not be empty";
    }

    *field = value[1];

    return NGX_CONF_OK;
}


/* secrets can live in a file readable only by the master (root) */

static char *
ngx_fleet_secret_file(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ssize_t          n;
    ngx_str_t       *field, *value;
    ngx_file_t       file;
    ngx_file_info_t  fi;

    field = (ngx_str_t *) ((char *) conf + cmd->offset);

    if (field->data) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_conf_full_name(cf->cycle, &value[1], 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(&file, sizeof(ngx_file_t));
    file.name = value[1];
    file.log = cf->log;

    file.fd = ngx_open_file(file.name.data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);
    if (file.fd == NGX_INVALID_FILE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           ngx_open_file_n " \"%V\" failed", &file.name);
        return NGX_CONF_ERROR;
    }

    if (ngx_fd_info(file.fd, &fi) == NGX_FILE_ERROR
        || ngx_file_size(&fi) > 4096)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "secret file \"%V\" is unreadable or too large",
                           &file.name);
        ngx_close_file(file.fd);
        return NGX_CONF_ERROR;
    }

    field->len = (size_t) ngx_file_size(&fi);
    field->data = ngx_pnalloc(cf->pool, field->len + 1);
    if (field->data == NULL) {
        ngx_close_file(file.fd);
        return NGX_CONF_ERROR;
    }

    n = ngx_read_file(&file, field->data, field->len, 0);
    ngx_close_file(file.fd);

    if (n != (ssize_t) field->len) {
        return "cannot be read";
    }

    /* a trailing newline from "echo secret > file" is not part of it */
    while (field->len
           && (field->data[field->len - 1] == '\n'
               || field->data[field->len - 1] == '\r'))
    {
        field->len--;
    }

    if (field->len == 0) {
        return "names an empty file";
    }

    return NGX_CONF_OK;
}


static char *
ngx_fleet_content(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_core_loc_conf_t  *clcf;
    ngx_fleet_main_conf_t     *fmcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (clcf->handler) {
        return "is duplicate or conflicts with another content handler";
    }

    clcf->handler = (ngx_http_handler_pt) cmd->post;

    if (cmd->post == (void *) ngx_fleet_api_handler) {
        fmcf = ngx_http_conf_get_module_main_conf(cf, ngx_fleet_module);
        fmcf->api_used = 1;
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_fleet_init_process(ngx_cycle_t *cycle)
{
    if (ngx_process != NGX_PROCESS_WORKER
        && ngx_process != NGX_PROCESS_SINGLE)
    {
        return NGX_OK;
    }

    if (ngx_http_cycle_get_module_main_conf(cycle, ngx_fleet_module) == NULL) {
        return NGX_OK;
    }

    ngx_fleet_worker_metric_set(NGX_FLEET_W_PID, (ngx_atomic_uint_t) ngx_pid);

    /* the product's event bus: every worker listens, whatever it serves */
    if (ngx_fleet_pg_listen(cycle, NGX_FLEET_NOTIFY_CHANNEL,
                            ngx_fleet_event_received, NULL)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (ngx_fleet_pg_init_process(cycle) != NGX_OK) {
        return NGX_ERROR;
    }

    return ngx_fleet_bridge_init_process(cycle);
}


static void
ngx_fleet_exit_process(ngx_cycle_t *cycle)
{
    ngx_fleet_bridge_exit_process(cycle);
    ngx_fleet_pg_exit_process(cycle);
}


/* the event bus: each envelope names its type; streams pick theirs */

static void
ngx_fleet_event_received(ngx_str_t *channel, ngx_str_t *payload, void *data)
{
    json_t      *j, *scope;
    const char  *type;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "fleet: event on \"%V\": %V", channel, payload);

    j = json_loadb((const char *) payload->data, payload->len, 0, NULL);
    if (j == NULL) {
        return;
    }

    type = json_string_value(json_object_get(j, "type"));

    if (type && ngx_strcmp(type, "command_event") == 0) {
        scope = json_object_get(j, "scope");

        if (json_is_string(scope)) {
            ngx_fleet_sse_notify(json_string_value(scope),
                                 json_string_length(scope));
        }

    } else if (type && (ngx_strcmp(type, "sensor_data_update") == 0
                        || ngx_strcmp(type, "device_status") == 0
                        || ngx_strcmp(type, "camera_frame") == 0))
    {
        ngx_fleet_streams_event(type, j, payload);
    }

    if (type) {
        ngx_fleet_socketio_event(type, j, payload);
    }

    json_decref(j);
}


ngx_fleet_ctx_t *
ngx_fleet_get_ctx(ngx_http_request_t *r)
{
    ngx_fleet_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_fleet_module);
    if (ctx) {
        return ctx;
    }

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_fleet_ctx_t));
    if (ctx == NULL) {
        return NULL;
    }

    ngx_http_set_ctx(r, ctx, ngx_fleet_module);

    return ctx;
}


/* "2025-09-23T18:25:09.870Z" */

u_char *
ngx_fleet_iso_time(u_char *p, ngx_time_t *tp)
{
    ngx_tm_t  tm;

    ngx_gmtime(tp->sec, &tm);

    return ngx_sprintf(p, "%4d-%02d-%02dT%02d:%02d:%02d.%03dZ",
                       tm.ngx_tm_year, tm.ngx_tm_mon, tm.ngx_tm_mday,
                       tm.ngx_tm_hour, tm.ngx_tm_min, tm.ngx_tm_sec,
                       (int) tp->msec);
}


ngx_int_t
ngx_fleet_send_json(ngx_http_request_t *r, ngx_uint_t status, json_t *body)
{
    char       *text;
    ngx_int_t   rc;

    text = json_dumps(body, JSON_COMPACT | JSON_REAL_PRECISION(15));
    if (text == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    rc = ngx_fleet_send_text(r, status, (u_char *) text, ngx_strlen(text));
    ngx_free(text);

    return rc;
}


/* a JSON text as the body (PostgreSQL's, or jansson's) */

ngx_int_t
ngx_fleet_send_text(ngx_http_request_t *r, ngx_uint_t status, u_char *text,
    size_t len)
{
    return ngx_fleet_send_body(r, status, "application/json", text, len, 1);
}


/* a body as it is (and a newline, for JSON read by people) */

ngx_int_t
ngx_fleet_send_body(ngx_http_request_t *r, ngx_uint_t status,
    const char *type, u_char *text, size_t len, ngx_uint_t newline)
{
    ngx_int_t     rc;
    ngx_buf_t    *b;
    ngx_chain_t   out;

    b = ngx_create_temp_buf(r->pool, len + 1);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->last = ngx_cpymem(b->last, text, len);

    if (newline) {
        *b->last++ = '\n';
    }

    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    ngx_fleet_metrics_count_status(status);

    r->headers_out.status = status;
    r->headers_out.content_length_n = b->last - b->pos;
    r->headers_out.content_type.data = (u_char *) type;
    r->headers_out.content_type.len = ngx_strlen(type);
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.content_type_lowcase = NULL;

    rc = ngx_http_send_header(r);
    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


ngx_int_t
ngx_fleet_send_error(ngx_http_request_t *r, ngx_uint_t status,
    const char *code, const char *message)
{
    u_char     ts[32], *p;
    json_t    *body;
    ngx_int_t  rc;

    /* a body we refused before reading it is drained, as nginx does for
     * its own error pages, so the connection can be kept alive */
    if (r == r->main && r->request_body == NULL) {
        (void) ngx_http_discard_request_body(r);
    }

    p = ngx_fleet_iso_time(ts, ngx_timeofday());

    /* path is the request path without the query (SPEC section 3) */
    body = json_pack("{s:b, s:s, s:s, s:i, s:s%, s:s%}",
                     "success", 0,
                     "errorCode", code,
                     "message", message,
                     "statusCode", (int) status,
                     "timestamp", ts, (size_t) (p - ts),
                     "path", r->uri.data, r->uri.len);
    if (body == NULL) {
        /* the path was not valid UTF-8: say so rather than echo it */
        body = json_pack("{s:b, s:s, s:s, s:i, s:s%, s:s}",
                         "success", 0, "errorCode", code, "message", message,
                         "statusCode", (int) status,
                         "timestamp", ts, (size_t) (p - ts),
                         "path", "");
        if (body == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    rc = ngx_fleet_send_json(r, status, body);
    json_decref(body);

    return rc;
}


ngx_table_elt_t *
ngx_fleet_find_header(ngx_http_request_t *r, const char *name, size_t len)
{
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                return NULL;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len == len
            && ngx_strncasecmp(h[i].key.data, (u_char *) name, len) == 0)
        {
            return &h[i];
        }
    }
}


/*
 * The body read by ngx_http_read_client_request_body() as one contiguous
 * piece of memory.  Returns NGX_DECLINED when nginx spilled it to a temp
 * file: client_body_buffer_size must cover fleet_max_body_size, and we
 * never read files in a worker to find out.
 */

ngx_int_t
ngx_fleet_request_body(ngx_http_request_t *r, ngx_str_t *body)
{
    u_char       *p;
    size_t        len;
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    ngx_str_null(body);

    if (r->request_body == NULL || r->request_body->bufs == NULL) {
        return NGX_OK;
    }

    if (r->request_body->temp_file) {
        return NGX_DECLINED;
    }

    len = 0;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        b = cl->buf;

        if (b->in_file) {
            return NGX_DECLINED;
        }

        len += b->last - b->pos;
    }

    if (len == 0) {
        return NGX_OK;
    }

    cl = r->request_body->bufs;

    if (cl->next == NULL) {
        body->data = cl->buf->pos;
        body->len = len;
        return NGX_OK;
    }

    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    body->data = p;
    body->len = len;

    for ( /* void */ ; cl; cl = cl->next) {
        if (cl->buf->last != cl->buf->pos) {
            p = ngx_cpymem(p, cl->buf->pos, cl->buf->last - cl->buf->pos);
        }
    }

    return NGX_OK;
}
