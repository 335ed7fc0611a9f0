-- Add commit-ordered call events, active-call leases and the expiry of stale calls.

-- How long an active call lives without a heartbeat. The server sets
-- app.active_call_timeout_seconds; the seed's stuck-call clean-up used one hour.
CREATE FUNCTION active_call_timeout() RETURNS interval
LANGUAGE sql STABLE AS $$
    SELECT make_interval(secs => coalesce(
        nullif(current_setting('app.active_call_timeout_seconds', true), '')::int, 3600))
$$;

ALTER TABLE active_calls ADD COLUMN lease_expires_at timestamptz;
UPDATE active_calls SET lease_expires_at = started_at + active_call_timeout();
ALTER TABLE active_calls ALTER COLUMN lease_expires_at SET NOT NULL;
ALTER TABLE active_calls ALTER COLUMN lease_expires_at SET DEFAULT now() + active_call_timeout();
CREATE INDEX active_calls_lease_expires_at_idx ON active_calls (lease_expires_at);

-- The outcome written when a call's lease lapses; it leaves the prospect's status alone.
INSERT INTO dispositions (name, sets_status, position) VALUES ('Expired', NULL, 900);

-- One row whose counter numbers every call event. Taking its row lock as the last step of
-- a transaction makes numbers follow commit order without gaps, so a subscriber that sees
-- 41 then 43 knows it missed 42.
CREATE TABLE call_event_sequence (
    singleton  boolean PRIMARY KEY DEFAULT true CONSTRAINT call_event_sequence_singleton CHECK (singleton),
    seq        bigint NOT NULL
);
INSERT INTO call_event_sequence (seq) VALUES (0);

-- An active call as events and snapshots carry it: with the names a wallboard shows.
CREATE FUNCTION active_call_json(p_call active_calls) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'id', p_call.id, 'prospect_id', p_call.prospect_id, 'prospect_name', p.name,
        'caller_id', p_call.caller_id, 'caller_name', coalesce(nullif(u.name, ''), u.email),
        'call_log_id', p_call.call_log_id, 'phone_number', p_call.phone_number,
        'started_at', p_call.started_at, 'lease_expires_at', p_call.lease_expires_at)
    FROM prospects p, users u
    WHERE p.id = p_call.prospect_id AND u.id = p_call.caller_id
$$;

-- Number a call event and NOTIFY it; delivered only if the transaction commits.
-- Call it last in the transaction: it holds the counter's row lock until commit.
CREATE FUNCTION publish_call_event(p_type text, p_call active_calls, p_outcome text)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_seq bigint;
BEGIN
    UPDATE call_event_sequence SET seq = seq + 1 RETURNING seq INTO v_seq;
    PERFORM pg_notify('active_calls', jsonb_build_object(
        'seq', v_seq, 'type', p_type, 'at', clock_timestamp(),
        'active_call', active_call_json(p_call), 'outcome', p_outcome)::text);
    RETURN v_seq;
END
$$;

-- Every active call and the event number it is current as of, read in one snapshot.
CREATE FUNCTION active_calls_snapshot(OUT seq bigint, OUT calls jsonb)
LANGUAGE sql STABLE AS $$
    SELECT (SELECT s.seq FROM call_event_sequence s),
           coalesce((SELECT jsonb_agg(active_call_json(a) ORDER BY a.started_at, a.id)
                     FROM active_calls a), '[]'::jsonb)
$$;

-- start_call() now also returns the active call as events carry it.
DROP FUNCTION start_call(uuid, uuid, text, text);
CREATE FUNCTION start_call(
    p_prospect_id uuid, p_caller_id uuid, p_phone_number text, p_from_number text,
    OUT active_call_id uuid, OUT call_log_id uuid, OUT started_at timestamptz,
    OUT phone_number text, OUT active_call jsonb)
LANGUAGE plpgsql AS $$
DECLARE
    v_phone text;
    v_refusal record;
    v_active active_calls%ROWTYPE;
BEGIN
    PERFORM act_as(p_caller_id);
    SELECT p.phone INTO v_phone FROM prospects p WHERE p.id = p_prospect_id FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        PERFORM raise_domain_error('NOT_FOUND', 'Prospect not found');
    END IF;

    SELECT * INTO v_refusal FROM call_refusal(p_prospect_id, p_caller_id);
    IF v_refusal.code IS NOT NULL THEN
        PERFORM raise_domain_error(v_refusal.code, v_refusal.reason, jsonb_strip_nulls(jsonb_build_object(
            'lastCallTime', v_refusal.last_call_time,
            'lastCallerId', v_refusal.last_caller_id,
            'assignedAgentId', v_refusal.assigned_agent_id)));
    END IF;

    phone_number := coalesce(p_phone_number, v_phone);
    INSERT INTO call_logs (prospect_id, caller_id, phone_number, from_number)
    VALUES (p_prospect_id, p_caller_id, phone_number, p_from_number)
    RETURNING call_logs.id, call_logs.started_at INTO call_log_id, started_at;

    BEGIN
        INSERT INTO active_calls (prospect_id, caller_id, call_log_id, phone_number, started_at,
                                  lease_expires_at)
        VALUES (p_prospect_id, p_caller_id, call_log_id, phone_number, started_at,
                started_at + active_call_timeout())
        RETURNING * INTO v_active;
    EXCEPTION WHEN unique_violation THEN
        PERFORM raise_domain_error('ALREADY_IN_CALL', 'Prospect is currently on another call');
    END;
    active_call_id := v_active.id;
    active_call := active_call_json(v_active);
    PERFORM publish_call_event('STARTED', v_active, NULL);
END
$$;

-- Finish an active call whose prospect row the caller has locked: clear the lock, write
-- the outcome, set last_call, apply the disposition's status, publish the event.
CREATE FUNCTION finish_call(
    p_active active_calls, p_outcome text, p_duration int, p_notes text, p_recording_url text,
    p_event text)
RETURNS call_logs
LANGUAGE plpgsql AS $$
DECLARE
    v_call call_logs%ROWTYPE;
BEGIN
    DELETE FROM active_calls WHERE id = p_active.id;
    UPDATE call_logs
       SET ended_at = now(),
           outcome = p_outcome,
           duration = coalesce(p_duration, greatest(0, extract(epoch FROM now() - call_logs.started_at)::int)),
           notes = coalesce(p_notes, call_logs.notes),
           recording_url = coalesce(p_recording_url, call_logs.recording_url)
     WHERE id = p_active.call_log_id
    RETURNING * INTO v_call;
    UPDATE prospects
       SET last_call = greatest(last_call, v_call.started_at),
           status = coalesce((SELECT d.sets_status FROM dispositions d WHERE d.name = p_outcome), status)
     WHERE id = p_active.prospect_id;
    PERFORM publish_call_event(p_event, p_active, p_outcome);
    RETURN v_call;
END
$$;

CREATE OR REPLACE FUNCTION end_call(
    p_prospect_id uuid, p_call_log_id uuid, p_caller_id uuid, p_outcome text,
    p_duration int, p_notes text, p_recording_url text)
RETURNS SETOF call_logs
LANGUAGE plpgsql AS $$
DECLARE
    v_role text;
    v_active active_calls%ROWTYPE;
BEGIN
    v_role := act_as(p_caller_id);
    PERFORM 1 FROM prospects WHERE id = p_prospect_id FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        PERFORM raise_domain_error('NOT_FOUND', 'Prospect not found');
    END IF;
    IF NOT EXISTS (SELECT 1 FROM call_logs WHERE id = p_call_log_id AND prospect_id = p_prospect_id) THEN
        PERFORM raise_domain_error('NOT_FOUND', 'Call not found for this prospect');
    END IF;
    IF NOT EXISTS (SELECT 1 FROM dispositions d WHERE d.name = p_outcome) THEN
        PERFORM raise_domain_error('BAD_USER_INPUT', 'Unknown outcome: ' || coalesce(p_outcome, 'null'),
            jsonb_build_object('field', 'outcome'));
    END IF;
    IF p_duration IS NOT NULL AND p_duration NOT BETWEEN 0 AND 86400 THEN
        PERFORM raise_domain_error('BAD_USER_INPUT', 'Duration must be between 0 and 86400 seconds',
            jsonb_build_object('field', 'duration'));
    END IF;

    SELECT * INTO v_active FROM active_calls WHERE active_calls.call_log_id = p_call_log_id;
    IF NOT FOUND THEN
        PERFORM raise_domain_error('CALL_NOT_ACTIVE', 'Call is not active');
    END IF;
    IF v_active.caller_id <> p_caller_id AND v_role = 'agent' THEN
        PERFORM raise_domain_error('FORBIDDEN', 'Agents can end only their own calls');
    END IF;

    RETURN NEXT finish_call(v_active, p_outcome, p_duration, p_notes, p_recording_url, 'ENDED');
END
$$;

-- Extend a call's lease. Agents heartbeat only their own calls.
CREATE FUNCTION heartbeat_call(p_call_log_id uuid, p_caller_id uuid) RETURNS SETOF active_calls
LANGUAGE plpgsql AS $$
DECLARE
    v_role text;
    v_active active_calls%ROWTYPE;
BEGIN
    v_role := act_as(p_caller_id);
    UPDATE active_calls SET lease_expires_at = now() + active_call_timeout()
     WHERE call_log_id = p_call_log_id AND (caller_id = p_caller_id OR v_role <> 'agent')
    RETURNING * INTO v_active;
    IF NOT FOUND THEN
        IF EXISTS (SELECT 1 FROM active_calls WHERE call_log_id = p_call_log_id) THEN
            PERFORM raise_domain_error('FORBIDDEN', 'Agents can keep alive only their own calls');
        END IF;
        PERFORM raise_domain_error('CALL_NOT_ACTIVE', 'Call is not active');
    END IF;
    RETURN NEXT v_active;
END
$$;

-- End, with the Expired outcome, active calls whose lease lapsed (or, given
-- p_started_before, that started before it). Safe on every replica at once: each prospect
-- is taken with SKIP LOCKED in the same order end_call locks (prospect, then call), and
-- the call is checked again under the lock, so each call expires exactly once.
CREATE FUNCTION expire_active_calls(p_started_before timestamptz DEFAULT NULL, p_limit int DEFAULT 500)
RETURNS int
LANGUAGE plpgsql AS $$
DECLARE
    v_candidate record;
    v_active active_calls%ROWTYPE;
    v_count int := 0;
BEGIN
    FOR v_candidate IN
        SELECT a.id, a.prospect_id FROM active_calls a
        WHERE CASE WHEN p_started_before IS NULL THEN a.lease_expires_at < now()
                   ELSE a.started_at < p_started_before END
        ORDER BY a.lease_expires_at
        LIMIT p_limit
    LOOP
        PERFORM 1 FROM prospects WHERE id = v_candidate.prospect_id FOR NO KEY UPDATE SKIP LOCKED;
        CONTINUE WHEN NOT FOUND;
        SELECT * INTO v_active FROM active_calls a
        WHERE a.id = v_candidate.id
          AND CASE WHEN p_started_before IS NULL THEN a.lease_expires_at < now()
                   ELSE a.started_at < p_started_before END;
        CONTINUE WHEN NOT FOUND;
        PERFORM finish_call(v_active, 'Expired', NULL, NULL, NULL, 'EXPIRED');
        v_count := v_count + 1;
    END LOOP;
    RETURN v_count;
END
$$;

-- Deactivating a user ends their live connections on every replica.
CREATE FUNCTION notify_user_deactivated() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('sessions_revoked', jsonb_build_object('user_id', NEW.id)::text);
    RETURN NEW;
END
$$;
CREATE TRIGGER users_notify_deactivated AFTER UPDATE OF active ON users
    FOR EACH ROW WHEN (OLD.active AND NOT NEW.active)
    EXECUTE FUNCTION notify_user_deactivated();

-- Revoke a token and tell every replica to close connections made with it.
CREATE FUNCTION revoke_session(p_token_hash bytea) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE sessions SET revoked_at = now() WHERE token_hash = p_token_hash AND revoked_at IS NULL;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    PERFORM pg_notify('sessions_revoked',
        jsonb_build_object('token_hash', encode(p_token_hash, 'hex'))::text);
    RETURN true;
END
$$;
