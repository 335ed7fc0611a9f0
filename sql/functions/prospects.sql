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
