-- fleetgate: users, devices, registration pins, bridge heartbeats.
--
-- Business rules that must be atomic live here as functions returning
-- jsonb: {"status": N, "data": ..., "message": ...} on success or
-- {"status": N, "error": CODE, "message": ...} on refusal.  The nginx
-- module calls one function per request and turns that into the SPEC
-- section 3 envelope.

CREATE TABLE users (
    id              bigserial PRIMARY KEY,
    email           text NOT NULL,
    name            text NOT NULL DEFAULT '',
    role            text NOT NULL DEFAULT 'user'
                    CHECK (role IN ('admin', 'user', 'service')),
    password_hash   text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE UNIQUE INDEX users_email_key ON users (lower(email));


CREATE TABLE devices (
    id                  text PRIMARY KEY,
    chip_id             text UNIQUE,
    mac_address         text,
    firmware_version    text,
    kind                text NOT NULL DEFAULT 'device',
    owner_id            bigint REFERENCES users (id) ON DELETE SET NULL,
    name                text,
    labels              jsonb NOT NULL DEFAULT '{}',
    online              boolean NOT NULL DEFAULT false,
    status              text,
    rssi                integer,
    uptime              bigint,
    last_seen           timestamptz,
    reported_configs    jsonb,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX devices_owner_idx ON devices (owner_id);


-- One pin per device; a pin is unique among unexpired pins.  The primary
-- key on pin makes two registrations racing for the same pin serialize on
-- the index instead of on a global lock.
CREATE TABLE device_pins (
    pin             text PRIMARY KEY CHECK (pin ~ '^[0-9]{4}$'),
    device_id       text NOT NULL UNIQUE REFERENCES devices (id)
                    ON DELETE CASCADE,
    expires_at      timestamptz NOT NULL
);


CREATE TABLE bridge_heartbeats (
    bridge_id       text PRIMARY KEY,
    info            jsonb NOT NULL DEFAULT '{}',
    seen_at         timestamptz NOT NULL DEFAULT now()
);


-- Every change the browsers and other workers must hear about goes out as
-- a small envelope on this channel, in the same transaction as its rows.
CREATE FUNCTION fleet_notify(p_type text, p_body jsonb) RETURNS void
LANGUAGE sql AS $$
    SELECT pg_notify('fleet_events',
                     (jsonb_build_object('type', p_type) || p_body)::text)
$$;


CREATE FUNCTION fleet_error(p_status int, p_code text, p_message text)
RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_object('status', p_status, 'error', p_code,
                              'message', p_message)
$$;


CREATE FUNCTION fleet_upsert_user(p_email text, p_name text, p_role text,
                                  p_password_hash text)
RETURNS bigint LANGUAGE sql AS $$
    INSERT INTO users (email, name, role, password_hash)
    VALUES (p_email, p_name, p_role, p_password_hash)
    ON CONFLICT (lower(email)) DO UPDATE
        SET name = excluded.name, role = excluded.role,
            password_hash = excluded.password_hash, updated_at = now()
    RETURNING id
$$;


CREATE FUNCTION fleet_user_json(u users) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('id', u.id::text, 'email', u.email,
                              'name', u.name, 'role', u.role)
$$;


CREATE FUNCTION fleet_login_lookup(p_email text) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('user',
               (SELECT fleet_user_json(u)
                       || jsonb_build_object('password_hash', u.password_hash)
                  FROM users u WHERE lower(u.email) = lower(p_email)))
$$;


-- The caller of a bearer-token route, as the token names it.  A user or
-- admin token must name a user that exists; its role in the database wins
-- over the token's (a demoted admin loses admin rights at once).
CREATE FUNCTION fleet_user_me(p_sub text, p_role text) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    u users;
BEGIN
    IF p_sub !~ '^[0-9]{1,18}$' THEN
        RETURN fleet_error(401, 'UNAUTHORIZED', 'unknown user');
    END IF;

    SELECT * INTO u FROM users WHERE id = p_sub::bigint;

    IF NOT FOUND THEN
        RETURN fleet_error(401, 'UNAUTHORIZED', 'unknown user');
    END IF;

    RETURN jsonb_build_object('status', 200, 'data', fleet_user_json(u),
                              'message', 'User retrieved successfully');
END
$$;


-- Marks a device online; the change event fires only on a change.
CREATE FUNCTION fleet_device_seen(p_device_id text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    was_online boolean;
BEGIN
    SELECT online INTO was_online FROM devices WHERE id = p_device_id
       FOR UPDATE;

    UPDATE devices SET online = true, last_seen = now()
     WHERE id = p_device_id;

    IF was_online IS DISTINCT FROM true THEN
        PERFORM fleet_notify('device_status',
                             jsonb_build_object('device_id', p_device_id,
                                                'online', true));
    END IF;
END
$$;


CREATE FUNCTION fleet_need_register(p_chip text, p_mac text, p_fw text)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_id        text;
    v_online    boolean;
    v_pin       text;
    v_try       int := 0;
BEGIN
    -- one write to the device row: upsert, mark online, remember whether
    -- it was online before (the change event fires only on a change)
    SELECT id, online INTO v_id, v_online FROM devices
     WHERE chip_id = p_chip FOR UPDATE;

    IF FOUND THEN
        UPDATE devices SET mac_address = upper(replace(p_mac, '-', ':')),
                           firmware_version = p_fw, online = true,
                           last_seen = now(), updated_at = now()
         WHERE id = v_id;
    ELSE
        INSERT INTO devices AS d (id, chip_id, mac_address, firmware_version,
                                  online, last_seen)
        VALUES ('dev-' || substr(replace(gen_random_uuid()::text, '-', ''),
                                 1, 16),
                p_chip, upper(replace(p_mac, '-', ':')), p_fw, true, now())
        ON CONFLICT (chip_id) DO UPDATE
            SET mac_address = excluded.mac_address,
                firmware_version = excluded.firmware_version,
                online = true, last_seen = now(), updated_at = now()
        RETURNING d.id INTO v_id;
    END IF;

    -- A random pin; a collision with an unexpired pin retries, one with
    -- an expired pin takes it over.  With 10000 pins and short validity
    -- a free one is found in a few tries; after 64 the free pins are
    -- listed outright.
    LOOP
        v_try := v_try + 1;

        IF v_try <= 64 THEN
            v_pin := lpad((floor(random() * 10000))::int::text, 4, '0');
        ELSE
            SELECT lpad(n::text, 4, '0') INTO v_pin
              FROM generate_series(0, 9999) AS n
             WHERE NOT EXISTS (SELECT 1 FROM device_pins p
                                WHERE p.pin = lpad(n::text, 4, '0')
                                  AND p.expires_at > now()
                                  AND p.device_id <> v_id)
             ORDER BY random() LIMIT 1;

            IF v_pin IS NULL THEN
                RETURN fleet_error(503, 'SERVICE_UNAVAILABLE',
                                   'no registration pin is free, retry later');
            END IF;
        END IF;

        -- the device's own old pin row is replaced in place
        DELETE FROM device_pins WHERE device_id = v_id AND pin <> v_pin;

        INSERT INTO device_pins AS p (pin, device_id, expires_at)
        VALUES (v_pin, v_id, now() + interval '10 minutes')
        ON CONFLICT (pin) DO UPDATE
            SET device_id = excluded.device_id,
                expires_at = excluded.expires_at
            WHERE p.expires_at <= now() OR p.device_id = excluded.device_id;

        EXIT WHEN FOUND;
    END LOOP;

    IF v_online IS DISTINCT FROM true THEN
        PERFORM fleet_notify('device_status',
                             jsonb_build_object('device_id', v_id,
                                                'online', true));
    END IF;

    RETURN jsonb_build_object(
        'status', 200,
        'data', jsonb_build_object('pin', v_pin, 'device_id', v_id),
        'message', 'Device registered successfully');
END
$$;


CREATE FUNCTION fleet_bridge_heartbeat(p_bridge_id text, p_info text)
RETURNS void LANGUAGE sql AS $$
    INSERT INTO bridge_heartbeats (bridge_id, info, seen_at)
    VALUES (p_bridge_id, coalesce(p_info, '{}')::jsonb, now())
    ON CONFLICT (bridge_id) DO UPDATE
        SET info = excluded.info, seen_at = excluded.seen_at
$$;


CREATE FUNCTION fleet_health() RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'bridges_alive',
        (SELECT count(*) FROM bridge_heartbeats
          WHERE seen_at > now() - interval '30 seconds'))
$$;
