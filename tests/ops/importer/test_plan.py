"""What becomes of each statement of a Supabase dump: run, staged, loaded, or skipped with a reason."""

from __future__ import annotations

import pytest

from gatehouse.ops.importer.dump import DumpError, Statement, split
from gatehouse.ops.importer.plan import classify, implied_extensions, staged_insert


def step(sql: str) -> tuple[str, str]:
    (item,) = list(split(sql))
    planned = classify(item)
    return planned.action, planned.kind


@pytest.mark.parametrize(("sql", "action", "kind"), [
    ('CREATE TABLE "public"."profiles" ("id" "uuid" NOT NULL);', "run", "table"),
    ('CREATE TYPE "public"."plan" AS ENUM (\'free\');', "run", "type"),
    ('CREATE OR REPLACE FUNCTION "public"."f"() RETURNS int AS $$ select 1 $$ LANGUAGE sql;', "run", "function"),
    ('CREATE POLICY "p" ON "public"."profiles" FOR SELECT USING (true);', "run", "policy"),
    ('CREATE POLICY "p" ON "public"."t" AS PERMISSIVE FOR ALL TO "authenticated", "anon" USING (true);', "run",
     "policy"),
    ('ALTER TABLE "public"."t" RENAME COLUMN "owner" TO "x";', "run", "table change"),
    ('ALTER TABLE "public"."profiles" ENABLE ROW LEVEL SECURITY;', "run", "row level security"),
    ('GRANT ALL ON TABLE "public"."profiles" TO "authenticated";', "run", "grant"),
    ('REVOKE ALL ON FUNCTION "public"."f"() FROM PUBLIC;', "run", "grant"),
    ('CREATE SCHEMA "billing";', "run", "schema"),
    (('CREATE TRIGGER "on_auth_user_created" AFTER INSERT ON "auth"."users" FOR EACH ROW '
     'EXECUTE FUNCTION "public"."handle_new_user"();'), "run", "trigger on auth.users"),
    ('CREATE POLICY "p" ON "storage"."objects" FOR SELECT USING (bucket_id = \'a\');', "run", "storage policy"),
    ('ALTER PUBLICATION "supabase_realtime" ADD TABLE ONLY "public"."notes";', "run",
     "realtime table (supabase_realtime)"),
    ('SET check_function_bodies = false;', "setting", "setting"),
    ("SELECT pg_catalog.set_config('search_path', '', false);", "setting", "setting"),
    ("SELECT pg_catalog.setval('\"public\".\"notes_id_seq\"', 2, true);", "sequence", "sequence value"),
    ('CREATE EXTENSION IF NOT EXISTS "citext" WITH SCHEMA "extensions";', "extension", "extension"),
    ('COPY "public"."notes" ("id") FROM stdin;\n1\n\\.\n', "load", "rows"),
    ('INSERT INTO "public"."notes" ("id") VALUES (1);', "load", "rows"),
    ('COPY "auth"."users" ("id") FROM stdin;\n\\.\n', "stage", "auth.users"),
    ('INSERT INTO "storage"."objects" ("id") VALUES (\'x\');', "stage", "storage.objects"),
])
def test_the_apps_schema_runs_and_supabases_rows_are_staged(sql: str, action: str, kind: str) -> None:
    assert step(sql) == (action, kind)


@pytest.mark.parametrize(("sql", "reason"), [
    ('CREATE EXTENSION IF NOT EXISTS "pg_graphql" WITH SCHEMA "graphql";', "platform"),
    ('CREATE EXTENSION IF NOT EXISTS "supabase_vault" WITH SCHEMA "vault";', "platform"),
    ('ALTER TABLE "public"."profiles" OWNER TO "supabase_admin";', "OWNER TO"),
    ('ALTER FUNCTION "public"."f"() OWNER TO "postgres";', "OWNER TO"),
    ('CREATE PUBLICATION "supabase_realtime" WITH (publish = \'insert\');', "Gatehouse has its own"),
    ('ALTER PUBLICATION "supabase_realtime" OWNER TO "postgres";', "OWNER TO"),
    ('ALTER PUBLICATION "supabase_realtime" ADD TABLE ONLY "realtime"."messages";', "Gatehouse has its own"),
    ('CREATE PUBLICATION "to_warehouse" FOR ALL TABLES;', "other than supabase_realtime"),
    ("CREATE EVENT TRIGGER issue_pg_graphql_access ON ddl_command_end EXECUTE FUNCTION x();", "event trigger"),
    ('CREATE SCHEMA IF NOT EXISTS "graphql_public";', "schema Supabase manages"),
    ('CREATE SCHEMA "public";', "schema Supabase manages"),
    ('CREATE FUNCTION "graphql_public"."graphql"() RETURNS jsonb AS $$ $$ LANGUAGE sql;', "Supabase's internal"),
    ('CREATE TABLE "auth"."users" ("id" uuid);', "Supabase's auth schema"),
    ('ALTER TABLE "storage"."objects" ENABLE ROW LEVEL SECURITY;', "storage's own"),
    ('GRANT ALL ON TABLE "public"."notes" TO "supabase_admin";', "role Gatehouse does not have"),
    ('GRANT USAGE ON SCHEMA "graphql_public" TO "anon";', "Supabase manages"),
    ('GRANT "anon" TO "authenticator";', "role membership"),
    ('CREATE ROLE "supabase_auth_admin";', "role"),
    ('ALTER DEFAULT PRIVILEGES FOR ROLE "postgres" IN SCHEMA "public" GRANT ALL ON TABLES TO "anon";', "DEFAULT"),
    ('DROP TABLE IF EXISTS "public"."profiles";', "DROP"),
    ('CREATE POLICY "hook" ON "public"."roles" FOR SELECT TO "supabase_auth_admin" USING (true);', "policy for a role"),
    ('REVOKE USAGE ON SCHEMA "public" FROM PUBLIC;', "public schema itself"),
    ("SET session_replication_role = replica;", "session setting"),
    ("RESET ALL;", "session setting"),
    ("\\restrict abc", "meta-command"),
    ("SELECT pg_catalog.setval('\"auth\".\"refresh_tokens_id_seq\"', 1, false);", "auth schema"),
    ('COPY "vault"."secrets" ("id") FROM stdin;\n\\.\n', "vault"),
    ('COPY "auth"."sessions" ("id") FROM stdin;\n\\.\n', "auth"),
    ('COMMENT ON EXTENSION "pg_graphql" IS \'x\';', "extension"),
])
def test_what_gatehouse_does_not_take_is_skipped_with_a_reason(sql: str, reason: str) -> None:
    action, kind = step(sql)
    assert action == "skip" and reason in kind


@pytest.mark.parametrize("sql", [
    "Dear diary; today I moved.",
    "SELECT * FROM pg_shadow;",
    "SET standard_conforming_strings = off;",
    "SET client_encoding = 'LATIN1';",
    "(SELECT 1);",
])
def test_what_no_pg_dump_writes_is_refused(sql: str) -> None:
    with pytest.raises(DumpError):
        step(sql)


def test_calls_into_supabases_extensions_schema_bring_their_extension() -> None:
    steps = [classify(item) for item in split(
        'CREATE TABLE "public"."t" ("id" "uuid" DEFAULT "extensions"."uuid_generate_v4"());\n'
        'CREATE FUNCTION "public"."h"() RETURNS text AS $$ select extensions.crypt(1) $$ LANGUAGE sql;\n'
        'CREATE TABLE "public"."u" ("h" text DEFAULT "extensions"."crypt"(\'a\', "extensions"."gen_salt"(\'bf\')));\n'
    )]
    assert implied_extensions(steps) == ["uuid-ossp", "pgcrypto"]
    steps.insert(0, classify(Statement('CREATE EXTENSION IF NOT EXISTS "pgcrypto" WITH SCHEMA "extensions"', 1)))
    assert implied_extensions(steps) == ["uuid-ossp"]


def test_staged_inserts_are_aimed_at_the_staging_table() -> None:
    sql = 'INSERT INTO "auth"."users" ("id", "email") VALUES (\'1\', \'a@b.c\')'
    assert staged_insert(sql, "pg_temp.x") == 'INSERT INTO pg_temp.x ("id", "email") VALUES (\'1\', \'a@b.c\')'
