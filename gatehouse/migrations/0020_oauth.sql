-- Sign-in with OAuth 2.0 / OpenID Connect providers (auth/oauth/).
--
-- One row per sign-in started at /auth/v1/authorize, read once at /auth/v1/callback. The state
-- sent through the provider is random and stored only as its SHA-256; the browser that started
-- the sign-in holds a binding cookie whose SHA-256 must match too, so a state lifted from another
-- browser (or a callback URL planted in a victim's browser) is refused. The PKCE verifier toward
-- the provider and the OIDC nonce live here, never in the browser.
CREATE TABLE auth.oauth_states (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    state_hash text NOT NULL UNIQUE,
    -- null only for a link started by a client's fetch (linkIdentity), which no cookie can reach
    binding_hash text,
    provider text NOT NULL,
    redirect_to text NOT NULL,
    -- the client's own PKCE challenge (supabase-js / supabase-py); null for the implicit flow
    code_challenge text,
    code_challenge_method text CHECK (code_challenge_method IN ('s256', 'plain')),
    provider_code_verifier text NOT NULL,
    nonce text NOT NULL,
    -- set when a signed-in user links this provider to their account (linkIdentity)
    link_user_id uuid REFERENCES auth.users (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);
CREATE INDEX oauth_states_expires_at_idx ON auth.oauth_states (expires_at);

-- The provider's own tokens, handed to the client once with the session (provider_token,
-- provider_refresh_token), as the upstream auth server does; gone with the flow state row.
ALTER TABLE auth.flow_state ADD COLUMN provider_access_token text;
ALTER TABLE auth.flow_state ADD COLUMN provider_refresh_token text;

-- ID tokens that signed someone in (grant_type=id_token), kept until they expire: the same token
-- presented again is refused, so a token copied from a device or a log cannot be replayed.
CREATE TABLE auth.used_id_tokens (
    token_hash text PRIMARY KEY,
    expires_at timestamptz NOT NULL
);
CREATE INDEX used_id_tokens_expires_at_idx ON auth.used_id_tokens (expires_at);
