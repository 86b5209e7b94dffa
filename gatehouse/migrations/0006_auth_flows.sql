-- What the auth service needs beyond Supabase's tables: token expiry, PKCE flow state, and the
-- refresh-token rotation as one function so that a refresh is one round trip.

-- One-time tokens expire at a fixed instant (timestamptz: independent of the session time zone).
ALTER TABLE auth.one_time_tokens ADD COLUMN expires_at timestamptz NOT NULL DEFAULT now() + interval '1 day';

-- PKCE (supabase-py's default, and @supabase/ssr's): the challenge waits here until the email
-- link is opened, then an auth code is exchanged for a session together with the verifier.
CREATE TABLE auth.flow_state (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id uuid REFERENCES auth.users (id) ON DELETE CASCADE,
    auth_code text,  -- SHA-256 of the code handed to the client, never the code
    code_challenge_method text NOT NULL CHECK (code_challenge_method IN ('s256', 'plain')),
    code_challenge text NOT NULL,
    provider_type text NOT NULL DEFAULT 'email',
    authentication_method text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    auth_code_issued_at timestamptz
);
CREATE INDEX flow_state_auth_code_idx ON auth.flow_state (auth_code);
CREATE INDEX flow_state_created_at_idx ON auth.flow_state (created_at DESC);
ALTER TABLE auth.one_time_tokens ADD COLUMN flow_state_id uuid REFERENCES auth.flow_state (id) ON DELETE SET NULL;

-- Rotate a refresh token in one statement.
--   old_hash: SHA-256 of the token the client presented
--   new_hash: SHA-256 of its successor (derived from the presented token by the server, so a
--             retried refresh can be answered with the same successor without storing it)
-- Returns the outcome and, for the client, the session and user:
--   rotated      old was active: it is revoked and new_hash becomes the active token
--   reused       old was rotated less than reuse_seconds ago and new_hash is the active token
--   advanced     old was rotated recently but its successor was rotated too: try the next one
--   already_used old was rotated too long ago: the whole session is revoked (token theft)
--   not_found, session_not_found, session_expired
CREATE FUNCTION auth.rotate_refresh_token(old_hash text, new_hash text, reuse_seconds integer)
    RETURNS TABLE (outcome text, session_id uuid, user_id uuid)
    LANGUAGE plpgsql
    SET search_path = ''
    AS $$
DECLARE
    current auth.refresh_tokens%ROWTYPE;
    session_not_after timestamptz;
    successor_revoked boolean;
BEGIN
    SELECT * INTO current FROM auth.refresh_tokens rt WHERE rt.token = old_hash FOR UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'not_found'::text, NULL::uuid, NULL::uuid;
        RETURN;
    END IF;
    SELECT s.not_after INTO session_not_after FROM auth.sessions s WHERE s.id = current.session_id;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'session_not_found'::text, current.session_id, current.user_id::uuid;
        RETURN;
    END IF;
    IF session_not_after IS NOT NULL AND session_not_after < now() THEN
        RETURN QUERY SELECT 'session_expired'::text, current.session_id, current.user_id::uuid;
        RETURN;
    END IF;

    IF NOT current.revoked THEN
        UPDATE auth.refresh_tokens SET revoked = true, updated_at = now() WHERE id = current.id;
        INSERT INTO auth.refresh_tokens (token, user_id, parent, session_id, revoked)
            VALUES (new_hash, current.user_id, old_hash, current.session_id, false);
        UPDATE auth.sessions SET refreshed_at = now()::timestamp, updated_at = now() WHERE id = current.session_id;
        INSERT INTO auth.audit_log_entries (payload)
            VALUES (json_build_object('action', 'token_refreshed', 'actor_id', current.user_id, 'log_type', 'token',
                                      'traits', json_build_object('session_id', current.session_id)));
        RETURN QUERY SELECT 'rotated'::text, current.session_id, current.user_id::uuid;
        RETURN;
    END IF;

    IF current.updated_at > now() - make_interval(secs => reuse_seconds) THEN
        SELECT rt.revoked INTO successor_revoked FROM auth.refresh_tokens rt
            WHERE rt.token = new_hash AND rt.session_id = current.session_id;
        IF FOUND AND NOT successor_revoked THEN
            RETURN QUERY SELECT 'reused'::text, current.session_id, current.user_id::uuid;
            RETURN;
        ELSIF FOUND THEN
            RETURN QUERY SELECT 'advanced'::text, current.session_id, current.user_id::uuid;
            RETURN;
        END IF;
    END IF;

    -- A token rotated long ago came back: someone kept a copy. End the session for everyone.
    DELETE FROM auth.sessions s WHERE s.id = current.session_id;
    INSERT INTO auth.audit_log_entries (payload)
        VALUES (json_build_object('action', 'token_revoked', 'actor_id', current.user_id, 'log_type', 'token',
                                  'traits', json_build_object('session_id', current.session_id, 'reason', 'reuse')));
    RETURN QUERY SELECT 'already_used'::text, current.session_id, current.user_id::uuid;
END;
$$;
REVOKE ALL ON FUNCTION auth.rotate_refresh_token(text, text, integer) FROM PUBLIC;

CREATE INDEX refresh_tokens_user_id_idx ON auth.refresh_tokens (user_id);

-- How each session was authenticated (the JWT's amr claim, kept across refreshes), as Supabase has it.
CREATE TABLE auth.mfa_amr_claims (
    session_id uuid NOT NULL REFERENCES auth.sessions (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    authentication_method text NOT NULL,
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    CONSTRAINT mfa_amr_claims_session_id_authentication_method_pkey UNIQUE (session_id, authentication_method)
);
