"""Moves across buckets own their copied bytes exactly as long as no row can name them.

The fault is injected (a cancel, a lost database, a refusal while the UPDATE runs) on a real
database and the in-memory backend; the question is only whether the copied bytes survive.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest

from gatehouse.core.config import Settings
from gatehouse.core.db import Database
from gatehouse.core.errors import GatehouseError
from gatehouse.core.keys import KeySet
from gatehouse.storage.backends.memory import MemoryBackend
from gatehouse.storage.forms import Transfer
from gatehouse.storage.service import StorageService

SERVICE = {"role": "service_role"}


async def chunks() -> AsyncIterator[bytes]:
    yield b"moved bytes"


@pytest.fixture
async def service(db: Database, settings: Settings, keys: KeySet) -> AsyncIterator[StorageService]:
    backend = MemoryBackend()
    await db.admin.execute("DELETE FROM storage.objects WHERE bucket_id IN ('from-here', 'to-there')")
    for bucket in ("from-here", "to-there"):
        await db.admin.execute("INSERT INTO storage.buckets (id, name) VALUES ($1, $1) ON CONFLICT DO NOTHING", bucket)
    storage = StorageService(db, backend, settings, keys)
    await storage.objects.upload(SERVICE, "from-here", "a.txt", chunks(), content_type="text/plain",
                                 content_length=None, headers={}, upsert=False)
    yield storage
    await backend.close()


class FaultyUpdate:
    """A connection whose move UPDATE raises ``fault`` (a named fake: only the fault is injected)."""

    def __init__(self, conn: Any, fault: BaseException) -> None:
        self._conn, self._fault = conn, fault

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        if sql.startswith("UPDATE storage.objects"):
            raise self._fault
        return await self._conn.fetchval(sql, *args)


def inject(storage: StorageService, monkeypatch: pytest.MonkeyPatch, fault: BaseException) -> None:
    real: Callable[..., Any] = storage.db.as_user

    @asynccontextmanager
    async def as_user(claims: Any, *, readonly: bool = False) -> AsyncIterator[Any]:
        async with real(claims, readonly=readonly) as conn:
            yield FaultyUpdate(conn, fault)

    monkeypatch.setattr(storage.objects.db, "as_user", as_user)


def blobs_in(storage: StorageService, bucket: str) -> list[str]:
    backend = storage.backend
    assert isinstance(backend, MemoryBackend)
    return [key for key in backend.blobs if key.startswith(bucket + "/")]


MOVE = Transfer(bucket_id="from-here", source="a.txt", target_bucket="to-there", target="b.txt")


async def test_a_move_across_buckets_leaves_one_copy(service: StorageService) -> None:
    await service.objects.move(SERVICE, MOVE)
    assert len(blobs_in(service, "to-there")) == 1
    row = await service.db.admin.fetchrow("SELECT bucket_id, name FROM storage.objects WHERE name = 'b.txt'")
    assert row is not None and (row["bucket_id"], row["name"]) == ("to-there", "b.txt")


@pytest.mark.parametrize(
    "fault",
    [asyncio.CancelledError(), ConnectionResetError("lost"), asyncpg.exceptions.AdminShutdownError("gone")],
    ids=["cancelled", "connection-lost", "database-shut-down"],
)
async def test_copied_bytes_stay_when_the_move_may_have_committed(
    service: StorageService, monkeypatch: pytest.MonkeyPatch, fault: BaseException
) -> None:
    inject(service, monkeypatch, fault)
    with pytest.raises(BaseException):  # noqa: B017 - which one depends on the fault
        await service.objects.move(SERVICE, MOVE)
    assert len(blobs_in(service, "to-there")) == 1  # the janitor's sweep decides, not the request


async def test_copied_bytes_go_when_the_move_is_refused(
    service: StorageService, monkeypatch: pytest.MonkeyPatch
) -> None:
    inject(service, monkeypatch, asyncpg.exceptions.CheckViolationError("refused"))
    with pytest.raises(GatehouseError):
        await service.objects.move(SERVICE, MOVE)
    assert blobs_in(service, "to-there") == []
    assert len(blobs_in(service, "from-here")) == 1  # the original is untouched


async def test_a_failing_clean_up_does_not_hide_why_the_request_failed(
    service: StorageService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store fails the clean-up too (an outage): the caller hears the first error, and the
    bytes stay for the janitor's sweep."""
    inject(service, monkeypatch, asyncpg.exceptions.CheckViolationError("refused"))
    backend = service.backend
    assert isinstance(backend, MemoryBackend)
    backend.fail("delete")
    with pytest.raises(GatehouseError) as caught:
        await service.objects.move(SERVICE, MOVE)
    assert "delete" not in caught.value.message and caught.value.status < 500
    assert len(blobs_in(service, "to-there")) == 1
