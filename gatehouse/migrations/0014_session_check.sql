-- A signed-out, banned or deleted user's access token stops working at once, on every API.
--
-- An access token lives for an hour (GATEHOUSE_JWT_EXPIRY) and its signature stays valid after
-- the session it names has ended. So every request that runs as a user checks, inside the same
-- round trip that runs it, that the token's session still exists, has not expired, belongs to
-- the token's user, and that the user is neither deleted nor banned. Tokens without a
-- session_id (the API keys: anon, service_role) are not checked.
--
-- gatehouse.session_refusal is SECURITY DEFINER (owned by the role that runs migrations), so
-- authenticator may run it without any right on auth.sessions or auth.users; both rows are found
-- by primary key. It answers why the session cannot be used, or NULL if it can. The callers below
-- raise the reason with SQLSTATE GH401, which core/db.py turns into one domain error that each
-- API renders in its own shape. (A LANGUAGE sql function: a plpgsql one cost twice as much per call.)
CREATE FUNCTION gatehouse.session_refusal(req_session_id uuid, req_user_id uuid)
    RETURNS text
    LANGUAGE sql
    STABLE
    SECURITY DEFINER
    SET search_path = ''
    AS $$
        SELECT CASE
            WHEN s.id IS NULL THEN 'the session has ended (signed out, or ended by an administrator); sign in again'
            WHEN s.user_id IS DISTINCT FROM req_user_id THEN 'the session does not belong to the access token''s user'
            WHEN s.not_after IS NOT NULL AND s.not_after <= now() THEN 'the session has expired; sign in again'
            WHEN u.id IS NULL OR u.deleted_at IS NOT NULL THEN 'the user has been deleted'
            WHEN u.banned_until IS NOT NULL AND u.banned_until > now() THEN 'the user is banned'
        END
        FROM (SELECT) AS one
        LEFT JOIN auth.sessions s ON s.id = req_session_id
        LEFT JOIN auth.users u ON u.id = s.user_id
    $$;

REVOKE ALL ON FUNCTION gatehouse.session_refusal(uuid, uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION gatehouse.session_refusal(uuid, uuid) TO authenticator;

-- as_user's first statement: the session check, then the caller's role and claims, in that order
-- (one function, so the order is certain), for the rest of the transaction.
CREATE FUNCTION gatehouse.become(req_role text, req_claims text)
    RETURNS void
    LANGUAGE plpgsql
    AS $$
DECLARE
    claims jsonb := req_claims::jsonb;
    refusal text;
BEGIN
    IF claims ->> 'session_id' IS NOT NULL THEN
        refusal := gatehouse.session_refusal((claims ->> 'session_id')::uuid, (claims ->> 'sub')::uuid);
        IF refusal IS NOT NULL THEN
            RAISE EXCEPTION '%', refusal USING ERRCODE = 'GH401';
        END IF;
    END IF;
    PERFORM set_config('role', req_role, true);
    PERFORM set_config('request.jwt.claims', req_claims, true);
END;
$$;

REVOKE ALL ON FUNCTION gatehouse.become(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION gatehouse.become(text, text) TO authenticator;

-- run_as (0007_request_function.sql) switching through become, so the check comes before the
-- role switch. Same signature, so the grant to authenticator stays.
CREATE OR REPLACE FUNCTION gatehouse.run_as(req_role text, req_claims text, req_readonly boolean, req_sql text, req_params jsonb)
    RETURNS TABLE (body text, page_count bigint, total bigint)
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF req_readonly THEN
        SET TRANSACTION READ ONLY;
    END IF;
    PERFORM gatehouse.become(req_role, req_claims);  -- the session check, then the role and claims
    RETURN QUERY EXECUTE req_sql USING req_params;
END;
$$;
