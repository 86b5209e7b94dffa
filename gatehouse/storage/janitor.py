"""Deletes bytes nothing points at: the queue the triggers fill, crashed uploads, orphans.

``storage.deleted_blobs`` is filled by triggers when an object row is deleted or starts pointing
at new bytes (an overwrite, a move to another bucket, a deleted user). The janitor claims queued
keys with ``FOR UPDATE SKIP LOCKED`` (several processes never fight over one), deletes them from
the backend, and only then removes them from the queue: a failure leaves the key queued for the
next round. At start it also removes leftover temporary upload files, and bytes that no row and
no queue entry names (a process killed between writing bytes and committing their row).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime, timedelta

import asyncpg

from gatehouse.core.background import Background
from gatehouse.core.errors import GatehouseError
from gatehouse.storage.backends.base import Backend

log = logging.getLogger("gatehouse.storage.janitor")


#: Which of these versions (the last part of a blob's key, ``<bucket_id>/<version>``) still have
#: a row: their keys. Found through the version indexes (0019, 0025), not by reading every row:
#: objects, the chunks of resumable uploads in progress (0024) and staged S3 multipart parts (0025).
SWEEP_REFERENCED_SQL = (
    "SELECT bucket_id || '/' || version AS key FROM storage.objects WHERE version = ANY($1::text[]) "
    "UNION ALL SELECT bucket_id || '/' || version FROM storage.resumable_parts WHERE version = ANY($1::text[]) "
    "UNION ALL SELECT bucket_id || '/' || version FROM gatehouse.s3_multipart_parts WHERE version = ANY($1::text[])"
)


class BlobJanitor(Background):
    task_name = "gatehouse-blob-janitor"

    def __init__(
        self, pool: asyncpg.Pool, backend: Backend, *, sweep_after: float = 3600, interval: float = 5.0, batch: int = 100
    ) -> None:
        self._pool = pool
        self._sweep_after = timedelta(seconds=sweep_after)
        self._backend = backend
        self._interval = interval
        self._batch = batch
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def _run(self) -> None:
        try:
            await self.sweep(min_age=self._sweep_after, spool_age=self._sweep_after)
        except (OSError, asyncpg.PostgresError, GatehouseError) as exc:
            log.warning("start-up sweep failed: %s", exc)
        while True:
            try:
                while await self.process() == self._batch:
                    pass
            except (OSError, asyncpg.PostgresError, GatehouseError) as exc:
                log.warning("deleting queued bytes failed, will retry: %s", exc)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)

    async def process(self) -> int:
        """Delete one batch of queued keys from the backend; return how many went."""
        async with self._pool.acquire() as conn, conn.transaction():
            keys = [
                row["key"]
                for row in await conn.fetch(
                    "SELECT key FROM storage.deleted_blobs ORDER BY queued_at LIMIT $1 FOR UPDATE SKIP LOCKED",
                    self._batch,
                )
            ]
            await self._backend.delete_many(keys)
            if keys:
                await conn.execute("DELETE FROM storage.deleted_blobs WHERE key = ANY($1::text[])", keys)
        return len(keys)

    async def sweep(self, *, min_age: timedelta, spool_age: timedelta) -> tuple[int, int]:
        """Remove unreferenced bytes older than ``min_age`` and temporary upload files older than
        ``spool_age``. Young ones are left alone: they may belong to an upload in progress.
        Returns (temporary files removed, orphaned blobs removed).
        """
        spooled = await self._backend.sweep_spool(spool_age)
        cutoff = datetime.now(UTC) - min_age
        # keys() is the backend's async listing, not a dict's: nothing to simplify
        candidates = [key async for key, modified in self._backend.keys() if _aware(modified) < cutoff]  # noqa: SIM118
        orphans = 0
        for start in range(0, len(candidates), 1000):
            chunk = candidates[start : start + 1000]
            versions = [key.rpartition("/")[2] for key in chunk]
            referenced = {row["key"] for row in await self._pool.fetch(SWEEP_REFERENCED_SQL, versions)}
            unreferenced = [key for key in chunk if key not in referenced]
            await self._backend.delete_many(unreferenced)
            orphans += len(unreferenced)
        if spooled or orphans:
            log.info("swept %d temporary upload files and %d orphaned blobs", spooled, orphans)
        return spooled, orphans


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
