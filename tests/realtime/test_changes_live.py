"""Database changes to live sockets: across two processes on one database, and through a PostgreSQL restart."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gatehouse.core.keys import KeySet
from tests.core.test_outage import pg_ctl
from tests.realtime.wire import Socket
from tests.support import ConfirmedSession, RunningServer, start_server

PROFILE_CHANGES = {"postgres_changes": [{"event": "UPDATE", "schema": "public", "table": "profiles"}]}


def update_profile(server: RunningServer, session: dict[str, Any], name: str) -> httpx.Response:
    return httpx.patch(f"{server.url}/rest/v1/profiles", params={"id": f"eq.{session['user']['id']}"},
                       json={"full_name": name}, headers={"apikey": server.keys.publishable_key,
                                                          "Authorization": f"Bearer {session['access_token']}",
                                                          "Prefer": "count=exact"})


def test_a_change_made_through_one_process_reaches_a_socket_on_another(
    server_factory: Callable[..., RunningServer], confirmed_session: ConfirmedSession,
) -> None:
    first = server_factory(env={"GATEHOUSE_RATE_LIMITS_ENABLED": "false"})
    second = server_factory(env={"GATEHOUSE_RATE_LIMITS_ENABLED": "false"})
    _, session = confirmed_session(first)
    socket = Socket(second)
    try:
        joined = socket.join("profiles", PROFILE_CHANGES, session["access_token"])
        assert joined["status"] == "ok" and joined["response"]["postgres_changes"][0]["table"] == "profiles"
        socket.expect("system")  # "Subscribed to PostgreSQL"
        assert update_profile(first, session, "Through the first").headers["content-range"] == "*/1"
        change = socket.expect("postgres_changes")["payload"]
        assert change["data"]["type"] == "UPDATE" and change["data"]["record"]["full_name"] == "Through the first"
        assert change["ids"] == [joined["response"]["postgres_changes"][0]["id"]]
    finally:
        socket.close()


@pytest.fixture
def own_database_server(tmp_path: Path, keys: KeySet, keys_dir: Path) -> Iterator[RunningServer]:
    server = start_server(tmp_path / "data", keys, database_url=None, keys_file=keys_dir / "keys.json",
                          env={"GATEHOUSE_EMBEDDED_DB_PORT": "0", "GATEHOUSE_DB_CONNECT_TIMEOUT": "2",
                               "GATEHOUSE_RATE_LIMITS_ENABLED": "false"})
    yield server
    server.stop()


def test_subscriptions_survive_a_postgresql_restart(
    own_database_server: RunningServer, confirmed_session: ConfirmedSession,
) -> None:
    server = own_database_server
    _, session = confirmed_session(server)
    socket = Socket(server)
    try:
        assert socket.join("profiles", PROFILE_CHANGES, session["access_token"])["status"] == "ok"
        assert update_profile(server, session, "Before").headers["content-range"] == "*/1"
        assert socket.expect("postgres_changes")["payload"]["data"]["record"]["full_name"] == "Before"
        pg_ctl(server.data_dir, "stop", "-m", "immediate", "-w")
        pg_ctl(server.data_dir, "start", "-w")
        ref = socket.send("phoenix", "heartbeat")  # the socket itself never went away
        socket.expect("phx_reply", ref=ref)
        for attempt in range(100):  # the pools reconnect on their own; wait until a write goes through
            answer = update_profile(server, session, "After")
            if answer.status_code == 204:
                break
            assert attempt < 99, answer.text
            time.sleep(0.1)
        change = socket.expect("postgres_changes", timeout=30)["payload"]
        assert change["data"]["record"]["full_name"] == "After"
    finally:
        socket.close()
