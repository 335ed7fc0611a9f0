-- Demo data for a first look in GraphiQL.

-- name: insert_demo_user
-- A demo user unless the email is taken. $1 email, $2 name, $3 hash, $4 role.
INSERT INTO users (email, name, password_hash, role) VALUES ($1, $2, $3, $4)
ON CONFLICT DO NOTHING;

-- name: insert_demo_prospects
-- Demo prospects from parallel arrays, skipping taken phones. $1 names, $2 phones,
-- $3 emails, $4 companies.
INSERT INTO prospects (name, phone, email, company)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])
ON CONFLICT ON CONSTRAINT prospects_phone_key DO NOTHING;

-- name: database_is_empty
-- Whether there are no users and no prospects yet.
SELECT NOT EXISTS (SELECT 1 FROM users) AND NOT EXISTS (SELECT 1 FROM prospects);
