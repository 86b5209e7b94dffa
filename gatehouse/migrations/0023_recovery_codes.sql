-- Recovery codes (auth/mfa/flow.py): the way back in for a user who lost their second factor.
-- Ten at a time, shown once; each stored as an HMAC (a key derived from the signing key), so the
-- database alone cannot be used to try them offline; each works once (used_at).
CREATE TABLE auth.mfa_recovery_codes (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id uuid NOT NULL REFERENCES auth.users (id) ON DELETE CASCADE,
    code_hash text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    used_at timestamptz
);
CREATE INDEX mfa_recovery_codes_user_id_idx ON auth.mfa_recovery_codes (user_id);
