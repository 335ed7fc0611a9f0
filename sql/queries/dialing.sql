-- Dialing rules: next lead, Do-Not-Call, calling hours, caps, callbacks.

-- name: next_lead
-- Hand the agent the best callable prospect and start the call; no row when none. $1 agent.
SELECT prospect_id, active_call_id, call_log_id, started_at, phone_number, active_call
FROM next_lead($1);

-- name: held_back
-- How many prospects in the queue each rule holds back right now. $1 agent.
SELECT code, prospects FROM held_back($1) ORDER BY prospects DESC, code;

-- name: held_back_shared
-- The part of held_back() that is the same for every agent (reads every prospect).
SELECT code, prospects FROM held_back_shared();

-- name: held_back_own
-- What to take off held_back_shared() for one agent. $1 agent.
SELECT code, prospects FROM held_back_own($1);

-- name: add_do_not_call
-- List a number; an already listed number keeps its entry. $1 phone, $2 scope, $3 source,
-- $4 reason, $5 expires at, $6 acting user.
INSERT INTO do_not_call (phone, scope, source, reason, expires_at, added_by)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (phone) WHERE removed_at IS NULL DO UPDATE SET phone = EXCLUDED.phone
RETURNING id, phone, scope, source, reason, expires_at, added_by, added_at, removed_at;

-- name: remove_do_not_call
-- Take a number off the list, recording who and why. $1 phone, $2 acting user, $3 reason.
UPDATE do_not_call SET removed_at = now(), removed_by = $2, removal_reason = $3
WHERE phone = $1 AND removed_at IS NULL
RETURNING id;

-- name: list_do_not_call
-- Listed numbers, newest first, optionally one number's history. $1 phone or NULL,
-- $2 include removed entries, $3 limit.
SELECT id, phone, scope, source, reason, expires_at, added_by, added_at, removed_at
FROM do_not_call
WHERE ($1::text IS NULL OR phone = $1) AND ($2 OR removed_at IS NULL)
ORDER BY added_at DESC, id
LIMIT $3;

-- name: calling_hours
-- The calling window per weekday (0 = Sunday). PostgreSQL takes '24:00' for the end of
-- the day (psql users write it), which Python's time cannot hold: it comes back as the
-- day's last microsecond, what the API itself stores for 24:00.
SELECT weekday, opens_at, least(closes_at, time '23:59:59.999999') AS closes_at
FROM calling_hours ORDER BY weekday;

-- name: clear_calling_hours
-- Close every weekday (before inserting the new week in the same transaction).
DELETE FROM calling_hours;

-- name: insert_calling_hours
-- Open weekdays. $1 weekdays, $2 opening times, $3 closing times.
INSERT INTO calling_hours (weekday, opens_at, closes_at)
SELECT * FROM unnest($1::int[], $2::time[], $3::time[]);

-- name: dialing_rules
-- The attempt caps, callback grace and default zone.
SELECT max_attempts_total, max_attempts_per_day, max_attempts_per_number_24h,
       extract(epoch FROM callback_grace)::int AS callback_grace_seconds, default_time_zone
FROM dialing_rules;

-- name: update_dialing_rules
-- Change the given settings (NULL keeps one). $1 total, $2 per day, $3 per number 24h,
-- $4 callback grace seconds, $5 default zone.
UPDATE dialing_rules SET
    max_attempts_total = coalesce($1, max_attempts_total),
    max_attempts_per_day = coalesce($2, max_attempts_per_day),
    max_attempts_per_number_24h = coalesce($3, max_attempts_per_number_24h),
    callback_grace = coalesce(make_interval(secs => $4), callback_grace),
    default_time_zone = coalesce($5, default_time_zone)
RETURNING max_attempts_total, max_attempts_per_day, max_attempts_per_number_24h,
          extract(epoch FROM callback_grace)::int AS callback_grace_seconds, default_time_zone;

-- name: schedule_callback
-- Schedule a callback as the acting user, who must be able to claim the prospect. $1
-- prospect, $2 due at, $3 agent or NULL for anyone, $4 acting user, $5 move it to the next
-- calling window when $2 falls outside.
SELECT id, prospect_id, due_at, agent_id, created_by, created_at, taken_at
FROM schedule_callback($1, $2, $3, $4, $5);

-- name: open_callbacks
-- Callbacks not yet taken, soonest first; only the agent's own and anyone's when $1 is
-- given. $1 agent or NULL for all, $2 limit.
SELECT id, prospect_id, due_at, agent_id, created_by, created_at, taken_at
FROM callbacks
WHERE taken_at IS NULL AND ($1::uuid IS NULL OR agent_id = $1 OR agent_id IS NULL)
ORDER BY due_at, id
LIMIT $2;

-- name: update_disposition
-- Change what an outcome means (NULL keeps a field). $1 name, $2 sets status,
-- $3 counts as contact, $4 final, $5 adds to Do-Not-Call, $6 schedules a callback,
-- $7 recycle delay seconds (negative clears it).
UPDATE dispositions SET
    sets_status = coalesce($2, sets_status),
    counts_as_contact = coalesce($3, counts_as_contact),
    is_final = coalesce($4, is_final),
    adds_to_do_not_call = coalesce($5, adds_to_do_not_call),
    schedules_callback = coalesce($6, schedules_callback),
    recycle_delay = CASE WHEN $7::int < 0 THEN NULL
                         ELSE coalesce(make_interval(secs => $7), recycle_delay) END
WHERE name = $1
RETURNING name, sets_status, counts_as_contact, is_final, adds_to_do_not_call,
          schedules_callback, extract(epoch FROM recycle_delay)::int AS recycle_delay_seconds;
