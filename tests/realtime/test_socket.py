"""The realtime socket on the wire: hostile frames, limits, private channels, tokens, two processes."""

from __future__ import annotations

import base64
import os
import socket as socket_module
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from tests.auth.helpers import Auth
from tests.realtime.wire import Socket
from tests.support import ConfirmedSession, RunningServer, run_sql

POLICIES = """
CREATE POLICY "own room: read" ON realtime.messages FOR SELECT TO authenticated
    USING (realtime.topic() = 'room-' || auth.uid()::text);
CREATE POLICY "own room: write" ON realtime.messages FOR INSERT TO authenticated
    WITH CHECK (realtime.topic() = 'room-' || auth.uid()::text AND extension = 'broadcast');
CREATE POLICY "watch-only room" ON realtime.messages FOR SELECT TO authenticated
    USING (realtime.topic() = 'announcements');
"""


@pytest.fixture(scope="module")
def server(server_factory: Callable[..., RunningServer], database_url: str) -> RunningServer:
    run_sql(database_url, POLICIES)
    return server_factory(env={"GATEHOUSE_RATE_LIMITS_ENABLED": "false", "GATEHOUSE_REALTIME_MAX_CHANNELS_PER_CLIENT": "3",
                               "GATEHOUSE_REALTIME_MAX_PAYLOAD_BYTES": "65536"})


@pytest.fixture
def socket(server: RunningServer) -> Iterator[Socket]:
    opened = Socket(server)
    yield opened
    opened.close()


def user(server: RunningServer, confirmed_session: ConfirmedSession) -> tuple[str, str]:
    """A signed-in user's (id, access token)."""
    _, session = confirmed_session(server)
    return session["user"]["id"], session["access_token"]


# -- the socket ------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["", "not-a-key", "sb_publishable_forged"])
def test_a_socket_needs_the_projects_key(server: RunningServer, key: str) -> None:
    url = server.url.replace("http://", "ws://") + f"/realtime/v1/websocket?apikey={key}&vsn=1.0.0"
    with pytest.raises(InvalidStatus) as refused:
        connect(url, open_timeout=10)
    assert refused.value.response.status_code == 403


def test_a_secret_key_from_a_web_page_is_refused(server: RunningServer) -> None:
    url = server.url.replace("http://", "ws://") + f"/realtime/v1/websocket?apikey={server.keys.secret_key}&vsn=1.0.0"
    with pytest.raises(InvalidStatus) as refused:
        connect(url, additional_headers={"Origin": "https://app.example"}, open_timeout=10)
    assert refused.value.response.status_code == 403
    connect(url, open_timeout=10).close()  # a server may use it


def test_heartbeats_are_answered(socket: Socket) -> None:
    ref = socket.send("phoenix", "heartbeat")
    assert socket.expect("phx_reply", ref=ref)["payload"] == {"status": "ok", "response": {}}


@pytest.mark.parametrize(
    "frame",
    ["{not json", "[]", '"a string"', '{"topic": 5, "event": "x"}', '{"topic": "realtime:a", "event": "phx_join", "payload": [1]}',
     '{"topic": "realtime:a"}', b"\x03\x01", b"\x07garbage", "null", '{"ref": {"a": 1}}'],
)
def test_malformed_frames_get_an_error_reply_and_the_socket_goes_on(socket: Socket, frame: str | bytes) -> None:
    socket.raw(frame)
    answer = socket.expect("phx_reply")
    assert answer["payload"]["status"] == "error" and answer["payload"]["response"]["reason"]
    ref = socket.send("phoenix", "heartbeat")
    assert socket.expect("phx_reply", ref=ref)["payload"]["status"] == "ok"


def test_unknown_topics_and_events(socket: Socket) -> None:
    socket.send("realtime:never-joined", "broadcast", {"event": "x"})
    assert socket.expect("phx_error")["topic"] == "realtime:never-joined"
    assert socket.join("room")["status"] == "ok"
    ref = socket.send("realtime:room", "no_such_event", {})
    assert socket.expect("phx_reply", ref=ref)["payload"]["status"] == "error"
    assert socket.join("")["response"]["reason"].startswith("TopicNameRequired")
    ref = socket.send("elsewhere", "phx_join", {})
    assert socket.expect("phx_reply", ref=ref)["payload"]["response"]["reason"].startswith("TopicNameRequired")


def test_too_many_channels_is_refused_with_upstreams_reason(socket: Socket) -> None:
    for name in ("a", "b", "c"):
        assert socket.join(name)["status"] == "ok"
    refused = socket.join("d")
    assert refused == {"status": "error", "response": {"reason": "ChannelRateLimitReached: Too many channels"}}
    assert socket.join("a")["status"] == "ok"  # rejoining one of them is not a new channel


def test_an_oversized_frame_closes_the_socket(socket: Socket) -> None:
    socket.raw('{"topic": "realtime:a", "event": "broadcast", "payload": {"x": "' + "y" * 70000 + '"}}')
    assert socket.closed()


@pytest.mark.parametrize("payload", [{"event": 5}, {}, {"event": "x", "payload": "not an object"}])
def test_bad_broadcasts_and_presence(socket: Socket, payload: dict[str, Any]) -> None:
    assert socket.join("room", {"broadcast": {"ack": True}})["status"] == "ok"
    ref = socket.send("realtime:room", "broadcast", payload)
    if "event" in payload and isinstance(payload["event"], str):  # a string payload is passed on as sent
        assert socket.expect("phx_reply", ref=ref)["payload"]["status"] == "ok"
    else:
        assert socket.expect("phx_reply", ref=ref)["payload"]["status"] == "error"
    ref = socket.send("realtime:room", "presence", {"type": "presence", "event": "track", "payload": [1, 2]})
    assert socket.expect("phx_reply", ref=ref)["payload"]["response"]["reason"] == "Presence track payload must be a map"
    ref = socket.send("realtime:room", "presence", {"type": "presence", "event": "dance"})
    assert socket.expect("phx_reply", ref=ref)["payload"]["status"] == "error"


def test_a_flood_closes_the_channel_with_upstreams_message(server_factory: Callable[..., RunningServer]) -> None:
    server = server_factory(env={"GATEHOUSE_REALTIME_MAX_EVENTS_PER_SECOND": "5"})
    socket = Socket(server)
    try:
        assert socket.join("room")["status"] == "ok"
        for _ in range(40):
            socket.send("realtime:room", "broadcast", {"type": "broadcast", "event": "x", "payload": {}})
        system = socket.expect("system", topic="realtime:room")
        assert system["payload"] == {"extension": "system", "status": "error", "message": "Too many messages per second",
                                     "channel": "room"}
        socket.expect("phx_close", topic="realtime:room")
    finally:
        socket.close()


def test_a_client_that_does_not_read_is_dropped_and_others_get_everything(
    server_factory: Callable[..., RunningServer],
) -> None:
    server = server_factory(env={"GATEHOUSE_REALTIME_MAX_QUEUED_MESSAGES": "200",
                                 "GATEHOUSE_REALTIME_MAX_EVENTS_PER_SECOND": "10000"})
    url = server.url.replace("http://", "ws://") + f"/realtime/v1/websocket?apikey={server.keys.publishable_key}&vsn=1.0.0"
    sender, reader = Socket(server), Socket(server)
    # A client that stops reading once one frame waits (max_queue=1), with a small receive buffer
    # (no autotuning up to tcp_rmem's tens of megabytes), so the server's writes back up at once.
    raw = socket_module.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1])))
    raw.setsockopt(socket_module.SOL_SOCKET, socket_module.SO_RCVBUF, 65536)
    slow = connect(url, sock=raw, open_timeout=10, max_queue=1)
    received: list[int] = []

    def read_all() -> None:  # a client that keeps up: reads as fast as frames come
        while len(received) < 500:
            frame = reader.next(timeout=60)
            if frame["event"] == "broadcast":
                received.append(frame["payload"]["payload"]["i"])

    try:
        slow.send('{"topic": "realtime:flood", "event": "phx_join", "payload": {}, "ref": "1", "join_ref": "1"}')
        assert reader.join("flood")["status"] == "ok"
        assert sender.join("flood")["status"] == "ok"
        time.sleep(0.2)
        keeping_up = threading.Thread(target=read_all)
        keeping_up.start()
        blob = base64.b64encode(os.urandom(45000)).decode()  # 60 KB that compression cannot shrink
        for index in range(500):  # 30 MB: more than the slow client's buffers and queue can hold
            sender.send("realtime:flood", "broadcast", {"type": "broadcast", "event": "blob", "payload": {"i": index, "b": blob}})
        keeping_up.join(90)
        assert received == list(range(500))  # in order, none lost, not held up by the slow one
        closed_by_server = False
        try:
            while True:
                slow.recv(timeout=10)
        except ConnectionClosed as closed:
            closed_by_server = closed.rcvd is not None and closed.rcvd.code == 1013
        assert closed_by_server
    finally:
        sender.close()
        reader.close()
        slow.close()


# -- who may join --------------------------------------------------------------------------------------


def test_private_channels_follow_the_policies_on_realtime_messages(
    server: RunningServer, confirmed_session: ConfirmedSession,
) -> None:
    alice_id, alice = user(server, confirmed_session)
    _, bob = user(server, confirmed_session)
    room = f"room-{alice_id}"
    first, second, third = Socket(server), Socket(server), Socket(server)
    try:
        assert first.join(room, {"private": True, "broadcast": {"ack": True}}, alice)["status"] == "ok"
        assert second.join(room, {"private": True}, alice)["status"] == "ok"
        refused = third.join(room, {"private": True}, bob)
        assert refused["status"] == "error"
        assert refused["response"]["reason"] == f"Unauthorized: You do not have permissions to read from this Channel topic: {room}"
        assert third.join(room, {"private": True})["status"] == "error"  # anon
        ref = first.send(f"realtime:{room}", "broadcast", {"type": "broadcast", "event": "note", "payload": {"n": 1}})
        assert first.expect("phx_reply", ref=ref)["payload"]["status"] == "ok"
        assert second.expect("broadcast")["payload"]["payload"] == {"n": 1}
        public = third.join(room)  # the public channel of the same name is another topic
        assert public["status"] == "ok"
        # read without write: joining works, broadcasting is refused
        assert third.join("announcements", {"private": True, "broadcast": {"ack": True}}, bob)["status"] == "ok"
        ref = third.send("realtime:announcements", "broadcast", {"type": "broadcast", "event": "x", "payload": {}})
        assert third.expect("phx_reply", ref=ref)["payload"]["status"] == "error"
    finally:
        for opened in (first, second, third):
            opened.close()


@pytest.mark.parametrize("token", ["not.a.jwt", "eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoic2VydmljZV9yb2xlIn0.forged"])
def test_forged_tokens_are_refused(socket: Socket, token: str) -> None:
    refused = socket.join("room", token=token)
    assert refused["status"] == "error" and refused["response"]["reason"].startswith("InvalidJWTToken")


def test_an_expiring_token_ends_the_channel_with_upstreams_message(
    server_factory: Callable[..., RunningServer], confirmed_session: ConfirmedSession,
) -> None:
    server = server_factory(env={"GATEHOUSE_RATE_LIMITS_ENABLED": "false", "GATEHOUSE_JWT_EXPIRY": "3"})
    _, token = user(server, confirmed_session)
    socket = Socket(server)
    try:
        assert socket.join("room", token=token)["status"] == "ok"
        system = socket.expect("system", topic="realtime:room", timeout=15)
        assert system["payload"]["status"] == "error"
        assert system["payload"]["message"].startswith("Token has expired") and system["payload"]["channel"] == "room"
        socket.expect("phx_close", topic="realtime:room")
        later = socket.join("again", token=token)
        assert later["status"] == "error" and "Token has expired" in later["response"]["reason"]
    finally:
        socket.close()


def test_a_bad_access_token_message_ends_the_channel(socket: Socket, server: RunningServer,
                                                      confirmed_session: ConfirmedSession) -> None:
    _, token = user(server, confirmed_session)
    assert socket.join("room", token=token)["status"] == "ok"
    socket.send("realtime:room", "access_token", {"access_token": "forged.token.here"})
    assert socket.expect("system", topic="realtime:room")["payload"]["status"] == "error"
    socket.expect("phx_close", topic="realtime:room")


def test_signing_out_closes_the_sessions_channels(socket: Socket, server: RunningServer,
                                                  confirmed_session: ConfirmedSession) -> None:
    _, token = user(server, confirmed_session)
    assert socket.join("room", token=token)["status"] == "ok"
    auth = Auth(server)
    try:
        assert auth.post("/logout", token=token).status_code == 204
    finally:
        auth.close()
    socket.send("phoenix", "heartbeat")  # the session is checked at each heartbeat
    system = socket.expect("system", topic="realtime:room")
    assert system["payload"]["status"] == "error" and "session has ended" in system["payload"]["message"]
    socket.expect("phx_close", topic="realtime:room")


# -- many processes and SQL --------------------------------------------------------------------------


def test_broadcast_and_presence_cross_processes(server: RunningServer,
                                                server_factory: Callable[..., RunningServer]) -> None:
    other = server_factory(env={"GATEHOUSE_RATE_LIMITS_ENABLED": "false"})
    here, there = Socket(server), Socket(other)
    try:
        assert here.join("shared", {"presence": {"key": "here", "enabled": True}})["status"] == "ok"
        ref = here.send("realtime:shared", "presence", {"type": "presence", "event": "track", "payload": {"at": "A"}})
        here.expect("phx_reply", ref=ref)
        assert there.join("shared", {"presence": {"key": "there", "enabled": True}})["status"] == "ok"
        state = there.expect("presence_state", topic="realtime:shared")["payload"]
        assert state["here"]["metas"][0]["at"] == "A"  # tracked on the other process
        here.send("realtime:shared", "broadcast", {"type": "broadcast", "event": "hi", "payload": {"from": "A"}})
        assert there.expect("broadcast")["payload"] == {"type": "broadcast", "event": "hi", "payload": {"from": "A"}}
        big = {"blob": "x" * 20000}  # past NOTIFY's 8,000 bytes
        here.send("realtime:shared", "broadcast", {"type": "broadcast", "event": "big", "payload": big})
        assert there.expect("broadcast")["payload"]["payload"] == big
        here.close()  # a closed socket leaves presence
        diff = there.expect("presence_diff", topic="realtime:shared")["payload"]
        assert "here" in diff["leaves"]
    finally:
        here.close()
        there.close()


def test_realtime_send_from_sql_reaches_subscribers(socket: Socket, database_url: str) -> None:
    assert socket.join("from-sql")["status"] == "ok"
    run_sql(database_url, "SELECT realtime.send('{\"n\": 42}'::jsonb, 'tick', 'from-sql', false)")
    assert socket.expect("broadcast")["payload"] == {"type": "broadcast", "event": "tick", "payload": {"n": 42}}


# -- broadcast over HTTP -------------------------------------------------------------------------------


def test_broadcast_over_http_reaches_sockets(socket: Socket, server: RunningServer,
                                             confirmed_session: ConfirmedSession) -> None:
    key = {"apikey": server.keys.publishable_key}
    assert socket.join("http-room")["status"] == "ok"
    batch = httpx.post(f"{server.url}/realtime/v1/api/broadcast", headers=key,
                       json={"messages": [{"topic": "http-room", "event": "ping", "payload": {"n": 1}}]})
    assert batch.status_code == 202
    assert socket.expect("broadcast")["payload"] == {"type": "broadcast", "event": "ping", "payload": {"n": 1}}
    one = httpx.post(f"{server.url}/realtime/v1/api/broadcast/http-room/events/pong", headers=key, json={"n": 2})
    assert one.status_code == 202
    assert socket.expect("broadcast")["payload"]["payload"] == {"n": 2}
    alice_id, alice = user(server, confirmed_session)
    mine = f"room-{alice_id}"
    assert socket.join(mine, {"private": True}, alice)["status"] == "ok"
    private = {"messages": [{"topic": mine, "event": "p", "payload": {}, "private": True}]}
    refused = httpx.post(f"{server.url}/realtime/v1/api/broadcast", headers=key, json=private)
    assert refused.status_code == 403 and refused.json()["error"]
    allowed = httpx.post(f"{server.url}/realtime/v1/api/broadcast", json=private,
                         headers={**key, "Authorization": f"Bearer {alice}"})
    assert allowed.status_code == 202
    assert socket.expect("broadcast", topic=f"realtime:{mine}")["payload"]["event"] == "p"


@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [
        ({"messages": []}, {}, 400),
        ({"messages": [{"topic": 5, "event": "x"}]}, {}, 400),
        ({"nope": 1}, {}, 400),
        ({"messages": [{"topic": "t", "event": "x", "payload": {"b": "x" * 70000}}]}, {}, 413),
        ({"messages": [{"topic": "t", "event": "x"}]}, {"Authorization": "Bearer forged.token.x"}, 401),
        ({"messages": [{"topic": "t", "event": "x"}]}, {"apikey": ""}, 401),
    ],
)
def test_bad_http_broadcasts_are_refused(server: RunningServer, body: dict[str, Any], headers: dict[str, str],
                                         status: int) -> None:
    answer = httpx.post(f"{server.url}/realtime/v1/api/broadcast",
                        headers={"apikey": server.keys.publishable_key, **headers}, json=body)
    assert answer.status_code == status, answer.text


def test_the_web_apps_cookie_opens_a_socket_from_the_site_only(server: RunningServer,
                                                                confirmed_session: ConfirmedSession) -> None:
    """Pages of the web app connect with their HttpOnly session cookie; a page on another origin
    (whose browser would send the cookie too) or a socket without Origin cannot."""
    _, token = user(server, confirmed_session)
    url = server.url.replace("http://", "ws://") + "/realtime/v1/websocket?vsn=1.0.0"
    cookie = {"Cookie": f"gh-access-token={token}"}
    with connect(url, additional_headers={**cookie, "Origin": server.url}, open_timeout=10) as page:
        page.send('{"topic": "realtime:mine", "event": "phx_join", "payload": {}, "ref": "1"}')
        assert '"status":"ok"' in str(page.recv(timeout=10))
    for headers in ({**cookie, "Origin": "https://evil.example"}, cookie,
                    {"Cookie": "gh-access-token=forged", "Origin": server.url}, {"Origin": server.url}):
        with pytest.raises(InvalidStatus) as refused:
            connect(url, additional_headers=headers, open_timeout=10)
        assert refused.value.response.status_code == 403


def test_a_join_flood_is_refused_with_upstreams_reason(server_factory: Callable[..., RunningServer]) -> None:
    server = server_factory(env={"GATEHOUSE_REALTIME_MAX_EVENTS_PER_SECOND": "5"})
    socket = Socket(server)
    try:
        for index in range(30):
            socket.send(f"realtime:flood-{index}", "phx_join", {})
        replies = [socket.expect("phx_reply")["payload"] for _ in range(30)]
        refused = [r for r in replies if r["status"] == "error"]
        assert refused and all(r["response"]["reason"] == "ClientJoinRateLimitReached: Too many joins per second"
                               for r in refused)
        ref = socket.send("phoenix", "heartbeat")  # the socket is still usable once the flood stops
        time.sleep(1.1)
        ref = socket.send("phoenix", "heartbeat")
        assert socket.expect("phx_reply", ref=ref)["payload"]["status"] == "ok"
    finally:
        socket.close()


def test_a_silent_socket_leaves_presence_after_the_heartbeat_timeout(
    server_factory: Callable[..., RunningServer],
) -> None:
    server = server_factory(env={"GATEHOUSE_REALTIME_HEARTBEAT_TIMEOUT": "1"})
    watcher, silent = Socket(server), Socket(server)
    try:
        assert watcher.join("lobby", {"presence": {"key": "watcher", "enabled": True}})["status"] == "ok"
        assert silent.join("lobby", {"presence": {"key": "silent"}})["status"] == "ok"
        ref = silent.send("realtime:lobby", "presence", {"type": "presence", "event": "track", "payload": {"x": 1}})
        silent.expect("phx_reply", ref=ref)
        assert "silent" in watcher.expect("presence_diff")["payload"]["joins"]
        # the watcher keeps its heartbeat; the other sends nothing more (a dropped network, say)
        deadline = time.monotonic() + 15
        while True:
            watcher.send("phoenix", "heartbeat")
            frame = watcher.next(timeout=0.5) if time.monotonic() < deadline else None
            assert frame is not None, "the silent socket never left"
            if frame["event"] == "presence_diff" and "silent" in frame["payload"]["leaves"]:
                break
        assert silent.closed(timeout=5)
    finally:
        watcher.close()
        silent.close()


def test_broadcast_changes_from_a_trigger_reach_a_private_channel(server: RunningServer, database_url: str) -> None:
    run_sql(database_url, """
        CREATE TABLE public.rt_orders (id int PRIMARY KEY, status text);
        CREATE FUNCTION public.rt_orders_broadcast() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM realtime.broadcast_changes('orders', TG_OP, TG_OP, TG_TABLE_NAME, TG_TABLE_SCHEMA, NEW, OLD);
            RETURN NULL;
        END $$;
        CREATE TRIGGER broadcast AFTER INSERT OR UPDATE ON public.rt_orders
            FOR EACH ROW EXECUTE FUNCTION public.rt_orders_broadcast();
    """)
    service = Socket(server, key=server.keys.secret_key)  # the service role may read every private topic
    try:
        assert service.join("orders", {"private": True})["status"] == "ok"
        run_sql(database_url, "INSERT INTO public.rt_orders VALUES (1, 'new')")
        message = service.expect("broadcast", topic="realtime:orders")["payload"]
        assert message["event"] == "INSERT"
        assert message["payload"] == {"schema": "public", "table": "rt_orders", "operation": "INSERT",
                                      "record": {"id": 1, "status": "new"}, "old_record": None}
    finally:
        service.close()


def test_binary_broadcasts_reach_vsn_2_clients_as_binary(server: RunningServer) -> None:
    """realtime-js's binary push (kind 3, raw payload) goes out as kind 4 to vsn 2.0.0 sockets;
    a vsn 1.0.0 socket, whose frames are JSON, is not sent what it cannot read."""
    url = server.url.replace("http://", "ws://") + f"/realtime/v1/websocket?apikey={server.keys.publishable_key}"
    with connect(url + "&vsn=2.0.0", open_timeout=10) as sender, connect(url + "&vsn=2.0.0", open_timeout=10) as receiver:
        old = Socket(server)
        try:
            for ws in (sender, receiver):
                ws.send('["1", "1", "realtime:bin", "phx_join", {"config": {}}]')
                assert '"ok"' in str(ws.recv(timeout=10))
            assert old.join("bin")["status"] == "ok"
            topic, event, data = b"realtime:bin", b"blob", bytes(range(256))
            header = bytes([3, 0, 0, len(topic), len(event), 0, 0])  # kind 3, no refs, no metadata, binary
            sender.send(header + topic + event + data)
            frame = receiver.recv(timeout=10)
            assert isinstance(frame, bytes) and frame[0] == 4
            topic_len, event_len, meta_len, encoding = frame[1], frame[2], frame[3], frame[4]
            assert (topic_len, event_len, meta_len, encoding) == (len(topic), len(event), 0, 0)
            assert frame[5:5 + topic_len] == topic and frame[5 + topic_len:5 + topic_len + event_len] == event
            assert frame[5 + topic_len + event_len:] == data
            ref = old.send("phoenix", "heartbeat")
            assert old.expect("phx_reply", ref=ref)  # the JSON socket got no broadcast before its reply
            assert not any(f["event"] == "broadcast" for f in old.seen)
        finally:
            old.close()
