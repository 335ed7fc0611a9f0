-- The queue nextLead hands out: the prospects ready to call, the best one for an agent,
-- and, when none is, how many each rule holds back.

-- Prospects in the queue that nothing about the prospect itself holds back now: not
-- recycling, not called too recently, not in a call.
CREATE OR REPLACE VIEW queue_ready AS
SELECT p.*
FROM prospects p
WHERE in_queue(p)
  AND NOT recycling(p, now())
  AND NOT called_recently(p.last_call, now())
  AND NOT EXISTS (SELECT 1 FROM active_calls a WHERE a.prospect_id = p.id);

-- The pool: ready prospects nobody has a claim on (no live assignment, no callback) and
-- whose number is not listed. nextLead reads it under the queue index; every rule runs
-- on the candidate it picks.
CREATE OR REPLACE VIEW queue_pool AS
SELECT q.*
FROM queue_ready q
WHERE NOT EXISTS (SELECT 1 FROM lead_assignments la
                  WHERE la.prospect_id = q.id AND assignment_is_live(la, now()))
  AND NOT EXISTS (SELECT 1 FROM callbacks cb WHERE cb.prospect_id = q.id AND cb.taken_at IS NULL)
  AND NOT EXISTS (SELECT 1 FROM do_not_call d
                  WHERE d.phone = q.phone AND do_not_call_in_force(d, now()));

-- The sets of zones of the prospects in the queue whose calling hours are open at p_at in
-- every zone of the set. The distinct sets are found by skipping through the queue index
-- (one probe per set, whatever the number of prospects).
CREATE OR REPLACE FUNCTION open_queue_zones(p_at timestamptz) RETURNS TABLE (zones text[])
LANGUAGE sql STABLE AS $$
    WITH RECURSIVE sets AS (
        (SELECT p.queue_zones AS zones FROM prospects p
         WHERE in_queue(p)
         ORDER BY p.queue_zones LIMIT 1)
        UNION ALL
        SELECT (SELECT p.queue_zones FROM prospects p
                WHERE p.queue_zones > s.zones AND in_queue(p)
                ORDER BY p.queue_zones LIMIT 1)
        FROM sets s
        WHERE s.zones IS NOT NULL
    )
    SELECT s.zones
    FROM sets s
    WHERE s.zones IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM closed_time_zones(prospect_time_zones(s.zones), p_at))
$$;

-- The open sets of zones of the queue (open_queue_zones(now()), each as its text), as this
-- connection found them earlier in the same minute under the same calling hours and default
-- zone: finding them (an index probe per set) and judging their hours took most of the
-- time nextLead spent choosing from the pool. p_refresh finds them again. Kept in a
-- session setting (a transaction that rolls back drops what it found). What can be stale,
-- within the minute: a set of zones new to the queue is not offered (next_lead() looks
-- again before it answers "nothing callable"), and hours opening or closing off the minute
-- are seen late (a prospect refused OUTSIDE_CALLING_HOURS makes next_lead() look again).
-- Every rule still runs on the prospect picked.
CREATE OR REPLACE FUNCTION open_queue_zone_sets(p_refresh boolean) RETURNS text[]
LANGUAGE plpgsql AS $$
DECLARE
    v_key text;
    v_sets text[];
BEGIN
    SELECT date_trunc('minute', now())::text || '|' || r.default_time_zone || '|'
           || coalesce((SELECT string_agg(h.weekday || ' ' || h.opens_at || '-' || h.closes_at,
                                          ',' ORDER BY h.weekday, h.opens_at)
                        FROM calling_hours h), '')
      INTO v_key FROM dialing_rules r;
    IF NOT p_refresh AND current_setting('app.queue_zone_sets_key', true) = v_key THEN
        RETURN current_setting('app.queue_zone_sets')::text[];
    END IF;
    v_sets := ARRAY(SELECT k.zones::text FROM open_queue_zones(now()) k);
    PERFORM set_config('app.queue_zone_sets', v_sets::text, false),
            set_config('app.queue_zone_sets_key', v_key, false);
    RETURN v_sets;
END
$$;

-- Hand the agent the best callable prospect and start the call, in one transaction: due
-- callbacks (their own first), then their assignments, then the pool by priority and age.
-- Candidates are taken one at a time with SKIP LOCKED: concurrent agents never wait on
-- each other and never receive the same prospect, and no agent holds locks on rows ahead
-- of the one it takes. Every rule runs on each candidate; returns no row when nothing is
-- callable now.
CREATE OR REPLACE FUNCTION next_lead(p_agent_id uuid,
    OUT prospect_id uuid, OUT active_call_id uuid, OUT call_log_id uuid, OUT started_at timestamptz,
    OUT phone_number text, OUT active_call jsonb)
RETURNS SETOF record
-- Its statements (and those of the rule checks it calls) run the same index scans whatever
-- the values; planned afresh for each call's values, the first calls on each connection
-- cost 15 ms each instead of 3.
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    v_grace interval := (SELECT callback_grace FROM dialing_rules);
    v_candidate uuid;
    v_refusal record;
    v_zones text[];
    v_head uuid;
    v_seen uuid[] := '{}';
    v_own uuid[];
    v_sets text[];
    v_refresh boolean := false;
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
              AND in_queue(p) AND NOT callback_reserves(cb, p_agent_id, now(), v_grace)
            ORDER BY (cb.agent_id IS NOT DISTINCT FROM p_agent_id) DESC, cb.due_at, p.id
            LIMIT 1
            FOR UPDATE OF p SKIP LOCKED;
        ELSIF v_stage = 2 THEN
            -- The agent's own live assignments, read first on their own: joined to the queue
            -- in one statement, the plan depended on the agent and was made afresh on every
            -- call (1.8 ms at a million prospects); most agents have none to look for. This
            -- one is planned for the agent (EXECUTE): a plan for any agent reads every
            -- assignment when a few agents hold them all.
            IF v_own IS NULL THEN
                EXECUTE 'SELECT ARRAY(SELECT la.prospect_id FROM lead_assignments la
                                      WHERE la.agent_id = $1 AND assignment_is_live(la, now()))'
                INTO v_own USING p_agent_id;
            END IF;
            IF v_own <> '{}' THEN
                SELECT q.id INTO v_candidate FROM queue_ready q
                WHERE q.id = ANY (v_own) AND q.id <> ALL (v_seen)
                ORDER BY q.priority DESC, q.last_call ASC NULLS FIRST, q.created_at, q.id
                LIMIT 1
                FOR UPDATE OF q SKIP LOCKED;
            END IF;
        ELSE
            -- The pool: the open sets of zones (as this connection found them this minute),
            -- best head first (read without locks), and in each the best row no other
            -- agent holds, locked as in the other stages. Only the row taken is locked, so
            -- no agent hides callable prospects from the others; while agents take rows,
            -- the order between sets is approximate.
            v_sets := open_queue_zone_sets(v_refresh);
            FOR v_zones, v_head IN
                SELECT k.zones, h.id
                FROM (SELECT s::text[] AS zones FROM unnest(v_sets) s) k
                CROSS JOIN LATERAL (
                    SELECT q.priority, q.last_call, q.created_at, q.id FROM queue_pool q
                    WHERE q.queue_zones = k.zones AND q.id <> ALL (v_seen)
                    ORDER BY q.priority DESC, q.last_call ASC NULLS FIRST, q.created_at, q.id
                    LIMIT 1
                ) h
                ORDER BY h.priority DESC, h.last_call ASC NULLS FIRST, h.created_at, h.id
            LOOP
                -- The head just ranked, taken by its id unless another agent holds it or
                -- took it since (queue_ready reads it again; a claim or a listing made since
                -- is for the rule check): reading the set again, past the prospects held
                -- back at its head, costs more.
                SELECT h.id INTO v_candidate FROM queue_ready h
                WHERE h.id = v_head
                FOR UPDATE OF h SKIP LOCKED;
                IF v_candidate IS NULL THEN
                    SELECT q.id INTO v_candidate FROM queue_pool q
                    WHERE q.queue_zones = v_zones AND q.id <> ALL (v_seen)
                    ORDER BY q.priority DESC, q.last_call ASC NULLS FIRST, q.created_at, q.id
                    LIMIT 1
                    FOR UPDATE OF q SKIP LOCKED;
                END IF;
                EXIT WHEN v_candidate IS NOT NULL;
            END LOOP;
            -- Nothing in the sets found earlier: look at the queue again before answering
            -- "nothing callable" (a set may have joined the queue or opened since).
            IF v_candidate IS NULL AND NOT v_refresh THEN
                v_refresh := true;
                CONTINUE;
            END IF;
        END IF;

        IF v_candidate IS NULL THEN
            v_stage := v_stage + 1;
            CONTINUE;
        END IF;
        v_seen := v_seen || v_candidate;
        phone_number := (SELECT p.phone FROM prospects p WHERE p.id = v_candidate);
        -- Another agent is starting a call to the number: take another prospect.
        CONTINUE WHEN NOT lock_number(phone_number, false);
        SELECT * INTO v_refusal FROM call_refusal(v_candidate, p_agent_id, NULL, true);
        IF v_refusal.code IS NULL THEN
            -- Checked just now under this transaction's locks: record it without a second check.
            prospect_id := v_candidate;
            SELECT * INTO active_call_id, call_log_id, started_at, active_call
            FROM record_call_start(v_candidate, p_agent_id, phone_number, NULL);
            RETURN NEXT;
            RETURN;
        END IF;
        -- A cap the queue's filters cannot see (a manager lowered it, or calls were logged
        -- on another path): close the prospect at the total cap, or set it aside until the
        -- cap lifts, as ending the call that reaches a cap does. It is refused once, not
        -- on every nextLead while it stays at the head of the queue.
        IF v_refusal.code = 'MAX_ATTEMPTS_REACHED' THEN
            PERFORM hold_at_attempt_cap(v_candidate, v_refusal.until IS NULL, v_refusal.until);
        END IF;
        -- Its set closed since the sets were found (hours ending off the minute): find them
        -- again rather than walk through the rest of a closed set.
        IF v_refusal.code = 'OUTSIDE_CALLING_HOURS' THEN
            v_refresh := true;
        END IF;
    END LOOP;
END
$$;

-- Why nothing is callable: how many prospects in the queue each rule holds back right
-- now (a prospect held by several rules counts under each), in two parts.
-- held_back_shared() holds for every agent alike and reads every prospect, once, with no
-- subquery per row: the sets that hold prospects back (calls in progress, listed numbers,
-- assignments, reserved callbacks) are hashed once, and calling hours are decided once per
-- set of zones. It counts all live assignments and every callback reserved for anyone;
-- the server may share it between agents for a few seconds. held_back_own() is what to
-- take off that for one agent (their own assignments, their own due callbacks), from the
-- small tables only.
CREATE OR REPLACE FUNCTION held_back_shared() RETURNS TABLE (code text, prospects bigint)
LANGUAGE sql STABLE AS $$
    WITH rules AS MATERIALIZED (SELECT callback_grace FROM dialing_rules),
    live AS (
        SELECT p.*, in_queue(p) AS live, recycling(p, now()) AS recycling FROM prospects p
    ), flags AS (
        SELECT p.final_at IS NOT NULL AS closed,
               p.live,
               CASE WHEN p.live THEN p.queue_zones END AS zones,
               p.live AND p.id IN (SELECT prospect_id FROM active_calls) AS in_call,
               p.live AND p.phone IN (
                   SELECT d.phone FROM do_not_call d WHERE do_not_call_in_force(d, now())) AS dnc,
               p.live AND called_recently(p.last_call, now()) AS recent,
               p.live AND p.recycling AS recycling,
               p.live AND p.id IN (
                   SELECT la.prospect_id FROM lead_assignments la
                   WHERE assignment_is_live(la, now())) AS assigned,
               p.live AND p.id IN (
                   SELECT cb.prospect_id FROM callbacks cb
                   WHERE cb.taken_at IS NULL
                     AND (cb.due_at > now() OR callback_reserves(
                              cb, NULL, now(), (SELECT callback_grace FROM rules)))) AS callback
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
                   SELECT 1 FROM closed_time_zones(prospect_time_zones(b.zones), now()))) AS hours,
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

-- What held_back_shared() counts that does not hold this agent back: prospects in the
-- queue assigned to them, and those whose only reserved callbacks are theirs and due.
CREATE OR REPLACE FUNCTION held_back_own(p_agent_id uuid) RETURNS TABLE (code text, prospects bigint)
LANGUAGE sql STABLE AS $$
    WITH rules AS MATERIALIZED (SELECT callback_grace FROM dialing_rules)
    SELECT 'ASSIGNED_TO_OTHER_AGENT', count(*)
    FROM lead_assignments la JOIN prospects p ON p.id = la.prospect_id
    WHERE la.agent_id = p_agent_id AND assignment_is_live(la, now()) AND in_queue(p)
    UNION ALL
    SELECT 'CALLBACK_PENDING', count(DISTINCT cb.prospect_id)
    FROM callbacks cb JOIN prospects p ON p.id = cb.prospect_id
    WHERE cb.agent_id = p_agent_id AND cb.due_at <= now()
      AND callback_reserves(cb, NULL, now(), (SELECT callback_grace FROM rules))
      AND in_queue(p)
      AND NOT EXISTS (
          SELECT 1 FROM callbacks o
          WHERE o.prospect_id = cb.prospect_id AND o.taken_at IS NULL
            AND (o.due_at > now()
                 OR callback_reserves(o, p_agent_id, now(), (SELECT callback_grace FROM rules))))
$$;

-- Both parts together, read now: what nextLead answers an agent when nothing is callable.
CREATE OR REPLACE FUNCTION held_back(p_agent_id uuid) RETURNS TABLE (code text, prospects bigint)
LANGUAGE sql STABLE AS $$
    SELECT s.code, s.prospects - coalesce(o.prospects, 0)
    FROM held_back_shared() s LEFT JOIN held_back_own(p_agent_id) o USING (code)
$$;
