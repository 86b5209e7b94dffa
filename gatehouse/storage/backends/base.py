"""What every blob store speaks: opaque keys in, bytes out, two errors.

The storage service names each stored version ``"<bucket_id>/<version_uuid>"`` and nothing
else: no object name a user chose ever reaches a backend, so a key is checked against that one
shape (``validate_key``) by every backend method, and the local backend checks the resolved
path again. A key that fails is a bug upstream, hence ``ValueError`` and not a domain error.

Backends raise ``BlobNotFound`` when a key is absent, ``InvalidRange`` when a byte range lies
past the end, and ``BackendError`` when the store itself failed (disk, network, credentials);
each backend translates its library's exceptions at its own boundary, so callers never see an
``OSError`` or a botocore error.
"""

from __future__ import annotations

import abc
import asyncio
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self

from gatehouse.core.errors import GatehouseError

#: Bytes per chunk that ``open`` yields (at most).
CHUNK_SIZE = 64 * 1024

_BUCKET = r"[a-z0-9][a-z0-9._-]{0,62}"
_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_KEY = re.compile(rf"({_BUCKET})/({_UUID})")
_PREFIX = re.compile(rf"{_BUCKET}(/[0-9a-f-]{{0,36}})?")


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


def validate_key(key: str) -> str:
    """Return ``key`` if it is exactly ``"<bucket_id>/<version uuid>"``; raise ValueError otherwise.

    The uuid is the canonical lowercase form (``str(uuid.uuid4())``). As in supabase/storage's
    secure-path.ts the obvious escapes (NUL, absolute paths, ``..``) are named first; the strict
    pattern then refuses everything else, so a key is always two safe path components.
    """
    if not isinstance(key, str):
        raise TypeError(f"a storage key must be a string, not {type(key).__name__}")
    if "\0" in key:
        raise ValueError("a storage key must not contain NUL")
    if key.startswith(("/", "\\")):
        raise ValueError(f"a storage key must be relative: {key[:80]!r}")
    if ".." in key.replace("\\", "/").split("/"):
        raise ValueError(f"a storage key must not contain '..': {key[:80]!r}")
    if _KEY.fullmatch(key) is None:
        raise ValueError(f"a storage key must be '<bucket_id>/<version uuid>': {key[:80]!r}")
    return key


def validate_prefix(prefix: str) -> str:
    """A ``keys()`` filter: empty, or the start of a valid key (``"avatars/"``, ``"avatars/1f"``)."""
    if prefix == "":
        return prefix
    if not isinstance(prefix, str) or _PREFIX.fullmatch(prefix) is None:
        raise ValueError(f"a key prefix must be empty or start like '<bucket_id>/': {str(prefix)[:80]!r}")
    return prefix


def split_key(key: str) -> tuple[str, str]:
    """``(bucket_id, version)`` of a valid key."""
    match = _KEY.fullmatch(validate_key(key))
    assert match is not None
    return match.group(1), match.group(2)


def is_key(name: str) -> bool:
    return _KEY.fullmatch(name) is not None


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

        For the janitor's orphan sweep; never includes the spool or anything that is not a key.
        """

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


def create_backend(settings: Any) -> Backend:
    """The backend the settings name: ``storage_backend`` is ``"local"`` (default) or ``"s3"``.

    Settings are read with defaults so that this works with any settings object::

        storage_backend       "local" | "s3"           default "local"
        storage_dir           Path                     default data_dir / "storage" (S3: the spool only)
        s3_endpoint_url       str | None               default None (AWS)
        s3_bucket             str                      required for s3
        s3_region             str                      default "us-east-1"
        s3_access_key_id      str | None               default None (botocore's chain)
        s3_secret_access_key  str | None               default None
        s3_prefix             str                      default ""
        s3_force_path_style   bool                     default True
    """
    from gatehouse.core.config import ConfigError

    kind = str(getattr(settings, "storage_backend", None) or "local").strip().lower()
    storage_dir = getattr(settings, "storage_dir", None)
    if storage_dir is None:
        storage_dir = Path(getattr(settings, "data_dir", Path(".gatehouse"))) / "storage"
    storage_dir = Path(storage_dir).expanduser()
    if kind == "local":
        from gatehouse.storage.backends.local import LocalBackend

        return LocalBackend(storage_dir)
    if kind == "s3":
        from gatehouse.storage.backends.s3 import S3Backend

        bucket = getattr(settings, "s3_bucket", None)
        if not bucket:
            raise ConfigError("GATEHOUSE_S3_BUCKET is required when GATEHOUSE_STORAGE_BACKEND is s3")
        try:
            return S3Backend(
                endpoint_url=getattr(settings, "s3_endpoint_url", None) or None,
                bucket=str(bucket),
                region=getattr(settings, "s3_region", None) or "us-east-1",
                access_key_id=getattr(settings, "s3_access_key_id", None) or None,
                secret_access_key=_secret(getattr(settings, "s3_secret_access_key", None)),
                prefix=getattr(settings, "s3_prefix", None) or "",
                force_path_style=bool(getattr(settings, "s3_force_path_style", True)),
                spool_dir=storage_dir / ".spool",
            )
        except ValueError as exc:
            raise ConfigError(f"GATEHOUSE_S3_*: {exc}") from None
    raise ConfigError(f"GATEHOUSE_STORAGE_BACKEND must be local or s3, not {kind!r}")


def _secret(value: Any) -> str | None:
    """A plain string, or pydantic's SecretStr unwrapped."""
    if value is None:
        return None
    getter = getattr(value, "get_secret_value", None)
    return str(getter() if callable(getter) else value) or None
