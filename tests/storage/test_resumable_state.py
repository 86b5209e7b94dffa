"""Resumable uploads' state lives in PostgreSQL: races, expiry, the janitor's sweeps, two processes."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from gatehouse.core.config import Settings
from gatehouse.core.db import Database
from gatehouse.storage.backends.local import LocalBackend
from gatehouse.storage.buckets import Buckets
from gatehouse.storage.janitor import BlobJanitor
from gatehouse.storage.objects import Objects
from gatehouse.storage.resumable import ResumableUploads
from tests.storage.tus_helpers import CHUNK, Tus, blobs, collect_garbage
from tests.support import RunningServer


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tus-state-storage")


@pytest.fixture(scope="module")
def servers(server_factory: Callable[..., RunningServer], storage: Path) -> tuple[RunningServer, RunningServer]:
    """Two processes on one database and one storage folder, as behind a load balancer."""
    env = {"GATEHOUSE_STORAGE_DIR": str(storage), "GATEHOUSE_RATE_LIMITS_ENABLED": "false"}
    first, second = server_factory(env=env), server_factory(env=env)
    httpx.post(f"{first.url}/storage/v1/bucket", headers={"apikey": first.keys.secret_key},
               json={"id": "state"}).raise_for_status()
    return first, second


@pytest.fixture(scope="module")
def tus(servers: tuple[RunningServer, RunningServer]) -> Iterator[Tus]:
    speaker = Tus(servers[0], {"apikey": servers[0].keys.secret_key})
    yield speaker
    speaker.close()


def on(server: RunningServer, url: str) -> str:
    """The same upload URL, sent to another process."""
    return server.url + urlsplit(url).path


def download(server: RunningServer, name: str) -> bytes:
    answer = httpx.get(f"{server.url}/storage/v1/object/state/{name}", headers={"apikey": server.keys.secret_key})
    answer.raise_for_status()
    return answer.content


def test_an_upload_goes_on_in_another_process(servers: tuple[RunningServer, RunningServer], tus: Tus) -> None:
    first, second = servers
    data = os.urandom(3 * CHUNK + 7)
    url = tus.url("state", "across.bin", len(data))
    assert tus.patch(on(second, url), 0, data[:CHUNK]).status_code == 204
    assert tus.head(on(first, url)).headers["upload-offset"] == str(CHUNK)
    assert tus.patch(on(first, url), CHUNK, data[CHUNK:2 * CHUNK]).status_code == 204
    assert tus.patch(on(second, url), 2 * CHUNK, data[2 * CHUNK:3 * CHUNK]).status_code == 204
    assert tus.patch(on(first, url), 3 * CHUNK, data[3 * CHUNK:]).headers["tus-complete"] == "1"
    assert download(second, "across.bin") == data


def _racing(parts: list[bytes], barrier: threading.Barrier) -> Iterator[bytes]:
    """A body sent in pieces that waits, half-way, until the other racer is half-way too."""
    yield parts[0]
    barrier.wait(timeout=20)
    yield from parts[1:]


@pytest.mark.parametrize("final", [False, True])
def test_concurrent_patches_at_one_offset_keep_one(servers: tuple[RunningServer, RunningServer], tus: Tus,
                                                   final: bool) -> None:
    first, second = servers
    length = 2 * CHUNK if final else 3 * CHUNK
    data = os.urandom(length)
    name = f"race-{final}.bin"
    url = tus.url("state", name, length)
    assert tus.patch(url, 0, data[:CHUNK]).status_code == 204
    chunks = [os.urandom(CHUNK) for _ in range(2)] if not final else [data[CHUNK:]] * 2
    barrier = threading.Barrier(2)

    def send(server: RunningServer, chunk: bytes) -> httpx.Response:
        halves = [chunk[: CHUNK // 2], chunk[CHUNK // 2:]]
        with Tus(server, {"apikey": server.keys.secret_key}) as racer:
            return racer.patch(on(server, url), CHUNK, _racing(halves, barrier))

    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(send, (first, second), chunks))
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses[0] == 204, [answer.text for answer in answers]
    assert statuses[1] in (404, 409, 423), [answer.text for answer in answers]
    if final:
        assert download(first, name) == data
    else:
        winner = chunks[[answer.status_code for answer in answers].index(204)]
        assert tus.head(url).headers["upload-offset"] == str(2 * CHUNK)
        rest = os.urandom(CHUNK)
        assert tus.patch(url, 2 * CHUNK, rest).headers["tus-complete"] == "1"
        assert download(second, name) == data[:CHUNK] + winner + rest


async def test_an_expired_upload_is_gone_and_swept(tus: Tus, db: Database, settings: Settings, storage: Path) -> None:
    url = tus.url("state", "abandoned.bin", 2 * CHUNK)
    created = tus.head(url).headers["upload-expires"]
    answer = tus.patch(url, 0, os.urandom(CHUNK))
    assert answer.status_code == 204 and answer.headers["upload-expires"].endswith(" GMT") and created
    parts = await db.admin.fetch("SELECT version FROM storage.resumable_parts p JOIN storage.resumable_uploads u "
                                 "ON u.id = p.upload_id WHERE u.name = 'abandoned.bin'")
    assert len(parts) == 1
    await db.admin.execute("UPDATE storage.resumable_uploads SET expires_at = now() - interval '1 second' "
                           "WHERE name = 'abandoned.bin'")
    for refused in (tus.head(url), tus.patch(url, CHUNK, os.urandom(CHUNK))):
        assert refused.status_code == 410
    backend = LocalBackend(storage)
    buckets = Buckets(db, settings)
    uploads = ResumableUploads(db, backend, settings, buckets, Objects(db, backend, settings, buckets))
    assert await uploads.sweep() >= 1
    assert await db.admin.fetchval("SELECT count(*) FROM storage.resumable_uploads WHERE name = 'abandoned.bin'") == 0
    assert tus.head(url).status_code == 404
    await collect_garbage(db.admin, storage)
    assert parts[0]["version"] not in blobs(storage, "state")
    await backend.close()


async def test_the_orphan_sweep_keeps_the_chunks_of_uploads_in_progress(tus: Tus, db: Database,
                                                                        storage: Path) -> None:
    data = os.urandom(CHUNK + 3)
    url = tus.url("state", "kept.bin", len(data))
    assert tus.patch(url, 0, data[:CHUNK]).status_code == 204
    stray = storage / "blobs" / "state" / "00000000-0000-4000-8000-000000000000"
    stray.write_bytes(b"no row names me")
    backend = LocalBackend(storage)
    swept = await BlobJanitor(db.admin, backend).sweep(min_age=timedelta(0), spool_age=timedelta(days=1))
    await backend.close()
    assert swept[1] >= 1 and not stray.exists()
    assert tus.patch(url, CHUNK, data[CHUNK:]).headers["tus-complete"] == "1"
    assert download(tus.server, "kept.bin") == data


def test_the_server_sweeps_expired_uploads(server_factory: Callable[..., RunningServer], storage: Path) -> None:
    """GATEHOUSE_STORAGE_RESUMABLE_EXPIRY: an upload idle that long is swept by the server itself."""
    short = server_factory(env={"GATEHOUSE_STORAGE_DIR": str(storage), "GATEHOUSE_STORAGE_RESUMABLE_EXPIRY": "1"})
    with Tus(short, {"apikey": short.keys.secret_key}) as tus:
        url = tus.url("state", "forgotten.bin", 2 * CHUNK)
        assert tus.patch(url, 0, os.urandom(CHUNK)).status_code == 204
        deadline = time.monotonic() + 30
        while tus.head(url).status_code != 404:  # 410 once expired, 404 once swept
            assert time.monotonic() < deadline, short.log()[-2000:]
            time.sleep(0.2)
