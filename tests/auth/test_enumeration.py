"""Requests that mail an address do the same work whether or not the address has an account.

The answer is the same (``{}``); so must be the cost, or timing tells who has an account. The
statements each request sends are recorded (asyncpg's query logger) and compared: the same
statements, in the same order, with the same number of arguments, for every kind of address.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import asyncpg
import pytest

from gatehouse.auth import users
from gatehouse.auth.forms import RecoverForm, ResendForm
from gatehouse.auth.service import AuthService, Client
from gatehouse.core.config import load_settings
from gatehouse.core.db import Database
from gatehouse.core.keys import KeySet
from gatehouse.mail.render import Templates
from tests.auth.helpers import PASSWORD

CLIENT = Client(ip="192.0.2.7")


class RecordingPool:
    """The admin pool, with every statement a connection sends written down."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self.statements: list[tuple[str, int]] = []

    def _log(self, record: Any) -> None:
        query = " ".join(record.query.split())
        if "current_setting('jit')" in query or "typeinfo" in query or query.startswith("RESET"):
            return  # asyncpg learning a type, once per connection: not the request's work
        self.statements.append((query, len(record.args or ())))

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[asyncpg.Connection]:
        async with self._pool.acquire() as conn:
            conn.add_query_logger(self._log)
            try:
                yield conn
            finally:
                conn.remove_query_logger(self._log)


@pytest.fixture(scope="module")
async def service(keys_dir: Path, database_url: str, keys: KeySet, db: Database) -> AsyncIterator[tuple[AuthService, RecordingPool]]:
    settings = load_settings(data_dir=keys_dir, database_url=database_url, rate_limits_enabled=False)
    recorder = RecordingPool(db.admin)
    auth = AuthService(SimpleNamespace(admin=recorder), settings, keys, Templates(settings))  # type: ignore[arg-type]
    yield auth, recorder
    auth.close()


async def _user(db: Database, *, confirmed: bool) -> str:
    email = f"known-{uuid.uuid4().hex[:10]}@example.com"
    user_id = uuid.uuid4()
    async with db.admin.acquire() as conn:
        await users.create(conn, email=email, password_hash=PASSWORD, user_metadata={}, confirmed=confirmed, user_id=user_id)
    return email


async def _statements(recorder: RecordingPool, call: Callable[[], Awaitable[None]]) -> list[tuple[str, int]]:
    recorder.statements.clear()
    await call()
    return list(recorder.statements)


async def _mails(db: Database, email: str) -> int:
    return int(await db.admin.fetchval("SELECT count(*) FROM gatehouse.mail_outbox WHERE to_address = $1", email))


@pytest.mark.parametrize("pkce", [False, True])
async def test_recover_sends_the_same_statements_for_every_address(
    service: tuple[AuthService, RecordingPool], db: Database, pkce: bool
) -> None:
    auth, recorder = service
    confirmed, unconfirmed = await _user(db, confirmed=True), await _user(db, confirmed=False)
    unknown = f"nobody-{uuid.uuid4().hex[:10]}@example.com"
    extra = {"code_challenge": "c" * 43, "code_challenge_method": "s256"} if pkce else {}
    runs = {
        email: await _statements(recorder, partial(auth.recovery.recover, RecoverForm(email=email, **extra), CLIENT, None))
        for email in (confirmed, unconfirmed, unknown)
    }
    assert runs[confirmed] == runs[unconfirmed] == runs[unknown]
    assert len(runs[unknown]) == 3  # BEGIN, the one statement, COMMIT
    assert [await _mails(db, email) for email in (confirmed, unconfirmed, unknown)] == [1, 0, 0]


async def test_resend_sends_the_same_statements_for_every_address(
    service: tuple[AuthService, RecordingPool], db: Database
) -> None:
    auth, recorder = service
    confirmed, unconfirmed = await _user(db, confirmed=True), await _user(db, confirmed=False)
    unknown = f"nobody-{uuid.uuid4().hex[:10]}@example.com"
    runs = {
        email: await _statements(
            recorder, partial(auth.verification.resend, ResendForm(type="signup", email=email), CLIENT, None)
        )
        for email in (confirmed, unconfirmed, unknown)
    }
    assert runs[confirmed] == runs[unconfirmed] == runs[unknown]
    assert [await _mails(db, email) for email in (confirmed, unconfirmed, unknown)] == [0, 1, 0]


async def test_every_request_writes_an_audit_row(service: tuple[AuthService, RecordingPool], db: Database) -> None:
    """A request that wrote nothing would commit without flushing the log: faster, and telling."""
    auth, _ = service
    before = await db.admin.fetchval("SELECT count(*) FROM auth.audit_log_entries WHERE ip_address = $1", CLIENT.ip)
    await auth.recovery.recover(RecoverForm(email=f"nobody-{uuid.uuid4().hex[:10]}@example.com"), CLIENT, None)
    after = await db.admin.fetchval("SELECT count(*) FROM auth.audit_log_entries WHERE ip_address = $1", CLIENT.ip)
    assert after == before + 1
