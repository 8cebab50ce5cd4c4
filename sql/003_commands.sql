-- fleetgate: commands with ACK, deadlines and progress events (SPEC 6,
-- seed 004).  A command is a row before it is published; every state
-- change writes its SSE events as rows and NOTIFYs in the same
-- transaction, so a late client replays them and nothing is lost.

CREATE TABLE command_setups (
    id              text PRIMARY KEY,
    command         text NOT NULL,
    total           int NOT NULL,
    status          text NOT NULL DEFAULT 'INITIATED'
                    CHECK (status IN ('INITIATED', 'COMPLETED')),
    created_by      bigint,
    created_at      timestamptz NOT NULL DEFAULT now(),
    completed_at    timestamptz
);

CREATE TABLE commands (
    id              text PRIMARY KEY,
    setup_id        text REFERENCES command_setups (id) ON DELETE CASCADE,
    device_id       text NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    command         text NOT NULL,
    payload         jsonb NOT NULL DEFAULT '{}',
    require_ack     boolean NOT NULL,
    status          text NOT NULL DEFAULT 'PENDING'
                    CHECK (status IN ('PENDING', 'SENT', 'PROGRESS', 'SUCCESS',
                                      'FAILED', 'TIMEOUT')),
    error           text,
    ack             jsonb,
    timeout_s       int NOT NULL,
    deadline        timestamptz NOT NULL,
    publish_claimed_at timestamptz,
    created_by      bigint,
    created_at      timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz,
    finished_at     timestamptz
);

CREATE INDEX commands_pending_idx ON commands (created_at)
    WHERE status = 'PENDING';
CREATE INDEX commands_deadline_idx ON commands (deadline)
    WHERE status IN ('PENDING', 'SENT', 'PROGRESS');
CREATE INDEX commands_setup_idx ON commands (setup_id);

-- The SSE stream of a scope (a setup id, or the id of a single command):
-- ids are the SSE "id:" lines.
CREATE TABLE command_events (
    id              bigserial PRIMARY KEY,
    scope           text NOT NULL,
    event           text NOT NULL,
    data            jsonb NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX command_events_scope_idx ON command_events (scope, id);


CREATE FUNCTION fleet_new_id(p_prefix text) RETURNS text
LANGUAGE sql VOLATILE AS $$
    SELECT p_prefix || substr(replace(gen_random_uuid()::text, '-', ''), 1, 20)
$$;


CREATE FUNCTION fleet_epoch_ms(p timestamptz) RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$
    SELECT (extract(epoch FROM p) * 1000)::bigint
$$;


CREATE FUNCTION fleet_command_event(p_scope text, p_event text, p_data jsonb)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_id bigint;
BEGIN
    INSERT INTO command_events (scope, event, data)
    VALUES (p_scope, p_event, p_data)
    RETURNING id INTO v_id;

    PERFORM fleet_notify('command_event',
        jsonb_build_object('scope', p_scope, 'event_id', v_id));
END
$$;


-- counts of a scope, as seed 004's progress and complete events show them
CREATE FUNCTION fleet_scope_counts(p_scope text) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'total', count(*),
        'completed', count(*) FILTER (WHERE status = 'SUCCESS'
                                      OR (status = 'SENT' AND NOT require_ack)),
        'failed', count(*) FILTER (WHERE status = 'FAILED'),
        'timeout', count(*) FILTER (WHERE status = 'TIMEOUT'),
        'pending', count(*) FILTER (WHERE status IN ('PENDING', 'PROGRESS')
                                    OR (status = 'SENT' AND require_ack)))
      FROM commands
     WHERE coalesce(setup_id, id) = p_scope
$$;


-- progress after every change; complete and results once nothing is left
CREATE FUNCTION fleet_scope_progress(p_scope text, p_command text)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    c       jsonb := fleet_scope_counts(p_scope);
    total   int := (c ->> 'total')::int;
    done    int := total - (c ->> 'pending')::int;
BEGIN
    PERFORM fleet_command_event(p_scope, 'progress',
        jsonb_build_object('command_id', p_scope, 'command', p_command)
        || c || jsonb_build_object('progress',
               CASE WHEN total = 0 THEN 100
                    ELSE round(done * 100.0 / total, 2)::float8 END));

    IF (c ->> 'pending')::int > 0 THEN
        RETURN;
    END IF;

    -- the last change: only one transaction can get here (the command row
    -- it changed is locked, and the setup row is locked below)
    UPDATE command_setups SET status = 'COMPLETED', completed_at = now()
     WHERE id = p_scope AND status <> 'COMPLETED';

    PERFORM fleet_command_event(p_scope, 'complete',
        jsonb_build_object('command_id', p_scope, 'command', p_command,
                           'total', total,
                           'completed', c -> 'completed',
                           'failed', c -> 'failed', 'timeout', c -> 'timeout',
                           'status', 'COMPLETED',
                           'timestamp', fleet_epoch_ms(now())));

    PERFORM fleet_command_event(p_scope, 'results', jsonb_build_object(
        'command_id', p_scope, 'command', p_command,
        'results', (SELECT jsonb_agg(jsonb_strip_nulls(jsonb_build_object(
                        'device_id', device_id, 'status', status,
                        'error', error,
                        'timestamp', fleet_epoch_ms(coalesce(finished_at,
                                                             sent_at,
                                                             created_at))))
                        ORDER BY created_at, device_id)
                      FROM commands WHERE coalesce(setup_id, id) = p_scope)));
END
$$;


-- one device's outcome as an SSE event of its scope
CREATE FUNCTION fleet_command_outcome(c commands) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_scope text := coalesce(c.setup_id, c.id);
    v_event text;
BEGIN
    -- outcomes of one setup are serialized on its row: each sees the
    -- others committed, so exactly one sees "nothing pending" and the
    -- scope's event ids grow in commit order
    IF c.setup_id IS NOT NULL THEN
        PERFORM 1 FROM command_setups WHERE id = c.setup_id FOR UPDATE;
    END IF;

    v_event := CASE c.status
                   WHEN 'SUCCESS' THEN 'device-success'
                   WHEN 'FAILED' THEN 'device-failed'
                   WHEN 'TIMEOUT' THEN 'device-timeout'
                   WHEN 'PROGRESS' THEN 'device-progress'
                   ELSE 'command-sent' END;

    PERFORM fleet_command_event(v_scope, v_event, jsonb_strip_nulls(
        jsonb_build_object(
            'device_id', c.device_id, 'command_id', v_scope,
            'command', c.command, 'status', c.status, 'error', c.error,
            'new_version', c.ack -> 'new_version',
            'progress', c.ack -> 'progress',
            'timestamp', fleet_epoch_ms(now()))));

    IF c.status <> 'PROGRESS' THEN
        PERFORM fleet_scope_progress(v_scope, c.command);
    END IF;
END
$$;


CREATE FUNCTION fleet_command_json(c commands) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_strip_nulls(jsonb_build_object(
        'command_id', c.id, 'setup_id', c.setup_id, 'device_id', c.device_id,
        'command', c.command, 'payload', c.payload,
        'require_ack', c.require_ack, 'status', c.status, 'error', c.error,
        'timeout_sec', c.timeout_s, 'deadline', fleet_iso(c.deadline),
        'created_at', fleet_iso(c.created_at), 'sent_at', fleet_iso(c.sent_at),
        'finished_at', fleet_iso(c.finished_at)))
$$;


-- ---------------------------------------------------------------------
-- creating commands (web, bearer token)

-- p_ids: device ids; every one must exist and be the caller's to command,
-- or the whole request is refused with the list of bad ids.
CREATE FUNCTION fleet_commands_create(p_sub text, p_role text, p_ids jsonb,
                                      p_command text, p_payload jsonb,
                                      p_require_ack boolean, p_timeout_s int,
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
        PERFORM fleet_notify('admin_action', jsonb_build_object(
            'adminId', a.user_id::text, 'action', 'bulk_command',
            -- NOTIFY payloads stay far below 8000 bytes: the ids are
            -- in the setup's rows, not in the envelope
            'details', jsonb_build_object('setup_id', v_setup,
                                          'command', p_command,
                                          'total_devices',
                                          jsonb_array_length(p_ids))));
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


CREATE FUNCTION fleet_command_get(p_sub text, p_role text, p_id text)
RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    a   fleet_actor := fleet_actor(p_sub, p_role);
    c   commands;
    d   devices;
BEGIN
    IF a IS NULL THEN
        RETURN fleet_unknown_actor();
    END IF;

    SELECT * INTO c FROM commands WHERE id = p_id;
    SELECT * INTO d FROM devices WHERE id = c.device_id;

    IF c.id IS NULL OR NOT fleet_may_see(a, d) THEN
        RETURN fleet_error(404, 'COMMAND_NOT_FOUND',
                           format('no command %s', p_id));
    END IF;

    RETURN jsonb_build_object('status', 200, 'data', fleet_command_json(c),
                              'message', 'Command retrieved successfully');
END
$$;


-- a setup is visible when every one of its devices is
CREATE FUNCTION fleet_scope_visible(a fleet_actor, p_scope text)
RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM commands WHERE coalesce(setup_id, id) = p_scope)
       AND NOT EXISTS (SELECT 1 FROM commands c JOIN devices d
                                  ON d.id = c.device_id
                        WHERE coalesce(c.setup_id, c.id) = p_scope
                          AND NOT fleet_may_see(a, d))
$$;


CREATE FUNCTION fleet_bulk_get(p_sub text, p_role text, p_id text)
RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    a   fleet_actor := fleet_actor(p_sub, p_role);
    s   command_setups;
BEGIN
    IF a IS NULL THEN
        RETURN fleet_unknown_actor();
    END IF;

    SELECT * INTO s FROM command_setups WHERE id = p_id;

    IF s.id IS NULL OR NOT fleet_scope_visible(a, p_id) THEN
        RETURN fleet_error(404, 'COMMAND_NOT_FOUND',
                           format('no bulk operation %s', p_id));
    END IF;

    RETURN jsonb_build_object('status', 200,
        'data', jsonb_build_object('setup_id', s.id, 'command', s.command,
                                   'status', s.status,
                                   'created_at', fleet_iso(s.created_at),
                                   'completed_at', fleet_iso(s.completed_at))
                || fleet_scope_counts(p_id)
                || jsonb_build_object('commands',
                       (SELECT jsonb_agg(fleet_command_json(c)
                                         ORDER BY c.device_id)
                          FROM commands c WHERE c.setup_id = p_id)),
        'message', 'Bulk operation retrieved successfully');
END
$$;


-- SSE: opening a stream checks rights and returns the events after
-- p_after (Last-Event-ID), and whether the stream is over.
CREATE FUNCTION fleet_stream_open(p_sub text, p_role text, p_kind text,
                                  p_scope text, p_after bigint)
RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    a   fleet_actor := fleet_actor(p_sub, p_role);
BEGIN
    IF a IS NULL THEN
        RETURN fleet_unknown_actor();
    END IF;

    IF NOT fleet_scope_visible(a, p_scope)
       OR (p_kind = 'bulk') <> EXISTS (SELECT 1 FROM command_setups
                                        WHERE id = p_scope)
    THEN
        RETURN fleet_error(404, 'COMMAND_NOT_FOUND',
                           format('no %s %s', CASE p_kind WHEN 'bulk'
                                  THEN 'bulk operation' ELSE 'command' END,
                                  p_scope));
    END IF;

    RETURN jsonb_build_object('status', 200, 'body',
                              fleet_stream_events(p_scope, p_after));
END
$$;


CREATE FUNCTION fleet_stream_events(p_scope text, p_after bigint)
RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT coalesce(jsonb_agg(jsonb_build_object('id', id, 'event', event,
                                                 'data', data) ORDER BY id),
                    '[]')
      FROM command_events
     WHERE scope = p_scope AND id > coalesce(p_after, 0)
$$;


-- ---------------------------------------------------------------------
-- the bridge's side

-- PENDING commands to publish now; a claim holds for 10 s so two bridges
-- rarely publish the same one (a device may see a QoS-1 duplicate anyway)
CREATE FUNCTION fleet_commands_claim(p_limit int)
RETURNS TABLE (command_id text, topic text, message jsonb)
LANGUAGE sql AS $$
    UPDATE commands c SET publish_claimed_at = now()
      FROM (SELECT id FROM commands
             WHERE status = 'PENDING'
               AND (publish_claimed_at IS NULL
                    OR publish_claimed_at < now() - interval '10 seconds')
             ORDER BY created_at
             LIMIT p_limit
               FOR UPDATE SKIP LOCKED) todo
     WHERE c.id = todo.id
    RETURNING c.id, 'device/' || c.device_id || '/command',
              jsonb_build_object('command_id', c.id, 'command', c.command,
                                 'require_ack', c.require_ack,
                                 'payload', c.payload,
                                 'timestamp', fleet_epoch_ms(now()))
$$;


-- the broker accepted the publish: SENT (and the deadline starts now)
CREATE FUNCTION fleet_command_sent(p_id text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    c commands;
BEGIN
    UPDATE commands
       SET status = 'SENT', sent_at = now(),
           deadline = now() + make_interval(secs => timeout_s),
           finished_at = CASE WHEN require_ack THEN NULL ELSE now() END
     WHERE id = p_id AND status = 'PENDING'
    RETURNING * INTO c;

    IF FOUND AND NOT c.require_ack THEN
        PERFORM fleet_command_outcome(c);
    END IF;
END
$$;


CREATE FUNCTION fleet_command_publish_failed(p_id text) RETURNS void
LANGUAGE sql AS $$
    UPDATE commands SET publish_claimed_at = NULL
     WHERE id = p_id AND status = 'PENDING'
$$;


-- server/{id}/ack: late and duplicate ACKs change nothing
CREATE FUNCTION fleet_ingest_ack(p_device_id text, m jsonb)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    c       commands;
    v_st    text := upper(m ->> 'status');
BEGIN
    IF jsonb_typeof(m -> 'command_id') IS DISTINCT FROM 'string' THEN
        RETURN fleet_ingest_result(false, 'command_id is required');
    END IF;

    IF v_st NOT IN ('SUCCESS', 'FAILED', 'ERROR', 'PROGRESS') THEN
        RETURN fleet_ingest_result(false, 'unknown ack status');
    END IF;

    PERFORM fleet_device_set_online(p_device_id, true);

    SELECT * INTO c FROM commands
     WHERE id = m ->> 'command_id' AND device_id = p_device_id
       FOR UPDATE;

    IF NOT FOUND THEN
        RETURN fleet_ingest_result(false, 'unknown command');
    END IF;

    IF c.status NOT IN ('PENDING', 'SENT', 'PROGRESS') OR NOT c.require_ack THEN
        RETURN fleet_ingest_result(false, 'command already finished');
    END IF;

    IF v_st = 'PROGRESS' THEN
        -- each PROGRESS restarts the deadline (firmware updates)
        UPDATE commands SET status = 'PROGRESS', ack = m,
               deadline = now() + make_interval(secs => timeout_s),
               sent_at = coalesce(sent_at, now())
         WHERE id = c.id
        RETURNING * INTO c;
    ELSE
        UPDATE commands
           SET status = CASE v_st WHEN 'SUCCESS' THEN 'SUCCESS' ELSE 'FAILED' END,
               error = CASE WHEN v_st = 'SUCCESS' THEN NULL
                            ELSE coalesce(left(m ->> 'error', 500),
                                          'Device reported an error') END,
               ack = m, finished_at = now(),
               sent_at = coalesce(sent_at, now())
         WHERE id = c.id
        RETURNING * INTO c;
    END IF;

    PERFORM fleet_command_outcome(c);

    RETURN fleet_ingest_result(true, NULL);
END
$$;


-- The bridge's deadline timer, idempotent: a command past its deadline
-- (never delivered, or delivered and not answered) times out once.
CREATE FUNCTION fleet_commands_timeout() RETURNS int
LANGUAGE plpgsql AS $$
DECLARE
    c   commands;
    n   int := 0;
BEGIN
    FOR c IN
        UPDATE commands
           SET status = 'TIMEOUT', error = 'Device did not respond',
               finished_at = now()
         WHERE id IN (SELECT id FROM commands
                       WHERE status IN ('PENDING', 'SENT', 'PROGRESS')
                         AND deadline < now()
                       ORDER BY deadline
                       LIMIT 1000
                         FOR UPDATE SKIP LOCKED)
        RETURNING *
    LOOP
        PERFORM fleet_command_outcome(c);
        n := n + 1;
    END LOOP;

    RETURN n;
END
$$;
