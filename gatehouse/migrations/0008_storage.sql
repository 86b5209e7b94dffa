-- Storage: buckets and objects as in Supabase Storage, with row-level security on objects.
-- Object bytes live in the storage backend under "<bucket_id>/<version>"; a row points at its
-- bytes through "version", and bytes whose row went away are queued in storage.deleted_blobs
-- for the janitor (so no foreign key and no request waits on the backend to delete).
CREATE SCHEMA IF NOT EXISTS storage;
REVOKE ALL ON SCHEMA storage FROM PUBLIC;
GRANT USAGE ON SCHEMA storage TO anon, authenticated, service_role;

CREATE TABLE storage.buckets (
    id text PRIMARY KEY CHECK (id ~ '^[a-z0-9][a-z0-9._-]{0,62}$'),
    name text NOT NULL UNIQUE,
    owner uuid,
    owner_id text,
    public boolean NOT NULL DEFAULT false,
    file_size_limit bigint CHECK (file_size_limit IS NULL OR file_size_limit > 0),
    allowed_mime_types text[],
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE storage.objects (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    bucket_id text NOT NULL REFERENCES storage.buckets (id),
    name text NOT NULL,
    owner uuid,
    owner_id text,
    metadata jsonb,
    user_metadata jsonb,
    version text NOT NULL,
    path_tokens text[] GENERATED ALWAYS AS (string_to_array(name, '/')) STORED,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    last_accessed_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT objects_bucket_id_name_key UNIQUE (bucket_id, name),
    CONSTRAINT objects_name_check CHECK (
        char_length(name) BETWEEN 1 AND 1024 AND name !~ '[[:cntrl:]]' AND name NOT LIKE '/%'
    )
);
CREATE INDEX objects_bucket_id_name_pattern_idx ON storage.objects (bucket_id, name text_pattern_ops);
CREATE INDEX objects_owner_idx ON storage.objects (owner);

-- Bytes that no row points at any more, for the janitor to delete from the backend.
CREATE TABLE storage.deleted_blobs (
    key text PRIMARY KEY,
    queued_at timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE storage.buckets ENABLE ROW LEVEL SECURITY;
ALTER TABLE storage.objects ENABLE ROW LEVEL SECURITY;

-- Policies decide: the request roles get the table privileges and RLS filters them.
GRANT SELECT, INSERT, UPDATE, DELETE ON storage.objects TO anon, authenticated;
GRANT SELECT ON storage.buckets TO anon, authenticated;
GRANT ALL ON storage.buckets, storage.objects TO service_role;

-- Path helpers, as in Supabase: 'a/b/c.png' -> foldername {a,b}, filename 'c.png', extension 'png'.
CREATE FUNCTION storage.foldername(name text) RETURNS text[]
    LANGUAGE sql IMMUTABLE
    AS $$ SELECT (string_to_array(name, '/'))[1:array_length(string_to_array(name, '/'), 1) - 1] $$;
CREATE FUNCTION storage.filename(name text) RETURNS text
    LANGUAGE sql IMMUTABLE
    AS $$ SELECT (string_to_array(name, '/'))[array_length(string_to_array(name, '/'), 1)] $$;
CREATE FUNCTION storage.extension(name text) RETURNS text
    LANGUAGE sql IMMUTABLE
    AS $$
    SELECT CASE WHEN storage.filename(name) LIKE '%.%'
                THEN reverse(split_part(reverse(storage.filename(name)), '.', 1)) ELSE '' END
$$;
GRANT EXECUTE ON FUNCTION storage.foldername(text), storage.filename(text), storage.extension(text)
    TO anon, authenticated, service_role;

-- When a row goes, or points at new bytes, queue the old bytes. Runs as the table owner: the
-- request roles cannot touch the queue themselves.
CREATE FUNCTION storage.queue_old_blob() RETURNS trigger
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = ''
    AS $$
BEGIN
    IF TG_OP = 'DELETE' OR old.version IS DISTINCT FROM new.version OR old.bucket_id IS DISTINCT FROM new.bucket_id THEN
        INSERT INTO storage.deleted_blobs (key) VALUES (old.bucket_id || '/' || old.version) ON CONFLICT DO NOTHING;
        PERFORM pg_notify('gatehouse_blobs', '');
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER objects_queue_old_blob
    AFTER UPDATE OR DELETE ON storage.objects
    FOR EACH ROW EXECUTE FUNCTION storage.queue_old_blob();

-- Deleting a user deletes their objects (rows now, bytes through the queue).
CREATE FUNCTION storage.delete_user_objects() RETURNS trigger
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = ''
    AS $$
BEGIN
    DELETE FROM storage.objects WHERE owner = old.id;
    RETURN NULL;
END;
$$;
CREATE TRIGGER on_auth_user_deleted_objects
    AFTER DELETE ON auth.users
    FOR EACH ROW EXECUTE FUNCTION storage.delete_user_objects();
REVOKE ALL ON FUNCTION storage.queue_old_blob(), storage.delete_user_objects() FROM PUBLIC;

-- The starter's avatars bucket: public reads, images only, 2 MB.
INSERT INTO storage.buckets (id, name, public, file_size_limit, allowed_mime_types)
VALUES ('avatars', 'avatars', true, 2097152, ARRAY['image/png', 'image/jpeg', 'image/gif', 'image/webp']);

-- Safer than the tutorial's "Anyone can upload an avatar" (which lets anonymous callers in):
-- anyone reads avatars; a signed-in user writes only objects whose name starts with their id,
-- so the tutorial's "{uid}-{random}.{ext}" names keep working.
CREATE POLICY "Avatar images are publicly accessible." ON storage.objects
    FOR SELECT USING (bucket_id = 'avatars');
CREATE POLICY "Users can upload their own avatar." ON storage.objects
    FOR INSERT TO authenticated
    WITH CHECK (bucket_id = 'avatars' AND starts_with(name, (SELECT auth.uid())::text));
CREATE POLICY "Users can replace their own avatar." ON storage.objects
    FOR UPDATE TO authenticated
    USING (bucket_id = 'avatars' AND starts_with(name, (SELECT auth.uid())::text))
    WITH CHECK (bucket_id = 'avatars' AND starts_with(name, (SELECT auth.uid())::text));
CREATE POLICY "Users can delete their own avatar." ON storage.objects
    FOR DELETE TO authenticated
    USING (bucket_id = 'avatars' AND starts_with(name, (SELECT auth.uid())::text));
-- Public buckets can be listed by anyone, as their contents are public anyway.
CREATE POLICY "Public buckets are visible." ON storage.buckets FOR SELECT USING (public);
