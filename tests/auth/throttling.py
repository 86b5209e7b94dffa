"""The simulated clients of the log-in throttle tests: each at its own loopback address.

The server takes the client address from the socket (no proxy headers), so each simulated client
connects from its own address (127.20.x.y: Linux routes all of 127/8 to the loopback interface,
and httpx binds the source address with ``local_address``).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from typing import Any

import httpx

from gatehouse.auth.devices import PREFIX
from tests.auth.helpers import PASSWORD, VERSIONED
from tests.support import RunningServer

WRONG = "not the passphrase at all"
NEW_PASSWORD = "another long passphrase 4 tests"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')
#: Per account 2 failures, then the slow-down (2^(failures-2) s, at most 600 s, so a held slot
#: stays held for the whole test); per address and account 2 failures; per device cookie 3.
ENV = {
    "GATEHOUSE_RATE_LIMIT_TOKEN": "1000/3600",
    "GATEHOUSE_RATE_LIMIT_SIGNUP": "1000/3600",
    "GATEHOUSE_RATE_LIMIT_VERIFY": "1000/3600",
    "GATEHOUSE_RATE_LIMIT_EMAIL": "1000/3600",
    "GATEHOUSE_RATE_LIMIT_EMAIL_ADDRESS": "1000/60",
    "GATEHOUSE_RATE_LIMIT_PASSWORD_ATTEMPTS": "2/3600",
    "GATEHOUSE_RATE_LIMIT_PASSWORD_CLIENT": "2/3600",
    "GATEHOUSE_RATE_LIMIT_PASSWORD_DEVICE": "3/3600",
    "GATEHOUSE_PASSWORD_SLOWDOWN_MAX": "600",
}
_addresses = (f"127.20.{n // 250}.{n % 250 + 1}" for n in itertools.count())


def next_address() -> str:
    """A loopback address no other simulated client of this test session has used."""
    return next(_addresses)


class Peer:
    """One client (browser, app or attacker) at its own address, keeping cookies like a browser."""

    def __init__(self, server: RunningServer, address: str | None = None, cookies: httpx.Cookies | None = None) -> None:
        self.server = server
        self.address = address or next_address()
        self.http = httpx.Client(
            base_url=server.url, transport=httpx.HTTPTransport(local_address=self.address),
            headers={"apikey": server.keys.publishable_key} | VERSIONED, cookies=cookies, timeout=30,
        )

    def log_in(self, email: str, password: str = PASSWORD) -> httpx.Response:
        return self.http.post("/auth/v1/token?grant_type=password", json={"email": email, "password": password})

    def web_log_in(self, email: str, password: str = PASSWORD) -> httpx.Response:
        csrf = CSRF.search(self.http.get("/login").text)
        assert csrf
        return self.http.post("/login", data={"csrf": csrf.group(1), "email": email, "password": password,
                                              "action": "login"})

    def put_user(self, token: str, body: dict[str, Any]) -> httpx.Response:
        return self.http.put("/auth/v1/user", json=body, headers={"Authorization": f"Bearer {token}"})

    def device_cookies(self) -> dict[str, str]:
        return {name: value for name, value in self.http.cookies.items() if name.startswith(PREFIX)}


def refused(response: httpx.Response) -> bool:
    """A 429 in GoTrue's shape, with a short Retry-After."""
    if response.status_code != 429:
        return False
    assert response.json()["code"] == "over_request_rate_limit", response.text
    assert 1 <= int(response.headers["retry-after"]) <= 2 * 3600  # at most two windows
    return True


def burn(peers: Callable[..., Peer], email: str, addresses: int = 8) -> None:
    """An attacker spends the account's failure budget: one wrong guess from each of many addresses."""
    for _ in range(addresses):
        response = peers().log_in(email, WRONG)
        assert response.status_code == 400 and response.json()["code"] == "invalid_credentials", response.text


def hold_the_slot(peers: Callable[..., Peer], email: str) -> Peer:
    """After ``burn``: an attacker address with one failure takes the account's slot, and the next
    untrusted attempt must wait. Returns that attacker."""
    attacker = peers()
    assert attacker.log_in(email, WRONG).status_code == 400  # its first failure (not slowed)
    assert attacker.log_in(email, WRONG).status_code == 400  # takes the slot
    return attacker


def slowed(peers: Callable[..., Peer], email: str, password: str = PASSWORD) -> httpx.Response:
    """An untrusted attempt from an address that has failed on the account before."""
    peer = peers()
    assert peer.log_in(email, WRONG).status_code == 400
    return peer.log_in(email, password)
