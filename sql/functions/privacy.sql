-- Privacy requests: exporting everything held about a prospect and erasing it.

-- An erased prospect's phone: +999 is no country's calling code, so the placeholder still
-- passes the E.164 check and stays unique, yet rings nowhere and matches no real number.
CREATE OR REPLACE FUNCTION erased_phone() RETURNS text
LANGUAGE sql AS $$
    SELECT '+999' || lpad(nextval('erased_phone_seq')::text, 12, '0')
$$;

-- Nobody calls an erased prospect again, whichever path starts the call.
CREATE OR REPLACE FUNCTION refuse_calls_to_erased_prospects() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM new_rows n JOIN prospects p ON p.id = n.prospect_id
               WHERE p.erased_at IS NOT NULL) THEN
        PERFORM raise_domain_error('PROSPECT_ERASED',
            'Prospect was erased on a privacy request and cannot be called');
    END IF;
    RETURN NULL;
END
$$;
CREATE OR REPLACE TRIGGER call_logs_refuse_erased_prospects AFTER INSERT ON call_logs
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_calls_to_erased_prospects();

-- Privacy requests are an admin's; the acting user must be one.
CREATE OR REPLACE FUNCTION act_as_admin(p_user_id uuid) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF act_as(p_user_id) <> 'admin' THEN
        PERFORM raise_domain_error('FORBIDDEN', 'Only admins handle privacy requests');
    END IF;
END
$$;

-- Everything held about a prospect, as JSON: the prospect, its calls and status changes
-- (archived ones too), assignments, the call in progress, the privacy requests about it,
-- and the rows of any other table that references the prospect. Logged as a request.
CREATE OR REPLACE FUNCTION export_prospect(p_prospect_id uuid, p_actor uuid) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_export jsonb;
    v_other jsonb := '{}';
    v_rows jsonb;
    v_reference record;
BEGIN
    PERFORM act_as_admin(p_actor);
    IF NOT EXISTS (SELECT 1 FROM prospects WHERE id = p_prospect_id) THEN
        PERFORM raise_domain_error('NOT_FOUND', 'Prospect not found', '{"field": "id"}');
    END IF;
    INSERT INTO privacy_requests (prospect_id, kind, requested_by)
    VALUES (p_prospect_id, 'export', p_actor);

    -- Tables added later that reference prospects (callbacks, ...) are exported too.
    FOR v_reference IN
        SELECT c.conrelid::regclass AS table_name, a.attname AS column_name
        FROM pg_constraint c
        JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
        WHERE c.contype = 'f' AND c.confrelid = 'prospects'::regclass
          AND cardinality(c.conkey) = 1
          AND c.conrelid NOT IN ('call_logs'::regclass, 'call_logs_archive'::regclass,
                                 'prospect_status_log'::regclass,
                                 'prospect_status_log_archive'::regclass,
                                 'lead_assignments'::regclass, 'active_calls'::regclass)
        ORDER BY 1::text
    LOOP
        EXECUTE format('SELECT coalesce(jsonb_agg(to_jsonb(t)), ''[]'') FROM %s t WHERE t.%I = $1',
                       v_reference.table_name, v_reference.column_name)
        INTO v_rows USING p_prospect_id;
        v_other := v_other || jsonb_build_object(v_reference.table_name::text, v_rows);
    END LOOP;

    SELECT jsonb_build_object(
        'exported_at', now(),
        'prospect', to_jsonb(p),
        'call_logs', coalesce((
            SELECT jsonb_agg(to_jsonb(c) ORDER BY c.started_at, c.id)
            FROM call_logs_with_archive c WHERE c.prospect_id = p.id), '[]'),
        'status_changes', coalesce((
            SELECT jsonb_agg(to_jsonb(s) ORDER BY s.created_at, s.id)
            FROM prospect_status_log_with_archive s WHERE s.prospect_id = p.id), '[]'),
        'lead_assignments', coalesce((
            SELECT jsonb_agg(to_jsonb(la) ORDER BY la.assigned_at, la.id)
            FROM lead_assignments la WHERE la.prospect_id = p.id), '[]'),
        'active_call', (SELECT to_jsonb(a) FROM active_calls a WHERE a.prospect_id = p.id),
        'privacy_requests', coalesce((
            SELECT jsonb_agg(to_jsonb(r) ORDER BY r.id)
            FROM privacy_requests r WHERE r.prospect_id = p.id), '[]'),
        'other_records', v_other)
    INTO v_export
    FROM prospects p
    WHERE p.id = p_prospect_id;
    RETURN v_export;
END
$$;

-- Remove a prospect's personal data but keep what reports count: name, email, company and
-- phone go (the phone becomes a placeholder), and so do the numbers called, notes and
-- recording URLs of its calls (archived ones too); outcomes, durations, times, callers and
-- status history stay. Refused while the prospect is on a call. Logged as a request.
CREATE OR REPLACE FUNCTION erase_prospect(
    p_prospect_id uuid, p_actor uuid,
    OUT erased_at timestamptz, OUT call_logs_erased int, OUT archived_call_logs_erased int)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_prospect prospects%ROWTYPE;
    v_phone text;
BEGIN
    PERFORM act_as_admin(p_actor);
    -- Lock order: the row lock that leaves foreign-key checks free (the archiver inserts
    -- rows referencing this prospect), then the calls, and the phone (a key) last, so
    -- neither side ever waits for the other in a cycle.
    SELECT * INTO v_prospect FROM prospects WHERE id = p_prospect_id FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        PERFORM raise_domain_error('NOT_FOUND', 'Prospect not found', '{"field": "id"}');
    END IF;
    IF EXISTS (SELECT 1 FROM active_calls a WHERE a.prospect_id = p_prospect_id) THEN
        PERFORM raise_domain_error('CONFLICT', 'Prospect is on a call; erase it once the call ends');
    END IF;
    v_phone := CASE WHEN v_prospect.erased_at IS NULL THEN erased_phone() ELSE v_prospect.phone END;

    UPDATE call_logs SET phone_number = v_phone, notes = NULL, recording_url = NULL
    WHERE prospect_id = p_prospect_id;
    GET DIAGNOSTICS call_logs_erased = ROW_COUNT;
    UPDATE call_logs_archive SET phone_number = v_phone, notes = NULL, recording_url = NULL
    WHERE prospect_id = p_prospect_id;
    GET DIAGNOSTICS archived_call_logs_erased = ROW_COUNT;

    UPDATE prospects
       SET name = '[erased]', phone = v_phone, email = NULL, company = NULL,
           erased_at = coalesce(prospects.erased_at, now())
     WHERE id = p_prospect_id
    RETURNING prospects.erased_at INTO erased_at;

    INSERT INTO privacy_requests (prospect_id, kind, requested_by, details)
    VALUES (p_prospect_id, 'erase', p_actor, jsonb_build_object(
        'call_logs', call_logs_erased, 'archived_call_logs', archived_call_logs_erased));
END
$$;

-- Erasing a prospect's personal data clears the zones its number revealed, too.
CREATE OR REPLACE FUNCTION clear_erased_time_zones() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.time_zone := NULL;
    NEW.phone_time_zones := '{}';
    RETURN NEW;
END
$$;
CREATE OR REPLACE TRIGGER prospects_clear_erased_time_zones BEFORE UPDATE OF erased_at ON prospects
    FOR EACH ROW WHEN (NEW.erased_at IS NOT NULL AND OLD.erased_at IS NULL)
    EXECUTE FUNCTION clear_erased_time_zones();

-- An erased prospect refuses every change, whichever path makes it: only erasing it again
-- (which changes nothing) and the update stamp pass.
CREATE OR REPLACE FUNCTION refuse_changes_to_erased_prospects() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- Generated columns are not computed yet in a BEFORE trigger: leave them out.
    IF to_jsonb(NEW) - 'updated_at' - 'queue_zones'
       IS DISTINCT FROM to_jsonb(OLD) - 'updated_at' - 'queue_zones' THEN
        PERFORM raise_domain_error('PROSPECT_ERASED',
            'Prospect was erased on a privacy request and cannot be changed');
    END IF;
    RETURN NEW;
END
$$;
CREATE OR REPLACE TRIGGER prospects_refuse_changes_when_erased BEFORE UPDATE ON prospects
    FOR EACH ROW WHEN (OLD.erased_at IS NOT NULL)
    EXECUTE FUNCTION refuse_changes_to_erased_prospects();
