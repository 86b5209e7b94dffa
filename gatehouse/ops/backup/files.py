"""The stored files in a backup, taken out of the storage backend and put back through it.

Only the backend knows where and how it keeps the bytes. A backup asks it to stage the blobs a
snapshot names (``Backend.stage``; the local backend hard-links them beside its blobs, so they
stay readable however long the archive takes to write); a restore writes the archive's blobs
into a staging folder the backend made (``Backend.staging``) and hands it back once the
database is in (``Backend.adopt``; the local backend renames them into place). A backend's
failure becomes a BackupError here.

Only the local backend's files are copied: with S3 a backup refuses unless the files are left
out, and a restore of an archive that holds files refuses; the bucket is backed up with S3's
own tools.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterable
from typing import Any, TypeVar

from gatehouse.core.config import Settings
from gatehouse.ops.backup.errors import BackupError
from gatehouse.storage.backends import Backend, BackendError, Staging, create_backend

T = TypeVar("T")


def refuse_unless_copied(settings: Settings, *, restoring: bool) -> None:
    """Refuse to back up files into, or restore files from, an archive when the backend is not the local one."""
    if settings.storage_backend == "local":
        return
    if restoring:
        raise BackupError(
            "the archive holds stored files, but GATEHOUSE_STORAGE_BACKEND is s3: restore into the local "
            "backend and copy storage/blobs into the bucket with S3 tools"
        )
    raise BackupError(
        "the stored files are in S3 (GATEHOUSE_STORAGE_BACKEND=s3), which gatehouse backup does not copy: "
        "back the bucket up with S3's own tools (bucket versioning or replication, `aws s3 sync`) and run "
        "gatehouse backup --database-only for the database and the keys"
    )


def open_store(settings: Settings) -> Backend:
    """The backend the settings name (the local one makes its folder if it has none)."""
    try:
        return create_backend(settings)
    except BackendError as exc:
        raise BackupError(exc.message) from None


def open_local_store(settings: Settings) -> Backend | None:
    """The local backend, whose files a restore brings back; None for S3, whose bucket it leaves alone."""
    return open_store(settings) if settings.storage_backend == "local" else None


def close_store(store: Backend) -> None:
    asyncio.run(store.close())


async def stage(store: Backend, keys: Iterable[str]) -> Staging:
    """The blobs of ``keys`` held for the archive (``sources``), and the keys that have none (``missing``)."""
    try:
        return await store.stage(keys)
    except BackendError as exc:
        raise BackupError(exc.message) from None


def holds_files(store: Backend) -> bool:
    """True if the store holds any blob at all (a restore needs an empty one)."""

    async def any_key() -> bool:
        async for _ in store.keys():
            return True
        return False

    return _run(any_key())


def restore_staging(store: Backend) -> Staging:
    """An empty folder, the backend's choice, for the archive's blobs to wait in until the database is in."""
    try:
        return store.staging("restore")
    except BackendError as exc:
        raise BackupError(exc.message) from None


def adopt(store: Backend, staging: Staging) -> None:
    """Put the staged blobs into the store, under their keys."""
    _run(store.adopt(staging))


def _run(work: Coroutine[Any, Any, T]) -> T:
    try:
        return asyncio.run(work)
    except BackendError as exc:
        raise BackupError(exc.message) from None
