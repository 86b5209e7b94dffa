"""HTTP handlers of ``/storage/v1``: Supabase Storage's routes over ``StorageService``.

A handler parses (the path, and a JSON body into a ``storage.forms`` form), calls one service
and renders the result (``storage.wire``; object bytes through ``storage.serving``).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from starlette.convertors import Convertor, register_url_convertor
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route, compile_path

from gatehouse.core.caller import caller
from gatehouse.core.db import SessionEnded
from gatehouse.core.http import ApiMount, JSONResponse, read_json
from gatehouse.services import services
from gatehouse.storage import forms, listing, names, tus, wire
from gatehouse.storage.errors import access_denied, invalid, render_storage_error, storage_error
from gatehouse.storage.images import Transform
from gatehouse.storage.media import body_type
from gatehouse.storage.models import StoredObject
from gatehouse.storage.service import StorageService
from gatehouse.storage.serving import serve


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
    return services(request).storage


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
    new = await _service(request).objects.upload(
        claims if claims is not None else _claims(request) or {},
        bucket, name, request.stream(),
        content_type=request.headers.get("content-type"),
        content_length=int(length) if length and length.isdigit() else None,
        headers={k: v for k, v in request.headers.items() if k in ("cache-control", "x-metadata")},
        upsert=upsert,
    )
    return JSONResponse(wire.new_object_json(new))


async def download(request: Request) -> Response:
    bucket, name = _path(request)
    public = request.scope["path"].startswith("/storage/v1/object/public/")
    claims = None if public else _claims(request, required=not _maybe_public(request))
    obj = await _find(request, bucket, name, claims, public=public)
    return await serve(request, _service(request), obj)


def _maybe_public(request: Request) -> bool:
    """GET /object/{bucket}/{path} without credentials works for public buckets, as on Supabase."""
    return not request.scope["path"].startswith("/storage/v1/object/authenticated/")


async def _find(request: Request, bucket: str, name: str, claims: dict[str, Any] | None, *, public: bool) -> StoredObject:
    objects = _service(request).objects
    if claims is None and not public:
        return await objects.find(None, bucket, name, public=True)
    return await objects.find(claims, bucket, name, public=public, replica=True)


async def info(request: Request) -> Response:
    bucket, name = _path(request)
    public = "/object/info/public/" in request.scope["path"]
    claims = None if public else _claims(request, required=False)
    obj = await _find(request, bucket, name, claims, public=public)
    return JSONResponse(wire.info_json(obj))


# -- objects: list, delete, move, copy -------------------------------------------------------------


async def list_objects(request: Request) -> Response:
    body = await _json(request)
    claims = _claims(request) or {}
    bucket = names.bucket_id(request.path_params["bucket"])
    entries = await _service(request).objects.list_folder(claims, bucket, forms.ListOptions.parse(body))
    return JSONResponse([wire.entry_json(entry) for entry in entries])


async def list_objects_v2(request: Request) -> Response:
    page_request = listing.ListRequest.parse(await _json(request))
    service, bucket = _service(request), request.path_params["bucket"]
    page = await listing.list_v2(service.db, _claims(request) or {}, bucket, page_request)
    return JSONResponse(wire.page_json(page, bucket))


async def delete_many(request: Request) -> Response:
    prefixes = forms.name_list(await _json(request), "prefixes")
    removed = await _service(request).objects.remove(_claims(request) or {}, request.path_params["bucket"], prefixes)
    return JSONResponse([wire.object_json(obj) for obj in removed])


async def delete_one(request: Request) -> Response:
    bucket, name = _path(request)
    removed = await _service(request).objects.remove(_claims(request) or {}, bucket, [name])
    if not removed:
        raise storage_error("NoSuchKey", "Object not found", 404)
    return JSONResponse({"message": "Successfully deleted"})


async def move(request: Request) -> Response:
    transfer = forms.Transfer.parse(await _json(request))
    await _service(request).objects.move(_claims(request) or {}, transfer)
    return JSONResponse({"message": "Successfully moved"})


async def copy(request: Request) -> Response:
    transfer = forms.Transfer.parse(await _json(request))
    return JSONResponse(wire.new_object_json(await _service(request).objects.copy(_claims(request) or {}, transfer)))


# -- signed URLs -----------------------------------------------------------------------------------------


async def sign_one(request: Request) -> Response:
    bucket, name = _path(request)
    body = await _json(request)
    service = _service(request)
    expires_in = forms.expires_in(body, service.settings.storage_signed_url_max_expiry)
    transform = forms.signed_transform(body.get("transform"))
    obj = await service.objects.find(_claims(request) or {}, bucket, name)  # the caller must be able to read it
    token = service.signing.sign_download(obj, expires_in, transform=transform)
    route = "render/image" if transform else "object"  # as Supabase: a transformed URL renders
    return JSONResponse({"signedURL": f"/{route}/sign/{quote(bucket)}/{quote(name)}?token={token}"})


async def sign_many(request: Request) -> Response:
    bucket = request.path_params["bucket"]
    body = await _json(request)
    paths = forms.name_list(body, "paths")
    service, claims = _service(request), _claims(request) or {}
    expires_in = forms.expires_in(body, service.settings.storage_signed_url_max_expiry)
    results = []
    for name in paths:
        try:
            obj = await service.objects.find(claims, bucket, name)
        except SessionEnded:
            raise  # the caller, not the path, is refused
        except Exception:  # noqa: BLE001 - reported per path, as Supabase does
            results.append({"error": "Either the object does not exist or you do not have access to it",
                            "path": name, "signedURL": None})
            continue
        token = service.signing.sign_download(obj, expires_in)
        results.append({"error": None, "path": name, "signedURL": f"/object/sign/{quote(bucket)}/{quote(name)}?token={token}"})
    return JSONResponse(results)


async def signed_download(request: Request) -> Response:
    bucket, name = _path(request)
    obj, _ = await _signed_object(request, bucket, name)
    return await serve(request, _service(request), obj)


async def _signed_object(request: Request, bucket: str, name: str) -> tuple[StoredObject, dict[str, Any]]:
    """The object the URL's token grants, still the version it was signed for (no RLS: a capability),
    and the token's claims."""
    return await _service(request).signing.signed_object(request.query_params.get("token", ""), bucket, name)


async def sign_upload(request: Request) -> Response:
    bucket, name = _path(request)
    claims = _claims(request) or {}
    service = _service(request)
    await service.db.confirm_session(claims)
    await service.buckets.current(bucket)
    upsert = request.headers.get("x-upsert", "").lower() == "true"
    names.object_name(name)
    signer = {"role": claims.get("role", "anon"), "upsert": upsert}
    if claims.get("sub"):
        signer["sub"] = claims["sub"]
    if claims.get("session_id"):
        signer["session_id"] = claims["session_id"]  # the URL dies with the session that signed it
    token = service.signing.sign("storage.upload", bucket, name, service.settings.storage_signed_upload_expiry, **signer)
    url = f"/object/upload/sign/{quote(bucket)}/{quote(name)}?token={token}"
    return JSONResponse({"url": url, "token": token})


async def signed_upload(request: Request) -> Response:
    bucket, name = _path(request)
    grant = _service(request).signing.check_signed(request.query_params.get("token", ""), "storage.upload", bucket, name)
    signer = {"role": grant.get("role", "anon"), "sub": grant.get("sub")}
    if grant.get("session_id"):
        signer["session_id"] = grant["session_id"]
    return await upload(request, upsert=bool(grant.get("upsert")), claims=signer)


# -- images ------------------------------------------------------------------------------------------------


async def render(request: Request) -> Response:
    bucket, name = _path(request)
    mode = request.path_params["mode"]
    service = _service(request)
    transform = Transform.parse(request.query_params)
    claims: dict[str, Any] | None = None  # public and signed URLs render as for anonymous callers
    if mode == "public":
        obj = await service.objects.find(None, bucket, name, public=True)
    elif mode not in ("sign", "authenticated"):
        raise invalid("render mode must be public, authenticated or sign")
    elif mode == "sign":
        obj, grant = await _signed_object(request, bucket, name)
        if isinstance(grant.get("transform"), dict):  # fixed when signed: the query cannot change it
            transform = Transform.parse(grant["transform"])
    else:
        claims = _claims(request) or {}
        obj = await service.objects.find(claims, bucket, name)
    path, content_type = await service.renders.render(
        services(request).render_cache, obj, transform, claims, request.client.host if request.client else ""
    )
    headers = {"Cache-Control": str(obj.metadata.get("cacheControl") or "no-cache"), "X-Content-Type-Options": "nosniff"}
    return FileResponse(path, media_type=content_type, headers=headers)


# -- buckets -----------------------------------------------------------------------------------------------


async def buckets(request: Request) -> Response:
    service, claims = _service(request), _claims(request) or {}
    if request.method == "GET":
        return JSONResponse([wire.bucket_json(bucket) for bucket in await service.buckets.visible(claims)])
    bucket_id = await service.buckets.create(claims, forms.NewBucket.parse(await _json(request)))
    return JSONResponse({"name": bucket_id})


async def bucket(request: Request) -> Response:
    service, claims = _service(request), _claims(request) or {}
    bucket_id = request.path_params["bucket"]
    if request.method == "GET":
        return JSONResponse(wire.bucket_json(await service.buckets.get(claims, bucket_id)))
    if request.method == "PUT":
        body = await _json(request)
        names.bucket_id(bucket_id)
        await service.buckets.update(claims, bucket_id, forms.BucketChanges.parse(body))
        return JSONResponse({"message": "Successfully updated"})
    await service.buckets.delete(claims, bucket_id)
    return JSONResponse({"message": "Successfully deleted"})


async def empty_bucket(request: Request) -> Response:
    await _service(request).buckets.empty(_claims(request) or {}, request.path_params["bucket"])
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
    *tus.routes,
]

#: Storage's public URLs need no key, and its uploads stream (capped per bucket, not at the edge).
MOUNT = ApiMount(
    StorageMount("/storage/v1"), render_storage_error, key_required=False, token_at_edge=False, limit_body=False,
)
