-- Calls: checks, starts, ends, histories and the active-call board.

-- name: call_eligibility
-- Every call rule for this caller and prospect, in order, at $3 (now when NULL), and
-- whether it refuses a call and nextLead. $1 prospect id, $2 caller id, $3 instant.
SELECT rule_order, code, blocking, queue_only, until, reason, last_call_time, last_caller_id,
       rule_refuses(blocking, queue_only, false) AS refuses_call,
       rule_refuses(blocking, queue_only, true) AS refuses_next_lead
FROM call_eligibility($1, $2, NULL, coalesce($3::timestamptz, now()));

-- name: call_refusal
-- The first rule refusing this caller a call to this prospect now (code NULL when none)
-- and the prospect's last call. $1 prospect id, $2 caller id.
SELECT code, reason, until, last_call_time, last_caller_id FROM call_refusal($1, $2);

-- name: can_call_prospect
-- The seed's JSON answer. $1 prospect id, $2 caller id.
SELECT can_call_prospect($1, $2);

-- name: start_call
-- Check and start a call atomically. $1 prospect id, $2 caller id, $3 phone or NULL, $4 from number.
SELECT active_call_id, call_log_id, started_at, phone_number, active_call
FROM start_call($1, $2, $3, $4);

-- name: end_call
-- End a call atomically. $1 prospect id, $2 call log id, $3 acting user, $4 outcome,
-- $5 duration, $6 notes, $7 recording URL, $8 callback time or NULL.
SELECT id, prospect_id, caller_id, phone_number, from_number, started_at, ended_at,
       outcome, duration, notes, recording_url
FROM end_call($1, $2, $3, $4, $5, $6, $7, $8);

-- name: call_history_for_prospects
-- The newest calls of each prospect, newest first. $1 uuid[], $2 per-prospect limit.
SELECT c.id, c.prospect_id, c.caller_id, c.phone_number, c.from_number, c.started_at,
       c.ended_at, c.outcome, c.duration, c.notes, c.recording_url
FROM unnest($1::uuid[]) AS wanted(id)
CROSS JOIN LATERAL (
    SELECT * FROM call_logs l
    WHERE l.prospect_id = wanted.id
    ORDER BY l.started_at DESC
    LIMIT $2
) c;

-- name: active_calls
-- Every active call, oldest first, with the names a wallboard shows.
SELECT a.id, a.prospect_id, a.caller_id, a.call_log_id, a.phone_number, a.started_at,
       a.lease_expires_at, p.name AS prospect_name,
       coalesce(nullif(u.name, ''), u.email) AS caller_name
FROM active_calls a
JOIN prospects p ON p.id = a.prospect_id
JOIN users u ON u.id = a.caller_id
ORDER BY a.started_at, a.id;

-- name: active_calls_for_prospects
-- The active call of each prospect that has one. $1 uuid[].
SELECT a.id, a.prospect_id, a.caller_id, a.call_log_id, a.phone_number, a.started_at,
       a.lease_expires_at, p.name AS prospect_name,
       coalesce(nullif(u.name, ''), u.email) AS caller_name
FROM active_calls a
JOIN prospects p ON p.id = a.prospect_id
JOIN users u ON u.id = a.caller_id
WHERE a.prospect_id = ANY($1::uuid[]);

-- name: call_events_after
-- The call events committed since snapshot $1 (NULL: none, start now), and the snapshot
-- read in; with every active call in that snapshot when $2; and which database run it is.
SELECT snapshot, missed, events, calls, origin FROM call_events_after($1, $2);

-- name: prune_call_events
-- Delete call events older than $1 seconds; returns how many.
SELECT prune_call_events(make_interval(secs => $1));

-- name: wake_listeners
-- Tell every server that call events were committed: a bare NOTIFY, sent in a transaction
-- of its own once the change has committed (it writes no WAL, so it waits for no flush).
SELECT pg_notify('call_events', '');

-- name: heartbeat_call
-- Extend an active call's lease; the call as events carry it. $1 call log id, $2 acting user.
SELECT active_call_json(h) AS active_call FROM heartbeat_call($1, $2) h;

-- name: expire_lapsed_calls
-- End calls whose lease lapsed, with the Expired outcome; returns how many.
SELECT expire_active_calls(NULL);

-- name: release_calls_started_before
-- End calls older than $1 seconds, with the Expired outcome; returns how many.
SELECT expire_active_calls(now() - make_interval(secs => $1));

-- name: list_dispositions
-- The outcomes a call can end with, in display order.
SELECT name, sets_status, counts_as_contact, is_final, adds_to_do_not_call, schedules_callback,
       extract(epoch FROM recycle_delay)::int AS recycle_delay_seconds
FROM dispositions ORDER BY position, name;
