"""S3's listings: ListObjectsV2, ListObjects (v1) and ListMultipartUploads, as XML.

Objects are listed by storage's keyset listing (``storage.listing.list_v2``), run as the
caller, so RLS decides what is listed, as in the JSON API. The continuation token is that
listing's cursor; ``start-after`` and v1's ``marker`` are a cursor at the given key. The
delimiter ``/`` folds names into ``CommonPrefixes``; no other delimiter is offered.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from gatehouse.core.errors import GatehouseError
from gatehouse.services import services
from gatehouse.storage import listing, names
from gatehouse.storage.s3 import wire
from gatehouse.storage.s3.auth import S3Caller
from gatehouse.storage.s3.errors import s3_error
from gatehouse.storage.s3.multipart import Multipart


def _xml(body: bytes) -> Response:
    return Response(body, media_type="application/xml")


def _max(request: Request, name: str) -> int:
    value = request.query_params.get(name, "1000")
    if not value.isdigit():
        raise s3_error("InvalidArgument", f"{name} must be a whole number", 400)
    return min(int(value), listing.MAX_KEYS)


def _text_param(request: Request, name: str) -> str:
    value = request.query_params.get(name, "")
    if len(value.encode()) > names.MAX_NAME_BYTES or "\x00" in value:
        raise s3_error("InvalidArgument", f"{name} must be at most {names.MAX_NAME_BYTES} bytes", 400)
    return value


async def list_objects(request: Request, caller: S3Caller, bucket: str, *, v2: bool) -> Response:
    query = request.query_params
    prefix, delimiter = _text_param(request, "prefix"), _text_param(request, "delimiter")
    if delimiter not in ("", "/"):
        raise s3_error("InvalidArgument", "Only '/' is supported as a delimiter", 400)
    encoding = query.get("encoding-type")
    if encoding not in (None, "url"):
        raise s3_error("InvalidArgument", "Invalid Encoding Method specified in Request", 400)
    url = encoding == "url"
    max_keys = _max(request, "max-keys")
    token = query.get("continuation-token") if v2 else None
    start = _text_param(request, "start-after" if v2 else "marker")
    cursor: listing.Cursor | None = None
    if token:
        try:
            cursor = listing.Cursor.decode(token)
        except GatehouseError:
            raise s3_error("InvalidArgument", "The continuation token provided is incorrect", 400) from None
        if cursor.column != "name" or cursor.descending:
            raise s3_error("InvalidArgument", "The continuation token provided is incorrect", 400)
    elif start:
        cursor = listing.Cursor(start, "name", False)
    page = listing.Page([], None)
    if max_keys:
        page = await listing.list_v2(
            services(request).storage.db, caller.claims, bucket,
            listing.ListRequest(prefix, max_keys, delimiter == "/", "name", False, cursor),
        )
    contents, prefixes = [], []
    for entry in page.entries:
        if entry.is_folder:
            prefixes.append(wire.element("CommonPrefixes", wire.key_leaf("Prefix", entry.name, url)))
            continue
        metadata = entry.metadata or {}
        contents.append(wire.element(
            "Contents", wire.key_leaf("Key", entry.name, url),
            wire.leaf("LastModified", wire.timestamp(entry.updated_at)) if entry.updated_at else "",
            wire.leaf("ETag", metadata.get("eTag", "")), wire.leaf("Size", int(metadata.get("size", 0) or 0)),
            wire.leaf("StorageClass", "STANDARD"),
        ))
    truncated = page.next_cursor is not None
    head = [wire.leaf("Name", bucket), wire.key_leaf("Prefix", prefix, url)]
    if delimiter:
        head.append(wire.key_leaf("Delimiter", delimiter, url))
    head += [wire.leaf("MaxKeys", max_keys), wire.leaf("IsTruncated", "true" if truncated else "false")]
    if url:
        head.append(wire.leaf("EncodingType", "url"))
    if v2:
        head.append(wire.leaf("KeyCount", len(page.entries)))
        if token:
            head.append(wire.leaf("ContinuationToken", token))
        if start:
            head.append(wire.key_leaf("StartAfter", start, url))
        if page.next_cursor is not None:
            head.append(wire.leaf("NextContinuationToken", page.next_cursor.encode()))
    else:
        head.append(wire.key_leaf("Marker", start, url))
        if page.next_cursor is not None:
            head.append(wire.key_leaf("NextMarker", page.next_cursor.key, url))
    return _xml(wire.document("ListBucketResult", *head, *contents, *prefixes))


async def multipart_uploads(request: Request, caller: S3Caller, bucket: str, multipart: Multipart) -> Response:
    await services(request).storage.buckets.current(bucket)
    prefix, limit = _text_param(request, "prefix"), _max(request, "max-uploads")
    url = request.query_params.get("encoding-type") == "url"
    found = await multipart.uploads(caller.principal, bucket, prefix, limit + 1)
    items = [
        wire.element("Upload", wire.key_leaf("Key", name, url), wire.leaf("UploadId", upload_id),
                     wire.leaf("Initiated", wire.timestamp(created)), wire.leaf("StorageClass", "STANDARD"))
        for name, upload_id, created in found[:limit]
    ]
    return _xml(wire.document(
        "ListMultipartUploadsResult", wire.leaf("Bucket", bucket), wire.leaf("KeyMarker", ""),
        wire.leaf("UploadIdMarker", ""), wire.key_leaf("Prefix", prefix, url), wire.leaf("MaxUploads", limit),
        wire.leaf("IsTruncated", "true" if len(found) > limit else "false"), *items,
    ))
