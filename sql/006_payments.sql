-- fleetgate: payments (SPEC 8; seed 004 "Device QR Code Payment" and
-- "Timeout Fallback").
--
-- A payment is a row: PENDING -> SUCCEEDED | FAILED | CANCELLED, and a
-- final state never changes again (expiry is CANCELLED).  Every status
-- change writes a payment_events row in the same transaction: the event is
-- the audit trail and the outbox.  The bridges publish unpublished events on
-- device/{chargeId}/payment-status (signed, QoS 1) and mark them published
-- on the broker's PUBACK, so a crash between the change and the publish
-- loses nothing; the status route reads the payment row, so it shows a new
-- state as soon as it is committed.
--
-- The QR payload (EMVCo, PromptPay bill payment) is built by the nginx
-- module in C (common/fleet_promptpay.c) and stored with the row.

CREATE TABLE payments (
    id              text PRIMARY KEY,
    charge_id       text NOT NULL UNIQUE,
    reference_id    text NOT NULL UNIQUE,
    -- no foreign key: a payment is a financial record, it outlives the
    -- device (an admin may delete a device)
    device_id       text NOT NULL,
    -- the device's owner when the payment was made: a user sees the
    -- payments of the time they owned the device, not its earlier ones
    owner_id        bigint,
    amount          bigint NOT NULL CHECK (amount > 0),
    payment_method  text NOT NULL CHECK (payment_method IN ('QR_PROMPT_PAY')),
    description     text,
    raw_data        text NOT NULL,
    status          text NOT NULL DEFAULT 'PENDING'
                    CHECK (status IN ('PENDING', 'SUCCEEDED', 'FAILED',
                                      'CANCELLED')),
    expires_at      timestamptz NOT NULL,
    paid_amount     bigint CHECK (paid_amount >= 0),
    transaction_ref text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz
);

CREATE INDEX payments_expiry_idx ON payments (expires_at)
    WHERE status = 'PENDING';
CREATE INDEX payments_device_idx ON payments (device_id, created_at);
CREATE INDEX payments_owner_idx ON payments (owner_id, created_at);
CREATE INDEX payments_created_idx ON payments (created_at);


-- One row per status change: who or what made it (source webhook, admin
-- or expiry; actor_id for an admin), what the gateway said (detail), and
-- whether the device was told (published_at).
CREATE TABLE payment_events (
    id                  bigserial PRIMARY KEY,
    payment_id          text NOT NULL REFERENCES payments (id)
                        ON DELETE CASCADE,
    charge_id           text NOT NULL,
    status              text NOT NULL,
    source              text NOT NULL
                        CHECK (source IN ('webhook', 'admin', 'expiry')),
    actor_id            bigint,
    detail              jsonb NOT NULL DEFAULT '{}',
    created_at          timestamptz NOT NULL DEFAULT now(),
    publish_claimed_at  timestamptz,
    published_at        timestamptz
);

CREATE INDEX payment_events_unpublished_idx ON payment_events (id)
    WHERE published_at IS NULL;
CREATE INDEX payment_events_payment_idx ON payment_events (payment_id, id);


-- Seed 004's times: "2025-09-24 01:06:07", Thai local time (UTC+07:00, no
-- daylight saving); the seed's reference 1758650767283 is 18:06:07 UTC.
CREATE FUNCTION fleet_payment_time(p timestamptz) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT to_char(p AT TIME ZONE INTERVAL '+07:00', 'YYYY-MM-DD HH24:MI:SS')
$$;


-- seed 004's create response, with the amount as an integer in satang
CREATE FUNCTION fleet_payment_json(p payments) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_object(
        'id', p.id, 'device_id', p.device_id, 'amount', p.amount,
        'payment_method', p.payment_method, 'reference_id', p.reference_id,
        'status', p.status,
        'payment_results', jsonb_build_object(
            'chargeId', p.charge_id, 'redirect', NULL,
            'encodedImage', jsonb_build_object(
                'expiry', fleet_payment_time(p.expires_at),
                'rawData', p.raw_data),
            'actionRequired', 'ENCODED_IMAGE',
            'paymentMethodType', p.payment_method),
        'created_at', fleet_payment_time(p.created_at),
        'updated_at', fleet_payment_time(p.updated_at))
$$;


-- the web view adds what the seed's device view leaves out
CREATE FUNCTION fleet_payment_detail_json(p payments) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT fleet_payment_json(p) || jsonb_build_object(
        'description', p.description, 'paid_amount', p.paid_amount,
        'transaction_ref', p.transaction_ref,
        'expires_at', fleet_iso(p.expires_at),
        'finished_at', fleet_iso(p.finished_at),
        'history', (SELECT coalesce(jsonb_agg(jsonb_build_object(
                               'status', e.status, 'source', e.source,
                               'timestamp', fleet_iso(e.created_at),
                               'published', e.published_at IS NOT NULL)
                           ORDER BY e.id), '[]')
                      FROM payment_events e WHERE e.payment_id = p.id))
$$;


CREATE FUNCTION fleet_payment_missing(p_charge_id text) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT fleet_error(404, 'PAYMENT_NOT_FOUND',
                       format('no payment with chargeId %s', p_charge_id))
$$;


-- ---------------------------------------------------------------------
-- Device-facing HTTP (signed)

-- The module validated the input, made the ids and built the QR payload;
-- the device must be registered (and is online from this request on).
CREATE FUNCTION fleet_payment_create(p_id text, p_charge_id text,
                                     p_reference_id text, p_device_id text,
                                     p_amount bigint, p_description text,
                                     p_raw_data text, p_ttl_s int)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    p payments;
BEGIN
    IF NOT fleet_device_set_online(p_device_id, true) THEN
        RETURN fleet_device_missing(p_device_id);
    END IF;

    INSERT INTO payments (id, charge_id, reference_id, device_id, owner_id,
                          amount, payment_method, description, raw_data,
                          expires_at)
    VALUES (p_id, p_charge_id, p_reference_id, p_device_id,
            (SELECT owner_id FROM devices WHERE id = p_device_id),
            p_amount, 'QR_PROMPT_PAY', p_description, p_raw_data,
            now() + make_interval(secs => p_ttl_s))
    RETURNING * INTO p;

    RETURN jsonb_build_object('status', 200, 'data', fleet_payment_json(p),
                              'message', 'Payment created successfully');
EXCEPTION WHEN unique_violation THEN
    -- random ids of 120 bits and more: this does not happen, but if it
    -- did the device's retry would get fresh ones
    RETURN fleet_error(503, 'SERVICE_UNAVAILABLE',
                       'could not allocate a payment id, retry');
END
$$;


-- seed 004 "Timeout Fallback"
CREATE FUNCTION fleet_payment_status(p_charge_id text) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_status text;
BEGIN
    SELECT status INTO v_status FROM payments WHERE charge_id = p_charge_id;

    IF NOT FOUND THEN
        RETURN fleet_payment_missing(p_charge_id);
    END IF;

    RETURN jsonb_build_object('status', 200,
        'data', jsonb_build_object('chargeId', p_charge_id,
                                   'status', v_status),
        'message', 'Payment status checked successfully');
END
$$;


-- ---------------------------------------------------------------------
-- Status changes

-- After a change: its event row (the bridges publish it) and an envelope
-- on the bus, in the caller's transaction.
CREATE FUNCTION fleet_payment_changed(p payments, p_source text,
                                      p_actor bigint, p_detail jsonb)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO payment_events (payment_id, charge_id, status, source,
                                actor_id, detail)
    VALUES (p.id, p.charge_id, p.status, p_source, p_actor,
            coalesce(p_detail, '{}'));

    PERFORM fleet_notify('payment_status', jsonb_build_object(
        'device_id', p.device_id, 'owner_id', p.owner_id::text,
        'chargeId', p.charge_id, 'status', p.status, 'source', p_source));
END
$$;


-- The one transition rule (SPEC 8): the same status again changes nothing
-- (200, "changed": false, nothing published); PENDING may become any
-- final state; a final state never changes (409 CONFLICT).  The row lock
-- orders a webhook, an admin and the expiry timer racing for one payment.
CREATE FUNCTION fleet_payment_transition(p_charge_id text, p_status text,
                                         p_source text, p_actor bigint,
                                         p_paid_amount bigint,
                                         p_transaction_ref text,
                                         p_detail jsonb)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    p payments;
BEGIN
    SELECT * INTO p FROM payments WHERE charge_id = p_charge_id FOR UPDATE;

    IF NOT FOUND THEN
        RETURN fleet_payment_missing(p_charge_id);
    END IF;

    IF p.status = p_status THEN
        RETURN jsonb_build_object('status', 200,
            'data', jsonb_build_object('chargeId', p.charge_id,
                                       'status', p.status, 'changed', false),
            'message', format('Payment is already %s', p.status));
    END IF;

    IF p.status <> 'PENDING' THEN
        RETURN fleet_error(409, 'CONFLICT',
            format('payment %s is already %s and cannot become %s',
                   p.charge_id, p.status, p_status));
    END IF;

    UPDATE payments
       SET status = p_status,
           paid_amount = coalesce(p_paid_amount, paid_amount),
           transaction_ref = coalesce(p_transaction_ref, transaction_ref),
           updated_at = now(), finished_at = now()
     WHERE id = p.id
    RETURNING * INTO p;

    PERFORM fleet_payment_changed(p, p_source, p_actor, p_detail);

    RETURN jsonb_build_object('status', 200,
        'data', jsonb_build_object('chargeId', p.charge_id,
                                   'status', p.status, 'changed', true),
        'message', 'Payment status updated');
END
$$;


-- POST /api/v1/payment-gateway/webhook, after the module checked the HMAC
-- and the shape; p_body is the gateway's whole message, kept in the event.
CREATE FUNCTION fleet_payment_webhook(p_charge_id text, p_status text,
                                      p_paid_amount bigint,
                                      p_transaction_ref text, p_body jsonb)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_ts timestamptz;
BEGIN
    BEGIN
        v_ts := fleet_parse_ts(p_body -> 'timestamp');
    EXCEPTION WHEN invalid_parameter_value THEN
        RETURN fleet_error(400, 'VALIDATION_ERROR',
                           'timestamp must be epoch milliseconds or an ISO '
                           '8601 time between 2000 and 2100');
    END;

    IF v_ts IS NULL THEN
        RETURN fleet_error(400, 'VALIDATION_ERROR', 'timestamp is required');
    END IF;

    RETURN fleet_payment_transition(p_charge_id, p_status, 'webhook', NULL,
                                    p_paid_amount, p_transaction_ref,
                                    jsonb_build_object('webhook', p_body));
END
$$;


-- POST /api/v1/payment-gateway/payments/{chargeId}/confirm and /cancel.
-- A change is in the admin audit log (005) with its admin:action.
CREATE FUNCTION fleet_payment_admin_set(p_sub text, p_role text,
                                        p_charge_id text, p_status text,
                                        p_reason text)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    a       fleet_actor := fleet_actor(p_sub, p_role);
    r       jsonb;
    p       payments;
BEGIN
    IF a IS NULL THEN
        RETURN fleet_unknown_actor();
    END IF;

    -- the role stored for the user wins over the token's
    IF a.role <> 'admin' THEN
        RETURN fleet_not_admin();
    END IF;

    r := fleet_payment_transition(p_charge_id, p_status, 'admin', a.user_id,
                                  NULL, NULL,
                                  jsonb_strip_nulls(jsonb_build_object(
                                      'reason', p_reason)));

    IF r ? 'error' THEN
        RETURN r;
    END IF;

    SELECT * INTO p FROM payments WHERE charge_id = p_charge_id;

    IF (r -> 'data' ->> 'changed')::boolean THEN
        PERFORM fleet_admin_action(a.user_id,
            CASE p_status WHEN 'SUCCEEDED' THEN 'payment_confirm'
                          ELSE 'payment_cancel' END,
            p.charge_id,
            jsonb_strip_nulls(jsonb_build_object(
                'chargeId', p.charge_id, 'device_id', p.device_id,
                'amount', p.amount, 'status', p.status,
                'reason', p_reason)));
    END IF;

    RETURN jsonb_build_object('status', 200,
        'data', fleet_payment_detail_json(p)
                || jsonb_build_object('changed', r -> 'data' -> 'changed'),
        'message', CASE WHEN NOT (r -> 'data' ->> 'changed')::boolean
                        THEN r ->> 'message'
                        WHEN p_status = 'SUCCEEDED'
                        THEN 'Payment confirmed'
                        ELSE 'Payment cancelled' END);
END
$$;


-- ---------------------------------------------------------------------
-- Web (bearer token): a user sees the payments made while they owned the
-- device; admins and services see all.  Another user's payment answers
-- 404 exactly like a missing one.

CREATE FUNCTION fleet_payment_visible(a fleet_actor, p payments)
RETURNS boolean LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(a.role IN ('admin', 'service')
                    OR p.owner_id = a.user_id, false)
$$;


CREATE FUNCTION fleet_payment_get(p_sub text, p_role text, p_charge_id text)
RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    a   fleet_actor := fleet_actor(p_sub, p_role);
    p   payments;
BEGIN
    IF a IS NULL THEN
        RETURN fleet_unknown_actor();
    END IF;

    SELECT * INTO p FROM payments WHERE charge_id = p_charge_id;

    IF NOT FOUND OR NOT fleet_payment_visible(a, p) THEN
        RETURN fleet_payment_missing(p_charge_id);
    END IF;

    RETURN jsonb_build_object('status', 200,
                              'data', fleet_payment_detail_json(p),
                              'message', 'Payment retrieved successfully');
END
$$;


CREATE FUNCTION fleet_payments_list(p_sub text, p_role text,
                                    p_device_id text, p_status text,
                                    p_limit int, p_offset int)
RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    a       fleet_actor := fleet_actor(p_sub, p_role);
    items   jsonb;
    total   bigint;
BEGIN
    IF a IS NULL THEN
        RETURN fleet_unknown_actor();
    END IF;

    SELECT count(*) INTO total FROM payments p
     WHERE fleet_payment_visible(a, p)
       AND (p_device_id IS NULL OR p.device_id = p_device_id)
       AND (p_status IS NULL OR p.status = p_status);

    SELECT coalesce(jsonb_agg(fleet_payment_json(p)
                              || jsonb_build_object('description',
                                                    p.description)
                              ORDER BY p.created_at DESC, p.id), '[]')
      INTO items
      FROM (SELECT * FROM payments p
             WHERE fleet_payment_visible(a, p)
               AND (p_device_id IS NULL OR p.device_id = p_device_id)
               AND (p_status IS NULL OR p.status = p_status)
             ORDER BY p.created_at DESC, p.id
             LIMIT p_limit OFFSET p_offset) p;

    RETURN jsonb_build_object('status', 200,
        'data', jsonb_build_object('items', items, 'total', total,
                                   'limit', p_limit, 'offset', p_offset),
        'message', 'Payments retrieved successfully');
END
$$;


-- ---------------------------------------------------------------------
-- the bridge's side

-- Status changes to publish now, oldest first; a claim holds for 10 s so
-- two bridges rarely publish the same one (a device may see a QoS-1
-- duplicate anyway: command_id is the key).  The message is seed 004's
-- "MQTT Payment Status" in its order, compact; the bridge appends the
-- sha256 member.
CREATE FUNCTION fleet_payment_events_claim(p_limit int)
RETURNS TABLE (event_id text, topic text, message text)
LANGUAGE sql AS $$
    UPDATE payment_events e SET publish_claimed_at = now()
      FROM (SELECT id FROM payment_events
             WHERE published_at IS NULL
               AND (publish_claimed_at IS NULL
                    OR publish_claimed_at < now() - interval '10 seconds')
             ORDER BY id
             LIMIT p_limit
               FOR UPDATE SKIP LOCKED) todo
     WHERE e.id = todo.id
    RETURNING e.id::text, 'device/' || e.charge_id || '/payment-status',
              format('{"command_id":%s,"command":"PAYMENT","payload":'
                     '{"chargeId":%s,"status":%s},"timestamp":%s}',
                     to_json('cmd-payment-' || e.id)::text,
                     to_json(e.charge_id)::text, to_json(e.status)::text,
                     fleet_epoch_ms(e.created_at))
$$;


-- the broker's PUBACK
CREATE FUNCTION fleet_payment_event_published(p_id text) RETURNS void
LANGUAGE sql AS $$
    UPDATE payment_events SET published_at = now()
     WHERE id = p_id::bigint AND published_at IS NULL
$$;


CREATE FUNCTION fleet_payment_event_publish_failed(p_id text) RETURNS void
LANGUAGE sql AS $$
    UPDATE payment_events SET publish_claimed_at = NULL
     WHERE id = p_id::bigint AND published_at IS NULL
$$;


-- The bridge's expiry timer, idempotent: a PENDING payment past its
-- expiry is CANCELLED once, however many bridges run it.  A payment locked
-- by a webhook at that moment is skipped and looked at again next time.
CREATE FUNCTION fleet_payments_expire() RETURNS int
LANGUAGE plpgsql AS $$
DECLARE
    p   payments;
    n   int := 0;
BEGIN
    FOR p IN
        UPDATE payments
           SET status = 'CANCELLED', updated_at = now(), finished_at = now()
         WHERE id IN (SELECT id FROM payments
                       WHERE status = 'PENDING' AND expires_at < now()
                       ORDER BY expires_at
                       LIMIT 1000
                         FOR UPDATE SKIP LOCKED)
           AND status = 'PENDING'
        RETURNING *
    LOOP
        PERFORM fleet_payment_changed(p, 'expiry', NULL,
            jsonb_build_object('expires_at', fleet_iso(p.expires_at)));
        n := n + 1;
    END LOOP;

    RETURN n;
END
$$;
