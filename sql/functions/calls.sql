-- Calls: the minimum gap and the lease, starting a call and ending one (each one
-- statement, every rule checked in the same transaction), keeping a call alive and
-- expiring lapsed ones.

-- The minimum gap between two calls to one prospect. The server sets
-- app.min_call_interval_seconds on its connections; psql gets the seed's 5 minutes.
CREATE OR REPLACE FUNCTION min_call_interval() RETURNS interval
LANGUAGE sql STABLE AS $$
    SELECT make_interval(secs => coalesce(
        nullif(current_setting('app.min_call_interval_seconds', true), '')::int, 300))
$$;

-- How long an active call lives without a heartbeat. The server sets
-- app.active_call_timeout_seconds; the seed's stuck-call clean-up used one hour.
CREATE OR REPLACE FUNCTION active_call_timeout() RETURNS interval
LANGUAGE sql STABLE AS $$
    SELECT make_interval(secs => coalesce(
        nullif(current_setting('app.active_call_timeout_seconds', true), '')::int, 3600))
$$;

-- Serialize, until commit, the transactions starting calls to one dialled number (the
-- same number may be dialled for several prospects), so the cap per number in 24 hours
-- counts every call before it; p_wait false tries without waiting, as SKIP LOCKED does.
-- Two keys: the first keeps these locks apart from the application's other advisory locks.
CREATE OR REPLACE FUNCTION lock_number(p_phone text, p_wait boolean) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    IF p_wait THEN
        PERFORM pg_advisory_xact_lock(7243, hashtext(p_phone));
        RETURN true;
    END IF;
    RETURN pg_try_advisory_xact_lock(7243, hashtext(p_phone));
END
$$;

-- Record the start of a call that every rule has allowed, on a prospect row the caller
-- holds locked: the call log, the active call (the unique prospect_id turns a race into
-- ALREADY_IN_CALL), due callbacks marked taken, and the event for the wallboards.
CREATE OR REPLACE FUNCTION record_call_start(
    p_prospect_id uuid, p_caller_id uuid, p_phone_number text, p_from_number text,
    OUT active_call_id uuid, OUT call_log_id uuid, OUT started_at timestamptz,
    OUT active_call jsonb)
LANGUAGE plpgsql AS $$
DECLARE
    v_active active_calls%ROWTYPE;
BEGIN
    INSERT INTO call_logs (prospect_id, caller_id, phone_number, from_number)
    VALUES (p_prospect_id, p_caller_id, p_phone_number, p_from_number)
    RETURNING call_logs.id, call_logs.started_at INTO call_log_id, started_at;
    INSERT INTO active_calls (prospect_id, caller_id, call_log_id, phone_number, started_at,
                              lease_expires_at)
    VALUES (p_prospect_id, p_caller_id, call_log_id, p_phone_number, started_at,
            started_at + active_call_timeout())
    ON CONFLICT (prospect_id) DO NOTHING
    RETURNING * INTO v_active;
    IF NOT FOUND THEN
        PERFORM raise_domain_error('ALREADY_IN_CALL', 'Prospect is currently on another call');
    END IF;
    UPDATE callbacks SET taken_at = now(), call_log_id = record_call_start.call_log_id
    WHERE prospect_id = p_prospect_id AND taken_at IS NULL AND due_at <= now() + interval '1 hour';
    active_call_id := v_active.id;
    active_call := active_call_json(v_active);
    PERFORM publish_call_event('STARTED', active_call, NULL);
END
$$;

-- Check and start a call in one transaction. Locking the prospect row serializes every
-- start and end on that prospect, and locking the number every start on that number, so
-- two racing agents can never both pass the check or a cap; the UNIQUE constraint on
-- active_calls.prospect_id stands behind them.
CREATE OR REPLACE FUNCTION start_call(
    p_prospect_id uuid, p_caller_id uuid, p_phone_number text, p_from_number text,
    OUT active_call_id uuid, OUT call_log_id uuid, OUT started_at timestamptz,
    OUT phone_number text, OUT active_call jsonb)
LANGUAGE plpgsql AS $$
DECLARE
    v_refusal record;
BEGIN
    PERFORM act_as(p_caller_id);
    SELECT p.phone INTO phone_number FROM prospects p WHERE p.id = p_prospect_id FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        PERFORM raise_domain_error('NOT_FOUND', 'Prospect not found');
    END IF;
    phone_number := coalesce(p_phone_number, phone_number);
    PERFORM lock_number(phone_number, true);
    SELECT * INTO v_refusal FROM call_refusal(p_prospect_id, p_caller_id, phone_number, false);
    IF v_refusal.code IS NOT NULL THEN
        PERFORM raise_domain_error(v_refusal.code, v_refusal.reason, jsonb_strip_nulls(jsonb_build_object(
            'lastCallTime', v_refusal.last_call_time,
            'lastCallerId', v_refusal.last_caller_id,
            'until', v_refusal.until)));
    END IF;
    SELECT * INTO active_call_id, call_log_id, started_at, active_call
    FROM record_call_start(p_prospect_id, p_caller_id, phone_number, p_from_number);
END
$$;

-- Record the end of an active call whose prospect row the caller has locked: clear the
-- lock, write the outcome, set last_call, apply what the outcome means (status, recycle
-- delay, leaving the queue, Do-Not-Call, a callback) and the attempt caps, and publish
-- the event.
CREATE OR REPLACE FUNCTION record_call_end(
    p_active active_calls, p_outcome text, p_duration int, p_notes text, p_recording_url text,
    p_event text, p_callback_at timestamptz DEFAULT NULL)
RETURNS call_logs
LANGUAGE plpgsql AS $$
DECLARE
    v_call call_logs%ROWTYPE;
    v_disposition dispositions%ROWTYPE;
    v_zones text[];
    v_caps record;
BEGIN
    SELECT * INTO v_disposition FROM dispositions WHERE name = p_outcome;
    DELETE FROM active_calls WHERE id = p_active.id;
    UPDATE call_logs
       SET ended_at = now(),
           outcome = p_outcome,
           duration = coalesce(p_duration, greatest(0, extract(epoch FROM now() - call_logs.started_at)::int)),
           notes = coalesce(p_notes, call_logs.notes),
           recording_url = coalesce(p_recording_url, call_logs.recording_url)
     WHERE id = p_active.call_log_id
    RETURNING * INTO v_call;
    -- A final outcome closes the prospect for good, whatever closed it before.
    UPDATE prospects
       SET last_call = greatest(last_call, v_call.started_at),
           status = coalesce(v_disposition.sets_status, status),
           recycle_until = CASE WHEN v_disposition.recycle_delay IS NULL THEN recycle_until
                                ELSE now() + v_disposition.recycle_delay END,
           final_at = CASE WHEN v_disposition.is_final THEN coalesce(final_at, now()) ELSE final_at END,
           closed_by = CASE WHEN v_disposition.is_final THEN 'outcome' ELSE closed_by END
     WHERE id = p_active.prospect_id
    RETURNING prospect_time_zones(queue_zones) INTO v_zones;
    -- A prospect that used up its attempts leaves the queue, and one that used up today's
    -- waits for the callee's next local day: nextLead would only pick and refuse them again.
    SELECT * INTO v_caps FROM attempt_caps(p_active.prospect_id, v_zones, now());
    IF v_caps.total_reached OR v_caps.day_reached THEN
        PERFORM hold_at_attempt_cap(p_active.prospect_id, v_caps.total_reached,
                                    CASE WHEN v_caps.day_reached THEN v_caps.day_ends END);
    END IF;
    IF v_disposition.adds_to_do_not_call THEN
        INSERT INTO do_not_call (phone, source, reason, added_by)
        VALUES (v_call.phone_number, 'disposition', 'Outcome: ' || p_outcome, acting_user_id())
        ON CONFLICT (phone) WHERE removed_at IS NULL DO NOTHING;
    END IF;
    IF v_disposition.schedules_callback OR p_callback_at IS NOT NULL THEN
        INSERT INTO callbacks (prospect_id, due_at, agent_id, created_by)
        VALUES (p_active.prospect_id,
                callable_time(v_zones, coalesce(p_callback_at, now() + interval '1 day')),
                p_active.caller_id, acting_user_id());
    END IF;
    PERFORM publish_call_event(p_event, active_call_json(p_active), p_outcome);
    RETURN v_call;
END
$$;

-- End a call in one transaction: every check, then record_call_end(). Agents end only
-- their own calls.
CREATE OR REPLACE FUNCTION end_call(
    p_prospect_id uuid, p_call_log_id uuid, p_caller_id uuid, p_outcome text,
    p_duration int, p_notes text, p_recording_url text, p_callback_at timestamptz DEFAULT NULL)
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
    IF p_callback_at IS NOT NULL AND p_callback_at <= now() THEN
        PERFORM raise_domain_error('BAD_USER_INPUT', 'callbackAt must be in the future',
            jsonb_build_object('field', 'callbackAt'));
    END IF;

    SELECT * INTO v_active FROM active_calls WHERE active_calls.call_log_id = p_call_log_id;
    IF NOT FOUND THEN
        PERFORM raise_domain_error('CALL_NOT_ACTIVE', 'Call is not active');
    END IF;
    IF v_active.caller_id <> p_caller_id AND v_role = 'agent' THEN
        PERFORM raise_domain_error('FORBIDDEN', 'Agents can end only their own calls');
    END IF;

    RETURN NEXT record_call_end(v_active, p_outcome, p_duration, p_notes, p_recording_url, 'ENDED',
                                p_callback_at);
END
$$;

-- Extend a call's lease. Agents heartbeat only their own calls.
CREATE OR REPLACE FUNCTION heartbeat_call(p_call_log_id uuid, p_caller_id uuid)
RETURNS SETOF active_calls
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

-- Whether an active call is due to expire: its lease lapsed or, given p_started_before,
-- it started before that.
CREATE OR REPLACE FUNCTION active_call_expired(p_call active_calls, p_started_before timestamptz)
RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN p_started_before IS NULL THEN p_call.lease_expires_at < now()
                ELSE p_call.started_at < p_started_before END
$$;

-- End, with the Expired outcome, active calls whose lease lapsed (or, given
-- p_started_before, that started before it). Safe on every replica at once: each prospect
-- is taken with SKIP LOCKED in the same order end_call locks (prospect, then call), and
-- the call is checked again under the lock, so each call expires exactly once.
CREATE OR REPLACE FUNCTION expire_active_calls(
    p_started_before timestamptz DEFAULT NULL, p_limit int DEFAULT 500)
RETURNS int
LANGUAGE plpgsql AS $$
DECLARE
    v_candidate record;
    v_active active_calls%ROWTYPE;
    v_count int := 0;
BEGIN
    FOR v_candidate IN
        SELECT a.id, a.prospect_id FROM active_calls a
        WHERE active_call_expired(a, p_started_before)
        ORDER BY a.lease_expires_at
        LIMIT p_limit
    LOOP
        PERFORM 1 FROM prospects WHERE id = v_candidate.prospect_id FOR NO KEY UPDATE SKIP LOCKED;
        CONTINUE WHEN NOT FOUND;
        SELECT * INTO v_active FROM active_calls a
        WHERE a.id = v_candidate.id AND active_call_expired(a, p_started_before);
        CONTINUE WHEN NOT FOUND;
        PERFORM record_call_end(v_active, 'Expired', NULL, NULL, NULL, 'EXPIRED');
        v_count := v_count + 1;
    END LOOP;
    RETURN v_count;
END
$$;
