-- Order the queue under the zones whose calling hours each prospect follows, so that the
-- prospects in closed zones cost nextLead nothing; and check nextLead's candidate once.
--
-- Before, the pool was one index in priority order, and every prospect whose hours were
-- closed was read and rejected on the way to a callable one: in the evening, with the East
-- Coast closed, nextLead walked past all of it (7.6 s on a queue of 1,000,000 with every
-- zone closed), and the "nothing callable" counts read every row with five subqueries each
-- (17 to 23 s). Prospects sharing their zones share their hours, and a queue holds few
-- distinct sets of zones, so the queue index now leads with the set: nextLead finds the
-- sets in use with one index probe each, keeps those open now, and takes the best of their
-- heads.

-- The zones whose hours a prospect follows, as stored: the explicit zone, else the
-- number's zones; empty means the default zone of dialing_rules, whatever it is when asked
-- (so changing the default needs no rewrite). STORED: PostgreSQL 18 makes generated
-- columns virtual by default, and those cannot be indexed.
ALTER TABLE prospects
    ADD COLUMN queue_zones text[] NOT NULL
        GENERATED ALWAYS AS (CASE WHEN time_zone IS NOT NULL THEN ARRAY[time_zone]
                                  ELSE phone_time_zones END) STORED;

-- Why a prospect left the queue: a final outcome, or its attempts used up. Only the latter
-- comes back when a manager raises the total cap. Prospects closed before this column
-- existed are told apart by whether any of their calls had a final outcome.
-- (NULL on an open prospect, and on one closed by hand.)
ALTER TABLE prospects
    ADD COLUMN closed_by text
        CONSTRAINT prospects_closed_by_known CHECK (closed_by IN ('outcome', 'attempts'));
UPDATE prospects p
   SET closed_by = CASE WHEN EXISTS (
           SELECT 1 FROM call_logs_with_archive c JOIN dispositions d ON d.name = c.outcome
           WHERE c.prospect_id = p.id AND d.is_final) THEN 'outcome' ELSE 'attempts' END
 WHERE p.final_at IS NOT NULL;

-- Finishing a call records why it closed the prospect (otherwise as in migration 010).
CREATE OR REPLACE FUNCTION finish_call(
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
    -- A final outcome closes the prospect for good, whatever closed it before.
    UPDATE prospects
       SET last_call = greatest(last_call, v_call.started_at),
           status = coalesce(v_disposition.sets_status, status),
           recycle_until = CASE WHEN v_disposition.recycle_delay IS NULL THEN recycle_until
                                ELSE now() + v_disposition.recycle_delay END,
           final_at = CASE WHEN v_disposition.is_final THEN coalesce(final_at, now()) ELSE final_at END,
           closed_by = CASE WHEN v_disposition.is_final THEN 'outcome' ELSE closed_by END
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
           closed_by = CASE WHEN v_total >= r.max_attempts_total
                            THEN coalesce(p.closed_by, 'attempts') ELSE p.closed_by END,
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

-- Raising the total cap returns the prospects it closed that are now under it to the queue,
-- in the transaction that raises it. (Lowering it needs no work here: nextLead closes each
-- prospect over the new cap the first time it meets one.)
CREATE FUNCTION reopen_prospects_under_raised_cap() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE prospects p
       SET final_at = NULL, closed_by = NULL
     WHERE p.closed_by = 'attempts' AND p.erased_at IS NULL
       AND (SELECT count(*) FROM call_logs_with_archive c WHERE c.prospect_id = p.id)
           < NEW.max_attempts_total;
    RETURN NULL;
END
$$;
CREATE TRIGGER dialing_rules_reopen_under_raised_cap AFTER UPDATE OF max_attempts_total ON dialing_rules
    FOR EACH ROW WHEN (NEW.max_attempts_total > OLD.max_attempts_total)
    EXECUTE FUNCTION reopen_prospects_under_raised_cap();

DROP INDEX prospects_queue_idx;
-- The pool in nextLead's order within each set of zones: priority, never called first,
-- then oldest call, then age.
CREATE INDEX prospects_queue_idx
    ON prospects (queue_zones, priority DESC, last_call ASC NULLS FIRST, created_at, id)
    WHERE final_at IS NULL AND erased_at IS NULL;

-- The sets of zones of the open prospects whose calling hours are open at p_at in every
-- zone of the set. The distinct sets are found by skipping through the queue index (one
-- probe per set, whatever the number of prospects).
CREATE FUNCTION open_queue_zones(p_at timestamptz) RETURNS TABLE (zones text[])
LANGUAGE sql STABLE AS $$
    WITH RECURSIVE sets AS (
        (SELECT p.queue_zones AS zones FROM prospects p
         WHERE p.final_at IS NULL AND p.erased_at IS NULL
         ORDER BY p.queue_zones LIMIT 1)
        UNION ALL
        SELECT (SELECT p.queue_zones FROM prospects p
                WHERE p.queue_zones > s.zones AND p.final_at IS NULL AND p.erased_at IS NULL
                ORDER BY p.queue_zones LIMIT 1)
        FROM sets s
        WHERE s.zones IS NOT NULL
    )
    SELECT s.zones
    FROM sets s CROSS JOIN dialing_rules r
    WHERE s.zones IS NOT NULL
      AND NOT EXISTS (
          SELECT 1
          FROM unnest(CASE WHEN cardinality(s.zones) > 0 THEN s.zones
                           ELSE ARRAY[r.default_time_zone] END) z
          WHERE NOT calling_hours_open(z, p_at))
$$;

-- The pool's open prospects that the cheap rules do not hold back now: not in a call, not
-- recycling or called too recently, not assigned, not waiting for a callback, not listed.
-- nextLead reads it under the queue index; every rule runs on the candidate it picks.
CREATE VIEW queue_pool AS
SELECT p.*
FROM prospects p
WHERE p.final_at IS NULL
  AND p.erased_at IS NULL
  AND (p.recycle_until IS NULL OR p.recycle_until <= now())
  AND (p.last_call IS NULL OR p.last_call <= now() - min_call_interval())
  AND NOT EXISTS (SELECT 1 FROM active_calls a WHERE a.prospect_id = p.id)
  AND NOT EXISTS (SELECT 1 FROM lead_assignments la
                  WHERE la.prospect_id = p.id AND la.active
                    AND (la.expires_at IS NULL OR la.expires_at > now()))
  AND NOT EXISTS (SELECT 1 FROM callbacks cb WHERE cb.prospect_id = p.id AND cb.taken_at IS NULL)
  AND NOT EXISTS (SELECT 1 FROM do_not_call d
                  WHERE d.phone = p.phone AND d.removed_at IS NULL
                    AND (d.expires_at IS NULL OR d.expires_at > now()));

-- Record the start of a call that every rule has allowed, on a prospect row the caller
-- holds locked: the call log, the active call (the unique prospect_id turns a race into
-- ALREADY_IN_CALL), due callbacks marked taken, and the event for the wallboards.
CREATE FUNCTION open_call(
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
    BEGIN
        INSERT INTO active_calls (prospect_id, caller_id, call_log_id, phone_number, started_at,
                                  lease_expires_at)
        VALUES (p_prospect_id, p_caller_id, call_log_id, p_phone_number, started_at,
                started_at + active_call_timeout())
        RETURNING * INTO v_active;
    EXCEPTION WHEN unique_violation THEN
        PERFORM raise_domain_error('ALREADY_IN_CALL', 'Prospect is currently on another call');
    END;
    UPDATE callbacks SET taken_at = now(), call_log_id = open_call.call_log_id
    WHERE prospect_id = p_prospect_id AND taken_at IS NULL AND due_at <= now() + interval '1 hour';
    active_call_id := v_active.id;
    active_call := active_call_json(v_active);
    PERFORM publish_call_event('STARTED', v_active, NULL);
END
$$;

-- Start a call on a prospect whose row the caller already locked: every rule is checked
-- in this transaction, then open_call() records it.
CREATE OR REPLACE FUNCTION begin_call(
    p_prospect_id uuid, p_caller_id uuid, p_phone_number text, p_from_number text, p_queue boolean,
    OUT active_call_id uuid, OUT call_log_id uuid, OUT started_at timestamptz,
    OUT phone_number text, OUT active_call jsonb)
LANGUAGE plpgsql AS $$
DECLARE
    v_refusal record;
BEGIN
    phone_number := coalesce(p_phone_number, (SELECT p.phone FROM prospects p WHERE p.id = p_prospect_id));
    SELECT * INTO v_refusal FROM call_refusal(p_prospect_id, p_caller_id, phone_number, p_queue);
    IF v_refusal.code IS NOT NULL THEN
        PERFORM raise_domain_error(v_refusal.code, v_refusal.reason, jsonb_strip_nulls(jsonb_build_object(
            'lastCallTime', v_refusal.last_call_time,
            'lastCallerId', v_refusal.last_caller_id,
            'until', v_refusal.until)));
    END IF;
    SELECT * INTO active_call_id, call_log_id, started_at, active_call
    FROM open_call(p_prospect_id, p_caller_id, phone_number, p_from_number);
END
$$;

-- Hand the agent the best callable prospect and start the call, in one transaction: due
-- callbacks (their own first), then their assignments, then the pool by priority and age.
-- Candidates are taken one at a time with SKIP LOCKED: concurrent agents never wait on
-- each other and never receive the same prospect, and no agent holds locks on rows ahead
-- of the one it takes. The full rule check runs on each candidate; returns no row when
-- nothing is callable now.
CREATE OR REPLACE FUNCTION next_lead(p_agent_id uuid,
    OUT prospect_id uuid, OUT active_call_id uuid, OUT call_log_id uuid, OUT started_at timestamptz,
    OUT phone_number text, OUT active_call jsonb)
RETURNS SETOF record
LANGUAGE plpgsql AS $$
DECLARE
    v_grace interval := (SELECT callback_grace FROM dialing_rules);
    v_candidate uuid;
    v_refusal record;
    v_zones text[];
    v_seen uuid[] := '{}';
    v_stage int := 1;
BEGIN
    PERFORM act_as(p_agent_id);
    WHILE v_stage <= 3 LOOP
        v_candidate := NULL;
        IF v_stage = 1 THEN
            -- Due callbacks: the agent's own first, then anyone's or others' past their grace
            -- (not on a prospect that has left the queue since).
            SELECT p.id INTO v_candidate FROM callbacks cb JOIN prospects p ON p.id = cb.prospect_id
            WHERE cb.taken_at IS NULL AND cb.due_at <= now() AND p.id <> ALL (v_seen)
              AND p.final_at IS NULL AND p.erased_at IS NULL
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
            -- The pool: the open sets of zones, best head first (read without locks), and
            -- in each the best row no other agent holds, locked as in the other stages.
            -- Only the row taken is locked, so no agent hides callable prospects from the
            -- others; while agents take rows, the order between sets is approximate.
            FOR v_zones IN
                SELECT k.zones
                FROM open_queue_zones(now()) k
                CROSS JOIN LATERAL (
                    SELECT q.priority, q.last_call, q.created_at, q.id FROM queue_pool q
                    WHERE q.queue_zones = k.zones AND q.id <> ALL (v_seen)
                    ORDER BY q.priority DESC, q.last_call ASC NULLS FIRST, q.created_at, q.id
                    LIMIT 1
                ) h
                ORDER BY h.priority DESC, h.last_call ASC NULLS FIRST, h.created_at, h.id
            LOOP
                SELECT q.id INTO v_candidate FROM queue_pool q
                WHERE q.queue_zones = v_zones AND q.id <> ALL (v_seen)
                ORDER BY q.priority DESC, q.last_call ASC NULLS FIRST, q.created_at, q.id
                LIMIT 1
                FOR UPDATE OF q SKIP LOCKED;
                EXIT WHEN v_candidate IS NOT NULL;
            END LOOP;
        END IF;

        IF v_candidate IS NULL THEN
            v_stage := v_stage + 1;
            CONTINUE;
        END IF;
        SELECT * INTO v_refusal FROM call_refusal(v_candidate, p_agent_id, NULL, true);
        IF v_refusal.code IS NULL THEN
            -- Checked just now under this transaction's lock: record it without a second check.
            prospect_id := v_candidate;
            phone_number := (SELECT p.phone FROM prospects p WHERE p.id = v_candidate);
            SELECT * INTO active_call_id, call_log_id, started_at, active_call
            FROM open_call(v_candidate, p_agent_id, phone_number, NULL);
            RETURN NEXT;
            RETURN;
        END IF;
        v_seen := v_seen || v_candidate;
        -- A cap the queue's filters cannot see (a manager lowered it, or calls were logged
        -- on another path): close the prospect at the total cap, as ending the call that
        -- reaches it does, or set it aside until the cap lifts. It is refused once, not on
        -- every nextLead while it stays at the head of the queue.
        IF v_refusal.code = 'MAX_ATTEMPTS_REACHED' THEN
            UPDATE prospects p
               SET final_at = CASE WHEN v_refusal.until IS NULL THEN coalesce(p.final_at, now())
                                   ELSE p.final_at END,
                   closed_by = CASE WHEN v_refusal.until IS NULL THEN coalesce(p.closed_by, 'attempts')
                                    ELSE p.closed_by END,
                   recycle_until = CASE WHEN v_refusal.until IS NULL THEN p.recycle_until
                                        ELSE greatest(p.recycle_until, v_refusal.until) END
             WHERE p.id = v_candidate;
        END IF;
    END LOOP;
END
$$;

-- Why nothing is callable: how many open prospects each rule holds back right now (a
-- prospect held by several rules counts under each), in two parts. queue_holds_shared()
-- holds for every agent alike and reads every prospect, once, with no subquery per row:
-- the sets that hold prospects back (calls in progress, listed numbers, assignments,
-- reserved callbacks) are hashed once, and calling hours are decided once per set of
-- zones. It counts all live assignments and every callback reserved for anyone; the
-- server may share it between agents for a few seconds. queue_holds_own() is what to take
-- off that for one agent (their own assignments, their own due callbacks), from the small
-- tables only.
DROP FUNCTION queue_holds(uuid);
CREATE FUNCTION queue_holds_shared() RETURNS TABLE (code text, prospects bigint)
LANGUAGE sql STABLE AS $$
    WITH rules AS MATERIALIZED (
        SELECT default_time_zone, callback_grace, now() - min_call_interval() AS recent_after
        FROM dialing_rules
    ), live AS (
        SELECT p.*, p.final_at IS NULL AND p.erased_at IS NULL AS live FROM prospects p
    ), flags AS (
        SELECT p.final_at IS NOT NULL AS closed,
               p.live,
               CASE WHEN p.live THEN p.queue_zones END AS zones,
               p.live AND p.id IN (SELECT prospect_id FROM active_calls) AS in_call,
               p.live AND p.phone IN (
                   SELECT phone FROM do_not_call
                   WHERE removed_at IS NULL AND (expires_at IS NULL OR expires_at > now())) AS dnc,
               p.live AND p.last_call > (SELECT recent_after FROM rules) AS recent,
               p.live AND p.recycle_until > now() AS recycling,
               p.live AND p.id IN (
                   SELECT prospect_id FROM lead_assignments
                   WHERE active AND (expires_at IS NULL OR expires_at > now())) AS assigned,
               p.live AND p.id IN (
                   SELECT prospect_id FROM callbacks
                   WHERE taken_at IS NULL
                     AND (due_at > now() OR (agent_id IS NOT NULL
                          AND due_at + (SELECT callback_grace FROM rules) > now()))) AS callback
        FROM live p
    ), by_zones AS (
        SELECT zones,
               count(*) FILTER (WHERE live) AS open,
               count(*) FILTER (WHERE closed) AS closed,
               count(*) FILTER (WHERE in_call) AS in_call,
               count(*) FILTER (WHERE dnc) AS dnc,
               count(*) FILTER (WHERE recent) AS recent,
               count(*) FILTER (WHERE recycling) AS recycling,
               count(*) FILTER (WHERE assigned) AS assigned,
               count(*) FILTER (WHERE callback) AS callback
        FROM flags
        GROUP BY zones
    ), totals AS (
        SELECT sum(b.in_call) AS in_call, sum(b.dnc) AS dnc, sum(b.recent) AS recent,
               sum(b.open) FILTER (WHERE EXISTS (
                   SELECT 1
                   FROM unnest(CASE WHEN cardinality(b.zones) > 0 THEN b.zones
                                    ELSE ARRAY[(SELECT default_time_zone FROM rules)] END) z
                   WHERE NOT calling_hours_open(z, now()))) AS hours,
               sum(b.recycling) AS recycling, sum(b.assigned) AS assigned,
               sum(b.callback) AS callback, sum(b.closed) AS closed
        FROM by_zones b
    )
    SELECT v.code, coalesce(v.prospects, 0)::bigint
    FROM totals t, LATERAL (VALUES
        ('ALREADY_IN_CALL', t.in_call), ('DO_NOT_CALL', t.dnc), ('RECENTLY_CALLED', t.recent),
        ('OUTSIDE_CALLING_HOURS', t.hours), ('RECYCLE_DELAY', t.recycling),
        ('ASSIGNED_TO_OTHER_AGENT', t.assigned), ('CALLBACK_PENDING', t.callback),
        ('PROSPECT_CLOSED', t.closed)) AS v(code, prospects)
$$;

-- What queue_holds_shared() counts that does not hold this agent back: open prospects
-- assigned to them, and those whose only reserved callbacks are theirs and due.
CREATE FUNCTION queue_holds_own(p_agent_id uuid) RETURNS TABLE (code text, prospects bigint)
LANGUAGE sql STABLE AS $$
    WITH rules AS MATERIALIZED (SELECT callback_grace FROM dialing_rules)
    SELECT 'ASSIGNED_TO_OTHER_AGENT', count(*)
    FROM lead_assignments la JOIN prospects p ON p.id = la.prospect_id
    WHERE la.agent_id = p_agent_id AND la.active
      AND (la.expires_at IS NULL OR la.expires_at > now())
      AND p.final_at IS NULL AND p.erased_at IS NULL
    UNION ALL
    SELECT 'CALLBACK_PENDING', count(DISTINCT cb.prospect_id)
    FROM callbacks cb JOIN prospects p ON p.id = cb.prospect_id
    WHERE cb.agent_id = p_agent_id AND cb.taken_at IS NULL AND cb.due_at <= now()
      AND cb.due_at + (SELECT callback_grace FROM rules) > now()
      AND p.final_at IS NULL AND p.erased_at IS NULL
      AND NOT EXISTS (
          SELECT 1 FROM callbacks o
          WHERE o.prospect_id = cb.prospect_id AND o.taken_at IS NULL
            AND (o.due_at > now() OR (o.agent_id <> p_agent_id
                 AND o.due_at + (SELECT callback_grace FROM rules) > now())))
$$;

-- Both parts together, read now: what nextLead answers an agent when nothing is callable.
CREATE FUNCTION queue_holds(p_agent_id uuid) RETURNS TABLE (code text, prospects bigint)
LANGUAGE sql STABLE AS $$
    SELECT s.code, s.prospects - coalesce(o.prospects, 0)
    FROM queue_holds_shared() s LEFT JOIN queue_holds_own(p_agent_id) o USING (code)
$$;

-- Replaced by open_queue_zones(), which asks only about the zones prospects have.
DROP FUNCTION open_time_zones(timestamptz);
