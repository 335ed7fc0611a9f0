-- The archive: old call logs and status changes move out of the hot tables in batches;
-- reports and exports read both through the *_with_archive views.

-- Reports and exports see archived rows too; `archived` tells them apart.
CREATE OR REPLACE VIEW call_logs_with_archive AS
SELECT id, prospect_id, caller_id, phone_number, from_number, started_at, ended_at, outcome,
       duration, notes, recording_url, created_at, false AS archived
FROM call_logs
UNION ALL
SELECT id, prospect_id, caller_id, phone_number, from_number, started_at, ended_at, outcome,
       duration, notes, recording_url, created_at, true
FROM call_logs_archive;

CREATE OR REPLACE VIEW prospect_status_log_with_archive AS
SELECT id, prospect_id, old_status, new_status, changed_by, db_user, created_at, false AS archived
FROM prospect_status_log
UNION ALL
SELECT id, prospect_id, old_status, new_status, changed_by, db_user, created_at, true
FROM prospect_status_log_archive;

-- Call logs the archive may take (callers add their cutoff): ended, off the active-call
-- board, and older than the re-call gap (which looks for the last call in call_logs only).
CREATE OR REPLACE VIEW archivable_call_logs AS
SELECT c.*
FROM call_logs c
WHERE c.started_at < now() - min_call_interval()
  AND c.ended_at IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM active_calls a WHERE a.call_log_id = c.id);

-- Move up to p_limit archivable call logs that started before p_cutoff into the archive,
-- oldest first, in one statement; returns how many moved. SKIP LOCKED, so a batch never
-- waits for, nor holds up, calls being started and ended.
CREATE OR REPLACE FUNCTION archive_call_logs(p_cutoff timestamptz, p_limit int) RETURNS int
LANGUAGE plpgsql AS $$
DECLARE
    v_moved int;
BEGIN
    -- A move changes nothing the reports count: the journal triggers skip it.
    PERFORM set_config('app.archiving', 'on', true);
    WITH moved AS (
        DELETE FROM call_logs
        WHERE id IN (
            SELECT c.id FROM archivable_call_logs c
            WHERE c.started_at < p_cutoff
            ORDER BY c.started_at
            LIMIT p_limit
            FOR UPDATE SKIP LOCKED)
        RETURNING *
    )
    INSERT INTO call_logs_archive SELECT * FROM moved;
    GET DIAGNOSTICS v_moved = ROW_COUNT;
    PERFORM set_config('app.archiving', '', true);
    RETURN v_moved;
END
$$;

-- Move up to p_limit status changes made before p_cutoff into the archive; returns how many.
CREATE OR REPLACE FUNCTION archive_status_changes(p_cutoff timestamptz, p_limit int) RETURNS int
LANGUAGE plpgsql AS $$
DECLARE
    v_moved int;
BEGIN
    WITH moved AS (
        DELETE FROM prospect_status_log
        WHERE id IN (
            SELECT s.id FROM prospect_status_log s
            WHERE s.created_at < p_cutoff
            ORDER BY s.created_at
            LIMIT p_limit
            FOR UPDATE SKIP LOCKED)
        RETURNING *
    )
    INSERT INTO prospect_status_log_archive SELECT * FROM moved;
    GET DIAGNOSTICS v_moved = ROW_COUNT;
    RETURN v_moved;
END
$$;
