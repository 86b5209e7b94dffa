"""Sending an object's bytes: whole, one range, or headers only, with headers no stored value can break.

Whatever the type, the response is sandboxed (``OBJECT_CSP``: no script runs in it) and never
sniffed. Types a browser renders as documents (HTML, SVG, XML, ...) are attachments unless the
bucket serves them inline (``storage.buckets.inline_documents``). The type and cache directive
were made safe when the row was read (``media.safe_metadata``).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from email.utils import format_datetime
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from gatehouse.storage.errors import storage_error
from gatehouse.storage.files import LocalFileResponse
from gatehouse.storage.media import OBJECT_CSP, is_document
from gatehouse.storage.models import StoredObject
from gatehouse.storage.service import StorageService


async def serve(request: Request, service: StorageService, obj: StoredObject) -> Response:
    """The response to a GET or HEAD of ``obj``, honouring ``download``, ``If-None-Match`` and ``Range``."""
    metadata = obj.metadata
    content_type = str(metadata.get("mimetype") or "application/octet-stream")
    headers = {
        "Cache-Control": str(metadata.get("cacheControl") or "no-cache"),
        "Last-Modified": format_datetime(obj.updated_at, usegmt=True),
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": OBJECT_CSP,
    }
    if obj.etag:
        headers["ETag"] = obj.etag
    download_as = request.query_params.get("download")
    attachment = download_as is not None or (
        is_document(content_type) and not (await service.buckets.current(obj.bucket_id)).inline_documents
    )  # the bucket is read only for document types
    if attachment:
        filename = download_as or obj.name.rsplit("/", 1)[-1]
        headers["Content-Disposition"] = f"attachment; filename*=UTF-8''{quote(filename)}"
    if_none_match = request.headers.get("if-none-match")
    if if_none_match and obj.etag and (
        if_none_match.strip() == "*" or obj.etag in [t.strip() for t in if_none_match.split(",")]
    ):
        return Response(status_code=304, headers=headers)
    requested = request.headers.get("range", "").strip()
    headers["Accept-Ranges"] = "bytes"
    local = service.backend.open_local(obj.key)
    size = obj.size if local is None else local.size
    start, end, status = 0, size - 1, 200
    if requested:
        try:
            start, end = parse_range(requested, size)
        except BaseException:
            if local is not None:
                os.close(local.fd)
            raise
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    head = request.method == "HEAD"
    if local is not None:
        return LocalFileResponse(local, start=start, end=end, status_code=status, headers=headers,
                                 media_type=content_type, head=head)
    headers["Content-Length"] = str(max(0, end - start + 1))
    if head or size == 0:
        return Response(status_code=status, headers=headers, media_type=content_type)
    # Open the blob and read its first chunk before any header goes out: a missing blob or a store
    # that is down is then a 404 or 503 the clients parse, not a 200 cut off after its headers, and
    # an object of one chunk (most avatars) is whole before it is answered. Only a store failing in
    # the middle of a larger object can still cut a response short, as HTTP cannot take back a 200.
    stream = await service.backend.open(obj.key, start, end)
    first = await anext(stream, b"")
    return StreamingResponse(_resumed(first, stream), status_code=status, headers=headers, media_type=content_type)


async def _resumed(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """``first``, then what is left of ``rest``."""
    if first:
        yield first
    async for chunk in rest:
        yield chunk


def parse_range(value: str, size: int) -> tuple[int, int]:
    """The first and last byte of a ``Range: bytes=...`` header (one range only); else 416."""
    unit, _, spec = value.partition("=")
    first, _, last = spec.partition("-")
    try:
        if unit.strip() != "bytes" or "," in spec:
            raise ValueError
        if first.strip() == "":
            length = int(last)
            start, end = max(0, size - length), size - 1
        else:
            start = int(first)
            end = min(int(last), size - 1) if last.strip() else size - 1
    except ValueError:
        raise storage_error("InvalidRange", f"Range {value!r} is not a single byte range", 416) from None
    if start > end or start >= size:
        raise storage_error("InvalidRange", f"Range {value!r} is outside the {size}-byte object", 416)
    return start, end
