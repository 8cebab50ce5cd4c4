-- fleetgate: browser streams over WebSocket (SPEC 7, seeds 000 and 002).

-- Every envelope about a device carries its owner, so each worker can
-- filter per subscriber without asking the database, and the messages
-- browsers get ("msg", in the seeds' shapes) are built here once, with
-- numbers exactly as stored.
CREATE OR REPLACE FUNCTION fleet_notify(p_type text, p_body jsonb)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v   jsonb := jsonb_build_object('type', p_type) || p_body;
    d   devices;
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
