-- The S3 protocol at /storage/v1/s3 (gatehouse/storage/s3/).
--
-- S3 access keys: SigV4 recomputes an HMAC with the secret, so the secret cannot be stored as a
-- one-way hash. It is sealed with AES-GCM under a key derived from the signing key (keys.derive),
-- with the access key id as associated data: the database alone does not give it away.
CREATE TABLE gatehouse.s3_access_keys (
    access_key_id text PRIMARY KEY CHECK (access_key_id ~ '^[0-9a-f]{32}$'),
    sealed_secret text NOT NULL,
    description text NOT NULL DEFAULT '' CHECK (char_length(description) <= 200),
    created_at timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz
);

-- Multipart uploads in progress. Only Gatehouse (the privileged pool) reads these; the caller that
-- created an upload is remembered as a principal ('service', 'user:<uuid>' or 'role:<role>') and
-- only the same principal may add parts, list, complete or abort it. The object row is written,
-- and RLS asked, once: at completion, through the same upload path as every other write.
CREATE TABLE gatehouse.s3_multipart_uploads (
    id text PRIMARY KEY,
    bucket_id text NOT NULL REFERENCES storage.buckets (id) ON DELETE CASCADE,
    name text NOT NULL,
    principal text NOT NULL,
    content_type text,
    cache_control text,
    completing boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX s3_multipart_uploads_created_at_idx ON gatehouse.s3_multipart_uploads (created_at);
CREATE INDEX s3_multipart_uploads_bucket_name_idx ON gatehouse.s3_multipart_uploads (bucket_id, name);

-- Each part's bytes are a blob of the storage backend under <bucket_id>/<version>, like an
-- object's; the janitor's orphan sweep counts these versions as referenced.
CREATE TABLE gatehouse.s3_multipart_parts (
    upload_id text NOT NULL REFERENCES gatehouse.s3_multipart_uploads (id) ON DELETE CASCADE,
    part_number integer NOT NULL CHECK (part_number BETWEEN 1 AND 10000),
    bucket_id text NOT NULL,
    version text NOT NULL,
    etag text NOT NULL,
    size bigint NOT NULL CHECK (size >= 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (upload_id, part_number)
);
CREATE INDEX s3_multipart_parts_version_idx ON gatehouse.s3_multipart_parts (version);

-- A part that goes (aborted, completed, expired, its bucket deleted) or is replaced by a new
-- upload of the same number: its bytes join the janitor's queue.
CREATE FUNCTION gatehouse.queue_old_part() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = ''
    AS $$
BEGIN
    IF TG_OP = 'DELETE' OR old.version IS DISTINCT FROM new.version THEN
        INSERT INTO storage.deleted_blobs (key) VALUES (old.bucket_id || '/' || old.version) ON CONFLICT DO NOTHING;
        PERFORM pg_notify('gatehouse_blobs', '');
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER s3_multipart_parts_queue_old_part
    AFTER UPDATE OR DELETE ON gatehouse.s3_multipart_parts
    FOR EACH ROW EXECUTE FUNCTION gatehouse.queue_old_part();
