"""Shared by the storage tests: a signed-in user's raw HTTP client for this module's ``server``."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.support import ConfirmedSession, RunningServer


@pytest.fixture(scope="module")
def user(server: RunningServer, confirmed_session: ConfirmedSession) -> Iterator[tuple[httpx.Client, str]]:
    """(a client of /storage/v1 with a confirmed user's token, the user's id); ``server`` is the module's own."""
    _, session = confirmed_session(server)
    client = httpx.Client(
        base_url=f"{server.url}/storage/v1",
        headers={"apikey": server.keys.publishable_key, "Authorization": f"Bearer {session['access_token']}"},
        timeout=30,
    )
    yield client, session["user"]["id"]
    client.close()
