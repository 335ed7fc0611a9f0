-- Login throttling: failed attempts slow down the client that makes them, never the
-- account's owner signing in from elsewhere. Every replica counts the same rows.

-- The client a login attempt counts against: an IPv4 address, or an IPv6 /64 (one
-- subscriber's usual allocation, so rotating within it gains nothing); unknown is shared.
CREATE OR REPLACE FUNCTION login_client(p_address inet) RETURNS cidr
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN p_address IS NULL THEN '0.0.0.0/0'::cidr
        WHEN family(p_address) = 4 THEN network(set_masklen(p_address, 32))
        ELSE network(set_masklen(p_address, 64))
    END
$$;

-- Until when a client must wait after p_failures failures, the last at p_last: free
-- attempts first, then p_backoff_seconds, doubling with each further failure up to
-- p_backoff_max_seconds. NULL when it need not wait.
CREATE OR REPLACE FUNCTION login_wait_until(
    p_failures bigint, p_last timestamptz, p_free_failures int,
    p_backoff_seconds float8, p_backoff_max_seconds float8
) RETURNS timestamptz
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN p_failures >= p_free_failures THEN
        p_last + make_interval(secs => least(
            -- The exponent is capped: 2^1000 would overflow float8.
            p_backoff_seconds * 2 ^ least(p_failures - p_free_failures, 60),
            p_backoff_max_seconds))
    END
$$;

-- Start a login attempt for a lower-cased email from a client address. Three answers:
-- - the client must wait: attempt_id NULL, retry_after_seconds how long;
-- - attempts of this client still being checked decide whether it must wait, so this one
--   cannot start yet (both NULL): ask again shortly. As many may be checked at once as
--   failures are left before the wait (one, once waiting has begun), so a burst of
--   concurrent guesses stops exactly at the limit, while a crowd signing in from one
--   address only queues;
-- - it may start: attempt_id, recorded as being checked; finish_login() settles it.
-- Limits: p_max_failures for the email from this client, p_max_address_failures from this
-- client across all emails, counted over the last p_window_seconds.
CREATE OR REPLACE FUNCTION begin_login(
    p_email text, p_address inet, p_max_failures int, p_max_address_failures int,
    p_backoff_seconds float8, p_backoff_max_seconds float8, p_window_seconds float8
) RETURNS TABLE (attempt_id bigint, retry_after_seconds int)
LANGUAGE plpgsql AS $$
DECLARE
    v_client cidr := login_client(p_address);
    v_now timestamptz;
    v_counts record;
    v_wait_until timestamptz;
BEGIN
    -- One attempt of a client at a time reads and writes its rows; only this short step
    -- is serialised, never a password check.
    PERFORM pg_advisory_xact_lock(hashtextextended('login ' || v_client::text, 0));
    v_now := clock_timestamp();
    SELECT count(*) FILTER (WHERE NOT f.in_check AND f.email = p_email) AS email_failed,
           max(f.failed_at) FILTER (WHERE NOT f.in_check AND f.email = p_email) AS email_last,
           count(*) FILTER (WHERE f.in_check AND f.email = p_email) AS email_checking,
           count(*) FILTER (WHERE NOT f.in_check) AS failed,
           max(f.failed_at) FILTER (WHERE NOT f.in_check) AS last,
           count(*) FILTER (WHERE f.in_check) AS checking
    INTO v_counts
    FROM (SELECT l.email, l.failed_at,
                 -- A check unfinished after 30 s never will be (its server died): failed.
                 l.checking AND l.failed_at > v_now - interval '30 seconds' AS in_check
          FROM login_failures l
          WHERE l.address = v_client
            AND l.failed_at > v_now - make_interval(secs => p_window_seconds)) f;
    v_wait_until := greatest(
        login_wait_until(v_counts.email_failed, v_counts.email_last, p_max_failures,
                         p_backoff_seconds, p_backoff_max_seconds),
        login_wait_until(v_counts.failed, v_counts.last, p_max_address_failures,
                         p_backoff_seconds, p_backoff_max_seconds));
    IF v_wait_until > v_now THEN
        RETURN QUERY SELECT NULL::bigint,
            greatest(ceil(extract(epoch FROM v_wait_until - v_now)), 1)::int;
        RETURN;
    END IF;
    IF v_counts.email_checking >= greatest(p_max_failures - v_counts.email_failed, 1)
       OR v_counts.checking >= greatest(p_max_address_failures - v_counts.failed, 1) THEN
        RETURN QUERY SELECT NULL::bigint, NULL::int;
        RETURN;
    END IF;
    RETURN QUERY
        INSERT INTO login_failures (email, address, failed_at, checking)
        VALUES (p_email, v_client, v_now, true)
        RETURNING id, NULL::int;
END
$$;

-- Settle an attempt begin_login() started. A right password forgives that email's
-- failures from that client (the owner mistyping), not other emails' (a sprayer who also
-- holds an account gains nothing); a wrong one is a failure from now, and rows older than
-- the window go.
CREATE OR REPLACE FUNCTION finish_login(
    p_attempt_id bigint, p_succeeded boolean, p_window_seconds float8
) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF p_succeeded THEN
        DELETE FROM login_failures f
        USING login_failures attempt
        WHERE attempt.id = p_attempt_id
          AND f.address = attempt.address AND f.email = attempt.email;
    ELSE
        UPDATE login_failures SET checking = false, failed_at = clock_timestamp()
        WHERE id = p_attempt_id;
        DELETE FROM login_failures
        WHERE failed_at < clock_timestamp() - make_interval(secs => p_window_seconds);
    END IF;
END
$$;
