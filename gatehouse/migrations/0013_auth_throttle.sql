-- The per-account slow-down of password guessing (gatehouse/auth/throttle.py).
--
-- Once an account's budget of failed log-ins is spent, a client that is neither a trusted
-- device nor new to the account must wait for the account's next free slot: each attempt claims
-- the slot and moves not_before an increasing, bounded delay ahead
-- (INSERT ... ON CONFLICT DO UPDATE ... WHERE not_before <= now, so two processes never hand
-- out one slot twice). One row per account; key is sha256 of 'slowdown:<email>', so the table
-- holds no addresses in clear. To lift a slow-down by hand:
--   DELETE FROM auth.login_slowdown WHERE key = sha256(convert_to('slowdown:alice@example.com', 'UTF8'));
--
-- UNLOGGED like auth.rate_limits: worth nothing after a crash, never needed on replicas.
CREATE UNLOGGED TABLE auth.login_slowdown (
    key bytea PRIMARY KEY CHECK (octet_length(key) = 32),
    not_before timestamptz NOT NULL
) WITH (fillfactor = 70);

-- Pruning deletes by age alone.
CREATE INDEX login_slowdown_not_before_idx ON auth.login_slowdown (not_before);

REVOKE ALL ON auth.login_slowdown FROM PUBLIC, anon, authenticated, service_role;
