-- The signing keyring (gatehouse/core/keyring.py): the keys that sign access tokens and signed
-- URLs besides the configured one, so that the signing key can be rotated without signing anyone
-- out. The configured key (keys.json or GATEHOUSE_JWT_PRIVATE_KEY) stays the root: every derived
-- secret comes from it forever, and it signs until the first switch. Its own row (root = true,
-- no private key stored) appears with the first change and carries its state from then on.
--
-- state: standby (published in the JWKS and accepted, not signing) -> current (signing) ->
-- previous (published and accepted, not signing) -> retired (neither). A ring belongs to the root
-- key it was made under (root_kid): its private keys are sealed (AES-GCM, the kid as associated
-- data) under a key derived from that root, so another root ignores them.
CREATE TABLE gatehouse.signing_keys (
    kid text PRIMARY KEY CHECK (length(kid) BETWEEN 16 AND 128),
    root_kid text NOT NULL,
    root boolean NOT NULL DEFAULT false,
    public_jwk jsonb NOT NULL,
    sealed_private_key bytea,
    state text NOT NULL CHECK (state IN ('standby', 'current', 'previous', 'retired')),
    created_at timestamptz NOT NULL DEFAULT now(),
    -- when it became current, when it stopped signing, when it was retired
    activated_at timestamptz,
    deactivated_at timestamptz,
    retired_at timestamptz,
    CHECK (root = (sealed_private_key IS NULL)),
    CHECK (root = (kid = root_kid)),
    CHECK (state <> 'previous' OR deactivated_at IS NOT NULL)
);
-- At most one key signs and at most one waits to: two switches at once cannot leave two current.
CREATE UNIQUE INDEX signing_keys_one_current ON gatehouse.signing_keys (root_kid) WHERE state = 'current';
CREATE UNIQUE INDEX signing_keys_one_standby ON gatehouse.signing_keys (root_kid) WHERE state = 'standby';
