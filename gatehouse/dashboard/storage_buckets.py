"""The dashboard's buckets: the list with each bucket's settings and what it holds, and the
create, edit, empty and delete forms.

Each change is one call of the function the storage API's bucket route calls
(``Buckets.create``, ``update``, ``empty``, ``delete``) with the body parsed by that route's own
form (``storage.forms.NewBucket``, ``BucketChanges``), so a bucket made here is held to the same
rules as one made through ``/storage/v1/bucket``. Emptying and deleting ask first.
"""

from __future__ import annotations

from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response

from gatehouse.core.errors import GatehouseError
from gatehouse.dashboard.pages import Visit, render, signed_in, signed_in_form
from gatehouse.dashboard.storage_objects import failed, show_folder
from gatehouse.dashboard.storage_pages import admin_claims, bucket_id, page_status, record, settings_body, storage
from gatehouse.storage.forms import BucketChanges, NewBucket


async def show_buckets(request: Request, current: Visit, *, status: int = 200, notice: str = "", error: str = "",
                       form: dict[str, str] | None = None) -> Response:
    service, claims = storage(request), admin_claims()
    buckets = await service.buckets.visible(claims)
    usage = await service.buckets.usage(claims)
    return render(request, current, "storage_buckets.html", status=status, buckets=buckets, usage=usage,
                  notice=notice, error=error, form=form or {}, section="storage")


async def list_buckets(request: Request) -> Response:
    """``GET /_/storage``"""
    current = await signed_in(request)
    if isinstance(current, Response):
        return current
    return await show_buckets(request, current)


async def create_bucket(request: Request) -> Response:
    """``POST /_/storage/buckets`` (``id``, ``public``, ``file_size_limit``, ``allowed_mime_types``)."""
    got = await signed_in_form(request)
    if isinstance(got, Response):
        return got
    current, data = got
    try:
        body = settings_body(data)
        form = NewBucket.parse({"id": data.get("id", "").strip(), **body})
        created = await storage(request).buckets.create(admin_claims(), form)
    except GatehouseError as problem:
        return await show_buckets(request, current, status=page_status(problem), error=problem.message, form=data)
    await record(request, current, "storage_bucket_create", created, {"bucket": created, **body})
    return await show_folder(request, current, created, "", notice=f"Bucket {created} created.")


async def edit_bucket(request: Request) -> Response:
    """``POST /_/storage/buckets/{bucket}/settings``: public, size limit, allowed types, inline documents."""
    got = await signed_in_form(request)
    if isinstance(got, Response):
        return got
    current, data = got
    try:
        bucket = bucket_id(request)
    except GatehouseError as problem:
        return failed(request, current, problem)
    try:
        body = settings_body(data)
        await storage(request).buckets.update(admin_claims(), bucket, BucketChanges.parse(body))
    except GatehouseError as problem:
        if problem.code == "NoSuchBucket":
            return failed(request, current, problem)
        return await show_folder(request, current, bucket, "", status=page_status(problem), error=problem.message)
    await record(request, current, "storage_bucket_update", bucket, {"bucket": bucket, **body})
    return await show_folder(request, current, bucket, "", notice="Bucket settings saved.")


async def _posted(request: Request) -> tuple[Visit, dict[str, str], str] | Response:
    """A signed-in form about the path's bucket, and that bucket's id (it must exist)."""
    got = await signed_in_form(request)
    if isinstance(got, Response):
        return got
    current, data = got
    try:
        return current, data, (await storage(request).buckets.get(admin_claims(), bucket_id(request))).id
    except GatehouseError as problem:
        return failed(request, current, problem)


def _confirm(request: Request, current: Visit, bucket: str, question: str) -> Response:
    return render(request, current, "confirm.html", question=question, action=request.url.path,
                  cancel=f"/_/storage/buckets/{quote(bucket)}", section="storage")


async def empty_bucket(request: Request) -> Response:
    """``POST /_/storage/buckets/{bucket}/empty``: asks first, then deletes every object."""
    got = await _posted(request)
    if isinstance(got, Response):
        return got
    current, data, bucket = got
    service = storage(request)
    try:
        if data.get("confirmed") != "yes":
            usage = (await service.buckets.usage(admin_claims())).get(bucket)
            count = usage.objects if usage else 0
            return _confirm(request, current, bucket, f"Empty bucket {bucket}? {count} "
                            f"object{'s' if count != 1 else ''} will be deleted for good.")
        await service.buckets.empty(admin_claims(), bucket)
    except GatehouseError as problem:
        return failed(request, current, problem)
    await record(request, current, "storage_bucket_empty", bucket, {"bucket": bucket})
    return await show_folder(request, current, bucket, "", notice=f"Bucket {bucket} emptied.")


async def delete_bucket(request: Request) -> Response:
    """``POST /_/storage/buckets/{bucket}/delete``: asks first; refused (409) while it holds objects."""
    got = await _posted(request)
    if isinstance(got, Response):
        return got
    current, data, bucket = got
    service = storage(request)
    if data.get("confirmed") != "yes":
        return _confirm(request, current, bucket, f"Delete bucket {bucket}? It must be empty.")
    try:
        await service.buckets.delete(admin_claims(), bucket)
    except GatehouseError as problem:
        return await show_folder(request, current, bucket, "", status=page_status(problem), error=problem.message)
    await record(request, current, "storage_bucket_delete", bucket, {"bucket": bucket})
    return await show_buckets(request, current, notice=f"Bucket {bucket} deleted.")
