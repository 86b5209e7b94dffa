-- A signed-out, banned or deleted user's access token stops working at once, on every API.
--
-- An access token lives for an hour (GATEHOUSE_JWT_EXPIRY) and its signature stays valid after
-- the session it names has ended. So every request that runs as a user checks, inside the same
-- round trip that runs it, that the token's session still exists, has not expired, belongs to
-- the token's user, and that the user is neither deleted nor banned. Tokens without a
-- session_id (the API keys: anon, service_role) are not checked.
--
-- gatehouse.check_session is SECURITY DEFINER (owned by the role that runs migrations), so
-- authenticator may run it without any right on auth.sessions or auth.users. Both lookups are
-- by primary key. A refusal raises SQLSTATE GH401, which core/db.py turns into one domain
-- error that each API renders in its own shape.
CREATE FUNCTION gatehouse.check_session(req_session_id text, req_user_id text)
    RETURNS void
    LANGUAGE plpgsql
    STABLE
    SECURITY DEFINER
    SET search_path = ''
    AS $$
DECLARE
    sid uuid;
    uid uuid;
    v_user uuid;
    v_not_after timestamptz;
    v_banned_until timestamptz;
    v_deleted_at timestamptz;
BEGIN
    BEGIN
        sid := req_session_id::uuid;
        uid := req_user_id::uuid;
    EXCEPTION WHEN invalid_text_representation THEN
        RAISE EXCEPTION 'the access token names no valid session' USING ERRCODE = 'GH401';
    END;
    SELECT s.user_id, s.not_after INTO v_user, v_not_after FROM auth.sessions s WHERE s.id = sid;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'the session has ended (signed out, or ended by an administrator); sign in again'
            USING ERRCODE = 'GH401';
    END IF;
    IF v_user IS DISTINCT FROM uid THEN
        RAISE EXCEPTION 'the session does not belong to the access token''s user' USING ERRCODE = 'GH401';
    END IF;
    IF v_not_after IS NOT NULL AND v_not_after <= now() THEN
        RAISE EXCEPTION 'the session has expired; sign in again' USING ERRCODE = 'GH401';
    END IF;
    SELECT u.banned_until, u.deleted_at INTO v_banned_until, v_deleted_at FROM auth.users u WHERE u.id = uid;
    IF NOT FOUND OR v_deleted_at IS NOT NULL THEN
        RAISE EXCEPTION 'the user has been deleted' USING ERRCODE = 'GH401';
    END IF;
    IF v_banned_until IS NOT NULL AND v_banned_until > now() THEN
        RAISE EXCEPTION 'the user is banned' USING ERRCODE = 'GH401';
    END IF;
END;
$$;

REVOKE ALL ON FUNCTION gatehouse.check_session(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION gatehouse.check_session(text, text) TO authenticator;

-- as_user's first statement: the session check, then the caller's role and claims, in that order
-- (one function, so the order is certain), for the rest of the transaction.
CREATE FUNCTION gatehouse.become(req_role text, req_claims text)
    RETURNS void
    LANGUAGE plpgsql
    AS $$
DECLARE
    claims jsonb := req_claims::jsonb;
BEGIN
    IF claims ->> 'session_id' IS NOT NULL THEN
        PERFORM gatehouse.check_session(claims ->> 'session_id', claims ->> 'sub');
    END IF;
    PERFORM set_config('role', req_role, true);
    PERFORM set_config('request.jwt.claims', req_claims, true);
END;
$$;

REVOKE ALL ON FUNCTION gatehouse.become(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION gatehouse.become(text, text) TO authenticator;

-- run_as (0007_request_function.sql) with the same check before the role switch. Same signature,
-- so the grant to authenticator stays.
CREATE OR REPLACE FUNCTION gatehouse.run_as(req_role text, req_claims text, req_readonly boolean, req_sql text, req_params jsonb)
    RETURNS TABLE (body text, page_count bigint, total bigint)
    LANGUAGE plpgsql
    AS $$
DECLARE
    claims jsonb := req_claims::jsonb;
BEGIN
    IF req_readonly THEN
        SET TRANSACTION READ ONLY;
    END IF;
    IF claims ->> 'session_id' IS NOT NULL THEN
        PERFORM gatehouse.check_session(claims ->> 'session_id', claims ->> 'sub');
    END IF;
    PERFORM set_config('role', req_role, true);
    PERFORM set_config('request.jwt.claims', req_claims, true);
    RETURN QUERY EXECUTE req_sql USING req_params;
END;
$$;
