-- When a manager raises an attempt cap, the prospects it held come back in the same
-- transaction. (Lowering a cap needs no work here: nextLead takes each prospect over the
-- new cap out of the queue the first time it meets one.)

-- Raising the total cap returns the prospects it closed that are now under it.
CREATE OR REPLACE FUNCTION reopen_prospects_under_raised_cap() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE prospects p
       SET final_at = NULL, closed_by = NULL
     WHERE p.closed_by = 'attempts' AND p.erased_at IS NULL
       AND NOT EXISTS (SELECT 1 FROM attempt_caps(p.id, prospect_time_zones(p.queue_zones), now()) c
                       WHERE c.total_reached);
    RETURN NULL;
END
$$;
CREATE OR REPLACE TRIGGER dialing_rules_reopen_under_raised_cap
    AFTER UPDATE OF max_attempts_total ON dialing_rules
    FOR EACH ROW WHEN (NEW.max_attempts_total > OLD.max_attempts_total)
    EXECUTE FUNCTION reopen_prospects_under_raised_cap();

-- Raising the per-day cap frees the prospects it set aside until the callee's next day.
-- recycle_until does not say which rule set it (an outcome's recycle delay sets it too,
-- and so does nextLead meeting the rolling cap per number), so each prospect set aside is
-- worked out again under the new rules from what can hold it: the recycle delay of the
-- latest outcome that has one, and the attempt caps as call_eligibility() applies them.
-- It waits for the latest of those still ahead, or not at all; never longer than before.
CREATE OR REPLACE FUNCTION release_prospects_under_raised_day_cap() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    WITH held AS (
        SELECT p.id, p.recycle_until, greatest(
            (SELECT c.ended_at + d.recycle_delay
               FROM call_logs c JOIN dispositions d ON d.name = c.outcome
              WHERE c.prospect_id = p.id AND d.recycle_delay IS NOT NULL
              ORDER BY c.ended_at DESC LIMIT 1),
            (SELECT max(e.until) FROM call_eligibility(p.id, NULL) e
              WHERE e.code = 'MAX_ATTEMPTS_REACHED' AND e.blocking)
        ) AS until
        FROM prospects p
        WHERE recycling(p, now()) AND in_queue(p)
    )
    UPDATE prospects p
       SET recycle_until = CASE WHEN h.until > now() THEN h.until END
      FROM held h
     WHERE p.id = h.id
       AND (h.until IS NULL OR h.until < h.recycle_until);
    RETURN NULL;
END
$$;
CREATE OR REPLACE TRIGGER dialing_rules_release_under_raised_day_cap
    AFTER UPDATE OF max_attempts_per_day ON dialing_rules
    FOR EACH ROW WHEN (NEW.max_attempts_per_day > OLD.max_attempts_per_day)
    EXECUTE FUNCTION release_prospects_under_raised_day_cap();
