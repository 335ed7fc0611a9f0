-- Report rollups: every change to call logs is journaled in its transaction and folded
-- into per-agent, per-quarter-hour and per-prospect counts later.

-- The quarter hour a call counts in.
CREATE OR REPLACE FUNCTION call_stats_period(p_at timestamptz) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT date_bin('15 minutes', p_at, timestamptz '2000-01-01 00:00:00+00')
$$;

-- Statement-level, so a bulk insert of a million calls journals in one INSERT ... SELECT.
CREATE OR REPLACE FUNCTION journal_call_log_changes() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('app.archiving', true) = 'on' THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'INSERT' THEN
        INSERT INTO call_stats_changes (prospect_id, caller_id, started_at, outcome, duration, calls)
        SELECT n.prospect_id, n.caller_id, n.started_at, n.outcome, n.duration, 1 FROM new_rows n;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO call_stats_changes (prospect_id, caller_id, started_at, outcome, duration, calls)
        SELECT o.prospect_id, o.caller_id, o.started_at, o.outcome, o.duration, -1 FROM old_rows o;
    ELSE
        -- Only changes to what reports count; clearing notes (an erasure) journals nothing.
        INSERT INTO call_stats_changes (prospect_id, caller_id, started_at, outcome, duration, calls)
        SELECT v.prospect_id, v.caller_id, v.started_at, v.outcome, v.duration, v.calls
        FROM old_rows o
        JOIN new_rows n ON n.id = o.id
        CROSS JOIN LATERAL (VALUES
            (o.prospect_id, o.caller_id, o.started_at, o.outcome, o.duration, -1),
            (n.prospect_id, n.caller_id, n.started_at, n.outcome, n.duration, 1)
        ) AS v(prospect_id, caller_id, started_at, outcome, duration, calls)
        WHERE (o.prospect_id, o.caller_id, o.started_at, o.outcome, o.duration)
              IS DISTINCT FROM (n.prospect_id, n.caller_id, n.started_at, n.outcome, n.duration);
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE TRIGGER call_logs_journal_insert AFTER INSERT ON call_logs
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION journal_call_log_changes();
CREATE OR REPLACE TRIGGER call_logs_journal_update AFTER UPDATE ON call_logs
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION journal_call_log_changes();
CREATE OR REPLACE TRIGGER call_logs_journal_delete AFTER DELETE ON call_logs
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION journal_call_log_changes();
CREATE OR REPLACE TRIGGER call_logs_archive_journal_insert AFTER INSERT ON call_logs_archive
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION journal_call_log_changes();
CREATE OR REPLACE TRIGGER call_logs_archive_journal_update AFTER UPDATE ON call_logs_archive
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION journal_call_log_changes();
CREATE OR REPLACE TRIGGER call_logs_archive_journal_delete AFTER DELETE ON call_logs_archive
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION journal_call_log_changes();

-- Add the journaled changes into the rollups; returns how many were folded. One folder at
-- a time (an advisory lock), so only folders ever lock rollup rows. With p_wait false it
-- returns NULL at once while another fold runs.
CREATE OR REPLACE FUNCTION fold_call_stats(p_wait boolean DEFAULT true) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_folded bigint;
BEGIN
    IF p_wait THEN
        PERFORM pg_advisory_xact_lock(7243311005);
    ELSIF NOT pg_try_advisory_xact_lock(7243311005) THEN
        RETURN NULL;
    END IF;
    WITH folded AS (
        DELETE FROM call_stats_changes RETURNING *
    ), agents AS (
        INSERT INTO agent_daily_call_stats AS s
               (day, caller_id, outcome, calls, timed_calls, talk_seconds)
        SELECT (f.started_at AT TIME ZONE 'UTC')::date, f.caller_id, f.outcome, sum(f.calls),
               coalesce(sum(f.calls) FILTER (WHERE f.duration IS NOT NULL), 0),
               coalesce(sum(f.calls::bigint * f.duration), 0)
        FROM folded f
        GROUP BY 1, 2, 3
        ON CONFLICT (day, caller_id, outcome) DO UPDATE
        SET calls = s.calls + excluded.calls,
            timed_calls = s.timed_calls + excluded.timed_calls,
            talk_seconds = s.talk_seconds + excluded.talk_seconds
    ), volume AS (
        INSERT INTO call_volume_stats AS s (period_start, outcome, calls)
        SELECT call_stats_period(f.started_at), f.outcome, sum(f.calls)
        FROM folded f
        GROUP BY 1, 2
        ON CONFLICT (period_start, outcome) DO UPDATE SET calls = s.calls + excluded.calls
    ), counts AS (
        INSERT INTO prospect_call_counts AS s (prospect_id, call_count)
        SELECT f.prospect_id, sum(f.calls)
        FROM folded f
        GROUP BY 1
        HAVING sum(f.calls) <> 0
        ON CONFLICT (prospect_id) DO UPDATE SET call_count = s.call_count + excluded.call_count
    )
    SELECT count(*) INTO v_folded FROM folded;
    RETURN v_folded;
END
$$;

-- Recompute the rollups from every call log, hot and archived. Writers of call logs wait
-- while it runs (seconds per ten million calls): for this migration, bulk loads and repair.
CREATE OR REPLACE FUNCTION rebuild_call_stats() RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(7243311005);
    LOCK TABLE call_logs, call_logs_archive IN SHARE MODE;
    DELETE FROM call_stats_changes;
    DELETE FROM agent_daily_call_stats;
    DELETE FROM call_volume_stats;
    DELETE FROM prospect_call_counts;
    INSERT INTO agent_daily_call_stats (day, caller_id, outcome, calls, timed_calls, talk_seconds)
    SELECT (c.started_at AT TIME ZONE 'UTC')::date, c.caller_id, c.outcome, count(*),
           count(c.duration), coalesce(sum(c.duration), 0)
    FROM call_logs_with_archive c
    GROUP BY 1, 2, 3;
    INSERT INTO call_volume_stats (period_start, outcome, calls)
    SELECT call_stats_period(c.started_at), c.outcome, count(*)
    FROM call_logs_with_archive c
    GROUP BY 1, 2;
    INSERT INTO prospect_call_counts (prospect_id, call_count)
    SELECT c.prospect_id, count(*)
    FROM call_logs_with_archive c
    GROUP BY 1;
END
$$;
