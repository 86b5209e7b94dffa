"""The storage rules: buckets, objects and signed URLs, with access decided by RLS.

Every object operation runs through ``Database.as_user`` with the caller's claims, so the
policies on ``storage.objects`` decide who may read, write, move and delete, exactly as in
Supabase. Bucket settings (public flag, size limit, allowed types) are configuration that the
service itself reads.

An upload is spooled to a temporary file first; then the bytes are moved into place under a
fresh version key, and one statement as the caller writes the row that points at them (RLS
checked). If the row is refused or cannot be written, the new bytes are deleted at once; if the
process dies in between, the janitor's start-up sweep deletes bytes no row names. Bytes a row
stopped pointing at are queued (by trigger) for the janitor.

Downloads, info and uploads take one database round trip. The statements that touch a caller's
rows go through ``Database.run_as``: role, claims and statement in one call. An upload is checked
against its bucket's limits while the body arrives, from a copy of the bucket this process
remembers; the copy only ever lets uploads through: a refusal is confirmed against a fresh read,
and the row's statement writes nothing if the settings changed (then the upload is checked again).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from PIL import Image

from gatehouse.core.config import Settings
from gatehouse.core.db import Database, is_unavailable, unavailable
from gatehouse.core.errors import GatehouseError
from gatehouse.core.keys import InvalidToken, JWTVerifier, KeySet
from gatehouse.core.ratelimit import RateLimited, RateLimiter
from gatehouse.storage import names
from gatehouse.storage.backends.base import Backend
from gatehouse.storage.errors import access_denied, bucket_not_found, invalid, not_found, storage_error
from gatehouse.storage.files import INLINE_LIMIT
from gatehouse.storage.media import safe_metadata
from gatehouse.storage.sniff import HEAD_BYTES, is_raster_image, mime_allowed, mime_matches, sniff_mime
from gatehouse.storage.upload import Spooled, spool, too_large

SORT_COLUMNS = {"name", "updated_at", "created_at", "last_accessed_at"}
log = logging.getLogger("gatehouse.storage")


@dataclass(frozen=True)
class Bucket:
    id: str
    name: str
    public: bool
    file_size_limit: int | None
    allowed_mime_types: list[str] | None
    #: Serve document types (HTML, SVG, XML, ...) inline rather than as attachments (0010).
    inline_documents: bool = False


@dataclass(frozen=True)
class StoredObject:
    id: uuid.UUID
    bucket_id: str
    name: str
    version: str
    metadata: dict[str, Any]
    user_metadata: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime
    last_accessed_at: datetime

    @property
    def key(self) -> str:
        return f"{self.bucket_id}/{self.version}"

    @property
    def size(self) -> int:
        return int(self.metadata.get("size", 0))

    @property
    def etag(self) -> str:
        return str(self.metadata.get("eTag", ""))


def _object(row: asyncpg.Record) -> StoredObject:
    return StoredObject(
        row["id"], row["bucket_id"], row["name"], row["version"], safe_metadata(row["metadata"] or {}),
        row["user_metadata"], row["created_at"], row["updated_at"], row["last_accessed_at"],
    )


def _object_from_json(row: dict[str, Any]) -> StoredObject:
    """An object from its row as ``to_jsonb`` renders it (the shape ``run_as`` returns)."""
    return StoredObject(
        uuid.UUID(row["id"]), row["bucket_id"], row["name"], row["version"], safe_metadata(row["metadata"] or {}),
        row["user_metadata"], datetime.fromisoformat(row["created_at"]), datetime.fromisoformat(row["updated_at"]),
        datetime.fromisoformat(row["last_accessed_at"]),
    )


#: The caller's view of one object, for ``run_as`` ($1: [bucket_id, name]): RLS decides.
_FIND = (
    "SELECT (SELECT to_jsonb(o) FROM storage.objects o WHERE o.bucket_id = $1->>0 AND o.name = $1->>1)::text, "
    "1::bigint, NULL::bigint"
)
#: Any object of a public bucket, with the bucket's flag ($1 bucket_id, $2 name): no RLS.
_FIND_PUBLIC = (
    "SELECT b.public, o.* FROM storage.buckets b "
    "LEFT JOIN storage.objects o ON o.bucket_id = b.id AND o.name = $2 WHERE b.id = $1"
)
#: A new object row, for ``run_as`` ($1: the values in column order, then the bucket settings the
#: upload was validated against); ``{conflict}``: the upsert clause. Written only if those settings
#: are still the bucket's (0009_upload_check.sql); the count says whether it was.
_INSERT = (
    "WITH o AS (INSERT INTO storage.objects (bucket_id, name, owner, owner_id, metadata, user_metadata, version) "
    "SELECT $1->>0, $1->>1, ($1->>2)::uuid, $1->>3, $1->4, nullif($1->5, 'null'::jsonb), $1->>6 "
    "WHERE storage.bucket_unchanged($1->>0, ($1->>7)::bigint, "
    "CASE WHEN jsonb_typeof($1->8) = 'array' THEN ARRAY(SELECT jsonb_array_elements_text($1->8)) END)"
    "{conflict} RETURNING id) SELECT (SELECT id::text FROM o), (SELECT count(*) FROM o), NULL::bigint"
)
_UPSERT = (
    " ON CONFLICT (bucket_id, name) DO UPDATE SET version = excluded.version, metadata = excluded.metadata, "
    "user_metadata = excluded.user_metadata, owner = excluded.owner, owner_id = excluded.owner_id, "
    "updated_at = now(), last_accessed_at = now()"
)


def _translate(error: asyncpg.PostgresError) -> GatehouseError:
    if is_unavailable(error):
        return unavailable()
    if (error.sqlstate or "").startswith("22"):  # data the database cannot take: NUL, overflow, bad text
        return invalid(f"Invalid input: {error.message}")
    if isinstance(error, asyncpg.UniqueViolationError):
        return storage_error("KeyAlreadyExists", "The resource already exists", 409)
    if isinstance(error, asyncpg.InsufficientPrivilegeError):
        return access_denied(error.message)
    if isinstance(error, asyncpg.ForeignKeyViolationError):
        return bucket_not_found()
    if isinstance(error, asyncpg.CheckViolationError):
        return invalid(f"Invalid input: {error.message}")
    log.error("storage request failed in the database", exc_info=error)
    return storage_error("DatabaseError", "the database refused the request; the server log has the details", 500)


def object_json(obj: StoredObject) -> dict[str, Any]:
    return {
        "id": str(obj.id), "name": obj.name, "bucket_id": obj.bucket_id, "owner": None, "version": obj.version,
        "metadata": obj.metadata, "user_metadata": obj.user_metadata, "created_at": obj.created_at.isoformat(),
        "updated_at": obj.updated_at.isoformat(), "last_accessed_at": obj.last_accessed_at.isoformat(),
    }


class StorageService:
    def __init__(self, database: Database, backend: Backend, settings: Settings, keys: KeySet) -> None:
        self.db = database
        self.backend = backend
        self.settings = settings
        self.keys = keys
        self.verifier = JWTVerifier(keys, audiences=frozenset({"storage"}))
        #: Buckets as last read, by id: a hint that saves uploads a round trip (see _upload_bucket).
        self._remembered: dict[str, Bucket] = {}
        self.limiter = RateLimiter(settings)

    # -- buckets as configuration ----------------------------------------------------------------

    async def bucket(self, bucket_id: str) -> Bucket:
        """The bucket as the database has it now (and remembered, as a hint for uploads)."""
        names.bucket_id(bucket_id)
        row = await self.db.admin.fetchrow(
            "SELECT id, name, public, file_size_limit, allowed_mime_types, inline_documents FROM storage.buckets "
            "WHERE id = $1", bucket_id
        )
        if row is None:
            self._remembered.pop(bucket_id, None)
            raise bucket_not_found()
        bucket = Bucket(row["id"], row["name"], row["public"], row["file_size_limit"], row["allowed_mime_types"],
                        row["inline_documents"])
        self._remembered[bucket.id] = bucket
        return bucket

    async def _upload_bucket(self, bucket_id: str) -> tuple[Bucket, bool]:
        """The bucket for an upload and whether it is fresh: a remembered copy saves a round trip.

        A remembered copy may be stale (another process changed the bucket). It is only ever
        trusted to let an upload through: a refusal is confirmed against a fresh read, and the
        statement that writes the row checks that the settings are still the bucket's.
        """
        names.bucket_id(bucket_id)
        remembered = self._remembered.get(bucket_id)
        if remembered is not None:
            return remembered, False
        return await self.bucket(bucket_id), True

    def _limit(self, bucket: Bucket) -> int:
        return min(bucket.file_size_limit or self.settings.storage_max_file_size, self.settings.storage_max_file_size)

    def _admit(self, bucket: Bucket, content_length: int | None, content_type: str | None) -> int:
        """Refuse a body by its headers before reading it; the size limit to stream under."""
        limit = self._limit(bucket)
        if content_length is not None and content_length > limit:
            raise too_large(limit)
        raw_type = (content_type or "").split(";")[0].strip().lower()
        if raw_type and raw_type != "multipart/form-data" and not mime_allowed(raw_type, bucket.allowed_mime_types):
            raise _bad_type(raw_type)
        return limit

    # -- objects -------------------------------------------------------------------------------

    async def upload(
        self,
        claims: dict[str, Any],
        bucket_id: str,
        name: str,
        stream: AsyncIterator[bytes],
        *,
        content_type: str | None,
        content_length: int | None,
        headers: dict[str, str],
        upsert: bool,
    ) -> dict[str, str]:
        names.object_name(name)
        bucket, fresh = await self._upload_bucket(bucket_id)
        try:
            limit = self._admit(bucket, content_length, content_type)
        except GatehouseError:
            if fresh:
                raise
            bucket, fresh = await self.bucket(bucket_id), True  # refused on a remembered copy: ask again
            limit = self._admit(bucket, content_length, content_type)

        async def limit_now() -> int:
            nonlocal bucket, fresh
            bucket, fresh = await self.bucket(bucket_id), True
            return self._limit(bucket)

        spooled = await spool(stream, spool_dir=self.backend.spool_dir, content_type=content_type, headers=headers,
                              limit=limit, hard_limit=self.settings.storage_max_file_size,
                              recheck=None if fresh else limit_now)
        placed: str | None = None  # the key of the bytes once moved into place, until a row points at them
        try:
            verified = False
            for _ in range(2):
                try:
                    allowed = self._limit(bucket)
                    if spooled.size > allowed:
                        raise too_large(allowed)
                    mimetype = self._check_type(spooled, bucket)
                except GatehouseError:
                    if fresh:
                        raise
                    bucket, fresh = await self.bucket(bucket_id), True
                    continue
                if is_raster_image(mimetype) and not verified:
                    if spooled.size <= INLINE_LIMIT:  # a tenth of a millisecond: less than a thread hop
                        _verify_image(spooled.path, mimetype)
                    else:
                        await asyncio.to_thread(_verify_image, spooled.path, mimetype)
                    verified = True
                if placed is None:
                    placed = f"{bucket.id}/{uuid.uuid4()}"
                    await self.backend.put(placed, spooled.path, content_type=mimetype)
                try:
                    stored = await self._write_row(claims, bucket, name, spooled, mimetype, upsert, placed)
                except asyncpg.PostgresError as exc:
                    if is_unavailable(exc):
                        placed = None  # the row may have been committed: the bytes stay for the sweep to judge
                    raise _translate(exc) from None
                except GatehouseError:
                    raise  # refused before the statement was sent: the bytes go
                except BaseException:
                    placed = None  # a lost connection (or a cancel): the database may have the row
                    raise
                if stored is not None:
                    placed = None
                    return stored
                bucket, fresh = await self.bucket(bucket_id), True  # changed since it was read: again
            raise _bucket_changed()
        finally:
            spooled.discard()
            if placed is not None:
                await self.backend.delete(placed)  # refused: no row points at them

    def _check_type(self, spooled: Spooled, bucket: Bucket) -> str:
        sniffed = sniff_mime(spooled.head)
        mimetype = spooled.content_type or sniffed or "application/octet-stream"
        if mimetype == "text/plain" and sniffed:  # supabase-py's default part type for any file
            mimetype = sniffed
        if not mime_allowed(mimetype, bucket.allowed_mime_types):
            raise _bad_type(mimetype)
        if mimetype.startswith("image/") and not mime_matches(mimetype, sniffed):
            raise storage_error(
                "InvalidMimeType", f"the file's bytes are not a {mimetype} image (they look like {sniffed or 'something else'})", 415
            )
        return mimetype

    async def _write_row(
        self, claims: dict[str, Any], bucket: Bucket, name: str, spooled: Spooled, mimetype: str, upsert: bool,
        key: str,
    ) -> dict[str, str] | None:
        """Write the row pointing at the bytes under ``key``, as the caller (RLS decides).

        None if the bucket's settings are no longer those the upload was validated against.
        """
        metadata = {
            "eTag": f'"{spooled.etag}"', "size": spooled.size, "mimetype": mimetype,
            "cacheControl": spooled.cache_control or "no-cache", "lastModified": datetime.now(UTC).isoformat(),
            "contentLength": spooled.size, "httpStatusCode": 200,
        }
        owner = _owner(claims)
        values = [bucket.id, name, str(owner) if owner else None, str(owner) if owner else None, metadata,
                  spooled.user_metadata, key.split("/", 1)[1], bucket.file_size_limit, bucket.allowed_mime_types]
        result = await self.db.run_as(claims, _INSERT.format(conflict=_UPSERT if upsert else ""), values)
        if result.page_count == 0:
            return None
        return {"Id": str(result.body), "Key": f"{bucket.id}/{name}"}

    async def find(self, claims: dict[str, Any] | None, bucket_id: str, name: str, *, public: bool = False) -> StoredObject:
        """An object the caller may read (public: any object of a public bucket, no RLS)."""
        names.object_name(name)
        names.bucket_id(bucket_id)
        if public:
            row = await self.db.admin.fetchrow(_FIND_PUBLIC, bucket_id, name)
            if row is None:
                raise bucket_not_found()
            if not row["public"] or row["id"] is None:
                raise not_found()
            return _object(row)
        try:
            result = await self.db.run_as(claims, _FIND, [bucket_id, name], readonly=True)
        except asyncpg.PostgresError as exc:
            raise _translate(exc) from None
        if result.body is None:
            raise not_found()
        return _object_from_json(orjson.loads(result.body))

    async def list(self, claims: dict[str, Any], bucket_id: str, options: dict[str, Any]) -> list[dict[str, Any]]:
        """Files and folders directly under ``prefix`` (folders have null id and dates)."""
        names.bucket_id(bucket_id)
        prefix = options.get("prefix", "")
        if not isinstance(prefix, str):
            raise invalid("prefix must be a string")
        prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        limit = _int_option(options, "limit", 100, 1, 1000)
        offset = _int_option(options, "offset", 0, 0, 10**9)
        search = options.get("search") or ""
        if not isinstance(search, str):
            raise invalid("search must be a string")
        sort = options.get("sortBy") or {}
        column = sort.get("column", "name") if isinstance(sort, dict) else "name"
        order = sort.get("order", "asc") if isinstance(sort, dict) else "asc"
        order = order.lower() if isinstance(order, str) else order
        if not isinstance(column, str) or column not in SORT_COLUMNS or order not in ("asc", "desc"):
            raise invalid("sortBy.column must be name, updated_at, created_at or last_accessed_at; order asc or desc")
        direction = "DESC" if order == "desc" else "ASC"
        sql = f"""
            WITH items AS (
                SELECT split_part(substr(name, char_length($2) + 1), '/', 1) AS item,
                       strpos(substr(name, char_length($2) + 1), '/') > 0 AS is_folder,
                       id, updated_at, created_at, last_accessed_at, metadata
                FROM storage.objects
                WHERE bucket_id = $1 AND starts_with(name, $2)
            ), entries AS (
                SELECT DISTINCT ON (item, is_folder) item AS name, is_folder,
                       CASE WHEN is_folder THEN NULL ELSE id END AS id,
                       CASE WHEN is_folder THEN NULL ELSE updated_at END AS updated_at,
                       CASE WHEN is_folder THEN NULL ELSE created_at END AS created_at,
                       CASE WHEN is_folder THEN NULL ELSE last_accessed_at END AS last_accessed_at,
                       CASE WHEN is_folder THEN NULL ELSE metadata END AS metadata
                FROM items WHERE item <> '' AND starts_with(lower(item), lower($3))
                ORDER BY item, is_folder
            )
            SELECT name, id, updated_at, created_at, last_accessed_at, metadata FROM entries
            ORDER BY is_folder DESC, {column} {direction} NULLS FIRST, name
            LIMIT $4 OFFSET $5
        """
        try:
            async with self.db.as_user(claims, readonly=True) as conn:
                rows = await conn.fetch(sql, bucket_id, prefix, search, limit, offset)
        except asyncpg.PostgresError as exc:
            raise _translate(exc) from None
        return [
            {
                "name": row["name"], "id": str(row["id"]) if row["id"] else None,
                "updated_at": _iso(row["updated_at"]), "created_at": _iso(row["created_at"]),
                "last_accessed_at": _iso(row["last_accessed_at"]), "metadata": row["metadata"],
            }
            for row in rows
        ]

    async def remove(self, claims: dict[str, Any], bucket_id: str, prefixes: list[str]) -> list[dict[str, Any]]:
        """Delete the named objects the caller may delete; others are skipped silently."""
        names.bucket_id(bucket_id)
        for name in prefixes:
            names.object_name(name)
        try:
            async with self.db.as_user(claims) as conn:
                rows = await conn.fetch(
                    "DELETE FROM storage.objects WHERE bucket_id = $1 AND name = ANY($2::text[]) RETURNING *",
                    bucket_id, prefixes,
                )
        except asyncpg.PostgresError as exc:
            raise _translate(exc) from None
        return [object_json(_object(row)) for row in rows]

    async def move(self, claims: dict[str, Any], bucket_id: str, source: str, target_bucket: str, target: str) -> None:
        """Rename an object, into another bucket if asked, checked as an upload to the target would be.

        The target bucket's size and type rules apply (:meth:`_admit_stored`), and the caller must
        be allowed to create the target (the INSERT policies, tried and rolled back) as well as to
        update the object (the UPDATE policies): a refusal changes nothing.
        """
        names.bucket_id(bucket_id)
        names.object_name(source)
        names.object_name(target)
        bucket = await self.bucket(target_bucket)
        new_version = str(uuid.uuid4())
        copied = False
        try:
            async with self.db.as_user(claims) as conn:
                row = await conn.fetchrow(
                    "SELECT * FROM storage.objects WHERE bucket_id = $1 AND name = $2 FOR UPDATE", bucket_id, source
                )
                if row is None:
                    raise not_found()
                original = _object(row)
                metadata = await self._admit_stored(original, bucket)
                owner = _owner(claims)
                if (target_bucket, target) != (bucket_id, source):  # onto itself: the UPDATE's policies decide
                    await _may_create(conn, bucket.id, target, owner, metadata, original.user_metadata, new_version)
                version = original.version
                if target_bucket != bucket_id:  # bytes are keyed by bucket: copy them over first
                    await self.backend.copy(original.key, f"{target_bucket}/{new_version}")
                    copied, version = True, new_version
                moved = await conn.fetchval(
                    "UPDATE storage.objects SET bucket_id = $3, name = $4, version = $5, owner = coalesce($6, owner), "
                    "owner_id = coalesce($6::text, owner_id), metadata = $7, updated_at = now() "
                    "WHERE bucket_id = $1 AND name = $2 AND storage.bucket_unchanged($3, $8, $9) RETURNING id",
                    bucket_id, source, target_bucket, target, version, owner, metadata,
                    bucket.file_size_limit, bucket.allowed_mime_types,
                )
                if moved is None:
                    if not await conn.fetchval("SELECT storage.bucket_unchanged($1, $2, $3)", bucket.id,
                                               bucket.file_size_limit, bucket.allowed_mime_types):
                        raise _bucket_changed()
                    raise access_denied("you may not move this object")
            copied = False
        except asyncpg.PostgresError as exc:
            raise _translate(exc) from None
        finally:
            if copied:
                await self.backend.delete(f"{target_bucket}/{new_version}")

    async def copy(self, claims: dict[str, Any], bucket_id: str, source: str, target_bucket: str, target: str) -> dict[str, str]:
        """A new object with the source's bytes, checked as an upload of them to the target would be:
        the target bucket's size and type rules, then one statement as the caller (RLS decides)."""
        names.object_name(target)
        original = await self.find(claims, bucket_id, source)
        bucket = await self.bucket(target_bucket)
        metadata = await self._admit_stored(original, bucket)
        version = str(uuid.uuid4())
        key = f"{target_bucket}/{version}"
        await self.backend.copy(original.key, key)
        done = False
        try:
            owner = _owner(claims)
            values = [bucket.id, target, str(owner) if owner else None, str(owner) if owner else None, metadata,
                      original.user_metadata, version, bucket.file_size_limit, bucket.allowed_mime_types]
            try:
                result = await self.db.run_as(claims, _INSERT.format(conflict=""), values)
            except asyncpg.PostgresError as exc:
                if is_unavailable(exc):
                    done = True  # the row may have been committed: the bytes stay for the sweep to judge
                raise _translate(exc) from None
            except GatehouseError:
                raise  # refused before the statement was sent: the bytes go
            except BaseException:
                done = True  # a lost connection (or a cancel): the database may have the row
                raise
            if result.page_count == 0:
                raise _bucket_changed()
            done = True
        finally:
            if not done:
                await self.backend.delete(key)
        return {"Id": str(result.body), "Key": f"{target_bucket}/{target}"}

    async def _admit_stored(self, obj: StoredObject, bucket: Bucket) -> dict[str, Any]:
        """Check a stored object against ``bucket``'s rules as an upload of its bytes would be checked.

        Copy and move put bytes into a bucket without an upload, so they answer exactly as one
        would: 413 over the size limit, 415 for a type the bucket refuses or for bytes that are not
        the image they claim to be (the upload's own checks, run on the stored bytes). Nothing is
        written before this passes. Returns the metadata the new row gets.
        """
        size = await self.backend.size(obj.key)
        size = obj.size if size is None else size
        limit = self._limit(bucket)
        if size > limit:
            raise too_large(limit)
        declared = str(obj.metadata.get("mimetype") or "") or None
        if declared and not mime_allowed(declared, bucket.allowed_mime_types):
            raise _bad_type(declared)  # refused on the type alone: no need to read the bytes
        head = b""
        if size:
            async with self.backend.open(obj.key, 0, HEAD_BYTES - 1) as stream:
                async for chunk in stream:
                    head += chunk
        stored = Spooled(Path(obj.key), size, obj.etag.strip('"'), head, declared, None)  # the bytes as an upload
        mimetype = self._check_type(stored, bucket)
        if is_raster_image(mimetype):
            local = self.backend.local_path(obj.key)
            path = local if local is not None else await self.local_copy(obj)
            try:
                await asyncio.to_thread(_verify_image, path, mimetype)
            finally:
                if local is None:
                    path.unlink(missing_ok=True)
        return {**obj.metadata, "mimetype": mimetype, "size": size, "contentLength": size,
                "lastModified": datetime.now(UTC).isoformat()}

    async def local_copy(self, obj: StoredObject) -> Path:
        """A local file with the object's bytes (for image rendering): the blob itself when the
        backend is local, else a download into the spool folder that the caller owns."""
        local = self.backend.local_path(obj.key)
        if local is not None:
            return local
        target = self.backend.spool_dir / f"render-{uuid.uuid4().hex}.part"
        with target.open("wb") as handle:
            async for chunk in self.backend.open(obj.key):
                handle.write(chunk)
        return target

    # -- image renders ----------------------------------------------------------------------------

    def render_pixel_limit(self, claims: dict[str, Any] | None) -> int:
        """The largest source a caller may have rendered: anonymous callers and public or signed URLs
        (``claims`` None) get the lower limit; signed-in users and the service role the higher."""
        role = (claims or {}).get("role")
        if role in ("authenticated", "service_role"):
            return self.settings.storage_render_max_pixels
        return self.settings.storage_render_max_pixels_public

    async def count_render(self, claims: dict[str, Any] | None, address: str) -> None:
        """Count one new render (a cache miss) for a client address; over the limit, 429.

        The service role (trusted server code, often rendering for many users) is not counted.
        """
        if (claims or {}).get("role") == "service_role":
            return
        try:
            await self.limiter.hit(self.db.admin, f"render:ip:{address}", self.limiter.limits.render)
        except RateLimited as exc:
            raise GatehouseError(
                "SlowDown", f"Too many new image renders from this address; try again in {exc.retry_after} seconds",
                status=429, http_status=429, retry_after=exc.retry_after,
            ) from None

    # -- signed URLs ----------------------------------------------------------------------------

    def sign(self, purpose: str, bucket_id: str, name: str, expires_in: int, **extra: Any) -> str:
        now = int(time.time())
        return self.keys.sign({"aud": "storage", "purpose": purpose, "url": f"{bucket_id}/{name}", "iat": now,
                               "exp": now + expires_in, **extra})

    def sign_download(self, obj: StoredObject, expires_in: int, *, transform: dict[str, str] | None = None) -> str:
        """A download token for this version of the object: replacing the object (upsert, delete
        and upload again, a move onto its name) gives it a new version, which the token does not name.
        ``transform``: the image transformation a render with this token must use."""
        extra: dict[str, Any] = {"v": obj.version}
        if transform:
            extra["transform"] = transform
        return self.sign("storage.download", obj.bucket_id, obj.name, expires_in, **extra)

    async def signed_object(self, token: str, bucket_id: str, name: str) -> tuple[StoredObject, dict[str, Any]]:
        """The object a download token grants, if it is still the version the token was made for,
        and the token's claims.

        A signed URL is a capability: the object is read without the caller's RLS context.
        """
        grant = self.check_signed(token, "storage.download", bucket_id, name)
        obj = await self.find({"role": "service_role"}, bucket_id, name)
        if not hmac.compare_digest(str(grant.get("v", "")).encode(), obj.version.encode()):
            raise storage_error(
                "InvalidSignature",
                "the signed URL was made for an earlier version of this object; ask for a new one", 400,
            )
        return obj, grant

    def check_signed(self, token: str, purpose: str, bucket_id: str, name: str) -> dict[str, Any]:
        try:
            claims = self.verifier.verify(token)
        except InvalidToken as exc:
            if "expired" in str(exc):
                raise storage_error("ExpiredToken", "the signed URL has expired", 400) from None
            raise storage_error("InvalidSignature", f"the signed URL is not valid: {exc}", 400) from None
        if claims.get("purpose") != purpose or claims.get("aud") != "storage" or claims.get("url") != f"{bucket_id}/{name}":
            raise storage_error("InvalidSignature", "the signed URL does not match this object", 400)
        return claims

    # -- buckets API ----------------------------------------------------------------------------

    async def list_buckets(self, claims: dict[str, Any]) -> list[dict[str, Any]]:
        async with self.db.as_user(claims, readonly=True) as conn:
            rows = await conn.fetch("SELECT * FROM storage.buckets ORDER BY name")
        return [bucket_json(row) for row in rows]

    async def get_bucket(self, claims: dict[str, Any], bucket_id: str) -> dict[str, Any]:
        names.bucket_id(bucket_id)
        async with self.db.as_user(claims, readonly=True) as conn:
            row = await conn.fetchrow("SELECT * FROM storage.buckets WHERE id = $1", bucket_id)
        if row is None:
            raise bucket_not_found()
        return bucket_json(row)

    async def create_bucket(self, claims: dict[str, Any], body: dict[str, Any]) -> str:
        bucket_id = names.bucket_id(str(body.get("id") or body.get("name") or ""))
        try:
            async with self.db.as_user(claims) as conn:
                await conn.execute(
                    "INSERT INTO storage.buckets (id, name, owner, owner_id, public, file_size_limit, allowed_mime_types, "
                    "inline_documents) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    bucket_id, str(body.get("name") or bucket_id), _owner(claims), claims.get("sub"),
                    _bool(body.get("public", False)), _size_limit(body.get("file_size_limit")),
                    _mime_list(body.get("allowed_mime_types")),
                    _bool(body.get("inline_documents", False), "inline_documents"),
                )
        except asyncpg.UniqueViolationError:
            raise storage_error("BucketAlreadyExists", "The resource already exists", 409) from None
        except asyncpg.PostgresError as exc:
            raise _translate(exc) from None
        return bucket_id

    async def update_bucket(self, claims: dict[str, Any], bucket_id: str, body: dict[str, Any]) -> None:
        names.bucket_id(bucket_id)
        self._remembered.pop(bucket_id, None)
        if "public" in body and not isinstance(body["public"], bool | None):
            raise invalid("public must be true or false")
        if "inline_documents" in body and not isinstance(body["inline_documents"], bool | None):
            raise invalid("inline_documents must be true or false")
        try:
            async with self.db.as_user(claims) as conn:
                done = await conn.fetchval(
                    "UPDATE storage.buckets SET public = coalesce($2, public), "
                    "file_size_limit = CASE WHEN $5 THEN $3 ELSE file_size_limit END, "
                    "allowed_mime_types = CASE WHEN $6 THEN $4 ELSE allowed_mime_types END, "
                    "inline_documents = coalesce($7, inline_documents), updated_at = now() "
                    "WHERE id = $1 RETURNING id",
                    bucket_id, body.get("public"), _size_limit(body.get("file_size_limit")),
                    _mime_list(body.get("allowed_mime_types")), "file_size_limit" in body, "allowed_mime_types" in body,
                    body.get("inline_documents"),
                )
        except asyncpg.PostgresError as exc:
            raise _translate(exc) from None
        if done is None:
            raise bucket_not_found()

    async def empty_bucket(self, claims: dict[str, Any], bucket_id: str) -> None:
        await self.bucket(bucket_id)
        try:
            async with self.db.as_user(claims) as conn:
                await conn.execute("DELETE FROM storage.objects WHERE bucket_id = $1", bucket_id)
        except asyncpg.PostgresError as exc:
            raise _translate(exc) from None

    async def delete_bucket(self, claims: dict[str, Any], bucket_id: str) -> None:
        names.bucket_id(bucket_id)
        self._remembered.pop(bucket_id, None)
        try:
            async with self.db.as_user(claims) as conn:
                if await conn.fetchval("SELECT EXISTS (SELECT 1 FROM storage.objects WHERE bucket_id = $1)", bucket_id):
                    raise storage_error("BucketNotEmpty", "The bucket you tried to delete is not empty", 409)
                done = await conn.fetchval("DELETE FROM storage.buckets WHERE id = $1 RETURNING id", bucket_id)
        except asyncpg.ForeignKeyViolationError:
            raise storage_error("BucketNotEmpty", "The bucket you tried to delete is not empty", 409) from None
        except asyncpg.PostgresError as exc:
            raise _translate(exc) from None
        if done is None:
            raise bucket_not_found()


def bucket_json(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": row["id"], "name": row["name"], "owner": str(row["owner"]) if row["owner"] else "",
        "public": row["public"], "file_size_limit": row["file_size_limit"],
        "allowed_mime_types": row["allowed_mime_types"], "inline_documents": row["inline_documents"],
        "created_at": row["created_at"].isoformat(),
        "updated_at": row["updated_at"].isoformat(),
    }


def _owner(claims: dict[str, Any] | None) -> uuid.UUID | None:
    if not claims or claims.get("role") != "authenticated":
        return None
    try:
        return uuid.UUID(str(claims.get("sub")))
    except ValueError:
        return None


def _verify_image(path: Path, mimetype: str) -> None:
    """Refuse an "image" whose structure does not decode (a valid signature followed by junk)."""
    try:
        with Image.open(path) as image:
            image.verify()
    except Exception:  # noqa: BLE001 - Pillow raises many kinds for broken files
        raise storage_error("InvalidMimeType", f"the file is not a valid {mimetype} image", 415) from None


def _bool(value: Any, name: str = "public") -> bool:
    if not isinstance(value, bool):
        raise invalid(f"{name} must be true or false")
    return value


def _bucket_changed() -> GatehouseError:
    return storage_error("BucketChanged", "the bucket's settings changed during the request; try again", 409)


class _Probe(Exception):
    """Rolls back the trial insert of :func:`_may_create`."""


async def _may_create(
    conn: asyncpg.Connection, bucket_id: str, name: str, owner: uuid.UUID | None, metadata: dict[str, Any],
    user_metadata: dict[str, Any] | None, version: str,
) -> None:
    """Whether the caller (``conn`` runs as them) may create ``name``, as an upload would: the row is
    inserted in a savepoint and rolled back, so the INSERT policies and the unique name decide
    (403 or 409, as an upload's refusal) and nothing stays."""
    try:
        async with conn.transaction():
            await conn.execute(
                "INSERT INTO storage.objects (bucket_id, name, owner, owner_id, metadata, user_metadata, version) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7)",
                bucket_id, name, owner, str(owner) if owner else None, metadata, user_metadata, version,
            )
            raise _Probe
    except _Probe:
        pass


def _bad_type(mimetype: str) -> GatehouseError:
    return storage_error("InvalidMimeType", f"mime type {mimetype} is not supported", 415)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _int_option(options: dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = options.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise invalid(f"{name} must be an integer from {low} to {high}")
    return value


_UNITS = {"b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "kib": 1024, "mib": 1024**2, "gib": 1024**3}


def _size_limit(value: Any) -> int | None:
    """``file_size_limit``: bytes as a number, or a string such as "2MB" (as storage-js allows)."""
    if value is None or value == "":
        return None
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**63:
        return value
    if isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        number = text.rstrip("abcdefghijklmnopqrstuvwxyz")
        unit = text[len(number):] or "b"
        if number.replace(".", "", 1).isdigit() and unit in _UNITS and 0 < float(number) * _UNITS[unit] < 2**63:
            return int(float(number) * _UNITS[unit])
    raise invalid(f"file_size_limit {value!r} is not a size (bytes, or a string like '2MB')")


def _mime_list(value: Any) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(item, str) and "/" in item for item in value):
        raise invalid("allowed_mime_types must be a list of MIME types like image/png or image/*")
    return value
