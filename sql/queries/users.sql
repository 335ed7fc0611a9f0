-- Users, sessions and login throttling.

-- name: user_by_email
-- The user with this email (any case), with the hash for checking a password. $1 email.
SELECT id, email, name, role, active, password_hash, created_at
FROM users WHERE lower(email) = lower($1);

-- name: users_by_ids
-- Users by id, for the DataLoader. $1 uuid[].
SELECT id, email, name, role, active, created_at FROM users WHERE id = ANY($1::uuid[]);

-- name: list_users
-- Every user, newest last.
SELECT id, email, name, role, active, created_at FROM users ORDER BY created_at, id;

-- name: insert_user
-- A new user. $1 email, $2 name, $3 password hash, $4 role.
INSERT INTO users (email, name, password_hash, role) VALUES ($1, $2, $3, $4)
RETURNING id, email, name, role, active, created_at;

-- name: existing_emails
-- Which of these emails already belong to a user, lower-cased. $1 lower-cased emails.
SELECT lower(email) AS email FROM users WHERE lower(email) = ANY($1::text[]);

-- name: insert_session
-- A new bearer token (its hash). $1 token hash, $2 user id, $3 lifetime in seconds.
INSERT INTO sessions (token_hash, user_id, expires_at)
VALUES ($1, $2, now() + make_interval(secs => $3));

-- name: session_user
-- The active user behind a live token, or no row. $1 token hash.
SELECT id, email, name, role, active, created_at FROM live_session_user($1);

-- name: revoke_session
-- Revoke one token and notify every replica; true when it was live. $1 token hash.
SELECT revoke_session($1);

-- name: begin_login
-- Start a login attempt, or say how long the client must wait (begin_login()). $1 lower-cased
-- email, $2 client address or NULL, $3 failures per email and client, $4 failures per client,
-- $5 first wait in seconds, $6 longest wait, $7 window in seconds.
SELECT attempt_id, retry_after_seconds FROM begin_login($1, $2, $3, $4, $5, $6, $7);

-- name: finish_login
-- Settle a login attempt. $1 attempt id, $2 whether the password was right, $3 window.
SELECT finish_login($1, $2, $3);
