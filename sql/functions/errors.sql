-- How the database refuses: a domain error the server turns into a GraphQL error.

-- Refusals carry SQLSTATE CF000, the client-facing code in HINT and extra facts as JSON
-- in DETAIL; the server turns them into GraphQL errors, and psql users see them as-is.
CREATE OR REPLACE FUNCTION raise_domain_error(p_code text, p_message text, p_detail jsonb DEFAULT '{}')
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = 'CF000', MESSAGE = p_message, HINT = p_code,
        DETAIL = p_detail::text;
END
$$;

-- A count and its noun for messages, agreeing: '1 time', '3 times'. p_noun is singular;
-- the plural adds an s.
CREATE OR REPLACE FUNCTION describe_count(p_count bigint, p_noun text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT p_count || ' ' || p_noun || CASE WHEN p_count = 1 THEN '' ELSE 's' END
$$;

-- An interval in words for messages: '5 minutes', '1 second'.
CREATE OR REPLACE FUNCTION describe_interval(p_interval interval) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN s % 60 = 0 THEN describe_count(s / 60, 'minute')
                ELSE describe_count(s, 'second') END
    FROM (SELECT extract(epoch FROM p_interval)::bigint AS s) t
$$;
