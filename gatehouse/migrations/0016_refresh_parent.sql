-- Refresh-token reuse as the upstream auth server does it (its RefreshTokenGrant): the parent of
-- the currently active token gets the active token back at any delay, since server-rendered apps
-- keep sending the parent when a render refreshed but could not store the new cookie. The reuse
-- interval applies only to older tokens; anything older than that still ends the session.
CREATE OR REPLACE FUNCTION auth.rotate_refresh_token(old_hash text, new_hash text, reuse_seconds integer)
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

    SELECT rt.revoked INTO successor_revoked FROM auth.refresh_tokens rt
        WHERE rt.token = new_hash AND rt.session_id = current.session_id;
    IF FOUND AND NOT successor_revoked THEN
        -- The parent of the active token, at any delay: its holder never stored the answer
        -- (a page render that could not set the cookie, a lost response). Give the active token back.
        RETURN QUERY SELECT 'reused'::text, current.session_id, current.user_id::uuid;
        RETURN;
    ELSIF FOUND AND current.updated_at > now() - make_interval(secs => reuse_seconds) THEN
        -- An older token within the reuse interval: walk forward to the active one.
        RETURN QUERY SELECT 'advanced'::text, current.session_id, current.user_id::uuid;
        RETURN;
    END IF;

    -- A token rotated long ago came back: someone kept a copy. End the session for everyone.
    DELETE FROM auth.sessions s WHERE s.id = current.session_id;
    INSERT INTO auth.audit_log_entries (payload)
        VALUES (json_build_object('action', 'token_revoked', 'actor_id', current.user_id, 'log_type', 'token',
                                  'traits', json_build_object('session_id', current.session_id, 'reason', 'reuse')));
    RETURN QUERY SELECT 'already_used'::text, current.session_id, current.user_id::uuid;
END;
$$;
