-- Call events: each start and end of a call is numbered in commit order and sent with
-- NOTIFY inside its transaction; a snapshot says which number it is current as of.

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

-- Number a call event and NOTIFY it; delivered only if the transaction commits. Call it
-- last in the transaction: it holds the counter's row lock until commit, which makes the
-- numbers follow commit order without gaps, so a subscriber that sees 41 then 43 knows it
-- missed 42.
CREATE OR REPLACE FUNCTION publish_call_event(p_type text, p_call active_calls, p_outcome text)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_seq bigint;
BEGIN
    UPDATE call_event_sequence SET seq = seq + 1 RETURNING seq INTO v_seq;
    PERFORM pg_notify('active_calls', jsonb_build_object(
        'seq', v_seq, 'type', p_type, 'at', clock_timestamp(),
        'active_call', active_call_json(p_call), 'outcome', p_outcome)::text);
    RETURN v_seq;
END
$$;

-- Every active call and the event number it is current as of, read in one snapshot.
CREATE OR REPLACE FUNCTION active_calls_snapshot(OUT seq bigint, OUT calls jsonb)
LANGUAGE sql STABLE AS $$
    SELECT (SELECT s.seq FROM call_event_sequence s),
           coalesce((SELECT jsonb_agg(active_call_json(a) ORDER BY a.started_at, a.id)
                     FROM active_calls a), '[]'::jsonb)
$$;
