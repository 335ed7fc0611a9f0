-- Create the functions that check and write calls and assignments atomically.

-- Refusals carry SQLSTATE CF000, the client-facing code in HINT and extra facts as JSON
-- in DETAIL; the server turns them into GraphQL errors, and psql users see them as-is.
CREATE FUNCTION raise_domain_error(p_code text, p_message text, p_detail jsonb DEFAULT '{}')
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = 'CF000', MESSAGE = p_message, HINT = p_code,
        DETAIL = p_detail::text;
END
$$;

CREATE FUNCTION describe_interval(p_interval interval) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN s % 60 = 0 AND s / 60 = 1 THEN '1 minute'
        WHEN s % 60 = 0 THEN (s / 60) || ' minutes'
        WHEN s = 1 THEN '1 second'
        ELSE s || ' seconds'
    END
    FROM (SELECT extract(epoch FROM p_interval)::bigint AS s) t
$$;

-- Why this caller may not call this prospect now, or a NULL code when they may.
-- Managers and admins may call a prospect assigned to someone else; nobody may
-- break the one-active-call rule or the minimum gap.
CREATE FUNCTION call_refusal(
    p_prospect_id uuid, p_caller_id uuid,
    OUT code text, OUT reason text, OUT last_call_time timestamptz, OUT last_caller_id uuid,
    OUT assigned_agent_id uuid)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_caller_role text;
BEGIN
    SELECT c.started_at, c.caller_id INTO last_call_time, last_caller_id
    FROM call_logs c
    WHERE c.prospect_id = p_prospect_id
    ORDER BY c.started_at DESC
    LIMIT 1;

    IF NOT EXISTS (SELECT 1 FROM prospects WHERE id = p_prospect_id) THEN
        code := 'NOT_FOUND';
        reason := 'Prospect not found';
        RETURN;
    END IF;

    IF EXISTS (SELECT 1 FROM active_calls a WHERE a.prospect_id = p_prospect_id) THEN
        code := 'ALREADY_IN_CALL';
        reason := 'Prospect is currently on another call';
        RETURN;
    END IF;

    IF last_call_time > now() - min_call_interval() THEN
        code := 'RECENTLY_CALLED';
        reason := 'Prospect was called recently (within ' || describe_interval(min_call_interval()) || ')';
        RETURN;
    END IF;

    SELECT la.agent_id INTO assigned_agent_id
    FROM lead_assignments la
    WHERE la.prospect_id = p_prospect_id AND la.active
      AND (la.expires_at IS NULL OR la.expires_at > now());
    SELECT u.role INTO v_caller_role FROM users u WHERE u.id = p_caller_id;
    IF assigned_agent_id IS DISTINCT FROM p_caller_id AND assigned_agent_id IS NOT NULL
       AND coalesce(v_caller_role, 'agent') = 'agent' THEN
        code := 'ASSIGNED_TO_OTHER_AGENT';
        reason := 'Prospect is assigned to another agent';
        RETURN;
    END IF;
END
$$;

-- The seed's check, with the seed's JSON shape.
CREATE FUNCTION can_call_prospect(p_prospect_id uuid, p_caller_id uuid) RETURNS json
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN r.code IS NULL THEN json_build_object('allowed', true)
           ELSE json_build_object('allowed', false, 'reason', r.reason,
                                  'last_call_time', r.last_call_time,
                                  'last_caller_id', r.last_caller_id)
           END
    FROM call_refusal(p_prospect_id, p_caller_id) r
$$;

-- The acting user must exist and be active; returns their role.
CREATE FUNCTION act_as(p_user_id uuid) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_role text;
BEGIN
    SELECT role INTO v_role FROM users WHERE id = p_user_id AND active;
    IF NOT FOUND THEN
        PERFORM raise_domain_error('FORBIDDEN', 'User is unknown or deactivated');
    END IF;
    PERFORM set_config('app.user_id', p_user_id::text, true);
    RETURN v_role;
END
$$;

-- Check and start a call in one transaction. Locking the prospect row serializes every
-- start and end on that prospect, so two racing agents can never both pass the check;
-- the UNIQUE constraint on active_calls.prospect_id stands behind it.
CREATE FUNCTION start_call(
    p_prospect_id uuid, p_caller_id uuid, p_phone_number text, p_from_number text,
    OUT active_call_id uuid, OUT call_log_id uuid, OUT started_at timestamptz,
    OUT phone_number text)
LANGUAGE plpgsql AS $$
DECLARE
    v_phone text;
    v_refusal record;
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
        INSERT INTO active_calls (prospect_id, caller_id, call_log_id, phone_number, started_at)
        VALUES (p_prospect_id, p_caller_id, call_log_id, phone_number, started_at)
        RETURNING active_calls.id INTO active_call_id;
    EXCEPTION WHEN unique_violation THEN
        PERFORM raise_domain_error('ALREADY_IN_CALL', 'Prospect is currently on another call');
    END;

    PERFORM pg_notify('active_calls', json_build_object(
        'event', 'STARTED', 'active_call_id', active_call_id, 'call_log_id', call_log_id,
        'prospect_id', p_prospect_id, 'caller_id', p_caller_id)::text);
END
$$;

-- End a call in one transaction: clear the lock, write the outcome, set last_call and
-- apply the disposition's status. Agents end only their own calls.
CREATE FUNCTION end_call(
    p_prospect_id uuid, p_call_log_id uuid, p_caller_id uuid, p_outcome text,
    p_duration int, p_notes text, p_recording_url text)
RETURNS SETOF call_logs
LANGUAGE plpgsql AS $$
DECLARE
    v_role text;
    v_call call_logs%ROWTYPE;
    v_active active_calls%ROWTYPE;
    v_sets_status text;
BEGIN
    v_role := act_as(p_caller_id);
    PERFORM 1 FROM prospects WHERE id = p_prospect_id FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        PERFORM raise_domain_error('NOT_FOUND', 'Prospect not found');
    END IF;
    SELECT * INTO v_call FROM call_logs WHERE id = p_call_log_id AND prospect_id = p_prospect_id;
    IF NOT FOUND THEN
        PERFORM raise_domain_error('NOT_FOUND', 'Call not found for this prospect');
    END IF;
    SELECT d.sets_status INTO v_sets_status FROM dispositions d WHERE d.name = p_outcome;
    IF NOT FOUND THEN
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

    DELETE FROM active_calls WHERE id = v_active.id;
    UPDATE call_logs
       SET ended_at = now(),
           outcome = p_outcome,
           duration = coalesce(p_duration, greatest(0, extract(epoch FROM now() - call_logs.started_at)::int)),
           notes = p_notes,
           recording_url = p_recording_url
     WHERE id = p_call_log_id
    RETURNING * INTO v_call;
    UPDATE prospects
       SET last_call = greatest(last_call, v_call.started_at),
           status = coalesce(v_sets_status, status)
     WHERE id = p_prospect_id;

    PERFORM pg_notify('active_calls', json_build_object(
        'event', 'ENDED', 'active_call_id', v_active.id, 'call_log_id', p_call_log_id,
        'prospect_id', p_prospect_id, 'caller_id', v_active.caller_id, 'outcome', p_outcome)::text);
    RETURN NEXT v_call;
END
$$;

-- Assign a lead to an agent, replacing any active assignment, in one transaction.
CREATE FUNCTION assign_lead(p_prospect_id uuid, p_agent_id uuid, p_expires_at timestamptz, p_assigned_by uuid)
RETURNS SETOF lead_assignments
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM act_as(p_assigned_by);
    PERFORM 1 FROM prospects WHERE id = p_prospect_id FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        PERFORM raise_domain_error('NOT_FOUND', 'Prospect not found');
    END IF;
    IF NOT EXISTS (SELECT 1 FROM users WHERE id = p_agent_id AND active) THEN
        PERFORM raise_domain_error('NOT_FOUND', 'Agent not found', jsonb_build_object('field', 'agentId'));
    END IF;
    IF p_expires_at IS NOT NULL AND p_expires_at <= now() THEN
        PERFORM raise_domain_error('BAD_USER_INPUT', 'expiresAt must be in the future',
            jsonb_build_object('field', 'expiresAt'));
    END IF;
    UPDATE lead_assignments SET active = false WHERE prospect_id = p_prospect_id AND active;
    RETURN QUERY
    INSERT INTO lead_assignments (prospect_id, agent_id, assigned_by, expires_at)
    VALUES (p_prospect_id, p_agent_id, p_assigned_by, p_expires_at)
    RETURNING *;
END
$$;

-- Deactivate the prospect's active assignment; returns whether there was one.
CREATE FUNCTION unassign_lead(p_prospect_id uuid, p_unassigned_by uuid) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM act_as(p_unassigned_by);
    PERFORM 1 FROM prospects WHERE id = p_prospect_id FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        PERFORM raise_domain_error('NOT_FOUND', 'Prospect not found');
    END IF;
    UPDATE lead_assignments SET active = false WHERE prospect_id = p_prospect_id AND active;
    RETURN FOUND;
END
$$;
