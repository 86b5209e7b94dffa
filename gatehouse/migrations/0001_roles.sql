-- Roles as in Supabase / PostgREST.
--   anon           requests without a user token
--   authenticated  requests with a signed-in user's token
--   service_role   the secret key: bypasses row-level security
--   authenticator  the login role the request pool connects as; it has no rights of its own
--                  (NOINHERIT) and may only SET ROLE to the three above.
-- Roles are global to the cluster, so each is created only if missing.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon') THEN
        CREATE ROLE anon NOLOGIN NOINHERIT;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN
        CREATE ROLE authenticated NOLOGIN NOINHERIT;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
        CREATE ROLE service_role NOLOGIN NOINHERIT BYPASSRLS;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticator') THEN
        CREATE ROLE authenticator LOGIN NOINHERIT;
    END IF;
END
$$;

-- Only a superuser may give BYPASSRLS: on a server where Gatehouse's role is not one, a
-- superuser creates these roles first (deploy/postgres/bootstrap.sql) and nothing here
-- needs to change them.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticator' AND rolinherit) THEN
        ALTER ROLE authenticator NOINHERIT;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role' AND rolbypassrls) THEN
        ALTER ROLE service_role BYPASSRLS;
    END IF;
END
$$;
GRANT anon, authenticated, service_role TO authenticator;

-- The request roles may use the public schema, and nothing else unless granted.
GRANT USAGE ON SCHEMA public TO anon, authenticated, service_role;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;

-- Gatehouse's own bookkeeping lives in its own schema, closed to the request roles.
CREATE SCHEMA IF NOT EXISTS gatehouse;
REVOKE ALL ON SCHEMA gatehouse FROM PUBLIC;
