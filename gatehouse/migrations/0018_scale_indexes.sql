-- Indexes for the reads whose cost would otherwise grow with the number of users (measured by
-- bench/scale.py at 10k, 100k and 1M users; tests/test_query_plans.py fails if one goes missing).

-- The admin user list (GET /auth/v1/admin/users, auth/users.py PAGE_SQL and COUNT_LISTED_SQL)
-- pages through the users not deleted, oldest first, and counts them for X-Total-Count. This
-- partial index holds exactly those rows in that order, so both are index-only scans (once
-- VACUUM has marked the table's pages all-visible): the count reads the index instead of every
-- row, and a deep page's OFFSET skips index entries without visiting rows. Both still grow with
-- the number of users, as an exact total and an OFFSET must; a page near the start does not.
CREATE INDEX users_listed_idx ON auth.users (created_at, id) WHERE deleted_at IS NULL;

-- The user-management starter's profiles (0003_profiles.sql), newest first: the tutorial's app
-- lists them with ?order=updated_at.desc (ORDER BY updated_at DESC, nulls first, which this
-- index gives read backwards), which without it reads and sorts the whole table for 50 rows.
-- Only on the starter's own table: when GATEHOUSE_STARTER_SCHEMA=none took it out, any
-- public.profiles there is the app's, and its indexes are the app's to choose.
DO $$
BEGIN
    IF to_regclass('public.profiles') IS NOT NULL AND NOT EXISTS (
        SELECT FROM gatehouse.schema_migrations WHERE source = 'starter' AND version = 'remove'
    ) THEN
        CREATE INDEX profiles_updated_at_idx ON public.profiles (updated_at);
    END IF;
END
$$;
