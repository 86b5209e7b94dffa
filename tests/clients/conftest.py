"""Shared by the supabase-py data and storage tests: a server of the module's own, and clients for it."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from supabase import Client, create_client

from tests.auth.helpers import PASSWORD
from tests.support import ConfirmedSession, RunningServer

#: ``clients(signed_in=True, key=None)``: a supabase-py client, and its user's id when signed in.
Clients = Callable[..., tuple[Client, str | None]]


@pytest.fixture(scope="module")
def live(server_factory: Callable[..., RunningServer]) -> RunningServer:
    return server_factory(env={"GATEHOUSE_RATE_LIMITS_ENABLED": "false"})


@pytest.fixture(scope="module")
def client(live: RunningServer) -> Iterator[Client]:
    """One supabase-py client with the publishable key, for the module's ``live`` server."""
    supabase = create_client(live.url, live.keys.publishable_key)
    yield supabase
    supabase.postgrest.session.close()
    supabase.auth.close()


@pytest.fixture
def clients(live: RunningServer, confirmed_session: ConfirmedSession) -> Iterator[Clients]:
    opened: list[Client] = []

    def make(signed_in: bool = True, key: str | None = None) -> tuple[Client, str | None]:
        client = create_client(live.url, key or live.keys.publishable_key)
        opened.append(client)
        if not signed_in:
            return client, None
        email, _ = confirmed_session(live)
        session = client.auth.sign_in_with_password({"email": email, "password": PASSWORD})
        assert session.user is not None
        return client, session.user.id

    yield make
    for client in opened:
        client.storage.session.close()
        client.postgrest.session.close()
        client.auth.close()
