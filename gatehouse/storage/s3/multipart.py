"""S3 multipart uploads: parts staged as backend blobs, one object written at completion.

Each part is spooled and checked like an upload's body (the bucket's size limit, counting the
parts already staged), then put into the storage backend under a fresh ``<bucket>/<version>``
key, so it survives a restart; its row in ``gatehouse.s3_multipart_parts`` names the blob.
Completion streams the chosen parts, in order, through ``Objects.upload``: the bucket's size and
type rules, the image checks and RLS apply once, exactly as to any other upload, and the one
``storage.objects`` row is written as the caller. Parts that go (aborted, replaced, completed,
expired) have their blobs queued by trigger for the janitor, like an object's old bytes.

Only the principal that started an upload may continue it (another one gets ``NoSuchUpload``).
``MultipartJanitor`` deletes uploads left unfinished for ``storage_s3_multipart_expiry`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg

from gatehouse.core.background import Background
from gatehouse.core.db import Database
from gatehouse.core.errors import GatehouseError
from gatehouse.core.http import too_large
from gatehouse.storage import admission, names
from gatehouse.storage.backends.base import Backend
from gatehouse.storage.models import NewObject
from gatehouse.storage.objects import Objects
from gatehouse.storage.s3.errors import s3_error
from gatehouse.storage.upload import spool

log = logging.getLogger("gatehouse.storage.s3.multipart")

#: Every part but the last must be at least this large (S3's rule).
MIN_PART_SIZE = 5 * 1024 * 1024
MAX_PART_NUMBER = 10_000


@dataclass(frozen=True)
class Upload:
    id: str
    bucket_id: str
    name: str
    content_type: str | None
    cache_control: str | None


@dataclass(frozen=True)
class Part:
    number: int
    etag: str
    size: int
    version: str
    last_modified: Any


def no_such_upload() -> GatehouseError:
    return s3_error("NoSuchUpload", "The specified upload does not exist. The upload ID may be invalid, or the "
                    "upload may have been aborted or completed.", 404)


def part_number(value: str | None) -> int:
    if value is None or not value.isdigit() or not 1 <= int(value) <= MAX_PART_NUMBER:
        raise s3_error("InvalidArgument", f"Part number must be an integer between 1 and {MAX_PART_NUMBER}, inclusive", 400)
    return int(value)


class Multipart:
    def __init__(self, database: Database, backend: Backend, objects: Objects) -> None:
        self.db = database
        self.backend = backend
        self.objects = objects

    async def create(self, principal: str, bucket_id: str, name: str, content_type: str | None,
                     cache_control: str | None) -> str:
        names.object_name(name)
        bucket = await self.objects.buckets.current(bucket_id)
        admission.admit(bucket, self.objects.buckets.size_limit(bucket), None, content_type)
        upload_id = secrets.token_urlsafe(32)
        await self.db.admin.execute(
            "INSERT INTO gatehouse.s3_multipart_uploads (id, bucket_id, name, principal, content_type, cache_control) "
            "VALUES ($1, $2, $3, $4, $5, $6)", upload_id, bucket_id, name, principal, content_type, cache_control,
        )
        return upload_id

    async def find(self, principal: str, bucket_id: str, name: str, upload_id: str) -> Upload:
        row = await self.db.admin.fetchrow(
            "SELECT * FROM gatehouse.s3_multipart_uploads WHERE id = $1 AND bucket_id = $2 AND name = $3 "
            "AND principal = $4 AND NOT completing", upload_id, bucket_id, name, principal,
        )
        if row is None:
            raise no_such_upload()
        return Upload(row["id"], row["bucket_id"], row["name"], row["content_type"], row["cache_control"])

    async def put_part(self, principal: str, upload: Upload, number: int, stream: AsyncIterator[bytes],
                       content_length: int | None) -> str:
        """Stage one part (replacing an earlier one of the same number); its ETag."""
        bucket = await self.objects.buckets.current(upload.bucket_id)
        staged = await self.db.admin.fetchval(
            "SELECT coalesce(sum(size), 0) FROM gatehouse.s3_multipart_parts WHERE upload_id = $1 AND part_number <> $2",
            upload.id, number,
        )
        room = self.objects.buckets.size_limit(bucket) - int(staged)
        if room < 0 or (content_length is not None and content_length > room):
            raise too_large(self.objects.buckets.size_limit(bucket))
        spooled = await spool(stream, spool_dir=self.backend.spool_dir, content_type="application/octet-stream",
                              headers={}, limit=max(room, 0))
        key = f"{bucket.id}/{uuid.uuid4()}"
        etag = f'"{spooled.etag}"'
        try:
            await self.backend.put(key, spooled.path, content_type="application/octet-stream")
        finally:
            spooled.discard()
        try:
            written = await self.db.admin.fetchval(
                "INSERT INTO gatehouse.s3_multipart_parts (upload_id, part_number, bucket_id, version, etag, size) "
                "SELECT $1, $2, $3, $4, $5, $6 WHERE EXISTS (SELECT 1 FROM gatehouse.s3_multipart_uploads "
                "WHERE id = $1 AND principal = $7 AND NOT completing) "
                "ON CONFLICT (upload_id, part_number) DO UPDATE SET version = excluded.version, etag = excluded.etag, "
                "size = excluded.size, created_at = now() RETURNING 1",
                upload.id, number, bucket.id, key.split("/", 1)[1], etag, spooled.size, principal,
            )
        except asyncpg.ForeignKeyViolationError:
            written = None
        except BaseException:
            await self.backend.delete(key)
            raise
        if written is None:  # aborted or completing meanwhile
            await self.backend.delete(key)
            raise no_such_upload()
        return etag

    async def parts(self, upload: Upload, *, after: int = 0, limit: int = 1000) -> list[Part]:
        rows = await self.db.admin.fetch(
            "SELECT part_number, etag, size, version, created_at FROM gatehouse.s3_multipart_parts "
            "WHERE upload_id = $1 AND part_number > $2 ORDER BY part_number LIMIT $3", upload.id, after, limit,
        )
        return [Part(row["part_number"], row["etag"], row["size"], row["version"], row["created_at"]) for row in rows]

    async def uploads(self, principal: str, bucket_id: str, prefix: str, limit: int) -> list[tuple[str, str, Any]]:
        rows = await self.db.admin.fetch(
            "SELECT id, name, created_at FROM gatehouse.s3_multipart_uploads WHERE bucket_id = $1 AND principal = $2 "
            "AND starts_with(name, $3) AND NOT completing ORDER BY name COLLATE \"C\", created_at LIMIT $4",
            bucket_id, principal, prefix, limit,
        )
        return [(row["name"], row["id"], row["created_at"]) for row in rows]

    async def complete(self, claims: dict[str, Any], principal: str, upload: Upload,
                       chosen: list[tuple[int, str]]) -> tuple[NewObject, str]:
        """Write the object from the chosen parts, as the caller; (the new row, its ETag)."""
        claimed = await self.db.admin.fetchval(
            "UPDATE gatehouse.s3_multipart_uploads SET completing = true WHERE id = $1 AND principal = $2 "
            "AND NOT completing RETURNING 1", upload.id, principal,
        )
        if claimed is None:
            raise no_such_upload()
        done = False
        try:
            staged = {part.number: part for part in await self.parts(upload, limit=MAX_PART_NUMBER)}
            order = _checked(chosen, staged)
            digest: list[str] = []

            async def stream() -> AsyncIterator[bytes]:
                md5 = hashlib.md5()
                for part in order:
                    async for chunk in self.backend.open(f"{upload.bucket_id}/{part.version}"):
                        md5.update(chunk)
                        yield chunk
                digest.append(md5.hexdigest())

            headers = {"cache-control": upload.cache_control} if upload.cache_control else {}
            new = await self.objects.upload(
                claims, upload.bucket_id, upload.name, stream(), content_type=upload.content_type,
                content_length=sum(part.size for part in order), headers=headers, upsert=True,
            )
            done = True
        finally:
            if done:
                await self.db.admin.execute("DELETE FROM gatehouse.s3_multipart_uploads WHERE id = $1", upload.id)
            else:  # refused or failed: the client may correct itself and try again
                with contextlib.suppress(asyncpg.PostgresError, OSError):
                    await self.db.admin.execute(
                        "UPDATE gatehouse.s3_multipart_uploads SET completing = false WHERE id = $1", upload.id
                    )
        return new, f'"{digest[0]}"'

    async def abort(self, principal: str, bucket_id: str, name: str, upload_id: str) -> None:
        gone = await self.db.admin.fetchval(
            "DELETE FROM gatehouse.s3_multipart_uploads WHERE id = $1 AND bucket_id = $2 AND name = $3 "
            "AND principal = $4 RETURNING 1", upload_id, bucket_id, name, principal,
        )
        if gone is None:
            raise no_such_upload()


def _checked(chosen: list[tuple[int, str]], staged: dict[int, Part]) -> list[Part]:
    """The parts a CompleteMultipartUpload names, checked as S3 checks them."""
    if not chosen:
        raise s3_error("MalformedXML", "The XML you provided was not well-formed: no Part was given", 400)
    order: list[Part] = []
    previous = 0
    for number, etag in chosen:
        if number <= previous:
            raise s3_error("InvalidPartOrder", "The list of parts was not in ascending order. The parts list must be "
                           "specified in order by part number.", 400)
        previous = number
        part = staged.get(number)
        if part is None or part.etag.strip('"') != etag.strip().strip('"'):
            raise s3_error("InvalidPart", "One or more of the specified parts could not be found. The part may not "
                           "have been uploaded, or the specified entity tag may not match the part's entity tag.", 400)
        order.append(part)
    for part in order[:-1]:
        if part.size < MIN_PART_SIZE:
            raise s3_error("EntityTooSmall", "Your proposed upload is smaller than the minimum allowed object size.", 400)
    return order


class MultipartJanitor(Background):
    """Deletes multipart uploads unfinished after ``expiry`` seconds (their parts' blobs are queued)."""

    task_name = "gatehouse-s3-multipart-janitor"

    def __init__(self, pool: asyncpg.Pool, *, expiry: float, interval: float = 300.0) -> None:
        self._pool = pool
        self._expiry = expiry
        self._interval = interval

    async def sweep(self) -> int:
        """Delete expired uploads; a completion in progress gets twice as long. How many went."""
        gone = await self._pool.fetch(
            "DELETE FROM gatehouse.s3_multipart_uploads WHERE created_at < now() - make_interval(secs => $1) "
            "AND (NOT completing OR created_at < now() - make_interval(secs => $1 * 2)) RETURNING id",
            float(self._expiry),
        )
        if gone:
            log.info("deleted %d abandoned multipart uploads", len(gone))
        return len(gone)

    async def _run(self) -> None:
        while True:
            try:
                await self.sweep()
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("sweeping abandoned multipart uploads failed, will retry: %s", exc)
            await asyncio.sleep(self._interval)
