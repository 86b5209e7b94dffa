"""A raw TUS 1.0.0 speaker for the resumable-upload tests: each request as the protocol spells it."""

from __future__ import annotations

import base64
from collections.abc import Iterable
from pathlib import Path
from typing import Self

import asyncpg
import httpx

from gatehouse.storage.backends.local import LocalBackend
from gatehouse.storage.janitor import BlobJanitor
from tests.support import RunningServer

CHUNK = 256 * 1024
ENDPOINT = "/storage/v1/upload/resumable"


def metadata(**values: str) -> str:
    return ",".join(f"{key} {base64.b64encode(value.encode()).decode()}" for key, value in values.items())


class Tus:
    """TUS requests against ``server`` with ``headers`` (the caller's key and token)."""

    def __init__(self, server: RunningServer, headers: dict[str, str]) -> None:
        self.server = server
        self.client = httpx.Client(base_url=server.url, headers={"Tus-Resumable": "1.0.0", **headers}, timeout=30)

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def create(self, bucket: str, name: str, length: int, *, body: bytes | None = None, upsert: bool = False,
               headers: dict[str, str] | None = None, **extra: str) -> httpx.Response:
        sent = {"Upload-Length": str(length), "Upload-Metadata": metadata(bucketName=bucket, objectName=name, **extra)}
        if upsert:
            sent["x-upsert"] = "true"
        if body is not None:
            sent["Content-Type"] = "application/offset+octet-stream"
        return self.client.post(ENDPOINT, headers=sent | (headers or {}), content=body)

    def url(self, bucket: str, name: str, length: int, *, upsert: bool = False) -> str:
        created = self.create(bucket, name, length, upsert=upsert)
        assert created.status_code == 201, created.text
        return created.headers["location"]

    def head(self, url: str) -> httpx.Response:
        return self.client.head(url)

    def patch(self, url: str, offset: int, data: bytes | Iterable[bytes], **headers: str) -> httpx.Response:
        sent = {"Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream"} | headers
        return self.client.patch(url, headers=sent, content=data)

    def delete(self, url: str) -> httpx.Response:
        return self.client.delete(url)

    def upload(self, url: str, data: bytes, chunk: int = CHUNK) -> httpx.Response:
        """Send ``data`` in chunks of ``chunk``; the last answer."""
        offset = 0
        while True:
            answer = self.patch(url, offset, data[offset:offset + chunk])
            assert answer.status_code == 204, answer.text
            offset = int(answer.headers["upload-offset"])
            if offset == len(data):
                return answer


async def collect_garbage(pool: asyncpg.Pool, storage: Path) -> None:
    """What the server's janitor does on its next round: delete the queued blobs."""
    backend = LocalBackend(storage)
    janitor = BlobJanitor(pool, backend)
    while await janitor.process():
        pass
    await backend.close()


def blobs(storage: Path, bucket: str) -> set[str]:
    folder = storage / "blobs" / bucket
    return {path.name for path in folder.iterdir()} if folder.is_dir() else set()
