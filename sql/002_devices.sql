-- fleetgate: the device protocol (SPEC sections 4, 5 and 9): reported
-- state, sensors and readings, device events, camera frames, event-log
-- uploads, online/offline, ownership.

ALTER TABLE devices ADD COLUMN status_changed_at timestamptz;
CREATE INDEX devices_mac_idx ON devices (mac_address);
CREATE INDEX devices_online_seen_idx ON devices (last_seen) WHERE online;


CREATE TABLE sensors (
    id              bigserial PRIMARY KEY,
    device_id       text NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    type            text NOT NULL,
    unit            text NOT NULL DEFAULT '',
    name            text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (device_id, type)
);

-- A reading is identified by its sensor and time: a message the broker
-- delivers twice is stored once, and the primary key is the index that
-- keeps range queries on one sensor fast.
CREATE TABLE sensor_readings (
    sensor_id       bigint NOT NULL REFERENCES sensors (id) ON DELETE CASCADE,
    ts              timestamptz NOT NULL,
    value           double precision NOT NULL,
    received_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sensor_id, ts)
);

CREATE TABLE device_events (
    id              bigserial PRIMARY KEY,
    device_id       text NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    event           text NOT NULL,
    data            jsonb,
    ts              timestamptz NOT NULL,
    received_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (device_id, event, ts)
);

-- the latest frame of each camera (frames are ~100 KB of base64)
CREATE TABLE camera_frames (
    mac             text PRIMARY KEY,
    device_id       text NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    image           text NOT NULL,
    ts              timestamptz NOT NULL,
    received_at     timestamptz NOT NULL DEFAULT now()
);

-- seed 004 "Logs Event Upload": stored once per (device, timestamp, type)
CREATE TABLE device_event_logs (
    id              bigserial PRIMARY KEY,
    device_id       text NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    type            text NOT NULL,
    status          text NOT NULL,
    ts              timestamptz NOT NULL,
    total_amount    numeric NOT NULL,
    item            jsonb NOT NULL,
    received_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (device_id, ts, type)
);


-- ISO 8601 text, as browsers get it (seed 002)
CREATE FUNCTION fleet_iso(p timestamptz) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT to_char(p AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
$$;


-- A device timestamp: epoch milliseconds or ISO 8601; NULL when absent.
-- Raises invalid_parameter_value when present but not a sane time.
CREATE FUNCTION fleet_parse_ts(p jsonb) RETURNS timestamptz
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    t timestamptz;
BEGIN
    IF p IS NULL OR jsonb_typeof(p) = 'null' THEN
        RETURN NULL;
    END IF;

    IF jsonb_typeof(p) = 'number' THEN
        t := to_timestamp((p::text)::numeric / 1000);
    ELSIF jsonb_typeof(p) = 'string' AND p #>> '{}' ~ '^\d{4}-\d\d-\d\d' THEN
        BEGIN
            t := (p #>> '{}')::timestamptz;
        EXCEPTION WHEN others THEN
            RAISE invalid_parameter_value USING MESSAGE = 'invalid timestamp';
        END;
    ELSE
        RAISE invalid_parameter_value USING MESSAGE = 'invalid timestamp';
    END IF;

    IF t < '2000-01-01' OR t > '2100-01-01' THEN
        RAISE invalid_parameter_value USING MESSAGE = 'timestamp out of range';
    END IF;

    RETURN t;
END
$$;


CREATE FUNCTION fleet_device_json(d devices) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'id', d.id, 'device_id', d.id, 'name', d.name, 'kind', d.kind,
        'chip_id', d.chip_id, 'mac_address', d.mac_address,
        'firmware_version', d.firmware_version,
        'owner_id', d.owner_id::text, 'labels', d.labels,
        'online', d.online, 'status', d.status, 'rssi', d.rssi,
        'uptime', d.uptime, 'last_seen', fleet_iso(d.last_seen),
        'reported_configs', d.reported_configs,
        'created_at', fleet_iso(d.created_at))
$$;


-- Online/offline with one event per change, never on repeats.  Any valid
-- message or request refreshes last_seen when going online.
CREATE FUNCTION fleet_device_set_online(p_id text, p_online boolean)
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    was boolean;
BEGIN
    SELECT online INTO was FROM devices WHERE id = p_id FOR UPDATE;

    IF NOT FOUND THEN
        RETURN false;
    END IF;

    IF p_online THEN
        UPDATE devices SET online = true, last_seen = now(),
                           status_changed_at = CASE WHEN was THEN
                               status_changed_at ELSE now() END
         WHERE id = p_id;
    ELSIF was THEN
        UPDATE devices SET online = false, status_changed_at = now()
         WHERE id = p_id;
    END IF;

    IF was IS DISTINCT FROM p_online THEN
        PERFORM fleet_notify('device_status',
            jsonb_build_object('device_id', p_id, 'online', p_online));
    END IF;

    RETURN true;
END
$$;

DROP FUNCTION fleet_device_seen(text);


-- ---------------------------------------------------------------------
-- MQTT ingest, called by the bridge: one call per message, one
-- transaction; {"stored": bool, "reason": ...}

CREATE FUNCTION fleet_ingest_result(p_stored boolean, p_reason text)
RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN p_stored THEN jsonb_build_object('stored', true)
                ELSE jsonb_build_object('stored', false, 'reason', p_reason)
           END
$$;


CREATE FUNCTION fleet_ingest_streaming(p_id text, m jsonb)
RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    IF jsonb_typeof(m -> 'rssi') IS DISTINCT FROM 'number'
       OR jsonb_typeof(m -> 'status') IS DISTINCT FROM 'string'
    THEN
        RETURN fleet_ingest_result(false, 'rssi and status are required');
    END IF;

    IF NOT fleet_device_set_online(p_id, true) THEN
        RETURN fleet_ingest_result(false, 'unknown device');
    END IF;

    UPDATE devices
       SET rssi = (m ->> 'rssi')::numeric::int,
           status = left(m ->> 'status', 32),
           uptime = CASE WHEN jsonb_typeof(m -> 'uptime') = 'number'
                         THEN (m ->> 'uptime')::numeric::bigint END,
           updated_at = now()
     WHERE id = p_id;

    PERFORM fleet_notify('device_telemetry', jsonb_build_object(
        'device_id', p_id, 'rssi', m -> 'rssi', 'status', m -> 'status',
        'uptime', m -> 'uptime', 'timestamp', m -> 'timestamp'));

    RETURN fleet_ingest_result(true, NULL);
EXCEPTION WHEN invalid_text_representation OR numeric_value_out_of_range THEN
    RETURN fleet_ingest_result(false, 'invalid number');
END
$$;


-- one reading; returns the sensor id stored, or NULL when dropped
CREATE FUNCTION fleet_store_reading(p_id text, p_name text, r jsonb)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    s       sensors;
    ts      timestamptz;
BEGIN
    IF jsonb_typeof(r -> 'value') IS DISTINCT FROM 'number' THEN
        RETURN NULL;
    END IF;

    IF r ? 'sensor_id' THEN
        IF jsonb_typeof(r -> 'sensor_id') IS DISTINCT FROM 'number' THEN
            RETURN NULL;
        END IF;

        SELECT * INTO s FROM sensors
         WHERE id = (r ->> 'sensor_id')::numeric::bigint AND device_id = p_id;

        IF NOT FOUND THEN
            RETURN NULL;
        END IF;

    ELSIF jsonb_typeof(r -> 'type') = 'string' THEN
        INSERT INTO sensors AS x (device_id, type, unit)
        VALUES (p_id, left(r ->> 'type', 64), left(coalesce(r ->> 'unit', ''), 32))
        ON CONFLICT (device_id, type) DO UPDATE SET type = x.type
        RETURNING * INTO s;

    ELSE
        RETURN NULL;
    END IF;

    -- no timestamp: the receive time, distinct for each reading of a batch
    ts := coalesce(fleet_parse_ts(r -> 'timestamp'), clock_timestamp());

    INSERT INTO sensor_readings (sensor_id, ts, value)
    VALUES (s.id, ts, (r ->> 'value')::double precision)
    ON CONFLICT DO NOTHING;

    IF FOUND THEN
        PERFORM fleet_notify('sensor_data_update', jsonb_build_object(
            'sensor_id', s.id, 'sensor_type', s.type, 'device_id', p_id,
            'device_name', p_name, 'value', r -> 'value', 'unit', s.unit,
            'timestamp', fleet_iso(ts)));
    END IF;

    RETURN s.id;
EXCEPTION WHEN invalid_parameter_value OR numeric_value_out_of_range
               OR invalid_text_representation THEN
    RETURN NULL;
END
$$;


CREATE FUNCTION fleet_ingest_sensor(p_id text, m jsonb)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_name      text;
    r           jsonb;
    n_ok        int := 0;
    n_bad       int := 0;
BEGIN
    SELECT coalesce(name, id) INTO v_name FROM devices WHERE id = p_id;

    IF NOT FOUND THEN
        RETURN fleet_ingest_result(false, 'unknown device');
    END IF;

    FOR r IN
        SELECT x FROM jsonb_array_elements(
            CASE WHEN jsonb_typeof(m -> 'readings') = 'array'
                 THEN m -> 'readings' ELSE jsonb_build_array(m) END) AS x
    LOOP
        IF jsonb_typeof(r) = 'object'
           AND fleet_store_reading(p_id, v_name, r) IS NOT NULL
        THEN
            n_ok := n_ok + 1;
        ELSE
            n_bad := n_bad + 1;
        END IF;
    END LOOP;

    IF n_ok > 0 THEN
        PERFORM fleet_device_set_online(p_id, true);
    END IF;

    RETURN jsonb_build_object('stored', n_ok > 0, 'readings', n_ok,
                              'dropped', n_bad,
                              'reason', CASE WHEN n_ok = 0
                                        THEN 'no valid reading' END);
END
$$;


CREATE FUNCTION fleet_ingest_event(p_id text, m jsonb)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_ev    device_events;
    v_ts    timestamptz;
BEGIN
    IF jsonb_typeof(m -> 'event') IS DISTINCT FROM 'string'
       OR length(m ->> 'event') NOT BETWEEN 1 AND 64
    THEN
        RETURN fleet_ingest_result(false, 'event name is required');
    END IF;

    v_ts := coalesce(fleet_parse_ts(m -> 'timestamp'), now());

    IF NOT fleet_device_set_online(p_id, true) THEN
        RETURN fleet_ingest_result(false, 'unknown device');
    END IF;

    INSERT INTO device_events (device_id, event, data, ts)
    VALUES (p_id, m ->> 'event', m -> 'data', v_ts)
    ON CONFLICT DO NOTHING
    RETURNING * INTO v_ev;

    IF NOT FOUND THEN
        RETURN fleet_ingest_result(true, NULL);     -- a redelivery
    END IF;

    -- the data travels in the envelope when it fits; workers read the row
    -- otherwise (NOTIFY payloads stay below 8000 bytes)
    PERFORM fleet_notify('device_event', jsonb_build_object(
        'id', v_ev.id, 'device_id', p_id, 'event', v_ev.event,
        'timestamp', fleet_iso(v_ts))
        || CASE WHEN length(coalesce(v_ev.data::text, '')) < 6000
                THEN jsonb_build_object('data', v_ev.data) ELSE '{}' END);

    RETURN fleet_ingest_result(true, NULL);
EXCEPTION WHEN invalid_parameter_value THEN
    RETURN fleet_ingest_result(false, 'invalid timestamp');
END
$$;


CREATE FUNCTION fleet_ingest_status(p_id text, m jsonb)
RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    IF coalesce(upper(m ->> 'status'), '') NOT IN ('OFFLINE', 'ONLINE') THEN
        RETURN fleet_ingest_result(false, 'status must be OFFLINE or ONLINE');
    END IF;

    IF NOT fleet_device_set_online(p_id, upper(m ->> 'status') = 'ONLINE') THEN
        RETURN fleet_ingest_result(false, 'unknown device');
    END IF;

    RETURN fleet_ingest_result(true, NULL);
END
$$;


-- MACs are stored as upper-case, colon-separated
CREATE FUNCTION fleet_norm_mac(p text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN upper(replace(p, '-', ':'))
                     ~ '^[0-9A-F]{2}(:[0-9A-F]{2}){5}$'
                THEN upper(replace(p, '-', ':')) END
$$;


-- A frame from an unknown MAC creates an unclaimed camera only admins see.
CREATE FUNCTION fleet_ingest_image(p_topic_mac text, m jsonb)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_mac   text;
    v_id    text;
    v_ts    timestamptz;
BEGIN
    v_mac := fleet_norm_mac(coalesce(m ->> 'X-MAC-ADDRESS', p_topic_mac));

    IF v_mac IS NULL THEN
        RETURN fleet_ingest_result(false, 'invalid X-MAC-ADDRESS');
    END IF;

    IF jsonb_typeof(m -> 'image') IS DISTINCT FROM 'string'
       OR length(m ->> 'image') = 0
    THEN
        RETURN fleet_ingest_result(false, 'image is required');
    END IF;

    v_ts := coalesce(fleet_parse_ts(m -> 'timestamp'), now());

    SELECT id INTO v_id FROM devices WHERE mac_address = v_mac
     ORDER BY (kind = 'camera') DESC, created_at LIMIT 1;

    IF NOT FOUND THEN
        v_id := 'cam-' || lower(replace(v_mac, ':', ''));

        INSERT INTO devices (id, mac_address, kind)
        VALUES (v_id, v_mac, 'camera')
        ON CONFLICT (id) DO NOTHING;
    END IF;

    INSERT INTO camera_frames (mac, device_id, image, ts)
    VALUES (v_mac, v_id, m ->> 'image', v_ts)
    ON CONFLICT (mac) DO UPDATE
        SET device_id = excluded.device_id, image = excluded.image,
            ts = excluded.ts, received_at = now();

    PERFORM fleet_device_set_online(v_id, true);

    PERFORM fleet_notify('camera_frame', jsonb_build_object(
        'esp_hmac', v_mac, 'device_id', v_id,
        'timestamp', (extract(epoch FROM v_ts) * 1000)::bigint));

    RETURN fleet_ingest_result(true, NULL);
EXCEPTION WHEN invalid_parameter_value THEN
    RETURN fleet_ingest_result(false, 'invalid timestamp');
END
$$;


-- The bridge's timer: idempotent, so two bridges never double-fire (the
-- second UPDATE re-checks "online" on the row the first one changed).
CREATE FUNCTION fleet_mark_offline(p_after_s int) RETURNS int
LANGUAGE plpgsql AS $$
DECLARE
    v_id    text;
    n       int := 0;
BEGIN
    FOR v_id IN
        UPDATE devices SET online = false, status_changed_at = now()
         WHERE online AND last_seen < now() - make_interval(secs => p_after_s)
        RETURNING id
    LOOP
        PERFORM fleet_notify('device_status',
            jsonb_build_object('device_id', v_id, 'online', false));
        n := n + 1;
    END LOOP;

    RETURN n;
END
$$;


-- ---------------------------------------------------------------------
-- Device-facing HTTP (signed)

CREATE FUNCTION fleet_device_missing(p_id text) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT fleet_error(404, 'DEVICE_NOT_FOUND',
                       format('device %s is not registered', p_id))
$$;


CREATE FUNCTION fleet_sync_state(p_id text, p_request text, p_status text,
                                 p_configs jsonb)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    d devices;
BEGIN
    IF NOT fleet_device_set_online(p_id, p_request = 'startup') THEN
        RETURN fleet_device_missing(p_id);
    END IF;

    UPDATE devices SET status = p_status,
                       reported_configs = coalesce(p_configs, reported_configs),
                       updated_at = now()
     WHERE id = p_id
    RETURNING * INTO d;

    PERFORM fleet_notify('device_state', jsonb_build_object(
        'device_id', p_id, 'topic_request', p_request, 'status', p_status));

    RETURN jsonb_build_object('status', 200,
        'data', jsonb_build_object('device_id', d.id, 'online', d.online,
                                   'status', d.status),
        'message', 'Device state synced successfully');
END
$$;


CREATE FUNCTION fleet_sync_configs(p_id text, p_configs jsonb)
RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    IF NOT fleet_device_set_online(p_id, true) THEN
        RETURN fleet_device_missing(p_id);
    END IF;

    UPDATE devices SET reported_configs = p_configs, updated_at = now()
     WHERE id = p_id;

    RETURN jsonb_build_object('status', 200,
                              'message', 'Device configs synced successfully');
END
$$;


-- Validates every item before storing any: a bad item stores nothing.
CREATE FUNCTION fleet_upload_logs(p_id text, p_items jsonb)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    it          jsonb;
    i           int := 0;
    k           text;
    v           jsonb;
    n_new       int := 0;
    v_ts        timestamptz;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM devices WHERE id = p_id) THEN
        RETURN fleet_device_missing(p_id);
    END IF;

    FOR it IN SELECT x FROM jsonb_array_elements(p_items) AS x LOOP
        IF jsonb_typeof(it) <> 'object' THEN
            RETURN fleet_error(400, 'VALIDATION_ERROR',
                               format('items[%s] must be an object', i));
        END IF;

        IF jsonb_typeof(it -> 'type') IS DISTINCT FROM 'string'
           OR length(it ->> 'type') NOT BETWEEN 1 AND 32
        THEN
            RETURN fleet_error(400, 'VALIDATION_ERROR',
                format('items[%s].type must be a non-empty string', i));
        END IF;

        IF it ->> 'status' IS NULL OR jsonb_typeof(it -> 'status') <> 'string'
           OR it ->> 'status' NOT IN ('PENDING', 'SUCCEEDED', 'FAILED',
                                      'CANCELLED')
        THEN
            RETURN fleet_error(400, 'VALIDATION_ERROR',
                format('items[%s].status must be one of PENDING, SUCCEEDED, '
                       'FAILED, CANCELLED', i));
        END IF;

        IF jsonb_typeof(it -> 'timestamp') IS DISTINCT FROM 'number' THEN
            RETURN fleet_error(400, 'VALIDATION_ERROR',
                format('items[%s].timestamp must be epoch milliseconds', i));
        END IF;

        BEGIN
            PERFORM fleet_parse_ts(it -> 'timestamp');
        EXCEPTION WHEN invalid_parameter_value THEN
            RETURN fleet_error(400, 'VALIDATION_ERROR',
                format('items[%s].timestamp is out of range', i));
        END;

        IF jsonb_typeof(it -> 'total_amount') IS DISTINCT FROM 'number'
           OR (it ->> 'total_amount')::numeric < 0
        THEN
            RETURN fleet_error(400, 'VALIDATION_ERROR',
                format('items[%s].total_amount must be a number >= 0', i));
        END IF;

        -- bank notes and coins: denomination -> count
        FOREACH k IN ARRAY ARRAY['bank', 'coin'] LOOP
            IF it ? k THEN
                IF jsonb_typeof(it -> k) <> 'object' THEN
                    RETURN fleet_error(400, 'VALIDATION_ERROR',
                        format('items[%s].%s must be an object', i, k));
                END IF;

                FOR v IN SELECT value FROM jsonb_each(it -> k) LOOP
                    IF jsonb_typeof(v) <> 'number' OR v::text !~ '^\d+$' THEN
                        RETURN fleet_error(400, 'VALIDATION_ERROR',
                            format('items[%s].%s counts must be integers >= 0',
                                   i, k));
                    END IF;
                END LOOP;

                IF EXISTS (SELECT 1 FROM jsonb_object_keys(it -> k) AS d
                            WHERE d !~ '^\d+$')
                THEN
                    RETURN fleet_error(400, 'VALIDATION_ERROR',
                        format('items[%s].%s keys must be denominations', i, k));
                END IF;
            END IF;
        END LOOP;

        IF it ? 'qr' AND (jsonb_typeof(it -> 'qr') <> 'object'
           OR (it -> 'qr' ? 'chargeId'
               AND jsonb_typeof(it -> 'qr' -> 'chargeId') <> 'string')
           OR (it -> 'qr' ? 'net_amount'
               AND jsonb_typeof(it -> 'qr' -> 'net_amount') <> 'number'))
        THEN
            RETURN fleet_error(400, 'VALIDATION_ERROR',
                format('items[%s].qr must be {chargeId: string, '
                       'net_amount: number}', i));
        END IF;

        i := i + 1;
    END LOOP;

    FOR it IN SELECT x FROM jsonb_array_elements(p_items) AS x LOOP
        v_ts := fleet_parse_ts(it -> 'timestamp');

        INSERT INTO device_event_logs (device_id, type, status, ts,
                                       total_amount, item)
        VALUES (p_id, it ->> 'type', it ->> 'status', v_ts,
                (it ->> 'total_amount')::numeric, it)
        ON CONFLICT (device_id, ts, type) DO NOTHING;

        IF FOUND THEN
            n_new := n_new + 1;
        END IF;
    END LOOP;

    PERFORM fleet_device_set_online(p_id, true);

    RETURN jsonb_build_object('status', 201,
        'data', jsonb_build_object('length', i, 'stored', n_new),
        'message', 'Logs uploaded successfully');
END
$$;


-- ---------------------------------------------------------------------
-- Web (bearer token).  p_sub and p_role come from a verified token; the
-- role stored for the user wins over the token's.

CREATE TYPE fleet_actor AS (user_id bigint, role text);

-- NULL when a user/admin token names no user (the caller answers 401)
CREATE FUNCTION fleet_actor(p_sub text, p_role text) RETURNS fleet_actor
LANGUAGE plpgsql STABLE AS $$
DECLARE
    a fleet_actor;
BEGIN
    IF p_role = 'service' THEN
        a.role := 'service';
        RETURN a;
    END IF;

    IF p_sub !~ '^[0-9]{1,18}$' THEN
        RETURN NULL;
    END IF;

    SELECT id, role INTO a.user_id, a.role FROM users WHERE id = p_sub::bigint;

    IF NOT FOUND THEN
        RETURN NULL;
    END IF;

    RETURN a;
END
$$;


CREATE FUNCTION fleet_unknown_actor() RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT fleet_error(401, 'UNAUTHORIZED', 'unknown user')
$$;


-- admins and backend services see every device; a user only their own
CREATE FUNCTION fleet_may_see(a fleet_actor, d devices) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    -- never NULL: an unowned device is nobody's (NOT NULL would pass)
    SELECT coalesce(a.role IN ('admin', 'service')
                    OR d.owner_id = a.user_id, false)
$$;


CREATE FUNCTION fleet_device_claim(p_sub text, p_role text, p_pin text,
                                   p_name text)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    a   fleet_actor := fleet_actor(p_sub, p_role);
    d   devices;
BEGIN
    IF a IS NULL OR a.user_id IS NULL THEN
        RETURN fleet_unknown_actor();
    END IF;

    SELECT dv.* INTO d FROM device_pins p JOIN devices dv ON dv.id = p.device_id
     WHERE p.pin = p_pin AND p.expires_at > now()
       FOR UPDATE OF dv;

    IF NOT FOUND THEN
        RETURN fleet_error(404, 'DEVICE_NOT_FOUND',
                           'no device is waiting with this pin (pins last '
                           '10 minutes)');
    END IF;

    IF d.owner_id IS NOT NULL AND d.owner_id <> a.user_id THEN
        RETURN fleet_error(409, 'CONFLICT',
                           'this device belongs to another account');
    END IF;

    UPDATE devices SET owner_id = a.user_id,
                       name = coalesce(p_name, name, id), updated_at = now()
     WHERE id = d.id
    RETURNING * INTO d;

    DELETE FROM device_pins WHERE device_id = d.id;

    PERFORM fleet_notify('device_claimed', jsonb_build_object(
        'device_id', d.id, 'owner_id', d.owner_id::text, 'name', d.name));

    RETURN jsonb_build_object('status', 200, 'data', fleet_device_json(d),
                              'message', 'Device claimed successfully');
END
$$;


CREATE FUNCTION fleet_devices_list(p_sub text, p_role text, p_limit int,
                                   p_offset int)
RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    a       fleet_actor := fleet_actor(p_sub, p_role);
    items   jsonb;
    total   bigint;
BEGIN
    IF a IS NULL THEN
        RETURN fleet_unknown_actor();
    END IF;

    SELECT count(*) INTO total FROM devices d WHERE fleet_may_see(a, d);

    SELECT coalesce(jsonb_agg(fleet_device_json(d) ORDER BY d.created_at, d.id),
                    '[]')
      INTO items
      FROM (SELECT * FROM devices d WHERE fleet_may_see(a, d)
             ORDER BY d.created_at, d.id
             LIMIT p_limit OFFSET p_offset) d;

    RETURN jsonb_build_object('status', 200,
        'data', jsonb_build_object('items', items, 'total', total,
                                   'limit', p_limit, 'offset', p_offset),
        'message', 'Devices retrieved successfully');
END
$$;


CREATE FUNCTION fleet_device_get(p_sub text, p_role text, p_id text)
RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    a   fleet_actor := fleet_actor(p_sub, p_role);
    d   devices;
BEGIN
    IF a IS NULL THEN
        RETURN fleet_unknown_actor();
    END IF;

    SELECT * INTO d FROM devices WHERE id = p_id;

    -- another user's device does not exist, as far as this user knows
    IF NOT FOUND OR NOT fleet_may_see(a, d) THEN
        RETURN fleet_device_missing(p_id);
    END IF;

    RETURN jsonb_build_object('status', 200, 'data', fleet_device_json(d),
                              'message', 'Device retrieved successfully');
END
$$;


-- p: the validated PATCH body; name and labels for the owner, owner_id
-- (admin only) too.  labels replaces the whole object.
CREATE FUNCTION fleet_device_patch(p_sub text, p_role text, p_id text,
                                   p jsonb)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    a       fleet_actor := fleet_actor(p_sub, p_role);
    d       devices;
    v_owner bigint;
BEGIN
    IF a IS NULL THEN
        RETURN fleet_unknown_actor();
    END IF;

    SELECT * INTO d FROM devices WHERE id = p_id FOR UPDATE;

    IF NOT FOUND OR NOT fleet_may_see(a, d) OR a.role = 'service' THEN
        RETURN fleet_device_missing(p_id);
    END IF;

    IF p ? 'owner_id' THEN
        IF a.role <> 'admin' THEN
            RETURN fleet_error(403, 'FORBIDDEN',
                               'only an admin may change a device''s owner');
        END IF;

        IF jsonb_typeof(p -> 'owner_id') <> 'null' THEN
            IF (p ->> 'owner_id') !~ '^[0-9]{1,18}$' THEN
                RETURN fleet_error(400, 'VALIDATION_ERROR',
                                   'owner_id must be a user id or null');
            END IF;

            SELECT id INTO v_owner FROM users
             WHERE id = (p ->> 'owner_id')::bigint;

            IF NOT FOUND THEN
                RETURN fleet_error(400, 'VALIDATION_ERROR',
                                   'owner_id names no user');
            END IF;
        END IF;
    ELSE
        v_owner := d.owner_id;
    END IF;

    UPDATE devices
       SET name = CASE WHEN p ? 'name' THEN p ->> 'name' ELSE name END,
           labels = CASE WHEN p ? 'labels' THEN p -> 'labels' ELSE labels END,
           owner_id = v_owner,
           updated_at = now()
     WHERE id = p_id
    RETURNING * INTO d;

    IF p ? 'owner_id' THEN
        PERFORM fleet_notify('device_owner_changed', jsonb_build_object(
            'device_id', d.id, 'owner_id', d.owner_id::text,
            'admin_id', a.user_id::text));
    END IF;

    RETURN jsonb_build_object('status', 200, 'data', fleet_device_json(d),
                              'message', 'Device updated successfully');
END
$$;


-- An owner removes the device from their account (it can be claimed again
-- with a new pin); an admin deletes it with its history.
CREATE FUNCTION fleet_device_delete(p_sub text, p_role text, p_id text)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    a   fleet_actor := fleet_actor(p_sub, p_role);
    d   devices;
BEGIN
    IF a IS NULL THEN
        RETURN fleet_unknown_actor();
    END IF;

    SELECT * INTO d FROM devices WHERE id = p_id FOR UPDATE;

    IF NOT FOUND OR NOT fleet_may_see(a, d) OR a.role = 'service' THEN
        RETURN fleet_device_missing(p_id);
    END IF;

    IF a.role = 'admin' THEN
        DELETE FROM devices WHERE id = p_id;
    ELSE
        UPDATE devices SET owner_id = NULL, updated_at = now()
         WHERE id = p_id;
    END IF;

    RETURN jsonb_build_object('status', 200,
        'data', jsonb_build_object('device_id', p_id,
                                   'deleted', a.role = 'admin'),
        'message', CASE WHEN a.role = 'admin' THEN 'Device deleted'
                        ELSE 'Device removed from your account' END);
END
$$;


CREATE FUNCTION fleet_sensor_create(p_sub text, p_role text, p_id text,
                                    p_type text, p_unit text, p_name text)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    a   fleet_actor := fleet_actor(p_sub, p_role);
    d   devices;
    v   bigint;
BEGIN
    IF a IS NULL THEN
        RETURN fleet_unknown_actor();
    END IF;

    SELECT * INTO d FROM devices WHERE id = p_id;

    IF NOT FOUND OR NOT fleet_may_see(a, d) OR a.role = 'service' THEN
        RETURN fleet_device_missing(p_id);
    END IF;

    INSERT INTO sensors (device_id, type, unit, name)
    VALUES (p_id, p_type, coalesce(p_unit, ''), p_name)
    ON CONFLICT (device_id, type) DO NOTHING
    RETURNING id INTO v;

    IF v IS NULL THEN
        RETURN fleet_error(409, 'CONFLICT',
                           format('device %s already has a %s sensor',
                                  p_id, p_type));
    END IF;

    RETURN jsonb_build_object('status', 201,
        'data', jsonb_build_object('sensor_id', v, 'device_id', p_id,
                                   'type', p_type, 'unit', coalesce(p_unit, ''),
                                   'name', p_name),
        'message', 'Sensor created successfully');
END
$$;


CREATE FUNCTION fleet_sensor_readings(p_sub text, p_role text, p_sensor text,
                                      p_from text, p_to text, p_limit int)
RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    a       fleet_actor := fleet_actor(p_sub, p_role);
    s       sensors;
    d       devices;
    v_from  timestamptz;
    v_to    timestamptz;
    items   jsonb;
BEGIN
    IF a IS NULL THEN
        RETURN fleet_unknown_actor();
    END IF;

    IF p_sensor !~ '^[0-9]{1,18}$' THEN
        RETURN fleet_error(404, 'NOT_FOUND', 'no such sensor');
    END IF;

    SELECT * INTO s FROM sensors WHERE id = p_sensor::bigint;
    SELECT * INTO d FROM devices WHERE id = s.device_id;

    IF s.id IS NULL OR NOT fleet_may_see(a, d) THEN
        RETURN fleet_error(404, 'NOT_FOUND', 'no such sensor');
    END IF;

    BEGIN
        v_from := coalesce(fleet_parse_ts(to_jsonb(p_from)), '-infinity');
        v_to := coalesce(fleet_parse_ts(to_jsonb(p_to)), 'infinity');
    EXCEPTION WHEN invalid_parameter_value THEN
        RETURN fleet_error(400, 'VALIDATION_ERROR',
                           'from and to must be ISO 8601 times');
    END;

    SELECT coalesce(jsonb_agg(jsonb_build_object('value', r.value,
                                                 'timestamp', fleet_iso(r.ts))
                              ORDER BY r.ts), '[]')
      INTO items
      FROM (SELECT * FROM sensor_readings
             WHERE sensor_id = s.id AND ts >= v_from AND ts <= v_to
             ORDER BY ts DESC LIMIT p_limit) r;

    RETURN jsonb_build_object('status', 200,
        'data', jsonb_build_object('sensor_id', s.id, 'sensor_type', s.type,
                                   'unit', s.unit, 'device_id', s.device_id,
                                   'readings', items),
        'message', 'Readings retrieved successfully');
END
$$;


-- The HTTP answer of a route function, split for the module: a success
-- body is sent verbatim (numbers stay exactly as PostgreSQL has them; no
-- re-serialization in the worker), a refusal becomes the SPEC 3 envelope.
CREATE FUNCTION fleet_http(r jsonb,
                           OUT status int, OUT error text, OUT message text,
                           OUT body text)
LANGUAGE sql IMMUTABLE AS $$
    SELECT (r ->> 'status')::int, r ->> 'error', r ->> 'message',
           CASE WHEN r ? 'error' THEN NULL
                WHEN r ? 'body' THEN (r -> 'body')::text
                ELSE (jsonb_build_object('success', true)
                      || CASE WHEN r ? 'data'
                              THEN jsonb_build_object('data', r -> 'data')
                              ELSE '{}' END
                      || jsonb_build_object('message', r -> 'message'))::text
           END
$$;
