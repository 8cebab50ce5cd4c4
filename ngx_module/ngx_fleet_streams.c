/*
 * fleetgate: browser streams over raw WebSocket (SPEC 7, seeds 000, 002).
 *
 * Each stream is one room of the worker's index: "sensors" (every
 * reading the user may see), "device:ID", "sensor:ID", "camera:MAC" and
 * "cameras" (admins).  PostgreSQL checks the rights before the 101 and
 * says who the subscriber is; afterwards every event is filtered per
 * subscriber on the owner the envelope carries, so a device that changes
 * hands stops streaming to its former owner at once.
 *
 * A reading's message is built by PostgreSQL into the envelope and sent
 * as it is; a camera frame is too big for NOTIFY, so a worker with
 * subscribers for it reads it once, however many subscribers it has, and
 * while that read is in flight newer frames only mark it to be read
 * again: the latest frame wins, in the worker and in each lagging
 * client's queue.
 */

#include "ngx_fleet_api.h"
#include "ngx_fleet_ws.h"
#include "ngx_fleet_rooms.h"


#define NGX_FLEET_STREAM_MAX_INFLIGHT  8


typedef struct {
    ngx_fleet_room_member_t     member;
    ngx_fleet_ws_t             *ws;
    ngx_queue_t                 inflight;
    ngx_uint_t                  ninflight;
    fleet_role_t                role;
    unsigned                    sees_all:1;
    unsigned                    takes_messages:1;
    char                        user_id[NGX_INT64_LEN + 1];
} ngx_fleet_stream_t;


typedef struct {
    const char                 *name;       /* for fleet_ws_open() */
    ngx_uint_t                  takes_messages;
} ngx_fleet_stream_kind_t;


/* a client message on its way through the database */
typedef struct {
    ngx_queue_t                 queue;
    ngx_fleet_pg_query_t        query;
    ngx_fleet_stream_t         *stream;
    char                        text[1];
} ngx_fleet_stream_call_t;


/* a camera frame being read for this worker's subscribers */
typedef struct {
    ngx_queue_t                 queue;
    ngx_fleet_pg_query_t        query;
    unsigned                    again:1;
    unsigned                    all:1;
    char                        owner[NGX_INT64_LEN + 1];
    char                        room[sizeof("camera:00:00:00:00:00:00")];
} ngx_fleet_camera_fetch_t;


typedef struct {
    ngx_fleet_ws_msg_t         *msg;
    const char                 *owner;
} ngx_fleet_delivery_t;


static ngx_int_t ngx_fleet_stream_open(ngx_fleet_api_t *api,
    const ngx_fleet_stream_kind_t *kind, const char *target);
static void ngx_fleet_stream_opened(ngx_fleet_pg_query_t *q, PGresult *res);
static void ngx_fleet_stream_protocol(ngx_http_request_t *r,
    ngx_str_t *protocol);
static void ngx_fleet_stream_message(ngx_fleet_ws_t *ws, ngx_int_t opcode,
    u_char *data, size_t len);
static void ngx_fleet_stream_limited(ngx_fleet_ws_t *ws);
static void ngx_fleet_stream_closed(ngx_fleet_ws_t *ws);
static void ngx_fleet_stream_error(ngx_fleet_ws_t *ws, const char *code,
    const char *message);
static void ngx_fleet_stream_called(ngx_fleet_pg_query_t *q, PGresult *res);
static void ngx_fleet_stream_deliver(ngx_fleet_room_member_t *m, void *arg);
static void ngx_fleet_stream_to_room(const char *name, size_t len,
    ngx_fleet_ws_msg_t *msg, const char *owner);
static ngx_fleet_ws_msg_t *ngx_fleet_stream_msg(ngx_str_t *payload);
static void ngx_fleet_camera_fetch(const char *room, const char *owner,
    ngx_uint_t all);
static void ngx_fleet_camera_fetched(ngx_fleet_pg_query_t *q,
    PGresult *res);


/* seed 002's streams take readings from the browser; cameras do not */
static const ngx_fleet_stream_kind_t  ngx_fleet_stream_camera =
    { "camera", 0 };
static const ngx_fleet_stream_kind_t  ngx_fleet_stream_cameras =
    { "cameras", 0 };
static const ngx_fleet_stream_kind_t  ngx_fleet_stream_sensors =
    { "sensors", 1 };
static const ngx_fleet_stream_kind_t  ngx_fleet_stream_device =
    { "device", 1 };
static const ngx_fleet_stream_kind_t  ngx_fleet_stream_sensor =
    { "sensor", 1 };


static const ngx_fleet_ws_handler_t  ngx_fleet_stream_handler = {
    ngx_fleet_stream_message,
    ngx_fleet_stream_limited,
    ngx_fleet_stream_closed,
    NULL
};


static ngx_queue_t  ngx_fleet_camera_fetches;
static ngx_uint_t   ngx_fleet_camera_fetches_init;


/* seed 000: /ws/device?esp_hmac=MAC */

ngx_int_t
ngx_fleet_api_ws_camera(ngx_fleet_api_t *api)
{
    const char  *mac;

    mac = ngx_fleet_api_arg(api, "esp_hmac");

    if (mac == NULL || *mac == '\0') {
        return ngx_fleet_send_error(api->request, NGX_HTTP_BAD_REQUEST,
                                    "VALIDATION_ERROR",
                                    "esp_hmac is required");
    }

    return ngx_fleet_stream_open(api, &ngx_fleet_stream_camera, mac);
}


/* seed 000: /ws/devices/all */

ngx_int_t
ngx_fleet_api_ws_cameras(ngx_fleet_api_t *api)
{
    return ngx_fleet_stream_open(api, &ngx_fleet_stream_cameras, "");
}


/* seed 002: /ws/sensor-data/ */

ngx_int_t
ngx_fleet_api_ws_sensors(ngx_fleet_api_t *api)
{
    return ngx_fleet_stream_open(api, &ngx_fleet_stream_sensors, "");
}


/* seed 002: /ws/device/{device_id}/ */

ngx_int_t
ngx_fleet_api_ws_device(ngx_fleet_api_t *api)
{
    const char  *id;

    id = ngx_fleet_api_capture(api, 0);
    if (id == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_fleet_stream_open(api, &ngx_fleet_stream_device, id);
}


/* seed 002: /ws/sensor/{sensor_id}/ */

ngx_int_t
ngx_fleet_api_ws_sensor(ngx_fleet_api_t *api)
{
    const char  *id;

    id = ngx_fleet_api_capture(api, 0);
    if (id == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_fleet_stream_open(api, &ngx_fleet_stream_sensor, id);
}


/* seed 000 REST: GET /v1/devices, GET /v1/devices/{esp_hmac} (admin) */

ngx_int_t
ngx_fleet_api_camera_list(ngx_fleet_api_t *api)
{
    return ngx_fleet_api_call(api, NULL, "fleet_camera_list($1, $2)", 2,
                              api->claims.sub,
                              fleet_role_name(api->claims.role));
}


ngx_int_t
ngx_fleet_api_camera_get(ngx_fleet_api_t *api)
{
    const char  *mac;

    mac = ngx_fleet_api_capture(api, 0);
    if (mac == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_fleet_api_call(api, NULL, "fleet_camera_get($1, $2, $3)", 3,
                              api->claims.sub,
                              fleet_role_name(api->claims.role), mac);
}


static ngx_int_t
ngx_fleet_stream_open(ngx_fleet_api_t *api,
    const ngx_fleet_stream_kind_t *kind, const char *target)
{
    const char       *why;
    ngx_table_elt_t  *h;

    if (ngx_fleet_ws_check_upgrade(api->request, &why) != NGX_OK) {
        h = ngx_list_push(&api->request->headers_out.headers);
        if (h == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        /* RFC 6455 4.4: the version this server speaks */
        h->hash = 1;
        ngx_str_set(&h->key, "Sec-WebSocket-Version");
        ngx_str_set(&h->value, "13");

        return ngx_fleet_send_error(api->request, NGX_HTTP_BAD_REQUEST,
                                    "WEBSOCKET_REQUIRED", why);
    }

    api->data = (void *) kind;

    return ngx_fleet_api_call(api, ngx_fleet_stream_opened,
                              "fleet_ws_open($1, $2, $3, $4)", 4,
                              api->claims.sub,
                              fleet_role_name(api->claims.role), kind->name,
                              target);
}


static void
ngx_fleet_stream_opened(ngx_fleet_pg_query_t *q, PGresult *res)
{
    size_t               i;
    json_t              *j, *v, *initial;
    ngx_str_t            protocol, room;
    ngx_fleet_api_t                *api;
    ngx_fleet_stream_t             *st;
    const ngx_fleet_stream_kind_t  *kind;

    api = q->data;

    if (res == NULL) {
        ngx_fleet_api_finish(api, ngx_fleet_api_unavailable(api));
        return;
    }

    j = ngx_fleet_api_sql_value(api, res);

    if (j == NULL
        || json_integer_value(json_object_get(j, "status"))
           != NGX_HTTP_SWITCHING_PROTOCOLS
        || !json_is_string(json_object_get(j, "room")))
    {
        if (j) {
            json_decref(j);
        }

        /* a refusal (401, 403, 404) in the usual envelope */
        ngx_fleet_api_finish(api, ngx_fleet_api_send_sql_json(api, res));
        return;
    }

    st = ngx_calloc(sizeof(ngx_fleet_stream_t), api->request->connection->log);
    if (st == NULL) {
        json_decref(j);
        ngx_fleet_api_finish(api, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    ngx_queue_init(&st->inflight);
    st->member.data = st;
    st->role = api->claims.role;
    st->sees_all = json_is_true(json_object_get(j, "sees_all"));
    kind = api->data;
    st->takes_messages = kind->takes_messages;

    v = json_object_get(j, "user_id");
    if (json_is_string(v) && json_string_length(v) <= NGX_INT64_LEN) {
        ngx_cpystrn((u_char *) st->user_id, (u_char *) json_string_value(v),
                    sizeof(st->user_id));
    }

    ngx_fleet_stream_protocol(api->request, &protocol);

    /* the request is freed from here on: api with it */
    st->ws = ngx_fleet_ws_accept(api->request, &ngx_fleet_stream_handler, st,
                                 &protocol);

    if (st->ws == NULL) {
        ngx_free(st);
        json_decref(j);
        return;
    }

    room.data = (u_char *) json_string_value(json_object_get(j, "room"));
    room.len = json_string_length(json_object_get(j, "room"));

    if (ngx_fleet_room_join(&st->member, room.data, room.len) != NGX_OK) {
        json_decref(j);
        (void) ngx_fleet_ws_close(st->ws, FLEET_WS_CLOSE_INTERNAL,
                                  "out of memory");
        return;
    }

    initial = json_object_get(j, "initial");

    json_array_foreach(initial, i, v) {
        if (json_is_string(v)
            && ngx_fleet_ws_send_text(st->ws, (u_char *) json_string_value(v),
                                      json_string_length(v))
               != NGX_OK)
        {
            break;
        }
    }

    json_decref(j);
}


/*
 * A token passed as a subprotocol (new WebSocket(url, ["access_token",
 * jwt])) is never echoed: the marker offered with it is.
 */

static void
ngx_fleet_stream_protocol(ngx_http_request_t *r, ngx_str_t *protocol)
{
    u_char           *p, *end, *start;
    ngx_table_elt_t  *h;

    ngx_str_null(protocol);

    h = ngx_fleet_find_header(r, "Sec-WebSocket-Protocol",
                              sizeof("Sec-WebSocket-Protocol") - 1);
    if (h == NULL) {
        return;
    }

    p = h->value.data;
    end = p + h->value.len;

    while (p < end) {
        while (p < end && (*p == ' ' || *p == ',')) {
            p++;
        }

        start = p;

        while (p < end && *p != ',' && *p != ' ') {
            p++;
        }

        if ((p - start == sizeof("access_token") - 1
             && ngx_strncasecmp(start, (u_char *) "access_token",
                                p - start) == 0)
            || (p - start == sizeof("bearer") - 1
                && ngx_strncasecmp(start, (u_char *) "bearer", p - start)
                   == 0))
        {
            protocol->data = start;
            protocol->len = p - start;
            return;
        }
    }
}


/* seed 002: {"type": "sensor_data", "sensor_id", "value", "timestamp"?} */

static const fleet_field_t  ngx_fleet_sensor_data_fields[] = {
    { "sensor_id", FLEET_FIELD_INTEGER, 1, 1, 999999999999999999LL },
    { "value", FLEET_FIELD_NUMBER, 1, 0, 0 },
    { NULL, 0, 0, 0, 0 }
};


static void
ngx_fleet_stream_message(ngx_fleet_ws_t *ws, ngx_int_t opcode, u_char *data,
    size_t len)
{
    char                     msg[FLEET_JSON_MSG_MAX];
    json_t                  *j, *type, *ts;
    ngx_fleet_stream_t      *st;
    ngx_fleet_stream_call_t *call;

    st = ws->data;

    if (!st->takes_messages) {
        ngx_fleet_stream_error(ws, "UNSUPPORTED",
                               "this stream does not take messages");
        return;
    }

    if (opcode != FLEET_WS_OP_TEXT) {
        ngx_fleet_stream_error(ws, "INVALID_JSON",
                               "messages are JSON text frames");
        return;
    }

    if (fleet_json_parse_object((const char *) data, len, &j, msg,
                                sizeof(msg))
        != FLEET_JSON_OK)
    {
        ngx_fleet_stream_error(ws, "INVALID_JSON", msg);
        return;
    }

    type = json_object_get(j, "type");

    if (!json_is_string(type)
        || ngx_strcmp(json_string_value(type), "sensor_data") != 0)
    {
        json_decref(j);
        ngx_fleet_stream_error(ws, "UNKNOWN_TYPE",
                               "type must be \"sensor_data\"");
        return;
    }

    if (fleet_json_validate(j, ngx_fleet_sensor_data_fields, msg,
                            sizeof(msg))
        != FLEET_JSON_OK)
    {
        json_decref(j);
        ngx_fleet_stream_error(ws, "VALIDATION_ERROR", msg);
        return;
    }

    ts = json_object_get(j, "timestamp");

    if (ts && !json_is_string(ts) && !json_is_null(ts)) {
        json_decref(j);
        ngx_fleet_stream_error(ws, "VALIDATION_ERROR",
                               "timestamp must be an ISO 8601 date-time");
        return;
    }

    json_decref(j);

    if (st->ninflight >= NGX_FLEET_STREAM_MAX_INFLIGHT) {
        ngx_fleet_stream_error(ws, "RATE_LIMITED",
                               "too many messages waiting for the database");
        return;
    }

    /* the text goes as it came: numbers stay exactly as the client wrote */
    call = ngx_alloc(sizeof(ngx_fleet_stream_call_t) + len,
                     ws->connection->log);
    if (call == NULL) {
        ngx_fleet_stream_error(ws, "INTERNAL_ERROR", "out of memory");
        return;
    }

    ngx_memzero(call, sizeof(ngx_fleet_stream_call_t));
    ngx_memcpy(call->text, data, len);
    call->text[len] = '\0';
    call->stream = st;

    call->query.sql = "SELECT fleet_ws_sensor_data($1, $2, $3::jsonb)";
    call->query.nparams = 3;
    call->query.params[0] = st->user_id;
    call->query.params[1] = fleet_role_name(st->role);
    call->query.params[2] = call->text;
    call->query.handler = ngx_fleet_stream_called;
    call->query.data = call;
    call->query.log = ws->connection->log;

    if (ngx_fleet_pg_send(&call->query) != NGX_OK) {
        ngx_free(call);
        ngx_fleet_stream_error(ws, "SERVICE_UNAVAILABLE",
                               "database unavailable, retry later");
        return;
    }

    ngx_queue_insert_tail(&st->inflight, &call->queue);
    st->ninflight++;
}


static void
ngx_fleet_stream_called(ngx_fleet_pg_query_t *q, PGresult *res)
{
    json_t                   *j;
    ngx_fleet_stream_t       *st;
    ngx_fleet_stream_call_t  *call;

    call = q->data;
    st = call->stream;

    ngx_queue_remove(&call->queue);
    st->ninflight--;
    ngx_free(call);

    if (res == NULL) {
        ngx_fleet_stream_error(st->ws, "SERVICE_UNAVAILABLE",
                               "database unavailable, retry later");
        return;
    }

    j = NULL;

    if (PQntuples(res) == 1 && !PQgetisnull(res, 0, 0)) {
        j = json_loadb(PQgetvalue(res, 0, 0), PQgetlength(res, 0, 0), 0,
                       NULL);
    }

    if (j == NULL) {
        ngx_fleet_stream_error(st->ws, "INTERNAL_ERROR", "internal error");
        return;
    }

    /* stored: the reading comes back to the subscribers as an update */
    if (json_is_string(json_object_get(j, "error"))) {
        ngx_fleet_stream_error(st->ws,
                           json_string_value(json_object_get(j, "error")),
                           json_string_value(json_object_get(j, "message")));
    }

    json_decref(j);
}


static void
ngx_fleet_stream_error(ngx_fleet_ws_t *ws, const char *code,
    const char *message)
{
    char    *text;
    json_t  *j;

    j = json_pack("{s:s, s:s, s:s}", "type", "error",
                  "message", message ? message : code, "code", code);
    if (j == NULL) {
        return;
    }

    text = json_dumps(j, JSON_COMPACT);
    json_decref(j);

    if (text == NULL) {
        return;
    }

    (void) ngx_fleet_ws_send_text(ws, (u_char *) text, ngx_strlen(text));
    free(text);
}


static void
ngx_fleet_stream_limited(ngx_fleet_ws_t *ws)
{
    ngx_fleet_stream_error(ws, "RATE_LIMITED",
                           "too many messages, slow down");
}


static void
ngx_fleet_stream_closed(ngx_fleet_ws_t *ws)
{
    ngx_queue_t              *q, *next;
    ngx_fleet_stream_t       *st;
    ngx_fleet_stream_call_t  *call;

    st = ws->data;

    ngx_fleet_room_leave(&st->member);

    /* answers still on their way have nobody to go to */
    for (q = ngx_queue_head(&st->inflight);
         q != ngx_queue_sentinel(&st->inflight);
         q = next)
    {
        next = ngx_queue_next(q);
        call = ngx_queue_data(q, ngx_fleet_stream_call_t, queue);
        ngx_fleet_pg_cancel(&call->query);
        ngx_free(call);
    }

    ngx_free(st);
}


/* ------------------------------------------------------------------ */
/* events from PostgreSQL (ngx_fleet_event_received) */

void
ngx_fleet_streams_event(const char *type, json_t *j, ngx_str_t *payload)
{
    u_char               name[NGX_INT64_LEN + 64 + 16];
    size_t               len;
    json_t              *dev, *sensor, *owner_json;
    const char          *owner, *mac;
    ngx_fleet_ws_msg_t  *msg;

    dev = json_object_get(j, "device_id");
    owner_json = json_object_get(j, "owner_id");
    owner = json_is_string(owner_json) ? json_string_value(owner_json) : NULL;

    if (ngx_strcmp(type, "camera_frame") == 0) {
        mac = json_string_value(json_object_get(j, "esp_hmac"));

        if (mac && ngx_strlen(mac) == 17) {
            len = ngx_sprintf(name, "camera:%s", mac) - name;

            if (ngx_fleet_room_find(name, len)) {
                name[len] = '\0';
                ngx_fleet_camera_fetch((const char *) name, owner, 0);
            }
        }

        if (ngx_fleet_room_find((u_char *) "cameras", 7)) {
            ngx_fleet_camera_fetch("cameras", NULL, 1);
        }

        return;
    }

    if (!json_is_string(dev) || json_string_length(dev) > 64) {
        return;
    }

    msg = NULL;

    len = ngx_sprintf(name, "device:%s", json_string_value(dev)) - name;

    if (ngx_fleet_room_find(name, len)) {
        msg = ngx_fleet_stream_msg(payload);
        ngx_fleet_stream_to_room((const char *) name, len, msg, owner);
    }

    if (ngx_strcmp(type, "sensor_data_update") == 0) {
        sensor = json_object_get(j, "sensor_id");

        if (json_is_integer(sensor)) {
            len = ngx_sprintf(name, "sensor:%L",
                              (int64_t) json_integer_value(sensor))
                  - name;

            if (ngx_fleet_room_find(name, len)) {
                if (msg == NULL) {
                    msg = ngx_fleet_stream_msg(payload);
                }

                ngx_fleet_stream_to_room((const char *) name, len, msg,
                                         owner);
            }
        }

        if (ngx_fleet_room_find((u_char *) "sensors", 7)) {
            if (msg == NULL) {
                msg = ngx_fleet_stream_msg(payload);
            }

            ngx_fleet_stream_to_room("sensors", 7, msg, owner);
        }
    }

    if (msg) {
        ngx_fleet_ws_msg_release(msg);
    }
}


/* the envelope's "msg", compact, as one text frame */

static ngx_fleet_ws_msg_t *
ngx_fleet_stream_msg(ngx_str_t *payload)
{
    u_char              *buf;
    size_t               off, len, n;
    ngx_fleet_ws_msg_t  *msg;

    if (fleet_json_member((const char *) payload->data, payload->len, "msg",
                          &off, &len)
        != 0)
    {
        return NULL;
    }

    buf = ngx_alloc(len, ngx_cycle->log);
    if (buf == NULL) {
        return NULL;
    }

    n = fleet_json_compact((const char *) payload->data + off, len,
                           (char *) buf);

    msg = ngx_fleet_ws_msg(FLEET_WS_OP_TEXT, buf, n, 0);
    ngx_free(buf);

    return msg;
}


static void
ngx_fleet_stream_to_room(const char *name, size_t len,
    ngx_fleet_ws_msg_t *msg, const char *owner)
{
    ngx_fleet_room_t      *room;
    ngx_fleet_delivery_t   d;

    if (msg == NULL) {
        return;
    }

    room = ngx_fleet_room_find((u_char *) name, len);
    if (room == NULL) {
        return;
    }

    d.msg = msg;
    d.owner = owner;

    ngx_fleet_room_each(room, ngx_fleet_stream_deliver, &d);
}


/* admins see everything; a user only what they own right now */

static void
ngx_fleet_stream_deliver(ngx_fleet_room_member_t *m, void *arg)
{
    ngx_fleet_delivery_t  *d = arg;

    ngx_fleet_stream_t  *st;

    st = m->data;

    if (!st->sees_all
        && (d->owner == NULL || ngx_strcmp(d->owner, st->user_id) != 0))
    {
        return;
    }

    /* a client found gone leaves the room in its cleanup */
    (void) ngx_fleet_ws_send(st->ws, d->msg);
}


/* ------------------------------------------------------------------ */
/* camera frames: read once per worker, newest wins */

static void
ngx_fleet_camera_fetch(const char *room, const char *owner, ngx_uint_t all)
{
    ngx_queue_t               *q;
    ngx_fleet_camera_fetch_t  *f;

    if (!ngx_fleet_camera_fetches_init) {
        ngx_queue_init(&ngx_fleet_camera_fetches);
        ngx_fleet_camera_fetches_init = 1;
    }

    for (q = ngx_queue_head(&ngx_fleet_camera_fetches);
         q != ngx_queue_sentinel(&ngx_fleet_camera_fetches);
         q = ngx_queue_next(q))
    {
        f = ngx_queue_data(q, ngx_fleet_camera_fetch_t, queue);

        if (ngx_strcmp(f->room, room) == 0) {
            /* a newer frame: read again when this read is back */
            f->again = 1;

            if (owner) {
                ngx_cpystrn((u_char *) f->owner, (u_char *) owner,
                            sizeof(f->owner));
            }

            return;
        }
    }

    f = ngx_calloc(sizeof(ngx_fleet_camera_fetch_t), ngx_cycle->log);
    if (f == NULL) {
        return;
    }

    ngx_cpystrn((u_char *) f->room, (u_char *) room, sizeof(f->room));

    if (owner) {
        ngx_cpystrn((u_char *) f->owner, (u_char *) owner, sizeof(f->owner));
    }

    f->all = all;

    if (all) {
        f->query.sql = "SELECT fleet_camera_frames_text()";

    } else {
        f->query.sql = "SELECT fleet_camera_frame_text($1)";
        f->query.nparams = 1;
        f->query.params[0] = f->room + sizeof("camera:") - 1;
    }

    f->query.handler = ngx_fleet_camera_fetched;
    f->query.data = f;
    f->query.log = ngx_cycle->log;

    if (ngx_fleet_pg_send(&f->query) != NGX_OK) {
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "fleet: cannot read the frame for \"%s\": %s",
                      f->room, f->query.error);
        ngx_free(f);
        return;
    }

    ngx_queue_insert_tail(&ngx_fleet_camera_fetches, &f->queue);
}


static void
ngx_fleet_camera_fetched(ngx_fleet_pg_query_t *q, PGresult *res)
{
    char                      room[sizeof("camera:00:00:00:00:00:00")];
    char                      owner[NGX_INT64_LEN + 1];
    size_t                    len;
    uint32_t                  tag;
    ngx_uint_t                again, all;
    ngx_fleet_ws_msg_t       *msg;
    ngx_fleet_camera_fetch_t *f;

    f = q->data;

    ngx_queue_remove(&f->queue);

    ngx_memcpy(room, f->room, sizeof(room));
    ngx_memcpy(owner, f->owner, sizeof(owner));
    again = f->again;
    all = f->all;
    ngx_free(f);

    if (res && PQntuples(res) == 1 && !PQgetisnull(res, 0, 0)) {
        len = ngx_strlen(room);
        tag = ngx_crc32_short((u_char *) room, len) | 1;

        msg = ngx_fleet_ws_msg(FLEET_WS_OP_TEXT,
                               (u_char *) PQgetvalue(res, 0, 0),
                               PQgetlength(res, 0, 0), tag);
        if (msg) {
            ngx_fleet_stream_to_room(room, len, msg,
                                     owner[0] ? owner : NULL);
            ngx_fleet_ws_msg_release(msg);
        }
    }

    if (again && ngx_fleet_room_find((u_char *) room, ngx_strlen(room))) {
        ngx_fleet_camera_fetch(room, owner[0] ? owner : NULL, all);
    }
}
