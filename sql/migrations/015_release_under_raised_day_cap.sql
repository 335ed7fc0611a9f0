-- Raising the per-day cap frees the prospects it set aside until the callee's next day.

-- Ending the call that uses up a day's attempts, or nextLead refusing a prospect at a
-- cap, sets recycle_until to the start of the callee's next local day (migration 012).
-- recycle_until does not say which rule set it: an outcome's recycle delay sets it too,
-- and so does nextLead meeting the rolling cap per number. So when a manager raises the
-- per-day cap, each prospect set aside is worked out again from what can hold it, under
-- the new rules: the recycle delay of the latest outcome that has one (finish_call sets
-- ended_at + delay), the per-day cap (calls since the callee's local midnight, in the
-- first zone, as call_eligibility counts them), and the rolling cap per number. The
-- prospect waits for the latest of those still ahead, or not at all; never longer than it
-- already did. In the transaction that raises the cap, like the total cap's trigger.
CREATE FUNCTION release_prospects_under_raised_day_cap() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    WITH waiting AS (
        SELECT p.id, p.phone, p.recycle_until,
               (prospect_time_zones(p.time_zone, p.phone_time_zones))[1] AS zone
        FROM prospects p
        WHERE p.recycle_until > now() AND p.final_at IS NULL AND p.erased_at IS NULL
    ),
    held AS (
        SELECT w.id, w.recycle_until, greatest(
            (SELECT c.ended_at + d.recycle_delay
               FROM call_logs c JOIN dispositions d ON d.name = c.outcome
              WHERE c.prospect_id = w.id AND d.recycle_delay IS NOT NULL
              ORDER BY c.ended_at DESC LIMIT 1),
            (SELECT (date_trunc('day', now() AT TIME ZONE w.zone) + interval '1 day')
                    AT TIME ZONE w.zone
               FROM call_logs c
              WHERE c.prospect_id = w.id
                AND c.started_at >= date_trunc('day', now() AT TIME ZONE w.zone) AT TIME ZONE w.zone
                AND c.started_at <= now()
             HAVING count(*) >= NEW.max_attempts_per_day),
            (SELECT min(r.started_at) + interval '24 hours'
               FROM (SELECT c.started_at FROM call_logs c
                      WHERE c.phone_number = w.phone
                        AND c.started_at > now() - interval '24 hours' AND c.started_at <= now()
                      ORDER BY c.started_at DESC
                      LIMIT NEW.max_attempts_per_number_24h) r
             HAVING count(*) >= NEW.max_attempts_per_number_24h)
        ) AS until
        FROM waiting w
    )
    UPDATE prospects p
       SET recycle_until = CASE WHEN h.until > now() THEN h.until END
      FROM held h
     WHERE p.id = h.id
       AND (h.until IS NULL OR h.until < h.recycle_until);
    RETURN NULL;
END
$$;
CREATE TRIGGER dialing_rules_release_under_raised_day_cap
    AFTER UPDATE OF max_attempts_per_day ON dialing_rules
    FOR EACH ROW WHEN (NEW.max_attempts_per_day > OLD.max_attempts_per_day)
    EXECUTE FUNCTION release_prospects_under_raised_day_cap();
