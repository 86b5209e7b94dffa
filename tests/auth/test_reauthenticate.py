"""Reauthentication: ``GET /reauthenticate`` mails a code; ``PUT /user {password, nonce}`` takes it."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.auth.helpers import PASSWORD, Auth
from tests.support import ConfirmedSession, RunningServer

NEW_PASSWORD = "a different long passphrase 7"
CODE = re.compile(r"Enter this code to confirm: (\d{6})")


@pytest.fixture(scope="module")
def server(server_factory: Callable[..., RunningServer]) -> RunningServer:
    # no sign-in counts as recent: a password change needs the nonce (or current_password)
    return server_factory(env={"GATEHOUSE_RATE_LIMITS_ENABLED": "false", "GATEHOUSE_PASSWORD_CHANGE_WINDOW": "0"})


@pytest.fixture(scope="module")
def secure(server_factory: Callable[..., RunningServer]) -> RunningServer:
    return server_factory(env={"GATEHOUSE_RATE_LIMITS_ENABLED": "false", "GATEHOUSE_PASSWORD_CHANGE_WINDOW": "0",
                               "GATEHOUSE_SECURE_PASSWORD_CHANGE": "true"})


@pytest.fixture
def auth(server: RunningServer) -> Iterator[Auth]:
    client = Auth(server)
    yield client
    client.close()


def mailed_code(auth: Auth, email: str) -> str:
    deadline = time.monotonic() + 10
    while True:
        for message in auth.messages(email):
            found = CODE.search(message["text"])
            if found:
                return found.group(1)
        assert time.monotonic() < deadline, auth.messages(email)
        time.sleep(0.05)


def stale_session(auth: Auth, confirmed_session: ConfirmedSession) -> tuple[str, dict[str, Any]]:
    return confirmed_session(auth.server)


def test_a_password_change_takes_the_mailed_nonce_once(auth: Auth, confirmed_session: ConfirmedSession) -> None:
    email, session = stale_session(auth, confirmed_session)
    token = session["access_token"]
    needed = auth.put("/user", {"password": NEW_PASSWORD}, token=token)
    assert needed.status_code == 400 and needed.json()["error_code"] == "reauthentication_needed"
    assert auth.get("/reauthenticate", token=token).status_code == 200
    code = mailed_code(auth, email)
    wrong = auth.put("/user", {"password": NEW_PASSWORD, "nonce": "000000" if code != "000000" else "111111"}, token=token)
    assert wrong.status_code == 400 and wrong.json()["error_code"] == "reauthentication_not_valid"
    changed = auth.put("/user", {"password": NEW_PASSWORD, "nonce": code}, token=token)
    assert changed.status_code == 200, changed.text
    again = auth.put("/user", {"password": PASSWORD, "nonce": code}, token=token)
    assert again.status_code == 400 and again.json()["error_code"] == "reauthentication_not_valid"
    assert auth.post("/token?grant_type=password", {"email": email, "password": NEW_PASSWORD}).status_code == 200


def test_a_nonce_is_the_users_own(auth: Auth, confirmed_session: ConfirmedSession) -> None:
    email, session = stale_session(auth, confirmed_session)
    _, other = stale_session(auth, confirmed_session)
    auth.get("/reauthenticate", token=session["access_token"])
    code = mailed_code(auth, email)
    stolen = auth.put("/user", {"password": NEW_PASSWORD, "nonce": code}, token=other["access_token"])
    assert stolen.status_code == 400 and stolen.json()["error_code"] == "reauthentication_not_valid"


def test_reauthenticate_needs_a_signed_in_user(auth: Auth) -> None:
    assert auth.get("/reauthenticate").status_code == 401


@pytest.mark.parametrize("nonce", ["", "12345", "1234567", "abcdef", "x" * 200])
def test_malformed_nonces_are_refused(auth: Auth, confirmed_session: ConfirmedSession, nonce: str) -> None:
    _, session = stale_session(auth, confirmed_session)
    refused = auth.put("/user", {"password": NEW_PASSWORD, "nonce": nonce}, token=session["access_token"])
    assert refused.status_code == 400 and refused.json()["error_code"] == "reauthentication_not_valid"


def test_secure_password_change_refuses_current_password_alone(secure: RunningServer,
                                                              confirmed_session: ConfirmedSession) -> None:
    auth = Auth(secure)
    try:
        email, session = stale_session(auth, confirmed_session)
        token = session["access_token"]
        refused = auth.put("/user", {"password": NEW_PASSWORD, "current_password": PASSWORD}, token=token)
        assert refused.status_code == 400 and refused.json()["error_code"] == "reauthentication_needed"
        assert "current_password" not in refused.json()["msg"]
        auth.get("/reauthenticate", token=token)
        changed = auth.put("/user", {"password": NEW_PASSWORD, "nonce": mailed_code(auth, email)}, token=token)
        assert changed.status_code == 200, changed.text
    finally:
        auth.close()


def test_supabase_py_reauthenticate(server: RunningServer, confirmed_session: ConfirmedSession) -> None:
    from supabase import create_client

    helper = Auth(server)
    email, _ = confirmed_session(server)
    supabase = create_client(server.url, server.keys.publishable_key)
    try:
        supabase.auth.sign_in_with_password({"email": email, "password": PASSWORD})
        supabase.auth.reauthenticate()
        supabase.auth.update_user({"password": NEW_PASSWORD, "nonce": mailed_code(helper, email)})
        assert helper.post("/token?grant_type=password", {"email": email, "password": NEW_PASSWORD}).status_code == 200
    finally:
        helper.close()
        supabase.auth.close()
        supabase.auth.admin.close()
