-- Add the shape of the staging table that bulk imports COPY into before one merge.

-- Each import creates TEMP TABLE import_staging (LIKE public.import_staging) ON COMMIT DROP.
-- A temporary table comes first in the search path, so within that session it shadows
-- this one, and the named queries in sql/queries/imports.sql read the import's own rows.
-- This table only gives those queries something to prepare against (the contract test
-- prepares every named query); the check keeps it empty forever.
CREATE TABLE import_staging (
    row_number  int NOT NULL,
    name        text,
    phone       text NOT NULL,
    email       text,
    company     text,
    status      text,
    time_zone   text,
    priority    int,
    phone_time_zones text[] NOT NULL DEFAULT '{}',
    CONSTRAINT import_staging_is_only_a_shape CHECK (false)
);
