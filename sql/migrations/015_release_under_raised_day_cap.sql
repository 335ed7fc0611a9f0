-- Raising the per-day cap frees the prospects it set aside until the callee's next day.

-- Ending the call that uses up a day's attempts, or nextLead refusing a prospect at a
-- cap, sets recycle_until to the start of the callee's next local day (migration 012).
-- recycle_until does not say which rule set it: an outcome's recycle delay sets it too,
-- and so does nextLead meeting the rolling cap per number. So when a manager raises the
-- per-day cap, each prospect set aside is worked out again, under the new rules, from
-- what can hold it: the recycle delay of the latest outcome that has one (finish_call sets
-- ended_at + delay), and the attempt caps as call_eligibility() applies them (their
-- "until"; it reads the rules this transaction has just changed). The prospect waits for
-- the latest of those still ahead, or not at all; never longer than it already did. In
-- the transaction that raises the cap, like the total cap's trigger (migration 012).
CREATE FUNCTION release_prospects_under_raised_day_cap() RETURNS trigger
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
        WHERE p.recycle_until > now() AND p.final_at IS NULL AND p.erased_at IS NULL
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
