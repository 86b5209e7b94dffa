"""Password guessing is throttled, and nobody can use the throttle to lock an owner out.

Real server, real HTTP; each simulated client at its own loopback address (``tests.auth.throttling``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import jwt
import pytest
from supabase import Client, create_client
from supabase.lib.client_options import SyncClientOptions
from supabase_auth.errors import AuthApiError

from gatehouse.auth.devices import LIFETIME, PREFIX, DeviceCookies
from gatehouse.auth.throttle import slowdown_delay
from gatehouse.core.config import load_settings
from tests.auth.helpers import PASSWORD, Auth, new_email
from tests.auth.throttling import ENV, NEW_PASSWORD, WRONG, Peer, burn, hold_the_slot, next_address, refused, slowed
from tests.support import RunningServer


@pytest.fixture(scope="module")
def server(server_factory: Callable[..., RunningServer]) -> RunningServer:
    return server_factory(env=ENV)


@pytest.fixture(scope="module")
def auth(server: RunningServer) -> Iterator[Auth]:
    client = Auth(server)
    yield client
    client.close()


@pytest.fixture
def peers(server: RunningServer) -> Iterator[Callable[..., Peer]]:
    opened: list[Peer] = []

    def make(address: str | None = None, cookies: httpx.Cookies | None = None) -> Peer:
        peer = Peer(server, address, cookies)
        opened.append(peer)
        return peer

    yield make
    for peer in opened:
        peer.http.close()


# -- item 4: no lock-out by guessing -------------------------------------------------------------


@pytest.mark.parametrize(
    ("failures", "delay"),
    [(0, 0), (9.9, 0), (10, 1), (10.5, 1), (11, 2), (13, 8), (14, 16), (15, 30), (10**9, 30)],
)
def test_the_slow_down_starts_at_the_budget_doubles_and_is_bounded(failures: float, delay: int) -> None:
    assert slowdown_delay(failures, 10, 30) == delay



def test_the_owner_logs_in_with_a_device_cookie_while_an_attacker_burns_the_account(
    auth: Auth, peers: Callable[..., Peer]
) -> None:
    email, _ = auth.confirmed_user()
    phone = peers()  # the owner's app: token API
    assert phone.log_in(email).status_code == 200
    (_device,) = phone.device_cookies()
    browser = peers()  # the owner's browser: the web app's /login
    assert browser.web_log_in(email).headers["location"] == "/account"
    assert browser.device_cookies()

    burn(peers, email)
    attacker = hold_the_slot(peers, email)
    # Untrusted clients that have failed here now wait, even with the right password ...
    assert refused(slowed(peers, email))
    # ... and the attacker's own address is refused for the account.
    assert refused(attacker.log_in(email))

    # The owner's devices are not: by token API and by /login, from their own address, from a
    # new one, and from the attacker's (a shared NAT).
    assert phone.log_in(email).status_code == 200
    assert peers(cookies=phone.http.cookies).log_in(email).status_code == 200
    assert peers(attacker.address, cookies=phone.http.cookies).log_in(email).status_code == 200
    browser_again = browser.web_log_in(email)
    assert browser_again.status_code == 303 and browser_again.headers["location"] == "/account"
    assert browser.http.get("/account").status_code == 200
    assert refused(slowed(peers, email))  # still slowed for everyone else


def test_a_client_address_with_no_failures_gets_its_try(auth: Auth, peers: Callable[..., Peer]) -> None:
    """The slow-down spaces out clients that have failed on the account; a new device at an
    address with no failures there (the owner on a new laptop) is not made to wait."""
    email, _ = auth.confirmed_user()
    burn(peers, email)
    hold_the_slot(peers, email)
    assert refused(slowed(peers, email))
    assert peers().log_in(email).status_code == 200


def test_the_slow_down_is_short_and_gotrue_shaped(auth: Auth, peers: Callable[..., Peer]) -> None:
    email, _ = auth.confirmed_user()
    burn(peers, email)
    hold_the_slot(peers, email)
    response = slowed(peers, email, WRONG)
    assert refused(response)
    assert int(response.headers["retry-after"]) <= 600  # GATEHOUSE_PASSWORD_SLOWDOWN_MAX
    assert set(response.json()) >= {"code", "error_code", "msg", "message"}
    assert "browser you have used" in response.json()["message"]
    # the same on the web page: 429, Retry-After, a sentence a person can act on
    peer = peers()
    assert peer.web_log_in(email, WRONG).status_code == 400
    page = peer.web_log_in(email)
    assert page.status_code == 429 and int(page.headers["retry-after"]) >= 1
    assert "Too many attempts" in page.text


def test_limit_per_address_and_account(auth: Auth, peers: Callable[..., Peer]) -> None:
    email, _ = auth.confirmed_user()
    other, _ = auth.confirmed_user()
    guesser = peers()
    assert [guesser.log_in(email, WRONG).status_code for _ in range(2)] == [400, 400]
    assert refused(guesser.log_in(email))  # the right password too: this address is done with this account
    assert refused(guesser.log_in(email, WRONG))
    assert guesser.log_in(other).status_code == 200  # other accounts from the same address are not
    assert peers().log_in(email).status_code == 200  # and the account itself is not locked
    # right passwords are not counted: the owner logs in as often as they like
    owner = peers()
    assert [owner.log_in(email).status_code for _ in range(5)] == [200] * 5


def test_unknown_addresses_are_throttled_alike(peers: Callable[..., Peer]) -> None:
    nobody = new_email("nobody")
    guesser = peers()
    assert [guesser.log_in(nobody, WRONG).json()["code"] for _ in range(2)] == ["invalid_credentials"] * 2
    assert refused(guesser.log_in(nobody, WRONG))


def _forge(server: RunningServer, **kwargs: Any) -> DeviceCookies:
    return DeviceCookies(server.keys, load_settings(), **kwargs)


def test_forged_tampered_and_other_accounts_device_cookies_give_no_bypass(
    auth: Auth, server: RunningServer, peers: Callable[..., Peer]
) -> None:
    email, _ = auth.confirmed_user()
    own, _ = auth.confirmed_user()  # the attacker's own account
    owner = peers()
    assert owner.log_in(email).status_code == 200
    ((name, value),) = owner.device_cookies().items()
    attacker = peers()
    assert attacker.log_in(own).status_code == 200
    ((own_name, own_value),) = attacker.device_cookies().items()
    issued, nonce, tag = value.split(".")
    expired = _forge(server, now=lambda: time.time() - LIFETIME - 60).value(email)

    burn(peers, email)
    hold_the_slot(peers, email)
    jars = {
        "none": {},
        "tampered tag": {name: f"{issued}.{nonce}.{tag[:-1]}{'A' if tag[-1] != 'A' else 'B'}"},
        "tampered nonce": {name: f"{issued}.x{nonce}.{tag}"},
        "tampered time": {name: f"{int(issued) + 1}.{nonce}.{tag}"},
        "other account's cookie": {own_name: own_value},
        "other account's value under this name": {name: own_value},
        "forged": {name: f"{issued}.forgednonce.{'A' * 43}"},
        "expired": {name: expired},
        "garbage": {name: "\u00e9" * 30 + "." * 5 + "x" * 3000},
        "name only": {PREFIX: value},
    }
    for label, cookies in jars.items():
        peer = peers()
        assert peer.log_in(email, WRONG).status_code == 400
        peer.http.cookies.clear()
        response = peer.http.post(
            "/auth/v1/token?grant_type=password", json={"email": email, "password": PASSWORD},
            headers={"Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items()).encode()} if cookies else {},
        )
        assert refused(response), (label, response.status_code, response.text)
    # the genuine cookie, sent the same way, passes
    peer = peers()
    assert peer.log_in(email, WRONG).status_code == 400
    peer.http.cookies.clear()
    response = peer.http.post("/auth/v1/token?grant_type=password", json={"email": email, "password": PASSWORD},
                              headers={"Cookie": f"{name}={value}"})
    assert response.status_code == 200, response.text


def test_a_device_cookie_that_fails_too_often_is_no_longer_trusted(
    auth: Auth, peers: Callable[..., Peer]
) -> None:
    email, _ = auth.confirmed_user()
    owner = peers()
    assert owner.log_in(email).status_code == 200
    stolen = peers(cookies=owner.http.cookies)
    stolen.http.cookies.clear()
    assert stolen.log_in(email, WRONG).status_code == 400  # one untrusted failure from this address
    stolen.http.cookies.update(owner.device_cookies())
    burn(peers, email)
    hold_the_slot(peers, email)
    # with the cookie: 3 guesses (GATEHOUSE_RATE_LIMIT_PASSWORD_DEVICE) pass the slow-down ...
    assert [stolen.log_in(email, WRONG).status_code for _ in range(3)] == [400] * 3
    # ... then the cookie is distrusted and this client is slowed like any other
    assert refused(stolen.log_in(email, WRONG))
    assert refused(stolen.log_in(email))


def test_the_api_sets_a_device_cookie_a_browser_keeps(auth: Auth, peers: Callable[..., Peer]) -> None:
    email, _ = auth.confirmed_user()
    response = peers().log_in(email)
    (line,) = [c for c in response.headers.get_list("set-cookie") if c.startswith(PREFIX)]
    attributes = line.split("; ")
    assert {"Path=/", "HttpOnly", "SameSite=Strict"} <= set(attributes)
    assert "Secure" not in attributes  # development over http; Secure elsewhere
    assert email not in line
    failed = peers().log_in(email, WRONG)
    assert not [c for c in failed.headers.get_list("set-cookie") if c.startswith(PREFIX)]


# -- item 5: PUT /user is no password oracle --------------------------------------------------------


def _stale(server: RunningServer, token: str) -> str:
    """The same session's token, as if signed in long before the reauthentication window."""
    claims = jwt.decode(token, options={"verify_signature": False})
    return server.keys.sign(claims | {"amr": [{"method": "password", "timestamp": int(time.time()) - 90000}]})


def test_a_stale_token_learns_nothing_from_a_new_password_equal_to_the_current_one(
    auth: Auth, server: RunningServer, peers: Callable[..., Peer]
) -> None:
    _, session = auth.confirmed_user()
    stale = _stale(server, session["access_token"])
    peer = peers()
    same = peer.put_user(stale, {"password": PASSWORD})
    other = peer.put_user(stale, {"password": NEW_PASSWORD})
    assert (same.status_code, same.json()) == (other.status_code, other.json())
    assert same.status_code == 400 and same.json()["code"] == "reauthentication_needed"


def test_same_password_only_after_proof(auth: Auth, server: RunningServer, peers: Callable[..., Peer]) -> None:
    email, session = auth.confirmed_user()
    taken, _ = auth.confirmed_user()
    stale = _stale(server, session["access_token"])
    peer = peers()
    # proved by current_password in the request
    proved = peer.put_user(stale, {"password": PASSWORD, "current_password": PASSWORD})
    assert proved.status_code == 422 and proved.json()["code"] == "same_password"
    # proved by a fresh sign-in: allowed, but only after every other check, so that a guess that
    # missed always changes the password (no refusal can follow it and keep the old one)
    fresh = session["access_token"]
    for guess in (PASSWORD, NEW_PASSWORD):
        response = peer.put_user(fresh, {"password": guess, "email": taken})
        assert response.status_code == 422 and response.json()["code"] == "email_exists", guess
    assert peer.log_in(email).status_code == 200  # nothing changed
    assert peer.put_user(fresh, {"password": PASSWORD}).json()["code"] == "same_password"


def test_current_password_guesses_count_like_log_ins(
    auth: Auth, server: RunningServer, peers: Callable[..., Peer]
) -> None:
    email, session = auth.confirmed_user()
    stale = _stale(server, session["access_token"])
    thief = peers()
    guesses = [thief.put_user(stale, {"password": NEW_PASSWORD, "current_password": f"guess {n}"}) for n in range(2)]
    assert [(r.status_code, r.json()["code"]) for r in guesses] == [(400, "invalid_credentials")] * 2
    assert refused(thief.put_user(stale, {"password": NEW_PASSWORD, "current_password": PASSWORD}))
    assert refused(thief.log_in(email))  # one budget for log-ins and current-password checks

    # guesses through PUT /user spend the account's budget like failed log-ins do
    email, session = auth.confirmed_user()
    stale = _stale(server, session["access_token"])
    for _ in range(8):
        response = peers().put_user(stale, {"password": NEW_PASSWORD, "current_password": WRONG})
        assert response.json()["code"] == "invalid_credentials"
    hold_the_slot(peers, email)
    assert refused(slowed(peers, email))


def test_supabase_py_update_user(auth: Auth, server: RunningServer) -> None:
    email, session = auth.confirmed_user()
    http = httpx.Client(transport=httpx.HTTPTransport(local_address=next_address()), timeout=30)
    client: Client = create_client(server.url, server.keys.publishable_key, SyncClientOptions(httpx_client=http))
    try:
        client.auth.set_session(_stale(server, session["access_token"]), session["refresh_token"])
        with pytest.raises(AuthApiError) as same:
            client.auth.update_user({"password": PASSWORD})
        assert same.value.code == "reauthentication_needed"
        for n in range(2):
            with pytest.raises(AuthApiError) as wrong:
                client.auth.update_user({"password": NEW_PASSWORD, "current_password": f"guess {n}"})
            assert wrong.value.code == "invalid_credentials"
        with pytest.raises(AuthApiError) as limited:
            client.auth.update_user({"password": NEW_PASSWORD, "current_password": PASSWORD})
        assert limited.value.status == 429 and limited.value.code == "over_request_rate_limit"
    finally:
        client.auth.close()
        http.close()
    # from another address, with the right current password, the change goes through
    http = httpx.Client(transport=httpx.HTTPTransport(local_address=next_address()), timeout=30)
    client = create_client(server.url, server.keys.publishable_key, SyncClientOptions(httpx_client=http))
    try:
        client.auth.set_session(_stale(server, session["access_token"]), session["refresh_token"])
        with pytest.raises(AuthApiError) as proved:
            client.auth.update_user({"password": PASSWORD, "current_password": PASSWORD})
        assert proved.value.code == "same_password"
        changed = client.auth.update_user({"password": NEW_PASSWORD, "current_password": PASSWORD})
        assert changed.user.email == email
    finally:
        client.auth.close()
        http.close()


def test_two_processes_share_the_counters_and_the_device_key(
    auth: Auth, server: RunningServer, server_factory: Callable[..., RunningServer]
) -> None:
    """Behind a load balancer: guesses at one process slow the account down at the other, and a
    device cookie from one process is honoured by the other."""
    second = server_factory(env=ENV)
    opened: list[Peer] = []

    def at(target: RunningServer) -> Callable[..., Peer]:
        def make(address: str | None = None, cookies: httpx.Cookies | None = None) -> Peer:
            opened.append(Peer(target, address, cookies))
            return opened[-1]
        return make

    try:
        email, _ = auth.confirmed_user()
        owner = at(server)()
        assert owner.log_in(email).status_code == 200
        burn(at(server), email)
        hold_the_slot(at(second), email)
        assert refused(slowed(at(server), email))
        assert at(second)(cookies=owner.http.cookies).log_in(email).status_code == 200

        other, _ = auth.confirmed_user()
        guesser = at(second)()
        assert [guesser.log_in(other, WRONG).status_code for _ in range(2)] == [400, 400]
        assert refused(at(server)(guesser.address).log_in(other))  # per address and account, across both
    finally:
        for peer in opened:
            peer.http.close()
        second.stop()
