"""Storage's JSON: buckets, objects and listings in the shapes Supabase Storage answers with.

Only the handlers call these; the services return the values of ``storage.models``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from gatehouse.storage.listing import Page
from gatehouse.storage.models import Bucket, ListEntry, NewObject, StoredObject


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def bucket_json(bucket: Bucket) -> dict[str, Any]:
    return {
        "id": bucket.id, "name": bucket.name, "owner": bucket.owner or "",
        "public": bucket.public, "file_size_limit": bucket.file_size_limit,
        "allowed_mime_types": bucket.allowed_mime_types, "inline_documents": bucket.inline_documents,
        "created_at": bucket.created_at.isoformat(),
        "updated_at": bucket.updated_at.isoformat(),
    }


def object_json(obj: StoredObject) -> dict[str, Any]:
    """An object as a remove reports it."""
    return {
        "id": str(obj.id), "name": obj.name, "bucket_id": obj.bucket_id, "owner": None, "version": obj.version,
        "metadata": obj.metadata, "user_metadata": obj.user_metadata, "created_at": obj.created_at.isoformat(),
        "updated_at": obj.updated_at.isoformat(), "last_accessed_at": obj.last_accessed_at.isoformat(),
    }


def info_json(obj: StoredObject) -> dict[str, Any]:
    """``GET /object/info/...``."""
    metadata = obj.metadata
    return {
        "id": str(obj.id), "name": obj.name, "version": obj.version, "bucket_id": obj.bucket_id,
        "size": obj.size, "content_type": metadata.get("mimetype"), "cache_control": metadata.get("cacheControl"),
        "etag": obj.etag, "metadata": obj.user_metadata or {}, "last_modified": obj.updated_at.isoformat(),
        "created_at": obj.created_at.isoformat(),
    }


def new_object_json(new: NewObject) -> dict[str, str]:
    """What an upload or a copy answers."""
    return {"Id": new.id, "Key": f"{new.bucket_id}/{new.name}"}


def entry_json(entry: ListEntry) -> dict[str, Any]:
    """One line of the first list: names relative to the folder listed."""
    return {
        "name": entry.name, "id": str(entry.id) if entry.id else None,
        "updated_at": iso(entry.updated_at), "created_at": iso(entry.created_at),
        "last_accessed_at": iso(entry.last_accessed_at), "metadata": entry.metadata,
    }


def page_json(page: Page, bucket_id: str) -> dict[str, Any]:
    """One page of list-v2: full names, folders apart, and the cursor of the next page."""
    folders: list[dict[str, Any]] = []
    objects: list[dict[str, Any]] = []
    for entry in page.entries:
        if entry.is_folder:
            folders.append({"id": None, "name": entry.name, "key": entry.name, "bucket_id": bucket_id})
        else:
            objects.append({
                "id": str(entry.id), "name": entry.name, "key": entry.name, "bucket_id": bucket_id,
                "metadata": entry.metadata, "created_at": iso(entry.created_at),
                "updated_at": iso(entry.updated_at), "last_accessed_at": iso(entry.last_accessed_at),
            })
    body: dict[str, Any] = {"hasNext": page.next_cursor is not None, "folders": folders, "objects": objects}
    if page.next_cursor is not None:
        body["nextCursor"] = page.next_cursor.encode()
        body["nextCursorKey"] = page.next_cursor.key
    return body
