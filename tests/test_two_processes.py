"""Two Gatehouse processes on one database, as behind a load balancer: nothing lives in one process."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from gatehouse.core.db import Database
from tests.auth.helpers import PASSWORD, new_email
from tests.smtp import SMTPServer, smtp_env
from tests.support import RunningServer


@pytest.fixture(scope="module")
def pair(server_factory: Callable[..., RunningServer], module_smtp: SMTPServer,
         tmp_path_factory: pytest.TempPathFactory) -> tuple[RunningServer, RunningServer]:
    shared: Path = tmp_path_factory.mktemp("shared-storage")
    env = {
        **smtp_env(module_smtp.port),
        "GATEHOUSE_STORAGE_DIR": str(shared), "GATEHOUSE_RATE_LIMIT_SIGNUP": "1000/300",
        "GATEHOUSE_RATE_LIMIT_TOKEN": "8/300", "GATEHOUSE_RATE_LIMIT_EMAIL_ADDRESS": "100/60",
    }
    return server_factory(env=env), server_factory(env=env)


def auth(server: RunningServer, path: str, body: dict[str, object], token: str | None = None) -> httpx.Response:
    headers = {"apikey": server.keys.publishable_key}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.post(f"{server.url}/auth/v1{path}", json=body, headers=headers, timeout=15)


def test_a_session_made_on_one_works_on_the_other_and_dies_on_both(pair: tuple[RunningServer, RunningServer]) -> None:
    a, b = pair
    email = new_email("pair")
    admin = {"apikey": a.keys.secret_key}
    httpx.post(f"{a.url}/auth/v1/admin/users", headers=admin,
               json={"email": email, "password": PASSWORD, "email_confirm": True}).raise_for_status()
    session = auth(a, "/token?grant_type=password", {"email": email, "password": PASSWORD}).json()
    headers = {"apikey": b.keys.publishable_key, "Authorization": f"Bearer {session['access_token']}"}
    assert httpx.get(f"{b.url}/auth/v1/user", headers=headers).json()["email"] == email
    refreshed = auth(b, "/token?grant_type=refresh_token", {"refresh_token": session["refresh_token"]}).json()
    assert auth(b, "/logout", {}, token=refreshed["access_token"]).status_code == 204
    for server in (a, b):
        me = httpx.get(f"{server.url}/auth/v1/user", headers={"apikey": server.keys.publishable_key,
                                                               "Authorization": f"Bearer {refreshed['access_token']}"})
        assert me.status_code == 403
        assert auth(server, "/token?grant_type=refresh_token", {"refresh_token": refreshed["refresh_token"]}).status_code == 400


def test_rate_limits_count_across_both(pair: tuple[RunningServer, RunningServer]) -> None:
    a, b = pair
    statuses = [auth(server, "/token?grant_type=password", {"email": new_email(), "password": "x" * 10}).status_code
                for server in (a, b) * 5]
    assert statuses.count(429) >= 1 and statuses.index(429) <= 8  # 8 allowed per IP across both, not per process


async def test_each_email_is_sent_exactly_once(pair: tuple[RunningServer, RunningServer], module_smtp: SMTPServer,
                                               db: Database) -> None:
    a, b = pair
    before = len(module_smtp.received)
    emails = [new_email("once") for _ in range(12)]
    for index, email in enumerate(emails):
        assert auth((a, b)[index % 2], "/signup", {"email": email, "password": PASSWORD}).status_code == 200
    received = module_smtp.wait_for_sync(before + len(emails))
    time.sleep(1.0)  # time for a duplicate to show up, if there were one
    recipients = [r for message in module_smtp.received[before:] for r in message.recipients]
    assert sorted(recipients) == sorted(emails), "each confirmation exactly once"
    assert len(received) == before + len(emails)
    pending = await db.admin.fetchval("SELECT count(*) FROM gatehouse.mail_outbox WHERE status <> 'sent'")
    assert pending == 0


def test_a_file_uploaded_through_one_downloads_through_the_other(pair: tuple[RunningServer, RunningServer]) -> None:
    a, b = pair
    key = {"apikey": a.keys.secret_key}
    httpx.post(f"{a.url}/storage/v1/bucket", headers=key, json={"id": "shared", "public": True})
    uploaded = httpx.post(f"{a.url}/storage/v1/object/shared/hello.txt", headers=key | {"Content-Type": "text/plain"},
                          content=b"hello from A")
    assert uploaded.status_code == 200
    assert httpx.get(f"{b.url}/storage/v1/object/public/shared/hello.txt").content == b"hello from A"
