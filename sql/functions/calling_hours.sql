-- Calling hours: which zones' hours a prospect follows, whether they are open, when they
-- next open, and the callee's local day.

-- The zones whose calling hours a prospect follows, from its stored set (the explicit
-- zone, else the number's zones: prospects.queue_zones): all of them, since only hours
-- open everywhere count; an empty set means the default zone of dialing_rules, whatever
-- it is when asked.
CREATE OR REPLACE FUNCTION prospect_time_zones(p_queue_zones text[]) RETURNS text[]
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN cardinality(p_queue_zones) > 0 THEN p_queue_zones
                ELSE ARRAY[(SELECT default_time_zone FROM dialing_rules)] END
$$;

-- The zones of p_zones where calling is not allowed at p_at.
-- (A set, so the planner inlines it into the query that asks: a query judging several
-- zones runs no function call per zone.)
CREATE OR REPLACE FUNCTION closed_time_zones(p_zones text[], p_at timestamptz)
RETURNS TABLE (zone text)
LANGUAGE sql STABLE AS $$
    SELECT z FROM unnest(p_zones) z
    WHERE NOT EXISTS (
        SELECT 1 FROM calling_hours h
        WHERE h.weekday = extract(dow FROM p_at AT TIME ZONE z)
          AND (p_at AT TIME ZONE z)::time >= h.opens_at
          AND (p_at AT TIME ZONE z)::time < h.closes_at)
$$;

-- Whether calling is allowed at p_at in one zone.
CREATE OR REPLACE FUNCTION calling_hours_open(p_zone text, p_at timestamptz) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT NOT EXISTS (SELECT 1 FROM closed_time_zones(ARRAY[p_zone], p_at))
$$;

-- Whether calling is open at p_at in every zone, and if not, when it next opens in all of
-- them (NULL when it never does within two weeks). The intersection of the windows opens
-- at some zone's opening time, so those instants are the only candidates. Local times are
-- converted with the zone rules at the moment asked, so daylight saving needs no job.
CREATE OR REPLACE FUNCTION calling_window(p_zones text[], p_at timestamptz,
                                          OUT is_open boolean, OUT next_open timestamptz)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    is_open := NOT EXISTS (SELECT 1 FROM closed_time_zones(p_zones, p_at));
    IF is_open THEN
        RETURN;
    END IF;
    SELECT min(candidate) INTO next_open
    FROM (
        SELECT ((((p_at AT TIME ZONE z)::date + d) + h.opens_at) AT TIME ZONE z) AS candidate
        FROM unnest(p_zones) z
        CROSS JOIN generate_series(0, 14) d
        JOIN calling_hours h
          ON h.weekday = extract(dow FROM (p_at AT TIME ZONE z)::date + d)
    ) c
    WHERE candidate > p_at
      AND NOT EXISTS (SELECT 1 FROM closed_time_zones(p_zones, candidate));
END
$$;

-- p_at if calling is open then in the zones, else when it next opens.
CREATE OR REPLACE FUNCTION callable_time(p_zones text[], p_at timestamptz) RETURNS timestamptz
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN w.is_open THEN p_at ELSE coalesce(w.next_open, p_at) END
    FROM calling_window(p_zones, p_at) w
$$;

-- The callee's local day around p_at, in the first of their zones: the per-day attempt
-- cap counts the calls in it.
-- (A set of one row, so the planner inlines it into the query that asks.)
CREATE OR REPLACE FUNCTION callee_day(p_zones text[], p_at timestamptz)
RETURNS TABLE (starts_at timestamptz, ends_at timestamptz)
LANGUAGE sql STABLE AS $$
    SELECT day AT TIME ZONE p_zones[1], (day + interval '1 day') AT TIME ZONE p_zones[1]
    FROM (SELECT date_trunc('day', p_at AT TIME ZONE p_zones[1]) AS day) d
$$;
