-- Read replicas (gatehouse/core/replica.py): a change to whether a user's token may be used is a
-- write by that user. A new session (sign-in, sign-up, refresh into a new session), an ended one
-- (sign-out, an administrator's action, the user's deletion) and a ban are announced on
-- gatehouse_writes, as the data API's writes are, so that user's reads go to the primary until
-- the replica has replayed the change: a new session is never checked against a replica that
-- lacks it, and an ended session or a banned user is refused at once, not after the replica's lag.
-- The notice is sent only if the transaction commits (one per user and transaction), and only
-- where a replica is configured: the triggers are made disabled, and Gatehouse turns them on or
-- off at each start (gatehouse.announce_writes, on with GATEHOUSE_DATABASE_READ_URL), so that
-- without a replica no sign-in pays for a NOTIFY.
-- One function for both tables: the trigger's argument names the column holding the user's id.
CREATE FUNCTION gatehouse.announce_user_write() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = ''
    AS $$
BEGIN
    PERFORM pg_catalog.pg_notify('gatehouse_writes',
        pg_catalog.to_jsonb(CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END) ->> TG_ARGV[0]);
    RETURN NULL;
END;
$$;

REVOKE ALL ON FUNCTION gatehouse.announce_user_write() FROM PUBLIC;

CREATE TRIGGER announce_session_change
    AFTER INSERT OR DELETE OR UPDATE OF user_id, not_after ON auth.sessions
    FOR EACH ROW EXECUTE FUNCTION gatehouse.announce_user_write('user_id');

CREATE TRIGGER announce_user_change
    AFTER DELETE OR UPDATE OF banned_until, deleted_at ON auth.users
    FOR EACH ROW EXECUTE FUNCTION gatehouse.announce_user_write('id');

ALTER TABLE auth.sessions DISABLE TRIGGER announce_session_change;
ALTER TABLE auth.users DISABLE TRIGGER announce_user_change;

-- Turns the two triggers on or off, touching the tables only when their state differs (an ALTER
-- TABLE takes a lock, and every process calls this at start).
CREATE FUNCTION gatehouse.announce_writes(wanted boolean) RETURNS void
    LANGUAGE plpgsql
    SET search_path = ''
    AS $$
DECLARE
    trigger_on record;
BEGIN
    FOR trigger_on IN
        SELECT t.tgrelid::regclass AS tab, t.tgname AS name
        FROM pg_catalog.pg_trigger t
        WHERE t.tgname IN ('announce_session_change', 'announce_user_change')
          AND t.tgrelid IN ('auth.sessions'::regclass, 'auth.users'::regclass)
          AND (t.tgenabled <> 'D') IS DISTINCT FROM wanted
    LOOP
        EXECUTE format('ALTER TABLE %s %s TRIGGER %I', trigger_on.tab,
                       CASE WHEN wanted THEN 'ENABLE' ELSE 'DISABLE' END, trigger_on.name);
    END LOOP;
END;
$$;

REVOKE ALL ON FUNCTION gatehouse.announce_writes(boolean) FROM PUBLIC;
