-- Sessions: which user a bearer token signs in.

-- The active user behind a live token (its SHA-256 hash), or no row. Inlined by the
-- planner into the statements that use it: the session_user query and every compiled
-- read (graph/read_plans.py), which look the session up in the statement itself.
CREATE OR REPLACE FUNCTION live_session_user(p_token_hash bytea) RETURNS SETOF users
LANGUAGE sql STABLE AS $$
    SELECT u.* FROM sessions s JOIN users u ON u.id = s.user_id
    WHERE s.token_hash = p_token_hash AND s.revoked_at IS NULL AND s.expires_at > now()
      AND u.active
$$;
