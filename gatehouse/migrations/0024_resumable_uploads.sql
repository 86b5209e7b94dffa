-- Resumable uploads (TUS 1.0.0 at /storage/v1/upload/resumable): what each upload in progress is,
-- and the chunks it has received so far. The state lives here, not in a process, so an upload
-- goes on after a restart and on any of several processes; the bytes of each acknowledged chunk
-- are a blob of the storage backend ("<bucket_id>/<version>", like an object's), named by a row
-- of storage.resumable_parts. Only the server's own pool reads or writes these tables: the
-- request roles get no privilege, and the objects row is written at the end, as the caller.
CREATE TABLE storage.resumable_uploads (
    id uuid PRIMARY KEY,
    -- Who created it: only the same user (or, without one, the same role) may go on with it.
    owner_role text NOT NULL,
    owner_id text,
    bucket_id text NOT NULL,
    name text NOT NULL,
    upload_length bigint NOT NULL CHECK (upload_length >= 0),
    upload_offset bigint NOT NULL DEFAULT 0 CHECK (upload_offset >= 0 AND upload_offset <= upload_length),
    upsert boolean NOT NULL DEFAULT false,
    content_type text,
    cache_control text,
    user_metadata jsonb,
    -- The Upload-Metadata header as received (known keys only), echoed by HEAD.
    tus_metadata text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    -- Pushed back by every chunk: an upload idle past it is abandoned, and swept.
    expires_at timestamptz NOT NULL,
    -- Set while one request writes the finished object (a lease, renewed while it works): no other
    -- request may add a chunk or finish meanwhile, and a killed process holds it only until then.
    finishing_until timestamptz
);
CREATE INDEX resumable_uploads_expires_idx ON storage.resumable_uploads (expires_at);

CREATE TABLE storage.resumable_parts (
    -- The blob's version: its key is bucket_id || '/' || version.
    version text PRIMARY KEY,
    upload_id uuid NOT NULL REFERENCES storage.resumable_uploads (id) ON DELETE CASCADE,
    bucket_id text NOT NULL,
    start_offset bigint NOT NULL CHECK (start_offset >= 0),
    size bigint NOT NULL CHECK (size > 0),
    UNIQUE (upload_id, start_offset)
);

REVOKE ALL ON storage.resumable_uploads, storage.resumable_parts FROM PUBLIC, anon, authenticated, service_role;

-- A part that goes (the upload finished, was terminated or expired) queues its blob for the
-- janitor, as an object row that goes does.
CREATE FUNCTION storage.queue_resumable_part() RETURNS trigger
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = ''
    AS $$
BEGIN
    INSERT INTO storage.deleted_blobs (key) VALUES (old.bucket_id || '/' || old.version) ON CONFLICT DO NOTHING;
    RETURN NULL;
END;
$$;
CREATE TRIGGER resumable_parts_queue_blob
    AFTER DELETE ON storage.resumable_parts
    FOR EACH ROW EXECUTE FUNCTION storage.queue_resumable_part();
REVOKE ALL ON FUNCTION storage.queue_resumable_part() FROM PUBLIC;
