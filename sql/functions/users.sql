-- Users and sessions: who is acting, and revoking what they signed in with.

-- Who is acting: set per transaction by the server (set_config('app.user_id', id, true)).
-- A change made by hand in psql has no app user; the log then keeps the database role.
CREATE OR REPLACE FUNCTION acting_user_id() RETURNS uuid
LANGUAGE sql STABLE AS $$
    SELECT nullif(current_setting('app.user_id', true), '')::uuid
$$;

-- The acting user must exist and be active; returns their role.
CREATE OR REPLACE FUNCTION act_as(p_user_id uuid) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_role text;
BEGIN
    SELECT role INTO v_role FROM users WHERE id = p_user_id AND active;
    IF NOT FOUND THEN
        PERFORM raise_domain_error('FORBIDDEN', 'User is unknown or deactivated');
    END IF;
    PERFORM set_config('app.user_id', p_user_id::text, true);
    RETURN v_role;
END
$$;

CREATE OR REPLACE TRIGGER users_touch_updated_at BEFORE UPDATE ON users
    FOR EACH ROW EXECUTE FUNCTION touch_updated_at();

-- Deactivating a user ends their live connections on every replica.
CREATE OR REPLACE FUNCTION notify_user_deactivated() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('sessions_revoked', jsonb_build_object('user_id', NEW.id)::text);
    RETURN NEW;
END
$$;
CREATE OR REPLACE TRIGGER users_notify_deactivated AFTER UPDATE OF active ON users
    FOR EACH ROW WHEN (OLD.active AND NOT NEW.active)
    EXECUTE FUNCTION notify_user_deactivated();

-- Revoke a token and tell every replica to close connections made with it.
CREATE OR REPLACE FUNCTION revoke_session(p_token_hash bytea) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE sessions SET revoked_at = now() WHERE token_hash = p_token_hash AND revoked_at IS NULL;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    PERFORM pg_notify('sessions_revoked',
        jsonb_build_object('token_hash', encode(p_token_hash, 'hex'))::text);
    RETURN true;
END
$$;
