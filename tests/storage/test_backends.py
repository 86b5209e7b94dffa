"""The blob-store contract, run against every backend: the local folder, the in-memory fake, and S3.

The S3 case talks to a real S3-compatible server (SeaweedFS's S3 gateway, the session's, on a
loopback port), over HTTP, through the same aiobotocore client production uses.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import hashlib
import itertools
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from aiobotocore.session import get_session
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

from gatehouse.core.config import ConfigError, load_settings
from gatehouse.core.embedded import free_port
from gatehouse.storage.backends import (
    CHUNK_SIZE,
    Backend,
    BackendError,
    BlobNotFound,
    BlobStream,
    InvalidRange,
    LocalBackend,
    MemoryBackend,
    S3Backend,
    create_backend,
    validate_key,
)
from tests.deploy.components import SeaweedS3

MiB = 1024 * 1024
ACCESS_KEY = SeaweedS3.access_key
SECRET_KEY = SeaweedS3.secret_key
_buckets = itertools.count(1)
#: One botocore session for the module: each new one loads the S3 service model again.
SESSION = get_session()


def key(bucket: str = "avatars") -> str:
    return f"{bucket}/{uuid.uuid4()}"


# -- the S3 server -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def s3_endpoint(seaweedfs: SeaweedS3) -> str:
    return seaweedfs.endpoint


@contextmanager
def _nothing() -> Iterator[None]:
    yield


class S3Admin:
    """Direct access to the S3 server, to set the scene and look behind the backend."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint

    def _client(self) -> Any:
        return SESSION.create_client(
            "s3", endpoint_url=self.endpoint, region_name="us-east-1",
            aws_access_key_id=SeaweedS3.admin_key, aws_secret_access_key=SeaweedS3.admin_secret,
        )

    async def create_bucket(self) -> str:
        name = f"gatehouse-test-{next(_buckets)}"
        async with self._client() as client:
            await client.create_bucket(Bucket=name)
        return name

    async def delete_bucket(self, name: str) -> None:
        async with self._client() as client:
            listing = await client.list_objects_v2(Bucket=name)
            for item in listing.get("Contents", []):
                await client.delete_object(Bucket=name, Key=item["Key"])
            await client.delete_bucket(Bucket=name)

    async def names(self, bucket: str) -> list[str]:
        async with self._client() as client:
            listing = await client.list_objects_v2(Bucket=bucket)
            return sorted(item["Key"] for item in listing.get("Contents", []))

    async def head(self, bucket: str, name: str) -> dict[str, Any]:
        async with self._client() as client:
            return dict(await client.head_object(Bucket=bucket, Key=name))

    async def uploads(self, bucket: str) -> list[dict[str, Any]]:
        async with self._client() as client:
            return list((await client.list_multipart_uploads(Bucket=bucket)).get("Uploads", []))


@pytest.fixture(scope="module")
def s3_admin(s3_endpoint: str) -> S3Admin:
    return S3Admin(s3_endpoint)


def s3_backend(endpoint: str, bucket: str, spool: Path, **options: Any) -> S3Backend:
    return S3Backend(
        endpoint_url=endpoint, bucket=bucket, spool_dir=spool,
        access_key_id=ACCESS_KEY, secret_access_key=SECRET_KEY, session=SESSION, **options,
    )


@pytest.fixture(params=["local", "memory", "s3"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    store: Backend
    if request.param == "local":
        store = LocalBackend(tmp_path / "storage")
    elif request.param == "memory":
        store = MemoryBackend(tmp_path / "spool")
    else:
        admin: S3Admin = request.getfixturevalue("s3_admin")
        store = s3_backend(admin.endpoint, await admin.create_bucket(), tmp_path / "spool")
    try:
        yield store
    finally:
        await store.close()


def spooled(store: Backend, data: bytes) -> Path:
    """A finished upload file in the spool, as the storage service leaves it."""
    path = store.spool_dir / f"upload-{uuid.uuid4().hex}.part"
    path.write_bytes(data)
    return path


async def put(store: Backend, data: bytes, blob: str | None = None, content_type: str = "text/plain") -> str:
    blob = blob or key()
    await store.put(blob, spooled(store, data), content_type=content_type)
    return blob


async def read(stream: BlobStream) -> bytes:
    return b"".join([chunk async for chunk in stream])


# -- the contract --------------------------------------------------------------------------------


async def test_put_moves_the_file_into_place(backend: Backend) -> None:
    source = spooled(backend, b"hello, world")
    blob = key()
    await backend.put(blob, source, content_type="text/plain")
    assert not source.exists(), "put consumes the spooled file"
    assert await backend.size(blob) == 12
    assert await read(backend.open(blob)) == b"hello, world"
    await backend.check()


async def test_put_replaces_a_blob(backend: Backend) -> None:
    blob = await put(backend, b"first")
    await put(backend, b"second, longer", blob)
    assert await read(backend.open(blob)) == b"second, longer"


async def test_empty_blob(backend: Backend) -> None:
    blob = await put(backend, b"")
    assert await backend.size(blob) == 0
    stream = await backend.open(blob)
    assert (stream.size, stream.start, stream.end, stream.length) == (0, 0, -1, 0)
    assert await read(stream) == b""
    with pytest.raises(InvalidRange):
        await backend.open(blob, 0, 0)


@pytest.mark.parametrize(
    ("start", "end", "expected", "served"),
    [
        (0, None, b"0123456789", (0, 9)),
        (0, 0, b"0", (0, 0)),
        (5, 9, b"56789", (5, 9)),
        (5, None, b"56789", (5, 9)),
        (3, 5, b"345", (3, 5)),
        (9, 9, b"9", (9, 9)),
        (7, 1000, b"789", (7, 9)),  # an end past the blob is cut, as HTTP does
    ],
)
async def test_byte_ranges(
    backend: Backend, start: int, end: int | None, expected: bytes, served: tuple[int, int]
) -> None:
    blob = await put(backend, b"0123456789")
    stream = await backend.open(blob, start, end)
    assert (stream.start, stream.end) == served
    assert stream.size == 10
    assert stream.length == len(expected)
    assert await read(stream) == expected
    assert (stream.size, stream.start, stream.end) == (10, *served)  # still known once closed


async def test_ranges_past_the_end_and_malformed(backend: Backend) -> None:
    blob = await put(backend, b"0123456789")
    for start, end in [(10, None), (10, 20), (50, 60)]:
        with pytest.raises(InvalidRange) as caught:
            await backend.open(blob, start, end)
        assert caught.value.status == 416
    for start, end in [(-1, None), (5, 4)]:
        with pytest.raises(ValueError):
            backend.open(blob, start, end)


async def test_missing_blob(backend: Backend) -> None:
    blob = key()
    assert await backend.size(blob) is None
    assert backend.local_path(blob) is None
    stream = backend.open(blob)
    with pytest.raises(BlobNotFound) as caught:
        await stream
    assert (caught.value.code, caught.value.status) == ("NoSuchKey", 404)
    assert [chunk async for chunk in stream] == []  # a failed open is final
    received = []
    with pytest.raises(BlobNotFound):
        async for chunk in backend.open(blob):  # iterated without awaiting: raised before any byte
            received.append(chunk)
    assert received == []


async def test_streams_as_a_starlette_response_body(backend: Backend) -> None:
    """The storage API hands ``open()`` straight to StreamingResponse."""
    data = os.urandom(200 * 1024)
    blob = await put(backend, data)

    async def download(request: Request) -> StreamingResponse:
        start, end = int(request.query_params["start"]), int(request.query_params["end"])
        return StreamingResponse(backend.open(blob, start, end), status_code=206)

    app = Starlette(routes=[Route("/", download)])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        answer = await client.get("/", params={"start": 1000, "end": 150_000})
    assert answer.status_code == 206
    assert answer.content == data[1000:150_001]


async def test_stream_closed_early_releases_everything(backend: Backend) -> None:
    blob = await put(backend, os.urandom(300 * 1024))
    async with await backend.open(blob) as stream:
        first = await stream.__anext__()
        assert len(first) <= CHUNK_SIZE
    assert [chunk async for chunk in stream] == []  # closed: nothing more, and no open file or socket
    stream = backend.open(blob, 1000)
    await stream.__anext__()
    await stream.aclose()


async def test_an_abandoned_local_stream_gives_its_file_back(tmp_path: Path) -> None:
    """Starlette never closes a response's iterator when the client leaves: dropping it must do."""
    store = LocalBackend(tmp_path / "storage")
    blob = await put(store, os.urandom(300 * 1024))
    path = str(store.local_path(blob))

    def open_on_blob() -> int:
        return sum(1 for fd in os.listdir("/proc/self/fd") if _readlink(f"/proc/self/fd/{fd}") == path)

    stream = store.open(blob)
    await stream.__anext__()
    assert open_on_blob() == 1
    del stream
    gc.collect()
    assert open_on_blob() == 0


def _readlink(path: str) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


async def test_an_abandoned_s3_stream_gives_its_connection_back(s3_admin: S3Admin, tmp_path: Path) -> None:
    store = s3_backend(
        s3_admin.endpoint, await s3_admin.create_bucket(), tmp_path / "spool", max_connections=1, connect_timeout=1
    )
    try:
        blob = await put(store, os.urandom(4 * MiB))  # too big to arrive whole while nobody reads
        for _ in range(3):  # with one connection, each request waits for the last stream's to come back
            stream = store.open(blob)
            await asyncio.wait_for(stream.__anext__(), 5)
            del stream
            gc.collect()
        assert await asyncio.wait_for(store.size(blob), 5) == 4 * MiB
    finally:
        await store.close()


async def test_local_path(backend: Backend) -> None:
    blob = await put(backend, b"bytes on disk")
    path = backend.local_path(blob)
    if isinstance(backend, LocalBackend):
        assert path is not None and path.read_bytes() == b"bytes on disk"
        assert path.is_relative_to(backend.root)
    else:
        assert path is None


async def test_delete_is_idempotent(backend: Backend) -> None:
    blob = await put(backend, b"gone soon")
    other = await put(backend, b"stays", key("other"))
    await backend.delete(blob)
    await backend.delete(blob)
    await backend.delete(key())
    assert await backend.size(blob) is None
    with pytest.raises(BlobNotFound):
        await backend.open(blob)
    assert await read(backend.open(other)) == b"stays"
    if isinstance(backend, LocalBackend):
        assert not (backend.root / "blobs" / "avatars").exists(), "the emptied bucket folder is removed"
        assert (backend.root / "blobs" / "other").is_dir()
        assert (backend.root / "blobs").is_dir()
        await put(backend, b"again", key())  # and made again when needed


async def test_copy(backend: Backend) -> None:
    source = await put(backend, b"original")
    target, elsewhere = key(), key("archive")
    await backend.copy(source, target)
    await backend.copy(source, elsewhere)
    await backend.delete(source)
    assert await read(backend.open(target)) == b"original"
    assert await read(backend.open(elsewhere)) == b"original"
    with pytest.raises(BlobNotFound) as caught:
        await backend.copy(source, key())
    assert caught.value.key == source


async def test_keys(backend: Backend) -> None:
    before = datetime.now(UTC) - timedelta(seconds=5)
    avatars = {await put(backend, b"a"), await put(backend, b"b")}
    docs = {await put(backend, b"c", key("docs"))}
    spooled(backend, b"an upload in progress")
    if isinstance(backend, LocalBackend):
        (backend.root / "blobs" / "avatars" / "notes.txt").write_text("not a key")
    listed = {name: modified async for name, modified in backend.keys()}  # noqa: SIM118
    assert set(listed) == avatars | docs
    for modified in listed.values():
        assert modified.tzinfo is not None
        assert before <= modified <= datetime.now(UTC) + timedelta(seconds=5)
    assert {name async for name, _ in backend.keys("avatars/")} == avatars
    assert {name async for name, _ in backend.keys("do")} == docs
    assert [name async for name, _ in backend.keys("nothing/")] == []
    with pytest.raises(ValueError):
        [name async for name, _ in backend.keys("../")]


async def test_sweep_spool(backend: Backend) -> None:
    blob = await put(backend, b"kept")
    crashed, current = spooled(backend, b"left by a crash"), spooled(backend, b"being written")
    old = time.time() - 7200
    os.utime(crashed, (old, old))
    assert await backend.sweep_spool(timedelta(hours=1)) == 1
    assert not crashed.exists()
    assert current.exists()
    assert await backend.sweep_spool(timedelta(hours=1)) == 0
    assert await backend.size(blob) == 4


async def test_stage_takes_blobs_out_for_a_backup(backend: Backend) -> None:
    first, second, absent = await put(backend, b"first"), await put(backend, b"second", key("docs")), key()
    staging = await backend.stage([first, second, absent])
    try:
        assert staging.missing == [absent]
        assert {name: path.read_bytes() for name, path in staging.sources.items()} == {
            first: b"first", second: b"second",
        }
        await backend.delete(first)  # gone from the store (the janitor), still readable for the backup
        assert staging.sources[first].read_bytes() == b"first"
        assert {name async for name, _ in backend.keys()} == {second}  # noqa: SIM118 - staging is no key
    finally:
        staging.discard()
    assert not staging.folder.exists()
    assert await read(backend.open(second)) == b"second"
    assert backend.location


async def test_adopt_brings_restored_blobs_back(backend: Backend) -> None:
    kept = await put(backend, b"kept")
    staging = backend.staging("restore")
    assert staging.folder.stat().st_mode & 0o777 == 0o700
    restored = {key(): b"one", key("docs"): b"two"}
    for name, data in restored.items():
        staging.path(name).write_bytes(data)
    (staging.folder / "stray.txt").write_text("not a key")
    try:
        await backend.adopt(staging)
    finally:
        staging.discard()
    for name, data in restored.items():
        assert await read(backend.open(name)) == data
    assert {name async for name, _ in backend.keys()} == {kept, *restored}  # noqa: SIM118


async def test_local_stage_links_or_reads_in_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = LocalBackend(tmp_path / "storage")
    blob = await put(store, b"linked")
    stale = store.root / ".backup-0000000000000000"
    stale.mkdir()
    old = time.time() - 2 * 24 * 3600
    os.utime(stale, (old, old))
    staging = await store.stage([blob])
    assert not stale.exists(), "a killed backup's folder is removed by the next one"
    assert staging.folder.parent == store.root and staging.sources[blob].stat().st_nlink == 2
    staging.discard()

    def no_links(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_links)
    staging = await store.stage([blob])
    assert staging.sources[blob] == store.local_path(blob)  # read where it is
    staging.discard()


async def test_a_large_file_streams_in_bounded_chunks(backend: Backend) -> None:
    data = os.urandom(20 * MiB)  # above the S3 multipart threshold: sent in parts
    blob = await put(backend, data, content_type="application/octet-stream")
    assert await backend.size(blob) == len(data)
    digest, total, largest = hashlib.sha256(), 0, 0
    async for chunk in backend.open(blob):
        digest.update(chunk)
        total += len(chunk)
        largest = max(largest, len(chunk))
    assert total == len(data)
    assert largest <= CHUNK_SIZE
    assert digest.digest() == hashlib.sha256(data).digest()
    boundary = 8 * MiB
    assert await read(backend.open(blob, boundary - 100, boundary + 99)) == data[boundary - 100 : boundary + 100]
    copied = key()
    await backend.copy(blob, copied)
    assert await backend.size(copied) == len(data)


# -- keys are checked everywhere -----------------------------------------------------------------

GOOD_UUID = "0b6a4b0e-5c0f-4f5e-9a51-2d3c1f0a9b7e"
BAD_KEYS = [
    "../x",
    "/abs",
    "/etc/passwd",
    "a/../../b",
    f"avatars/../{GOOD_UUID}",
    f"../{GOOD_UUID}",
    f"avatars/{GOOD_UUID}\0",
    f"ava\0tars/{GOOD_UUID}",
    "avatars/not-a-uuid",
    f"avatars/{GOOD_UUID.upper()}",
    f"Avatars/{GOOD_UUID}",
    f"avatars/{GOOD_UUID}\n",
    f"avatars/{GOOD_UUID}/",
    f"avatars/x/{GOOD_UUID}",
    f"avatars\\{GOOD_UUID}",
    f".hidden/{GOOD_UUID}",
    f"{'a' * 64}/{GOOD_UUID}",
    f"avatars//{GOOD_UUID}",
    GOOD_UUID,
    "avatars",
    "",
]


@pytest.mark.parametrize("bad", BAD_KEYS)
def test_validate_key_refuses(bad: str) -> None:
    with pytest.raises(ValueError):
        validate_key(bad)


@pytest.mark.parametrize("good", [f"avatars/{GOOD_UUID}", f"a/{GOOD_UUID}", f"my.bucket_1-x/{GOOD_UUID}", key()],
                         ids=["avatars", "one-letter-bucket", "dotted-bucket", "fresh-key"])
def test_validate_key_accepts(good: str) -> None:
    assert validate_key(good) == good


async def test_every_method_checks_keys(backend: Backend) -> None:
    good = await put(backend, b"x")
    for bad in BAD_KEYS:
        source = spooled(backend, b"payload")
        with pytest.raises(ValueError):
            await backend.put(bad, source, content_type="text/plain")
        assert source.exists()
        source.unlink()
        with pytest.raises(ValueError):
            backend.open(bad)
        with pytest.raises(ValueError):
            await backend.size(bad)
        with pytest.raises(ValueError):
            backend.local_path(bad)
        with pytest.raises(ValueError):
            await backend.delete(bad)
        with pytest.raises(ValueError):
            await backend.copy(good, bad)
        with pytest.raises(ValueError):
            await backend.copy(bad, good)
        with pytest.raises(ValueError):
            await backend.stage([good, bad])
    assert {name async for name, _ in backend.keys()} == {good}  # noqa: SIM118


async def test_local_refuses_a_symlink_out_of_the_root(tmp_path: Path) -> None:
    store = LocalBackend(tmp_path / "storage")
    outside = tmp_path / "outside"
    outside.mkdir()
    (store.root / "blobs" / "evil").symlink_to(outside)
    blob = key("evil")
    (outside / blob.split("/")[1]).write_bytes(b"secret")
    source = spooled(store, b"payload")
    with pytest.raises(ValueError, match="outside the storage folder"):
        await store.put(blob, source, content_type="text/plain")
    with pytest.raises(ValueError):
        await store.size(blob)
    with pytest.raises(ValueError):
        backend_open = store.open(blob)
        await backend_open
    assert [p.name for p in outside.iterdir()] == [blob.split("/")[1]]
    assert source.exists()


# -- failures ------------------------------------------------------------------------------------


@contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """Make ``folder`` refuse new entries, even for root (who ignores mode bits): chattr +i then."""
    if os.geteuid() == 0:
        if shutil.which("chattr") is None:
            pytest.skip("running as root without chattr: cannot make a folder read-only")
        result = subprocess.run(["chattr", "+i", str(folder)], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            pytest.skip(f"chattr +i is not supported here: {result.stderr.strip()}")
        undo = ["chattr", "-i", str(folder)]
    else:
        mode = folder.stat().st_mode
        folder.chmod(0o555)
        undo = []
    try:
        probe = folder / "probe"
        try:
            probe.mkdir()
        except OSError:
            pass
        else:
            probe.rmdir()
            pytest.skip("the folder stayed writable")
        yield
    finally:
        if undo:
            subprocess.run(undo, check=True)
        else:
            folder.chmod(mode)


async def test_local_put_into_a_read_only_root(tmp_path: Path) -> None:
    store = LocalBackend(tmp_path / "storage")
    source = spooled(store, b"payload")
    blob = key()
    with read_only(store.root / "blobs"), pytest.raises(BackendError) as caught:
        await store.put(blob, source, content_type="text/plain")
    error = caught.value
    assert (error.code, error.status) == ("StorageBackendError", 503)
    assert "storage folder" in error.message
    assert source.read_bytes() == b"payload", "the spooled file is left for the caller to remove"
    assert await store.size(blob) is None
    await store.put(blob, source, content_type="text/plain")  # writable again: the same file goes in
    assert await read(store.open(blob)) == b"payload"


async def test_local_put_from_another_filesystem(tmp_path: Path) -> None:
    store = LocalBackend(tmp_path / "storage")
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == store.root.stat().st_dev or not os.access(shm, os.W_OK):
        pytest.skip("no second filesystem to upload from")
    source = shm / f"gatehouse-test-{uuid.uuid4().hex}"
    source.write_bytes(b"across filesystems")
    try:
        blob = key()
        await store.put(blob, source, content_type="text/plain")
        assert not source.exists()
        assert await read(store.open(blob)) == b"across filesystems"
        assert list(store.spool_dir.iterdir()) == []
    finally:
        source.unlink(missing_ok=True)


async def test_s3_unreachable(tmp_path: Path) -> None:
    store = s3_backend(
        f"http://127.0.0.1:{free_port()}", "anything", tmp_path / "spool", connect_timeout=1, attempts=1
    )
    source = spooled(store, b"payload")
    try:
        began = time.monotonic()
        attempts: list[Callable[[], Any]] = [
            lambda: store.put(key(), source, content_type="text/plain"),
            lambda: store.size(key()),
            lambda: store.open(key()),
            store.check,
        ]
        for attempt in attempts:
            with pytest.raises(BackendError) as caught:
                await attempt()
            assert "cannot reach S3 at http://127.0.0.1:" in caught.value.message
            assert SECRET_KEY not in str(caught.value) and ACCESS_KEY not in str(caught.value)
            assert caught.value.status == 503
        assert time.monotonic() - began < 5
        assert source.exists(), "the spooled file is left for the caller"
    finally:
        await store.close()


async def test_s3_missing_bucket(s3_admin: S3Admin, tmp_path: Path) -> None:
    store = s3_backend(s3_admin.endpoint, "gatehouse-no-such-bucket", tmp_path / "spool")
    try:
        for attempt in (store.check, lambda: store.size(key()), lambda: store.open(key())):
            with pytest.raises(BackendError, match="'gatehouse-no-such-bucket' does not exist") as caught:
                await attempt()
            assert SECRET_KEY not in caught.value.message
    finally:
        await store.close()


async def test_s3_bucket_removed_while_running(s3_admin: S3Admin, tmp_path: Path) -> None:
    bucket = await s3_admin.create_bucket()
    store = s3_backend(s3_admin.endpoint, bucket, tmp_path / "spool")
    try:
        await store.check()
        await s3_admin.delete_bucket(bucket)
        with pytest.raises(BackendError, match=f"'{bucket}' does not exist"):
            await store.open(key())
        # AWS answers NoSuchBucket; SeaweedFS answers AccessDenied to a key that may not create
        # buckets. Either way the error names the bucket and says what to check.
        with pytest.raises(BackendError, match=f"'{bucket}' (does not exist|.*AccessDenied)"):
            await store.put(key(), spooled(store, b"x"), content_type="text/plain")
    finally:
        await store.close()


async def test_s3_prefix_and_content_type(s3_admin: S3Admin, tmp_path: Path) -> None:
    bucket = await s3_admin.create_bucket()
    tenant_a = s3_backend(s3_admin.endpoint, bucket, tmp_path / "a", prefix="tenant-a")
    tenant_b = s3_backend(s3_admin.endpoint, bucket, tmp_path / "b", prefix="/tenant-b/")
    try:
        small = await put(tenant_a, b"<svg/>", content_type="image/svg+xml")
        large = await put(tenant_a, os.urandom(9 * MiB), content_type="video/mp4")
        assert await s3_admin.names(bucket) == sorted([f"tenant-a/{small}", f"tenant-a/{large}"])
        assert (await s3_admin.head(bucket, f"tenant-a/{small}"))["ContentType"] == "image/svg+xml"
        assert (await s3_admin.head(bucket, f"tenant-a/{large}"))["ContentType"] == "video/mp4"
        assert {name async for name, _ in tenant_a.keys()} == {small, large}  # noqa: SIM118
        assert [name async for name, _ in tenant_b.keys()] == []  # noqa: SIM118
        assert await tenant_b.size(small) is None
        assert await s3_admin.uploads(bucket) == []
    finally:
        await tenant_a.close()
        await tenant_b.close()
    with pytest.raises(ValueError):
        s3_backend(s3_admin.endpoint, bucket, tmp_path / "c", prefix="a/../b")


async def test_s3_copy_in_parts(s3_admin: S3Admin, tmp_path: Path) -> None:
    bucket = await s3_admin.create_bucket()
    store = s3_backend(s3_admin.endpoint, bucket, tmp_path / "spool", max_copy_size=8 * MiB, copy_part_size=5 * MiB)
    try:
        data = os.urandom(12 * MiB)
        source = await put(store, data, content_type="application/pdf")
        target = key()
        await store.copy(source, target)
        assert hashlib.sha256(await read(store.open(target))).digest() == hashlib.sha256(data).digest()
        assert (await s3_admin.head(bucket, target))["ContentType"] == "application/pdf"
        assert await s3_admin.uploads(bucket) == []
    finally:
        await store.close()


async def test_memory_backend_fails_on_request(tmp_path: Path) -> None:
    store = MemoryBackend(tmp_path / "spool")
    source = spooled(store, b"payload")
    blob = key()
    store.fail("put")
    with pytest.raises(BackendError):
        await store.put(blob, source, content_type="text/plain")
    assert source.exists()
    await store.put(blob, source, content_type="text/plain")
    assert store.blobs[blob].content_type == "text/plain"
    store.fail("open", times=2)
    for _ in range(2):
        with pytest.raises(BackendError):
            await store.open(blob)
    assert await read(store.open(blob)) == b"payload"
    with pytest.raises(ValueError):
        store.fail("explode")
    await store.close()


async def test_memory_backend_makes_and_removes_its_own_spool() -> None:
    store = MemoryBackend()
    assert store.spool_dir.is_dir()
    await store.close()
    assert not store.spool_dir.exists()


# -- from settings -------------------------------------------------------------------------------


async def test_create_backend_local(tmp_path: Path) -> None:
    store = create_backend(load_settings(data_dir=tmp_path))  # before the storage settings exist
    assert isinstance(store, LocalBackend)
    assert store.root == (tmp_path / "storage").resolve()
    assert store.spool_dir == store.root / ".spool" and store.spool_dir.is_dir()
    elsewhere = create_backend(SimpleNamespace(data_dir=tmp_path, storage_backend="local", storage_dir=tmp_path / "x"))
    assert isinstance(elsewhere, LocalBackend) and elsewhere.root == (tmp_path / "x").resolve()


async def test_create_backend_s3(s3_admin: S3Admin, tmp_path: Path) -> None:
    bucket = await s3_admin.create_bucket()
    settings = SimpleNamespace(
        data_dir=tmp_path, storage_backend="s3", s3_endpoint_url=s3_admin.endpoint, s3_bucket=bucket,
        s3_access_key_id=ACCESS_KEY, s3_secret_access_key=SecretStr(SECRET_KEY), s3_prefix="gh",
    )
    store = create_backend(settings)
    try:
        assert isinstance(store, S3Backend)
        assert (store.bucket, store.prefix, store.region) == (bucket, "gh/", "us-east-1")
        assert store.spool_dir == tmp_path / "storage" / ".spool"
        assert SECRET_KEY not in repr(store)
        blob = await put(store, b"through settings")
        assert await s3_admin.names(bucket) == [f"gh/{blob}"]
    finally:
        await store.close()


@pytest.mark.parametrize(
    "settings",
    [
        SimpleNamespace(data_dir=Path("."), storage_backend="s3"),
        SimpleNamespace(data_dir=Path("."), storage_backend="ftp"),
        SimpleNamespace(data_dir=Path("."), storage_backend="s3", s3_bucket="b", s3_prefix="../up"),
    ],
)
def test_create_backend_refuses_bad_settings(settings: SimpleNamespace, tmp_path: Path) -> None:
    settings.data_dir = tmp_path
    with pytest.raises(ConfigError):
        create_backend(settings)
