"""A request body as the S3 client meant it, checked while it streams.

What the signature covers of the body is the declared ``x-amz-content-sha256``: a real SHA-256
is checked against the bytes as they pass; ``STREAMING-AWS4-HMAC-SHA256-PAYLOAD`` bodies come in
``aws-chunked`` framing, each chunk signed in a chain from the request's signature;
``STREAMING-UNSIGNED-PAYLOAD-TRAILER`` (what botocore sends over HTTPS) has unsigned chunks and a
trailing checksum. Any ``Content-MD5`` and ``x-amz-checksum-*`` value (a header, or a trailer)
is checked too. A mismatch raises at the end of the stream, before the consumer (the upload
spool) returns: the spooled file is removed and no row is written.

The MD5 of the decoded bytes is kept: it is the object's ETag, as every upload's.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import zlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

from gatehouse.storage.s3 import sigv4
from gatehouse.storage.s3.errors import s3_error

#: Longest chunk header or trailer line we read.
MAX_LINE = 4096
_CHUNK_HEADER = re.compile(rb"^([0-9a-fA-F]{1,16})(?:;chunk-signature=([0-9a-f]{64}))?$")


class _Crc32:
    def __init__(self) -> None:
        self.value = 0

    def update(self, data: bytes) -> None:
        self.value = zlib.crc32(data, self.value)

    def digest(self) -> bytes:
        return self.value.to_bytes(4, "big")


_CHECKSUMS: dict[str, Any] = {"crc32": _Crc32, "sha1": hashlib.sha1, "sha256": hashlib.sha256}


def _incomplete() -> Exception:
    return s3_error("IncompleteBody", "The request body ended before its aws-chunked framing did", 400)


class _Reader:
    """Lines and exact byte counts over an async byte stream."""

    def __init__(self, stream: AsyncIterator[bytes]) -> None:
        self._stream = stream
        self._buffer = bytearray()

    async def _fill(self) -> bool:
        async for chunk in self._stream:
            if chunk:
                self._buffer += chunk
                return True
        return False

    async def line(self) -> bytes:
        while True:
            end = self._buffer.find(b"\r\n")
            if 0 <= end <= MAX_LINE:
                line = bytes(self._buffer[:end])
                del self._buffer[: end + 2]
                return line
            if end > MAX_LINE or len(self._buffer) > MAX_LINE:
                raise s3_error("InvalidRequest", "An aws-chunked header or trailer line is too long", 400)
            if not await self._fill():
                raise _incomplete()

    async def pieces(self, count: int) -> AsyncIterator[bytes]:
        while count > 0:
            if not self._buffer and not await self._fill():
                raise _incomplete()
            piece = bytes(self._buffer[:count])
            del self._buffer[: len(piece)]
            count -= len(piece)
            yield piece

    async def at_end(self) -> bool:
        return not self._buffer and not await self._fill()


class Body:
    """Iterate it for the decoded bytes; raises an S3 error when they are not what was signed."""

    def __init__(self, stream: AsyncIterator[bytes], claimed: sigv4.Claimed, key: bytes, headers: Mapping[str, str]) -> None:
        self._stream = stream
        self._claimed = claimed
        self._key = key
        self._headers = headers
        self.md5 = hashlib.md5()
        self.size = 0
        self.streaming = claimed.payload in sigv4.STREAMING
        if self.streaming and "aws-chunked" not in headers.get("content-encoding", ""):
            raise s3_error("InvalidRequest", f"{claimed.payload} needs Content-Encoding: aws-chunked", 400)
        self._sha256 = hashlib.sha256() if len(claimed.payload) == 64 else None
        self._checksum_name, self._checksum_value = self._declared_checksum()
        self._checksum = _CHECKSUMS[self._checksum_name]() if self._checksum_name else None
        self._content_md5 = self._declared_md5()

    @property
    def length(self) -> int | None:
        """The decoded length the client declared, if it did (to refuse an oversized body early)."""
        value = self._headers.get("x-amz-decoded-content-length" if self.streaming else "content-length", "")
        return int(value) if value.isdigit() else None

    @property
    def etag(self) -> str:
        return f'"{self.md5.hexdigest()}"'

    def _declared_checksum(self) -> tuple[str | None, str | None]:
        trailer = self._headers.get("x-amz-trailer", "").strip().lower()
        names = [name for name in self._headers
                 if name.startswith("x-amz-checksum-") and name not in ("x-amz-checksum-type", "x-amz-checksum-mode")]
        if trailer:
            if not self.streaming or "," in trailer or not trailer.startswith("x-amz-checksum-"):
                raise s3_error("InvalidRequest", "x-amz-trailer must name one x-amz-checksum-* trailer of an "
                               "aws-chunked body", 400)
            names = [trailer]
        if len(names) > 1:
            raise s3_error("InvalidRequest", "Expecting a single x-amz-checksum- header", 400)
        if not names:
            return None, None
        algorithm = names[0].removeprefix("x-amz-checksum-")
        if algorithm not in _CHECKSUMS:
            raise s3_error("InvalidRequest", f"The checksum algorithm {algorithm!r} is not supported here; "
                           "use CRC32, SHA1 or SHA256", 400)
        return algorithm, None if trailer else self._headers[names[0]]

    def _declared_md5(self) -> bytes | None:
        value = self._headers.get("content-md5")
        if value is None:
            return None
        try:
            digest = base64.b64decode(value, validate=True)
        except binascii.Error:
            digest = b""
        if len(digest) != 16:
            raise s3_error("InvalidDigest", "The Content-MD5 you specified was invalid.", 400)
        return digest

    def _take(self, data: bytes) -> bytes:
        self.size += len(data)
        self.md5.update(data)
        if self._sha256 is not None:
            self._sha256.update(data)
        if self._checksum is not None:
            self._checksum.update(data)
        return data

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self.streaming:
            async for data in self._chunks():
                yield self._take(data)
        else:
            async for data in self._stream:
                yield self._take(data)
        self._finish()

    async def _chunks(self) -> AsyncIterator[bytes]:
        reader = _Reader(self._stream)
        signed = self._claimed.payload in (sigv4.STREAMING_SIGNED, sigv4.STREAMING_SIGNED_TRAILER)
        previous = self._claimed.signature
        while True:
            header = _CHUNK_HEADER.match(await reader.line())
            if header is None or bool(header.group(2)) != signed:
                raise s3_error("InvalidRequest", "A malformed aws-chunked chunk header", 400)
            size = int(header.group(1), 16)
            digest = hashlib.sha256()
            async for piece in reader.pieces(size):
                digest.update(piece)
                yield piece
            if signed:
                expected = sigv4.chunk_signature(self._key, self._claimed, previous, digest.hexdigest())
                if not sigv4.matches(header.group(2).decode(), expected):
                    raise s3_error("SignatureDoesNotMatch", "A chunk's signature does not match", 403)
                previous = expected
            if size == 0:
                break
            if await reader.line() != b"":
                raise s3_error("InvalidRequest", "A malformed aws-chunked chunk: no CRLF after its data", 400)
        await self._trailer(reader, previous)
        if not await reader.at_end():
            raise s3_error("InvalidRequest", "Bytes after the end of the aws-chunked body", 400)

    async def _trailer(self, reader: _Reader, previous: str) -> None:
        lines: list[bytes] = []
        while (line := await reader.line()) != b"":
            lines.append(line)
            if len(lines) > 8:
                raise s3_error("InvalidRequest", "Too many trailing headers", 400)
        trailers: dict[str, str] = {}
        for line in lines:
            name, colon, value = line.decode("latin-1").partition(":")
            if not colon:
                raise s3_error("InvalidRequest", "A malformed trailing header", 400)
            trailers[name.strip().lower()] = value.strip()
        if self._claimed.payload == sigv4.STREAMING_SIGNED_TRAILER:
            given = trailers.pop("x-amz-trailer-signature", "")
            signed = b"".join(line + b"\n" for line in lines if not line.lower().startswith(b"x-amz-trailer-signature"))
            if not sigv4.matches(given, sigv4.trailer_signature(self._key, self._claimed, previous, signed)):
                raise s3_error("SignatureDoesNotMatch", "The trailer's signature does not match", 403)
        if self._checksum_name is not None and self._checksum_value is None:
            found = trailers.get(f"x-amz-checksum-{self._checksum_name}")
            if found is None:
                raise s3_error("InvalidRequest", f"The x-amz-checksum-{self._checksum_name} trailer is missing", 400)
            self._checksum_value = found

    def _finish(self) -> None:
        if self._sha256 is not None and not sigv4.matches(self._claimed.payload, self._sha256.hexdigest()):
            raise s3_error("XAmzContentSHA256Mismatch",
                           "The provided 'x-amz-content-sha256' header does not match what was computed.", 400)
        if self.streaming:
            declared = self._headers.get("x-amz-decoded-content-length")
            if declared is not None and declared != str(self.size):
                raise s3_error("IncompleteBody", "The body's length is not its x-amz-decoded-content-length", 400)
        if self._content_md5 is not None and not sigv4.matches(
            base64.b64encode(self._content_md5).decode(), base64.b64encode(self.md5.digest()).decode()
        ):
            raise s3_error("BadDigest", "The Content-MD5 you specified did not match what we received.", 400)
        if self._checksum is not None and not sigv4.matches(
            self._checksum_value or "", base64.b64encode(self._checksum.digest()).decode()
        ):
            raise s3_error("BadDigest", f"The {str(self._checksum_name).upper()} you specified did not match the "
                           "calculated checksum.", 400)

    async def read(self, limit: int) -> bytes:
        """The whole (small) body, refused past ``limit`` bytes (XML requests)."""
        declared = self.length
        if declared is not None and declared > limit:
            raise s3_error("MalformedXML", f"The XML body is larger than {limit} bytes", 400)
        data = bytearray()
        async for piece in self:
            data += piece
            if len(data) > limit:
                raise s3_error("MalformedXML", f"The XML body is larger than {limit} bytes", 400)
        return bytes(data)
