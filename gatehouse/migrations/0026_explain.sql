-- The data API's execution plans (Accept: application/vnd.pgrst.plan, when GATEHOUSE_REST_EXPLAIN
-- is on): EXPLAIN of the one generated statement, as the caller, exactly as run_as would run it
-- (the session check, then the role and claims), so the plan is the one RLS shapes for them.
-- req_options is built by the server from a fixed list (FORMAT JSON|TEXT, ANALYZE, VERBOSE,
-- SETTINGS, BUFFERS, WAL) and checked again here. The caller rolls the transaction back, so an
-- ANALYZE of a write keeps nothing.
CREATE FUNCTION gatehouse.explain_as(req_role text, req_claims text, req_readonly boolean, req_sql text,
                                     req_params jsonb, req_options text)
    RETURNS text
    LANGUAGE plpgsql
    AS $$
DECLARE
    line text;
    plan text := '';
BEGIN
    IF req_options !~ '^FORMAT (JSON|TEXT)(, (ANALYZE|VERBOSE|SETTINGS|BUFFERS|WAL))*$' THEN
        RAISE EXCEPTION 'unexpected EXPLAIN options: %', req_options USING ERRCODE = '22023';
    END IF;
    IF req_readonly THEN
        SET TRANSACTION READ ONLY;
    END IF;
    PERFORM gatehouse.become(req_role, req_claims);
    FOR line IN EXECUTE 'EXPLAIN (' || req_options || ') ' || req_sql USING req_params LOOP
        plan := plan || line || E'\n';
    END LOOP;
    RETURN rtrim(plan, E'\n');
END;
$$;

REVOKE ALL ON FUNCTION gatehouse.explain_as(text, text, boolean, text, jsonb, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION gatehouse.explain_as(text, text, boolean, text, jsonb, text) TO authenticator;
