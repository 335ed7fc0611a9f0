-- Add report rollups, archive tables for old call logs and status changes, and privacy requests (export, erase).

-- Which outcomes mean the person was reached: reports count those calls as contacts.
ALTER TABLE dispositions ADD COLUMN counts_as_contact boolean NOT NULL DEFAULT false;
UPDATE dispositions SET counts_as_contact = true
WHERE name IN ('Connected', 'Not Interested', 'Callback Requested', 'Do Not Call');

-- Reports read the partial periods at either end of a range, and the archiver the oldest
-- calls, by start time. A plain index: covering ones would include columns that ending a
-- call changes, and cost every endCall its HOT update.
CREATE INDEX call_logs_started_at_idx ON call_logs (started_at);


-- Archive ---------------------------------------------------------------------------------

-- Old rows move here in batches (`server.py archive`). Same columns in the same order, so
-- a batch is one DELETE ... RETURNING * feeding an INSERT; a test keeps them in step.
CREATE TABLE call_logs_archive (LIKE call_logs INCLUDING CONSTRAINTS);
ALTER TABLE call_logs_archive
    ADD CONSTRAINT call_logs_archive_pkey PRIMARY KEY (id),
    ADD CONSTRAINT call_logs_archive_prospect_id_fkey
        FOREIGN KEY (prospect_id) REFERENCES prospects (id) ON DELETE CASCADE,
    ADD CONSTRAINT call_logs_archive_caller_id_fkey FOREIGN KEY (caller_id) REFERENCES users (id),
    ADD CONSTRAINT call_logs_archive_outcome_fkey
        FOREIGN KEY (outcome) REFERENCES dispositions (name) ON UPDATE CASCADE;
CREATE INDEX call_logs_archive_prospect_id_idx ON call_logs_archive (prospect_id, started_at DESC);
CREATE INDEX call_logs_archive_started_at_idx ON call_logs_archive (started_at);

CREATE TABLE prospect_status_log_archive (LIKE prospect_status_log INCLUDING CONSTRAINTS);
ALTER TABLE prospect_status_log_archive
    ADD CONSTRAINT prospect_status_log_archive_pkey PRIMARY KEY (id),
    ADD CONSTRAINT prospect_status_log_archive_prospect_id_fkey
        FOREIGN KEY (prospect_id) REFERENCES prospects (id) ON DELETE CASCADE,
    ADD CONSTRAINT prospect_status_log_archive_changed_by_fkey
        FOREIGN KEY (changed_by) REFERENCES users (id) ON DELETE SET NULL;
CREATE INDEX prospect_status_log_archive_prospect_idx
    ON prospect_status_log_archive (prospect_id, created_at DESC, id DESC);
CREATE INDEX prospect_status_log_archive_created_at_idx
    ON prospect_status_log_archive (created_at DESC, id DESC);

-- Reports and exports see archived rows too; `archived` tells them apart.
CREATE VIEW call_logs_with_archive AS
SELECT id, prospect_id, caller_id, phone_number, from_number, started_at, ended_at, outcome,
       duration, notes, recording_url, created_at, false AS archived
FROM call_logs
UNION ALL
SELECT id, prospect_id, caller_id, phone_number, from_number, started_at, ended_at, outcome,
       duration, notes, recording_url, created_at, true
FROM call_logs_archive;

CREATE VIEW prospect_status_log_with_archive AS
SELECT id, prospect_id, old_status, new_status, changed_by, db_user, created_at, false AS archived
FROM prospect_status_log
UNION ALL
SELECT id, prospect_id, old_status, new_status, changed_by, db_user, created_at, true
FROM prospect_status_log_archive;

-- Move up to p_limit ended call logs that started before p_cutoff into the archive, oldest
-- first, in this one statement; returns how many moved. Never a call in progress (no end
-- yet, or still in active_calls), never one the gap rule may still read, and SKIP LOCKED
-- so a batch never waits for, nor holds up, calls being started and ended.
CREATE FUNCTION archive_call_logs(p_cutoff timestamptz, p_limit int) RETURNS int
LANGUAGE plpgsql AS $$
DECLARE
    v_moved int;
BEGIN
    -- A move changes nothing the reports count: the journal triggers skip it.
    PERFORM set_config('app.archiving', 'on', true);
    WITH moved AS (
        DELETE FROM call_logs
        WHERE id IN (
            SELECT c.id FROM call_logs c
            WHERE c.started_at < least(p_cutoff, now() - min_call_interval())
              AND c.ended_at IS NOT NULL
              AND NOT EXISTS (SELECT 1 FROM active_calls a WHERE a.call_log_id = c.id)
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
CREATE FUNCTION archive_status_changes(p_cutoff timestamptz, p_limit int) RETURNS int
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


-- Report rollups ------------------------------------------------------------------------

-- Every change to call logs (hot or archived) appends +1/-1 rows here, in the same
-- transaction, and fold_call_stats() later adds them into the rollups below. Appending
-- never waits on a lock, so starting and ending calls gains no contention and no deadlock
-- risk; reports read the rollups plus the changes not folded yet, so they stay exact.
CREATE TABLE call_stats_changes (
    prospect_id  uuid NOT NULL,
    caller_id    uuid NOT NULL,
    started_at   timestamptz NOT NULL,
    outcome      text,
    duration     int,
    calls        int NOT NULL
);

-- Calls per caller, UTC day and outcome (NULL: not ended yet), with their talk time.
CREATE TABLE agent_daily_call_stats (
    day           date NOT NULL,
    caller_id     uuid NOT NULL,
    outcome       text,
    calls         int NOT NULL,
    timed_calls   int NOT NULL,
    talk_seconds  bigint NOT NULL
);
CREATE UNIQUE INDEX agent_daily_call_stats_key
    ON agent_daily_call_stats (day, caller_id, outcome) NULLS NOT DISTINCT;

-- Calls per quarter hour and outcome across the floor: quarter hours, because every time
-- zone in use today is a whole number of quarter hours from UTC, so days and hours in any
-- zone are made of whole periods.
CREATE TABLE call_volume_stats (
    period_start  timestamptz NOT NULL,
    outcome       text,
    calls         int NOT NULL
);
CREATE UNIQUE INDEX call_volume_stats_key ON call_volume_stats (period_start, outcome) NULLS NOT DISTINCT;

-- Calls per prospect, for prospectsCalledMultipleTimes (no foreign key: folding must never
-- wait on a prospect's row lock; rows of deleted prospects fold down to zero).
CREATE TABLE prospect_call_counts (
    prospect_id  uuid PRIMARY KEY,
    call_count   int NOT NULL
);
CREATE INDEX prospect_call_counts_rank_idx ON prospect_call_counts (call_count DESC, prospect_id DESC);

-- The quarter hour a call counts in.
CREATE FUNCTION call_stats_period(p_at timestamptz) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT date_bin('15 minutes', p_at, timestamptz '2000-01-01 00:00:00+00')
$$;

-- Statement-level, so a bulk insert of a million calls journals in one INSERT ... SELECT.
CREATE FUNCTION journal_call_log_changes() RETURNS trigger
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

CREATE TRIGGER call_logs_journal_insert AFTER INSERT ON call_logs
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION journal_call_log_changes();
CREATE TRIGGER call_logs_journal_update AFTER UPDATE ON call_logs
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION journal_call_log_changes();
CREATE TRIGGER call_logs_journal_delete AFTER DELETE ON call_logs
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION journal_call_log_changes();
CREATE TRIGGER call_logs_archive_journal_insert AFTER INSERT ON call_logs_archive
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION journal_call_log_changes();
CREATE TRIGGER call_logs_archive_journal_update AFTER UPDATE ON call_logs_archive
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION journal_call_log_changes();
CREATE TRIGGER call_logs_archive_journal_delete AFTER DELETE ON call_logs_archive
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION journal_call_log_changes();

-- Add the journaled changes into the rollups; returns how many were folded. One folder at
-- a time (an advisory lock), so only folders ever lock rollup rows. With p_wait false it
-- returns NULL at once while another fold runs.
CREATE FUNCTION fold_call_stats(p_wait boolean DEFAULT true) RETURNS bigint
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
CREATE FUNCTION rebuild_call_stats() RETURNS void
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

SELECT rebuild_call_stats();


-- Privacy requests ------------------------------------------------------------------------

ALTER TABLE prospects ADD COLUMN erased_at timestamptz;

-- Who asked for what about whom, and when. No foreign key to prospects: the record of a
-- request outlives the prospect it was about.
CREATE TABLE privacy_requests (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    prospect_id   uuid NOT NULL,
    kind          text NOT NULL CONSTRAINT privacy_requests_kind_known CHECK (kind IN ('export', 'erase')),
    requested_by  uuid NOT NULL REFERENCES users (id),
    created_at    timestamptz NOT NULL DEFAULT now(),
    details       jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX privacy_requests_prospect_idx ON privacy_requests (prospect_id, created_at);

-- An erased prospect's phone: +999 is no country's calling code, so the placeholder still
-- passes the E.164 check and stays unique, yet rings nowhere and matches no real number.
CREATE SEQUENCE erased_phone_seq;
CREATE FUNCTION erased_phone() RETURNS text
LANGUAGE sql AS $$
    SELECT '+999' || lpad(nextval('erased_phone_seq')::text, 12, '0')
$$;

-- Nobody calls an erased prospect again, whichever path starts the call.
CREATE FUNCTION refuse_calls_to_erased_prospects() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM new_rows n JOIN prospects p ON p.id = n.prospect_id
               WHERE p.erased_at IS NOT NULL) THEN
        PERFORM raise_domain_error('CONFLICT',
            'Prospect was erased on a privacy request and cannot be called');
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER call_logs_refuse_erased_prospects AFTER INSERT ON call_logs
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_calls_to_erased_prospects();

-- Privacy requests are an admin's; the acting user must be one.
CREATE FUNCTION act_as_admin(p_user_id uuid) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF act_as(p_user_id) <> 'admin' THEN
        PERFORM raise_domain_error('FORBIDDEN', 'Only admins handle privacy requests');
    END IF;
END
$$;

-- Everything held about a prospect, as JSON: the prospect, its calls and status changes
-- (archived ones too), assignments, the call in progress, the privacy requests about it,
-- and the rows of any other table that references the prospect. Logged as a request.
CREATE FUNCTION export_prospect(p_prospect_id uuid, p_actor uuid) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_export jsonb;
    v_other jsonb := '{}';
    v_rows jsonb;
    v_reference record;
BEGIN
    PERFORM act_as_admin(p_actor);
    IF NOT EXISTS (SELECT 1 FROM prospects WHERE id = p_prospect_id) THEN
        PERFORM raise_domain_error('NOT_FOUND', 'Prospect not found', '{"field": "id"}');
    END IF;
    INSERT INTO privacy_requests (prospect_id, kind, requested_by)
    VALUES (p_prospect_id, 'export', p_actor);

    -- Tables added later that reference prospects (callbacks, ...) are exported too.
    FOR v_reference IN
        SELECT c.conrelid::regclass AS table_name, a.attname AS column_name
        FROM pg_constraint c
        JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
        WHERE c.contype = 'f' AND c.confrelid = 'prospects'::regclass
          AND cardinality(c.conkey) = 1
          AND c.conrelid NOT IN ('call_logs'::regclass, 'call_logs_archive'::regclass,
                                 'prospect_status_log'::regclass,
                                 'prospect_status_log_archive'::regclass,
                                 'lead_assignments'::regclass, 'active_calls'::regclass)
        ORDER BY 1::text
    LOOP
        EXECUTE format('SELECT coalesce(jsonb_agg(to_jsonb(t)), ''[]'') FROM %s t WHERE t.%I = $1',
                       v_reference.table_name, v_reference.column_name)
        INTO v_rows USING p_prospect_id;
        v_other := v_other || jsonb_build_object(v_reference.table_name::text, v_rows);
    END LOOP;

    SELECT jsonb_build_object(
        'exported_at', now(),
        'prospect', to_jsonb(p),
        'call_logs', coalesce((
            SELECT jsonb_agg(to_jsonb(c) ORDER BY c.started_at, c.id)
            FROM call_logs_with_archive c WHERE c.prospect_id = p.id), '[]'),
        'status_changes', coalesce((
            SELECT jsonb_agg(to_jsonb(s) ORDER BY s.created_at, s.id)
            FROM prospect_status_log_with_archive s WHERE s.prospect_id = p.id), '[]'),
        'lead_assignments', coalesce((
            SELECT jsonb_agg(to_jsonb(la) ORDER BY la.assigned_at, la.id)
            FROM lead_assignments la WHERE la.prospect_id = p.id), '[]'),
        'active_call', (SELECT to_jsonb(a) FROM active_calls a WHERE a.prospect_id = p.id),
        'privacy_requests', coalesce((
            SELECT jsonb_agg(to_jsonb(r) ORDER BY r.id)
            FROM privacy_requests r WHERE r.prospect_id = p.id), '[]'),
        'other_records', v_other)
    INTO v_export
    FROM prospects p
    WHERE p.id = p_prospect_id;
    RETURN v_export;
END
$$;

-- Remove a prospect's personal data but keep what reports count: name, email, company and
-- phone go (the phone becomes a placeholder), and so do the numbers called, notes and
-- recording URLs of its calls (archived ones too); outcomes, durations, times, callers and
-- status history stay. Refused while the prospect is on a call. Logged as a request.
CREATE FUNCTION erase_prospect(
    p_prospect_id uuid, p_actor uuid,
    OUT erased_at timestamptz, OUT call_logs_erased int, OUT archived_call_logs_erased int)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_prospect prospects%ROWTYPE;
    v_phone text;
BEGIN
    PERFORM act_as_admin(p_actor);
    -- Lock order: the row lock that leaves foreign-key checks free (the archiver inserts
    -- rows referencing this prospect), then the calls, and the phone (a key) last, so
    -- neither side ever waits for the other in a cycle.
    SELECT * INTO v_prospect FROM prospects WHERE id = p_prospect_id FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        PERFORM raise_domain_error('NOT_FOUND', 'Prospect not found', '{"field": "id"}');
    END IF;
    IF EXISTS (SELECT 1 FROM active_calls a WHERE a.prospect_id = p_prospect_id) THEN
        PERFORM raise_domain_error('CONFLICT', 'Prospect is on a call; erase it once the call ends');
    END IF;
    v_phone := CASE WHEN v_prospect.erased_at IS NULL THEN erased_phone() ELSE v_prospect.phone END;

    UPDATE call_logs SET phone_number = v_phone, notes = NULL, recording_url = NULL
    WHERE prospect_id = p_prospect_id;
    GET DIAGNOSTICS call_logs_erased = ROW_COUNT;
    UPDATE call_logs_archive SET phone_number = v_phone, notes = NULL, recording_url = NULL
    WHERE prospect_id = p_prospect_id;
    GET DIAGNOSTICS archived_call_logs_erased = ROW_COUNT;

    UPDATE prospects
       SET name = '[erased]', phone = v_phone, email = NULL, company = NULL,
           erased_at = coalesce(prospects.erased_at, now())
     WHERE id = p_prospect_id
    RETURNING prospects.erased_at INTO erased_at;

    INSERT INTO privacy_requests (prospect_id, kind, requested_by, details)
    VALUES (p_prospect_id, 'erase', p_actor, jsonb_build_object(
        'call_logs', call_logs_erased, 'archived_call_logs', archived_call_logs_erased));
END
$$;
