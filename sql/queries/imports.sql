-- Imports: prospects from CSV (COPY into a staging table, merged a chunk at a time) and
-- the migration of the old mock store (users, prospects, call history).

-- name: prepare_bulk_import
-- Memory for the merges' sorts and hashes, for this transaction only.
SELECT set_config('work_mem', '64MB', true);

-- name: create_import_staging
-- This import's staging table for one chunk of rows; it shadows the empty public shape
-- (migration 004) in this session and is dropped at commit or rollback.
CREATE TEMP TABLE import_staging (LIKE public.import_staging) ON COMMIT DROP;

-- name: create_import_seen
-- The phones this import has handled, so that a later row with one is a duplicate in the
-- file; shadows the public shape (migration 011) like import_staging.
CREATE TEMP TABLE import_seen (LIKE public.import_seen INCLUDING INDEXES) ON COMMIT DROP;

-- name: clear_import_staging
-- Empty the staging table for the next chunk.
TRUNCATE import_staging;

-- name: known_statuses
-- Every status a prospect may have.
SELECT name FROM prospect_statuses ORDER BY position, name;

-- name: known_time_zones
-- Every IANA time zone the database knows.
SELECT name FROM time_zones ORDER BY name;

-- name: import_staging_has_nameless_rows
-- Whether any staged row lacks a name (then some may be new phones that cannot be added).
SELECT EXISTS (SELECT 1 FROM import_staging WHERE name IS NULL);

-- name: import_chunk_issues
-- Staged rows that will not be written, in row order: a new phone without a name, and,
-- when $1 (report mode), a phone that already belongs to a prospect. Only the first row of
-- a phone in the file counts; later ones are duplicates. Run before the chunk's merge.
WITH firsts AS (
    SELECT DISTINCT ON (s.phone) s.row_number, s.name, s.phone
    FROM import_staging s
    ORDER BY s.phone, s.row_number
)
SELECT f.row_number, f.phone, p.id AS prospect_id
FROM firsts f
LEFT JOIN prospects p ON p.phone = f.phone
WHERE NOT EXISTS (SELECT 1 FROM import_seen n WHERE n.phone = f.phone)
  AND ((p.id IS NULL AND f.name IS NULL) OR (p.id IS NOT NULL AND $1::boolean))
ORDER BY f.row_number;

-- name: preview_import_chunk
-- What merge_import_chunk would do, writing nothing but the phones seen: phones new to
-- the import, new prospects, and existing prospects the rows would change (an empty cell
-- keeps the stored value).
WITH firsts AS (
    SELECT DISTINCT ON (s.phone) s.*
    FROM import_staging s
    ORDER BY s.phone, s.row_number
),
fresh AS MATERIALIZED (
    SELECT f.* FROM firsts f
    WHERE NOT EXISTS (SELECT 1 FROM import_seen n WHERE n.phone = f.phone)
),
seen AS (
    INSERT INTO import_seen (phone) SELECT phone FROM fresh
)
SELECT count(*) AS unique_phones,
       count(*) FILTER (WHERE p.id IS NULL AND f.name IS NOT NULL) AS inserted,
       count(*) FILTER (
           WHERE p.id IS NOT NULL
             AND (p.name, p.email, p.company, p.status, p.time_zone, p.priority)
                 IS DISTINCT FROM
                 (coalesce(f.name, p.name), coalesce(f.email, p.email),
                  coalesce(f.company, p.company), coalesce(f.status, p.status),
                  coalesce(f.time_zone, p.time_zone), coalesce(f.priority, p.priority))
       ) AS changed
FROM fresh f
LEFT JOIN prospects p ON p.phone = f.phone;

-- name: merge_import_chunk
-- Merge a chunk in one statement. The first row of each phone in the file wins: phones the
-- import has seen are skipped. New phones with a name become prospects; when $1 (update
-- mode), existing prospects take the rows' non-empty cells where they differ (the status
-- trigger logs real changes only). In update mode each phone is looked up once: a phone
-- found is updated by id and not offered to the insert, whose conflict check would find
-- it again (a re-import of an unchanged file did both, ~15 µs a row for nothing). Rows go
-- in in phone order (as DISTINCT ON leaves them) with the time-ordered ids the importer
-- made, so the indexes of prospects take them close together.
WITH firsts AS (
    SELECT DISTINCT ON (s.phone) s.*
    FROM import_staging s
    ORDER BY s.phone, s.row_number
),
fresh AS MATERIALIZED (
    SELECT f.*,
           CASE WHEN $1::boolean
                THEN (SELECT p.id FROM prospects p WHERE p.phone = f.phone) END AS existing_id
    FROM firsts f
    WHERE NOT EXISTS (SELECT 1 FROM import_seen n WHERE n.phone = f.phone)
),
seen AS (
    INSERT INTO import_seen (phone) SELECT phone FROM fresh
),
updated AS (
    UPDATE prospects p
       SET name = coalesce(f.name, p.name),
           email = coalesce(f.email, p.email),
           company = coalesce(f.company, p.company),
           status = coalesce(f.status, p.status),
           time_zone = coalesce(f.time_zone, p.time_zone),
           priority = coalesce(f.priority, p.priority)
      FROM fresh f
     WHERE $1::boolean
       AND p.id = f.existing_id
       AND (p.name, p.email, p.company, p.status, p.time_zone, p.priority)
           IS DISTINCT FROM
           (coalesce(f.name, p.name), coalesce(f.email, p.email),
            coalesce(f.company, p.company), coalesce(f.status, p.status),
            coalesce(f.time_zone, p.time_zone), coalesce(f.priority, p.priority))
    RETURNING 1
),
inserted AS (
    INSERT INTO prospects (id, name, phone, email, company, status, time_zone, priority,
                           phone_time_zones)
    SELECT f.id, f.name, f.phone, f.email, f.company, coalesce(f.status, 'New'),
           f.time_zone, coalesce(f.priority, 0), string_to_array(f.phone_zones, ' ')
    FROM fresh f
    WHERE f.name IS NOT NULL AND f.existing_id IS NULL
    ON CONFLICT ON CONSTRAINT prospects_phone_key DO NOTHING
    RETURNING 1
)
SELECT (SELECT count(*) FROM fresh) AS unique_phones,
       (SELECT count(*) FROM inserted) AS inserted,
       (SELECT count(*) FROM updated) AS updated;

-- name: lock_mock_import
-- One mock import at a time, until this transaction ends. $1 lock key.
SELECT pg_advisory_xact_lock($1);

-- name: insert_imported_user
-- A user from the mock store unless the email is taken (any case); no row when taken.
-- $1 email, $2 name, $3 bcrypt hash, $4 role, $5 active, $6 created at or NULL.
INSERT INTO users (email, name, password_hash, role, active, created_at, updated_at)
VALUES ($1, $2, $3, $4, $5, coalesce($6, now()), coalesce($6, now()))
ON CONFLICT DO NOTHING
RETURNING id;

-- name: insert_imported_prospect
-- A prospect from the mock store unless its phone is taken; no row when taken.
-- $1 name, $2 phone, $3 email, $4 company, $5 status, $6 last call, $7 created at or
-- NULL, $8 updated at or NULL, $9 the phone's time zones.
INSERT INTO prospects (name, phone, email, company, status, last_call, created_at, updated_at,
                       phone_time_zones)
VALUES ($1, $2, $3, $4, $5, $6, coalesce($7, now()), coalesce($8, $7, now()), $9)
ON CONFLICT ON CONSTRAINT prospects_phone_key DO NOTHING
RETURNING id;

-- name: prospect_for_import
-- The prospect with this phone, locked until the import commits. $1 E.164 phone.
SELECT id, email, company, last_call FROM prospects WHERE phone = $1 FOR NO KEY UPDATE;

-- name: fill_imported_prospect
-- Fill an existing prospect's empty fields and move last_call forward. $1 id, $2 email,
-- $3 company, $4 last call.
UPDATE prospects SET email = $2, company = $3, last_call = $4 WHERE id = $1;

-- name: insert_imported_calls
-- A prospect's call history from parallel arrays, skipping calls already there (same
-- prospect, caller and start), archived ones included; returns how many were added. $1 prospect id, $2 caller
-- ids, $3 phones, $4 from numbers, $5 starts, $6 ends, $7 outcomes, $8 durations,
-- $9 notes, $10 recording URLs.
WITH added AS (
    INSERT INTO call_logs (prospect_id, caller_id, phone_number, from_number, started_at,
                           ended_at, outcome, duration, notes, recording_url)
    SELECT $1, c.caller_id, c.phone_number, c.from_number, c.started_at, c.ended_at,
           c.outcome, c.duration, c.notes, c.recording_url
    FROM unnest($2::uuid[], $3::text[], $4::text[], $5::timestamptz[], $6::timestamptz[],
                $7::text[], $8::int[], $9::text[], $10::text[])
         AS c(caller_id, phone_number, from_number, started_at, ended_at, outcome, duration,
              notes, recording_url)
    WHERE NOT EXISTS (
        SELECT 1 FROM call_logs_with_archive l
        WHERE l.prospect_id = $1 AND l.caller_id = c.caller_id AND l.started_at = c.started_at)
    RETURNING 1
)
SELECT count(*) FROM added;

-- name: known_dispositions
-- Every call outcome.
SELECT name FROM dispositions ORDER BY position, name;

-- Do-Not-Call imports: numbers COPYed into a staging table a chunk at a time, each chunk
-- cut down to the phones new to the import, then merged into do_not_call.

-- name: create_do_not_call_staging
-- This import's staging table for one chunk of numbers; it shadows the empty public shape
-- (migration 013) in this session and is dropped at commit or rollback.
CREATE TEMP TABLE do_not_call_staging (LIKE public.do_not_call_staging) ON COMMIT DROP;

-- name: keep_new_do_not_call_rows
-- Cut the staged chunk down to the first row of each phone the import has not seen, note
-- those phones as seen, and say how many rows are left. Later rows of a phone are
-- duplicates in the file.
WITH firsts AS MATERIALIZED (
    SELECT DISTINCT ON (s.phone) s.row_number, s.phone
    FROM do_not_call_staging s
    WHERE NOT EXISTS (SELECT 1 FROM import_seen n WHERE n.phone = s.phone)
    ORDER BY s.phone, s.row_number
),
seen AS (
    INSERT INTO import_seen (phone) SELECT phone FROM firsts
),
dropped AS (
    DELETE FROM do_not_call_staging s
    WHERE NOT EXISTS (SELECT 1 FROM firsts f WHERE f.row_number = s.row_number)
)
SELECT count(*) FROM firsts;

-- name: preview_do_not_call_chunk
-- What insert_imported_do_not_call and extend_imported_do_not_call would do with the
-- staged numbers, writing nothing: numbers not listed yet, and listed numbers whose entry
-- expires before the import's expiry (or the import has none).
SELECT count(*) FILTER (WHERE d.id IS NULL) AS added,
       count(*) FILTER (
           WHERE d.expires_at IS NOT NULL
             AND (s.expires_at IS NULL OR s.expires_at > d.expires_at)
       ) AS extended
FROM do_not_call_staging s
LEFT JOIN do_not_call d ON d.phone = s.phone AND d.removed_at IS NULL;

-- name: insert_imported_do_not_call
-- List the staged numbers not listed yet, as source 'import'; returns how many. A number
-- listed meanwhile by someone else is left to extend_imported_do_not_call. $1 acting user
-- or NULL (the command line).
WITH added AS (
    INSERT INTO do_not_call (phone, scope, source, reason, expires_at, added_by)
    SELECT s.phone, s.scope, 'import', s.reason, s.expires_at, $1::uuid
    FROM do_not_call_staging s
    ORDER BY s.phone
    ON CONFLICT (phone) WHERE removed_at IS NULL DO NOTHING
    RETURNING 1
)
SELECT count(*) FROM added;

-- name: extend_imported_do_not_call
-- Move the expiry of listed staged numbers later where the import's is later (NULL: never
-- expires), never earlier; the entry keeps its scope, source and reason. Run after
-- insert_imported_do_not_call, so it also sees numbers listed while that ran; the
-- entries it added already have the import's expiry. Returns how many moved.
WITH extended AS (
    UPDATE do_not_call d
       SET expires_at = s.expires_at
      FROM do_not_call_staging s
     WHERE d.phone = s.phone
       AND d.removed_at IS NULL
       AND d.expires_at IS NOT NULL
       AND (s.expires_at IS NULL OR s.expires_at > d.expires_at)
    RETURNING 1
)
SELECT count(*) FROM extended;

-- name: clear_do_not_call_staging
-- Empty the staging table for the next chunk.
TRUNCATE do_not_call_staging;
