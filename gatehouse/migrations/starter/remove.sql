-- GATEHOUSE_STARTER_SCHEMA=none: take out the user-management starter that the built-in
-- migrations set up (0003_profiles.sql, and the avatars bucket and its policies in
-- 0008_storage.sql), so that the tutorial's own SQL, or the app's, applies cleanly.
-- Applied once, after the built-in migrations and before the user's. It never deletes data:
-- a starter that already holds profiles or avatars stops the run instead.
DO $$
BEGIN
    IF to_regclass('public.profiles') IS NOT NULL AND EXISTS (SELECT 1 FROM public.profiles) THEN
        RAISE EXCEPTION 'GATEHOUSE_STARTER_SCHEMA=none, but public.profiles already holds rows'
            USING HINT = 'Keep the starter (GATEHOUSE_STARTER_SCHEMA=tutorial), or drop it yourself once its data is safe.';
    END IF;
    IF EXISTS (SELECT 1 FROM storage.objects WHERE bucket_id = 'avatars') THEN
        RAISE EXCEPTION 'GATEHOUSE_STARTER_SCHEMA=none, but the avatars bucket already holds objects'
            USING HINT = 'Keep the starter (GATEHOUSE_STARTER_SCHEMA=tutorial), or empty the bucket first.';
    END IF;
END
$$;

DROP TRIGGER IF EXISTS on_auth_user_created ON auth.users;
DROP FUNCTION IF EXISTS public.handle_new_user();
DROP TABLE IF EXISTS public.profiles;

DROP POLICY IF EXISTS "Avatar images are publicly accessible." ON storage.objects;
DROP POLICY IF EXISTS "Users can upload their own avatar." ON storage.objects;
DROP POLICY IF EXISTS "Users can replace their own avatar." ON storage.objects;
DROP POLICY IF EXISTS "Users can delete their own avatar." ON storage.objects;
DELETE FROM storage.buckets WHERE id = 'avatars';
