-- pgbouncer's login for auth_query (deploy/pgbouncer/pgbouncer.ini). Run once, as a superuser, in
-- Gatehouse's database (auth_query runs in the database the client asks for):
--
--     psql "postgresql://postgres@db.internal/gatehouse" \
--          -v pgbouncer_password="$PGBOUNCER_PASSWORD" -f deploy/pgbouncer/auth.sql
--
-- The function reads pg_shadow, which only a superuser may, so it runs as its owner; it answers
-- for Gatehouse's two login roles and no other, so the pgbouncer role learns no one else's secret.

\set ON_ERROR_STOP on

CREATE ROLE pgbouncer LOGIN PASSWORD :'pgbouncer_password';
CREATE SCHEMA pgbouncer;

CREATE FUNCTION pgbouncer.user_lookup(i_username text, OUT uname text, OUT phash text)
    RETURNS record
    LANGUAGE sql
    STABLE
    SECURITY DEFINER
    SET search_path = pg_catalog
    AS $$
        SELECT usename::text, passwd::text FROM pg_catalog.pg_shadow
        WHERE usename = i_username AND usename IN ('gatehouse', 'authenticator')
    $$;

REVOKE ALL ON SCHEMA pgbouncer FROM PUBLIC;
REVOKE ALL ON FUNCTION pgbouncer.user_lookup(text) FROM PUBLIC;
GRANT USAGE ON SCHEMA pgbouncer TO pgbouncer;
GRANT EXECUTE ON FUNCTION pgbouncer.user_lookup(text) TO pgbouncer;
