-- Whether a caller may call a prospect: each condition of the dialing rules written once,
-- and call_eligibility(), which lists every rule, whether it blocks and until when. The
-- queue (queue.sql), starting a call and ending one (calls.sql) all use these.

-- Whether the prospect was called less than the minimum gap before p_at.
CREATE OR REPLACE FUNCTION called_recently(p_last_call timestamptz, p_at timestamptz)
RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT coalesce(p_last_call > p_at - min_call_interval(), false)
$$;

-- Whether the last outcome still asks to wait before calling again at p_at.
CREATE OR REPLACE FUNCTION recycling(p_prospect prospects, p_at timestamptz) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT coalesce(p_prospect.recycle_until > p_at, false)
$$;

-- Whether a Do-Not-Call entry blocks its number at p_at: not removed, not expired.
CREATE OR REPLACE FUNCTION do_not_call_in_force(p_entry do_not_call, p_at timestamptz)
RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT p_entry.removed_at IS NULL
       AND (p_entry.expires_at IS NULL OR p_entry.expires_at > p_at)
$$;

-- Until when a callback reserves its prospect for its agent: an agent-only callback
-- not yet taken holds it until due_at + the grace of dialing_rules (p_grace); NULL when
-- it reserves nothing.
CREATE OR REPLACE FUNCTION callback_reserved_until(p_callback callbacks, p_grace interval)
RETURNS timestamptz
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN p_callback.agent_id IS NOT NULL AND p_callback.taken_at IS NULL
                THEN p_callback.due_at + p_grace END
$$;

-- Whether a callback keeps p_agent_id (NULL: anyone) off its prospect at p_at.
CREATE OR REPLACE FUNCTION callback_reserves(
    p_callback callbacks, p_agent_id uuid, p_at timestamptz, p_grace interval)
RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT p_callback.taken_at IS NULL
       AND p_callback.agent_id IS DISTINCT FROM p_agent_id
       AND coalesce(callback_reserved_until(p_callback, p_grace) > p_at, false)
$$;

-- The attempt caps of a prospect at p_at: whether it used up its attempts in total
-- (archived calls count too: archiving must not reopen a capped prospect) and in the
-- callee's local day, and when that day ends.
-- (A set of one row, so the planner inlines it into the query that asks.)
CREATE OR REPLACE FUNCTION attempt_caps(p_prospect_id uuid, p_zones text[], p_at timestamptz)
RETURNS TABLE (total_reached boolean, day_reached boolean, day_ends timestamptz,
               max_total int, max_per_day int)
LANGUAGE sql STABLE AS $$
    SELECT calls.total >= r.max_attempts_total, calls.today >= r.max_attempts_per_day,
           d.ends_at, r.max_attempts_total, r.max_attempts_per_day
    FROM dialing_rules r
    CROSS JOIN callee_day(p_zones, p_at) d
    CROSS JOIN LATERAL (
        SELECT count(*) AS total,
               count(*) FILTER (WHERE c.started_at >= d.starts_at AND c.started_at <= p_at) AS today
        FROM call_logs_with_archive c WHERE c.prospect_id = p_prospect_id
    ) calls
$$;

-- Take a prospect out of the queue at an attempt cap: for good when p_closed (closed_by
-- 'attempts', which raising the total cap undoes), and until p_until when given.
CREATE OR REPLACE FUNCTION hold_at_attempt_cap(
    p_prospect_id uuid, p_closed boolean, p_until timestamptz) RETURNS void
LANGUAGE sql AS $$
    UPDATE prospects p
       SET final_at = CASE WHEN p_closed THEN coalesce(p.final_at, now()) ELSE p.final_at END,
           closed_by = CASE WHEN p_closed THEN coalesce(p.closed_by, 'attempts')
                            ELSE p.closed_by END,
           recycle_until = CASE WHEN p_until IS NULL THEN p.recycle_until
                                ELSE greatest(p.recycle_until, p_until) END
     WHERE p.id = p_prospect_id AND (p_closed OR p_until IS NOT NULL)
$$;

-- Every rule and whether it blocks this caller from calling this prospect at p_at, with
-- when it stops blocking where that is known. Rules marked queue_only keep a prospect out
-- of nextLead but do not refuse a manual call. Supervisors (managers, admins) are not held
-- by assignments or callback reservations.
CREATE OR REPLACE FUNCTION call_eligibility(
    p_prospect_id uuid, p_caller_id uuid, p_phone text DEFAULT NULL, p_at timestamptz DEFAULT now())
RETURNS TABLE (rule_order int, code text, blocking boolean, queue_only boolean,
               until timestamptz, reason text, last_call_time timestamptz, last_caller_id uuid)
LANGUAGE plpgsql STABLE AS $$
-- Each fact is looked up once, by a small statement whose plan the session keeps; one
-- statement then lists the rules. (One big SQL statement instead took milliseconds to plan.)
DECLARE
    v_prospect prospects%ROWTYPE;
    v_rules dialing_rules%ROWTYPE;
    v_phone text;
    v_supervisor boolean;
    v_last_time timestamptz;
    v_last_caller uuid;
    v_zones text[];
    v_open boolean;
    v_caps record;
    v_number_calls bigint;
    v_number_oldest timestamptz;
    v_listed boolean;
    v_listed_until timestamptz;
    v_assigned record;
    v_reserved_until timestamptz;
    v_next_callback timestamptz;
BEGIN
    SELECT * INTO v_prospect FROM prospects WHERE id = p_prospect_id;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 0, 'NOT_FOUND', true, false, NULL::timestamptz, 'Prospect not found',
                            NULL::timestamptz, NULL::uuid;
        RETURN;
    END IF;
    SELECT * INTO v_rules FROM dialing_rules;
    v_phone := coalesce(p_phone, v_prospect.phone);
    v_zones := prospect_time_zones(v_prospect.queue_zones);
    v_supervisor := coalesce((SELECT u.role <> 'agent' FROM users u WHERE u.id = p_caller_id), false);
    SELECT c.started_at, c.caller_id INTO v_last_time, v_last_caller
    FROM call_logs c WHERE c.prospect_id = p_prospect_id ORDER BY c.started_at DESC LIMIT 1;
    SELECT true, d.expires_at INTO v_listed, v_listed_until
    FROM do_not_call d WHERE d.phone = v_phone AND do_not_call_in_force(d, p_at);
    -- Judged inline; calling_window() (a function call and its statements) works out when
    -- the hours open only when they are closed.
    v_open := NOT EXISTS (SELECT 1 FROM closed_time_zones(v_zones, p_at));
    SELECT * INTO v_caps FROM attempt_caps(p_prospect_id, v_zones, p_at);
    -- The number, whichever prospect it was dialled for, in the last 24 hours.
    SELECT count(*), min(recent.started_at) INTO v_number_calls, v_number_oldest FROM (
        SELECT c.started_at FROM call_logs c
        WHERE c.phone_number = v_phone AND c.started_at > p_at - interval '24 hours'
          AND c.started_at <= p_at
        ORDER BY c.started_at DESC LIMIT v_rules.max_attempts_per_number_24h) recent;
    SELECT la.agent_id, la.expires_at INTO v_assigned FROM lead_assignments la
    WHERE la.prospect_id = p_prospect_id AND assignment_is_live(la, p_at);
    -- An agent-only callback holds the prospect for its agent until due + grace.
    SELECT callback_reserved_until(cb, v_rules.callback_grace) INTO v_reserved_until
    FROM callbacks cb
    WHERE cb.prospect_id = p_prospect_id
      AND callback_reserves(cb, p_caller_id, p_at, v_rules.callback_grace)
    ORDER BY cb.due_at LIMIT 1;
    SELECT min(cb.due_at) INTO v_next_callback FROM callbacks cb
    WHERE cb.prospect_id = p_prospect_id AND cb.taken_at IS NULL AND cb.due_at > p_at;

    RETURN QUERY SELECT rule.*, v_last_time, v_last_caller FROM (VALUES
        (0, 'PROSPECT_ERASED', v_prospect.erased_at IS NOT NULL, false, NULL::timestamptz,
         'The prospect''s personal data was erased'),
        (1, 'ALREADY_IN_CALL',
         EXISTS (SELECT 1 FROM active_calls a WHERE a.prospect_id = p_prospect_id), false, NULL,
         'Prospect is currently on another call'),
        (2, 'DO_NOT_CALL', coalesce(v_listed, false), false, v_listed_until,
         'The number is on the Do-Not-Call list'),
        (3, 'RECENTLY_CALLED', called_recently(v_last_time, p_at), false,
         v_last_time + min_call_interval(),
         'Prospect was called recently (within ' || describe_interval(min_call_interval()) || ')'),
        (4, 'OUTSIDE_CALLING_HOURS', NOT v_open, false,
         CASE WHEN NOT v_open THEN (SELECT w.next_open FROM calling_window(v_zones, p_at) w) END,
         'Outside calling hours in ' || array_to_string(v_zones, ', ')),
        (5, 'MAX_ATTEMPTS_REACHED', v_caps.total_reached, false, NULL,
         'Prospect reached ' || describe_count(v_caps.max_total, 'attempt') || ' in total'),
        (6, 'MAX_ATTEMPTS_REACHED', v_caps.day_reached, false, v_caps.day_ends,
         'Prospect reached ' || describe_count(v_caps.max_per_day, 'attempt') || ' today'),
        (7, 'MAX_ATTEMPTS_REACHED', v_number_calls >= v_rules.max_attempts_per_number_24h, false,
         v_number_oldest + interval '24 hours',
         'The number was called '
             || describe_count(v_rules.max_attempts_per_number_24h, 'time') || ' in 24 hours'),
        (8, 'ASSIGNED_TO_OTHER_AGENT',
         v_assigned.agent_id IS NOT NULL AND v_assigned.agent_id <> p_caller_id
             AND NOT v_supervisor,
         false, v_assigned.expires_at, 'Prospect is assigned to another agent'),
        (9, 'CALLBACK_RESERVED', v_reserved_until IS NOT NULL AND NOT v_supervisor, false,
         v_reserved_until, 'A callback reserves this prospect for another agent'),
        -- Queue-only rules.
        (10, 'PROSPECT_CLOSED', v_prospect.final_at IS NOT NULL, true, NULL,
         'The prospect left the queue (a final outcome, or its attempts are used up)'),
        (11, 'RECYCLE_DELAY', recycling(v_prospect, p_at), true, v_prospect.recycle_until,
         'The last outcome asks to wait before calling again'),
        (12, 'CALLBACK_NOT_DUE', v_next_callback IS NOT NULL, true, v_next_callback,
         'A callback is scheduled for later')
    ) AS rule (rule_order, code, blocking, queue_only, until, reason);
END
$$;

-- Whether a rule refuses the call: it blocks, and it is not a queue-only rule (those
-- refuse only nextLead, p_queue).
CREATE OR REPLACE FUNCTION rule_refuses(p_blocking boolean, p_queue_only boolean, p_queue boolean)
RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT p_blocking AND (p_queue OR NOT p_queue_only)
$$;

-- The first rule that refuses the call (code NULL when none does), with the prospect's
-- last call; always one row.
CREATE OR REPLACE FUNCTION call_refusal(
    p_prospect_id uuid, p_caller_id uuid, p_phone text DEFAULT NULL, p_queue boolean DEFAULT false,
    OUT code text, OUT reason text, OUT until timestamptz,
    OUT last_call_time timestamptz, OUT last_caller_id uuid)
LANGUAGE sql STABLE AS $$
    WITH rules AS MATERIALIZED (
        SELECT * FROM call_eligibility(p_prospect_id, p_caller_id, p_phone)
    )
    SELECT r.code, r.reason, r.until, facts.last_call_time, facts.last_caller_id
    FROM (SELECT e.last_call_time, e.last_caller_id FROM rules e LIMIT 1) facts
    LEFT JOIN LATERAL (
        SELECT e.code, e.reason, e.until FROM rules e
        WHERE rule_refuses(e.blocking, e.queue_only, p_queue)
        ORDER BY e.rule_order
        LIMIT 1
    ) r ON true
$$;

-- The first rule about whose prospect it is that keeps this user from claiming it (code
-- NULL when none): an erased prospect is nobody's, and an agent may not take one assigned
-- to another agent or reserved by another agent's callback. Changing a prospect and
-- scheduling a callback on it need a claim; managers and admins may claim any.
CREATE OR REPLACE FUNCTION claim_refusal(
    p_prospect_id uuid, p_user_id uuid, OUT code text, OUT reason text, OUT until timestamptz)
LANGUAGE sql STABLE AS $$
    SELECT r.code, r.reason, r.until
    FROM (SELECT 1) one
    LEFT JOIN LATERAL (
        SELECT e.code, e.reason, e.until FROM call_eligibility(p_prospect_id, p_user_id) e
        WHERE e.blocking
          AND e.code IN ('PROSPECT_ERASED', 'ASSIGNED_TO_OTHER_AGENT', 'CALLBACK_RESERVED')
        ORDER BY e.rule_order
        LIMIT 1
    ) r ON true
$$;

-- The seed's check, with the seed's JSON shape.
CREATE OR REPLACE FUNCTION can_call_prospect(p_prospect_id uuid, p_caller_id uuid) RETURNS json
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN r.code IS NULL THEN json_build_object('allowed', true)
           ELSE json_build_object('allowed', false, 'reason', r.reason,
                                  'last_call_time', r.last_call_time,
                                  'last_caller_id', r.last_caller_id)
           END
    FROM call_refusal(p_prospect_id, p_caller_id) r
$$;
