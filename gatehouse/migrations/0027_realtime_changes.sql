-- Realtime database changes (postgres_changes): captured by triggers into a queue, not by
-- logical decoding.
--
-- Why triggers: they work on any PostgreSQL 15+ as it comes (wal_level=replica, no replication
-- role, no slot). A logical slot retains WAL for as long as Gatehouse is down and can fill the
-- disk; the queue below is swept after a retention instead. The cost is one INSERT per changed
-- row, paid inside the writer's transaction.
--
-- Tables opt in as on Supabase, through the publication supabase_realtime:
--     ALTER PUBLICATION supabase_realtime ADD TABLE public.todos;
-- Gatehouse keeps a trigger (gatehouse_realtime) on every published table and none on the others
-- (realtime.sync_capture below, run at start, after DDL, and in the same transaction as an
-- ALTER PUBLICATION when the migrations ran as a superuser).
--
-- Each change is a row of realtime.changes, then pg_notify('gatehouse_realtime', <its id>): only
-- the id travels in the notification, so rows of any size pass (NOTIFY stops at 8,000 bytes).
-- Readers (gatehouse/realtime/feed.py) fetch rows by id and deliver each committed one once.

CREATE SCHEMA IF NOT EXISTS realtime;
-- The request pool calls realtime.visible_to; nothing in this schema is for the request roles.
GRANT USAGE ON SCHEMA realtime TO authenticator;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = 'supabase_realtime') THEN
        CREATE PUBLICATION supabase_realtime;  -- for no tables: each table opts in
    END IF;
END
$$;

-- The queue. Rows are written by realtime.capture_change only and read by Gatehouse's admin
-- connection; no request role may read them (they hold rows whatever the RLS policies say).
CREATE TABLE realtime.changes (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The writing transaction: the sweeper deletes a row once it was visible (committed) in a
    -- snapshot taken longer ago than the retention.
    txid xid8 NOT NULL DEFAULT pg_current_xact_id(),
    relid oid NOT NULL,
    schema_name text NOT NULL,
    table_name text NOT NULL,
    type text NOT NULL CHECK (type IN ('INSERT', 'UPDATE', 'DELETE')),
    -- A trigger cannot know its commit time: this is the time the change was made. It never
    -- goes backwards for one row (a second change to a row waits for the first to commit).
    commit_timestamp timestamptz NOT NULL DEFAULT clock_timestamp(),
    record jsonb,                -- the new row (INSERT, UPDATE)
    old_record jsonb,            -- UPDATE, DELETE: the whole old row under REPLICA IDENTITY FULL,
                                 -- else its primary key columns
    old_full boolean NOT NULL DEFAULT false,
    primary_key jsonb,           -- {column: value} of the row's primary key (NULL: the table has none)
    inserted_at timestamptz NOT NULL DEFAULT now()  -- the writing transaction's start
);
REVOKE ALL ON realtime.changes FROM PUBLIC;

CREATE FUNCTION realtime.capture_change()
    RETURNS trigger
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = ''
    AS $$
DECLARE
    full_identity boolean;
    key_columns text[];
    new_row jsonb;
    old_row jsonb;
    change_id bigint;
BEGIN
    SELECT c.relreplident = 'f' INTO full_identity FROM pg_catalog.pg_class c WHERE c.oid = TG_RELID;
    SELECT pg_catalog.array_agg(a.attname::text ORDER BY k.ord) INTO key_columns
    FROM pg_catalog.pg_index i
    CROSS JOIN LATERAL pg_catalog.unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
    JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
    WHERE i.indrelid = TG_RELID AND i.indisprimary;

    IF TG_OP <> 'DELETE' THEN
        new_row := pg_catalog.to_jsonb(NEW);
    END IF;
    IF TG_OP <> 'INSERT' THEN
        old_row := pg_catalog.to_jsonb(OLD);
        IF NOT full_identity THEN
            old_row := (SELECT pg_catalog.jsonb_object_agg(k, old_row -> k) FROM pg_catalog.unnest(key_columns) AS k);
            old_row := coalesce(old_row, '{}');
        END IF;
    END IF;

    INSERT INTO realtime.changes (relid, schema_name, table_name, type, record, old_record, old_full, primary_key)
    VALUES (
        TG_RELID, TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_OP, new_row, old_row, coalesce(full_identity, false),
        (SELECT pg_catalog.jsonb_object_agg(k, coalesce(new_row, pg_catalog.to_jsonb(OLD)) -> k)
         FROM pg_catalog.unnest(key_columns) AS k)
    )
    RETURNING id INTO change_id;
    PERFORM pg_catalog.pg_notify('gatehouse_realtime', change_id::text);
    RETURN NULL;
END;
$$;
REVOKE ALL ON FUNCTION realtime.capture_change() FROM PUBLIC;

-- Puts the trigger on every table of supabase_realtime and takes it off every other table;
-- answers the tables changed ('+public.todos', '-public.notes'). A publication FOR ALL TABLES
-- covers the tables of req_schemas (the exposed schemas); with req_schemas NULL (the DDL event
-- trigger, which does not know them) its tables are left as they are.
CREATE FUNCTION realtime.sync_capture(req_schemas text[])
    RETURNS SETOF text
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = ''
    AS $$
DECLARE
    all_tables boolean := coalesce(
        (SELECT p.puballtables FROM pg_catalog.pg_publication p WHERE p.pubname = 'supabase_realtime'), false);
    target record;
BEGIN
    IF all_tables AND req_schemas IS NULL THEN
        RETURN;
    END IF;
    -- One synchroniser at a time: two processes reloading their schema cache together.
    PERFORM pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('gatehouse_realtime_sync'));
    FOR target IN
        WITH wanted AS (
            SELECT c.oid
            FROM pg_catalog.pg_publication_tables pt
            JOIN pg_catalog.pg_namespace n ON n.nspname = pt.schemaname
            JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename
            WHERE pt.pubname = 'supabase_realtime'
              AND pt.schemaname NOT IN ('realtime', 'pg_catalog', 'information_schema')
              AND c.relkind IN ('r', 'p')
              AND (NOT all_tables OR pt.schemaname = ANY (req_schemas))
        ), present AS (
            SELECT t.tgrelid AS oid FROM pg_catalog.pg_trigger t
            WHERE t.tgname = 'gatehouse_realtime' AND t.tgparentid = 0
        )
        SELECT w.oid::regclass AS rel, true AS add FROM wanted w WHERE w.oid NOT IN (SELECT oid FROM present)
        UNION ALL
        SELECT p.oid::regclass, false FROM present p WHERE p.oid NOT IN (SELECT oid FROM wanted)
        ORDER BY 1
    LOOP
        IF target.add THEN
            EXECUTE pg_catalog.format(
                'CREATE OR REPLACE TRIGGER gatehouse_realtime AFTER INSERT OR UPDATE OR DELETE ON %s '
                'FOR EACH ROW EXECUTE FUNCTION realtime.capture_change()', target.rel);
            RETURN NEXT '+' || target.rel::text;
        ELSE
            EXECUTE pg_catalog.format('DROP TRIGGER IF EXISTS gatehouse_realtime ON %s', target.rel);
            RETURN NEXT '-' || target.rel::text;
        END IF;
    END LOOP;
END;
$$;
REVOKE ALL ON FUNCTION realtime.sync_capture(text[]) FROM PUBLIC;

-- ALTER PUBLICATION ... ADD TABLE puts the trigger on in the same transaction, so no change
-- made after the table is published goes uncaptured. Only a superuser may create event
-- triggers: without one, Gatehouse syncs when it reloads its schema cache, a moment later.
CREATE FUNCTION realtime.sync_capture_on_ddl()
    RETURNS event_trigger
    LANGUAGE plpgsql
    SECURITY DEFINER  -- whoever alters a publication, the triggers are put on by the owner
    SET search_path = ''
    AS $$
BEGIN
    PERFORM realtime.sync_capture(NULL);
END;
$$;
REVOKE ALL ON FUNCTION realtime.sync_capture_on_ddl() FROM PUBLIC;

DO $$
BEGIN
    CREATE EVENT TRIGGER gatehouse_realtime_publication ON ddl_command_end
        WHEN TAG IN ('CREATE PUBLICATION', 'ALTER PUBLICATION', 'DROP PUBLICATION')
        EXECUTE FUNCTION realtime.sync_capture_on_ddl();
EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE 'not a superuser: realtime triggers follow the publication when Gatehouse reloads its schema';
END
$$;

-- Which of N subscribers may see one change, in one call: the subscriber's index in req_claims
-- (from 0), the columns its role may not read, and whether row security applies to it.
--
-- For each claims object: a session that has ended sees nothing (gatehouse.session_refusal);
-- then the role and request.jwt.claims are set transaction-locally and the row is looked up by
-- its primary key under that role, so its RLS policies decide; the role is reset before the
-- next one. A DELETE cannot be checked that way (the row is gone), nor a row without a primary
-- key: those go to every role that may SELECT from the table, as on Supabase, and callers send
-- subscribers under row security only the old primary key.
--
-- Not SECURITY DEFINER (such a function may not change roles): it runs as authenticator, in a
-- read-only transaction, with the request roles' search_path (policies may call functions that
-- rely on it), so every name below is qualified. Any error while checking one subscriber (a
-- policy that fails, a missing grant) refuses that subscriber only.
CREATE FUNCTION realtime.visible_to(req_schema text, req_table text, req_type text, req_key text, req_claims text)
    RETURNS TABLE (subscriber integer, hidden_columns text[], row_security boolean)
    LANGUAGE plpgsql
    AS $$
DECLARE
    rel regclass := pg_catalog.to_regclass(pg_catalog.format('%I.%I', req_schema, req_table));
    qualified text := pg_catalog.format('%I.%I', req_schema, req_table);
    key jsonb := req_key::jsonb;
    rls_enabled boolean;
    probe text;
    item record;
    claims jsonb;
    role_name text;
    by_role jsonb := '{}';
    seen boolean;
BEGIN
    SET TRANSACTION READ ONLY;
    IF rel IS NULL THEN
        RETURN;
    END IF;
    SELECT c.relrowsecurity INTO rls_enabled FROM pg_catalog.pg_class c WHERE c.oid = rel;
    IF req_type <> 'DELETE' AND key IS NOT NULL AND key <> '{}' THEN
        SELECT pg_catalog.format('SELECT EXISTS (SELECT 1 FROM %s WHERE %s)', qualified,
                   pg_catalog.string_agg(pg_catalog.format('%I = ($1 ->> %L)::%s', a.attname, a.attname,
                                         pg_catalog.format_type(a.atttypid, a.atttypmod)), ' AND '))
        INTO probe
        FROM pg_catalog.pg_attribute a
        WHERE a.attrelid = rel AND a.attnum > 0 AND NOT a.attisdropped
          AND a.attname::text IN (SELECT pg_catalog.jsonb_object_keys(key))
        HAVING pg_catalog.count(*) = (SELECT pg_catalog.count(*) FROM pg_catalog.jsonb_object_keys(key));
        IF probe IS NULL THEN
            RETURN;  -- a key column is gone (the table changed since): nobody can be shown the row
        END IF;
    END IF;

    FOR item IN SELECT (e.ord - 1)::integer AS idx, e.value FROM pg_catalog.jsonb_array_elements(req_claims::jsonb)
                WITH ORDINALITY AS e(value, ord) LOOP
        claims := item.value;
        role_name := claims ->> 'role';
        CONTINUE WHEN role_name IS NULL OR role_name NOT IN ('anon', 'authenticated', 'service_role');
        IF NOT by_role ? role_name THEN
            by_role := by_role || pg_catalog.jsonb_build_object(role_name, pg_catalog.jsonb_build_object(
                'select', pg_catalog.has_any_column_privilege(role_name, rel, 'SELECT'),
                'rls', rls_enabled AND NOT (SELECT r.rolbypassrls FROM pg_catalog.pg_roles r WHERE r.rolname = role_name),
                'hidden', coalesce((SELECT pg_catalog.jsonb_agg(a.attname ORDER BY a.attnum) FROM pg_catalog.pg_attribute a
                                    WHERE a.attrelid = rel AND a.attnum > 0 AND NOT a.attisdropped
                                      AND NOT pg_catalog.has_column_privilege(role_name, rel, a.attnum, 'SELECT')),
                                   '[]')));
        END IF;
        CONTINUE WHEN NOT (by_role -> role_name ->> 'select')::boolean;
        BEGIN
            IF claims ->> 'session_id' IS NOT NULL THEN
                CONTINUE WHEN gatehouse.session_refusal((claims ->> 'session_id')::uuid,
                                                        (claims ->> 'sub')::uuid) IS NOT NULL;
            END IF;
            IF probe IS NULL OR NOT (by_role -> role_name ->> 'rls')::boolean THEN
                seen := true;  -- no row to look up, or no policy applies to this role: SELECT is enough
            ELSE
                PERFORM pg_catalog.set_config('role', role_name, true),
                        pg_catalog.set_config('request.jwt.claims', claims::text, true);
                EXECUTE probe INTO seen USING key;
                PERFORM pg_catalog.set_config('role', 'none', true),
                        pg_catalog.set_config('request.jwt.claims', '', true);
            END IF;
        EXCEPTION WHEN OTHERS THEN
            seen := false;  -- the subtransaction's rollback has put the role back
        END;
        IF seen THEN
            subscriber := item.idx;
            hidden_columns := ARRAY(SELECT pg_catalog.jsonb_array_elements_text(by_role -> role_name -> 'hidden'));
            row_security := (by_role -> role_name ->> 'rls')::boolean;
            RETURN NEXT;
        END IF;
    END LOOP;
END;
$$;
REVOKE ALL ON FUNCTION realtime.visible_to(text, text, text, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION realtime.visible_to(text, text, text, text, text) TO authenticator;
