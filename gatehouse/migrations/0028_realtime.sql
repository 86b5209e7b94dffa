-- Realtime's broadcast and presence (the WebSocket endpoint at /realtime/v1/websocket), as
-- Supabase Realtime keeps them:
--   realtime.messages   what private channels are authorized against (RLS policies on it decide
--                       who may join, broadcast and track presence on a topic: realtime.topic() is
--                       the topic being checked), and what realtime.send() broadcasts from SQL.
--   realtime.presences  who is tracked on which topic, by every Gatehouse process (node), so a
--                       client joining on one process sees the members tracked on another.
--   realtime.nodes      the live processes (each refreshes its row); a process gone silent has
--                       its presences removed by the others.
--   realtime.bus        broadcasts too big for a NOTIFY's 8,000 bytes, read back by id.
CREATE SCHEMA IF NOT EXISTS realtime;
GRANT USAGE ON SCHEMA realtime TO anon, authenticated, service_role, authenticator;

CREATE TABLE realtime.messages (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    topic text NOT NULL,
    extension text NOT NULL CHECK (extension IN ('broadcast', 'presence')),
    event text,
    payload jsonb,
    private boolean NOT NULL DEFAULT true,
    inserted_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX messages_inserted_at_idx ON realtime.messages (inserted_at);
ALTER TABLE realtime.messages ENABLE ROW LEVEL SECURITY;  -- no policy: nothing is allowed until you add one
GRANT SELECT, INSERT ON realtime.messages TO anon, authenticated;
GRANT ALL ON realtime.messages TO service_role;

-- The topic a private channel's policies are being checked for (as upstream).
CREATE FUNCTION realtime.topic() RETURNS text LANGUAGE sql STABLE
    AS $$ SELECT nullif(current_setting('realtime.topic', true), '') $$;
GRANT EXECUTE ON FUNCTION realtime.topic() TO anon, authenticated, service_role;

-- Broadcast from SQL (a trigger, a function): every subscriber of the topic receives
-- {event, payload}; a private topic's subscribers are those its policies let read.
CREATE FUNCTION realtime.send(payload jsonb, event text, topic text, private boolean DEFAULT true)
    RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = ''
    AS $$
BEGIN
    INSERT INTO realtime.messages (topic, extension, event, payload, private)
    VALUES (send.topic, 'broadcast', send.event, send.payload, send.private);
END;
$$;
GRANT EXECUTE ON FUNCTION realtime.send(jsonb, text, text, boolean) TO anon, authenticated, service_role;

-- Broadcast a row change, in upstream's shape, from your own trigger function:
--   PERFORM realtime.broadcast_changes('todos:' || NEW.owner, TG_OP, TG_OP, TG_TABLE_NAME,
--                                      TG_TABLE_SCHEMA, NEW, OLD);
CREATE FUNCTION realtime.broadcast_changes(topic_name text, event_name text, operation text, table_name text,
                                           table_schema text, new record, old record, level text DEFAULT 'ROW')
    RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = ''
    AS $$
BEGIN
    PERFORM realtime.send(
        jsonb_build_object('schema', table_schema, 'table', table_name, 'operation', operation,
                           'record', to_jsonb(new), 'old_record', to_jsonb(old)),
        event_name, topic_name, true);
END;
$$;
GRANT EXECUTE ON FUNCTION realtime.broadcast_changes(text, text, text, text, text, record, record, text)
    TO anon, authenticated, service_role;

-- Every Gatehouse process hears a broadcast made in SQL.
CREATE FUNCTION realtime.announce_message() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = ''
    AS $$
BEGIN
    PERFORM pg_notify('gatehouse_realtime_bus', json_build_object('m', NEW.id)::text);
    RETURN NULL;
END;
$$;
CREATE TRIGGER announce AFTER INSERT ON realtime.messages FOR EACH ROW
    WHEN (NEW.extension = 'broadcast' AND NEW.payload IS NOT NULL) EXECUTE FUNCTION realtime.announce_message();

-- Two rows a private channel's join is checked against: inserted by the definer (so the check
-- is about reading them), then rolled back with the rest of the check's transaction.
CREATE FUNCTION realtime.probe(req_topic text, OUT broadcast_id uuid, OUT presence_id uuid)
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = ''
    AS $$
BEGIN
    INSERT INTO realtime.messages (topic, extension) VALUES (req_topic, 'broadcast') RETURNING id INTO broadcast_id;
    INSERT INTO realtime.messages (topic, extension) VALUES (req_topic, 'presence') RETURNING id INTO presence_id;
END;
$$;
REVOKE ALL ON FUNCTION realtime.probe(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION realtime.probe(text) TO authenticator;

-- What a caller may do on a private topic, by the policies on realtime.messages, as upstream
-- checks it: read = may SELECT the probe rows, write = may INSERT a row. The caller runs this in
-- a transaction it rolls back. The session check comes first (gatehouse.become).
CREATE FUNCTION realtime.channel_permissions(req_role text, req_claims text, req_topic text,
    OUT broadcast_read boolean, OUT presence_read boolean, OUT broadcast_write boolean, OUT presence_write boolean)
    LANGUAGE plpgsql
    AS $$
DECLARE
    probes record;
BEGIN
    SELECT * INTO probes FROM realtime.probe(req_topic);
    PERFORM gatehouse.become(req_role, req_claims);
    PERFORM set_config('realtime.topic', req_topic, true);
    SELECT EXISTS (SELECT 1 FROM realtime.messages m WHERE m.id = probes.broadcast_id AND m.topic = req_topic)
        INTO broadcast_read;
    SELECT EXISTS (SELECT 1 FROM realtime.messages m WHERE m.id = probes.presence_id AND m.topic = req_topic)
        INTO presence_read;
    broadcast_write := true;
    presence_write := true;
    BEGIN
        INSERT INTO realtime.messages (topic, extension) VALUES (req_topic, 'broadcast');
    EXCEPTION WHEN insufficient_privilege THEN
        broadcast_write := false;
    END;
    BEGIN
        INSERT INTO realtime.messages (topic, extension) VALUES (req_topic, 'presence');
    EXCEPTION WHEN insufficient_privilege THEN
        presence_write := false;
    END;
END;
$$;
REVOKE ALL ON FUNCTION realtime.channel_permissions(text, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION realtime.channel_permissions(text, text, text) TO authenticator;

CREATE TABLE realtime.nodes (
    node uuid PRIMARY KEY,
    seen_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE realtime.presences (
    node uuid NOT NULL,
    ref text NOT NULL,
    topic text NOT NULL,
    private boolean NOT NULL,
    key text NOT NULL,
    meta jsonb NOT NULL,
    PRIMARY KEY (node, ref)
);
CREATE INDEX presences_topic_idx ON realtime.presences (topic, private);

CREATE UNLOGGED TABLE realtime.bus (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    body jsonb NOT NULL,
    inserted_at timestamptz NOT NULL DEFAULT now()
);
