-- Prefer: max-affected=N with handling=strict (PostgREST 12+): a write that changes more rows
-- than N fails and keeps nothing. The generated statement calls this guard after its mutation;
-- raising aborts the whole statement, so the rows it changed are never committed.
-- SQLSTATE GH124 is Gatehouse's own; the data API turns it into PostgREST's PGRST124.
CREATE FUNCTION gatehouse.max_affected(affected bigint, most bigint) RETURNS boolean
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF affected > most THEN
        RAISE EXCEPTION 'Query result exceeds max-affected preference constraint'
            USING ERRCODE = 'GH124', DETAIL = format('The query affects %s rows', affected);
    END IF;
    RETURN true;
END;
$$;

-- The guard runs inside the caller's statement, as the caller's role.
REVOKE ALL ON FUNCTION gatehouse.max_affected(bigint, bigint) FROM PUBLIC;
GRANT USAGE ON SCHEMA gatehouse TO anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION gatehouse.max_affected(bigint, bigint) TO anon, authenticated, service_role;
