-- Index the prospect list's filters, so that every filter and any search term is answered
-- from an index instead of a walk through the whole list (docs/search.md).
--
-- Building them holds writes to prospects for about half a minute at a million prospects;
-- IF NOT EXISTS lets an operator build them beforehand with CREATE INDEX CONCURRENTLY
-- (docs/database.md).
--
-- The search: a trigram index (pg_trgm) over the text the search reads, name, email,
-- company and phone in one string, which finds the prospects containing a term of three
-- letters or digits or more without reading the others. prospects_page() (functions/
-- prospects.sql) repeats the expression word for word, or the planner would not use it.
-- pg_trgm ships with PostgreSQL's contrib and is a trusted extension (a database owner may
-- create it); on a server without it the migration warns and skips the index, and the
-- search answers the same, only as slowly as before: docs/search.md says how to add it later.
DO $$
BEGIN
    CREATE EXTENSION IF NOT EXISTS pg_trgm;
EXCEPTION WHEN undefined_file OR feature_not_supported OR insufficient_privilege THEN
    RAISE WARNING 'pg_trgm is not available (%): prospect search stays unindexed; see docs/search.md', SQLERRM;
END
$$;

DO $$
DECLARE
    v_schema name := (SELECT extnamespace::regnamespace::name FROM pg_extension
                      WHERE extname = 'pg_trgm');
BEGIN
    IF v_schema IS NOT NULL THEN
        EXECUTE format(
            'CREATE INDEX IF NOT EXISTS prospects_search_idx ON prospects USING gin ('
            '(name || '' '' || coalesce(email, '''') || '' '' || coalesce(company, '''') '
            '|| '' '' || phone) %I.gin_trgm_ops)', v_schema);
    END IF;
END
$$;

-- The status filter in list order, so a page of any status, after any cursor, is read
-- straight from the index (prospects_status_idx served only the status).
CREATE INDEX IF NOT EXISTS prospects_status_created_at_id_idx
    ON prospects (status, created_at DESC, id DESC);
DROP INDEX IF EXISTS prospects_status_idx;
