"""HTTP handlers of ``/storage/v1``: Supabase Storage's routes and shapes over ``StorageService``."""

from __future__ import annotations

import os
from email.utils import format_datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from starlette.convertors import Convertor, register_url_convertor
from starlette.requests import Request
from starlette.responses import FileResponse, Response, StreamingResponse
from starlette.routing import Mount, Route, compile_path

from gatehouse.core.caller import caller
from gatehouse.core.db import SessionEnded
from gatehouse.core.http import ApiMount, JSONResponse, read_json
from gatehouse.storage import listing, names
from gatehouse.storage.errors import access_denied, invalid, render_storage_error, storage_error
from gatehouse.storage.files import LocalFileResponse
from gatehouse.storage.media import OBJECT_CSP, body_type, is_document
from gatehouse.storage.service import StorageService, StoredObject


class _ObjectPath(Convertor[str]):
    """Like Starlette's ``path``, but matching newlines too: a name with a control character is
    then refused by ``names.object_name`` (400 ``InvalidKey``) instead of matching no route."""

    regex = r"[\s\S]*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("objectpath", _ObjectPath())


class StorageMount(Mount):
    """Mounts the storage routes with a prefix that lets object names with newlines through too."""

    def __init__(self, path: str) -> None:
        super().__init__(path, routes=routes)
        self.path_regex, self.path_format, self.param_convertors = compile_path(self.path + "/{path:objectpath}")


def _service(request: Request) -> StorageService:
    return request.app.state.storage  # type: ignore[no-any-return]


def _claims(request: Request, *, required: bool = True) -> dict[str, Any] | None:
    """The caller's claims (a verified token's, else the API key's role); None if anonymous."""
    found = caller(request).checked()
    if found.token is None and found.key == "none":
        if required:
            raise access_denied("Authorization is required: send an access token or an API key")
        return None
    return found.db_claims()


async def _json(request: Request) -> dict[str, Any]:
    data: dict[str, Any] = await read_json(request)
    return data


def _expires_in(body: dict[str, Any], longest: int) -> int:
    value = body.get("expiresIn")
    try:
        seconds = int(value)  # supabase-py sends it as a string
    except (TypeError, ValueError):
        raise invalid("expiresIn must be a number of seconds") from None
    if not 1 <= seconds <= longest:
        raise invalid(f"expiresIn must be between 1 and {longest} seconds, got {seconds}")
    return seconds


def _path(request: Request) -> tuple[str, str]:
    bucket = request.path_params["bucket"]
    if bucket in names.RESERVED:  # /object/list-v2/x and the like are routes, never a bucket's objects
        raise storage_error("NotFound", f"Route {request.method}:{request.url.path} not found", 404)
    return bucket, request.path_params["path"]


# -- objects: upload, download, info -----------------------------------------------------------------


async def upload(request: Request, *, upsert: bool | None = None, claims: dict[str, Any] | None = None) -> Response:
    bucket, name = _path(request)
    if upsert is None:
        upsert = request.method == "PUT" or request.headers.get("x-upsert", "").lower() == "true"
    body_type(request.headers.get("content-type"))  # one valid media type, refused before the bucket's rules
    length = request.headers.get("content-length")
    result = await _service(request).upload(
        claims if claims is not None else _claims(request) or {},
        bucket, name, request.stream(),
        content_type=request.headers.get("content-type"),
        content_length=int(length) if length and length.isdigit() else None,
        headers={k: v for k, v in request.headers.items() if k in ("cache-control", "x-metadata")},
        upsert=upsert,
    )
    return JSONResponse(result)


async def download(request: Request) -> Response:
    bucket, name = _path(request)
    public = request.scope["path"].startswith("/storage/v1/object/public/")
    claims = None if public else _claims(request, required=not _maybe_public(request))
    obj = await _find(request, bucket, name, claims, public=public)
    return await _serve(request, obj)


def _maybe_public(request: Request) -> bool:
    """GET /object/{bucket}/{path} without credentials works for public buckets, as on Supabase."""
    return not request.scope["path"].startswith("/storage/v1/object/authenticated/")


async def _find(request: Request, bucket: str, name: str, claims: dict[str, Any] | None, *, public: bool) -> StoredObject:
    service = _service(request)
    if claims is None and not public:
        return await service.find(None, bucket, name, public=True)
    return await service.find(claims, bucket, name, public=public)


async def _serve(request: Request, obj: StoredObject) -> Response:
    """The object's bytes (whole, a range, or headers only) with headers no stored value can break.

    Whatever the type, the response is sandboxed (``OBJECT_CSP``: no script runs in it) and never
    sniffed. Types a browser renders as documents (HTML, SVG, XML, ...) are attachments unless
    the bucket serves them inline (``storage.buckets.inline_documents``). The type and cache
    directive were made safe when the row was read (``media.safe_metadata``).
    """
    service = _service(request)
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
        is_document(content_type) and not (await service.bucket(obj.bucket_id)).inline_documents
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
            start, end = _parse_range(requested, size)
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
    return StreamingResponse(service.backend.open(obj.key, start, end), status_code=status, headers=headers,
                             media_type=content_type)


def _parse_range(value: str, size: int) -> tuple[int, int]:
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


def _info(obj: StoredObject) -> dict[str, Any]:
    metadata = obj.metadata
    return {
        "id": str(obj.id), "name": obj.name, "version": obj.version, "bucket_id": obj.bucket_id,
        "size": obj.size, "content_type": metadata.get("mimetype"), "cache_control": metadata.get("cacheControl"),
        "etag": obj.etag, "metadata": obj.user_metadata or {}, "last_modified": obj.updated_at.isoformat(),
        "created_at": obj.created_at.isoformat(),
    }


async def info(request: Request) -> Response:
    bucket, name = _path(request)
    public = "/object/info/public/" in request.scope["path"]
    claims = None if public else _claims(request, required=False)
    obj = await _find(request, bucket, name, claims, public=public)
    return JSONResponse(_info(obj))


# -- objects: list, delete, move, copy -------------------------------------------------------------


async def list_objects(request: Request) -> Response:
    body = await _json(request)
    if "prefix" not in body:
        body["prefix"] = ""
    return JSONResponse(await _service(request).list(_claims(request) or {}, request.path_params["bucket"], body))


async def list_objects_v2(request: Request) -> Response:
    page_request = listing.ListRequest.parse(await _json(request))
    service = _service(request)
    return JSONResponse(await listing.list_v2(service.db, _claims(request) or {}, request.path_params["bucket"], page_request))


async def delete_many(request: Request) -> Response:
    body = await _json(request)
    prefixes = body.get("prefixes")
    if not isinstance(prefixes, list) or not all(isinstance(p, str) for p in prefixes) or len(prefixes) > 1000:
        raise invalid("prefixes must be a list of at most 1000 object names")
    return JSONResponse(await _service(request).remove(_claims(request) or {}, request.path_params["bucket"], prefixes))


async def delete_one(request: Request) -> Response:
    bucket, name = _path(request)
    deleted = await _service(request).remove(_claims(request) or {}, bucket, [name])
    if not deleted:
        raise storage_error("NoSuchKey", "Object not found", 404)
    return JSONResponse({"message": "Successfully deleted"})


def _move_args(body: dict[str, Any]) -> tuple[str, str, str, str]:
    values = [body.get("bucketId"), body.get("sourceKey"), body.get("destinationKey")]
    if not all(isinstance(v, str) and v for v in values):
        raise invalid("bucketId, sourceKey and destinationKey are required strings")
    target_bucket = body.get("destinationBucket") or values[0]
    if not isinstance(target_bucket, str):
        raise invalid("destinationBucket must be a string")
    return values[0], values[1], target_bucket, values[2]  # type: ignore[return-value]


async def move(request: Request) -> Response:
    bucket, source, target_bucket, target = _move_args(await _json(request))
    await _service(request).move(_claims(request) or {}, bucket, source, target_bucket, target)
    return JSONResponse({"message": "Successfully moved"})


async def copy(request: Request) -> Response:
    bucket, source, target_bucket, target = _move_args(await _json(request))
    return JSONResponse(await _service(request).copy(_claims(request) or {}, bucket, source, target_bucket, target))


# -- signed URLs -----------------------------------------------------------------------------------------


async def sign_one(request: Request) -> Response:
    bucket, name = _path(request)
    body = await _json(request)
    service = _service(request)
    expires_in = _expires_in(body, service.settings.storage_signed_url_max_expiry)
    transform = _signed_transform(body.get("transform"))
    obj = await service.find(_claims(request) or {}, bucket, name)  # the caller must be able to read it
    token = service.sign_download(obj, expires_in, transform=transform)
    route = "render/image" if transform else "object"  # as Supabase: a transformed URL renders
    return JSONResponse({"signedURL": f"/{route}/sign/{quote(bucket)}/{quote(name)}?token={token}"})


def _signed_transform(value: Any) -> dict[str, str] | None:
    """The transformation a signed URL fixes (``transform``, as the clients send it), checked as a
    render would check it; None if there is none."""
    from gatehouse.storage.images import Transform

    if value is None:
        return None
    if not isinstance(value, dict) or not all(
        isinstance(item, int | str) and not isinstance(item, bool) for item in value.values()
    ):
        raise invalid("transform must be an object of width, height, resize, quality and format")
    params = {key: str(item) for key, item in value.items() if key in ("width", "height", "resize", "quality", "format")}
    Transform.parse(params)
    return params or None


async def sign_many(request: Request) -> Response:
    bucket = request.path_params["bucket"]
    body = await _json(request)
    paths = body.get("paths")
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths) or len(paths) > 1000:
        raise invalid("paths must be a list of at most 1000 object names")
    service, claims = _service(request), _claims(request) or {}
    expires_in = _expires_in(body, service.settings.storage_signed_url_max_expiry)
    results = []
    for name in paths:
        try:
            obj = await service.find(claims, bucket, name)
        except SessionEnded:
            raise  # the caller, not the path, is refused
        except Exception:  # noqa: BLE001 - reported per path, as Supabase does
            results.append({"error": "Either the object does not exist or you do not have access to it",
                            "path": name, "signedURL": None})
            continue
        token = service.sign_download(obj, expires_in)
        results.append({"error": None, "path": name, "signedURL": f"/object/sign/{quote(bucket)}/{quote(name)}?token={token}"})
    return JSONResponse(results)


async def signed_download(request: Request) -> Response:
    bucket, name = _path(request)
    obj, _ = await _signed_object(request, bucket, name)
    return await _serve(request, obj)


async def _signed_object(request: Request, bucket: str, name: str) -> tuple[StoredObject, dict[str, Any]]:
    """The object the URL's token grants, still the version it was signed for (no RLS: a capability),
    and the token's claims."""
    return await _service(request).signed_object(request.query_params.get("token", ""), bucket, name)


async def sign_upload(request: Request) -> Response:
    bucket, name = _path(request)
    claims = _claims(request) or {}
    service = _service(request)
    await service.db.confirm_session(claims)
    await service.bucket(bucket)
    upsert = request.headers.get("x-upsert", "").lower() == "true"
    names.object_name(name)
    signer = {"role": claims.get("role", "anon"), "upsert": upsert}
    if claims.get("sub"):
        signer["sub"] = claims["sub"]
    if claims.get("session_id"):
        signer["session_id"] = claims["session_id"]  # the URL dies with the session that signed it
    token = service.sign("storage.upload", bucket, name, service.settings.storage_signed_upload_expiry, **signer)
    url = f"/object/upload/sign/{quote(bucket)}/{quote(name)}?token={token}"
    return JSONResponse({"url": url, "token": token})


async def signed_upload(request: Request) -> Response:
    bucket, name = _path(request)
    service = _service(request)
    grant = service.check_signed(request.query_params.get("token", ""), "storage.upload", bucket, name)
    signer = {"role": grant.get("role", "anon"), "sub": grant.get("sub")}
    if grant.get("session_id"):
        signer["session_id"] = grant["session_id"]
    return await upload(request, upsert=bool(grant.get("upsert")), claims=signer)


# -- images ------------------------------------------------------------------------------------------------


async def render(request: Request) -> Response:
    from gatehouse.storage.images import Transform

    bucket, name = _path(request)
    mode = request.path_params["mode"]
    service = _service(request)
    transform = Transform.parse(request.query_params)
    claims: dict[str, Any] | None = None  # public and signed URLs render as for anonymous callers
    if mode == "public":
        obj = await service.find(None, bucket, name, public=True)
    elif mode not in ("sign", "authenticated"):
        raise invalid("render mode must be public, authenticated or sign")
    elif mode == "sign":
        obj, grant = await _signed_object(request, bucket, name)
        if isinstance(grant.get("transform"), dict):  # fixed when signed: the query cannot change it
            transform = Transform.parse(grant["transform"])
    else:
        claims = _claims(request) or {}
        obj = await service.find(claims, bucket, name)
    downloaded: list[Path] = []

    async def on_miss() -> None:
        await service.count_render(claims, request.client.host if request.client else "")

    async def source() -> Path:
        local = await service.local_copy(obj)
        if service.backend.local_path(obj.key) is None:
            downloaded.append(local)  # a copy made for rendering: ours to remove
        return local

    try:
        path, content_type = await request.app.state.render_cache.get_or_render(
            obj.key, source, transform, max_input_pixels=service.render_pixel_limit(claims), on_miss=on_miss
        )
    finally:
        for copy_path in downloaded:
            copy_path.unlink(missing_ok=True)
    headers = {"Cache-Control": str(obj.metadata.get("cacheControl") or "no-cache"), "X-Content-Type-Options": "nosniff"}
    return FileResponse(path, media_type=content_type, headers=headers)


# -- buckets -----------------------------------------------------------------------------------------------


async def buckets(request: Request) -> Response:
    service, claims = _service(request), _claims(request) or {}
    if request.method == "GET":
        return JSONResponse(await service.list_buckets(claims))
    bucket_id = await service.create_bucket(claims, await _json(request))
    return JSONResponse({"name": bucket_id})


async def bucket(request: Request) -> Response:
    service, claims = _service(request), _claims(request) or {}
    bucket_id = request.path_params["bucket"]
    if request.method == "GET":
        return JSONResponse(await service.get_bucket(claims, bucket_id))
    if request.method == "PUT":
        await service.update_bucket(claims, bucket_id, await _json(request))
        return JSONResponse({"message": "Successfully updated"})
    await service.delete_bucket(claims, bucket_id)
    return JSONResponse({"message": "Successfully deleted"})


async def empty_bucket(request: Request) -> Response:
    await _service(request).empty_bucket(_claims(request) or {}, request.path_params["bucket"])
    return JSONResponse({"message": "Successfully emptied"})


routes = [
    Route("/bucket", buckets, methods=["GET", "POST"]),
    Route("/bucket/{bucket}/empty", empty_bucket, methods=["POST"]),
    Route("/bucket/{bucket}", bucket, methods=["GET", "PUT", "DELETE"]),
    Route("/object/list/{bucket}", list_objects, methods=["POST"]),
    Route("/object/list-v2/{bucket}", list_objects_v2, methods=["POST"]),
    Route("/object/move", move, methods=["POST"]),
    Route("/object/copy", copy, methods=["POST"]),
    Route("/object/sign/{bucket}/{path:objectpath}", sign_one, methods=["POST"]),
    Route("/object/sign/{bucket}/{path:objectpath}", signed_download, methods=["GET", "HEAD"]),
    Route("/object/sign/{bucket}", sign_many, methods=["POST"]),
    Route("/object/upload/sign/{bucket}/{path:objectpath}", sign_upload, methods=["POST"]),
    Route("/object/upload/sign/{bucket}/{path:objectpath}", signed_upload, methods=["PUT"]),
    Route("/object/info/public/{bucket}/{path:objectpath}", info, methods=["GET"]),
    Route("/object/info/authenticated/{bucket}/{path:objectpath}", info, methods=["GET"]),
    Route("/object/info/{bucket}/{path:objectpath}", info, methods=["GET"]),
    Route("/object/public/{bucket}/{path:objectpath}", download, methods=["GET", "HEAD"]),
    Route("/object/authenticated/{bucket}/{path:objectpath}", download, methods=["GET", "HEAD"]),
    Route("/object/{bucket}/{path:objectpath}", upload, methods=["POST", "PUT"]),
    Route("/object/{bucket}/{path:objectpath}", download, methods=["GET", "HEAD"]),
    Route("/object/{bucket}/{path:objectpath}", delete_one, methods=["DELETE"]),
    Route("/object/{bucket}", delete_many, methods=["DELETE"]),
    Route("/render/image/{mode:str}/{bucket}/{path:objectpath}", render, methods=["GET"]),
]

#: Storage's public URLs need no key, and its uploads stream (capped per bucket, not at the edge).
MOUNT = ApiMount(
    "/storage/v1", StorageMount("/storage/v1"), render_storage_error, key_required=False, token_at_edge=False,
    limit_body=False,
)
