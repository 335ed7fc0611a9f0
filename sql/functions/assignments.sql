-- Lead assignments: which agent works a prospect, and until when.

-- Whether an assignment holds its prospect at p_at: active and not yet expired. Inlined
-- by the planner, so lookups still use the partial indexes on active assignments.
CREATE OR REPLACE FUNCTION assignment_is_live(p_assignment lead_assignments, p_at timestamptz)
RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT p_assignment.active
       AND (p_assignment.expires_at IS NULL OR p_assignment.expires_at > p_at)
$$;

-- Assign a lead to an agent, replacing any active assignment, in one transaction.
CREATE OR REPLACE FUNCTION assign_lead(
    p_prospect_id uuid, p_agent_id uuid, p_expires_at timestamptz, p_assigned_by uuid)
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
CREATE OR REPLACE FUNCTION unassign_lead(p_prospect_id uuid, p_unassigned_by uuid) RETURNS boolean
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
