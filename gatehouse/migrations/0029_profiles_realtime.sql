-- The starter's profiles send their changes to realtime subscribers, as the Supabase
-- user-management starter sets up (`alter publication supabase_realtime add table profiles`):
-- the account page shows a profile changed in another tab at once. RLS decides who hears of a
-- change; the profiles policy lets everyone read profiles, as the starter does.
DO $$
BEGIN
    IF to_regclass('public.profiles') IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM pg_publication_tables
        WHERE pubname = 'supabase_realtime' AND schemaname = 'public' AND tablename = 'profiles'
    ) THEN
        ALTER PUBLICATION supabase_realtime ADD TABLE public.profiles;
    END IF;
END
$$;
