-- Add the dialing rules: Do-Not-Call, calling hours, attempt caps, dispositions with meaning,
-- callbacks, and the queue that nextLead hands out. Every rule is checked when a call starts,
-- in the same transaction, whichever path starts it.

-- Settings a manager tunes; one row.
CREATE TABLE dialing_rules (
    singleton                     boolean PRIMARY KEY DEFAULT true
                                  CONSTRAINT dialing_rules_singleton CHECK (singleton),
    max_attempts_total            int NOT NULL DEFAULT 12
                                  CONSTRAINT dialing_rules_total_positive CHECK (max_attempts_total > 0),
    max_attempts_per_day          int NOT NULL DEFAULT 3
                                  CONSTRAINT dialing_rules_day_positive CHECK (max_attempts_per_day > 0),
    max_attempts_per_number_24h   int NOT NULL DEFAULT 3
                                  CONSTRAINT dialing_rules_number_positive CHECK (max_attempts_per_number_24h > 0),
    -- How long an agent-only callback waits for its agent before anyone may take it.
    callback_grace                interval NOT NULL DEFAULT '15 minutes',
    -- For prospects whose number names no time zone.
    default_time_zone             text NOT NULL DEFAULT 'America/New_York'
);
INSERT INTO dialing_rules DEFAULT VALUES;

-- The calling window in the callee's local time, per weekday (0 = Sunday, as extract(dow)).
-- A weekday without a row, or with NULL times, is closed.
CREATE TABLE calling_hours (
    weekday    int PRIMARY KEY CONSTRAINT calling_hours_weekday CHECK (weekday BETWEEN 0 AND 6),
    opens_at   time NOT NULL,
    closes_at  time NOT NULL,
    CONSTRAINT calling_hours_order CHECK (opens_at < closes_at)
);
INSERT INTO calling_hours (weekday, opens_at, closes_at)
SELECT d, '08:00', '21:00' FROM generate_series(0, 6) d;

-- The Do-Not-Call registry. Entries are never deleted: removal is recorded (an audit trail).
CREATE TABLE do_not_call (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    phone       text NOT NULL CONSTRAINT do_not_call_phone_e164 CHECK (phone ~ '^\+[1-9][0-9]{6,14}$'),
    -- Which list the entry came from (e.g. 'internal', 'national'); every entry blocks.
    scope       text CONSTRAINT do_not_call_scope_length CHECK (length(scope) <= 64),
    source      text NOT NULL CONSTRAINT do_not_call_source_known CHECK (source IN ('disposition', 'api', 'import')),
    reason      text CONSTRAINT do_not_call_reason_length CHECK (length(reason) <= 500),
    expires_at  timestamptz,
    added_by    uuid REFERENCES users (id),
    added_at    timestamptz NOT NULL DEFAULT now(),
    removed_by  uuid REFERENCES users (id),
    removed_at  timestamptz,
    removal_reason text CONSTRAINT do_not_call_removal_reason_length CHECK (length(removal_reason) <= 500)
);
CREATE UNIQUE INDEX do_not_call_one_listed_key ON do_not_call (phone) WHERE removed_at IS NULL;

-- What an outcome means beyond the status it sets.
ALTER TABLE dispositions
    ADD COLUMN IF NOT EXISTS counts_as_contact boolean NOT NULL DEFAULT false,
    ADD COLUMN is_final boolean NOT NULL DEFAULT false,
    ADD COLUMN adds_to_do_not_call boolean NOT NULL DEFAULT false,
    ADD COLUMN schedules_callback boolean NOT NULL DEFAULT false,
    ADD COLUMN recycle_delay interval CONSTRAINT dispositions_recycle_delay_positive
        CHECK (recycle_delay >= interval '0');
UPDATE dispositions d SET
    counts_as_contact = v.contact, is_final = v.final, adds_to_do_not_call = v.dnc,
    schedules_callback = v.callback, recycle_delay = v.recycle
FROM (VALUES
    ('Connected',          true,  false, false, false, interval '1 day'),
    ('Voicemail',          false, false, false, false, interval '4 hours'),
    ('No Answer',          false, false, false, false, interval '2 hours'),
    ('Busy',               false, false, false, false, interval '15 minutes'),
    ('Wrong Number',       false, true,  false, false, NULL),
    ('Not Interested',     true,  true,  false, false, NULL),
    ('Callback Requested', true,  false, false, true,  NULL),
    ('Do Not Call',        true,  true,  true,  false, NULL),
    ('Expired',            false, false, false, false, NULL)
) AS v(name, contact, final, dnc, callback, recycle)
WHERE d.name = v.name;

-- The prospect's place in the queue.
ALTER TABLE prospects
    ADD COLUMN time_zone text,
    ADD COLUMN phone_time_zones text[] NOT NULL DEFAULT '{}',
    ADD COLUMN priority int NOT NULL DEFAULT 0,
    ADD COLUMN final_at timestamptz,
    ADD COLUMN recycle_until timestamptz;
-- The pool in nextLead's order: priority, never called first, then oldest call, then age.
CREATE INDEX prospects_queue_idx ON prospects (priority DESC, last_call ASC NULLS FIRST, created_at, id)
    WHERE final_at IS NULL AND erased_at IS NULL;
CREATE INDEX call_logs_phone_number_idx ON call_logs (phone_number, started_at DESC);

CREATE TABLE callbacks (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    prospect_id   uuid NOT NULL REFERENCES prospects (id) ON DELETE CASCADE,
    due_at        timestamptz NOT NULL,
    -- NULL: anyone may take it; else reserved for this agent until due_at + callback_grace.
    agent_id      uuid REFERENCES users (id),
    created_by    uuid REFERENCES users (id),
    created_at    timestamptz NOT NULL DEFAULT now(),
    taken_at      timestamptz,
    call_log_id   uuid REFERENCES call_logs (id) ON DELETE SET NULL
);
CREATE INDEX callbacks_open_due_idx ON callbacks (due_at) WHERE taken_at IS NULL;
CREATE INDEX callbacks_open_prospect_idx ON callbacks (prospect_id) WHERE taken_at IS NULL;
-- Archiving a call log clears the link (ON DELETE SET NULL): without this, a scan per row.
CREATE INDEX callbacks_call_log_id_idx ON callbacks (call_log_id);

-- Erasing a prospect's personal data clears the zones its number revealed, too.
CREATE FUNCTION clear_erased_time_zones() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.time_zone := NULL;
    NEW.phone_time_zones := '{}';
    RETURN NEW;
END
$$;
CREATE TRIGGER prospects_clear_erased_time_zones BEFORE UPDATE OF erased_at ON prospects
    FOR EACH ROW WHEN (NEW.erased_at IS NOT NULL AND OLD.erased_at IS NULL)
    EXECUTE FUNCTION clear_erased_time_zones();

-- The IANA zones the database knows, kept in a table: pg_timezone_names reads the zone
-- files on every call, far too slow to ask on every nextLead.
CREATE TABLE time_zones (name text PRIMARY KEY);
INSERT INTO time_zones (name) SELECT name FROM pg_timezone_names;

-- The zones where calling is open at p_at.
CREATE FUNCTION open_time_zones(p_at timestamptz) RETURNS text[]
LANGUAGE sql STABLE AS $$
    SELECT coalesce(array_agg(z.name), '{}')
    FROM time_zones z
    JOIN calling_hours h ON h.weekday = extract(dow FROM p_at AT TIME ZONE z.name)
    WHERE (p_at AT TIME ZONE z.name)::time >= h.opens_at
      AND (p_at AT TIME ZONE z.name)::time < h.closes_at
$$;

-- The zones whose calling hours a prospect must respect: the explicit one, else those of
-- the number (all of them: only hours allowed everywhere count), else the default.
CREATE FUNCTION prospect_time_zones(p_time_zone text, p_phone_time_zones text[]) RETURNS text[]
LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN p_time_zone IS NOT NULL THEN ARRAY[p_time_zone]
        WHEN cardinality(p_phone_time_zones) > 0 THEN p_phone_time_zones
        ELSE ARRAY[(SELECT default_time_zone FROM dialing_rules)]
    END
$$;

-- Whether calling is allowed at p_at in one zone.
CREATE FUNCTION calling_hours_open(p_zone text, p_at timestamptz) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (
        SELECT 1 FROM calling_hours h
        WHERE h.weekday = extract(dow FROM p_at AT TIME ZONE p_zone)
          AND (p_at AT TIME ZONE p_zone)::time >= h.opens_at
          AND (p_at AT TIME ZONE p_zone)::time < h.closes_at)
$$;

-- Whether calling is open at p_at in every zone, and if not, when it next opens in all of
-- them (NULL when it never does within two weeks). The intersection of the windows opens
-- at some zone's opening time, so those instants are the only candidates. Local times are
-- converted with the zone rules at the moment asked, so daylight saving needs no job.
CREATE FUNCTION calling_window(p_zones text[], p_at timestamptz,
                               OUT is_open boolean, OUT next_open timestamptz)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    is_open := NOT EXISTS (SELECT 1 FROM unnest(p_zones) z WHERE NOT calling_hours_open(z, p_at));
    IF is_open THEN
        RETURN;
    END IF;
    SELECT min(candidate) INTO next_open
    FROM (
        SELECT ((((p_at AT TIME ZONE z)::date + d) + h.opens_at) AT TIME ZONE z) AS candidate
        FROM unnest(p_zones) z
        CROSS JOIN generate_series(0, 14) d
        JOIN calling_hours h
          ON h.weekday = extract(dow FROM (p_at AT TIME ZONE z)::date + d)
    ) c
    WHERE candidate > p_at
      AND NOT EXISTS (SELECT 1 FROM unnest(p_zones) z WHERE NOT calling_hours_open(z, candidate));
END
$$;

-- p_at if calling is open then for the prospect's zones, else when it next opens.
CREATE FUNCTION callable_time(p_time_zone text, p_phone_time_zones text[], p_at timestamptz)
RETURNS timestamptz
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN w.is_open THEN p_at ELSE coalesce(w.next_open, p_at) END
    FROM calling_window(prospect_time_zones(p_time_zone, p_phone_time_zones), p_at) w
$$;

-- Every rule and whether it blocks this caller from calling this prospect at p_at, with
-- when it stops blocking where that is known. Rules marked queue_only keep a prospect out
-- of nextLead but do not refuse a manual call. Supervisors (managers, admins) are not held
-- by assignments or callback reservations.
CREATE FUNCTION call_eligibility(
    p_prospect_id uuid, p_caller_id uuid, p_phone text DEFAULT NULL, p_at timestamptz DEFAULT now())
RETURNS TABLE (rule_order int, code text, blocking boolean, queue_only boolean,
               until timestamptz, reason text, last_call_time timestamptz, last_caller_id uuid)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_prospect prospects%ROWTYPE;
    v_rules dialing_rules%ROWTYPE;
    v_phone text;
    v_supervisor boolean;
    v_last_time timestamptz;
    v_last_caller uuid;
    v_zones text[];
    v_window record;
    v_count bigint;
    v_day_start timestamptz;
    v_oldest timestamptz;
    v_assigned record;
    v_callback record;
    v_dnc record;
BEGIN
    SELECT * INTO v_prospect FROM prospects WHERE id = p_prospect_id;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 0, 'NOT_FOUND', true, false, NULL::timestamptz, 'Prospect not found',
                            NULL::timestamptz, NULL::uuid;
        RETURN;
    END IF;
    SELECT * INTO v_rules FROM dialing_rules;
    v_phone := coalesce(p_phone, v_prospect.phone);
    v_supervisor := coalesce((SELECT role <> 'agent' FROM users WHERE id = p_caller_id), false);
    SELECT c.started_at, c.caller_id INTO v_last_time, v_last_caller
    FROM call_logs c WHERE c.prospect_id = p_prospect_id ORDER BY c.started_at DESC LIMIT 1;

    RETURN QUERY SELECT 0, 'PROSPECT_ERASED', v_prospect.erased_at IS NOT NULL, false,
        NULL::timestamptz, 'The prospect''s personal data was erased', v_last_time, v_last_caller;

    RETURN QUERY SELECT 1, 'ALREADY_IN_CALL',
        EXISTS (SELECT 1 FROM active_calls a WHERE a.prospect_id = p_prospect_id), false,
        NULL::timestamptz, 'Prospect is currently on another call', v_last_time, v_last_caller;

    SELECT * INTO v_dnc FROM do_not_call d
    WHERE d.phone = v_phone AND d.removed_at IS NULL AND (d.expires_at IS NULL OR d.expires_at > p_at);
    RETURN QUERY SELECT 2, 'DO_NOT_CALL', v_dnc.id IS NOT NULL, false, v_dnc.expires_at,
        'The number is on the Do-Not-Call list', v_last_time, v_last_caller;

    RETURN QUERY SELECT 3, 'RECENTLY_CALLED', coalesce(v_last_time > p_at - min_call_interval(), false),
        false, v_last_time + min_call_interval(),
        'Prospect was called recently (within ' || describe_interval(min_call_interval()) || ')',
        v_last_time, v_last_caller;

    v_zones := prospect_time_zones(v_prospect.time_zone, v_prospect.phone_time_zones);
    SELECT * INTO v_window FROM calling_window(v_zones, p_at);
    RETURN QUERY SELECT 4, 'OUTSIDE_CALLING_HOURS', NOT v_window.is_open, false, v_window.next_open,
        'Outside calling hours in ' || array_to_string(v_zones, ', '), v_last_time, v_last_caller;

    -- Caps: in total, per local day of the callee (the first zone), per number in 24 hours.
    -- Archived calls count too: archiving must not reopen a capped prospect.
    SELECT count(*) INTO v_count FROM call_logs_with_archive c WHERE c.prospect_id = p_prospect_id;
    RETURN QUERY SELECT 5, 'MAX_ATTEMPTS_REACHED', v_count >= v_rules.max_attempts_total, false,
        NULL::timestamptz,
        'Prospect reached ' || v_rules.max_attempts_total || ' attempts in total', v_last_time, v_last_caller;
    v_day_start := date_trunc('day', p_at AT TIME ZONE v_zones[1]) AT TIME ZONE v_zones[1];
    SELECT count(*) INTO v_count FROM call_logs c
    WHERE c.prospect_id = p_prospect_id AND c.started_at >= v_day_start AND c.started_at <= p_at;
    RETURN QUERY SELECT 6, 'MAX_ATTEMPTS_REACHED', v_count >= v_rules.max_attempts_per_day, false,
        ((date_trunc('day', p_at AT TIME ZONE v_zones[1]) + interval '1 day') AT TIME ZONE v_zones[1]),
        'Prospect reached ' || v_rules.max_attempts_per_day || ' attempts today', v_last_time, v_last_caller;
    SELECT count(*), min(started_at) INTO v_count, v_oldest FROM (
        SELECT c.started_at FROM call_logs c
        WHERE c.phone_number = v_phone AND c.started_at > p_at - interval '24 hours' AND c.started_at <= p_at
        ORDER BY c.started_at DESC LIMIT v_rules.max_attempts_per_number_24h) recent;
    RETURN QUERY SELECT 7, 'MAX_ATTEMPTS_REACHED', v_count >= v_rules.max_attempts_per_number_24h, false,
        v_oldest + interval '24 hours',
        'The number was called ' || v_rules.max_attempts_per_number_24h || ' times in 24 hours',
        v_last_time, v_last_caller;

    SELECT la.agent_id, la.expires_at INTO v_assigned FROM lead_assignments la
    WHERE la.prospect_id = p_prospect_id AND la.active AND (la.expires_at IS NULL OR la.expires_at > p_at);
    RETURN QUERY SELECT 8, 'ASSIGNED_TO_OTHER_AGENT',
        v_assigned.agent_id IS NOT NULL AND v_assigned.agent_id <> p_caller_id AND NOT v_supervisor,
        false, v_assigned.expires_at, 'Prospect is assigned to another agent', v_last_time, v_last_caller;

    -- An agent-only callback holds the prospect for its agent until due_at + grace.
    SELECT cb.agent_id, cb.due_at INTO v_callback FROM callbacks cb
    WHERE cb.prospect_id = p_prospect_id AND cb.taken_at IS NULL AND cb.agent_id IS NOT NULL
      AND cb.agent_id <> p_caller_id AND cb.due_at + v_rules.callback_grace > p_at
    ORDER BY cb.due_at LIMIT 1;
    RETURN QUERY SELECT 9, 'CALLBACK_RESERVED', v_callback.agent_id IS NOT NULL AND NOT v_supervisor,
        false, v_callback.due_at + v_rules.callback_grace,
        'A callback reserves this prospect for another agent', v_last_time, v_last_caller;

    -- Queue-only rules.
    RETURN QUERY SELECT 10, 'PROSPECT_CLOSED', v_prospect.final_at IS NOT NULL, true, NULL::timestamptz,
        'The prospect left the queue (a final outcome, or its attempts are used up)',
        v_last_time, v_last_caller;
    RETURN QUERY SELECT 11, 'RECYCLE_DELAY', coalesce(v_prospect.recycle_until > p_at, false), true,
        v_prospect.recycle_until, 'The last outcome asks to wait before calling again',
        v_last_time, v_last_caller;
    SELECT min(cb.due_at) AS due_at INTO v_callback FROM callbacks cb
    WHERE cb.prospect_id = p_prospect_id AND cb.taken_at IS NULL AND cb.due_at > p_at;
    RETURN QUERY SELECT 12, 'CALLBACK_NOT_DUE', v_callback.due_at IS NOT NULL, true, v_callback.due_at,
        'A callback is scheduled for later', v_last_time, v_last_caller;
END
$$;

-- The first rule that refuses the call (no row when none does), for start_call and nextLead.
DROP FUNCTION can_call_prospect(uuid, uuid);
DROP FUNCTION call_refusal(uuid, uuid);
CREATE FUNCTION call_refusal(
    p_prospect_id uuid, p_caller_id uuid, p_phone text DEFAULT NULL, p_queue boolean DEFAULT false,
    OUT code text, OUT reason text, OUT until timestamptz,
    OUT last_call_time timestamptz, OUT last_caller_id uuid)
RETURNS SETOF record
LANGUAGE sql STABLE AS $$
    SELECT e.code, e.reason, e.until, e.last_call_time, e.last_caller_id
    FROM call_eligibility(p_prospect_id, p_caller_id, p_phone) e
    WHERE e.blocking AND (p_queue OR NOT e.queue_only)
    ORDER BY e.rule_order
    LIMIT 1
$$;

-- The seed's check, with the seed's JSON shape.
CREATE FUNCTION can_call_prospect(p_prospect_id uuid, p_caller_id uuid) RETURNS json
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN r.code IS NULL THEN json_build_object('allowed', true)
           ELSE json_build_object('allowed', false, 'reason', r.reason,
                                  'last_call_time', r.last_call_time,
                                  'last_caller_id', r.last_caller_id)
           END
    FROM (SELECT 1) one LEFT JOIN call_refusal(p_prospect_id, p_caller_id) r ON true
$$;

-- Start a call on a prospect whose row the caller already locked: every rule is checked
-- in this transaction; due callbacks of the prospect are marked taken.
CREATE FUNCTION begin_call(
    p_prospect_id uuid, p_caller_id uuid, p_phone_number text, p_from_number text, p_queue boolean,
    OUT active_call_id uuid, OUT call_log_id uuid, OUT started_at timestamptz,
    OUT phone_number text, OUT active_call jsonb)
LANGUAGE plpgsql AS $$
DECLARE
    v_refusal record;
    v_active active_calls%ROWTYPE;
BEGIN
    phone_number := coalesce(p_phone_number, (SELECT p.phone FROM prospects p WHERE p.id = p_prospect_id));
    SELECT * INTO v_refusal FROM call_refusal(p_prospect_id, p_caller_id, phone_number, p_queue);
    IF v_refusal.code IS NOT NULL THEN
        PERFORM raise_domain_error(v_refusal.code, v_refusal.reason, jsonb_strip_nulls(jsonb_build_object(
            'lastCallTime', v_refusal.last_call_time,
            'lastCallerId', v_refusal.last_caller_id,
            'until', v_refusal.until)));
    END IF;

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
    UPDATE callbacks SET taken_at = now(), call_log_id = begin_call.call_log_id
    WHERE prospect_id = p_prospect_id AND taken_at IS NULL AND due_at <= now() + interval '1 hour';
    active_call_id := v_active.id;
    active_call := active_call_json(v_active);
    PERFORM publish_call_event('STARTED', v_active, NULL);
END
$$;

DROP FUNCTION start_call(uuid, uuid, text, text);
CREATE FUNCTION start_call(
    p_prospect_id uuid, p_caller_id uuid, p_phone_number text, p_from_number text,
    OUT active_call_id uuid, OUT call_log_id uuid, OUT started_at timestamptz,
    OUT phone_number text, OUT active_call jsonb)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM act_as(p_caller_id);
    PERFORM 1 FROM prospects p WHERE p.id = p_prospect_id FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        PERFORM raise_domain_error('NOT_FOUND', 'Prospect not found');
    END IF;
    SELECT * INTO active_call_id, call_log_id, started_at, phone_number, active_call
    FROM begin_call(p_prospect_id, p_caller_id, p_phone_number, p_from_number, false);
END
$$;

-- Finishing a call now also applies what its outcome means: recycle delay, leaving the
-- queue, Do-Not-Call (which no later outcome undoes) and a callback.
DROP FUNCTION end_call(uuid, uuid, uuid, text, int, text, text);
DROP FUNCTION expire_active_calls(timestamptz, int);
DROP FUNCTION finish_call(active_calls, text, int, text, text, text);
CREATE FUNCTION finish_call(
    p_active active_calls, p_outcome text, p_duration int, p_notes text, p_recording_url text,
    p_event text, p_callback_at timestamptz DEFAULT NULL)
RETURNS call_logs
LANGUAGE plpgsql AS $$
DECLARE
    v_call call_logs%ROWTYPE;
    v_disposition dispositions%ROWTYPE;
    v_zones text[];
    v_total bigint;
    v_today bigint;
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
    UPDATE prospects
       SET last_call = greatest(last_call, v_call.started_at),
           status = coalesce(v_disposition.sets_status, status),
           recycle_until = CASE WHEN v_disposition.recycle_delay IS NULL THEN recycle_until
                                ELSE now() + v_disposition.recycle_delay END,
           final_at = CASE WHEN v_disposition.is_final THEN coalesce(final_at, now()) ELSE final_at END
     WHERE id = p_active.prospect_id
    RETURNING prospect_time_zones(time_zone, phone_time_zones) INTO v_zones;
    -- A prospect that used up its attempts leaves the queue, and one that used up today's
    -- waits for the callee's next local day: nextLead would only pick and refuse them again.
    SELECT count(*), count(*) FILTER (WHERE c.started_at >=
               date_trunc('day', now() AT TIME ZONE v_zones[1]) AT TIME ZONE v_zones[1])
      INTO v_total, v_today
      FROM call_logs_with_archive c WHERE c.prospect_id = p_active.prospect_id;
    UPDATE prospects p
       SET final_at = CASE WHEN v_total >= r.max_attempts_total THEN coalesce(p.final_at, now())
                           ELSE p.final_at END,
           recycle_until = CASE WHEN v_today >= r.max_attempts_per_day
               THEN greatest(p.recycle_until, (date_trunc('day', now() AT TIME ZONE v_zones[1])
                                               + interval '1 day') AT TIME ZONE v_zones[1])
               ELSE p.recycle_until END
      FROM dialing_rules r
     WHERE p.id = p_active.prospect_id
       AND (v_total >= r.max_attempts_total OR v_today >= r.max_attempts_per_day);
    IF v_disposition.adds_to_do_not_call THEN
        INSERT INTO do_not_call (phone, source, reason, added_by)
        VALUES (v_call.phone_number, 'disposition', 'Outcome: ' || p_outcome, acting_user_id())
        ON CONFLICT (phone) WHERE removed_at IS NULL DO NOTHING;
    END IF;
    IF v_disposition.schedules_callback OR p_callback_at IS NOT NULL THEN
        INSERT INTO callbacks (prospect_id, due_at, agent_id, created_by)
        SELECT p_active.prospect_id, callable_time(p.time_zone, p.phone_time_zones,
                                                   coalesce(p_callback_at, now() + interval '1 day')),
               p_active.caller_id, acting_user_id()
        FROM prospects p WHERE p.id = p_active.prospect_id;
    END IF;
    PERFORM publish_call_event(p_event, p_active, p_outcome);
    RETURN v_call;
END
$$;

CREATE FUNCTION end_call(
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
    IF p_duration IS NOT NULL AND p_duration NOT BETWEEN 0 AND 86400 THEN
        PERFORM raise_domain_error('BAD_USER_INPUT', 'Duration must be between 0 and 86400 seconds',
            jsonb_build_object('field', 'duration'));
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

    RETURN NEXT finish_call(v_active, p_outcome, p_duration, p_notes, p_recording_url, 'ENDED',
                            p_callback_at);
END
$$;

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

-- Hand the agent the best callable prospect and start the call, in one transaction: due
-- callbacks (their own first), then their assignments, then the pool by priority and age.
-- Candidates are taken one at a time with SKIP LOCKED: concurrent agents never wait on
-- each other and never receive the same prospect, and no agent holds locks on rows ahead
-- of the one it takes (a cursor would, hiding callable prospects from the others). The
-- full rule check runs on each candidate; returns no row when nothing is callable now.
CREATE FUNCTION next_lead(p_agent_id uuid,
    OUT prospect_id uuid, OUT active_call_id uuid, OUT call_log_id uuid, OUT started_at timestamptz,
    OUT phone_number text, OUT active_call jsonb)
RETURNS SETOF record
LANGUAGE plpgsql AS $$
DECLARE
    v_grace interval := (SELECT callback_grace FROM dialing_rules);
    v_open_zones text[];
    v_candidate uuid;
    v_seen uuid[] := '{}';
    v_stage int := 1;
BEGIN
    PERFORM act_as(p_agent_id);
    -- Zones where calling is open now, worked out once rather than per prospect.
    v_open_zones := open_time_zones(now());
    WHILE v_stage <= 3 LOOP
        v_candidate := NULL;
        IF v_stage = 1 THEN
            -- Due callbacks: the agent's own first, then anyone's or others' past their grace.
            SELECT p.id INTO v_candidate FROM callbacks cb JOIN prospects p ON p.id = cb.prospect_id
            WHERE cb.taken_at IS NULL AND cb.due_at <= now() AND p.id <> ALL (v_seen)
              AND p.erased_at IS NULL
              AND (cb.agent_id IS NULL OR cb.agent_id = p_agent_id OR cb.due_at + v_grace <= now())
            ORDER BY (cb.agent_id IS NOT DISTINCT FROM p_agent_id) DESC, cb.due_at, p.id
            LIMIT 1
            FOR UPDATE OF p SKIP LOCKED;
        ELSIF v_stage = 2 THEN
            -- The agent's own live assignments.
            SELECT p.id INTO v_candidate FROM lead_assignments la JOIN prospects p ON p.id = la.prospect_id
            WHERE la.agent_id = p_agent_id AND la.active AND (la.expires_at IS NULL OR la.expires_at > now())
              AND p.final_at IS NULL AND p.erased_at IS NULL AND p.id <> ALL (v_seen)
              AND (p.recycle_until IS NULL OR p.recycle_until <= now())
              AND (p.last_call IS NULL OR p.last_call <= now() - min_call_interval())
              AND NOT EXISTS (SELECT 1 FROM active_calls a WHERE a.prospect_id = p.id)
            ORDER BY p.priority DESC, p.last_call ASC NULLS FIRST, p.created_at, p.id
            LIMIT 1
            FOR UPDATE OF p SKIP LOCKED;
        ELSE
            -- The pool, in index order; cheap rules filter here, all rules run per candidate.
            SELECT p.id INTO v_candidate FROM prospects p
            WHERE p.final_at IS NULL
              AND p.erased_at IS NULL
              AND p.id <> ALL (v_seen)
              AND (p.recycle_until IS NULL OR p.recycle_until <= now())
              AND (p.last_call IS NULL OR p.last_call <= now() - min_call_interval())
              AND prospect_time_zones(p.time_zone, p.phone_time_zones) <@ v_open_zones
              AND NOT EXISTS (SELECT 1 FROM active_calls a WHERE a.prospect_id = p.id)
              AND NOT EXISTS (SELECT 1 FROM lead_assignments la
                              WHERE la.prospect_id = p.id AND la.active
                                AND (la.expires_at IS NULL OR la.expires_at > now()))
              AND NOT EXISTS (SELECT 1 FROM callbacks cb WHERE cb.prospect_id = p.id AND cb.taken_at IS NULL)
              AND NOT EXISTS (SELECT 1 FROM do_not_call d
                              WHERE d.phone = p.phone AND d.removed_at IS NULL
                                AND (d.expires_at IS NULL OR d.expires_at > now()))
            ORDER BY p.priority DESC, p.last_call ASC NULLS FIRST, p.created_at, p.id
            LIMIT 1
            FOR UPDATE OF p SKIP LOCKED;
        END IF;

        IF v_candidate IS NULL THEN
            v_stage := v_stage + 1;
        ELSIF EXISTS (SELECT 1 FROM call_refusal(v_candidate, p_agent_id, NULL, true)) THEN
            v_seen := v_seen || v_candidate;
        ELSE
            prospect_id := v_candidate;
            SELECT * INTO active_call_id, call_log_id, started_at, phone_number, active_call
            FROM begin_call(v_candidate, p_agent_id, NULL, NULL, true);
            RETURN NEXT;
            RETURN;
        END IF;
    END LOOP;
END
$$;

-- Why nothing is callable: how many open prospects each rule holds back right now (a
-- prospect held by several rules counts under each).
CREATE FUNCTION queue_holds(p_agent_id uuid) RETURNS TABLE (code text, prospects bigint)
LANGUAGE sql STABLE AS $$
    WITH open_zones AS (
        SELECT open_time_zones(now()) AS zones
    ), rules AS (SELECT * FROM dialing_rules), flags AS (
        SELECT
            EXISTS (SELECT 1 FROM active_calls a WHERE a.prospect_id = p.id) AS in_call,
            EXISTS (SELECT 1 FROM do_not_call d WHERE d.phone = p.phone AND d.removed_at IS NULL
                    AND (d.expires_at IS NULL OR d.expires_at > now())) AS dnc,
            coalesce(p.last_call > now() - min_call_interval(), false) AS recent,
            NOT (prospect_time_zones(p.time_zone, p.phone_time_zones) <@ (SELECT zones FROM open_zones)) AS hours,
            coalesce(p.recycle_until > now(), false) AS recycling,
            EXISTS (SELECT 1 FROM lead_assignments la WHERE la.prospect_id = p.id AND la.active
                    AND (la.expires_at IS NULL OR la.expires_at > now()) AND la.agent_id <> p_agent_id) AS assigned,
            EXISTS (SELECT 1 FROM callbacks cb WHERE cb.prospect_id = p.id AND cb.taken_at IS NULL
                    AND (cb.due_at > now() OR (cb.agent_id <> p_agent_id
                         AND cb.due_at + (SELECT callback_grace FROM rules) > now()))) AS callback
        FROM prospects p
        WHERE p.final_at IS NULL AND p.erased_at IS NULL
    )
    SELECT 'ALREADY_IN_CALL', count(*) FILTER (WHERE in_call) FROM flags
    UNION ALL SELECT 'DO_NOT_CALL', count(*) FILTER (WHERE dnc) FROM flags
    UNION ALL SELECT 'RECENTLY_CALLED', count(*) FILTER (WHERE recent) FROM flags
    UNION ALL SELECT 'OUTSIDE_CALLING_HOURS', count(*) FILTER (WHERE hours) FROM flags
    UNION ALL SELECT 'RECYCLE_DELAY', count(*) FILTER (WHERE recycling) FROM flags
    UNION ALL SELECT 'ASSIGNED_TO_OTHER_AGENT', count(*) FILTER (WHERE assigned) FROM flags
    UNION ALL SELECT 'CALLBACK_PENDING', count(*) FILTER (WHERE callback) FROM flags
    UNION ALL SELECT 'PROSPECT_CLOSED', (SELECT count(*) FROM prospects WHERE final_at IS NOT NULL)
$$;
