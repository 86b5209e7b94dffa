-- Run once, as a superuser, on a PostgreSQL 15 or later server of your own, before Gatehouse's
-- first start:
--
--     psql "postgresql://postgres@db.internal/postgres" \
--          -v owner_password="$OWNER_PASSWORD" -f deploy/postgres/bootstrap.sql
--
-- It makes what only a superuser may make, so that Gatehouse itself runs as an ordinary role:
--   gatehouse      owns the database and every table; runs the migrations; may create roles
--                  (CREATEROLE) but is not a superuser. GATEHOUSE_DATABASE_URL names it.
--   anon, authenticated, service_role, authenticator
--                  the request roles (see gatehouse/migrations/0001_roles.sql). service_role
--                  bypasses row-level security, which only a superuser may grant.
-- Gatehouse sets authenticator's password itself at every start (from its keys).
-- On a managed server whose administrator role is not a superuser, ask for these roles with
-- these attributes; everything else Gatehouse does as its own role.

\set ON_ERROR_STOP on

CREATE ROLE gatehouse LOGIN CREATEROLE PASSWORD :'owner_password';
CREATE DATABASE gatehouse OWNER gatehouse;

CREATE ROLE anon NOLOGIN NOINHERIT;
CREATE ROLE authenticated NOLOGIN NOINHERIT;
CREATE ROLE service_role NOLOGIN NOINHERIT BYPASSRLS;
CREATE ROLE authenticator LOGIN NOINHERIT;

-- The owner grants these to authenticator and sets its password; PostgreSQL 16 and later ask
-- for ADMIN OPTION for that, where 15 is content with CREATEROLE.
GRANT anon, authenticated, service_role, authenticator TO gatehouse WITH ADMIN OPTION;
