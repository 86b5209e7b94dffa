"""The TUS 1.0.0 wire of ``/storage/v1/upload/resumable``, as Supabase Storage speaks it.

Handlers parse the protocol's headers, call ``storage.resumable`` and answer with its headers:
``Tus-Resumable`` on every answer; ``OPTIONS`` lists the version, the extensions (creation,
creation-with-upload, termination, expiration) and ``Tus-Max-Size``; a creation's
``Upload-Metadata`` names ``bucketName``, ``objectName`` and optionally ``contentType``,
``cacheControl`` and ``metadata`` (a JSON object), and other keys are ignored, as Supabase does
(Uppy sends its own); ``x-upsert: true`` lets the finished upload replace an object. The upload
URL is ``/storage/v1/upload/resumable/<id>``, the id base64url of ``<bucket>/<name>/<uuid>``.

Refusals keep storage's JSON error shape, but with the real HTTP status, since TUS clients act on
it (409 and 423 are retried after a ``HEAD``; another 4xx ends the upload).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import re
from email.utils import format_datetime
from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from gatehouse.core.caller import caller
from gatehouse.core.errors import GatehouseError
from gatehouse.services import services
from gatehouse.storage.errors import access_denied, invalid, render_storage_error, storage_error
from gatehouse.storage.media import cache_control, essence
from gatehouse.storage.resumable import Declared, ResumableUploads, Upload
from gatehouse.storage.upload import user_metadata

TUS_VERSION = "1.0.0"
EXTENSIONS = "creation,creation-with-upload,termination,expiration"
CHUNK_TYPE = "application/offset+octet-stream"
#: The metadata keys Supabase Storage reads; any other key is ignored.
KNOWN_KEYS = ("bucketName", "objectName", "contentType", "cacheControl", "metadata")
#: An Upload-Metadata header longer than this, or with more pairs, is refused (400).
MAX_METADATA_HEADER = 16 * 1024
MAX_METADATA_PAIRS = 32
_NUMBER = re.compile(r"[0-9]{1,19}")
_KEY = re.compile(r"[!-+\--~]+")  # printable ASCII without space and comma


def _uploads(request: Request) -> ResumableUploads:
    return services(request).storage.resumable


def _claims(request: Request) -> dict[str, Any]:
    found = caller(request).checked()
    if found.token is None and found.key == "none":
        raise access_denied("Authorization is required: send an access token or an API key")
    return found.db_claims()


def _number(value: str | None, header: str) -> int:
    if value is None:
        raise invalid(f"{header} header required")
    if not _NUMBER.fullmatch(value.strip()):
        raise invalid(f"{header} must be a non-negative integer")
    return int(value)


def parse_metadata(header: str | None) -> dict[str, str]:
    """``Upload-Metadata`` (``key base64,key base64,key``) as text values; 400 when malformed."""
    if header is None or not header.strip():
        raise storage_error("MetadataRequired", "Upload-Metadata header required (bucketName and objectName)", 400)
    if len(header) > MAX_METADATA_HEADER:
        raise invalid(f"Upload-Metadata must be at most {MAX_METADATA_HEADER} characters")
    pairs = header.split(",")
    if len(pairs) > MAX_METADATA_PAIRS:
        raise invalid(f"Upload-Metadata must have at most {MAX_METADATA_PAIRS} keys")
    values: dict[str, str] = {}
    for pair in pairs:
        key, _, encoded = pair.strip(" ").partition(" ")
        if not _KEY.fullmatch(key) or " " in encoded:
            raise invalid("Upload-Metadata must be comma-separated 'key base64value' pairs")
        if key in values:
            raise invalid(f"Upload-Metadata names {key!r} twice")
        try:
            values[key] = base64.b64decode(encoded, validate=True).decode("utf-8")
        except (binascii.Error, ValueError, UnicodeDecodeError):
            raise invalid(f"Upload-Metadata's {key!r} is not base64-encoded UTF-8") from None
    return values


def declared(request: Request, length: int) -> Declared:
    """What a creation declares, checked: the names as storage checks them, the type, cache and metadata."""
    values = parse_metadata(request.headers.get("upload-metadata"))
    bucket_id, name = values.get("bucketName"), values.get("objectName")
    if not bucket_id or not name:
        raise storage_error("MetadataRequired", "Upload-Metadata must name bucketName and objectName", 400)
    content_type = essence(values.get("contentType"), what="contentType")
    if content_type == "multipart/form-data":
        raise storage_error("InvalidMimeType", "contentType multipart/form-data is not an object's type", 400)
    return Declared(
        bucket_id=bucket_id, name=name, length=length,
        upsert=request.headers.get("x-upsert", "").lower() == "true",
        content_type=content_type,
        cache_control=cache_control(values.get("cacheControl")),
        user_metadata=user_metadata(values.get("metadata")),
        tus_metadata=",".join(
            f"{key} {base64.b64encode(values[key].encode()).decode()}" for key in KNOWN_KEYS if key in values
        ),
    )


def _url(request: Request, upload: Upload) -> str:
    base = services(request).settings.api_external_url
    origin = base.rstrip("/") if base else f"{request.url.scheme}://{request.url.netloc}"
    return f"{origin}/storage/v1/upload/resumable/{upload.token}"


def _headers(upload: Upload | None = None, /, **extra: str) -> dict[str, str]:
    headers = {"Tus-Resumable": TUS_VERSION}
    if upload is not None and not upload.finished:
        headers["Upload-Expires"] = format_datetime(upload.expires_at, usegmt=True)
    return headers | extra


def _refusal(request: Request, error: GatehouseError) -> Response:
    """Storage's error shape with the real HTTP status (TUS clients act on it)."""
    response = render_storage_error(request.scope, error)
    response.status_code = int(orjson.loads(bytes(response.body))["statusCode"])
    response.headers["Tus-Resumable"] = TUS_VERSION
    if response.status_code == 412:
        response.headers["Tus-Version"] = TUS_VERSION
    if request.method == "HEAD":
        return Response(status_code=response.status_code, headers=dict(response.headers.items()))
    return response


def _gone_away(request: Request) -> Response:
    """The client left mid-chunk (what resumable uploads are for): nothing of it was kept, and
    nobody reads this answer; the access log shows it."""
    return _refusal(request, invalid("the chunk ended before its last byte: nothing of it was kept"))


def _check_version(request: Request) -> None:
    if request.headers.get("tus-resumable") != TUS_VERSION:
        raise storage_error("TusError", f"Tus-Resumable must be {TUS_VERSION}", 412)


def _content_length(request: Request) -> int | None:
    value = request.headers.get("content-length")
    return int(value) if value is not None and _NUMBER.fullmatch(value) else None


def _has_body(request: Request) -> bool:
    length = _content_length(request)
    return bool(length) or "transfer-encoding" in request.headers


def _method(request: Request) -> str:
    """The method, or the one ``X-HTTP-Method-Override`` asks a POST to be (tus-js-client's option)."""
    override = request.headers.get("x-http-method-override", "").upper()
    return override if request.method == "POST" and override in ("PATCH", "DELETE", "HEAD") else request.method


async def options(request: Request) -> Response:
    max_size = services(request).settings.storage_max_file_size
    return Response(status_code=204, headers=_headers(
        **{"Tus-Version": TUS_VERSION, "Tus-Extension": EXTENSIONS, "Tus-Max-Size": str(max_size)}
    ))


async def create(request: Request) -> Response:
    try:
        _check_version(request)
        claims = _claims(request)
        if "upload-defer-length" in request.headers:
            raise invalid("Upload-Defer-Length is not supported: send Upload-Length")
        length = _number(request.headers.get("upload-length"), "Upload-Length")
        wanted = declared(request, length)
        with_body = _has_body(request)
        if with_body and request.headers.get("content-type", "").split(";")[0].strip().lower() != CHUNK_TYPE:
            raise storage_error("TusError", f"Content-Type must be {CHUNK_TYPE}", 415)
        uploads = _uploads(request)
        upload = await uploads.create(claims, wanted)
        if with_body or length == 0:
            try:
                upload = await uploads.append(claims, upload.token, 0, request.stream(), _content_length(request))
            except BaseException:
                with contextlib.suppress(Exception):
                    await uploads.drop(upload)  # the client never learns the URL: nothing may stay
                raise
    except GatehouseError as error:
        return _refusal(request, error)
    except ClientDisconnect:
        return _gone_away(request)
    headers = _headers(upload, Location=_url(request, upload))
    if with_body:
        headers["Upload-Offset"] = str(upload.offset)
    return Response(status_code=201, headers=headers)


async def resource(request: Request) -> Response:
    method = _method(request)
    if method == "OPTIONS":
        return await options(request)
    try:
        _check_version(request)
        claims = _claims(request)
        uploads, token = _uploads(request), request.path_params["upload_id"]
        if method == "HEAD":
            upload = await uploads.find(claims, token)
            headers = _headers(upload, **{
                "Upload-Offset": str(upload.offset), "Upload-Length": str(upload.length), "Cache-Control": "no-store",
            })
            if upload.tus_metadata:
                headers["Upload-Metadata"] = upload.tus_metadata
            return Response(status_code=200, headers=headers)
        if method == "DELETE":
            await uploads.terminate(claims, token)
            return Response(status_code=204, headers=_headers())
        if method != "PATCH":
            raise storage_error("TusError", f"{method} is not a TUS request for an upload", 405)
        if request.headers.get("content-type", "").split(";")[0].strip().lower() != CHUNK_TYPE:
            raise storage_error("TusError", f"Content-Type must be {CHUNK_TYPE}", 415)
        offset = _number(request.headers.get("upload-offset"), "Upload-Offset")
        upload = await uploads.append(claims, token, offset, request.stream(), _content_length(request))
    except GatehouseError as error:
        return _refusal(request, error)
    except ClientDisconnect:
        return _gone_away(request)
    headers = _headers(upload, **{"Upload-Offset": str(upload.offset)})
    if upload.finished:
        headers["Tus-Complete"] = "1"
    return Response(status_code=204, headers=headers)


routes = [
    Route("/upload/resumable", create, methods=["POST"]),
    Route("/upload/resumable", options, methods=["OPTIONS"]),
    Route("/upload/resumable/", create, methods=["POST"]),
    Route("/upload/resumable/", options, methods=["OPTIONS"]),
    Route("/upload/resumable/{upload_id}", resource, methods=["HEAD", "PATCH", "DELETE", "OPTIONS", "POST"]),
]
