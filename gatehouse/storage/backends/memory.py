"""The shipped fake: blobs in a dict, for unit tests; fails on request.

It keeps the real contract (key checks, ranges, ``put`` consuming the spooled file, errors), so
a test of the storage service against it means the same as against the local folder.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from gatehouse.storage.backends.base import (
    CHUNK_SIZE,
    Backend,
    BackendError,
    BlobNotFound,
    Reader,
    clamp_range,
)
from gatehouse.storage.backends.keys import validate_key, validate_prefix

OPERATIONS = frozenset({"put", "open", "size", "delete", "copy", "keys", "check"})


@dataclass(frozen=True, slots=True)
class StoredBlob:
    data: bytes
    content_type: str
    modified: datetime


class MemoryBackend(Backend):
    """Blobs live in ``blobs`` (key → StoredBlob). ``fail("put")`` makes the next put raise BackendError.

    ``spool_dir`` must be a real folder (the service writes uploads there); without one a
    temporary folder is made and removed by ``close()``. ``now`` stamps modification times.
    """

    def __init__(self, spool_dir: Path | None = None, *, now: Callable[[], datetime] | None = None) -> None:
        self._own_spool = spool_dir is None
        super().__init__(Path(tempfile.mkdtemp(prefix="gatehouse-spool-")) if spool_dir is None else spool_dir)
        self.blobs: dict[str, StoredBlob] = {}
        self._now = now or (lambda: datetime.now(UTC))
        self._failures: dict[str, int] = {}

    def fail(self, operation: str, times: int = 1) -> None:
        """Make the next ``times`` calls of ``operation`` ("put", "open", ...) raise BackendError."""
        if operation not in OPERATIONS:
            raise ValueError(f"unknown operation {operation!r}; one of {sorted(OPERATIONS)}")
        self._failures[operation] = times

    def _maybe_fail(self, operation: str) -> None:
        left = self._failures.get(operation, 0)
        if left > 0:
            self._failures[operation] = left - 1
            raise BackendError(f"the store is unavailable (memory backend told to fail {operation})")

    @property
    def location(self) -> str:
        return "memory"

    async def check(self) -> None:
        self._maybe_fail("check")

    async def put(self, key: str, source: Path, *, content_type: str) -> None:
        validate_key(key)
        self._maybe_fail("put")
        try:
            data = await asyncio.to_thread(Path(source).read_bytes)
        except OSError as exc:
            raise BackendError(f"cannot read the upload file: {exc.strerror or exc}") from exc
        self.blobs[key] = StoredBlob(data, content_type, self._now())
        Path(source).unlink(missing_ok=True)

    async def _open(self, key: str, start: int, end: int | None) -> Reader:
        self._maybe_fail("open")
        blob = self.blobs.get(key)
        if blob is None:
            raise BlobNotFound(key)
        first, last = clamp_range(len(blob.data), start, end)
        return _BytesReader(blob.data, first, last)

    async def size(self, key: str) -> int | None:
        validate_key(key)
        self._maybe_fail("size")
        blob = self.blobs.get(key)
        return None if blob is None else len(blob.data)

    async def delete(self, key: str) -> None:
        validate_key(key)
        self._maybe_fail("delete")
        self.blobs.pop(key, None)

    async def copy(self, source: str, target: str) -> None:
        validate_key(source)
        validate_key(target)
        self._maybe_fail("copy")
        blob = self.blobs.get(source)
        if blob is None:
            raise BlobNotFound(source)
        self.blobs[target] = StoredBlob(blob.data, blob.content_type, self._now())

    async def keys(self, prefix: str = "") -> AsyncIterator[tuple[str, datetime]]:
        validate_prefix(prefix)
        self._maybe_fail("keys")
        for key, blob in list(self.blobs.items()):
            if key.startswith(prefix):
                yield key, blob.modified

    async def close(self) -> None:
        if self._own_spool:
            shutil.rmtree(self.spool_dir, ignore_errors=True)


class _BytesReader:
    def __init__(self, data: bytes, start: int, end: int) -> None:
        self.size, self.start, self.end = len(data), start, end
        self._view: memoryview | None = memoryview(data)
        self._position = start

    async def read(self) -> bytes:
        if self._view is None or self._position > self.end:
            return b""
        stop = min(self._position + CHUNK_SIZE, self.end + 1)
        chunk = bytes(self._view[self._position : stop])
        self._position = stop
        return chunk

    async def aclose(self) -> None:
        self._view = None
