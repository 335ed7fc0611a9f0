-- Reports for managers (the seed's Monitoring queries). Calls count by when they started,
-- archived ones included. Whole periods come from the rollups (migration 005) plus the
-- changes not folded into them yet; the partial periods at either end of a range come from
-- the call logs themselves, so every answer equals counting the call logs directly.

-- name: fold_call_stats
-- Add journaled call changes into the rollups; NULL when $1 is false and another fold runs.
SELECT fold_call_stats($1);

-- name: agent_performance
-- Per caller who called in [$1, $2), and every active agent: calls, calls per outcome (NULL:
-- not ended), contacts and talk time. Whole UTC days come from agent_daily_call_stats.
WITH bounds AS (
    SELECT least(date_trunc('day', $1::timestamptz + interval '1 day' - interval '1 microsecond', 'UTC'),
                 $2::timestamptz) AS whole_from,
           date_trunc('day', $2::timestamptz, 'UTC') AS day_floor
), whole AS (
    SELECT b.whole_from, greatest(b.day_floor, b.whole_from) AS whole_to FROM bounds b
), counted AS (
    SELECT s.caller_id, s.outcome, s.calls, s.timed_calls, s.talk_seconds
    FROM agent_daily_call_stats s, whole w
    WHERE s.day >= (w.whole_from AT TIME ZONE 'UTC')::date
      AND s.day < (w.whole_to AT TIME ZONE 'UTC')::date
    UNION ALL
    SELECT j.caller_id, j.outcome, j.calls, CASE WHEN j.duration IS NULL THEN 0 ELSE j.calls END,
           j.calls::bigint * coalesce(j.duration, 0)
    FROM call_stats_changes j, whole w
    WHERE j.started_at >= w.whole_from AND j.started_at < w.whole_to
    UNION ALL
    SELECT c.caller_id, c.outcome, 1, (c.duration IS NOT NULL)::int, coalesce(c.duration, 0)
    FROM call_logs_with_archive c, whole w
    WHERE c.started_at >= $1 AND c.started_at < w.whole_from
    UNION ALL
    SELECT c.caller_id, c.outcome, 1, (c.duration IS NOT NULL)::int, coalesce(c.duration, 0)
    FROM call_logs_with_archive c, whole w
    WHERE c.started_at >= w.whole_to AND c.started_at < $2
), per_outcome AS (
    SELECT caller_id, outcome, sum(calls) AS calls, sum(timed_calls) AS timed_calls,
           sum(talk_seconds) AS talk_seconds
    FROM counted
    GROUP BY caller_id, outcome
    HAVING sum(calls) <> 0
)
SELECT u.id AS agent_id,
       coalesce(sum(o.calls), 0)::bigint AS calls,
       coalesce(sum(o.calls) FILTER (WHERE d.counts_as_contact), 0)::bigint AS contacts,
       coalesce(sum(o.calls) FILTER (WHERE o.outcome IS NULL), 0)::bigint AS calls_without_outcome,
       coalesce(sum(o.timed_calls), 0)::bigint AS timed_calls,
       coalesce(sum(o.talk_seconds), 0)::bigint AS talk_seconds,
       coalesce(jsonb_agg(jsonb_build_object(
                    'outcome', o.outcome, 'calls', o.calls,
                    'contact', coalesce(d.counts_as_contact, false))
                ORDER BY o.calls DESC, o.outcome)
                FILTER (WHERE o.outcome IS NOT NULL), '[]') AS outcomes
FROM users u
LEFT JOIN per_outcome o ON o.caller_id = u.id
LEFT JOIN dispositions d ON d.name = o.outcome
WHERE o.caller_id IS NOT NULL OR (u.role = 'agent' AND u.active)
GROUP BY u.id, u.name, u.email
ORDER BY calls DESC, u.name, u.email, u.id;

-- name: call_stats
-- Calls and contacts per $3 ('hour' or 'day') in time zone $4 over [$1, $2), every bucket
-- present (zero when quiet). Whole quarter hours come from call_volume_stats.
WITH bounds AS (
    SELECT least(call_stats_period($1::timestamptz + interval '15 minutes' - interval '1 microsecond'),
                 $2::timestamptz) AS whole_from,
           call_stats_period($2::timestamptz) AS period_floor
), whole AS (
    SELECT b.whole_from, greatest(b.period_floor, b.whole_from) AS whole_to FROM bounds b
), counted AS (
    SELECT s.period_start AS at, s.outcome, s.calls
    FROM call_volume_stats s, whole w
    WHERE s.period_start >= w.whole_from AND s.period_start < w.whole_to
    UNION ALL
    SELECT j.started_at, j.outcome, j.calls
    FROM call_stats_changes j, whole w
    WHERE j.started_at >= w.whole_from AND j.started_at < w.whole_to
    UNION ALL
    SELECT c.started_at, c.outcome, 1
    FROM call_logs_with_archive c, whole w
    WHERE c.started_at >= $1 AND c.started_at < w.whole_from
    UNION ALL
    SELECT c.started_at, c.outcome, 1
    FROM call_logs_with_archive c, whole w
    WHERE c.started_at >= w.whole_to AND c.started_at < $2
), per_instant AS (
    -- Fewer rows before the time-zone arithmetic, which costs more than the sums.
    SELECT c.at, sum(c.calls) AS calls, sum(c.calls) FILTER (WHERE d.counts_as_contact) AS contacts
    FROM counted c
    LEFT JOIN dispositions d ON d.name = c.outcome
    GROUP BY c.at
), per_bucket AS (
    SELECT date_trunc($3, p.at, $4) AS bucket, sum(p.calls) AS calls, sum(p.contacts) AS contacts
    FROM per_instant p
    GROUP BY 1
)
SELECT g.bucket, coalesce(p.calls, 0)::bigint AS calls, coalesce(p.contacts, 0)::bigint AS contacts
FROM generate_series(date_trunc($3, $1::timestamptz, $4), $2::timestamptz - interval '1 microsecond',
                     ('1 ' || $3)::interval, $4) AS g(bucket)
LEFT JOIN per_bucket p ON p.bucket = g.bucket
ORDER BY g.bucket;

-- name: prospects_called_multiple_times
-- Prospects with at least $1 calls (archived included), most called first, keyset-paginated
-- on (call_count, prospect_id) < ($2, $3); $4 page size + 1. As of the last fold.
SELECT c.prospect_id, c.call_count
FROM prospect_call_counts c
WHERE c.call_count >= $1
  AND (c.call_count, c.prospect_id) < ($2::int, $3::uuid)
ORDER BY c.call_count DESC, c.prospect_id DESC
LIMIT $4;

-- name: recent_status_changes
-- The newest status changes across all prospects (archived included). $1 how many.
SELECT s.id, s.prospect_id, s.old_status, s.new_status, s.changed_by, s.db_user, s.created_at,
       s.archived
FROM prospect_status_log_with_archive s
ORDER BY s.created_at DESC, s.id DESC
LIMIT $1;
