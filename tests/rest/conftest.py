"""A live server over a database with the data-API test schema (tests/rest/fixtures.sql)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from gatehouse.core.db import Database
from tests.support import ConfirmedSession, RunningServer

FIXTURES = Path(__file__).with_name("fixtures.sql")


@pytest.fixture(scope="module")
async def rest_schema(db: Database) -> None:
    await db.admin.execute(FIXTURES.read_text())
    await db.admin.execute("NOTIFY gatehouse_schema, 'reload'")


class Rest:
    """Raw HTTP against /rest/v1 with a key and, optionally, a user's access token."""

    def __init__(self, server: RunningServer, *, key: str | None = None, token: str | None = None) -> None:
        headers = {"apikey": key or server.keys.publishable_key}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.server = server
        self.http = httpx.Client(base_url=f"{server.url}/rest/v1", headers=headers, timeout=15)

    def close(self) -> None:
        self.http.close()


@pytest.fixture(scope="module")
def rest_server(server_factory: Callable[..., RunningServer], rest_schema: None) -> RunningServer:
    server = server_factory(env={"GATEHOUSE_RATE_LIMITS_ENABLED": "false"})
    deadline = time.monotonic() + 10
    while httpx.get(f"{server.url}/rest/v1/countries", headers={"apikey": server.keys.publishable_key}).status_code != 200:
        assert time.monotonic() < deadline, "the server never saw the test schema"
        time.sleep(0.05)
    return server


@pytest.fixture(scope="module")
def anon(rest_server: RunningServer) -> Iterator[Rest]:
    client = Rest(rest_server)
    yield client
    client.close()


@pytest.fixture(scope="module")
def service(rest_server: RunningServer) -> Iterator[Rest]:
    client = Rest(rest_server, key=rest_server.keys.secret_key)
    yield client
    client.close()


@pytest.fixture(scope="module")
def user_factory(
    rest_server: RunningServer, confirmed_session: ConfirmedSession
) -> Iterator[Callable[[], tuple[Rest, dict[str, object]]]]:
    """Signed-in users: (a Rest client with their token, their session)."""
    made: list[Rest] = []

    def make() -> tuple[Rest, dict[str, object]]:
        _, session = confirmed_session(rest_server)
        client = Rest(rest_server, token=str(session["access_token"]))
        made.append(client)
        return client, session

    yield make
    for client in made:
        client.close()
