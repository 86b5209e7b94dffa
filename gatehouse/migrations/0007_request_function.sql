-- One round trip per data request: switch to the caller's role and claims, then run the
-- statement Gatehouse generated, all inside one function call (one implicit transaction).
--
-- EXECUTE plans the statement after the role switch, so privileges and RLS policies apply to
-- the caller, exactly as if it had been sent after SET ROLE. Every value the client sent is in
-- req_params (a JSON array read with $1->>n); the statement text holds only quoted catalog names.
-- Only authenticator may call it, and it can only switch to roles authenticator is a member of
-- (anon, authenticated, service_role).
CREATE FUNCTION gatehouse.run_as(req_role text, req_claims text, req_readonly boolean, req_sql text, req_params jsonb)
    RETURNS TABLE (body text, page_count bigint, total bigint)
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF req_readonly THEN
        SET TRANSACTION READ ONLY;
    END IF;
    PERFORM set_config('role', req_role, true);
    PERFORM set_config('request.jwt.claims', req_claims, true);
    RETURN QUERY EXECUTE req_sql USING req_params;
END;
$$;

REVOKE ALL ON FUNCTION gatehouse.run_as(text, text, boolean, text, jsonb) FROM PUBLIC;
GRANT USAGE ON SCHEMA gatehouse TO authenticator;
GRANT EXECUTE ON FUNCTION gatehouse.run_as(text, text, boolean, text, jsonb) TO authenticator;
