"""Uploads from the dashboard's form: ``POST /_/storage/upload/{bucket}`` as ``multipart/form-data``.

The form's fields come before its file (``csrf``, ``folder``, ``name``, ``upsert``,
``metadata``; browsers send them in the page's order), so they are read first, within
:data:`MAX_FIELDS_BYTES`, and the CSRF token is checked before a byte of the file is read. The
file part is then streamed, as it arrives, into ``Objects.upload``, the function the storage
API's upload route calls: the bucket's size limit stops it while it streams (413, the spooled
part removed, no row written), and its allowed types, the checks on the bytes and the name
rules apply as to any upload. This path is exempt from the app's JSON body cap
(:data:`STREAMED_PREFIX`) because storage caps it itself.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request
from starlette.responses import Response

from gatehouse.core.errors import GatehouseError
from gatehouse.dashboard.pages import refused, signed_in
from gatehouse.dashboard.sessions import csrf_matches
from gatehouse.dashboard.storage_objects import failed, show_folder
from gatehouse.dashboard.storage_pages import (
    admin_claims,
    bad,
    bucket_id,
    folder,
    object_name,
    page_status,
    record,
    storage,
)
from gatehouse.storage.media import essence
from gatehouse.storage.upload import user_metadata

#: The dashboard's upload route: exempt from the app's body cap (storage caps the stream).
STREAMED_PREFIX = "/_/storage/upload/"
#: Most bytes of form fields (and part headers) before the file part, and after it.
MAX_FIELDS_BYTES = 64 * 1024


class FormStream:
    """Feeds a multipart body to the parser: fields until the file part begins, then the file's
    bytes handed on in the order they arrive."""

    def __init__(self, boundary: bytes) -> None:
        self.fields: dict[str, str] = {}
        self.filename = ""
        self.file_type: str | None = None
        self.in_file = self.file_done = False
        self._pending: list[bytes] = []
        self._headers: dict[str, str] = {}
        self._header = [b"", b""]
        self._name = ""
        self._buffer = bytearray()
        self._seen = 0  # bytes of fields and part headers, bounded by MAX_FIELDS_BYTES
        self._parser = MultipartParser(boundary, {
            "on_part_begin": self._begin, "on_header_field": self._header_field,
            "on_header_value": self._header_value, "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished, "on_part_data": self._data, "on_part_end": self._end,
        })

    def _count(self, size: int) -> None:
        self._seen += size
        if self._seen > MAX_FIELDS_BYTES:
            raise bad(f"The form's fields are larger than {MAX_FIELDS_BYTES} bytes.", 413)

    def _begin(self) -> None:
        self._headers, self._name = {}, ""
        self._buffer.clear()

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._count(end - start)
        self._header[0] += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._count(end - start)
        self._header[1] += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._header[0].decode("latin-1").lower()] = self._header[1].decode("latin-1")
        self._header = [b"", b""]

    def _headers_finished(self) -> None:
        _, disposition = parse_options_header(self._headers.get("content-disposition", ""))
        self._name = disposition.get(b"name", b"").decode("utf-8", "replace")
        if b"filename" in disposition and not self.file_done:
            self.in_file = True
            self.filename = disposition[b"filename"].decode("utf-8", "replace")
            self.file_type = self._headers.get("content-type") or None

    def _data(self, data: bytes, start: int, end: int) -> None:
        if self.in_file:
            self._pending.append(data[start:end])
        else:
            self._count(end - start)
            self._buffer.extend(data[start:end])

    def _end(self) -> None:
        if self.in_file:
            self.in_file, self.file_done = False, True
        elif self._name and not self.file_done:
            self.fields[self._name] = self._buffer.decode("utf-8", "replace")

    def write(self, chunk: bytes) -> None:
        try:
            self._parser.write(chunk)
        except FormParserError as exc:
            raise bad(f"The upload is not a valid form: {exc}") from None

    def finalize(self) -> None:
        try:
            self._parser.finalize()
        except FormParserError as exc:
            raise bad(f"The upload is not a valid form: {exc}") from None

    def take(self) -> list[bytes]:
        found, self._pending = self._pending, []
        return found


async def _fields(form: FormStream, body: AsyncIterator[bytes]) -> None:
    """Read until the file part begins (or the body ends)."""
    async for chunk in body:
        form.write(chunk)
        if form.in_file or form.file_done:
            return
    form.finalize()


async def _file(form: FormStream, body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The file part's bytes, then the rest of the body parsed (and bounded) to its end."""
    for piece in form.take():
        yield piece
    async for chunk in body:
        form.write(chunk)
        for piece in form.take():
            yield piece
    form.finalize()
    if not form.file_done:
        raise bad("The form ended inside the file.")


def _target(form: FormStream) -> tuple[str, str, dict[str, str]]:
    """The folder, the object's full name and the storage headers (``x-metadata``) of the form."""
    prefix = folder(form.fields.get("folder", ""))
    name = form.fields.get("name", "").strip() or form.filename
    if not name:
        raise bad("Choose a file to upload.")
    headers: dict[str, str] = {}
    metadata_text = form.fields.get("metadata", "").strip()
    if metadata_text:
        user_metadata(metadata_text)  # refused here (400) as the storage API refuses it
        headers["x-metadata"] = base64.b64encode(metadata_text.encode()).decode()
    kind = essence(form.file_type, what="the file's type")
    if kind is not None and kind.startswith("multipart/"):
        raise bad("A file's type may not be multipart.", 415)
    return prefix, object_name(prefix + name), headers


async def upload(request: Request) -> Response:
    """``POST /_/storage/upload/{bucket}``"""
    current = await signed_in(request)
    if isinstance(current, Response):
        return current
    media, options = parse_options_header(request.headers.get("content-type", ""))
    if media != b"multipart/form-data" or not options.get(b"boundary"):
        return failed(request, current, bad("Upload with the form (multipart/form-data).", 415))
    form = FormStream(options[b"boundary"])
    body = request.stream().__aiter__()
    try:
        await _fields(form, body)
    except GatehouseError as problem:
        return failed(request, current, problem)
    if not (csrf_matches(current.csrf, form.fields.get("csrf")) or
            csrf_matches(current.csrf, request.headers.get("x-csrf-token"))):
        return refused(request, current)
    try:
        bucket = bucket_id(request)
    except GatehouseError as problem:
        return failed(request, current, problem)
    prefix = form.fields.get("folder", "")
    try:
        prefix, name, headers = _target(form)
        if not (form.in_file or form.file_done):
            raise bad("Choose a file to upload.")
        upsert = form.fields.get("upsert") == "yes"
        await storage(request).objects.upload(
            admin_claims(), bucket, name, _file(form, body), content_type=form.file_type, content_length=None,
            headers=headers, upsert=upsert,
        )
        size = (await storage(request).objects.find(admin_claims(), bucket, name)).size
    except GatehouseError as problem:
        if problem.code == "NoSuchBucket":
            return failed(request, current, problem)
        try:
            shown = folder(prefix)
        except GatehouseError:
            shown = ""
        return await show_folder(request, current, bucket, shown, status=page_status(problem), error=problem.message)
    await record(request, current, "storage_object_upload", f"{bucket}/{name}",
                 {"bucket": bucket, "name": name, "size": size, "upsert": upsert})
    return await show_folder(request, current, bucket, prefix, notice=f"Uploaded {name}.")
