-- Your first migration: an example to read, then change or delete before you deploy.
--
-- Gatehouse applies the .sql files of this folder once each, in name order, after its own
-- migrations: at `gatehouse serve` and `gatehouse migrate` (GATEHOUSE_MIGRATIONS_DIR=migrations).
-- Each file runs in one transaction. Once a file is applied, leave it as it is: a changed file
-- stops the next start. Change the schema with a new file: `gatehouse migrate new add_due_dates`.
--
-- The example: a to-do list where each signed-in user sees and changes only their own rows,
-- through supabase.from('todos') or /rest/v1/todos. PostgreSQL decides who sees what: the data
-- API runs every request as the caller's role (anon or authenticated), and auth.uid() is the
-- signed-in user's id.

CREATE TABLE public.todos (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The row's owner: filled in from the caller's token when the client leaves it out, and
    -- deleted with the user.
    owner uuid NOT NULL DEFAULT auth.uid() REFERENCES auth.users (id) ON DELETE CASCADE,
    task text NOT NULL CHECK (char_length(task) BETWEEN 1 AND 500),
    done boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Lists filter on the owner: an index keeps them fast as the table grows.
CREATE INDEX todos_owner_idx ON public.todos (owner);

-- Row-level security: with it on and no policy, nobody but the service role sees a row.
ALTER TABLE public.todos ENABLE ROW LEVEL SECURITY;

-- One policy per action. (SELECT auth.uid()) is worked out once per statement, not once per row.
CREATE POLICY "Users see their own todos" ON public.todos
    FOR SELECT TO authenticated USING ((SELECT auth.uid()) = owner);

CREATE POLICY "Users add their own todos" ON public.todos
    FOR INSERT TO authenticated WITH CHECK ((SELECT auth.uid()) = owner);

-- USING picks the rows a user may change; WITH CHECK stops them giving a row to someone else.
CREATE POLICY "Users change their own todos" ON public.todos
    FOR UPDATE TO authenticated USING ((SELECT auth.uid()) = owner) WITH CHECK ((SELECT auth.uid()) = owner);

CREATE POLICY "Users delete their own todos" ON public.todos
    FOR DELETE TO authenticated USING ((SELECT auth.uid()) = owner);

-- Grants say which roles may try at all; the policies above then pick the rows. Gatehouse grants
-- nothing on new tables by itself (Supabase grants everything to every role). Signed-out callers
-- (anon) get nothing here; to let them read, grant SELECT to anon and add a policy for anon.
GRANT SELECT, INSERT, UPDATE, DELETE ON public.todos TO authenticated;
GRANT ALL ON public.todos TO service_role;

-- Realtime: to receive inserts, updates and deletes with supabase.channel(...).on('postgres_changes', ...),
-- add the table to the publication (each subscriber still sees only the rows their policies allow):
-- ALTER PUBLICATION supabase_realtime ADD TABLE public.todos;
