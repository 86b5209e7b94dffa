"""In a real browser: the device cookie /login sets keeps its owner in while others guess.

Headless Chromium (Debian's) logs in at /login from 127.0.0.1; attackers guess over HTTP from
other loopback addresses (``tests.auth.throttling``). Plain ``def`` tests, as in test_browser.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.auth.helpers import PASSWORD, Auth
from tests.auth.throttling import ENV, WRONG, Peer, burn, hold_the_slot, refused, slowed
from tests.chromium import chromium
from tests.support import RunningServer

try:
    from playwright.sync_api import Browser, Page, expect
except ImportError:  # pragma: no cover - the test extras install it
    pytest.skip("the Python package playwright is not installed (pip install -e '.[test]')", allow_module_level=True)

TIMEOUT_MS = 15_000


@pytest.fixture(scope="module")
def server(server_factory: Callable[..., RunningServer]) -> RunningServer:
    return server_factory(env=ENV)


@pytest.fixture(scope="module")
def browser(server: RunningServer) -> Iterator[Browser]:
    """Headless Chromium; depends on the server so that the database outlives the browser."""
    with chromium() as browser:
        yield browser


def log_in(page: Page, server: RunningServer, email: str) -> None:
    page.goto(f"{server.url}/login")
    page.fill("#email", email)
    page.fill("#password", PASSWORD)
    page.get_by_role("button", name="Log in", exact=True).click()


def test_a_browser_that_logged_in_before_is_not_slowed_down(browser: Browser, server: RunningServer) -> None:
    auth = Auth(server)
    opened: list[Peer] = []

    def peers(address: str | None = None, cookies: httpx.Cookies | None = None) -> Peer:
        opened.append(Peer(server, address, cookies))
        return opened[-1]

    known = browser.new_context()
    new = browser.new_context()
    try:
        email, _ = auth.confirmed_user()
        page = known.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        log_in(page, server, email)
        expect(page).to_have_url(f"{server.url}/account")
        (device,) = [c for c in known.cookies(server.url) if c["name"].startswith("gh-device-")]
        assert device["httpOnly"] and device["sameSite"] == "Strict" and device["path"] == "/"
        page.get_by_role("button", name="Sign out").first.click()
        expect(page).to_have_url(f"{server.url}/login")

        # The browser's address has failed at this account too (someone else on the same
        # network), and attackers elsewhere have spent the account's budget.
        assert peers("127.0.0.1").log_in(email, WRONG).status_code == 400
        burn(peers, email)
        hold_the_slot(peers, email)
        assert refused(slowed(peers, email))

        # A browser without the cookie, at the same address, is asked to wait ...
        other = new.new_page()
        other.set_default_timeout(TIMEOUT_MS)
        log_in(other, server, email)
        expect(other.get_by_role("alert")).to_contain_text("Too many attempts")
        expect(other).to_have_url(f"{server.url}/login")
        # ... the owner's browser is let in.
        log_in(page, server, email)
        expect(page).to_have_url(f"{server.url}/account")
    finally:
        known.close()
        new.close()
        auth.close()
        for peer in opened:
            peer.http.close()
