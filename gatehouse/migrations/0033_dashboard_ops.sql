-- The dashboard's Mail and Health sections (gatehouse/dashboard/mail.py, health.py).
--
-- Mail: an administrator may cancel a message that has not been sent yet; it stays in the outbox
-- as the record of what was not sent. The dashboard lists the outbox newest first, optionally
-- by status: one index serves both.
ALTER TABLE gatehouse.mail_outbox DROP CONSTRAINT mail_outbox_status_check;
ALTER TABLE gatehouse.mail_outbox ADD CONSTRAINT mail_outbox_status_check
    CHECK (status IN ('pending', 'sending', 'sent', 'failed', 'cancelled'));
CREATE INDEX mail_outbox_status_id_idx ON gatehouse.mail_outbox (status, id DESC);

-- Health: every process writes one row every GATEHOUSE_METRICS_SAMPLE_INTERVAL seconds with what it
-- counted since its previous row (gatehouse/core/samples.py), so that any process can chart the
-- whole deployment. Latencies are kept as histogram bucket counts (not quantiles, which cannot be
-- added up): summing the buckets of any rows gives the p50/p99 of all their requests together.
-- Rows older than GATEHOUSE_METRICS_RETENTION are pruned by the writers.
CREATE TABLE gatehouse.metrics_samples (
    id bigserial PRIMARY KEY,
    sampled_at timestamptz NOT NULL DEFAULT now(),
    -- Which process: host, pid and a random suffix (a pid is reused after a restart).
    source text NOT NULL,
    -- The seconds this row covers (since the process's previous row, or its start).
    seconds double precision NOT NULL CHECK (seconds > 0),
    requests bigint NOT NULL CHECK (requests >= 0),
    -- Answers with a 5xx status.
    errors bigint NOT NULL CHECK (errors >= 0),
    -- Requests per latency bucket, not cumulative: element i counts latencies in
    -- (bounds[i-1], bounds[i]], the last element those above the highest bound. The bounds are
    -- gatehouse.core.metrics.LATENCY_BUCKETS, in seconds.
    latency_counts bigint[] NOT NULL,
    latency_sum double precision NOT NULL,
    -- Database connections at the moment of the sample, over all of the process's pools.
    pool_in_use integer NOT NULL,
    pool_open integer NOT NULL,
    pool_max integer NOT NULL
);
CREATE INDEX metrics_samples_sampled_at_idx ON gatehouse.metrics_samples (sampled_at);
