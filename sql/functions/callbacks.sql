-- Callbacks: scheduling one, by whom and how far ahead.

-- How far ahead a callback may be scheduled. The server sets app.callback_max_days on its
-- connections; psql gets 90 days.
CREATE OR REPLACE FUNCTION callback_max_ahead() RETURNS interval
LANGUAGE sql STABLE AS $$
    SELECT make_interval(days => coalesce(
        nullif(current_setting('app.callback_max_days', true), '')::int, 90))
$$;

-- Schedule a callback at p_at, reserved for p_agent_id or for anyone (NULL): in the
-- prospect's calling hours, or moved to when they next open if p_move_to_next_window.
-- Only on a prospect the acting user may claim (claim_refusal()), at most
-- callback_max_ahead() from now: otherwise one agent could take any lead from everyone.
CREATE OR REPLACE FUNCTION schedule_callback(
    p_prospect_id uuid, p_at timestamptz, p_agent_id uuid, p_actor uuid,
    p_move_to_next_window boolean)
RETURNS SETOF callbacks
LANGUAGE plpgsql AS $$
DECLARE
    v_zones text[];
    v_refusal record;
    v_window record;
BEGIN
    PERFORM act_as(p_actor);
    IF p_at <= now() THEN
        PERFORM raise_domain_error('BAD_USER_INPUT', 'at must be in the future',
            jsonb_build_object('field', 'at'));
    END IF;
    IF p_at > now() + callback_max_ahead() THEN
        PERFORM raise_domain_error('BAD_USER_INPUT',
            'at must be within '
                || describe_count(extract(day FROM callback_max_ahead())::bigint, 'day'),
            jsonb_build_object('field', 'at'));
    END IF;
    SELECT prospect_time_zones(p.queue_zones) INTO v_zones
    FROM prospects p WHERE p.id = p_prospect_id FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        PERFORM raise_domain_error('NOT_FOUND', 'Prospect not found',
            jsonb_build_object('field', 'prospectId'));
    END IF;
    SELECT * INTO v_refusal FROM claim_refusal(p_prospect_id, p_actor);
    IF v_refusal.code IS NOT NULL THEN
        PERFORM raise_domain_error(v_refusal.code, v_refusal.reason,
            jsonb_strip_nulls(jsonb_build_object('until', v_refusal.until)));
    END IF;
    SELECT * INTO v_window FROM calling_window(v_zones, p_at);
    IF NOT v_window.is_open AND (NOT p_move_to_next_window OR v_window.next_open IS NULL) THEN
        PERFORM raise_domain_error('OUTSIDE_CALLING_HOURS',
            'The callback falls outside the prospect''s calling hours',
            jsonb_strip_nulls(jsonb_build_object('until', v_window.next_open)));
    END IF;
    RETURN QUERY
    INSERT INTO callbacks (prospect_id, due_at, agent_id, created_by)
    VALUES (p_prospect_id, CASE WHEN v_window.is_open THEN p_at ELSE v_window.next_open END,
            p_agent_id, p_actor)
    RETURNING *;
END
$$;
