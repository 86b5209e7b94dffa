-- The start-up sweep (storage/janitor.py, SWEEP_REFERENCED_SQL) asks which of a thousand stored
-- blobs still have a row. It used to match `bucket_id || '/' || version`, an expression no index
-- serves: one scan of all of storage.objects per thousand blobs, in every worker at every start,
-- which with a million files is minutes of database work. A row's version is a fresh UUID, so an
-- index on it finds each blob's row directly; uploads pay one more index entry.
CREATE INDEX objects_version_idx ON storage.objects (version);
