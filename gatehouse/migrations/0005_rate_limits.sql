-- Rate-limit counters, shared by every Gatehouse process through the database.
-- One row per (key, window): key is sha256 of the caller's key text (e.g. 'token:ip:1.2.3.4'),
-- so hostile input cannot make rows large and the table holds no email addresses or IPs in clear.
-- To unblock a key by hand:
--   DELETE FROM auth.rate_limits WHERE key = sha256(convert_to('email:alice@example.com', 'UTF8'));
--
-- UNLOGGED: counters are written on every rate-limited request and are worth nothing after a
-- crash, so they skip the write-ahead log (faster writes; emptied after a crash, and not copied
-- to replicas, which never need them). fillfactor leaves room in each page so that the
-- "hits = hits + 1" updates stay HOT (no index writes).
CREATE UNLOGGED TABLE auth.rate_limits (
    key bytea NOT NULL CHECK (octet_length(key) = 32),
    window_start timestamptz NOT NULL,
    hits integer NOT NULL CHECK (hits > 0),
    PRIMARY KEY (key, window_start)
) WITH (fillfactor = 70);

-- Pruning deletes by age alone.
CREATE INDEX rate_limits_window_start_idx ON auth.rate_limits (window_start);

-- Only the auth service (the admin pool) counts; no request role may read or reset counters.
REVOKE ALL ON auth.rate_limits FROM PUBLIC, anon, authenticated, service_role;
