"""Fixtures the dashboard's test modules share: the module's administrator, a visitor signed in as
them over HTTP, an Auth API client, and Chromium. Each module still chooses its own ``server``
(the root conftest's default, or one with the settings it tests)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from tests.auth.helpers import Auth
from tests.dashboard.helpers import Visitor, make_admin
from tests.support import RunningServer

if TYPE_CHECKING:
    from playwright.sync_api import Browser


@pytest.fixture(scope="module")
def admin_email(database_url: str) -> str:
    """An administrator without TOTP (made before Playwright's event loop runs: the SQL helpers use asyncio.run)."""
    return make_admin(database_url)


@pytest.fixture(scope="module")
def visitor(server: RunningServer, admin_email: str) -> Iterator[Visitor]:
    """A visitor signed in as the module's administrator, through every step (the overview answers)."""
    signed_in = Visitor(server)
    signed_in.sign_in(admin_email)
    assert signed_in.get("/_/").status_code == 200
    yield signed_in
    signed_in.close()


@pytest.fixture(scope="module")
def auth(server: RunningServer) -> Iterator[Auth]:
    """The Auth API as an app's client calls it, on the module's server."""
    client = Auth(server)
    yield client
    client.close()


@pytest.fixture(scope="module")
def browser(admin_email: str) -> Iterator[Browser]:
    """Chromium, started once the administrator exists."""
    pytest.importorskip("playwright")
    from tests.chromium import chromium

    with chromium() as started:
        yield started
