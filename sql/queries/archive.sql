-- Archiving: old call logs and status changes move out of the hot tables in batches.

-- name: archive_cutoff
-- The moment $1 seconds before now, by the database's clock.
SELECT now() - make_interval(secs => $1);

-- name: archive_plan
-- What archiving with cutoff $1 would move, and the old calls it must leave in place
-- (not ended, or still on the active-call board).
SELECT
    (SELECT count(*) FROM archivable_call_logs c
     WHERE c.started_at < $1::timestamptz) AS call_logs,
    (SELECT count(*) FROM call_logs c
     WHERE c.started_at < $1::timestamptz
       AND (c.ended_at IS NULL
            OR EXISTS (SELECT 1 FROM active_calls a WHERE a.call_log_id = c.id))) AS calls_in_progress,
    (SELECT count(*) FROM prospect_status_log s WHERE s.created_at < $1::timestamptz) AS status_changes,
    (SELECT min(c.started_at) FROM call_logs c) AS oldest_call;

-- name: archive_call_logs
-- Move one batch of ended call logs that started before $1 (at most $2); how many moved.
SELECT archive_call_logs($1, $2);

-- name: archive_status_changes
-- Move one batch of status changes made before $1 (at most $2); how many moved.
SELECT archive_status_changes($1, $2);
