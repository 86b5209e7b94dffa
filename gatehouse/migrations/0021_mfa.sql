-- Second factors (auth/mfa/): Supabase's tables, so a dump of a project's factors imports as it is.
--
-- A factor starts unverified at enrolment and becomes verified by its first good code. TOTP
-- secrets are stored encrypted (AES-GCM, "v1:" then base64 of nonce and ciphertext, the factor's
-- id as associated data) with a key derived from the signing key: never readable from the
-- database alone. last_used_step is Gatehouse's own: the TOTP time step of the last code
-- accepted, so that each code works once.
CREATE TYPE auth.factor_type AS ENUM ('totp', 'webauthn', 'phone');
CREATE TYPE auth.factor_status AS ENUM ('unverified', 'verified');

CREATE TABLE auth.mfa_factors (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id uuid NOT NULL REFERENCES auth.users (id) ON DELETE CASCADE,
    friendly_name text,
    factor_type auth.factor_type NOT NULL,
    status auth.factor_status NOT NULL DEFAULT 'unverified',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    secret text,
    phone text,
    last_challenged_at timestamptz,
    web_authn_credential jsonb,
    web_authn_aaguid uuid,
    last_used_step bigint
);
CREATE INDEX mfa_factors_user_id_idx ON auth.mfa_factors (user_id);
CREATE UNIQUE INDEX mfa_factors_user_friendly_name_unique ON auth.mfa_factors (friendly_name, user_id)
    WHERE trim(friendly_name) <> '';

CREATE TABLE auth.mfa_challenges (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    factor_id uuid NOT NULL REFERENCES auth.mfa_factors (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    verified_at timestamptz,
    ip_address inet NOT NULL,
    otp_code text,
    web_authn_session_data jsonb
);
CREATE INDEX mfa_challenge_created_at_idx ON auth.mfa_challenges (created_at DESC);
CREATE INDEX mfa_challenges_factor_id_idx ON auth.mfa_challenges (factor_id);

ALTER TABLE auth.sessions ADD CONSTRAINT sessions_factor_id_fkey
    FOREIGN KEY (factor_id) REFERENCES auth.mfa_factors (id) ON DELETE SET NULL;
