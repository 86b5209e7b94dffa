"""What a bucket lets in: the size and type rules, checked on an upload and on stored bytes alike.

An upload is checked three times: by its headers before the body is read (:func:`admit`), on
the spooled bytes (:func:`content_type`, then :func:`verify_image` for raster images), and
copies and moves run the same checks on the bytes they would put into a bucket
(:func:`admit_stored`), so they answer exactly as an upload of those bytes would: 413 over the
size limit, 415 for a type the bucket refuses or for bytes that are not the image they claim
to be.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from PIL import Image

from gatehouse.core.http import too_large
from gatehouse.storage.backends.base import Backend
from gatehouse.storage.errors import bad_type, storage_error
from gatehouse.storage.files import INLINE_LIMIT
from gatehouse.storage.models import Bucket, StoredObject
from gatehouse.storage.sniff import HEAD_BYTES, is_raster_image, mime_allowed, mime_matches, sniff_mime
from gatehouse.storage.upload import Spooled


def admit(bucket: Bucket, limit: int, content_length: int | None, content_type: str | None) -> int:
    """Refuse a body by its headers before reading it; the size limit to stream under."""
    if content_length is not None and content_length > limit:
        raise too_large(limit)
    raw_type = (content_type or "").split(";")[0].strip().lower()
    if raw_type and raw_type != "multipart/form-data" and not mime_allowed(raw_type, bucket.allowed_mime_types):
        raise bad_type(raw_type)
    return limit


def content_type(spooled: Spooled, bucket: Bucket, limit: int) -> str:
    """The type the bytes are stored as, once they are known to fit ``bucket`` (size and type)."""
    if spooled.size > limit:
        raise too_large(limit)
    sniffed = sniff_mime(spooled.head)
    mimetype = spooled.content_type or sniffed or "application/octet-stream"
    if mimetype == "text/plain" and sniffed:  # supabase-py's default part type for any file
        mimetype = sniffed
    if not mime_allowed(mimetype, bucket.allowed_mime_types):
        raise bad_type(mimetype)
    if mimetype.startswith("image/") and not mime_matches(mimetype, sniffed):
        raise storage_error(
            "InvalidMimeType", f"the file's bytes are not a {mimetype} image (they look like {sniffed or 'something else'})", 415
        )
    return mimetype


async def verify_image(path: Path, size: int, mimetype: str) -> None:
    """Refuse a raster "image" whose structure does not decode (a valid signature followed by junk)."""
    if not is_raster_image(mimetype):
        return
    if size <= INLINE_LIMIT:  # a tenth of a millisecond: less than a thread hop
        _verify(path, mimetype)
    else:
        await asyncio.to_thread(_verify, path, mimetype)


async def admit_stored(backend: Backend, obj: StoredObject, bucket: Bucket, limit: int) -> dict[str, Any]:
    """Check a stored object against ``bucket``'s rules as an upload of its bytes would be checked.

    Nothing is written before this passes. Returns the metadata the new row gets.
    """
    size = await backend.size(obj.key)
    size = obj.size if size is None else size
    if size > limit:
        raise too_large(limit)
    declared = str(obj.metadata.get("mimetype") or "") or None
    if declared and not mime_allowed(declared, bucket.allowed_mime_types):
        raise bad_type(declared)  # refused on the type alone: no need to read the bytes
    head = b""
    if size:
        async with backend.open(obj.key, 0, HEAD_BYTES - 1) as stream:
            async for chunk in stream:
                head += chunk
    stored = Spooled(Path(obj.key), size, obj.etag.strip('"'), head, declared, None)  # the bytes as an upload
    mimetype = content_type(stored, bucket, limit)
    if is_raster_image(mimetype):
        local = backend.local_path(obj.key)
        path = local if local is not None else await local_copy(backend, obj)
        try:
            await asyncio.to_thread(_verify, path, mimetype)
        finally:
            if local is None:
                path.unlink(missing_ok=True)
    return {**obj.metadata, "mimetype": mimetype, "size": size, "contentLength": size,
            "lastModified": datetime.now(UTC).isoformat()}


async def local_copy(backend: Backend, obj: StoredObject) -> Path:
    """A local file with the object's bytes (to decode them): the blob itself when the backend
    is local, else a download into the spool folder that the caller owns."""
    local = backend.local_path(obj.key)
    if local is not None:
        return local
    target = backend.spool_dir / f"render-{uuid.uuid4().hex}.part"
    with target.open("wb") as handle:
        async for chunk in backend.open(obj.key):
            handle.write(chunk)
    return target


def _verify(path: Path, mimetype: str) -> None:
    try:
        with Image.open(path) as image:
            image.verify()
    except Exception:  # noqa: BLE001 - Pillow raises many kinds for broken files
        raise storage_error("InvalidMimeType", f"the file is not a valid {mimetype} image", 415) from None
