-- Call events: each start and end of a call is a row of call_events, written in its
-- transaction with the transaction's id; each server reads the rows committed since the
-- snapshot it last read in (docs/live-events.md).

-- An active call as events and snapshots carry it: with the names a wallboard shows.
CREATE OR REPLACE FUNCTION active_call_json(p_call active_calls) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'id', p_call.id, 'prospect_id', p_call.prospect_id, 'prospect_name', p.name,
        'caller_id', p_call.caller_id, 'caller_name', coalesce(nullif(u.name, ''), u.email),
        'call_log_id', p_call.call_log_id, 'phone_number', p_call.phone_number,
        'started_at', p_call.started_at, 'lease_expires_at', p_call.lease_expires_at)
    FROM prospects p, users u
    WHERE p.id = p_call.prospect_id AND u.id = p_call.caller_id
$$;

-- Publish a call event (the call as active_call_json() shows it): a row of call_events,
-- seen by the servers only if the transaction commits. Nothing is held until commit; the
-- server that made the change wakes the others after it commits (resolvers/events.py,
-- wake_listeners), and they also read every second, so a change made from psql arrives too.
CREATE OR REPLACE FUNCTION publish_call_event(p_type text, p_call jsonb, p_outcome text)
RETURNS void
LANGUAGE sql AS $$
    INSERT INTO call_events (payload)
    VALUES (jsonb_build_object('type', p_type, 'at', clock_timestamp(),
                               'active_call', p_call, 'outcome', p_outcome))
$$;

-- Every active call and the snapshot it is read in (pg_current_snapshot(): which
-- transactions it shows). STABLE, so in a statement with call_events_after() both see
-- one snapshot: the server hands it out exactly at the end of a batch of events.
CREATE OR REPLACE FUNCTION active_calls_snapshot(OUT snapshot text, OUT calls jsonb)
LANGUAGE sql STABLE AS $$
    SELECT pg_current_snapshot()::text,
           coalesce((SELECT jsonb_agg(active_call_json(a) ORDER BY a.started_at, a.id)
                     FROM active_calls a), '[]'::jsonb)
$$;

-- The events committed after the snapshot p_after and up to this statement's own
-- snapshot (returned as snapshot, to pass as p_after next time), in transaction id order,
-- then their order within a transaction; with the active calls in that same snapshot
-- when p_with_calls. missed: pruning deleted events that p_after did not show (a server
-- that read so long ago must resynchronise its subscribers). origin names this database
-- and the run of the server it is on (its oid, the postmaster's start): after a restart,
-- a failover or a swap it differs, and p_after may mean nothing here (a promoted standby
-- may lack commits already read, and reuse their transaction ids), so the server
-- resynchronises. p_after NULL: start now. STABLE and one statement:
-- pg_current_snapshot() is the snapshot the rows are read in.
CREATE OR REPLACE FUNCTION call_events_after(
    p_after text, p_with_calls boolean,
    OUT snapshot text, OUT missed boolean, OUT events jsonb, OUT calls jsonb,
    OUT origin text)
LANGUAGE sql STABLE AS $$
    SELECT now_.current::text,
           coalesce(pg_snapshot_xmin(after_.previous)
                    <= (SELECT pruned_through FROM call_events_pruned), false),
           CASE WHEN after_.previous IS NULL THEN '[]'::jsonb ELSE coalesce(
               (SELECT jsonb_agg(e.payload || jsonb_build_object('xid', e.xid::text)
                                 ORDER BY e.xid, e.id)
                FROM call_events e
                WHERE e.xid >= pg_snapshot_xmin(after_.previous)
                  AND e.xid < pg_snapshot_xmax(now_.current)
                  AND NOT pg_visible_in_snapshot(e.xid, after_.previous)),
               '[]'::jsonb) END,
           CASE WHEN p_with_calls THEN (SELECT s.calls FROM active_calls_snapshot() s) END,
           (SELECT d.oid FROM pg_database d WHERE d.datname = current_database())::text
               || '@' || pg_postmaster_start_time()::text
    FROM (SELECT pg_current_snapshot() AS current) now_,
         (SELECT p_after::pg_snapshot AS previous) after_
$$;

-- Delete the events older than p_keep (only of transactions every snapshot now shows, so
-- a long transaction does not make every server resynchronise) and record the newest
-- transaction id deleted. Cheap, and safe on every replica at once: racing deletes skip
-- rows already gone, and the record only moves forward. Returns how many were deleted.
CREATE OR REPLACE FUNCTION prune_call_events(p_keep interval) RETURNS bigint
LANGUAGE sql AS $$
    WITH gone AS (
        DELETE FROM call_events
        WHERE created_at < now() - p_keep
          AND xid < pg_snapshot_xmin(pg_current_snapshot())
        RETURNING xid
    ), recorded AS (
        UPDATE call_events_pruned
           SET pruned_through = greatest(pruned_through, (SELECT max(xid) FROM gone))
         WHERE EXISTS (SELECT FROM gone)
    )
    SELECT count(*) FROM gone
$$;
