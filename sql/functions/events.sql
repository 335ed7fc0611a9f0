-- Call events: each start and end of a call is sent with NOTIFY inside its transaction,
-- with the transaction's id; a snapshot says which transactions it shows.

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

-- Send a call event (the call as active_call_json() shows it) with NOTIFY; delivered only if the transaction commits, and in commit
-- order. It carries the transaction's id, which tells a server whether a snapshot of the
-- active calls already shows it (see active_calls_snapshot()); nothing is locked until
-- commit beyond what NOTIFY itself takes.
CREATE OR REPLACE FUNCTION publish_call_event(p_type text, p_call jsonb, p_outcome text)
RETURNS void
LANGUAGE sql AS $$
    SELECT pg_notify('active_calls', jsonb_build_object(
        'xid', pg_current_xact_id()::text, 'type', p_type, 'at', clock_timestamp(),
        'active_call', p_call, 'outcome', p_outcome)::text)
$$;

-- Every active call and the snapshot it was read in (pg_current_snapshot(): which
-- transactions it sees), in one statement; then a fence, a NOTIFY on the events' channel
-- sent when this statement commits, so after every event the snapshot can show. The
-- server that asked (p_fence names it) counts the events before the fence that the
-- snapshot already shows and numbers the snapshot after the last of them.
CREATE OR REPLACE FUNCTION active_calls_snapshot(
    p_fence text, OUT snapshot text, OUT calls jsonb)
LANGUAGE sql AS $$
    SELECT pg_current_snapshot()::text,
           coalesce((SELECT jsonb_agg(active_call_json(a) ORDER BY a.started_at, a.id)
                     FROM active_calls a), '[]'::jsonb)
    FROM (SELECT pg_notify('active_calls', jsonb_build_object('fence', p_fence)::text)) fence
$$;
