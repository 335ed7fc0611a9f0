-- Lead assignments.

-- name: assign_lead
-- Assign a prospect to an agent, replacing any active assignment. $1 prospect, $2 agent,
-- $3 expires at or NULL, $4 acting user.
SELECT id, prospect_id, agent_id, assigned_by, assigned_at, expires_at, active
FROM assign_lead($1, $2, $3, $4);

-- name: unassign_lead
-- End the prospect's active assignment. $1 prospect, $2 acting user.
SELECT unassign_lead($1, $2);
