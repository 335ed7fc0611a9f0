-- Create the seed's tables, the status log trigger, the view and the seed's indexes.

-- Who is acting: set per transaction by the server (set_config('app.user_id', id, true)).
-- A change made by hand in psql has no app user; the log then keeps the database role.
CREATE FUNCTION acting_user_id() RETURNS uuid
LANGUAGE sql STABLE AS $$
    SELECT nullif(current_setting('app.user_id', true), '')::uuid
$$;

-- The minimum gap between two calls to one prospect, in seconds. The server sets
-- app.min_call_interval_seconds on its connections; psql gets the seed's 5 minutes.
CREATE FUNCTION min_call_interval() RETURNS interval
LANGUAGE sql STABLE AS $$
    SELECT make_interval(secs => coalesce(
        nullif(current_setting('app.min_call_interval_seconds', true), '')::int, 300))
$$;

CREATE FUNCTION touch_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END
$$;

CREATE TABLE users (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email         text NOT NULL
                  CONSTRAINT users_email_format CHECK (email ~ '^[^@\s]+@[^@\s]+$' AND length(email) <= 254),
    name          text NOT NULL DEFAULT ''
                  CONSTRAINT users_name_length CHECK (length(name) <= 200),
    password_hash text NOT NULL,
    role          text NOT NULL
                  CONSTRAINT users_role_known CHECK (role IN ('agent', 'manager', 'admin')),
    active        boolean NOT NULL DEFAULT true,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_email_key ON users (lower(email));
CREATE TRIGGER users_touch_updated_at BEFORE UPDATE ON users
    FOR EACH ROW EXECUTE FUNCTION touch_updated_at();

-- Bearer tokens: only a SHA-256 of the token is stored, so a database dump reveals none.
CREATE TABLE sessions (
    token_hash  bytea PRIMARY KEY,
    user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    revoked_at  timestamptz
);
CREATE INDEX sessions_user_id_idx ON sessions (user_id);

-- Failed logins, by lower-cased email, so every replica throttles the same way.
CREATE TABLE login_failures (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email      text NOT NULL,
    failed_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX login_failures_email_idx ON login_failures (email, failed_at);

-- Statuses are data, so a team can add its own.
CREATE TABLE prospect_statuses (
    name      text PRIMARY KEY CONSTRAINT prospect_statuses_name_length CHECK (length(name) BETWEEN 1 AND 64),
    position  int NOT NULL DEFAULT 0
);
INSERT INTO prospect_statuses (name, position) VALUES
    ('New', 10), ('Attempted', 20), ('Contacted', 30), ('Callback', 40),
    ('Qualified', 50), ('Not Interested', 60), ('Bad Number', 70), ('Do Not Call', 80);

-- Call outcomes and the status each one sets (NULL leaves the status alone).
CREATE TABLE dispositions (
    name         text PRIMARY KEY CONSTRAINT dispositions_name_length CHECK (length(name) BETWEEN 1 AND 64),
    sets_status  text REFERENCES prospect_statuses (name) ON UPDATE CASCADE,
    position     int NOT NULL DEFAULT 0
);
INSERT INTO dispositions (name, sets_status, position) VALUES
    ('Connected', 'Contacted', 10),
    ('Voicemail', 'Attempted', 20),
    ('No Answer', 'Attempted', 30),
    ('Busy', 'Attempted', 40),
    ('Wrong Number', 'Bad Number', 50),
    ('Not Interested', 'Not Interested', 60),
    ('Callback Requested', 'Callback', 70),
    ('Do Not Call', 'Do Not Call', 80);

CREATE TABLE prospects (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name        text NOT NULL
                CONSTRAINT prospects_name_length CHECK (length(btrim(name)) BETWEEN 1 AND 200),
    -- Normalized to E.164 by the server; the check keeps hand-written rows honest too.
    phone       text NOT NULL
                CONSTRAINT prospects_phone_e164 CHECK (phone ~ '^\+[1-9][0-9]{6,14}$'),
    email       text CONSTRAINT prospects_email_format CHECK (email ~ '^[^@\s]+@[^@\s]+$' AND length(email) <= 254),
    company     text CONSTRAINT prospects_company_length CHECK (length(company) <= 200),
    status      text NOT NULL DEFAULT 'New' REFERENCES prospect_statuses (name) ON UPDATE CASCADE,
    last_call   timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT prospects_phone_key UNIQUE (phone)
);
CREATE INDEX prospects_status_idx ON prospects (status);
CREATE INDEX prospects_created_at_id_idx ON prospects (created_at DESC, id DESC);
CREATE TRIGGER prospects_touch_updated_at BEFORE UPDATE ON prospects
    FOR EACH ROW EXECUTE FUNCTION touch_updated_at();

CREATE TABLE prospect_status_log (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    prospect_id  uuid NOT NULL REFERENCES prospects (id) ON DELETE CASCADE,
    old_status   text,
    new_status   text NOT NULL,
    changed_by   uuid REFERENCES users (id) ON DELETE SET NULL,
    -- The database role that made the change: who did it when no app user was set.
    db_user      text NOT NULL DEFAULT session_user,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX prospect_status_log_prospect_idx ON prospect_status_log (prospect_id, created_at DESC, id DESC);
CREATE INDEX prospect_status_log_created_at_idx ON prospect_status_log (created_at DESC, id DESC);

-- Every status change is logged, whichever client made it.
CREATE FUNCTION log_prospect_status_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO prospect_status_log (prospect_id, old_status, new_status, changed_by)
    VALUES (NEW.id, OLD.status, NEW.status, acting_user_id());
    RETURN NEW;
END
$$;
CREATE TRIGGER prospects_log_status_change AFTER UPDATE OF status ON prospects
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION log_prospect_status_change();

CREATE TABLE call_logs (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    prospect_id    uuid NOT NULL REFERENCES prospects (id) ON DELETE CASCADE,
    caller_id      uuid NOT NULL REFERENCES users (id),
    phone_number   text NOT NULL CONSTRAINT call_logs_phone_e164 CHECK (phone_number ~ '^\+[1-9][0-9]{6,14}$'),
    from_number    text CONSTRAINT call_logs_from_e164 CHECK (from_number ~ '^\+[1-9][0-9]{6,14}$'),
    started_at     timestamptz NOT NULL DEFAULT now(),
    ended_at       timestamptz,
    outcome        text REFERENCES dispositions (name) ON UPDATE CASCADE,
    duration       int CONSTRAINT call_logs_duration_range CHECK (duration BETWEEN 0 AND 86400),
    notes          text CONSTRAINT call_logs_notes_length CHECK (length(notes) <= 10000),
    recording_url  text CONSTRAINT call_logs_recording_url_length CHECK (length(recording_url) <= 2048),
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX call_logs_prospect_id_idx ON call_logs (prospect_id, started_at DESC);
CREATE INDEX call_logs_caller_id_idx ON call_logs (caller_id, started_at DESC);

CREATE TABLE active_calls (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    prospect_id   uuid NOT NULL REFERENCES prospects (id) ON DELETE CASCADE,
    caller_id     uuid NOT NULL REFERENCES users (id),
    call_log_id   uuid NOT NULL REFERENCES call_logs (id) ON DELETE CASCADE,
    phone_number  text NOT NULL,
    started_at    timestamptz NOT NULL DEFAULT now(),
    -- One active call per prospect: the seed's rule, held by the database itself.
    CONSTRAINT active_calls_prospect_id_key UNIQUE (prospect_id),
    CONSTRAINT active_calls_call_log_id_key UNIQUE (call_log_id)
);
CREATE INDEX active_calls_caller_id_idx ON active_calls (caller_id);

CREATE TABLE lead_assignments (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    prospect_id  uuid NOT NULL REFERENCES prospects (id) ON DELETE CASCADE,
    agent_id     uuid NOT NULL REFERENCES users (id),
    assigned_by  uuid REFERENCES users (id),
    assigned_at  timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    active       boolean NOT NULL DEFAULT true
);
-- At most one active assignment per prospect; old ones stay as history.
CREATE UNIQUE INDEX lead_assignments_one_active_key ON lead_assignments (prospect_id) WHERE active;
CREATE INDEX lead_assignments_agent_idx ON lead_assignments (agent_id) WHERE active;

CREATE VIEW prospects_with_call_info AS
SELECT p.*,
       ac.caller_id   AS active_caller_id,
       ac.started_at  AS active_call_started_at,
       (ac.id IS NOT NULL) AS in_call,
       coalesce(stats.call_count, 0) AS call_count,
       last_log.caller_id AS last_caller_id,
       last_log.outcome   AS last_outcome,
       la.agent_id        AS assigned_agent_id,
       la.expires_at      AS assignment_expires_at
FROM prospects p
LEFT JOIN active_calls ac ON ac.prospect_id = p.id
LEFT JOIN LATERAL (
    SELECT count(*) AS call_count FROM call_logs c WHERE c.prospect_id = p.id
) stats ON true
LEFT JOIN LATERAL (
    SELECT c.caller_id, c.outcome FROM call_logs c
    WHERE c.prospect_id = p.id ORDER BY c.started_at DESC LIMIT 1
) last_log ON true
LEFT JOIN lead_assignments la
       ON la.prospect_id = p.id AND la.active AND (la.expires_at IS NULL OR la.expires_at > now());
