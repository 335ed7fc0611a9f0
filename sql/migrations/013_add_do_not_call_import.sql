-- Add the shape of the staging table a Do-Not-Call import COPYs numbers into.

-- Each import creates TEMP TABLE do_not_call_staging (LIKE public.do_not_call_staging)
-- ON COMMIT DROP, which shadows this table in that session, as import_staging does
-- (migration 004): the named queries in sql/queries/imports.sql read the import's own
-- rows. This table only gives those queries something to prepare against; its check
-- keeps it empty.
CREATE TABLE do_not_call_staging (
    row_number  int NOT NULL,
    phone       text NOT NULL,
    scope       text,
    reason      text,
    expires_at  timestamptz,
    CONSTRAINT do_not_call_staging_is_only_a_shape CHECK (false)
);
