-- GraphQL answers built by PostgreSQL: values written exactly as the Python server writes
-- them, for the compiled reads (graph/read_plans.py, docs/reads.md).

-- A DateTime as Strawberry writes it (Python's isoformat() of a UTC value): six digits of
-- fraction, or none when it is zero, and +00:00. to_json() would trim the fraction's zeros.
-- Inlined by the planner.
CREATE OR REPLACE FUNCTION graphql_datetime(p_at timestamptz) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT to_char(p_at AT TIME ZONE 'UTC',
                   CASE WHEN date_trunc('second', p_at) = p_at
                        THEN 'YYYY-MM-DD"T"HH24:MI:SS"+00:00"'
                        ELSE 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"' END)
$$;

-- A prospect's cursor in the (created_at, id) order, as resolvers/prospects.py
-- encode_cursor() writes it: URL-safe base64, padded, of "<created_at>|<id>".
CREATE OR REPLACE FUNCTION graphql_prospect_cursor(p_created_at timestamptz, p_id uuid)
RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT translate(encode(convert_to(graphql_datetime(p_created_at) || '|' || p_id, 'UTF8'),
                            'base64'),
                     E'+/\n', '-_')
$$;
