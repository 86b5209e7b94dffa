-- Uploads in one round trip: a Gatehouse process remembers a bucket's settings between uploads
-- and validates an upload against them; the statement that writes the object's row then checks,
-- with this function, that they are still the bucket's. If they changed meanwhile (another
-- process, psql), the row is not written and Gatehouse reads the bucket again and re-validates.
-- SECURITY DEFINER: callers may write objects without being allowed to read storage.buckets.
CREATE FUNCTION storage.bucket_unchanged(bucket text, size_limit bigint, mime_types text[])
    RETURNS boolean
    LANGUAGE sql
    STABLE
    SECURITY DEFINER
    SET search_path = ''
    AS $$
        SELECT EXISTS (
            SELECT 1 FROM storage.buckets b
            WHERE b.id = bucket
              AND b.file_size_limit IS NOT DISTINCT FROM size_limit
              AND b.allowed_mime_types IS NOT DISTINCT FROM mime_types
        )
    $$;
REVOKE ALL ON FUNCTION storage.bucket_unchanged(text, bigint, text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION storage.bucket_unchanged(text, bigint, text[]) TO anon, authenticated, service_role;
