-- fleetgate: accounts (SPEC 2 and 9; seed 003's account and admin events):
-- registration, logout, profile changes, admin user management,
-- maintenance notices and the admin audit log.

ALTER TABLE users ADD COLUMN last_login_at timestamptz;


-- ---------------------------------------------------------------------
-- Logout: a revocation list.
--
-- Tokens are stateless JWTs checked in the worker's memory.  Logging out
-- can either shorten every token's life (a few minutes, with a refresh
-- token to get the next one) or remember the tokens that were given back.
-- Short-lived tokens still leave a logged-out token usable until it
-- expires, need a refresh route and a client that uses it (the seeds'
-- browsers keep one token), and make every client talk to the server
-- every few minutes.  A revocation list refuses the token at once, and
-- costs almost nothing here: every route a token opens already runs one
-- query, and the module puts the check in that same query (a primary-key
-- probe; see ngx_fleet_api_call), so no round trip is added.  Socket.IO's
-- CONNECT checks it too (fleet_sio_connect below).  The list only holds
-- tokens given back before their exp, and each logout sweeps out the ones
-- that expired: a revoked token past its exp is refused by its exp anyway.
--
-- jti is the token's "jti" claim (tokens this module issues always have
-- one), or, for an external issuer's token without one, "sha256:" and a
-- digest of the token.  Streams opened before the logout (WebSocket,
-- Socket.IO, SSE) are not cut: like a token's exp, revocation is checked
-- when a stream opens.
CREATE TABLE revoked_tokens (
    jti             text PRIMARY KEY,
    user_id         bigint,
    exp             timestamptz NOT NULL,
    revoked_at      timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX revoked_tokens_exp_idx ON revoked_tokens (exp);


CREATE FUNCTION fleet_token_revoked(p_jti text) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM revoked_tokens WHERE jti = p_jti)
$$;


CREATE FUNCTION fleet_token_refused() RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT fleet_error(401, 'UNAUTHORIZED',
                       'token has been revoked (logged out): sign in again')
$$;


-- Socket.IO CONNECT with the token's jti (the module passes it)
CREATE FUNCTION fleet_sio_connect(p_sub text, p_role text, p_jti text)
RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN fleet_token_revoked(p_jti)
                THEN jsonb_build_object('error', 'token has been revoked')
                ELSE fleet_sio_connect(p_sub, p_role) END
$$;


-- ---------------------------------------------------------------------
-- Events

-- seed 003's user:logged_in and user:logged_out: to the user's own room
-- (every tab and device of that user) and to admin
CREATE FUNCTION fleet_user_session_event(p_type text, p_event text, u users)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM fleet_notify(p_type, jsonb_build_object(
        'user_id', u.id::text,
        'sio', jsonb_build_array(jsonb_build_object(
            'event', p_event,
            'rooms', jsonb_build_array('user_' || u.id, 'admin'),
            'data', jsonb_build_object('user', fleet_user_json(u),
                                       'at', fleet_iso(now()))))));
END
$$;


-- user:profile:updated {old, new} (fleet_user_json: never a password hash)
CREATE FUNCTION fleet_user_profile_event(o users, n users)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM fleet_notify('user_profile_updated', jsonb_build_object(
        'user_id', n.id::text,
        'sio', jsonb_build_array(jsonb_build_object(
            'event', 'user:profile:updated',
            'rooms', jsonb_build_array('user_' || n.id, 'admin'),
            'data', jsonb_build_object('old', fleet_user_json(o),
                                       'new', fleet_user_json(n))))));
END
$$;


-- ---------------------------------------------------------------------
-- The admin audit log: every admin change is a row, written in the same
-- transaction as the change, and an admin:action {adminId, action,
-- details} (seed 003) to the admin room.  No foreign key to users: the
-- log outlives the accounts it names (the email is kept as it was).

CREATE TABLE admin_audit (
    id              bigserial PRIMARY KEY,
    admin_id        bigint,
    admin_email     text,
    action          text NOT NULL,
    target          text,
    details         jsonb NOT NULL DEFAULT '{}',
    at              timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX admin_audit_action_idx ON admin_audit (action, id);


CREATE FUNCTION fleet_admin_action(p_admin_id bigint, p_action text,
                                   p_target text, p_details jsonb)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    v_id    bigint;
    v_data  jsonb;
BEGIN
    INSERT INTO admin_audit (admin_id, admin_email, action, target, details)
    VALUES (p_admin_id, (SELECT email FROM users WHERE id = p_admin_id),
            p_action, p_target, coalesce(p_details, '{}'))
    RETURNING id INTO v_id;

    v_data := jsonb_build_object('adminId', p_admin_id::text,
                                 'action', p_action,
                                 'details', coalesce(p_details, '{}'));

    -- details stay small (ids, not lists): NOTIFY payloads stay far below
    -- 8000 bytes
    PERFORM fleet_notify('admin_action', v_data || jsonb_build_object(
        'audit_id', v_id,
        'sio', jsonb_build_array(jsonb_build_object(
            'event', 'admin:action',
            'rooms', '["admin"]'::jsonb,
            'data', v_data))));

    RETURN v_id;
END
$$;


CREATE FUNCTION fleet_not_admin() RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT fleet_error(403, 'FORBIDDEN', 'this route is for admins only')
$$;


-- ---------------------------------------------------------------------
-- Registration, login, logout

-- p_hash: PBKDF2 of the password, made by the worker (in its thread
-- pool); the password itself never reaches the database.  The
-- users_registered trigger (004) emits admin:user:registered.
CREATE FUNCTION fleet_register(p_email text, p_name text, p_hash text)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    u users;
BEGIN
    INSERT INTO users (email, name, role, password_hash)
    VALUES (p_email, p_name, 'user', p_hash)
    ON CONFLICT (lower(email)) DO NOTHING
    RETURNING * INTO u;

    IF NOT FOUND THEN
        RETURN fleet_error(409, 'CONFLICT',
                           'an account with this email already exists');
    END IF;

    RETURN jsonb_build_object('status', 201,
                              'data', jsonb_build_object(
                                  'user', fleet_user_json(u)),
                              'message', 'Registration successful');
END
$$;


-- A login whose password the worker verified: recorded, announced, and
-- answered with the user as stored now (the token's role comes from it).
CREATE FUNCTION fleet_user_logged_in(p_id text) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    u users;
BEGIN
    IF p_id !~ '^[0-9]{1,18}$' THEN
        RETURN fleet_error(401, 'UNAUTHORIZED', 'invalid email or password');
    END IF;

    UPDATE users SET last_login_at = now() WHERE id = p_id::bigint
    RETURNING * INTO u;

    IF NOT FOUND THEN
        -- deleted while its password was being verified
        RETURN fleet_error(401, 'UNAUTHORIZED', 'invalid email or password');
    END IF;

    PERFORM fleet_user_session_event('user_logged_in', 'user:logged_in', u);

    RETURN jsonb_build_object('status', 200,
                              'data', jsonb_build_object(
                                  'user', fleet_user_json(u)));
END
$$;


-- p_jti: the presented token's revocation key, p_exp its exp (epoch s)
CREATE FUNCTION fleet_logout(p_sub text, p_role text, p_jti text,
                             p_exp bigint)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    a   fleet_actor := fleet_actor(p_sub, p_role);
    u   users;
BEGIN
    IF a IS NULL THEN
        RETURN fleet_unknown_actor();
    END IF;

    IF p_jti IS NULL OR length(p_jti) = 0 THEN
        RETURN fleet_error(400, 'VALIDATION_ERROR',
                           'this token cannot be revoked');
    END IF;

    INSERT INTO revoked_tokens (jti, user_id, exp)
    VALUES (p_jti, a.user_id,
            to_timestamp(least(greatest(p_exp, 0), 253402300799)))
    ON CONFLICT (jti) DO NOTHING;

    -- Sweep revocations whose token has expired.  The margin covers
    -- clocks: the worker checks exp with its own clock, which may be a
    -- little behind the database's.  SKIP LOCKED: concurrent logouts do
    -- not wait for each other's sweep.
    DELETE FROM revoked_tokens
     WHERE jti IN (SELECT jti FROM revoked_tokens
                    WHERE exp < now() - interval '5 minutes'
                    ORDER BY exp
                    LIMIT 1000
                      FOR UPDATE SKIP LOCKED);

    IF a.user_id IS NOT NULL THEN
        SELECT * INTO u FROM users WHERE id = a.user_id;
        PERFORM fleet_user_session_event('user_logged_out', 'user:logged_out',
                                         u);
    END IF;

    RETURN jsonb_build_object('status', 200, 'data', NULL,
                              'message', 'Logged out successfully');
END
$$;


-- ---------------------------------------------------------------------
-- The caller's own account

-- the stored hash, for the worker to verify current_password against
CREATE FUNCTION fleet_user_secret(p_sub text, p_role text) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    a   fleet_actor := fleet_actor(p_sub, p_role);
    v   text;
BEGIN
    IF a IS NULL OR a.user_id IS NULL THEN
        RETURN fleet_unknown_actor();
    END IF;

    SELECT password_hash INTO v FROM users WHERE id = a.user_id;

    RETURN jsonb_build_object('status', 200,
                              'data', jsonb_build_object('password_hash', v));
END
$$;


-- PATCH /users/me.  p: {name?, email?}, validated by the worker; p_hash:
-- the new password's hash, or NULL; p_checked: the stored hash that
-- current_password was verified against (NULL when none was needed) —
-- if the password changed since, this request is refused.
CREATE FUNCTION fleet_user_me_patch(p_sub text, p_role text, p jsonb,
                                    p_hash text, p_checked text)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    a   fleet_actor := fleet_actor(p_sub, p_role);
    o   users;
    n   users;
BEGIN
    IF a IS NULL OR a.user_id IS NULL THEN
        RETURN fleet_unknown_actor();
    END IF;

    SELECT * INTO o FROM users WHERE id = a.user_id FOR UPDATE;

    IF p_checked IS NOT NULL AND o.password_hash IS DISTINCT FROM p_checked
    THEN
        RETURN fleet_error(409, 'CONFLICT',
                           'the password was changed meanwhile: try again');
    END IF;

    BEGIN
        UPDATE users
           SET name = coalesce(p ->> 'name', name),
               email = coalesce(p ->> 'email', email),
               password_hash = coalesce(p_hash, password_hash),
               updated_at = now()
         WHERE id = o.id
        RETURNING * INTO n;
    EXCEPTION WHEN unique_violation THEN
        RETURN fleet_error(409, 'CONFLICT',
                           'an account with this email already exists');
    END;

    -- only a visible change is an event (a new password is not one)
    IF fleet_user_json(n) <> fleet_user_json(o) THEN
        PERFORM fleet_user_profile_event(o, n);
    END IF;

    RETURN jsonb_build_object('status', 200, 'data', fleet_user_json(n),
                              'message', 'Profile updated successfully');
END
$$;


-- ---------------------------------------------------------------------
-- Admin: users, maintenance, audit.  The role stored for the caller wins
-- over the token's (a demoted admin is refused at once).

CREATE FUNCTION fleet_admin_user_json(u users) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT fleet_user_json(u) || jsonb_build_object(
        'created_at', fleet_iso(u.created_at),
        'updated_at', fleet_iso(u.updated_at),
        'last_login_at', fleet_iso(u.last_login_at),
        'devices', (SELECT count(*) FROM devices WHERE owner_id = u.id))
$$;


CREATE FUNCTION fleet_admin_users(p_sub text, p_role text, p_limit int,
                                  p_offset int)
RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    a       fleet_actor := fleet_actor(p_sub, p_role);
    items   jsonb;
BEGIN
    IF a IS NULL THEN
        RETURN fleet_unknown_actor();
    END IF;

    IF a.role <> 'admin' THEN
        RETURN fleet_not_admin();
    END IF;

    SELECT coalesce(jsonb_agg(fleet_admin_user_json(u) ORDER BY u.id), '[]')
      INTO items
      FROM (SELECT * FROM users ORDER BY id
             LIMIT p_limit OFFSET p_offset) u;

    RETURN jsonb_build_object('status', 200,
        'data', jsonb_build_object('items', items,
                                   'total', (SELECT count(*) FROM users),
                                   'limit', p_limit, 'offset', p_offset),
        'message', 'Users retrieved successfully');
END
$$;


-- PATCH /admin/users/{id} {role}: admin or user.  The last admin cannot
-- be demoted (by themselves: any other admin doing it is a second admin).
CREATE FUNCTION fleet_admin_user_patch(p_sub text, p_role text, p_id text,
                                       p_new_role text)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    a   fleet_actor := fleet_actor(p_sub, p_role);
    o   users;
    n   users;
BEGIN
    IF a IS NULL THEN
        RETURN fleet_unknown_actor();
    END IF;

    IF a.role <> 'admin' THEN
        RETURN fleet_not_admin();
    END IF;

    IF p_new_role IS NULL OR p_new_role NOT IN ('admin', 'user') THEN
        RETURN fleet_error(400, 'VALIDATION_ERROR',
                           'role must be admin or user');
    END IF;

    IF p_id !~ '^[0-9]{1,18}$' THEN
        RETURN fleet_error(404, 'NOT_FOUND', format('no user %s', p_id));
    END IF;

    -- role changes are serialized on the admins' rows: two admins
    -- demoting each other at once cannot leave no admin at all
    PERFORM 1 FROM users WHERE role = 'admin' ORDER BY id FOR UPDATE;

    SELECT * INTO o FROM users WHERE id = p_id::bigint FOR UPDATE;

    IF NOT FOUND THEN
        RETURN fleet_error(404, 'NOT_FOUND', format('no user %s', p_id));
    END IF;

    IF o.role = p_new_role THEN
        RETURN jsonb_build_object('status', 200,
                                  'data', fleet_admin_user_json(o),
                                  'message', 'Role unchanged');
    END IF;

    IF o.role = 'admin'
       AND (SELECT count(*) FROM users WHERE role = 'admin') <= 1
    THEN
        RETURN fleet_error(409, 'CONFLICT',
                           'you are the last admin: make another user admin '
                           'before giving up the role');
    END IF;

    UPDATE users SET role = p_new_role, updated_at = now()
     WHERE id = o.id
    RETURNING * INTO n;

    -- seed 003's action names
    PERFORM fleet_admin_action(a.user_id,
        CASE WHEN p_new_role = 'admin' THEN 'user_promoted'
             ELSE 'user_demoted' END,
        n.id::text,
        jsonb_build_object('userId', n.id::text, 'email', n.email,
                           'oldRole', o.role, 'newRole', n.role));

    PERFORM fleet_user_profile_event(o, n);

    RETURN jsonb_build_object('status', 200,
                              'data', fleet_admin_user_json(n),
                              'message', 'Role updated successfully');
END
$$;


-- POST /admin/maintenance {enabled, message}: system:maintenance to every
-- connected socket (room "*")
CREATE FUNCTION fleet_admin_maintenance(p_sub text, p_role text,
                                        p_enabled boolean, p_message text)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    a   fleet_actor := fleet_actor(p_sub, p_role);
    v   jsonb;
BEGIN
    IF a IS NULL THEN
        RETURN fleet_unknown_actor();
    END IF;

    IF a.role <> 'admin' THEN
        RETURN fleet_not_admin();
    END IF;

    v := jsonb_build_object('enabled', p_enabled, 'message', p_message,
                            'adminId', a.user_id::text);

    PERFORM fleet_admin_action(a.user_id,
        CASE WHEN p_enabled THEN 'maintenance_enabled'
             ELSE 'maintenance_disabled' END,
        NULL,
        jsonb_build_object('enabled', p_enabled, 'message', p_message));

    PERFORM fleet_notify('system_maintenance', jsonb_build_object(
        'sio', jsonb_build_array(jsonb_build_object(
            'event', 'system:maintenance',
            'rooms', '["*"]'::jsonb,
            'data', v))));

    RETURN jsonb_build_object('status', 200, 'data', v,
        'message', CASE WHEN p_enabled THEN 'Maintenance mode enabled'
                        ELSE 'Maintenance mode disabled' END);
END
$$;


CREATE FUNCTION fleet_admin_audit(p_sub text, p_role text, p_limit int,
                                  p_offset int)
RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    a       fleet_actor := fleet_actor(p_sub, p_role);
    items   jsonb;
BEGIN
    IF a IS NULL THEN
        RETURN fleet_unknown_actor();
    END IF;

    IF a.role <> 'admin' THEN
        RETURN fleet_not_admin();
    END IF;

    SELECT coalesce(jsonb_agg(jsonb_build_object(
               'id', l.id, 'admin_id', l.admin_id::text,
               'admin_email', l.admin_email, 'action', l.action,
               'target', l.target, 'details', l.details,
               'at', fleet_iso(l.at)) ORDER BY l.id DESC), '[]')
      INTO items
      FROM (SELECT * FROM admin_audit ORDER BY id DESC
             LIMIT p_limit OFFSET p_offset) l;

    RETURN jsonb_build_object('status', 200,
        'data', jsonb_build_object('items', items,
                                   'total', (SELECT count(*) FROM admin_audit),
                                   'limit', p_limit, 'offset', p_offset),
        'message', 'Audit log retrieved successfully');
END
$$;


-- ---------------------------------------------------------------------
-- Admin changes made by earlier migrations' functions, now audited.  Each
-- is replaced whole, its behaviour unchanged apart from the audit row and
-- its admin:action event.

-- 002: an admin's owner change is audited (when the owner does change)
CREATE OR REPLACE FUNCTION fleet_device_patch(p_sub text, p_role text,
                                              p_id text, p jsonb)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    a           fleet_actor := fleet_actor(p_sub, p_role);
    d           devices;
    v_owner     bigint;
    v_was       bigint;
BEGIN
    IF a IS NULL THEN
        RETURN fleet_unknown_actor();
    END IF;

    SELECT * INTO d FROM devices WHERE id = p_id FOR UPDATE;

    IF NOT FOUND OR NOT fleet_may_see(a, d) OR a.role = 'service' THEN
        RETURN fleet_device_missing(p_id);
    END IF;

    v_was := d.owner_id;

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

        IF v_was IS DISTINCT FROM d.owner_id THEN
            PERFORM fleet_admin_action(a.user_id, 'device_owner_changed',
                d.id, jsonb_build_object('device_id', d.id,
                                         'old_owner_id', v_was::text,
                                         'new_owner_id', d.owner_id::text));
        END IF;
    END IF;

    RETURN jsonb_build_object('status', 200, 'data', fleet_device_json(d),
                              'message', 'Device updated successfully');
END
$$;


-- 002: an admin's DELETE removes a device and its history: audited
CREATE OR REPLACE FUNCTION fleet_device_delete(p_sub text, p_role text,
                                               p_id text)
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

        PERFORM fleet_admin_action(a.user_id, 'device_deleted', d.id,
            jsonb_build_object('device_id', d.id, 'name', d.name,
                               'owner_id', d.owner_id::text));
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


-- 003: an admin's bulk command is audited; its admin_action notification
-- now comes from fleet_admin_action (with the Socket.IO admin:action)
CREATE OR REPLACE FUNCTION fleet_commands_create(p_sub text, p_role text,
                                                 p_ids jsonb, p_command text,
                                                 p_payload jsonb,
                                                 p_require_ack boolean,
                                                 p_timeout_s int,
                                                 p_bulk boolean)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    a           fleet_actor := fleet_actor(p_sub, p_role);
    bad         jsonb;
    v_setup     text;
    v_scope     text;
    v_dev       text;
    v_cmd       text;
    v_first     text;
BEGIN
    IF a IS NULL THEN
        RETURN fleet_unknown_actor();
    END IF;

    SELECT coalesce(jsonb_agg(x ORDER BY x), '[]') INTO bad
      FROM (SELECT DISTINCT x FROM jsonb_array_elements_text(p_ids) AS x) ids
     WHERE NOT EXISTS (SELECT 1 FROM devices d
                        WHERE d.id = ids.x AND fleet_may_see(a, d));

    IF jsonb_array_length(bad) > 0 THEN
        RETURN jsonb_build_object('status', 404, 'error', 'DEVICE_NOT_FOUND',
            'message', 'unknown devices or devices you may not command: '
                       || (SELECT string_agg(x, ', ')
                             FROM jsonb_array_elements_text(bad) AS x));
    END IF;

    IF p_bulk THEN
        v_setup := fleet_new_id('setup-');
        INSERT INTO command_setups (id, command, total, created_by)
        VALUES (v_setup, p_command,
                (SELECT count(DISTINCT x) FROM jsonb_array_elements_text(p_ids) x),
                a.user_id);
    END IF;

    FOR v_dev IN SELECT DISTINCT x FROM jsonb_array_elements_text(p_ids) AS x
                  ORDER BY 1
    LOOP
        v_cmd := fleet_new_id('cmd-');
        v_first := coalesce(v_first, v_cmd);

        INSERT INTO commands (id, setup_id, device_id, command, payload,
                              require_ack, timeout_s, deadline, created_by)
        VALUES (v_cmd, v_setup, v_dev, p_command, coalesce(p_payload, '{}'),
                p_require_ack, p_timeout_s,
                now() + make_interval(secs => p_timeout_s), a.user_id);
    END LOOP;

    v_scope := coalesce(v_setup, v_first);

    PERFORM fleet_scope_progress(v_scope, p_command);

    -- wakes the bridges: a PENDING row is published even if no worker
    -- reaches a bridge over its socket
    PERFORM fleet_notify('commands_pending', jsonb_build_object(
        'scope', v_scope));

    IF a.role = 'admin' AND p_bulk THEN
        -- the ids are in the setup's rows, not in the audit details
        PERFORM fleet_admin_action(a.user_id, 'bulk_command', v_setup,
            jsonb_build_object('setup_id', v_setup, 'command', p_command,
                               'total_devices',
                               (SELECT total FROM command_setups
                                 WHERE id = v_setup)));
    END IF;

    IF p_bulk THEN
        RETURN jsonb_build_object('status', 200,
            'data', jsonb_build_object('setup_id', v_setup,
                'device_ids', (SELECT jsonb_agg(DISTINCT x)
                                 FROM jsonb_array_elements_text(p_ids) x),
                'total_devices', (SELECT total FROM command_setups
                                   WHERE id = v_setup),
                'command', p_command, 'status', 'INITIATED'),
            'message', CASE p_command
                           WHEN 'APPLY_CONFIG'
                           THEN 'Config apply initiated successfully'
                           ELSE 'Bulk command initiated successfully' END);
    END IF;

    RETURN jsonb_build_object('status', 200,
        'data', jsonb_build_object('command_id', v_first, 'device_id',
                                   p_ids ->> 0, 'command', p_command,
                                   'status', 'PENDING'),
        'message', 'Command created successfully');
END
$$;
