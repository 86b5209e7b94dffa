-- The mail outbox. An email is a row written in the same transaction as the change that needs
-- it, so a committed change always has its email and a rolled-back one never does. Senders
-- (any number of processes) deliver the rows over SMTP; without SMTP, in development, the rows
-- are the development inbox (/_inbox). Sent rows are kept: they are the delivery record.
-- Everything here lives in the gatehouse schema, which the request roles cannot use: no grants.
CREATE TABLE gatehouse.mail_outbox (
    id bigserial PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now(),
    -- confirmation, recovery, magic_link, email_change, invite, test, ...: free text, so a new
    -- kind of email needs no migration.
    kind text NOT NULL,
    to_address text NOT NULL,
    subject text NOT NULL,
    text_body text NOT NULL,
    html_body text,
    -- Stable across retries: the Message-ID header is built from it, so a receiver can drop the
    -- duplicate a crash between "server accepted" and "row marked sent" may cause.
    message_id uuid NOT NULL DEFAULT gen_random_uuid(),
    -- pending: waiting for next_attempt_at; sending: claimed by a sender until locked_until;
    -- sent: accepted by the SMTP server; failed: refused mail_max_attempts times, given up.
    status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sending', 'sent', 'failed')),
    -- Attempts the SMTP server answered (accepted or refused). Attempts that could not reach the
    -- server are logged in mail_attempts but not counted: an outage never makes mail fail.
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    -- The lease: a sender that dies mid-send leaves the row 'sending'; once locked_until has
    -- passed, another sender may claim it again.
    locked_until timestamptz,
    -- Which claim holds the lease. A sender only records the outcome of its own claim, so one
    -- that outlived its lease cannot overwrite the result of the sender that took over.
    claim uuid,
    sent_at timestamptz,
    last_error text,
    -- The user the email is about, when there is one. Deleting the user keeps the record.
    user_id uuid REFERENCES auth.users (id) ON DELETE SET NULL
);

-- The senders' scan: only unfinished rows, in due order. Sent and failed rows, which pile up,
-- are not in the index, so the scan stays small however long the history grows.
CREATE INDEX mail_outbox_due_idx ON gatehouse.mail_outbox (next_attempt_at)
    WHERE status IN ('pending', 'sending');
-- For the foreign key's ON DELETE and for "mail sent to this user".
CREATE INDEX mail_outbox_user_id_idx ON gatehouse.mail_outbox (user_id) WHERE user_id IS NOT NULL;

-- The delivery log: one row per attempt, whatever its outcome, with the server's answer or the
-- error. This is where an outage shows.
CREATE TABLE gatehouse.mail_attempts (
    id bigserial PRIMARY KEY,
    outbox_id bigint NOT NULL REFERENCES gatehouse.mail_outbox (id) ON DELETE CASCADE,
    attempted_at timestamptz NOT NULL DEFAULT now(),
    ok boolean NOT NULL,
    response text NOT NULL
);
CREATE INDEX mail_attempts_outbox_id_idx ON gatehouse.mail_attempts (outbox_id, attempted_at);
