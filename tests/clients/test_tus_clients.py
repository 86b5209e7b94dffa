"""Real TUS clients against /storage/v1/upload/resumable: tuspy, and tus-js-client as Supabase's docs use it.

``tests/clients/js/tus_upload.mjs`` drives tus-js-client (the version pinned in package.json);
tuspy is driven here. The kill test stops the server with SIGKILL between two acknowledged
chunks, starts it again on the same port, and lets tuspy resume to the end.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from io import BytesIO
from pathlib import Path

import httpx
import pytest
from tusclient.client import TusClient
from tusclient.exceptions import TusCommunicationError, TusUploadFailed

from gatehouse.core.embedded import free_port
from tests.clients.test_js_client import JS_DIR, _output, js_client, node  # noqa: F401 - fixtures
from tests.support import ConfirmedSession, RunningServer, run_sql

CHUNK = 256 * 1024
FLOW_TIMEOUT = 120


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tus-client-storage")


@pytest.fixture(scope="module")
def env(storage: Path) -> dict[str, str]:
    return {"GATEHOUSE_STORAGE_DIR": str(storage), "GATEHOUSE_RATE_LIMITS_ENABLED": "false"}


@pytest.fixture(scope="module")
def live(server_factory: Callable[..., RunningServer], env: dict[str, str], database_url: str) -> RunningServer:
    server = server_factory(env=env)
    for bucket in ("videos", "locked"):
        httpx.post(f"{server.url}/storage/v1/bucket", headers={"apikey": server.keys.secret_key},
                   json={"id": bucket}).raise_for_status()
    run_sql(database_url, """
        CREATE POLICY "videos: users write their folder" ON storage.objects FOR INSERT TO authenticated
            WITH CHECK (bucket_id = 'videos' AND (storage.foldername(name))[1] = auth.uid()::text);
        CREATE POLICY "videos: users read their folder" ON storage.objects FOR SELECT TO authenticated
            USING (bucket_id = 'videos' AND (storage.foldername(name))[1] = auth.uid()::text);
        CREATE POLICY "videos: users replace their folder" ON storage.objects FOR UPDATE TO authenticated
            USING (bucket_id = 'videos' AND (storage.foldername(name))[1] = auth.uid()::text);
    """)
    return server


@pytest.fixture(scope="module")
def user(live: RunningServer, confirmed_session: ConfirmedSession) -> tuple[str, str]:
    """A signed-in user's (access token, id)."""
    _, session = confirmed_session(live)
    return session["access_token"], session["user"]["id"]


def download(server: RunningServer, bucket: str, name: str) -> httpx.Response:
    return httpx.get(f"{server.url}/storage/v1/object/{bucket}/{name}", headers={"apikey": server.keys.secret_key})


def tus_client(server: RunningServer, token: str) -> TusClient:
    return TusClient(f"{server.url}/storage/v1/upload/resumable",
                     headers={"apikey": server.keys.publishable_key, "authorization": f"Bearer {token}"})


def test_tuspy_uploads_in_chunks(live: RunningServer, user: tuple[str, str]) -> None:
    token, uid = user
    data = os.urandom(3 * CHUNK + 99)
    uploader = tus_client(live, token).uploader(
        file_stream=BytesIO(data), chunk_size=CHUNK,
        metadata={"bucketName": "videos", "objectName": f"{uid}/clip.mp4", "contentType": "video/mp4",
                  "cacheControl": "60", "metadata": json.dumps({"camera": "front"})},
    )
    uploader.upload()
    assert uploader.offset == len(data)
    got = download(live, "videos", f"{uid}/clip.mp4")
    assert got.content == data and got.headers["content-type"] == "video/mp4"
    assert got.headers["cache-control"] == "max-age=60"


def test_tuspy_is_refused_by_rls_at_the_end(live: RunningServer, user: tuple[str, str]) -> None:
    token, _ = user
    data = os.urandom(CHUNK + 5)
    uploader = tus_client(live, token).uploader(
        file_stream=BytesIO(data), chunk_size=CHUNK, metadata={"bucketName": "videos", "objectName": "not-mine/x.bin"},
    )
    with pytest.raises(TusUploadFailed) as refused:
        uploader.upload()
    assert refused.value.status_code == 403
    assert download(live, "videos", "not-mine/x.bin").status_code == 400  # storage's 404, in its shape
    with pytest.raises(TusCommunicationError) as gone:
        uploader.get_offset()
    assert gone.value.status_code == 404


def test_tuspy_resumes_after_the_server_is_killed(server_factory: Callable[..., RunningServer],
                                                  env: dict[str, str], live: RunningServer) -> None:
    port = free_port()
    victim = server_factory(env=env, port=port)
    data = os.urandom(4 * CHUNK + 4321)
    client = TusClient(f"{victim.url}/storage/v1/upload/resumable", headers={"apikey": victim.keys.secret_key})
    metadata = {"bucketName": "videos", "objectName": "killed/movie.bin", "contentType": "application/octet-stream"}
    uploader = client.uploader(file_stream=BytesIO(data), chunk_size=CHUNK, metadata=metadata)
    uploader.upload(stop_at=2 * CHUNK)
    assert uploader.offset == 2 * CHUNK and uploader.url is not None

    victim.process.send_signal(signal.SIGKILL)
    victim.process.wait()
    with pytest.raises(TusCommunicationError):
        uploader.get_offset()  # nobody answers now
    restarted = server_factory(env=env, port=port)

    resumed = client.uploader(file_stream=BytesIO(data), chunk_size=CHUNK, url=uploader.url)
    assert resumed.offset == 2 * CHUNK  # asked with HEAD: the acknowledged chunks survived
    resumed.upload()
    assert download(restarted, "videos", "killed/movie.bin").content == data


def _tus_js(node: list[str], live: RunningServer, token: str, *args: str) -> dict[str, object]:  # noqa: F811
    command = [*node, str(JS_DIR / "tus_upload.mjs"), live.url, live.keys.publishable_key, token, *args]
    try:
        result = subprocess.run(command, cwd=JS_DIR, env=os.environ | {"NO_COLOR": "1"}, capture_output=True,
                                text=True, timeout=FLOW_TIMEOUT, check=False)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"tus_upload.mjs timed out\n{_output(exc)}\n--- server log ---\n{live.log()[-3000:]}")
    assert result.returncode == 0, f"{_output(result)}\n--- server log ---\n{live.log()[-3000:]}"
    last: dict[str, object] = json.loads(result.stdout.strip().splitlines()[-1])
    assert last["step"] == "done", result.stdout
    return last


@pytest.fixture
def payload(tmp_path: Path) -> Iterator[tuple[Path, bytes]]:
    data = os.urandom(3 * CHUNK + 1000)
    path = tmp_path / "payload.bin"
    path.write_bytes(data)
    yield path, data


def test_tus_js_client_uploads_as_supabase_docs_show(node: list[str], js_client: Path,  # noqa: F811
                                                      live: RunningServer, user: tuple[str, str],
                                                      payload: tuple[Path, bytes]) -> None:
    token, uid = user
    path, data = payload
    _tus_js(node, live, token, "videos", f"{uid}/notes.txt", str(path), "full")
    got = download(live, "videos", f"{uid}/notes.txt")
    assert got.content == data and got.headers["content-type"].startswith("text/plain")
    assert got.headers["cache-control"] == "max-age=3600"
    again = os.urandom(CHUNK + 1)  # x-upsert: true replaces it
    path.write_bytes(again)
    _tus_js(node, live, token, "videos", f"{uid}/notes.txt", str(path), "full")
    assert download(live, "videos", f"{uid}/notes.txt").content == again


def test_tus_js_client_resumes_an_upload_it_stopped(node: list[str], js_client: Path,  # noqa: F811
                                                    live: RunningServer, user: tuple[str, str],
                                                    payload: tuple[Path, bytes]) -> None:
    token, uid = user
    path, data = payload
    stopped = _tus_js(node, live, token, "videos", f"{uid}/resumed.bin", str(path), "partial", str(2 * CHUNK))
    url = str(stopped["url"])
    head = httpx.head(url, headers={"Tus-Resumable": "1.0.0", "apikey": live.keys.publishable_key,
                                    "authorization": f"Bearer {token}"})
    assert head.headers["upload-offset"] == str(stopped["accepted"]) == str(2 * CHUNK)
    resumed = _tus_js(node, live, token, "videos", f"{uid}/resumed.bin", str(path), "resume", url)
    assert resumed["url"] == url  # the same upload went on: no new one was created
    assert download(live, "videos", f"{uid}/resumed.bin").content == data


def test_tus_js_client_sees_the_refusal(node: list[str], js_client: Path,  # noqa: F811
                                        live: RunningServer, user: tuple[str, str],
                                        payload: tuple[Path, bytes]) -> None:
    token, _ = user
    path, _ = payload
    refused = _tus_js(node, live, token, "locked", "secret.bin", str(path), "refused")
    assert refused["status"] == 403 and "AccessDenied" in str(refused["body"])
    missing = _tus_js(node, live, token, "no-such-bucket", "x.bin", str(path), "refused")
    assert missing["status"] == 404
