"""Blobs in an S3-compatible object store (AWS S3, MinIO, R2, Ceph, ...), through aiobotocore.

Object names are ``<prefix><bucket_id>/<version>``. Small uploads are one PUT; above
``multipart_threshold`` the spooled file is sent in parts read from disk one at a time, so
memory stays at one part however large the file. Downloads stream the GET body (with a
``Range`` header for byte ranges) in chunks.

botocore's and aiohttp's exceptions stop at this backend (``s3_errors.translated``, in the
manner of httpx's ``map_httpcore_exceptions``): callers see BlobNotFound, InvalidRange or
BackendError, whose message names the endpoint and the bucket but never a credential. The bucket must exist;
Gatehouse does not create it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiobotocore.config import AioConfig  # type: ignore[import-untyped]
from aiobotocore.session import AioSession, get_session  # type: ignore[import-untyped]
from botocore.exceptions import ClientError  # type: ignore[import-untyped]

from gatehouse.storage.backends.base import (
    CHUNK_SIZE,
    Backend,
    BackendError,
    BlobNotFound,
    InvalidRange,
    Reader,
)
from gatehouse.storage.backends.keys import is_key, validate_key, validate_prefix
from gatehouse.storage.backends.s3_errors import no_bucket, translated

MiB = 1024 * 1024
GiB = 1024 * MiB
#: S3's limits: parts of 5 MiB to 5 GiB (the last may be smaller), at most 10,000 of them,
#: and a single CopyObject of at most 5 GiB.
MIN_PART_SIZE = 5 * MiB
MAX_PARTS = 10_000
MAX_COPY_SIZE = 5 * GiB

_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")


class S3Backend(Backend):
    def __init__(
        self,
        *,
        endpoint_url: str | None,
        bucket: str,
        spool_dir: Path,
        region: str = "us-east-1",
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        prefix: str = "",
        force_path_style: bool = True,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        attempts: int = 3,
        max_connections: int = 100,
        multipart_threshold: int = 8 * MiB,
        part_size: int = 8 * MiB,
        copy_part_size: int = 512 * MiB,
        max_copy_size: int = MAX_COPY_SIZE,
        session: AioSession | None = None,
    ) -> None:
        """Credentials left None come from botocore's usual chain (environment, ~/.aws, instance role).

        ``max_connections`` bounds concurrent requests, streaming downloads included: a
        download holds its connection until the client has read it all. ``session`` lets
        several backends share one botocore session (its loaded service models), as tests do.
        """
        if not bucket:
            raise ValueError("an S3 bucket name is required")
        if part_size < MIN_PART_SIZE or copy_part_size < MIN_PART_SIZE:
            raise ValueError(f"S3 parts must be at least {MIN_PART_SIZE} bytes")
        super().__init__(spool_dir)
        self.endpoint_url = endpoint_url or None
        self.bucket = bucket
        self.region = region
        self.prefix = _normalise_prefix(prefix)
        self.multipart_threshold = multipart_threshold
        self.part_size = part_size
        self.copy_part_size = copy_part_size
        self.max_copy_size = max_copy_size
        self._credentials = {
            "aws_access_key_id": access_key_id or None,
            "aws_secret_access_key": secret_access_key or None,
        }
        self._config = AioConfig(
            region_name=region,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"total_max_attempts": attempts, "mode": "standard"},
            s3={"addressing_style": "path" if force_path_style else "virtual"},
            max_pool_connections=max_connections,
            # Only checksums S3 insists on: many S3-compatible stores reject the newer defaults.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        self._session = session
        self._stack: AsyncExitStack | None = None
        self._s3: Any = None
        self._bucket_checked = False
        self._lock = asyncio.Lock()
        self._closed = False

    def __repr__(self) -> str:
        return f"S3Backend(endpoint={self._where!r}, bucket={self.bucket!r}, prefix={self.prefix!r})"

    @property
    def _where(self) -> str:
        """The endpoint for messages: scheme, host and port only (never a user:password part)."""
        if self.endpoint_url is None:
            return f"AWS S3 ({self.region})"
        parts = urlsplit(self.endpoint_url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")

    @property
    def location(self) -> str:
        return f"the S3 bucket {self.bucket!r} at {self._where}"

    def _name(self, key: str) -> str:
        return self.prefix + validate_key(key)

    # -- the client and the error boundary ---------------------------------------------------

    async def _client(self) -> Any:
        """The client, made on first use; the bucket is checked once before the first request."""
        if self._closed:
            raise RuntimeError("the S3 backend is closed")
        if self._bucket_checked:
            return self._s3
        async with self._lock:
            if self._s3 is None:
                stack = AsyncExitStack()
                with self._errors("connect"):
                    self._s3 = await stack.enter_async_context(
                        (self._session or get_session()).create_client(
                            "s3", endpoint_url=self.endpoint_url, config=self._config, **self._credentials
                        )
                    )
                self._stack = stack
            if not self._bucket_checked:
                await self._check_bucket(self._s3)
                self._bucket_checked = True
        return self._s3

    async def _check_bucket(self, client: Any) -> None:
        try:
            with self._errors("open the bucket"):
                await client.head_bucket(Bucket=self.bucket)
        except BackendError as exc:
            cause = exc.__cause__
            if isinstance(cause, ClientError):
                status = cause.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                if status == 404:
                    raise self._no_bucket() from cause
                if status == 301:
                    raise BackendError(
                        f"the S3 bucket {self.bucket!r} is in another region than {self.region!r}; "
                        "set GATEHOUSE_S3_REGION to the bucket's region"
                    ) from cause
            raise

    def _no_bucket(self) -> BackendError:
        return no_bucket(self.bucket, self._where)

    def _errors(self, action: str, key: str | None = None) -> contextlib.AbstractContextManager[None]:
        """Turn botocore/aiohttp failures into our errors (``s3_errors``). ``key``: a 404 means BlobNotFound(key)."""
        return translated(self.bucket, self._where, action, key)

    # -- the interface -----------------------------------------------------------------------

    async def check(self) -> None:
        await self._client()

    async def put(self, key: str, source: Path, *, content_type: str) -> None:
        name = self._name(key)
        source = Path(source)
        client = await self._client()
        try:
            size = (await asyncio.to_thread(source.stat)).st_size
            if size <= self.multipart_threshold:
                data = await asyncio.to_thread(source.read_bytes)
                with self._errors("store an object"):
                    await client.put_object(
                        Bucket=self.bucket, Key=name, Body=data, ContentType=content_type, ContentLength=len(data)
                    )
            else:
                await self._put_parts(client, name, source, size, content_type)
            await asyncio.to_thread(source.unlink, missing_ok=True)
        except OSError as exc:  # the spooled file, not the network (that is translated above)
            raise BackendError(f"cannot read the upload file: {exc.strerror or exc}") from exc

    async def _put_parts(self, client: Any, name: str, source: Path, size: int, content_type: str) -> None:
        part_size = max(self.part_size, -(-size // MAX_PARTS))
        with self._errors("start a multipart upload"):
            upload = await client.create_multipart_upload(Bucket=self.bucket, Key=name, ContentType=content_type)
        upload_id = upload["UploadId"]
        try:
            parts = []
            fd = await asyncio.to_thread(os.open, source, os.O_RDONLY)
            try:
                offset, number = 0, 1
                while offset < size:
                    data = await asyncio.to_thread(os.pread, fd, part_size, offset)
                    if not data:
                        raise BackendError("the upload file shrank while it was being sent")
                    with self._errors("upload a part"):
                        answer = await client.upload_part(
                            Bucket=self.bucket, Key=name, UploadId=upload_id, PartNumber=number, Body=data
                        )
                    parts.append({"ETag": answer["ETag"], "PartNumber": number})
                    offset, number = offset + len(data), number + 1
                    del data
            finally:
                os.close(fd)
            with self._errors("finish a multipart upload"):
                await client.complete_multipart_upload(
                    Bucket=self.bucket, Key=name, UploadId=upload_id, MultipartUpload={"Parts": parts}
                )
        except BaseException:
            await self._abort(client, name, upload_id)
            raise

    async def _abort(self, client: Any, name: str, upload_id: str) -> None:
        """Drop the parts already sent (best effort: a lifecycle rule should catch what this misses)."""
        with contextlib.suppress(Exception):
            await client.abort_multipart_upload(Bucket=self.bucket, Key=name, UploadId=upload_id)

    async def _open(self, key: str, start: int, end: int | None) -> Reader:
        name = self._name(key)
        client = await self._client()
        ranged = start > 0 or end is not None
        extra = {"Range": f"bytes={start}-{'' if end is None else end}"} if ranged else {}
        with self._errors("read an object", key):
            response = await client.get_object(Bucket=self.bucket, Key=name, **extra)
        body = response["Body"]
        try:
            match = _CONTENT_RANGE.fullmatch(str(response.get("ContentRange") or ""))
            if match is not None:
                first, last, size = (int(group) for group in match.groups())
                skip = 0
            else:  # the whole object: no Range asked, or a store that ignored it
                size = int(response["ContentLength"])
                first, last = 0, size - 1
                skip = 0
                if ranged:
                    if start >= size:
                        raise InvalidRange(size)
                    skip, first, last = start, start, size - 1 if end is None else min(end, size - 1)
            return _S3Reader(self, key, body, size, first, last, skip)
        except BaseException:
            body.close()
            raise

    async def size(self, key: str) -> int | None:
        name = self._name(key)
        client = await self._client()
        try:
            with self._errors("read an object's size", key):
                response = await client.head_object(Bucket=self.bucket, Key=name)
        except BlobNotFound:
            return None
        return int(response["ContentLength"])

    async def delete(self, key: str) -> None:
        name = self._name(key)
        client = await self._client()
        try:
            with self._errors("delete an object", key):
                await client.delete_object(Bucket=self.bucket, Key=name)
        except BlobNotFound:
            pass  # S3 says nothing for an absent key; some compatible stores say NoSuchKey

    async def copy(self, source: str, target: str) -> None:
        source_name, target_name = self._name(source), self._name(target)
        client = await self._client()
        try:
            with self._errors("copy an object", source):
                head = await client.head_object(Bucket=self.bucket, Key=source_name)
        except BlobNotFound:
            raise BlobNotFound(source) from None
        size = int(head["ContentLength"])
        copy_source = {"Bucket": self.bucket, "Key": source_name}
        if size <= self.max_copy_size:
            with self._errors("copy an object", source):
                await client.copy_object(Bucket=self.bucket, Key=target_name, CopySource=copy_source)
            return
        # Larger than one CopyObject may be: copy in parts, server side.
        with self._errors("start a multipart copy"):
            upload = await client.create_multipart_upload(
                Bucket=self.bucket, Key=target_name, ContentType=head.get("ContentType") or "application/octet-stream"
            )
        upload_id = upload["UploadId"]
        try:
            part_size = max(self.copy_part_size, -(-size // MAX_PARTS))
            parts = []
            for number, offset in enumerate(range(0, size, part_size), 1):
                last = min(offset + part_size, size) - 1
                with self._errors("copy a part", source):
                    answer = await client.upload_part_copy(
                        Bucket=self.bucket, Key=target_name, UploadId=upload_id, PartNumber=number,
                        CopySource=copy_source, CopySourceRange=f"bytes={offset}-{last}",
                    )
                parts.append({"ETag": answer["CopyPartResult"]["ETag"], "PartNumber": number})
            with self._errors("finish a multipart copy"):
                await client.complete_multipart_upload(
                    Bucket=self.bucket, Key=target_name, UploadId=upload_id, MultipartUpload={"Parts": parts}
                )
        except BaseException:
            await self._abort(client, target_name, upload_id)
            raise

    async def keys(self, prefix: str = "") -> AsyncIterator[tuple[str, datetime]]:
        validate_prefix(prefix)
        client = await self._client()
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix + prefix)
        with self._errors("list objects"):
            async for page in pages:
                for item in page.get("Contents", ()):
                    key = str(item["Key"])[len(self.prefix) :]
                    if is_key(key):
                        modified = item["LastModified"]
                        yield key, modified.astimezone(UTC) if modified.tzinfo else modified.replace(tzinfo=UTC)

    async def close(self) -> None:
        self._closed = True
        stack, self._stack, self._s3 = self._stack, None, None
        if stack is not None:
            await stack.aclose()


class _S3Reader:
    def __init__(self, backend: S3Backend, key: str, body: Any, size: int, start: int, end: int, skip: int) -> None:
        self.size, self.start, self.end = size, start, end
        self._backend = backend
        self._key = key
        self._body: Any = body
        self._skip = skip
        self._left = end - start + 1

    async def read(self) -> bytes:
        if self._body is None or self._left <= 0:
            return b""
        with self._backend._errors("read an object", self._key):
            while self._skip > 0:  # only for a store that ignored our Range header
                dropped = await self._body.read(min(CHUNK_SIZE, self._skip))
                if not dropped:
                    break
                self._skip -= len(dropped)
            data: bytes = await self._body.read(min(CHUNK_SIZE, self._left))
        if not data:
            raise BackendError("the S3 download ended before the object did")
        self._left -= len(data)
        return data

    async def aclose(self) -> None:
        self._close()

    def _close(self) -> None:
        body, self._body = self._body, None
        if body is not None:
            body.close()  # drops the connection if the body was not read to the end

    def __del__(self) -> None:
        # A download abandoned without aclose() (a client gone away) still frees its connection.
        with contextlib.suppress(Exception):
            self._close()


def _normalise_prefix(prefix: str) -> str:
    """``"gatehouse"`` → ``"gatehouse/"``; the prefix is a folder-like start of every object name."""
    prefix = (prefix or "").strip("/")
    if not prefix:
        return ""
    if "\0" in prefix or "\\" in prefix or any(part in ("", ".", "..") for part in prefix.split("/")):
        raise ValueError(f"invalid S3 key prefix {prefix!r}: use folder names separated by '/'")
    return prefix + "/"
