"""What every blob store speaks: opaque keys in, bytes out, two errors.

Keys have one shape, ``"<bucket_id>/<version_uuid>"`` (``keys.py``), checked by every backend
method. Backends raise ``BlobNotFound`` when a key is absent, ``InvalidRange`` when a byte range
lies past the end, and ``BackendError`` when the store itself failed (disk, network,
credentials); each backend translates its library's exceptions at its own boundary, so callers
never see an ``OSError`` or a botocore error.

Backups reach the bytes through the same interface (``stage``, ``adopt``, ``keys``): only the
backends know where and how they keep them.
"""

from __future__ import annotations

import abc
import asyncio
import os
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self

from gatehouse.core.errors import GatehouseError
from gatehouse.storage.backends.keys import is_key, split_key, validate_key, validate_prefix
from gatehouse.storage.backends.staging import Staging

__all__ = [
    "CHUNK_SIZE",
    "Backend",
    "BackendError",
    "BlobNotFound",
    "BlobStream",
    "InvalidRange",
    "LocalFile",
    "Reader",
    "Staging",
    "check_range",
    "clamp_range",
    "is_key",
    "split_key",
    "validate_key",
    "validate_prefix",
]

#: Bytes per chunk that ``open`` yields (at most).
CHUNK_SIZE = 64 * 1024

class BlobNotFound(GatehouseError):
    """No blob is stored under the key."""

    def __init__(self, key: str) -> None:
        super().__init__("NoSuchKey", "Object not found", status=404)
        self.key = key


class InvalidRange(GatehouseError):
    """The requested byte range starts past the end of the blob (HTTP 416)."""

    def __init__(self, size: int | None) -> None:
        super().__init__("InvalidRange", "The requested range is not satisfiable", status=416)
        self.size = size


class BackendError(GatehouseError):
    """The store failed: the message says what (never with credentials); the cause stays in the log."""

    def __init__(self, message: str) -> None:
        super().__init__("StorageBackendError", message, status=503)


def check_range(start: int, end: int | None) -> None:
    """Refuse a malformed range (a caller's bug); an unsatisfiable one is ``InvalidRange`` later."""
    if start < 0 or (end is not None and end < start):
        raise ValueError(f"invalid byte range {start}-{'' if end is None else end}")


def clamp_range(size: int, start: int, end: int | None) -> tuple[int, int]:
    """The inclusive range actually served, as HTTP does: ``end`` past the blob is cut to its last byte.

    A whole-blob read (``0-``) of an empty blob is fine and serves nothing (``end == -1``);
    any other range that starts at or past the end is ``InvalidRange``.
    """
    if start == 0 and end is None:
        return 0, size - 1
    if start >= size:
        raise InvalidRange(size)
    return start, size - 1 if end is None else min(end, size - 1)


@dataclass(frozen=True)
class LocalFile:
    """A blob opened on this machine's disk for sending: its descriptor (the receiver closes it)."""

    fd: int
    size: int
    path: str


class Reader(Protocol):
    """An opened blob, as a backend hands it to ``BlobStream``."""

    size: int
    start: int
    end: int

    async def read(self) -> bytes:
        """The next chunk (at most ``CHUNK_SIZE`` bytes); ``b""`` at the end of the range."""
        ...

    async def aclose(self) -> None: ...


class BlobStream:
    """What ``Backend.open`` returns: the bytes of one range, in chunks.

    Use it either way::

        stream = await backend.open(key, start, end)   # BlobNotFound / InvalidRange raised here,
        async with stream:                             # before any response header is sent
            async for chunk in stream: ...

        async for chunk in backend.open(key): ...      # opens on the first iteration

    Once opened, ``size`` is the whole blob's size and ``start``/``end`` the inclusive range
    served (HTTP's ``Content-Range: bytes start-end/size``; ``end == -1`` for an empty blob).
    The stream closes itself when exhausted or when reading fails; a consumer that stops early
    should ``aclose()`` it (or use ``async with``) to release the file or the connection at
    once. One merely dropped (Starlette's StreamingResponse, when the client goes away, never
    closes its iterator) releases them when it is garbage-collected.
    """

    def __init__(self, opener: Callable[[], Awaitable[Reader]]) -> None:
        self._opener: Callable[[], Awaitable[Reader]] | None = opener
        self._reader: Reader | None = None
        self._range: tuple[int, int, int] | None = None  # size, start, end: kept after closing
        self._closed = False

    @property
    def size(self) -> int:
        return self._served()[0]

    @property
    def start(self) -> int:
        return self._served()[1]

    @property
    def end(self) -> int:
        return self._served()[2]

    @property
    def length(self) -> int:
        """Bytes this stream yields in all."""
        _, start, end = self._served()
        return end - start + 1

    def _served(self) -> tuple[int, int, int]:
        if self._range is None:
            raise RuntimeError("the blob stream is not opened yet: await it first")
        return self._range

    async def _open(self) -> BlobStream:
        if self._closed:
            raise RuntimeError("the blob stream is closed")
        if self._reader is None:
            opener, self._opener = self._opener, None
            if opener is None:
                raise RuntimeError("the blob stream is already being opened")
            try:
                self._reader = reader = await opener()
                self._range = (reader.size, reader.start, reader.end)
            except BaseException:
                self._closed = True  # a failed open is final: iterating again yields nothing
                raise
        return self

    def __await__(self) -> Generator[Any, None, BlobStream]:
        return self._open().__await__()

    def __aiter__(self) -> BlobStream:
        return self

    async def __anext__(self) -> bytes:
        if self._closed:
            raise StopAsyncIteration
        await self._open()
        assert self._reader is not None
        try:
            chunk = await self._reader.read()
        except BaseException:
            await self.aclose()
            raise
        if not chunk:
            await self.aclose()
            raise StopAsyncIteration
        return chunk

    async def aclose(self) -> None:
        self._closed = True
        self._opener = None
        reader, self._reader = self._reader, None
        if reader is not None:
            await reader.aclose()

    async def __aenter__(self) -> Self:
        await self._open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


class Backend(abc.ABC):
    """A blob store. Keys are ``"<bucket_id>/<version uuid>"``; blobs are immutable once put.

    ``spool_dir`` is where the service writes an upload before calling ``put``: on the local
    backend it shares a filesystem with the blobs, so ``put`` is an atomic rename.
    """

    spool_dir: Path

    def __init__(self, spool_dir: Path) -> None:
        self.spool_dir = Path(spool_dir)
        try:
            self.spool_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise BackendError(f"cannot create the upload folder {self.spool_dir}: {exc.strerror or exc}") from exc

    @abc.abstractmethod
    async def put(self, key: str, source: Path, *, content_type: str) -> None:
        """Store the finished file ``source`` under ``key``, replacing any blob there.

        On success ``source`` is gone (moved or uploaded, then removed). On failure it is left
        where it was, and removing it is the caller's job.
        """

    def open(self, key: str, start: int = 0, end: int | None = None) -> BlobStream:
        """Bytes ``start`` to ``end`` inclusive (``None``: to the end), as HTTP ranges count.

        Raises ValueError for a bad key or range at once; ``BlobNotFound``, ``InvalidRange`` or
        ``BackendError`` when the stream is awaited or first iterated, before any byte.
        """
        validate_key(key)
        check_range(start, end)
        return BlobStream(lambda: self._open(key, start, end))

    @abc.abstractmethod
    async def _open(self, key: str, start: int, end: int | None) -> Reader:
        """Open the blob positioned at the range; raise BlobNotFound / InvalidRange / BackendError."""

    @abc.abstractmethod
    async def size(self, key: str) -> int | None:
        """The blob's size in bytes; None if absent."""

    def local_path(self, key: str) -> Path | None:
        """A real file holding the blob, for zero-copy responses; None if absent or not on disk."""
        validate_key(key)
        return None

    def open_local(self, key: str) -> LocalFile | None:
        """The blob opened from this machine's disk, without a thread; None if absent or not on disk."""
        validate_key(key)
        return None

    @abc.abstractmethod
    async def delete(self, key: str) -> None:
        """Remove the blob; deleting an absent key is not an error."""

    async def delete_many(self, keys: list[str]) -> None:
        """Remove several blobs (the janitor's batches); a backend may do them in one go."""
        for key in keys:
            await self.delete(key)

    @abc.abstractmethod
    async def copy(self, source: str, target: str) -> None:
        """Store a copy of ``source`` under ``target``; BlobNotFound if ``source`` is absent."""

    @abc.abstractmethod
    def keys(self, prefix: str = "") -> AsyncIterator[tuple[str, datetime]]:
        """Every stored key starting with ``prefix``, with its modification time (UTC), in no set order.

        For the janitor's orphan sweep and a restore's check that the store is empty; never
        includes the spool, a staging folder or anything that is not a key.
        """

    @property
    def location(self) -> str:
        """Where the blobs are, for messages (a folder, an endpoint and bucket)."""
        return repr(self)

    def staging(self, purpose: str) -> Staging:
        """A new, empty private folder for a backup (``"backup"``) or a restore (``"restore"``) to hold blobs in."""
        folder = self.spool_dir / f".{purpose}-{secrets.token_hex(8)}"
        try:
            folder.mkdir(mode=0o700)
        except OSError as exc:
            raise BackendError(f"cannot create a staging folder in {self.spool_dir}: {exc.strerror or exc}") from exc
        return Staging(folder)

    async def stage(self, keys: Iterable[str]) -> Staging:
        """Take the blobs of ``keys`` out for a backup, into a new staging folder.

        Afterwards ``sources`` says where each blob can be read until ``discard()``, however
        long that takes, and ``missing`` lists the keys that have no blob. This copies each blob
        through ``open``; a backend that can pin blobs more cheaply (the local one hard-links
        them) does that instead.
        """
        staging = self.staging("backup")
        try:
            for key in keys:
                try:
                    stream = await self.open(key)
                except BlobNotFound:
                    staging.missing.append(key)
                    continue
                path = staging.path(key)
                async with stream:
                    with path.open("wb") as out:
                        async for chunk in stream:
                            await asyncio.to_thread(out.write, chunk)
                staging.sources[key] = path
        except OSError as exc:
            staging.discard()
            raise BackendError(f"cannot write the staging folder {staging.folder}: {exc.strerror or exc}") from exc
        except BaseException:
            staging.discard()
            raise
        return staging

    async def adopt(self, staging: Staging) -> None:
        """Store every blob of a restore's staging folder under its key; each file is moved or removed."""
        try:
            files = await asyncio.to_thread(lambda: list(staging.files()))
        except OSError as exc:
            raise BackendError(f"cannot read the staging folder {staging.folder}: {exc.strerror or exc}") from exc
        for key, path in files:
            await self.put(key, path, content_type="application/octet-stream")

    @abc.abstractmethod
    async def check(self) -> None:
        """Raise BackendError unless the store can be used now (start-up and health checks)."""

    async def sweep_spool(self, older_than: timedelta) -> int:
        """Delete files left in the spool by uploads that crashed, older than ``older_than``.

        Returns how many were deleted. Uploads still being written are younger than any sane
        ``older_than`` (use at least an hour: a slow client may take that long).
        """
        cutoff = time.time() - older_than.total_seconds()

        def sweep() -> int:
            count = 0
            with os.scandir(self.spool_dir) as entries:
                for entry in entries:
                    try:
                        if entry.is_file(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_mtime < cutoff:
                            os.unlink(entry.path)
                            count += 1
                    except FileNotFoundError:
                        continue  # finished (or swept) meanwhile
            return count

        try:
            return await asyncio.to_thread(sweep)
        except FileNotFoundError:
            return 0
        except OSError as exc:
            raise BackendError(f"cannot clean the upload folder {self.spool_dir}: {exc.strerror or exc}") from exc

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections and files; the backend is not used afterwards."""
