"""The multipart upload operations of S3: Create, UploadPart, ListParts, Complete and Abort.

Handlers only: the rules (who may continue an upload, how parts are staged and checked, how the
object is written once) live in ``s3.multipart``.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from gatehouse.storage.s3 import wire
from gatehouse.storage.s3.auth import S3Caller
from gatehouse.storage.s3.body import Body
from gatehouse.storage.s3.errors import s3_error
from gatehouse.storage.s3.multipart import MAX_PART_NUMBER, Multipart, part_number

#: Largest CompleteMultipartUpload body: 10,000 parts with room for whitespace.
MAX_COMPLETE_BYTES = 2 * 1024 * 1024


def _xml(body: bytes) -> Response:
    return Response(body, media_type="application/xml")


async def create(request: Request, caller: S3Caller, bucket: str, key: str, multipart: Multipart,
                 content_type: str | None) -> Response:
    upload_id = await multipart.create(caller.principal, bucket, key, content_type, request.headers.get("cache-control"))
    return _xml(wire.document("InitiateMultipartUploadResult", wire.leaf("Bucket", bucket), wire.leaf("Key", key),
                              wire.leaf("UploadId", upload_id)))


async def operation(request: Request, caller: S3Caller, bucket: str, key: str, multipart: Multipart,
                    body: Body) -> Response:
    """A request naming ``?uploadId=``: which one it is, by method."""
    upload_id = request.query_params["uploadId"]
    method = request.method
    if method == "DELETE":
        await multipart.abort(caller.principal, bucket, key, upload_id)
        return Response(status_code=204)
    upload = await multipart.find(caller.principal, bucket, key, upload_id)
    if method == "PUT":
        if "x-amz-copy-source" in request.headers:
            raise s3_error("NotImplemented", "UploadPartCopy is not supported: copy the object, or upload the part", 501)
        number = part_number(request.query_params.get("partNumber"))
        etag = await multipart.put_part(caller.principal, upload, number, aiter(body), body.length)
        return Response(status_code=200, headers={"ETag": etag})
    if method == "GET":
        marker = request.query_params.get("part-number-marker", "0")
        limit = request.query_params.get("max-parts", "1000")
        if not marker.isdigit() or not limit.isdigit():
            raise s3_error("InvalidArgument", "part-number-marker and max-parts must be whole numbers", 400)
        max_parts = min(int(limit), 1000)
        found = await multipart.parts(upload, after=min(int(marker), MAX_PART_NUMBER), limit=max_parts + 1)
        shown = found[:max_parts]
        items = [wire.element("Part", wire.leaf("PartNumber", part.number),
                              wire.leaf("LastModified", wire.timestamp(part.last_modified)),
                              wire.leaf("ETag", part.etag), wire.leaf("Size", part.size)) for part in shown]
        truncated = len(found) > max_parts
        return _xml(wire.document(
            "ListPartsResult", wire.leaf("Bucket", bucket), wire.leaf("Key", key), wire.leaf("UploadId", upload_id),
            wire.leaf("PartNumberMarker", int(marker)),
            wire.leaf("NextPartNumberMarker", shown[-1].number if shown else int(marker)),
            wire.leaf("MaxParts", max_parts), wire.leaf("IsTruncated", "true" if truncated else "false"),
            wire.leaf("StorageClass", "STANDARD"), *items,
        ))
    if method == "POST":
        root = wire.parse(await body.read(MAX_COMPLETE_BYTES), root="CompleteMultipartUpload", limit=MAX_COMPLETE_BYTES)
        chosen: list[tuple[int, str]] = []
        for node in root.all("Part"):
            number_node, etag_node = node.first("PartNumber"), node.first("ETag")
            if number_node is None or etag_node is None:
                raise s3_error("MalformedXML", "Each Part needs a PartNumber and an ETag", 400)
            chosen.append((part_number(number_node.text.strip()), etag_node.text))
        if len(chosen) > MAX_PART_NUMBER:
            raise s3_error("MalformedXML", f"At most {MAX_PART_NUMBER} parts", 400)
        _, etag = await multipart.complete(caller.claims, caller.principal, upload, chosen)
        location = f"{str(request.base_url).rstrip('/')}/{bucket}/{key}"
        return _xml(wire.document("CompleteMultipartUploadResult", wire.leaf("Location", location),
                                  wire.leaf("Bucket", bucket), wire.leaf("Key", key), wire.leaf("ETag", etag)))
    raise s3_error("MethodNotAllowed", "The specified method is not allowed against this resource.", 405)
