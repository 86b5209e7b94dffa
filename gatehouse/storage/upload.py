"""Spool an upload to a temporary file: raw bodies and multipart forms, as the clients send them.

The body streams to disk in chunks (memory stays flat whatever the size), its MD5 (the ETag)
and first bytes (for type sniffing) are taken on the way, and the size limit is enforced while
streaming: an oversized upload stops at the limit, not after the whole body has arrived. On any
failure the temporary file is removed, so nothing half-written is ever left behind.

supabase-py sends ``multipart/form-data`` with ``cacheControl``, optional ``metadata`` and the
file part ``file``; supabase-js sends either a form whose file part has an empty name, or the
raw bytes with ``content-type``, ``cache-control`` and ``x-metadata`` (base64 JSON). The first
part with a filename (or named ``file`` or ``""``) is the file, whatever its name.

What is stored comes back as response headers, so it is checked here (``storage.media``): the
declared type (the raw body's ``Content-Type``, a form's ``contentType`` field or file part type)
must be exactly one media type, and ``cacheControl`` printable ASCII; both are refused with 400.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import orjson
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from gatehouse.core.errors import GatehouseError
from gatehouse.core.http import has_nul, too_large
from gatehouse.storage.errors import invalid
from gatehouse.storage.media import body_type, cache_control, essence
from gatehouse.storage.sniff import HEAD_BYTES

MAX_FIELD_BYTES = 64 * 1024


@dataclass
class Spooled:
    path: Path
    size: int
    etag: str
    head: bytes
    content_type: str | None
    cache_control: str | None
    user_metadata: dict[str, Any] | None = None

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


#: Asked once when a body passes its limit, for the limit in force now (it may have been raised).
Recheck = Callable[[], Awaitable[int]]


@dataclass
class _Sink:
    """Writes the file's bytes, counting and hashing them, and stops at the limit.

    With ``recheck`` (the limit came from a remembered copy of the bucket), passing ``limit``
    only marks the sink ``over``, up to ``hard_limit``; the reading loop then asks ``recheck``
    for the limit in force and stops there if the body is still over it.
    """

    handle: BinaryIO
    limit: int
    hard_limit: int
    recheck: Recheck | None = None
    over: bool = False
    size: int = 0
    head: bytearray = field(default_factory=bytearray)
    digest: Any = field(default_factory=hashlib.md5)

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.limit:
            if self.recheck is None or self.size > self.hard_limit:
                raise too_large(self.limit if self.recheck is None else self.hard_limit)
            self.over = True
        if len(self.head) < HEAD_BYTES:
            self.head += data[: HEAD_BYTES - len(self.head)]
        self.digest.update(data)
        self.handle.write(data)

    async def confirm(self) -> None:
        """After a chunk that went over: the limit in force decides (asked once per upload)."""
        if not self.over or self.recheck is None:
            return
        recheck, self.recheck, self.over = self.recheck, None, False
        self.limit = await recheck()
        if self.size > self.limit:
            raise too_large(self.limit)


def _new_temp(spool_dir: Path) -> tuple[Path, BinaryIO]:
    path = spool_dir / f"upload-{secrets.token_hex(16)}.part"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    return path, os.fdopen(fd, "wb")


async def spool(
    stream: AsyncIterator[bytes],
    *,
    spool_dir: Path,
    content_type: str | None,
    headers: dict[str, str],
    limit: int,
    hard_limit: int | None = None,
    recheck: Recheck | None = None,
) -> Spooled:
    """Read the whole upload body from ``stream`` into a temporary file under ``spool_dir``.

    ``limit`` stops the body while it arrives; with ``recheck``, passing it first asks for the
    limit in force (never beyond ``hard_limit``).
    """
    media, options = parse_options_header(content_type or "")
    raw_type = body_type(content_type)  # one valid media type, or refused before any byte is read
    path, handle = _new_temp(spool_dir)
    sink = _Sink(handle, limit, max(limit, hard_limit or limit), recheck)
    try:
        with handle:
            if media == b"multipart/form-data":
                boundary = options.get(b"boundary")
                if not boundary:
                    raise invalid("multipart body without a boundary")
                fields = await _multipart(stream, boundary, sink)
                file_type = essence(fields.pop("__file_content_type__", None), what="the file part's Content-Type")
                declared = essence(fields.get("contentType"), what="contentType") or file_type
                cache = cache_control(fields.get("cacheControl"))
                metadata = user_metadata(fields.get("metadata"))
            else:
                async for chunk in stream:
                    sink.write(chunk)
                    await sink.confirm()
                declared = raw_type
                cache = cache_control(headers.get("cache-control"))
                metadata = _base64_json(headers.get("x-metadata"))
            handle.flush()  # durability comes from the backend's fsync before it moves the file into place
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return Spooled(path, sink.size, sink.digest.hexdigest(), bytes(sink.head), declared, cache, metadata)


async def _multipart(stream: AsyncIterator[bytes], boundary: bytes, sink: _Sink) -> dict[str, str]:
    fields: dict[str, str] = {}
    state: dict[str, Any] = {"headers": {}, "field": b"", "value": b"", "name": None, "file": False, "done": False}
    buffer = bytearray()

    def on_part_begin() -> None:
        state.update(headers={}, name=None, file=False)
        buffer.clear()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state["value"] += data[start:end]

    def on_header_end() -> None:
        state["headers"][state["field"].decode("latin-1").lower()] = state["value"].decode("latin-1")
        state["field"], state["value"] = b"", b""

    def on_headers_finished() -> None:
        _, disposition = parse_options_header(state["headers"].get("content-disposition", ""))
        name = disposition.get(b"name", b"").decode("utf-8", "replace")
        has_filename = b"filename" in disposition
        state["name"] = name
        state["file"] = not state["done"] and (has_filename or name in ("", "file"))
        if state["file"]:
            fields["__file_content_type__"] = state["headers"].get("content-type", "")

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if state["file"]:
            sink.write(data[start:end])
        else:
            buffer.extend(data[start:end])
            if len(buffer) > MAX_FIELD_BYTES:
                raise invalid(f"form field {state['name']!r} is larger than {MAX_FIELD_BYTES} bytes")

    def on_part_end() -> None:
        if state["file"]:
            state["done"] = True
        elif state["name"]:
            fields[state["name"]] = buffer.decode("utf-8", "replace")

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    try:
        async for chunk in stream:
            parser.write(chunk)
            await sink.confirm()
        parser.finalize()
    except GatehouseError:
        raise
    except FormParserError as exc:  # the parser's own errors: a malformed body
        raise invalid(f"malformed multipart body: {exc}") from None
    if not state["done"]:
        raise invalid("the form has no file part")
    return fields


#: Largest user metadata an object may carry, as JSON text.
MAX_METADATA_BYTES = 8192


def user_metadata(value: str | None) -> dict[str, Any] | None:
    """User metadata sent as JSON text (a form field, a TUS metadata value): an object of at most
    ``MAX_METADATA_BYTES``, or None when absent; raises ``InvalidRequest`` otherwise."""
    if not value:
        return None
    if len(value.encode()) > MAX_METADATA_BYTES:
        raise invalid(f"metadata must be at most {MAX_METADATA_BYTES} bytes of JSON")
    try:
        parsed = orjson.loads(value)
    except orjson.JSONDecodeError:
        raise invalid("metadata must be a JSON object") from None
    if not isinstance(parsed, dict) or has_nul(parsed):
        raise invalid("metadata must be a JSON object without NUL characters")
    return parsed


def _base64_json(value: str | None) -> dict[str, Any] | None:
    if not value:
        return None
    try:
        return user_metadata(base64.b64decode(value, validate=True).decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise invalid("x-metadata must be base64-encoded JSON") from None
