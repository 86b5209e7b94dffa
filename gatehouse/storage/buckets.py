"""Buckets: their settings as configuration the storage rules read, and the bucket routes' rules.

Uploads need their bucket's settings (size limit, allowed types) before the body arrives. A
read costs a round trip, so this process remembers buckets as it last read them (the
:data:`REMEMBERED` most recently used: a hint, not a copy of the table). The copy may
be stale (another process changed the bucket), and :class:`BucketView` holds the one rule for
trusting it: a remembered copy only ever lets a request through. A refusal is confirmed against
a fresh read, and the statement that writes the row checks that the settings are still the
bucket's (``storage.bucket_unchanged``, 0009_upload_check.sql); if they are not, the request
is checked again against a fresh read.

Reading, creating, changing and deleting buckets for a caller runs as that caller, so the
policies on ``storage.buckets`` decide.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple, TypeVar

import asyncpg

from gatehouse.core.config import Settings
from gatehouse.core.db import Database
from gatehouse.core.errors import GatehouseError
from gatehouse.storage import names
from gatehouse.storage.errors import bucket_changed, bucket_not_found, storage_error, translate
from gatehouse.storage.forms import BucketChanges, NewBucket
from gatehouse.storage.models import BUCKET_COLUMNS, Bucket, owner

T = TypeVar("T")
R = TypeVar("R")

#: Buckets each process remembers, least recently used first out: about 1 KB each.
REMEMBERED = 1000


class BucketUsage(NamedTuple):
    """What a bucket holds: its objects and their bytes."""

    objects: int
    bytes: int


class Buckets:
    def __init__(self, database: Database, settings: Settings) -> None:
        self.db = database
        self.settings = settings
        #: Buckets as last read, by id: a hint that saves uploads a round trip (see BucketView).
        self._remembered: OrderedDict[str, Bucket] = OrderedDict()

    # -- settings, as the storage rules read them --------------------------------------------

    async def current(self, bucket_id: str) -> Bucket:
        """The bucket as the database has it now (and remembered, as a hint for uploads)."""
        names.bucket_id(bucket_id)
        row = await self.db.admin.fetchrow(f"SELECT {BUCKET_COLUMNS} FROM storage.buckets WHERE id = $1", bucket_id)
        if row is None:
            self._remembered.pop(bucket_id, None)
            raise bucket_not_found()
        bucket = Bucket.from_row(row)
        self._remembered[bucket.id] = bucket
        self._remembered.move_to_end(bucket.id)
        if len(self._remembered) > REMEMBERED:
            self._remembered.popitem(last=False)
        return bucket

    async def view(self, bucket_id: str) -> BucketView:
        """The bucket for one request: the remembered copy if there is one (no round trip)."""
        names.bucket_id(bucket_id)
        remembered = self._remembered.get(bucket_id)
        if remembered is not None:
            self._remembered.move_to_end(bucket_id)
            return BucketView(self, remembered, fresh=False)
        return BucketView(self, await self.current(bucket_id), fresh=True)

    def size_limit(self, bucket: Bucket) -> int:
        """The most bytes an object of ``bucket`` may have: its limit, capped by the server's."""
        most = self.settings.storage_max_file_size
        return min(bucket.file_size_limit or most, most)

    # -- the bucket routes, as the caller ----------------------------------------------------

    async def visible(self, claims: dict[str, Any]) -> list[Bucket]:
        async with self.db.as_user(claims, readonly=True) as conn:
            rows = await conn.fetch(f"SELECT {BUCKET_COLUMNS} FROM storage.buckets ORDER BY name")
        return [Bucket.from_row(row) for row in rows]

    async def usage(self, claims: dict[str, Any]) -> dict[str, BucketUsage]:
        """How many objects each bucket the caller sees holds, and their bytes (as recorded in the
        rows' metadata), by bucket id; buckets without objects are left out."""
        async with self.db.as_user(claims, readonly=True) as conn:
            rows = await conn.fetch(
                "SELECT bucket_id, count(*) AS objects, coalesce(sum(CASE WHEN metadata->>'size' ~ '^[0-9]{1,18}$' "
                "THEN (metadata->>'size')::bigint END), 0)::bigint AS bytes FROM storage.objects GROUP BY bucket_id"
            )
        return {row["bucket_id"]: BucketUsage(row["objects"], row["bytes"]) for row in rows}

    async def get(self, claims: dict[str, Any], bucket_id: str) -> Bucket:
        names.bucket_id(bucket_id)
        async with self.db.as_user(claims, readonly=True) as conn:
            row = await conn.fetchrow(f"SELECT {BUCKET_COLUMNS} FROM storage.buckets WHERE id = $1", bucket_id)
        if row is None:
            raise bucket_not_found()
        return Bucket.from_row(row)

    async def create(self, claims: dict[str, Any], form: NewBucket) -> str:
        try:
            async with self.db.as_user(claims) as conn:
                await conn.execute(
                    "INSERT INTO storage.buckets (id, name, owner, owner_id, public, file_size_limit, allowed_mime_types, "
                    "inline_documents) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    form.id, form.name, owner(claims), claims.get("sub"), form.public, form.file_size_limit,
                    form.allowed_mime_types, form.inline_documents,
                )
        except asyncpg.UniqueViolationError:
            raise storage_error("BucketAlreadyExists", "The resource already exists", 409) from None
        except asyncpg.PostgresError as exc:
            raise translate(exc) from None
        return form.id

    async def update(self, claims: dict[str, Any], bucket_id: str, changes: BucketChanges) -> None:
        names.bucket_id(bucket_id)
        self._remembered.pop(bucket_id, None)
        try:
            async with self.db.as_user(claims) as conn:
                done = await conn.fetchval(
                    "UPDATE storage.buckets SET public = coalesce($2, public), "
                    "file_size_limit = CASE WHEN $5 THEN $3 ELSE file_size_limit END, "
                    "allowed_mime_types = CASE WHEN $6 THEN $4 ELSE allowed_mime_types END, "
                    "inline_documents = coalesce($7, inline_documents), updated_at = now() "
                    "WHERE id = $1 RETURNING id",
                    bucket_id, changes.public, changes.file_size_limit, changes.allowed_mime_types,
                    changes.sets_size_limit, changes.sets_mime_types, changes.inline_documents,
                )
        except asyncpg.PostgresError as exc:
            raise translate(exc) from None
        if done is None:
            raise bucket_not_found()

    async def empty(self, claims: dict[str, Any], bucket_id: str) -> None:
        await self.current(bucket_id)
        try:
            async with self.db.as_user(claims) as conn:
                await conn.execute("DELETE FROM storage.objects WHERE bucket_id = $1", bucket_id)
        except asyncpg.PostgresError as exc:
            raise translate(exc) from None

    async def delete(self, claims: dict[str, Any], bucket_id: str) -> None:
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
            raise translate(exc) from None
        if done is None:
            raise bucket_not_found()


class BucketView:
    """One request's copy of a bucket, and the rule for trusting it (see the module's docstring).

    ``bucket`` is the copy the request is checked against; ``fresh`` says whether it was read
    for this request. Every re-read goes through :meth:`refresh`.
    """

    #: How often a request is checked and written before a bucket that keeps changing wins.
    ATTEMPTS = 2

    def __init__(self, buckets: Buckets, bucket: Bucket, *, fresh: bool) -> None:
        self._buckets = buckets
        self.bucket = bucket
        self.fresh = fresh

    async def refresh(self) -> Bucket:
        self.bucket, self.fresh = await self._buckets.current(self.bucket.id), True
        return self.bucket

    async def fresh_limit(self) -> int:
        """The size limit as the database has it now (for a body that outgrew a remembered one)."""
        return self._buckets.size_limit(await self.refresh())

    async def check(self, rule: Callable[[Bucket], T]) -> T:
        """``rule`` applied to the bucket; a refusal of a remembered copy is confirmed on a fresh read."""
        try:
            return rule(self.bucket)
        except GatehouseError:
            if self.fresh:
                raise
        return rule(await self.refresh())

    async def settle(self, rule: Callable[[Bucket], T], write: Callable[[Bucket, T], Awaitable[R | None]]) -> R:
        """Check with ``rule``, then ``write`` what it passed; ``write`` gives None when the
        bucket's settings changed under it, and then both run again on a fresh read.

        A refusal of a remembered copy is confirmed on a fresh read too. After
        :attr:`ATTEMPTS` tries the request is refused with 409 ``BucketChanged``.
        """
        for _ in range(self.ATTEMPTS):
            try:
                checked = rule(self.bucket)
            except GatehouseError:
                if self.fresh:
                    raise
                await self.refresh()
                continue
            written = await write(self.bucket, checked)
            if written is not None:
                return written
            await self.refresh()
        raise bucket_changed()
