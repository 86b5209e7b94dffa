"""Objects: find, list, remove, upload, move and copy, with access decided by RLS.

Every operation on a caller's objects runs as that caller (``Database.as_user`` or, in one
round trip, ``Database.run_as``), so the policies on ``storage.objects`` decide who may read,
write, move and delete, exactly as in Supabase. Bucket settings (size limit, allowed types)
are configuration that the rules read through ``storage.buckets``.

An upload is checked against its bucket while the body arrives, spooled to a temporary file,
checked again on its bytes (``storage.admission``), then its bytes are placed under a fresh
version key and one statement as the caller writes the row that points at them
(``storage.landing``). Which copy of the bucket those checks trust is the one rule of
``BucketView``. Copy and move check the bytes they put into a bucket the same way.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson

from gatehouse.core.config import Settings
from gatehouse.core.db import Conn, Database, is_unavailable
from gatehouse.core.errors import GatehouseError
from gatehouse.storage import admission, names
from gatehouse.storage.backends.base import Backend
from gatehouse.storage.buckets import Buckets
from gatehouse.storage.errors import access_denied, bucket_changed, bucket_not_found, not_found, translate
from gatehouse.storage.forms import ListOptions, Transfer
from gatehouse.storage.landing import discard, landing
from gatehouse.storage.models import Bucket, ListEntry, NewObject, StoredObject, owner
from gatehouse.storage.upload import spool

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
#: The first list: the files and folders directly under $2, those starting with $3 ($1 bucket,
#: $4 limit, $5 offset); ``{order}`` the column and direction.
_LIST = """
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
    ORDER BY is_folder DESC, {order} NULLS FIRST, name
    LIMIT $4 OFFSET $5
"""


class Objects:
    def __init__(self, database: Database, backend: Backend, settings: Settings, buckets: Buckets) -> None:
        self.db = database
        self.backend = backend
        self.settings = settings
        self.buckets = buckets

    async def find(self, claims: dict[str, Any] | None, bucket_id: str, name: str, *, public: bool = False,
                   replica: bool = False) -> StoredObject:
        """An object the caller may read (public: any object of a public bucket, no RLS; replica:
        the read replica may answer, see ``gatehouse.core.replica``)."""
        names.object_name(name)
        names.bucket_id(bucket_id)
        if public:
            row = await self.db.admin.fetchrow(_FIND_PUBLIC, bucket_id, name)
            if row is None:
                raise bucket_not_found()
            if not row["public"] or row["id"] is None:
                raise not_found()
            return StoredObject.from_row(row)
        try:
            result = await self.db.run_as(claims, _FIND, [bucket_id, name], readonly=True, replica=replica)
        except asyncpg.PostgresError as exc:
            raise translate(exc) from None
        if result.body is None:
            raise not_found()
        return StoredObject.from_json(orjson.loads(result.body))

    async def list_folder(self, claims: dict[str, Any], bucket_id: str, options: ListOptions) -> list[ListEntry]:
        """Files and folders directly under ``options.prefix`` (folders have no id or dates)."""
        names.bucket_id(bucket_id)
        sql = _LIST.format(order=f"{options.column} {'DESC' if options.descending else 'ASC'}")
        try:
            async with self.db.as_user(claims, readonly=True, replica=True) as conn:
                rows = await conn.fetch(sql, bucket_id, options.prefix, options.search, options.limit, options.offset)
        except asyncpg.PostgresError as exc:
            raise translate(exc) from None
        return [
            ListEntry(row["name"], row["id"], row["created_at"], row["updated_at"], row["last_accessed_at"],
                      row["metadata"])
            for row in rows
        ]

    async def remove(self, claims: dict[str, Any], bucket_id: str, prefixes: list[str]) -> list[StoredObject]:
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
            raise translate(exc) from None
        return [StoredObject.from_row(row) for row in rows]

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
    ) -> NewObject:
        """Store a body as ``name``: checked against the bucket (``view``), then its bytes placed,
        then the row committed as the caller."""
        names.object_name(name)
        view = await self.buckets.view(bucket_id)
        limit = await view.check(
            lambda bucket: admission.admit(bucket, self.buckets.size_limit(bucket), content_length, content_type)
        )
        spooled = await spool(stream, spool_dir=self.backend.spool_dir, content_type=content_type, headers=headers,
                              limit=limit, hard_limit=self.settings.storage_max_file_size,
                              recheck=None if view.fresh else view.fresh_limit)
        try:
            async with landing(self.db, self.backend, bucket_id) as land:

                def check(bucket: Bucket) -> str:
                    return admission.content_type(spooled, bucket, self.buckets.size_limit(bucket))

                async def write(bucket: Bucket, mimetype: str) -> NewObject | None:
                    if land.key is None:  # the first write: the image's structure, then its bytes into place
                        await admission.verify_image(spooled.path, spooled.size, mimetype)
                        await land.place(lambda key: self.backend.put(key, spooled.path, content_type=mimetype))
                    metadata = {
                        "eTag": f'"{spooled.etag}"', "size": spooled.size, "mimetype": mimetype,
                        "cacheControl": spooled.cache_control or "no-cache",
                        "lastModified": datetime.now(UTC).isoformat(), "contentLength": spooled.size,
                        "httpStatusCode": 200,
                    }
                    return await land.commit(claims, bucket, name, metadata, spooled.user_metadata, upsert=upsert)

                return await view.settle(check, write)
        finally:
            spooled.discard()

    async def copy(self, claims: dict[str, Any], transfer: Transfer, *, upsert: bool = False) -> NewObject:
        """A new object with the source's bytes, checked as an upload of them to the target would be:
        the target bucket's size and type rules, then one statement as the caller (RLS decides)."""
        names.object_name(transfer.target)
        original = await self.find(claims, transfer.bucket_id, transfer.source)
        bucket = await self.buckets.current(transfer.target_bucket)
        metadata = await admission.admit_stored(self.backend, original, bucket, self.buckets.size_limit(bucket))
        async with landing(self.db, self.backend, transfer.target_bucket) as land:
            await land.place(lambda key: self.backend.copy(original.key, key))
            new = await land.commit(claims, bucket, transfer.target, metadata, original.user_metadata, upsert=upsert)
            if new is None:
                raise bucket_changed()
            return new

    async def move(self, claims: dict[str, Any], transfer: Transfer) -> None:
        """Rename an object, into another bucket if asked, checked as an upload to the target would be.

        The target bucket's size and type rules apply (``admission.admit_stored``), and the caller
        must be allowed to create the target (the INSERT policies, tried and rolled back) as well
        as to update the object (the UPDATE policies): a refusal changes nothing.
        """
        bucket_id, source, target_bucket, target = (
            transfer.bucket_id, transfer.source, transfer.target_bucket, transfer.target
        )
        names.bucket_id(bucket_id)
        names.object_name(source)
        names.object_name(target)
        bucket = await self.buckets.current(target_bucket)
        new_version = str(uuid.uuid4())
        copied = False
        try:
            async with self.db.as_user(claims) as conn:
                row = await conn.fetchrow(
                    "SELECT * FROM storage.objects WHERE bucket_id = $1 AND name = $2 FOR UPDATE", bucket_id, source
                )
                if row is None:
                    raise not_found()
                original = StoredObject.from_row(row)
                metadata = await admission.admit_stored(self.backend, original, bucket, self.buckets.size_limit(bucket))
                user = owner(claims)
                if (target_bucket, target) != (bucket_id, source):  # onto itself: the UPDATE's policies decide
                    await _may_create(conn, bucket.id, target, user, metadata, original.user_metadata, new_version)
                version = original.version
                if target_bucket != bucket_id:  # bytes are keyed by bucket: copy them over first
                    await self.backend.copy(original.key, f"{target_bucket}/{new_version}")
                    copied, version = True, new_version
                moved = await conn.fetchval(
                    "UPDATE storage.objects SET bucket_id = $3, name = $4, version = $5, owner = coalesce($6, owner), "
                    "owner_id = coalesce($6::text, owner_id), metadata = $7, updated_at = now() "
                    "WHERE bucket_id = $1 AND name = $2 AND storage.bucket_unchanged($3, $8, $9) RETURNING id",
                    bucket_id, source, target_bucket, target, version, user, metadata,
                    bucket.file_size_limit, bucket.allowed_mime_types,
                )
                if moved is None:
                    if not await conn.fetchval("SELECT storage.bucket_unchanged($1, $2, $3)", bucket.id,
                                               bucket.file_size_limit, bucket.allowed_mime_types):
                        raise bucket_changed()
                    raise access_denied("you may not move this object")
            copied = False
        except asyncpg.PostgresError as exc:
            if is_unavailable(exc):
                copied = False  # the move may have committed: the bytes stay for the janitor's sweep to judge
            raise translate(exc) from None
        except GatehouseError:
            raise  # refused inside the transaction, which rolled back: the copied bytes go
        except BaseException:
            copied = False  # a lost connection or a cancel: the database may have the moved row
            raise
        finally:
            if copied:  # only while an error propagates: the caller hears that one
                await discard(self.backend, f"{target_bucket}/{new_version}")


class _Probe(Exception):
    """Rolls back the trial insert of :func:`_may_create`."""


async def _may_create(
    conn: Conn, bucket_id: str, name: str, user: uuid.UUID | None, metadata: dict[str, Any],
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
                bucket_id, name, user, str(user) if user else None, metadata, user_metadata, version,
            )
            raise _Probe
    except _Probe:
        pass
