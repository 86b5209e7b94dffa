"""Resumable uploads (TUS 1.0.0): the rules, with the state in PostgreSQL and the bytes in the backend.

An upload is declared first (bucket, name, length, type): the bucket must exist and the length
and type fit its rules, and the upload is bound to its creator (the same user, or without a user
the same role; anyone else is told it does not exist). Each acknowledged chunk is then a blob of
the storage backend (``put`` fsyncs on the local folder; S3 acknowledges a stored object) named by
a row of ``storage.resumable_parts`` written in the same statement that moves the offset on, so
a restart, or another process behind a load balancer, carries on where the last answer left it.
Only a chunk that matches the offset is kept: a concurrent or replayed one loses and is deleted.

The chunk that completes the upload is never recorded as a part: the parts and it are streamed
through ``Objects.upload``, the path of a normal upload, so the bucket's rules are checked again
and the row is written once, as the caller, with RLS deciding (``upsert`` from ``x-upsert``).
While that runs the upload holds a lease (``finishing_until``, renewed as it works), so no other
request adds to it or finishes it too; a killed process holds it only until the lease runs out.
A refusal (4xx) ends the upload, its parts queued for the janitor; a failure of the store or the
database (5xx) leaves it as it was, to be tried again. Idle uploads expire (``Upload-Expires``,
``GATEHOUSE_STORAGE_RESUMABLE_EXPIRY``) and :meth:`ResumableUploads.sweep` deletes them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import re
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from gatehouse.core.background import Background
from gatehouse.core.config import Settings
from gatehouse.core.db import Database
from gatehouse.core.errors import GatehouseError
from gatehouse.storage import admission, names
from gatehouse.storage.backends.base import CHUNK_SIZE, Backend, BlobNotFound
from gatehouse.storage.buckets import Buckets
from gatehouse.storage.errors import storage_error
from gatehouse.storage.objects import Objects

#: The least a chunk carries unless it completes the upload. Each acknowledged chunk is one blob
#: (a file and two fsyncs, or an S3 PUT) and one row, so this bounds an upload of the largest
#: allowed size to a few hundred of them; clients send 6 MiB chunks as Supabase's docs show.
MIN_CHUNK = 256 * 1024
#: Seconds the request that writes the finished object holds the upload, renewed every third.
FINISH_LEASE = 60
#: Longest upload id accepted: base64url of "<bucket>/<name>/<uuid>" for the longest names.
MAX_ID_LENGTH = 2048
_ID = re.compile(r"[A-Za-z0-9_-]+")

log = logging.getLogger("gatehouse.storage.resumable")

_COLUMNS = (
    "id, owner_role, owner_id, bucket_id, name, upload_length, upload_offset, upsert, content_type, cache_control, "
    "user_metadata, tus_metadata, expires_at, expires_at < now() AS expired, "
    "coalesce(finishing_until > now(), false) AS finishing"
)
_CREATE = (
    "INSERT INTO storage.resumable_uploads (id, owner_role, owner_id, bucket_id, name, upload_length, upsert, "
    "content_type, cache_control, user_metadata, tus_metadata, expires_at) "
    f"VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, now() + make_interval(secs => $12)) RETURNING {_COLUMNS}"
)
_FIND = f"SELECT {_COLUMNS} FROM storage.resumable_uploads WHERE id = $1"
#: One statement: the offset moves on and the part is recorded, only if the offset is still $2.
_ADD_PART = (
    "WITH u AS (UPDATE storage.resumable_uploads SET upload_offset = $2 + $3, "
    "expires_at = now() + make_interval(secs => $4) "
    "WHERE id = $1 AND upload_offset = $2 AND (finishing_until IS NULL OR finishing_until < now()) "
    "RETURNING id, bucket_id, expires_at), "
    "p AS (INSERT INTO storage.resumable_parts (version, upload_id, bucket_id, start_offset, size) "
    "SELECT $5, id, bucket_id, $2, $3 FROM u) SELECT expires_at FROM u"
)
_CLAIM = (
    "UPDATE storage.resumable_uploads SET finishing_until = now() + make_interval(secs => $3) "
    "WHERE id = $1 AND upload_offset = $2 AND (finishing_until IS NULL OR finishing_until < now()) RETURNING id"
)
_PARTS = (
    "SELECT bucket_id || '/' || version AS key, start_offset, size FROM storage.resumable_parts "
    "WHERE upload_id = $1 ORDER BY start_offset"
)
_TERMINATE = (
    "DELETE FROM storage.resumable_uploads WHERE id = $1 "
    "AND (finishing_until IS NULL OR finishing_until < now()) RETURNING id"
)
_SWEEP = (
    "DELETE FROM storage.resumable_uploads WHERE id IN (SELECT id FROM storage.resumable_uploads "
    "WHERE expires_at < now() AND (finishing_until IS NULL OR finishing_until < now()) "
    "ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED) RETURNING id"
)


@dataclass(frozen=True, slots=True)
class Declared:
    """What a creation request declares (``Upload-Length``, ``Upload-Metadata``, ``x-upsert``)."""

    bucket_id: str
    name: str
    length: int
    upsert: bool = False
    content_type: str | None = None
    cache_control: str | None = None
    user_metadata: dict[str, Any] | None = None
    #: The known keys as received, echoed by HEAD.
    tus_metadata: str = ""


@dataclass(frozen=True, slots=True)
class Upload:
    id: uuid.UUID
    bucket_id: str
    name: str
    length: int
    offset: int
    expires_at: datetime
    tus_metadata: str = ""
    #: The object was written and the upload is over.
    finished: bool = False

    @property
    def token(self) -> str:
        """The upload's id in its URL, as Supabase's: base64url of ``<bucket>/<name>/<uuid>``."""
        return base64.urlsafe_b64encode(f"{self.bucket_id}/{self.name}/{self.id}".encode()).decode().rstrip("=")


def parse_token(token: str) -> tuple[str, str, uuid.UUID]:
    """``(bucket_id, name, id)`` of an upload URL's last segment; 400 ``InvalidUploadId`` if it is none."""
    if not token or len(token) > MAX_ID_LENGTH or not _ID.fullmatch(token):
        raise invalid_upload_id()
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        raise invalid_upload_id() from None
    rest, _, version = text.rpartition("/")
    bucket_id, _, name = rest.partition("/")
    try:
        upload_id = uuid.UUID(version)
    except ValueError:
        raise invalid_upload_id() from None
    if str(upload_id) != version or not bucket_id or not name:
        raise invalid_upload_id()
    return bucket_id, name, upload_id


def invalid_upload_id() -> GatehouseError:
    return storage_error("InvalidUploadId", "Invalid upload id", 400)


def no_such_upload() -> GatehouseError:
    return storage_error("NoSuchUpload", "Upload not found", 404)


def offset_conflict(offset: int) -> GatehouseError:
    return storage_error("TusError", f"Upload-Offset conflict: the upload is at offset {offset}", 409)


def locked() -> GatehouseError:
    return storage_error("ResourceLocked", "The upload is being written by another request; try again", 423)


def past_length(remaining: int) -> GatehouseError:
    return storage_error("EntityTooLarge", f"The chunk goes past the upload's declared length ({remaining} bytes remain)", 413)


def _owner(claims: Mapping[str, Any]) -> tuple[str, str | None]:
    sub = claims.get("sub")
    return str(claims.get("role") or "anon"), str(sub) if sub else None


def _upload(row: asyncpg.Record, **changes: Any) -> Upload:
    values: dict[str, Any] = {
        "id": row["id"], "bucket_id": row["bucket_id"], "name": row["name"], "length": row["upload_length"],
        "offset": row["upload_offset"], "expires_at": row["expires_at"], "tus_metadata": row["tus_metadata"],
    }
    return Upload(**(values | changes))


class ResumableUploads:
    def __init__(self, database: Database, backend: Backend, settings: Settings, buckets: Buckets, objects: Objects) -> None:
        self.db = database
        self.backend = backend
        self.buckets = buckets
        self.objects = objects
        self.expiry = settings.storage_resumable_expiry

    async def create(self, claims: dict[str, Any], declared: Declared) -> Upload:
        """A new upload, once the bucket exists and takes the declared length and type."""
        names.bucket_id(declared.bucket_id)
        names.object_name(declared.name)
        await self.db.confirm_session(claims)
        bucket = await self.buckets.current(declared.bucket_id)
        admission.admit(bucket, self.buckets.size_limit(bucket), declared.length, declared.content_type)
        role, sub = _owner(claims)
        row = await self.db.admin.fetchrow(
            _CREATE, uuid.uuid4(), role, sub, declared.bucket_id, declared.name, declared.length, declared.upsert,
            declared.content_type, declared.cache_control, declared.user_metadata, declared.tus_metadata, self.expiry,
        )
        assert row is not None
        return _upload(row)

    async def find(self, claims: Mapping[str, Any], token: str) -> Upload:
        """The caller's own upload (404 for anyone else's, 410 once expired)."""
        return _upload(await self._row(claims, token))

    async def _row(self, claims: Mapping[str, Any], token: str) -> asyncpg.Record:
        bucket_id, name, upload_id = parse_token(token)
        row = await self.db.admin.fetchrow(_FIND, upload_id)
        if row is None or (row["bucket_id"], row["name"]) != (bucket_id, name):
            raise no_such_upload()
        if (row["owner_role"], row["owner_id"]) != _owner(claims):
            raise no_such_upload()  # another caller's: as if it did not exist
        if row["expired"]:
            raise storage_error("TusError", "The upload has expired", 410)
        return row

    async def append(
        self, claims: dict[str, Any], token: str, offset: int, body: AsyncIterator[bytes], content_length: int | None
    ) -> Upload:
        """Take a chunk at ``offset``: kept and acknowledged, or, if it completes the upload, the object written."""
        row = await self._row(claims, token)
        await self.db.confirm_session(claims)
        if row["finishing"]:
            raise locked()
        if offset != row["upload_offset"]:
            raise offset_conflict(row["upload_offset"])
        remaining = row["upload_length"] - offset
        if content_length is not None and content_length > remaining:
            raise past_length(remaining)
        path, size = await self._receive(body, remaining)
        try:
            if size == remaining:
                return await self._finish(claims, row, path)
            if size == 0:
                return _upload(row)
            if size < MIN_CHUNK:
                raise storage_error(
                    "InvalidRequest", f"A chunk that does not complete the upload must carry at least {MIN_CHUNK} bytes", 400
                )
            return await self._add_part(row, offset, path, size)
        finally:
            path.unlink(missing_ok=True)

    async def _receive(self, body: AsyncIterator[bytes], limit: int) -> tuple[Path, int]:
        """The chunk in a private temporary file; 413 as soon as it passes ``limit``."""
        path = self.backend.spool_dir / f"tus-{uuid.uuid4().hex}.part"
        size = 0
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                async for chunk in body:
                    size += len(chunk)
                    if size > limit:
                        raise past_length(limit)
                    out.write(chunk)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return path, size

    async def _add_part(self, row: asyncpg.Record, offset: int, path: Path, size: int) -> Upload:
        version = str(uuid.uuid4())
        key = f"{row['bucket_id']}/{version}"
        await self.backend.put(key, path, content_type="application/octet-stream")  # durable before it counts
        # If this statement's fate is unknown (a lost connection), the blob stays: the start-up
        # sweep keeps it if the part row was committed and deletes it if not.
        expires = await self.db.admin.fetchval(_ADD_PART, row["id"], offset, size, self.expiry, version)
        if expires is None:
            await self.backend.delete(key)
            raise await self._why_not(row["id"])
        return _upload(row, offset=offset + size, expires_at=expires)

    async def _why_not(self, upload_id: uuid.UUID) -> GatehouseError:
        """Why a chunk lost to another request: the upload went, is being finished, or moved on."""
        row = await self.db.admin.fetchrow(_FIND, upload_id)
        if row is None:
            return no_such_upload()
        if row["finishing"]:
            return locked()
        return offset_conflict(row["upload_offset"])

    async def _finish(self, claims: dict[str, Any], row: asyncpg.Record, last: Path) -> Upload:
        """Write the object from the parts and the last chunk, as a normal upload of them is written."""
        upload_id = row["id"]
        if await self.db.admin.fetchval(_CLAIM, upload_id, row["upload_offset"], FINISH_LEASE) is None:
            raise await self._why_not(upload_id)
        renewal = asyncio.create_task(self._renew(upload_id))
        try:
            parts = await self.db.admin.fetch(_PARTS, upload_id)
            headers = {}
            if row["cache_control"]:
                headers["cache-control"] = row["cache_control"]
            if row["user_metadata"] is not None:
                headers["x-metadata"] = base64.b64encode(orjson.dumps(row["user_metadata"])).decode()
            await self.objects.upload(
                claims, row["bucket_id"], row["name"], self._assembled(parts, row["upload_offset"], last),
                content_type=row["content_type"], content_length=row["upload_length"], headers=headers,
                upsert=row["upsert"],
            )
        except GatehouseError as exc:
            if exc.status >= 500:
                await self._release(upload_id)
            else:
                await self.db.admin.execute("DELETE FROM storage.resumable_uploads WHERE id = $1", upload_id)
            raise
        except BaseException:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._release(upload_id))
            raise
        finally:
            renewal.cancel()
        await self.db.admin.execute("DELETE FROM storage.resumable_uploads WHERE id = $1", upload_id)
        return _upload(row, offset=row["upload_length"], finished=True)

    async def _assembled(self, parts: list[asyncpg.Record], offset: int, last: Path) -> AsyncIterator[bytes]:
        """The upload's bytes: each part from the backend, in order, then the last chunk."""
        position = 0
        for part in parts:
            if part["start_offset"] != position:
                raise _damaged()
            try:
                stream = await self.backend.open(part["key"])
            except BlobNotFound:
                raise _damaged() from None
            async with stream:
                if stream.size != part["size"]:
                    raise _damaged()
                async for chunk in stream:
                    yield chunk
            position += part["size"]
        if position != offset:
            raise _damaged()
        with last.open("rb") as handle:
            while chunk := await asyncio.to_thread(handle.read, CHUNK_SIZE * 16):
                yield chunk

    async def _renew(self, upload_id: uuid.UUID) -> None:
        while True:
            await asyncio.sleep(FINISH_LEASE / 3)
            try:
                await self.db.admin.execute(
                    "UPDATE storage.resumable_uploads SET finishing_until = now() + make_interval(secs => $2) "
                    "WHERE id = $1", upload_id, FINISH_LEASE,
                )
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("could not renew the lease of resumable upload %s: %s", upload_id, exc)

    async def _release(self, upload_id: uuid.UUID) -> None:
        await self.db.admin.execute("UPDATE storage.resumable_uploads SET finishing_until = NULL WHERE id = $1", upload_id)

    async def terminate(self, claims: Mapping[str, Any], token: str) -> None:
        """End the caller's upload: its row goes now, its chunks through the janitor's queue."""
        row = await self._row(claims, token)
        if await self.db.admin.fetchval(_TERMINATE, row["id"]) is None:
            raise await self._why_not(row["id"])

    async def drop(self, upload: Upload) -> None:
        """Delete an upload whose creation failed after it was made (its client never learnt the URL)."""
        if not upload.finished:
            await self.db.admin.fetchval(_TERMINATE, upload.id)

    async def sweep(self, batch: int = 100) -> int:
        """Delete one batch of expired uploads (their chunks queued for the janitor); how many went."""
        return len(await self.db.admin.fetch(_SWEEP, batch))


def _damaged() -> GatehouseError:
    return storage_error("NoSuchUpload", "A stored chunk of this upload is missing; start the upload again", 410)


class Sweeper(Background):
    """Deletes expired uploads every ``interval`` seconds, in any number of processes (SKIP LOCKED);
    their chunks go through the janitor's queue."""

    task_name = "gatehouse-resumable-sweeper"

    def __init__(self, uploads: ResumableUploads, *, interval: float = 60.0) -> None:
        self._uploads = uploads
        self._interval = interval

    async def _run(self) -> None:
        while True:
            try:
                while await self._uploads.sweep() > 0:
                    pass
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("sweeping expired resumable uploads failed, will retry: %s", exc)
            await asyncio.sleep(self._interval)
