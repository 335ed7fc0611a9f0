-- Prospects: single reads, pages, writes and their histories.

-- name: prospect_by_id
-- One prospect or no row. $1 prospect id.
SELECT id, name, phone, email, company, status, last_call, created_at, updated_at,
       time_zone, priority, prospect_time_zones(queue_zones) AS time_zones
FROM prospects WHERE id = $1;

-- name: prospects_by_ids
-- Prospects by id, for the DataLoader. $1 uuid[].
SELECT id, name, phone, email, company, status, last_call, created_at, updated_at,
       time_zone, priority, prospect_time_zones(queue_zones) AS time_zones
FROM prospects WHERE id = ANY($1::uuid[]);

-- name: prospects_page
-- A page of prospects, newest first, keyset-paginated on (created_at, id): prospects_page()
-- (functions/prospects.sql) picks the plan. $1 status or NULL, $2 search text (a LIKE
-- pattern, wildcards escaped) or NULL, $3 assigned agent or NULL, $4 cursor created_at or
-- NULL, $5 cursor id or NULL, $6 page size + 1, $7 phone digits to match or NULL, $8 how
-- many prospects to walk in list order before an index finds the rest.
SELECT id, name, phone, email, company, status, last_call, created_at, updated_at,
       time_zone, priority, prospect_time_zones(queue_zones) AS time_zones
FROM prospects_page($1, $2, $7, $3, $4, $5, $6, $8)
ORDER BY created_at DESC, id DESC;

-- name: insert_prospect
-- A new prospect. $1 name, $2 E.164 phone, $3 email, $4 company, $5 status or NULL for the
-- default, $6 explicit time zone or NULL, $7 the phone's time zones, $8 priority or NULL.
INSERT INTO prospects (name, phone, email, company, status, time_zone, phone_time_zones, priority)
VALUES ($1, $2, $3, $4, coalesce($5, 'New'), $6, $7, coalesce($8, 0))
RETURNING id, name, phone, email, company, status, last_call, created_at, updated_at,
       time_zone, priority, prospect_time_zones(queue_zones) AS time_zones;

-- name: update_prospect
-- Change the given fields as the acting user, who must be able to claim the prospect
-- (NULL keeps a field; $8 lists the fields to clear). $1 acting user, $2 id, $3 name,
-- $4 phone, $5 email, $6 company, $7 status, $8 text[] of cleared fields, $9 explicit time
-- zone, $10 the new phone's time zones (with $4), $11 priority.
SELECT id, name, phone, email, company, status, last_call, created_at, updated_at,
       time_zone, priority, prospect_time_zones(queue_zones) AS time_zones
FROM update_prospect($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11);

-- name: status_history_for_prospects
-- The newest status changes of each prospect, newest first. $1 uuid[], $2 per-prospect limit.
SELECT l.id, l.prospect_id, l.old_status, l.new_status, l.changed_by, l.db_user, l.created_at
FROM unnest($1::uuid[]) AS wanted(id)
CROSS JOIN LATERAL (
    SELECT * FROM prospect_status_log s
    WHERE s.prospect_id = wanted.id
    ORDER BY s.created_at DESC, s.id DESC
    LIMIT $2
) l;

-- name: assignments_for_prospects
-- The live (active, unexpired) assignment of each prospect. $1 uuid[].
SELECT la.id, la.prospect_id, la.agent_id, la.assigned_by, la.assigned_at, la.expires_at, la.active
FROM lead_assignments la
WHERE la.prospect_id = ANY($1::uuid[]) AND assignment_is_live(la, now());

-- name: time_zone_exists
-- Whether the database knows an IANA time zone. $1 zone name.
SELECT EXISTS (SELECT 1 FROM time_zones WHERE name = $1);
