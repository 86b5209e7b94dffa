"""New bytes, owned by the request that put them into the backend until a row names them.

An upload or a copy puts its bytes under a fresh version key first, then writes the row that
points at them in one statement as the caller (RLS decides). Until that row is written the
bytes are the request's: if the row is refused or cannot be written they are deleted at once.
When the database may have the row after all (it became unreachable, or the request was
cancelled mid-statement) they stay, and the janitor's sweep deletes them if no row names them.
Bytes a row stopped pointing at are queued (by trigger) for the janitor.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg

from gatehouse.core.db import Database, is_unavailable
from gatehouse.core.errors import GatehouseError
from gatehouse.storage.backends.base import Backend, BackendError
from gatehouse.storage.errors import translate
from gatehouse.storage.models import Bucket, NewObject, owner

log = logging.getLogger("gatehouse.storage")

#: A new object row, for ``run_as`` ($1: the values in column order, then the bucket settings the
#: bytes were checked against); ``{conflict}``: the upsert clause. Written only if those settings
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


class Landing:
    """Bytes placed for one new row of ``bucket_id``: :meth:`place`, then :meth:`commit`."""

    def __init__(self, database: Database, bucket_id: str) -> None:
        self._db = database
        self._bucket_id = bucket_id
        #: The key of the bytes once placed.
        self.key: str | None = None
        #: Whether the bytes are still this request's to delete.
        self.owned = False

    async def place(self, put: Callable[[str], Awaitable[None]]) -> str:
        """Put the bytes under a fresh key with ``put`` (once: later calls give the same key)."""
        if self.key is None:
            self.key, self.owned = f"{self._bucket_id}/{uuid.uuid4()}", True
            await put(self.key)
        return self.key

    async def commit(
        self, claims: dict[str, Any], bucket: Bucket, name: str, metadata: dict[str, Any],
        user_metadata: dict[str, Any] | None, *, upsert: bool,
    ) -> NewObject | None:
        """Write the row naming the placed bytes, as the caller, if ``bucket`` (the settings the
        bytes were checked against) is still the bucket as stored; None if it is not."""
        if self.key is None:
            raise RuntimeError("commit before place")
        user = owner(claims)
        values = [bucket.id, name, str(user) if user else None, str(user) if user else None, metadata,
                  user_metadata, self.key.split("/", 1)[1], bucket.file_size_limit, bucket.allowed_mime_types]
        try:
            result = await self._db.run_as(claims, _INSERT.format(conflict=_UPSERT if upsert else ""), values)
        except asyncpg.PostgresError as exc:
            if is_unavailable(exc):
                self.owned = False  # the row may have been committed: the bytes stay for the sweep to judge
            raise translate(exc) from None
        except GatehouseError:
            raise  # refused before the statement was sent: the bytes go
        except BaseException:
            self.owned = False  # a lost connection (or a cancel): the database may have the row
            raise
        if result.page_count == 0:
            return None
        self.owned = False
        return NewObject(str(result.body), bucket.id, name)


async def discard(backend: Backend, key: str) -> None:
    """Delete the bytes of a request that is failing anyway. The store that failed the request is
    likely failing this too: then the caller hears the first error, not this one, and the
    janitor's sweep deletes the bytes once it finds no row naming them."""
    try:
        await backend.delete(key)
    except BackendError as exc:
        log.warning("the bytes of a failed request stay for the janitor's sweep (%s): %s", key, exc.message)


@contextlib.asynccontextmanager
async def landing(database: Database, backend: Backend, bucket_id: str) -> AsyncIterator[Landing]:
    """A :class:`Landing` whose bytes are deleted on the way out unless a row took them (or may have)."""
    land = Landing(database, bucket_id)
    try:
        yield land
    except BaseException:
        if land.owned and land.key is not None:
            await discard(backend, land.key)
        raise
    if land.owned and land.key is not None:
        await backend.delete(land.key)
