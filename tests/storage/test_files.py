"""Sending local blobs: ``LocalBackend.open_local`` and ``LocalFileResponse``, at the ASGI level.

The HTTP behaviour (ETags, ranges, 304s) is in test_api.py; here are the parts a real server
does not show: which ASGI messages go out, that the descriptor is always closed, that a client
leaving stops the reading, and that symlinks are never followed.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path
from typing import Any

import pytest

from gatehouse.storage.backends import LocalBackend
from gatehouse.storage.backends.base import BackendError, LocalFile
from gatehouse.storage.files import CHUNK, INLINE_LIMIT, LocalFileResponse


def blob(store: LocalBackend, data: bytes, bucket: str = "avatars") -> str:
    key = f"{bucket}/{uuid.uuid4()}"
    folder = store.root / "blobs" / bucket
    folder.mkdir(parents=True, exist_ok=True)
    (folder / key.split("/")[1]).write_bytes(data)
    return key


def opened(store: LocalBackend, data: bytes) -> LocalFile:
    found = store.open_local(blob(store, data))
    assert found is not None
    return found


def closed(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return True
    return False


async def serve(response: LocalFileResponse, *, extensions: dict[str, Any] | None = None,
                disconnect_after: int | None = None) -> list[dict[str, Any]]:
    """Run the response as a server would; the client disconnects after ``disconnect_after`` messages."""
    sent: list[dict[str, Any]] = []
    gone = asyncio.Event()

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if disconnect_after is not None and len(sent) >= disconnect_after:
            gone.set()
        await asyncio.sleep(0)

    async def receive() -> dict[str, Any]:
        await gone.wait()
        return {"type": "http.disconnect"}

    scope = {"type": "http", "method": "GET", "extensions": extensions or {}}
    await response(scope, receive, send)
    return sent


def body(sent: list[dict[str, Any]]) -> bytes:
    return b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


def response(file: LocalFile, start: int = 0, end: int | None = None, **more: Any) -> LocalFileResponse:
    return LocalFileResponse(file, start=start, end=file.size - 1 if end is None else end, status_code=200,
                             headers={"ETag": '"x"'}, media_type="application/octet-stream", **more)


async def test_a_small_blob_goes_in_one_body_message_with_its_length(tmp_path: Path) -> None:
    store = LocalBackend(tmp_path / "storage")
    data = os.urandom(100_000)
    file = opened(store, data)
    sent = await serve(response(file))
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert dict(sent[0]["headers"])[b"content-length"] == b"100000"
    assert body(sent) == data and not sent[1].get("more_body")
    assert closed(file.fd)


async def test_a_large_blob_goes_in_chunks_and_a_range_of_it_exactly(tmp_path: Path) -> None:
    store = LocalBackend(tmp_path / "storage")
    data = os.urandom(3 * CHUNK + 123)
    sent = await serve(response(opened(store, data)))
    chunks = [m for m in sent if m["type"] == "http.response.body"]
    assert len(chunks) == 4 and max(len(m["body"]) for m in chunks) == CHUNK
    assert [m["more_body"] for m in chunks] == [True, True, True, False]
    assert body(sent) == data
    start, end = CHUNK - 10, 2 * CHUNK + 10
    part = await serve(response(opened(store, data), start, end))
    assert body(part) == data[start:end + 1]
    assert dict(part[0]["headers"])[b"content-length"] == str(end - start + 1).encode()


async def test_up_to_the_inline_limit_no_thread_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = LocalBackend(tmp_path / "storage")
    hops: list[int] = []
    real = asyncio.to_thread

    async def counting(func: Any, /, *args: Any) -> Any:
        hops.append(args[1])
        return await real(func, *args)

    monkeypatch.setattr("gatehouse.storage.files.asyncio.to_thread", counting)
    for size, expected in ((INLINE_LIMIT, []), (INLINE_LIMIT + 1, [INLINE_LIMIT + 1])):
        data = os.urandom(size)
        assert body(await serve(response(opened(store, data)))) == data
        assert hops == expected
        hops.clear()


async def test_head_sends_the_length_and_no_bytes(tmp_path: Path) -> None:
    store = LocalBackend(tmp_path / "storage")
    file = opened(store, b"12345")
    sent = await serve(response(file, head=True))
    assert dict(sent[0]["headers"])[b"content-length"] == b"5" and body(sent) == b""
    assert closed(file.fd)


async def test_a_server_with_pathsend_gets_the_path_of_a_whole_file(tmp_path: Path) -> None:
    store = LocalBackend(tmp_path / "storage")
    file = opened(store, os.urandom(5 * CHUNK))
    sent = await serve(response(file), extensions={"http.response.pathsend": {}})
    assert sent[1] == {"type": "http.response.pathsend", "path": file.path}
    assert Path(sent[1]["path"]).read_bytes()[:10] == os.pread(os.open(file.path, os.O_RDONLY), 10, 0)
    partial = await serve(response(opened(store, b"abcdef"), 1, 3), extensions={"http.response.pathsend": {}})
    assert body(partial) == b"bcd"  # a range is read and sent here


async def test_a_client_that_leaves_stops_the_reading(tmp_path: Path) -> None:
    store = LocalBackend(tmp_path / "storage")
    file = opened(store, os.urandom(20 * CHUNK))
    sent = await serve(response(file), disconnect_after=3)
    assert len(body(sent)) < 20 * CHUNK
    assert closed(file.fd)


async def test_a_blob_shorter_than_its_row_is_an_error_not_a_short_answer(tmp_path: Path) -> None:
    store = LocalBackend(tmp_path / "storage")
    file = opened(store, b"short")
    with pytest.raises(BackendError, match="shorter"):
        await serve(LocalFileResponse(file, start=0, end=99, status_code=200, headers={}, media_type="text/plain"))
    assert closed(file.fd)


def test_open_local_finds_files_only(tmp_path: Path) -> None:
    store = LocalBackend(tmp_path / "storage")
    assert store.open_local(f"avatars/{uuid.uuid4()}") is None  # no bucket folder
    key = blob(store, b"x")
    assert store.open_local(f"avatars/{uuid.uuid4()}") is None  # no file
    folder_key = f"avatars/{uuid.uuid4()}"
    (store.root / "blobs" / folder_key).mkdir()
    assert store.open_local(folder_key) is None  # a folder is not a blob
    found = store.open_local(key)
    assert found is not None and found.size == 1
    os.close(found.fd)
    with pytest.raises(ValueError):
        store.open_local("../etc/passwd")


def symlinked_bucket(store: LocalBackend, outside: Path, data: bytes) -> str:
    """A bucket folder ``evil`` that is a symlink to ``outside``, which holds a blob-named file: its name."""
    outside.mkdir()
    name = str(uuid.uuid4())
    (outside / name).write_bytes(data)
    (store.root / "blobs" / "evil").symlink_to(outside)
    return name


def test_open_local_never_follows_a_symlink(tmp_path: Path) -> None:
    store = LocalBackend(tmp_path / "storage")
    outside = tmp_path / "outside"
    name = symlinked_bucket(store, outside, b"secret")
    assert store.open_local(f"evil/{name}") is None  # a symlinked folder is not a folder (ENOTDIR)
    (store.root / "blobs" / "avatars").mkdir()
    (store.root / "blobs" / "avatars" / name).symlink_to(outside / name)
    with pytest.raises(ValueError, match="symlink"):
        store.open_local(f"avatars/{name}")


async def test_deleting_never_reaches_through_a_symlink(tmp_path: Path) -> None:
    store = LocalBackend(tmp_path / "storage")
    outside = tmp_path / "outside"
    name = symlinked_bucket(store, outside, b"keep me")
    await store.delete_many([f"evil/{name}"])
    assert (outside / name).read_bytes() == b"keep me"
    kept, gone = blob(store, b"a"), blob(store, b"b")
    await store.delete_many([gone, f"avatars/{uuid.uuid4()}"])  # an absent key is no error
    assert store.open_local(gone) is None
    found = store.open_local(kept)
    assert found is not None
    os.close(found.fd)
    await store.delete_many([kept])
    assert not (store.root / "blobs" / "avatars").exists()  # an emptied bucket folder goes
