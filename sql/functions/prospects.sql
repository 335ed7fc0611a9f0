-- Prospects: the update stamp, the status log, whether a prospect is in the queue, and
-- the seed's view of a prospect with its call facts.

CREATE OR REPLACE FUNCTION touch_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END
$$;
CREATE OR REPLACE TRIGGER prospects_touch_updated_at BEFORE UPDATE ON prospects
    FOR EACH ROW EXECUTE FUNCTION touch_updated_at();

-- Every status change is logged, whichever client made it.
CREATE OR REPLACE FUNCTION log_prospect_status_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO prospect_status_log (prospect_id, old_status, new_status, changed_by)
    VALUES (NEW.id, OLD.status, NEW.status, acting_user_id());
    RETURN NEW;
END
$$;
CREATE OR REPLACE TRIGGER prospects_log_status_change AFTER UPDATE OF status ON prospects
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION log_prospect_status_change();

-- Whether the prospect is still worked: no final outcome or used-up attempts closed it,
-- and it was not erased. Inlined by the planner; prospects_queue_idx has the same
-- predicate, so scans that filter on this use that index.
CREATE OR REPLACE FUNCTION in_queue(p_prospect prospects) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT p_prospect.final_at IS NULL AND p_prospect.erased_at IS NULL
$$;

-- Change the given fields of a prospect (NULL keeps a field; p_cleared names the fields to
-- empty: email, company, timeZone), as p_actor, who must be able to claim it
-- (claim_refusal(): agents change unassigned prospects and their own, managers and admins
-- any; nobody an erased one). The status trigger logs the change with the actor.
CREATE OR REPLACE FUNCTION update_prospect(
    p_actor uuid, p_prospect_id uuid, p_name text, p_phone text, p_email text,
    p_company text, p_status text, p_cleared text[], p_time_zone text,
    p_phone_time_zones text[], p_priority int)
RETURNS SETOF prospects
LANGUAGE plpgsql AS $$
DECLARE
    v_refusal record;
BEGIN
    PERFORM act_as(p_actor);
    PERFORM 1 FROM prospects WHERE id = p_prospect_id FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM raise_domain_error('NOT_FOUND', 'Prospect not found', '{"field": "id"}');
    END IF;
    SELECT * INTO v_refusal FROM claim_refusal(p_prospect_id, p_actor);
    IF v_refusal.code IS NOT NULL THEN
        PERFORM raise_domain_error(v_refusal.code, v_refusal.reason,
            jsonb_strip_nulls(jsonb_build_object('until', v_refusal.until)));
    END IF;
    RETURN QUERY
    UPDATE prospects SET
        name = coalesce(p_name, name),
        phone = coalesce(p_phone, phone),
        email = CASE WHEN 'email' = ANY(p_cleared) THEN NULL ELSE coalesce(p_email, email) END,
        company = CASE WHEN 'company' = ANY(p_cleared) THEN NULL ELSE coalesce(p_company, company) END,
        status = coalesce(p_status, status),
        time_zone = CASE WHEN 'timeZone' = ANY(p_cleared) THEN NULL
                         ELSE coalesce(p_time_zone, time_zone) END,
        phone_time_zones = coalesce(p_phone_time_zones, phone_time_zones),
        priority = coalesce(p_priority, priority)
    WHERE id = p_prospect_id
    RETURNING *;
END
$$;

-- The seed's view: a prospect with its call in progress, call count, last call and live
-- assignment.
CREATE OR REPLACE VIEW prospects_with_call_info AS
SELECT p.*,
       ac.caller_id   AS active_caller_id,
       ac.started_at  AS active_call_started_at,
       (ac.id IS NOT NULL) AS in_call,
       coalesce(stats.call_count, 0) AS call_count,
       last_log.caller_id AS last_caller_id,
       last_log.outcome   AS last_outcome,
       la.agent_id        AS assigned_agent_id,
       la.expires_at      AS assignment_expires_at
FROM prospects p
LEFT JOIN active_calls ac ON ac.prospect_id = p.id
LEFT JOIN LATERAL (
    SELECT count(*) AS call_count FROM call_logs c WHERE c.prospect_id = p.id
) stats ON true
LEFT JOIN LATERAL (
    SELECT c.caller_id, c.outcome FROM call_logs c
    WHERE c.prospect_id = p.id ORDER BY c.started_at DESC LIMIT 1
) last_log ON true
LEFT JOIN lead_assignments la ON la.prospect_id = p.id AND assignment_is_live(la, now());

-- One page of prospects, newest first (created_at, id descending) after the cursor
-- (p_after_at, p_after_id) when given: at most p_limit of those with status p_status, whose
-- name, email or company contains p_pattern (a LIKE pattern, its wildcards escaped) or
-- whose phone contains p_digits, and that p_agent holds by a live assignment, each filter
-- when given. The rows are those of one query with all of that in its WHERE clause and
-- ORDER BY created_at DESC, id DESC LIMIT p_limit (REFERENCE in
-- tests/test_search_and_filters.py); only the way to them is chosen here, because no one
-- plan is fast for every filter (docs/search.md):
--
-- * An agent with fewer than p_walk active assignments: from those assignments, sorted.
-- * Otherwise walk the list order (the status index when a status is given, else the
--   newest-first index), testing each prospect, for at most p_walk prospects: a term or
--   agent common among recent prospects fills the page there. If it found some, walk on
--   while the rate it found them at says the rest of the page is nearer than the index's
--   work (up to 5 x p_walk).
-- * If the page is not full and the walk stopped at its budget, the rest comes from the
--   prospects older than the last one walked, found the other way round and sorted: by
--   prospects_search_idx (trigrams) for a term with three letters or digits in a row, else
--   from the agent's assignments. That costs in proportion to how many match, which is
--   few exactly when the walk found few.
--
-- A term that the trigram index cannot take (no three letters or digits in a row), with no
-- agent, is walked to the end of the list if need be; so is any term when the index is
-- missing (a server without pg_trgm: migration 018).
CREATE OR REPLACE FUNCTION prospects_page(
    p_status text, p_pattern text, p_digits text, p_agent uuid,
    p_after_at timestamptz, p_after_id uuid, p_limit int, p_walk int)
RETURNS SETOF prospects
LANGUAGE plpgsql STABLE AS $$
DECLARE
    -- The statements run through EXECUTE, so each is planned for the values at hand (a
    -- status or none, a cursor or none), never from a generic plan. $1 status, $2 pattern,
    -- $3 digits, $4 agent, $5 and $6 the cursor (or the last prospect walked), $7 rows,
    -- $8 walk budget.
    c_walk CONSTANT text := $sql$
        SELECT w.* FROM (
            SELECT p.* FROM prospects p
            WHERE ($1::text IS NULL OR p.status = $1)
              AND ($5::timestamptz IS NULL OR (p.created_at, p.id) < ($5, $6::uuid))
            ORDER BY p.created_at DESC, p.id DESC
            LIMIT $8) w
        WHERE ($2::text IS NULL
               OR w.name ILIKE '%' || $2 || '%'
               OR w.email ILIKE '%' || $2 || '%'
               OR w.company ILIKE '%' || $2 || '%'
               OR ($3::text IS NOT NULL AND w.phone LIKE '%' || $3 || '%'))
          AND ($4::uuid IS NULL OR EXISTS (
                SELECT 1 FROM lead_assignments la
                WHERE la.prospect_id = w.id AND la.agent_id = $4
                  AND assignment_is_live(la, now())))
        ORDER BY w.created_at DESC, w.id DESC
        LIMIT $7 $sql$;
    -- The same without a budget: the planner, told the page size, walks the list order
    -- (a subquery with LIMIT NULL would be planned for the whole list, and sorted).
    c_list CONSTANT text := $sql$
        SELECT p.* FROM prospects p
        WHERE ($1::text IS NULL OR p.status = $1)
          AND ($5::timestamptz IS NULL OR (p.created_at, p.id) < ($5, $6::uuid))
          AND ($2::text IS NULL
               OR p.name ILIKE '%' || $2 || '%'
               OR p.email ILIKE '%' || $2 || '%'
               OR p.company ILIKE '%' || $2 || '%'
               OR ($3::text IS NOT NULL AND p.phone LIKE '%' || $3 || '%'))
        ORDER BY p.created_at DESC, p.id DESC
        LIMIT $7 $sql$;
    -- The last prospect a walk of $8 prospects reads.
    c_walk_edge CONSTANT text := $sql$
        SELECT p.created_at, p.id FROM prospects p
        WHERE ($1::text IS NULL OR p.status = $1)
          AND ($5::timestamptz IS NULL OR (p.created_at, p.id) < ($5, $6::uuid))
        ORDER BY p.created_at DESC, p.id DESC
        OFFSET $8 - 1 LIMIT 1 $sql$;
    -- Found by the trigram index: its condition on the text it indexes (which contains
    -- each column, so it passes every prospect that matches), then the exact one. $8 the
    -- digits, unless the term is those digits (its condition already covers them).
    -- MATERIALIZED: the planner may not walk the list order instead.
    c_by_term CONSTANT text := $sql$
        WITH found AS MATERIALIZED (
            SELECT p.* FROM prospects p
            WHERE (p.name || ' ' || coalesce(p.email, '') || ' ' || coalesce(p.company, '')
                       || ' ' || p.phone ILIKE '%' || $2 || '%'
                   OR ($8::text IS NOT NULL
                       AND p.name || ' ' || coalesce(p.email, '') || ' ' || coalesce(p.company, '')
                               || ' ' || p.phone LIKE '%' || $8 || '%'))
              AND (p.name ILIKE '%' || $2 || '%'
                   OR p.email ILIKE '%' || $2 || '%'
                   OR p.company ILIKE '%' || $2 || '%'
                   OR ($3::text IS NOT NULL AND p.phone LIKE '%' || $3 || '%'))
              AND ($1::text IS NULL OR p.status = $1)
              AND ($5::timestamptz IS NULL OR (p.created_at, p.id) < ($5, $6::uuid))
              AND ($4::uuid IS NULL OR EXISTS (
                    SELECT 1 FROM lead_assignments la
                    WHERE la.prospect_id = p.id AND la.agent_id = $4
                      AND assignment_is_live(la, now()))))
        SELECT * FROM found ORDER BY created_at DESC, id DESC LIMIT $7 $sql$;
    -- Found from the agent's live assignments.
    c_by_agent CONSTANT text := $sql$
        WITH found AS MATERIALIZED (
            SELECT p.* FROM prospects p
            WHERE p.id IN (SELECT la.prospect_id FROM lead_assignments la
                           WHERE la.agent_id = $4 AND assignment_is_live(la, now()))
              AND ($2::text IS NULL
                   OR p.name ILIKE '%' || $2 || '%'
                   OR p.email ILIKE '%' || $2 || '%'
                   OR p.company ILIKE '%' || $2 || '%'
                   OR ($3::text IS NOT NULL AND p.phone LIKE '%' || $3 || '%'))
              AND ($1::text IS NULL OR p.status = $1)
              AND ($5::timestamptz IS NULL OR (p.created_at, p.id) < ($5, $6::uuid)))
        SELECT * FROM found ORDER BY created_at DESC, id DESC LIMIT $7 $sql$;
    v_indexed boolean := coalesce(p_pattern ~ '[[:alnum:]]{3}', false)
        AND to_regclass('prospects_search_idx') IS NOT NULL;
    v_few_assigned boolean := p_agent IS NOT NULL AND (
        SELECT count(*) FROM (SELECT FROM lead_assignments la
                              WHERE la.agent_id = p_agent AND la.active
                              LIMIT p_walk) mine) < p_walk;
    v_from_at timestamptz := p_after_at;
    v_from_id uuid := p_after_id;
    v_budget bigint := p_walk;
    v_walked bigint := 0;
    v_found bigint := 0;
    v_rows bigint;
    v_rest float8;
    -- About how many prospects there are (the planner's count, kept by ANALYZE).
    v_prospects float8 := (SELECT greatest(reltuples, 0) FROM pg_class
                           WHERE oid = 'prospects'::regclass);
BEGIN
    IF v_few_assigned THEN
        RETURN QUERY EXECUTE c_by_agent USING p_status, p_pattern, p_digits, p_agent,
            p_after_at, p_after_id, p_limit;
        RETURN;
    END IF;
    IF p_agent IS NULL AND NOT v_indexed THEN
        -- A status alone (every prospect walked is on the page), no filter at all, or a
        -- term no index finds.
        RETURN QUERY EXECUTE c_list USING p_status, p_pattern, p_digits, p_agent,
            p_after_at, p_after_id, p_limit;
        RETURN;
    END IF;
    LOOP
        RETURN QUERY EXECUTE c_walk USING p_status, p_pattern, p_digits, p_agent,
            v_from_at, v_from_id, p_limit - v_found::int, v_budget::int;
        GET DIAGNOSTICS v_rows = ROW_COUNT;
        v_found := v_found + v_rows;
        IF v_found >= p_limit THEN
            RETURN;
        END IF;
        EXECUTE c_walk_edge INTO v_from_at, v_from_id USING p_status, p_pattern, p_digits,
            p_agent, v_from_at, v_from_id, p_limit, v_budget::int;
        IF v_from_at IS NULL THEN
            RETURN;  -- the walk read to the end of the list
        END IF;
        v_walked := v_walked + v_budget;
        -- The walk so far is a sample: at its rate, the rest of the page is v_rest
        -- prospects further, and the index would sort about (rate x prospects) matches,
        -- each costing about three prospects walked (a heap visit and two tests against
        -- one test; docs/search.md). Walk on, with room to spare, while that is cheaper,
        -- up to five budgets in all.
        EXIT WHEN v_found = 0 OR v_walked >= 5 * p_walk;
        v_rest := (p_limit - v_found) * v_walked / v_found::float8;
        EXIT WHEN v_rest > 3 * v_found * v_prospects / v_walked;
        v_budget := least(ceil(1.5 * v_rest), 5 * p_walk - v_walked);
    END LOOP;
    RETURN QUERY EXECUTE CASE WHEN v_indexed THEN c_by_term ELSE c_by_agent END
        USING p_status, p_pattern, p_digits, p_agent, v_from_at, v_from_id,
              p_limit - v_found::int, nullif(p_digits, p_pattern);
END
$$;
