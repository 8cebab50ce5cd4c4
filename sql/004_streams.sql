-- fleetgate: browser streams (SPEC 7): raw WebSocket (seeds 000 and 002)
-- and Socket.IO (seeds 001 and 003).

-- Orders events for the Socket.IO polling sessions kept in shared memory:
-- every worker hears every event, the first one to queue it for a session
-- wins, the others see its number there.
CREATE SEQUENCE fleet_event_seq;


-- Socket.IO rooms of a device event by its name (SPEC 7)
CREATE FUNCTION fleet_sio_device_rooms(p_event text, d devices)
RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN p_event IN ('transaction_started', 'transaction_stopped') THEN
            jsonb_build_array('station_' || d.id, 'transactions', 'dashboard')
        WHEN p_event IN ('reservation_created', 'reservation_cancelled') THEN
            jsonb_build_array('station_' || d.id, 'reservations', 'dashboard')
        WHEN p_event IN ('station_status_updated', 'connector_status_updated',
                         'meter_values_updated') THEN
            jsonb_build_array('station_' || d.id, 'dashboard')
        WHEN p_event IN ('module:status:changed',
                         'module:telemetry:updated') THEN
            jsonb_build_array('device_' || d.id, 'admin', 'dashboard')
            || CASE WHEN d.owner_id IS NULL THEN '[]'::jsonb
                    ELSE jsonb_build_array('user_' || d.owner_id) END
        ELSE
            jsonb_build_array('device_' || d.id, 'admin')
            || CASE WHEN d.owner_id IS NULL THEN '[]'::jsonb
                    ELSE jsonb_build_array('user_' || d.owner_id) END
    END
$$;


-- What Socket.IO clients get for an event: [{event, rooms, data}], or
-- {"data_ref": "data"} for data the envelope carries already.
CREATE FUNCTION fleet_sio_emissions(p_type text, p_body jsonb, d devices)
RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
BEGIN
    CASE p_type

    WHEN 'device_status' THEN
        RETURN jsonb_build_array(jsonb_build_object(
            'event', 'module:status:changed',
            'rooms', fleet_sio_device_rooms('module:status:changed', d),
            'data', jsonb_build_object('moduleId', d.id,
                                       'online', p_body -> 'online')));

    WHEN 'device_telemetry' THEN
        RETURN jsonb_build_array(jsonb_build_object(
            'event', 'module:telemetry:updated',
            'rooms', fleet_sio_device_rooms('module:telemetry:updated', d),
            'data', jsonb_build_object('moduleId', d.id, 'telemetry',
                        p_body - 'device_id')));

    WHEN 'device_claimed' THEN
        RETURN jsonb_build_array(
            jsonb_build_object('event', 'user:module:added',
                'rooms', jsonb_build_array('user_' || d.owner_id),
                'data', jsonb_build_object('module', fleet_device_json(d))),
            jsonb_build_object('event', 'admin:module:added',
                'rooms', jsonb_build_array('admin'),
                'data', jsonb_build_object('module', fleet_device_json(d))));

    WHEN 'device_event' THEN
        RETURN jsonb_build_array(jsonb_build_object(
            'event', p_body ->> 'event',
            'rooms', fleet_sio_device_rooms(p_body ->> 'event', d),
            'data_ref', 'data'));

    WHEN 'sio_emit' THEN
        RETURN jsonb_build_array(jsonb_build_object(
            'event', p_body ->> 'event',
            'rooms', jsonb_build_array(p_body ->> 'room'),
            'data_ref', 'data'));

    WHEN 'user_registered' THEN
        RETURN jsonb_build_array(jsonb_build_object(
            'event', 'admin:user:registered',
            'rooms', jsonb_build_array('admin'),
            'data', jsonb_build_object('user', p_body -> 'user')));

    ELSE
        RETURN NULL;
    END CASE;
END
$$;


-- Every envelope about a device carries its owner, so each worker can
-- filter per subscriber without asking the database, and the messages
-- browsers get are built here once, with numbers exactly as stored:
-- "msg" for the raw WebSocket streams (seed 002's shapes), "sio" for
-- Socket.IO.
CREATE OR REPLACE FUNCTION fleet_notify(p_type text, p_body jsonb)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v   jsonb := jsonb_build_object('type', p_type,
                                    'seq', nextval('fleet_event_seq'))
                 || p_body;
    d   devices;
    e   jsonb;
BEGIN
    IF p_body ? 'device_id' THEN
        SELECT * INTO d FROM devices WHERE id = p_body ->> 'device_id';

        IF NOT p_body ? 'owner_id' THEN
            v := v || jsonb_build_object('owner_id', d.owner_id::text);
        END IF;
    END IF;

    IF p_type = 'sensor_data_update' THEN
        v := v || jsonb_build_object('msg',
                      jsonb_build_object('type', p_type) || p_body);

    ELSIF p_type = 'device_status' THEN
        v := v || jsonb_build_object('msg', jsonb_build_object(
            'type', 'device_status',
            'device_id', p_body -> 'device_id',
            'device_name', coalesce(d.name, d.id, p_body ->> 'device_id'),
            'status', CASE WHEN (p_body ->> 'online')::boolean
                           THEN 'active' ELSE 'inactive' END,
            'online', p_body -> 'online',
            'timestamp', fleet_iso(now())));
    END IF;

    -- a caller may say itself what Socket.IO clients get ("sio" in p_body)
    IF NOT p_body ? 'sio' THEN
        e := fleet_sio_emissions(p_type, p_body, d);

        IF e IS NOT NULL THEN
            v := v || jsonb_build_object('sio', e);
        END IF;
    END IF;

    PERFORM pg_notify('fleet_events', v::text);
END
$$;


-- seed 000's frame object
CREATE FUNCTION fleet_camera_frame_json(f camera_frames) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_object(
        'esp_hmac', f.mac,
        'image_data', CASE WHEN f.image LIKE 'data:%' THEN f.image
                           ELSE 'data:image/jpeg;base64,' || f.image END,
        'timestamp', (extract(epoch FROM f.ts) * 1000)::bigint)
$$;


-- the latest frame of one camera, or NULL
CREATE FUNCTION fleet_camera_frame_text(p_mac text) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT fleet_camera_frame_json(f)::text FROM camera_frames f
     WHERE mac = p_mac
$$;


-- the latest frame of every camera, as /ws/devices/all sends it
CREATE FUNCTION fleet_camera_frames_text() RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT coalesce(jsonb_agg(fleet_camera_frame_json(f) ORDER BY f.mac),
                    '[]')::text
      FROM camera_frames f
$$;


-- GET /v1/devices (admin): seed 000's list
CREATE FUNCTION fleet_camera_list(p_sub text, p_role text) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    a       fleet_actor := fleet_actor(p_sub, p_role);
    v_list  jsonb;
BEGIN
    IF a IS NULL THEN
        RETURN fleet_unknown_actor();
    END IF;

    SELECT coalesce(jsonb_agg(fleet_camera_frame_json(f) ORDER BY f.mac),
                    '[]')
      INTO v_list FROM camera_frames f;

    RETURN jsonb_build_object('status', 200, 'body', jsonb_build_object(
        'status', 'success', 'count', jsonb_array_length(v_list),
        'devices', v_list));
END
$$;


-- GET /v1/devices/{esp_hmac} (admin): seed 000's frame
CREATE FUNCTION fleet_camera_get(p_sub text, p_role text, p_mac text)
RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    a       fleet_actor := fleet_actor(p_sub, p_role);
    f       camera_frames;
BEGIN
    IF a IS NULL THEN
        RETURN fleet_unknown_actor();
    END IF;

    IF fleet_norm_mac(p_mac) IS NULL THEN
        RETURN fleet_error(400, 'VALIDATION_ERROR',
                           'esp_hmac must be a MAC address');
    END IF;

    SELECT * INTO f FROM camera_frames WHERE mac = fleet_norm_mac(p_mac);

    IF NOT FOUND THEN
        RETURN fleet_error(404, 'DEVICE_NOT_FOUND',
                           format('no frame from %s', fleet_norm_mac(p_mac)));
    END IF;

    RETURN jsonb_build_object('status', 200,
                              'body', fleet_camera_frame_json(f));
END
$$;


-- A WebSocket asks to open: rights are checked before the 101.  Answers
-- an error, or {"status": 101, "room", "user_id", "sees_all",
-- "initial": [message texts to send first]}.
CREATE FUNCTION fleet_ws_open(p_sub text, p_role text, p_kind text,
                              p_target text)
RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    a       fleet_actor := fleet_actor(p_sub, p_role);
    d       devices;
    v_mac   text;
    v_room  text;
    v_init  jsonb := '[]';
    v_text  text;
BEGIN
    IF a IS NULL THEN
        RETURN fleet_unknown_actor();
    END IF;

    CASE p_kind

    WHEN 'camera' THEN
        v_mac := fleet_norm_mac(p_target);

        IF v_mac IS NULL THEN
            RETURN fleet_error(400, 'VALIDATION_ERROR',
                               'esp_hmac must be a MAC address');
        END IF;

        SELECT * INTO d FROM devices WHERE mac_address = v_mac
         ORDER BY (kind = 'camera') DESC, created_at LIMIT 1;

        IF NOT FOUND OR NOT fleet_may_see(a, d) THEN
            RETURN fleet_error(404, 'DEVICE_NOT_FOUND',
                               format('no camera %s', v_mac));
        END IF;

        v_room := 'camera:' || v_mac;
        v_text := fleet_camera_frame_text(v_mac);

        IF v_text IS NOT NULL THEN
            v_init := jsonb_build_array(v_text);
        END IF;

    WHEN 'cameras' THEN
        IF a.role NOT IN ('admin', 'service') THEN
            RETURN fleet_error(403, 'FORBIDDEN',
                               'this stream is for admins only');
        END IF;

        v_room := 'cameras';
        v_init := jsonb_build_array(fleet_camera_frames_text());

    WHEN 'sensors' THEN
        v_room := 'sensors';

    WHEN 'device' THEN
        SELECT * INTO d FROM devices WHERE id = p_target;

        IF NOT FOUND OR NOT fleet_may_see(a, d) THEN
            RETURN fleet_device_missing(p_target);
        END IF;

        v_room := 'device:' || d.id;

    WHEN 'sensor' THEN
        IF p_target !~ '^[0-9]{1,18}$' THEN
            RETURN fleet_error(404, 'SENSOR_NOT_FOUND',
                               format('sensor %s does not exist', p_target));
        END IF;

        SELECT dv.* INTO d FROM sensors s JOIN devices dv ON dv.id = s.device_id
         WHERE s.id = p_target::bigint;

        IF NOT FOUND OR NOT fleet_may_see(a, d) THEN
            RETURN fleet_error(404, 'SENSOR_NOT_FOUND',
                               format('sensor %s does not exist', p_target));
        END IF;

        v_room := 'sensor:' || p_target::bigint;

    ELSE
        RETURN fleet_error(404, 'NOT_FOUND', 'no such stream');
    END CASE;

    RETURN jsonb_build_object('status', 101, 'room', v_room,
        'user_id', a.user_id::text,
        'sees_all', a.role IN ('admin', 'service'),
        'initial', v_init);
END
$$;


-- A reading a browser sends on a seed-002 stream: stored like a device's
-- and fanned out the same way.  m is validated by the worker (sensor_id
-- an integer, value a number, timestamp a string if present).
CREATE FUNCTION fleet_ws_sensor_data(p_sub text, p_role text, m jsonb)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    a       fleet_actor := fleet_actor(p_sub, p_role);
    d       devices;
    v_id    bigint;
BEGIN
    IF a IS NULL THEN
        RETURN jsonb_build_object('error', 'UNAUTHORIZED',
                                  'message', 'unknown user');
    END IF;

    SELECT dv.* INTO d FROM sensors s JOIN devices dv ON dv.id = s.device_id
     WHERE s.id = (m ->> 'sensor_id')::numeric;

    IF NOT FOUND OR NOT fleet_may_see(a, d) THEN
        RETURN jsonb_build_object('error', 'SENSOR_NOT_FOUND',
            'message', format('sensor %s does not exist', m ->> 'sensor_id'));
    END IF;

    BEGIN
        PERFORM fleet_parse_ts(m -> 'timestamp');
    EXCEPTION WHEN invalid_parameter_value THEN
        RETURN jsonb_build_object('error', 'VALIDATION_ERROR',
            'message', 'timestamp must be an ISO 8601 date-time between '
                       '2000 and 2100');
    END;

    v_id := fleet_store_reading(d.id, coalesce(d.name, d.id),
                                m - 'type');

    IF v_id IS NULL THEN
        RETURN jsonb_build_object('error', 'VALIDATION_ERROR',
                                  'message', 'the reading cannot be stored');
    END IF;

    RETURN jsonb_build_object('ok', true);
END
$$;


-- ---------------------------------------------------------------------
-- Socket.IO (SPEC 7, seeds 001 and 003)

-- A client's CONNECT: who the token names, and the rooms it starts in.
CREATE FUNCTION fleet_sio_connect(p_sub text, p_role text) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    a   fleet_actor := fleet_actor(p_sub, p_role);
BEGIN
    IF a IS NULL THEN
        RETURN jsonb_build_object('error', 'unknown user');
    END IF;

    RETURN jsonb_build_object(
        'user_id', coalesce(a.user_id::text, ''),
        'role', a.role,
        'sees_all', a.role IN ('admin', 'service'),
        -- "*": every connected socket (system:maintenance goes there)
        'rooms', '["*"]'::jsonb
                 || CASE WHEN a.user_id IS NULL THEN '[]'::jsonb
                         ELSE jsonb_build_array('user_' || a.user_id) END
                 || CASE WHEN a.role = 'admin' THEN '["admin"]'::jsonb
                         ELSE '[]'::jsonb END);
END
$$;


-- May this client join this room?  {"ok": true} or {"error": message}
CREATE FUNCTION fleet_sio_join(p_sub text, p_role text, p_room text)
RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    a   fleet_actor := fleet_actor(p_sub, p_role);
    d   devices;
BEGIN
    IF a IS NULL THEN
        RETURN jsonb_build_object('error', 'unknown user');
    END IF;

    IF p_room IS NULL OR length(p_room) NOT BETWEEN 1 AND 128 THEN
        RETURN jsonb_build_object('error', 'room must be a string of 1 to '
                                           '128 characters');
    END IF;

    IF p_room = '*' THEN
        -- every socket is in it already; nobody joins or leaves it
        RETURN jsonb_build_object('error', 'no such room');
    END IF;

    -- admins (and backend services) may join any room
    IF a.role IN ('admin', 'service') THEN
        RETURN jsonb_build_object('ok', true);
    END IF;

    IF p_room IN ('dashboard', 'transactions', 'reservations') THEN
        RETURN jsonb_build_object('ok', true);
    END IF;

    IF p_room IN ('admin', 'page_admin') THEN
        RETURN jsonb_build_object('error', 'this room is for admins only');
    END IF;

    IF p_room LIKE 'page\_%' THEN
        RETURN jsonb_build_object('ok', true);
    END IF;

    IF p_room LIKE 'user\_%' THEN
        IF p_room = 'user_' || a.user_id THEN
            RETURN jsonb_build_object('ok', true);
        END IF;

        RETURN jsonb_build_object('error', 'this room is another user''s');
    END IF;

    IF p_room LIKE 'station\_%' OR p_room LIKE 'device\_%' THEN
        SELECT * INTO d FROM devices
         WHERE id = substr(p_room, strpos(p_room, '_') + 1);

        IF FOUND AND fleet_may_see(a, d) THEN
            RETURN jsonb_build_object('ok', true);
        END IF;

        RETURN jsonb_build_object('error', 'no such device');
    END IF;

    RETURN jsonb_build_object('error', 'no such room');
END
$$;


-- Socket.IO's reserved event names cannot be emitted
CREATE FUNCTION fleet_sio_reserved(p_event text) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT p_event IN ('connect', 'connect_error', 'disconnect',
                       'disconnecting', 'newListener', 'removeListener')
$$;


-- POST /api/v1/events {room, event, data, device_id?} (service or admin);
-- b is validated by the worker (room and event strings, data present).
CREATE FUNCTION fleet_events_emit(p_sub text, p_role text, b jsonb)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    a   fleet_actor := fleet_actor(p_sub, p_role);
    d   devices;
BEGIN
    IF a IS NULL THEN
        RETURN fleet_unknown_actor();
    END IF;

    IF a.role NOT IN ('admin', 'service') THEN
        RETURN fleet_error(403, 'FORBIDDEN',
                           'events are emitted with a service or admin token');
    END IF;

    IF fleet_sio_reserved(b ->> 'event') THEN
        RETURN fleet_error(400, 'VALIDATION_ERROR',
                           format('event %s is reserved by Socket.IO',
                                  b ->> 'event'));
    END IF;

    IF length((b -> 'data')::text) > 6000 THEN
        RETURN fleet_error(413, 'PAYLOAD_TOO_LARGE',
                           'data must be at most 6000 bytes of JSON');
    END IF;

    IF b ? 'device_id' THEN
        SELECT * INTO d FROM devices WHERE id = b ->> 'device_id';

        IF NOT FOUND THEN
            RETURN fleet_device_missing(b ->> 'device_id');
        END IF;
    END IF;

    PERFORM fleet_notify('sio_emit', jsonb_build_object(
        'room', b -> 'room', 'event', b -> 'event', 'data', b -> 'data')
        || CASE WHEN b ? 'device_id'
                THEN jsonb_build_object('device_id', d.id) ELSE '{}' END);

    RETURN jsonb_build_object('status', 202,
        'data', jsonb_build_object('room', b -> 'room',
                                   'event', b -> 'event'),
        'message', 'Event emitted');
END
$$;


-- admin:stats:updated {stats}
CREATE FUNCTION fleet_admin_stats() RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('stats', jsonb_build_object(
        'users', (SELECT count(*) FROM users WHERE role <> 'service'),
        'admins', (SELECT count(*) FROM users WHERE role = 'admin'),
        'modules', (SELECT count(*) FROM devices),
        'modulesOnline', (SELECT count(*) FROM devices WHERE online),
        'modulesClaimed', (SELECT count(*) FROM devices
                            WHERE owner_id IS NOT NULL),
        'timestamp', fleet_iso(now())))::text
$$;


-- a new account, whoever made it: admin:user:registered
CREATE FUNCTION fleet_user_registered() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM fleet_notify('user_registered', jsonb_build_object(
        'user', jsonb_build_object('id', NEW.id::text, 'email', NEW.email,
                                   'name', NEW.name, 'role', NEW.role,
                                   'created_at', fleet_iso(NEW.created_at))));
    RETURN NEW;
END
$$;

CREATE TRIGGER users_registered AFTER INSERT ON users
    FOR EACH ROW EXECUTE FUNCTION fleet_user_registered();
