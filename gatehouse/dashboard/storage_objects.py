"""A bucket's objects in the dashboard: one folder at a time (keyset pages of ``list-v2``, the
storage API's own listing), one object's metadata, thumbnails, downloads, moves and deletes.

Thumbnails are rendered by the image renderer that ``/storage/v1/render/image`` uses (same
cache, same limits) and sent from here only as the PNG, JPEG or WebP it encodes, with
``nosniff`` and a sandbox. A download never sends the object's bytes from ``/_/``: the
dashboard checks the session, then redirects to a signed URL of the storage API valid for
``DOWNLOAD_SECONDS`` and asking for an attachment, so the storage API's serving rules
(``Content-Disposition: attachment``, ``nosniff``, the sandbox, the separate storage origin when
one is set) apply as for any other download.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

from starlette.requests import Request
from starlette.responses import FileResponse, Response

from gatehouse.core.errors import GatehouseError
from gatehouse.dashboard.pages import Visit, client_ip, finish, redirect, render, signed_in, signed_in_form
from gatehouse.dashboard.storage_pages import (
    DOWNLOAD_SECONDS,
    admin_claims,
    bucket_id,
    crumbs,
    folder,
    object_name,
    page_status,
    parent,
    record,
    storage,
)
from gatehouse.services import services
from gatehouse.storage import listing, names
from gatehouse.storage.forms import Transfer
from gatehouse.storage.images import Transform, can_render
from gatehouse.storage.media import OBJECT_CSP
from gatehouse.storage.models import StoredObject

PAGE_SIZE = 50
#: Thumbnail sizes: in the folder list, and on an object's page.
SIZES = {"s": 96, "m": 320}


def failed(request: Request, current: Visit, error: GatehouseError) -> Response:
    return render(request, current, "error.html", status=page_status(error), title="Refused", message=error.message,
                  section="storage")


def folder_link(bucket: str, prefix: str, cursor: str | None = None) -> str:
    query = [("prefix", prefix)] if prefix else []
    if cursor:
        query.append(("cursor", cursor))
    return f"/_/storage/buckets/{quote(bucket, safe='')}" + ("?" + urlencode(query) if query else "")


def _entry(prefix: str, entry: Any) -> dict[str, Any]:
    """One line of the folder list: a folder, or an object with what the table shows."""
    label = entry.name[len(prefix):]
    if entry.is_folder:
        return {"folder": True, "label": label.rstrip("/"), "name": entry.name}
    metadata = entry.metadata if isinstance(entry.metadata, dict) else {}
    mimetype = str(metadata.get("mimetype") or "")
    return {"folder": False, "label": label, "name": entry.name, "size": metadata.get("size"), "mimetype": mimetype,
            "updated_at": entry.updated_at, "thumbnail": can_render(mimetype)}


async def show_folder(request: Request, current: Visit, bucket: str, prefix: str, cursor: str | None = None, *,
                      status: int = 200, notice: str = "", error: str = "") -> Response:
    """The folder page: breadcrumbs, one page of folders and objects, the upload and bucket forms."""
    service, claims = storage(request), admin_claims()
    try:
        found = await service.buckets.get(claims, bucket)
        page_request = listing.ListRequest(prefix, PAGE_SIZE, True, "name", False,
                                           listing.Cursor.decode(cursor) if cursor else None)
        page = await listing.list_v2(service.db, claims, bucket, page_request)
    except GatehouseError as problem:
        return failed(request, current, problem)
    links = {"next": folder_link(bucket, prefix, page.next_cursor.encode()) if page.next_cursor else None,
             "first": folder_link(bucket, prefix) if cursor else None}
    return render(request, current, "storage_bucket.html", status=status, bucket=found, prefix=prefix,
                  crumbs=crumbs(prefix), entries=[_entry(prefix, entry) for entry in page.entries], links=links,
                  notice=notice, error=error, section="storage", folder_link=folder_link)


async def browse(request: Request) -> Response:
    """``GET /_/storage/buckets/{bucket}?prefix=a/b/&cursor=...``"""
    current = await signed_in(request)
    if isinstance(current, Response):
        return current
    try:
        bucket, prefix = bucket_id(request), folder(request.query_params.get("prefix", ""))
    except GatehouseError as problem:
        return failed(request, current, problem)
    return await show_folder(request, current, bucket, prefix, request.query_params.get("cursor") or None)


async def show_object(request: Request, current: Visit, obj: StoredObject, *, status: int = 200, notice: str = "",
                      error: str = "", target: str | None = None) -> Response:
    buckets = await storage(request).buckets.visible(admin_claims())
    return render(request, current, "storage_object.html", status=status, obj=obj, prefix=parent(obj.name),
                  crumbs=crumbs(parent(obj.name)), thumbnail=can_render(str(obj.metadata.get("mimetype") or "")),
                  buckets=buckets, target=obj.name if target is None else target, notice=notice, error=error,
                  section="storage", folder_link=folder_link)


async def _named(request: Request) -> tuple[Visit, str, str] | Response:
    """A signed-in administrator and the bucket and object (``name``) a page is about, or the
    response to send instead."""
    current = await signed_in(request)
    if isinstance(current, Response):
        return current
    try:
        return current, bucket_id(request), object_name(request.query_params.get("name", ""))
    except GatehouseError as problem:
        return failed(request, current, problem)


async def detail(request: Request) -> Response:
    """``GET /_/storage/buckets/{bucket}/object?name=...``: one object's metadata and actions."""
    named = await _named(request)
    if isinstance(named, Response):
        return named
    current, bucket, name = named
    try:
        obj = await storage(request).objects.find(admin_claims(), bucket, name)
    except GatehouseError as problem:
        return failed(request, current, problem)
    return await show_object(request, current, obj)


async def thumbnail(request: Request) -> Response:
    """``GET /_/storage/buckets/{bucket}/thumbnail?name=...&size=s|m``: a small render of an image."""
    named = await _named(request)
    if isinstance(named, Response):
        return named
    current, bucket, name = named
    side = SIZES.get(request.query_params.get("size", "s"))
    if side is None:
        return finish(Response("size must be s or m", status_code=400, media_type="text/plain"), current)
    service, claims = storage(request), admin_claims()
    try:
        obj = await service.objects.find(claims, bucket, name)
        if not can_render(str(obj.metadata.get("mimetype") or "")):
            return finish(Response("not an image the renderer takes", status_code=404, media_type="text/plain"),
                          current)
        path, content_type = await service.renders.render(
            services(request).render_cache, obj, Transform(width=side, height=side, resize="cover"), claims,
            client_ip(request),
        )
    except GatehouseError as problem:
        return finish(Response(problem.message, status_code=page_status(problem), media_type="text/plain"), current)
    response = finish(FileResponse(path, media_type=content_type), current)
    response.headers["Content-Security-Policy"] = OBJECT_CSP
    return response


async def download(request: Request) -> Response:
    """``GET /_/storage/buckets/{bucket}/download?name=...``: a redirect to a short-lived signed URL
    of the storage API that answers with an attachment."""
    named = await _named(request)
    if isinstance(named, Response):
        return named
    current, bucket, name = named
    service = storage(request)
    try:
        obj = await service.objects.find(admin_claims(), bucket, name)
    except GatehouseError as problem:
        return failed(request, current, problem)
    token = service.signing.sign_download(obj, DOWNLOAD_SECONDS)
    await record(request, current, "storage_object_download", f"{obj.bucket_id}/{obj.name}",
                 {"bucket": obj.bucket_id, "name": obj.name})
    return redirect(current, f"/storage/v1/object/sign/{quote(obj.bucket_id)}/{quote(obj.name)}?"
                    + urlencode({"token": token, "download": ""}))


async def _posted(request: Request) -> tuple[Visit, dict[str, str], StoredObject] | Response:
    """A signed-in form about one object (``name``) of the path's bucket, and that object."""
    got = await signed_in_form(request)
    if isinstance(got, Response):
        return got
    current, data = got
    try:
        obj = await storage(request).objects.find(admin_claims(), bucket_id(request), object_name(data.get("name", "")))
    except GatehouseError as problem:
        return failed(request, current, problem)
    return current, data, obj


async def remove(request: Request) -> Response:
    """``POST /_/storage/buckets/{bucket}/remove`` (``name``; asks first, then ``confirmed=yes``)."""
    got = await _posted(request)
    if isinstance(got, Response):
        return got
    current, data, obj = got
    if data.get("confirmed") != "yes":
        return render(request, current, "confirm.html", question=f"Delete {obj.name} from {obj.bucket_id}? "
                      "Its bytes cannot be brought back.", action=request.url.path, fields={"name": obj.name},
                      cancel=f"/_/storage/buckets/{quote(obj.bucket_id)}/object?" + urlencode({"name": obj.name}),
                      section="storage")
    try:
        removed = await storage(request).objects.remove(admin_claims(), obj.bucket_id, [obj.name])
    except GatehouseError as problem:
        return await show_object(request, current, obj, status=page_status(problem), error=problem.message)
    if not removed:
        return failed(request, current, GatehouseError("not_found", "The object is already gone.", status=404))
    await record(request, current, "storage_object_delete", f"{obj.bucket_id}/{obj.name}",
                 {"bucket": obj.bucket_id, "name": obj.name, "size": obj.size})
    return await show_folder(request, current, obj.bucket_id, parent(obj.name), notice=f"Deleted {obj.name}.")


async def move(request: Request) -> Response:
    """``POST /_/storage/buckets/{bucket}/move`` (``name``, ``target``, ``target_bucket``): the
    storage service's move, with the target bucket's rules."""
    got = await _posted(request)
    if isinstance(got, Response):
        return got
    current, data, obj = got
    target = data.get("target", "").strip()
    target_bucket = data.get("target_bucket", "") or obj.bucket_id
    service = storage(request)
    try:
        transfer = Transfer(obj.bucket_id, obj.name, names.bucket_id(target_bucket), object_name(target))
        await service.objects.move(admin_claims(), transfer)
        moved = await service.objects.find(admin_claims(), transfer.target_bucket, transfer.target)
    except GatehouseError as problem:
        return await show_object(request, current, obj, status=page_status(problem), error=problem.message,
                                 target=target)
    await record(request, current, "storage_object_move", f"{obj.bucket_id}/{obj.name}",
                 {"bucket": obj.bucket_id, "name": obj.name, "to_bucket": moved.bucket_id, "to_name": moved.name})
    return await show_object(request, current, moved, notice=f"Moved to {moved.bucket_id}/{moved.name}.")
