"""The S3 protocol at ``/storage/v1/s3``: path-style S3 requests over storage's services.

One endpoint takes every request: it authenticates the SigV4 signature (``s3.auth``), then picks
the operation from the method, the path (``/{bucket}`` or ``/{bucket}/{key}``) and the query's
sub-resource (``?uploads``, ``?uploadId``, ``?delete``, ``?list-type=2``, ...), as S3 does.
Each operation parses, calls the same storage service the JSON API calls (``Objects``,
``Buckets``, ``listing``; multipart through ``s3.multipart``) and renders S3's XML
(``s3.wire``; listings in ``s3.listings``, multipart steps in ``s3.uploads``). Errors are S3's
XML (``s3.errors``), through a mount of its own.
"""

from __future__ import annotations

import base64
import re
from typing import Any
from urllib.parse import unquote

import orjson
from starlette._utils import get_route_path
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Mount, request_response
from starlette.types import Scope

from gatehouse.core.errors import GatehouseError
from gatehouse.core.http import ApiMount
from gatehouse.services import services
from gatehouse.storage import forms, names
from gatehouse.storage.s3 import listings, uploads, wire
from gatehouse.storage.s3.auth import S3Caller, authenticate
from gatehouse.storage.s3.body import Body
from gatehouse.storage.s3.errors import render_s3_error, s3_error
from gatehouse.storage.s3.multipart import Multipart
from gatehouse.storage.service import StorageService
from gatehouse.storage.serving import serve

#: Largest XML request body (DeleteObjects: 1000 keys of up to 1 KiB; Complete: 10,000 parts).
MAX_XML_BYTES = 2 * 1024 * 1024
MAX_DELETE_KEYS = 1000
#: Sub-resources S3 has and this endpoint does not: refused plainly rather than mistaken for a plain GET/PUT.
UNSUPPORTED = frozenset({
    "acl", "policy", "cors", "lifecycle", "tagging", "versions", "website", "logging", "notification",
    "replication", "encryption", "object-lock", "retention", "legal-hold", "torrent", "restore", "select",
    "accelerate", "analytics", "inventory", "metrics", "ownershipControls", "publicAccessBlock", "requestPayment",
    "intelligent-tiering", "attributes", "policyStatus", "versionId",
})


def _xml(body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(body, status_code=status, headers=headers, media_type="application/xml")


def _service(request: Request) -> StorageService:
    return services(request).storage


def _multipart(request: Request) -> Multipart:
    service = _service(request)
    return Multipart(service.db, service.backend, service.objects)


def _body(request: Request, caller: S3Caller) -> Body:
    return Body(request.stream(), caller.claimed, caller.key, request.headers)


def _user_metadata(request: Request) -> dict[str, str]:
    """``x-amz-meta-*`` headers, as the object's user metadata (storage's ``x-metadata``)."""
    found = {name[len("x-amz-meta-"):]: value for name, value in request.headers.items() if name.startswith("x-amz-meta-")}
    if not found:
        return {}
    return {"x-metadata": base64.b64encode(orjson.dumps(found)).decode()}


def _meta_headers(metadata: dict[str, Any] | None) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, value in (metadata or {}).items():
        text = str(value)
        if isinstance(name, str) and name.isascii() and name.replace("-", "").isalnum() and text.isprintable() \
                and text.isascii():
            headers[f"x-amz-meta-{name.lower()}"] = text
    return headers


# -- buckets ------------------------------------------------------------------------------------------


async def list_buckets(request: Request, caller: S3Caller) -> Response:
    found = await _service(request).buckets.visible(caller.claims)
    items = [wire.element("Bucket", wire.leaf("Name", b.id), wire.leaf("CreationDate", wire.timestamp(b.created_at)))
             for b in found]
    owner = wire.element("Owner", wire.leaf("ID", caller.principal), wire.leaf("DisplayName", caller.principal))
    return _xml(wire.document("ListAllMyBucketsResult", owner, wire.element("Buckets", *items)))


async def bucket_operation(request: Request, caller: S3Caller, bucket: str) -> Response:
    query, method, service = request.query_params, request.method, _service(request)
    if method == "GET" and "uploads" in query:
        return await listings.multipart_uploads(request, caller, bucket, _multipart(request))
    if method == "GET" and "location" in query:
        await service.buckets.get(caller.claims, bucket)
        return _xml(wire.document("LocationConstraint", wire.key_text(service.settings.storage_s3_region, False)))
    if method == "GET" and "versioning" in query:
        await service.buckets.get(caller.claims, bucket)
        return _xml(wire.document("VersioningConfiguration"))
    if method == "GET":
        await service.buckets.current(bucket)  # NoSuchBucket before an empty listing
        return await listings.list_objects(request, caller, bucket, v2=query.get("list-type") == "2")
    if method == "HEAD":
        await service.buckets.get(caller.claims, bucket)
        return Response(status_code=200, headers={"x-amz-bucket-region": service.settings.storage_s3_region})
    if method == "POST" and "delete" in query:
        return await delete_objects(request, caller, bucket)
    if method == "PUT":
        return await create_bucket(request, caller, bucket)
    if method == "DELETE":
        _service_only(caller, "delete a bucket")
        await service.buckets.delete(caller.claims, bucket)
        return Response(status_code=204)
    raise s3_error("MethodNotAllowed", "The specified method is not allowed against this resource.", 405)


def _service_only(caller: S3Caller, what: str) -> None:
    if not caller.is_service:
        raise s3_error("AccessDenied", f"Only an S3 access key (the service role) may {what}", 403)


async def create_bucket(request: Request, caller: S3Caller, bucket: str) -> Response:
    _service_only(caller, "create a bucket")
    raw = await _body(request, caller).read(MAX_XML_BYTES)
    if raw.strip():
        config = wire.parse(raw, root="CreateBucketConfiguration", limit=MAX_XML_BYTES)
        location = config.first("LocationConstraint")
        region = _service(request).settings.storage_s3_region
        if location is not None and location.text.strip() not in ("", region):
            raise s3_error("IllegalLocationConstraintException", f"This endpoint's region is {region}", 400)
    public = request.headers.get("x-amz-acl", "private") in ("public-read", "public-read-write")
    await _service(request).buckets.create(caller.claims, forms.NewBucket.parse({"id": bucket, "public": public}))
    return Response(status_code=200, headers={"Location": f"/{bucket}"})


async def delete_objects(request: Request, caller: S3Caller, bucket: str) -> Response:
    raw = await _body(request, caller).read(MAX_XML_BYTES)
    root = wire.parse(raw, root="Delete", limit=MAX_XML_BYTES)
    objects = root.all("Object")
    if not objects or len(objects) > MAX_DELETE_KEYS:
        raise s3_error("MalformedXML", f"Delete takes 1 to {MAX_DELETE_KEYS} Object elements", 400)
    quiet_node = root.first("Quiet")
    quiet = quiet_node is not None and quiet_node.text.strip().lower() == "true"
    await _service(request).buckets.current(bucket)
    keys, errors = [], []
    for node in objects:
        key_node = node.first("Key")
        if key_node is None:
            raise s3_error("MalformedXML", "Each Object needs a Key", 400)
        try:
            keys.append(names.object_name(key_node.text))
        except GatehouseError as exc:  # a bad name is reported for that key, as S3 does
            errors.append((key_node.text, "InvalidArgument", exc.message))
    removed = {obj.name for obj in await _service(request).objects.remove(caller.claims, bucket, keys)} if keys else set()
    deleted = [key for key in dict.fromkeys(keys) if key in removed or caller.is_service]
    errors += [(key, "AccessDenied", "The object does not exist, or you may not delete it")
               for key in dict.fromkeys(keys) if key not in deleted]
    parts = [] if quiet else [wire.element("Deleted", wire.leaf("Key", key)) for key in deleted]
    parts += [wire.element("Error", wire.leaf("Key", key), wire.leaf("Code", code), wire.leaf("Message", message))
              for key, code, message in errors]
    return _xml(wire.document("DeleteResult", *parts))


# -- objects -----------------------------------------------------------------------------------------


async def object_operation(request: Request, caller: S3Caller, bucket: str, key: str) -> Response:
    query, method = request.query_params, request.method
    names.object_name(key)
    if "uploadId" in query:
        return await uploads.operation(request, caller, bucket, key, _multipart(request), _body(request, caller))
    if method == "POST" and "uploads" in query:
        return await uploads.create(request, caller, bucket, key, _multipart(request), _content_type(request))
    if method in ("GET", "HEAD"):
        service = _service(request)
        obj = await service.objects.find(caller.claims, bucket, key)
        response = await serve(request, service, obj)
        response.headers.update(_meta_headers(obj.user_metadata))
        return response
    if method == "PUT" and "x-amz-copy-source" in request.headers:
        return await copy_object(request, caller, bucket, key)
    if method == "PUT":
        return await put_object(request, caller, bucket, key)
    if method == "DELETE":
        await _service(request).buckets.current(bucket)
        await _service(request).objects.remove(caller.claims, bucket, [key])
        return Response(status_code=204)
    raise s3_error("MethodNotAllowed", "The specified method is not allowed against this resource.", 405)


def _content_type(request: Request) -> str | None:
    value = request.headers.get("content-type")
    if value and value.split(";")[0].strip().lower() == "multipart/form-data":
        raise s3_error("InvalidArgument", "Objects of type multipart/form-data cannot be stored through S3", 400)
    return value


async def put_object(request: Request, caller: S3Caller, bucket: str, key: str) -> Response:
    body = _body(request, caller)
    headers = {"cache-control": request.headers["cache-control"]} if "cache-control" in request.headers else {}
    await _service(request).objects.upload(
        caller.claims, bucket, key, aiter(body), content_type=_content_type(request), content_length=body.length,
        headers=headers | _user_metadata(request), upsert=True,
    )
    return Response(status_code=200, headers={"ETag": body.etag})


def copy_source(value: str) -> tuple[str, str]:
    """``x-amz-copy-source``: ``[/]bucket/key`` URL-encoded (a ``?versionId`` is not supported)."""
    path, _, version = value.partition("?")
    if version and version != "versionId=null":
        raise s3_error("InvalidArgument", "Object versions are not supported: leave versionId out", 400)
    source = unquote(path, errors="strict").lstrip("/")
    bucket, _, key = source.partition("/")
    if not bucket or not key:
        raise s3_error("InvalidArgument", "x-amz-copy-source must be bucket/key", 400)
    return names.bucket_id(bucket), names.object_name(key)


async def copy_object(request: Request, caller: S3Caller, bucket: str, key: str) -> Response:
    service = _service(request)
    try:
        source_bucket, source_key = copy_source(request.headers["x-amz-copy-source"])
    except UnicodeDecodeError:
        raise s3_error("InvalidArgument", "x-amz-copy-source is not valid UTF-8 once decoded", 400) from None
    original = await service.objects.find(caller.claims, source_bucket, source_key)
    await service.objects.copy(caller.claims, forms.Transfer(source_bucket, source_key, bucket, key), upsert=True)
    copied = await service.objects.find(caller.claims, bucket, key) if caller.is_service else original
    return _xml(wire.document("CopyObjectResult", wire.leaf("ETag", original.etag),
                              wire.leaf("LastModified", wire.timestamp(copied.updated_at))))


# -- the one endpoint ------------------------------------------------------------------------------------


async def endpoint(request: Request) -> Response:
    caller = await authenticate(request)
    path: str = request.path_params.get("path", "")
    bucket, _, key = path.partition("/")
    unsupported = UNSUPPORTED.intersection(request.query_params.keys())
    if unsupported:
        raise s3_error("NotImplemented", f"The {min(unsupported)!r} sub-resource is not supported here", 501)
    if not bucket:
        if request.method != "GET":
            raise s3_error("MethodNotAllowed", "The specified method is not allowed against this resource.", 405)
        return await list_buckets(request, caller)
    names.bucket_id(bucket)
    if not key:
        return await bucket_operation(request, caller, bucket)
    return await object_operation(request, caller, bucket, key)


class S3Mount(Mount):
    """``/storage/v1/s3`` itself (botocore's ListBuckets has no trailing slash) and everything under
    it, object keys with any character included (a bad one is then refused by ``names``)."""

    def __init__(self, path: str) -> None:
        super().__init__(path, app=request_response(endpoint))
        self._pattern = re.compile("^" + re.escape(path) + r"(?:/(?P<path>[\s\S]*))?$")

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match = self._pattern.match(get_route_path(scope)) if scope["type"] == "http" else None
        if match is None:
            return Match.NONE, {}
        root_path = scope.get("root_path", "")
        return Match.FULL, {
            "path_params": {**scope.get("path_params", {}), "path": match.group("path") or ""},
            "app_root_path": scope.get("app_root_path", root_path),
            "root_path": root_path + self.path,
            "endpoint": self.app,
        }


#: The S3 protocol: its own mount, so that its errors are S3's XML; bodies stream and are capped per bucket.
MOUNT = ApiMount(S3Mount("/storage/v1/s3"), render_s3_error, key_required=False, token_at_edge=False, limit_body=False)
