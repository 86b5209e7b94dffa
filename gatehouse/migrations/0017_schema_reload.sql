-- The data API reloads its schema cache after any DDL, as PostgREST does on Supabase (its
-- pgrst_ddl_watch event trigger): a table made through `gatehouse psql` or a migration tool is
-- reachable at once, without NOTIFY gatehouse_schema or SIGHUP by hand. Notifications sent in one
-- transaction are folded by PostgreSQL, so a script of many statements reloads once.
CREATE FUNCTION gatehouse.notify_schema_change() RETURNS event_trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    NOTIFY gatehouse_schema, 'reload';
END;
$$;
REVOKE ALL ON FUNCTION gatehouse.notify_schema_change() FROM PUBLIC;

-- Only a superuser may create event triggers: on a managed server without one, DDL still
-- needs NOTIFY gatehouse_schema (the README says so), and the migration does not fail.
DO $$
BEGIN
    CREATE EVENT TRIGGER gatehouse_schema_reload ON ddl_command_end
        EXECUTE FUNCTION gatehouse.notify_schema_change();
    CREATE EVENT TRIGGER gatehouse_schema_drop ON sql_drop
        EXECUTE FUNCTION gatehouse.notify_schema_change();
EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE 'not a superuser: the data API reloads its schema on NOTIFY gatehouse_schema or SIGHUP only';
END
$$;
