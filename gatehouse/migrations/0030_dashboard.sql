-- The admin dashboard at /_/ (gatehouse/dashboard/): its administrators, their sessions, the
-- one-time set-up link of a fresh development install, and the audit trail of what they did.
--
-- Administrators are not app users (auth.users): a leaked app session or access token must not
-- reach /_/. Passwords are argon2id hashes (auth/passwords.py); TOTP secrets are sealed as the MFA
-- factors' are (AES-GCM under a key derived from the signing key, the admin's id as associated
-- data), and totp_last_step makes each code work once. Session and set-up tokens are stored as
-- their SHA-256 only. Everything lives in the gatehouse schema, which no API role may use.
CREATE TABLE gatehouse.dashboard_admins (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email text NOT NULL CHECK (email = lower(email) AND length(email) BETWEEN 3 AND 254),
    password_hash text NOT NULL,
    totp_secret text,
    totp_confirmed boolean NOT NULL DEFAULT false,
    totp_last_step bigint,
    created_at timestamptz NOT NULL DEFAULT now(),
    last_sign_in_at timestamptz
);
CREATE UNIQUE INDEX dashboard_admins_email_key ON gatehouse.dashboard_admins (lower(email));

-- stage: 'totp' (password passed, code still due), 'enrol' (password passed, TOTP must be set up
-- first) or 'full'. Only 'full' reaches the pages.
CREATE TABLE gatehouse.dashboard_sessions (
    token_hash bytea PRIMARY KEY,
    admin_id uuid NOT NULL REFERENCES gatehouse.dashboard_admins (id) ON DELETE CASCADE,
    stage text NOT NULL CHECK (stage IN ('totp', 'enrol', 'full')),
    created_at timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now(),
    ip text NOT NULL DEFAULT '',
    user_agent text NOT NULL DEFAULT ''
);
CREATE INDEX dashboard_sessions_admin_idx ON gatehouse.dashboard_sessions (admin_id);

CREATE TABLE gatehouse.dashboard_setup_tokens (
    token_hash bytea PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    used_at timestamptz
);

CREATE TABLE gatehouse.dashboard_audit (
    id bigserial PRIMARY KEY,
    admin_id uuid REFERENCES gatehouse.dashboard_admins (id) ON DELETE SET NULL,
    action text NOT NULL,
    target text,
    detail jsonb NOT NULL DEFAULT '{}',
    ip text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dashboard_audit_created_idx ON gatehouse.dashboard_audit (created_at DESC);
