"""Storage's domain values: a bucket, a stored object, a listing entry, a newly written object.

The services return these; only the handlers turn them into Storage's JSON (``storage.wire``).
The constructors here read them from ``storage.buckets`` / ``storage.objects`` rows, either as
asyncpg records or as the ``to_jsonb`` text ``Database.run_as`` returns.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from gatehouse.storage.media import safe_metadata

#: The columns a :class:`Bucket` is read from.
BUCKET_COLUMNS = "id, name, owner, public, file_size_limit, allowed_mime_types, inline_documents, created_at, updated_at"


@dataclass(frozen=True)
class Bucket:
    id: str
    name: str
    owner: str | None
    public: bool
    file_size_limit: int | None
    allowed_mime_types: list[str] | None
    #: Serve document types (HTML, SVG, XML, ...) inline rather than as attachments (0010).
    inline_documents: bool
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Bucket:
        return cls(
            row["id"], row["name"], str(row["owner"]) if row["owner"] else None, row["public"],
            row["file_size_limit"], row["allowed_mime_types"], row["inline_documents"], row["created_at"],
            row["updated_at"],
        )


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
    #: Who uploaded it (``storage.objects.owner_id``): a user's id, or None for a key's upload.
    owner_id: str | None = None

    @property
    def key(self) -> str:
        """Where the backend keeps this version's bytes."""
        return f"{self.bucket_id}/{self.version}"

    @property
    def size(self) -> int:
        return int(self.metadata.get("size", 0))

    @property
    def etag(self) -> str:
        return str(self.metadata.get("eTag", ""))

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> StoredObject:
        return cls(
            row["id"], row["bucket_id"], row["name"], row["version"], safe_metadata(row["metadata"] or {}),
            row["user_metadata"], row["created_at"], row["updated_at"], row["last_accessed_at"], row.get("owner_id"),
        )

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> StoredObject:
        """An object from its row as ``to_jsonb`` renders it (the shape ``run_as`` returns)."""
        return cls(
            uuid.UUID(row["id"]), row["bucket_id"], row["name"], row["version"], safe_metadata(row["metadata"] or {}),
            row["user_metadata"], datetime.fromisoformat(row["created_at"]), datetime.fromisoformat(row["updated_at"]),
            datetime.fromisoformat(row["last_accessed_at"]), row.get("owner_id"),
        )


@dataclass(frozen=True)
class ListEntry:
    """One line of a listing: an object, or a folder (no id, dates or metadata)."""

    name: str
    id: uuid.UUID | None
    created_at: datetime | None
    updated_at: datetime | None
    last_accessed_at: datetime | None
    #: As stored: a listing shows the row's metadata unchanged.
    metadata: dict[str, Any] | None

    @property
    def is_folder(self) -> bool:
        return self.id is None


@dataclass(frozen=True)
class NewObject:
    """The row an upload or a copy wrote."""

    id: str
    bucket_id: str
    name: str


def owner(claims: dict[str, Any] | None) -> uuid.UUID | None:
    """The user a new row belongs to: a signed-in user's id, else nobody."""
    if not claims or claims.get("role") != "authenticated":
        return None
    try:
        return uuid.UUID(str(claims.get("sub")))
    except ValueError:
        return None
