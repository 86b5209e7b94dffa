"""Resumable uploads (TUS 1.0.0) at /storage/v1/upload/resumable, on the wire: the protocol's answers."""

from __future__ import annotations

import base64
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote, urlsplit

import httpx
import pytest

from gatehouse.core.db import Database
from tests.storage.tus_helpers import CHUNK, ENDPOINT, Tus, blobs, collect_garbage, metadata
from tests.support import ConfirmedSession, RunningServer, run_sql


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tus-storage")


@pytest.fixture(scope="module")
def server(server_factory: Callable[..., RunningServer], storage: Path, database_url: str) -> RunningServer:
    live = server_factory(env={"GATEHOUSE_STORAGE_DIR": str(storage), "GATEHOUSE_RATE_LIMITS_ENABLED": "false"})
    admin = {"apikey": live.keys.secret_key}
    for bucket in ({"id": "tus", "public": False},
                   {"id": "tus-small", "file_size_limit": 1000, "allowed_mime_types": ["text/plain"]},
                   {"id": "tus-users"}):
        httpx.post(f"{live.url}/storage/v1/bucket", headers=admin, json=bucket).raise_for_status()
    run_sql(database_url, """
        CREATE POLICY "tus users insert their own" ON storage.objects FOR INSERT TO authenticated
            WITH CHECK (bucket_id = 'tus-users' AND owner_id = auth.uid()::text);
        CREATE POLICY "tus users read their own" ON storage.objects FOR SELECT TO authenticated
            USING (bucket_id = 'tus-users' AND owner_id = auth.uid()::text);
        CREATE POLICY "tus users replace their own" ON storage.objects FOR UPDATE TO authenticated
            USING (bucket_id = 'tus-users' AND owner_id = auth.uid()::text);
    """)
    return live


@pytest.fixture(scope="module")
def service(server: RunningServer) -> Iterator[Tus]:
    tus = Tus(server, {"apikey": server.keys.secret_key})
    yield tus
    tus.close()


@pytest.fixture(scope="module")
def people(server: RunningServer, confirmed_session: ConfirmedSession) -> Iterator[tuple[Tus, Tus, str]]:
    """Two signed-in users' TUS speakers, and the first one's token."""
    speakers = []
    for _ in range(2):
        _, session = confirmed_session(server)
        speakers.append(Tus(server, {"apikey": server.keys.publishable_key,
                                     "Authorization": f"Bearer {session['access_token']}"}))
    _, first = confirmed_session(server)
    yield speakers[0], speakers[1], first["access_token"]
    for speaker in speakers:
        speaker.close()


async def part_versions(db: Database, url: str) -> set[str]:
    """The stored chunks of the upload at ``url``."""
    upload_id = base64.urlsafe_b64decode(url.rsplit("/", 1)[1] + "==").decode().rsplit("/", 1)[1]
    rows = await db.admin.fetch("SELECT version FROM storage.resumable_parts WHERE upload_id = $1", uuid.UUID(upload_id))
    return {row["version"] for row in rows}


def download(server: RunningServer, bucket: str, name: str) -> httpx.Response:
    return httpx.get(f"{server.url}/storage/v1/object/{bucket}/{name}", headers={"apikey": server.keys.secret_key})


def test_options_lists_the_version_and_extensions(server: RunningServer) -> None:
    answer = httpx.options(f"{server.url}{ENDPOINT}")
    assert answer.status_code == 204
    assert answer.headers["tus-resumable"] == "1.0.0" and answer.headers["tus-version"] == "1.0.0"
    assert set(answer.headers["tus-extension"].split(",")) == {"creation", "creation-with-upload", "termination",
                                                                "expiration"}
    assert answer.headers["tus-max-size"] == str(50 * 1024 * 1024)


def test_a_web_page_may_speak_tus(server: RunningServer, service: Tus) -> None:
    """tus-js-client in a browser: the preflight allows the protocol's headers, the answers expose them."""
    preflight = httpx.options(f"{server.url}{ENDPOINT}", headers={
        "Origin": "https://app.example.com", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,apikey,tus-resumable,upload-length,upload-metadata,x-upsert",
    })
    assert preflight.status_code == 200, preflight.text
    created = service.create("tus", "from-a-page.bin", 2 * CHUNK, headers={"Origin": "https://app.example.com"})
    exposed = {name.strip().lower() for name in created.headers["access-control-expose-headers"].split(",")}
    assert {"location", "upload-offset", "upload-expires", "tus-resumable"} <= exposed


async def test_an_upload_in_chunks_becomes_one_object(server: RunningServer, service: Tus, db: Database,
                                                      storage: Path) -> None:
    data = os.urandom(2 * CHUNK + 1234)
    created = service.create("tus", "docs/report.bin", len(data), contentType="application/pdf",
                             cacheControl="3600", metadata='{"team": "blue"}', filename="ignored.bin")
    assert created.status_code == 201 and created.headers["tus-resumable"] == "1.0.0"
    url = created.headers["location"]
    assert url.startswith(f"{server.url}{ENDPOINT}/") and "upload-expires" in created.headers
    head = service.head(url)
    assert head.status_code == 200 and head.headers["upload-offset"] == "0"
    assert head.headers["upload-length"] == str(len(data)) and head.headers["cache-control"] == "no-store"
    assert "filename" not in head.headers["upload-metadata"] and "bucketName" in head.headers["upload-metadata"]

    first = service.patch(url, 0, data[:CHUNK])
    assert first.status_code == 204 and first.headers["upload-offset"] == str(CHUNK)
    assert "tus-complete" not in first.headers and "upload-expires" in first.headers
    assert service.head(url).headers["upload-offset"] == str(CHUNK)
    assert await db.admin.fetchval("SELECT count(*) FROM storage.objects WHERE name = 'docs/report.bin'") == 0
    assert service.patch(url, CHUNK, data[CHUNK:2 * CHUNK]).status_code == 204
    parts = await part_versions(db, url)
    assert parts <= blobs(storage, "tus") and len(parts) == 2

    last = service.patch(url, 2 * CHUNK, data[2 * CHUNK:])
    assert last.status_code == 204 and last.headers["upload-offset"] == str(len(data))
    assert last.headers["tus-complete"] == "1"
    got = download(server, "tus", "docs/report.bin")
    assert got.content == data and got.headers["content-type"] == "application/pdf"
    assert got.headers["cache-control"] == "max-age=3600"
    info = httpx.get(f"{server.url}/storage/v1/object/info/tus/docs/report.bin",
                     headers={"apikey": server.keys.secret_key}).json()
    assert info["metadata"] == {"team": "blue"} and info["size"] == len(data)
    assert service.head(url).status_code == 404  # over: the upload is gone
    assert await db.admin.fetchval("SELECT count(*) FROM storage.resumable_uploads WHERE name = 'docs/report.bin'") == 0
    await collect_garbage(db.admin, storage)
    assert not parts & blobs(storage, "tus") and not [p for p in (storage / ".spool").iterdir() if p.is_file()]


async def test_creation_with_upload_and_an_empty_file(server: RunningServer, service: Tus, db: Database) -> None:
    data = os.urandom(CHUNK + 10)
    created = service.create("tus", "with-body.bin", len(data), body=data[:CHUNK])
    assert created.status_code == 201 and created.headers["upload-offset"] == str(CHUNK)
    url = created.headers["location"]
    assert service.patch(url, CHUNK, data[CHUNK:]).headers["tus-complete"] == "1"
    assert download(server, "tus", "with-body.bin").content == data

    too_much = service.create("tus", "too-much.txt", 5, body=b"hello world")
    assert too_much.status_code == 413 and "location" not in too_much.headers
    assert service.create("tus", "wrong-type.txt", 5, body=b"hello",
                          headers={"Content-Type": "text/plain"}).status_code == 415
    whole = service.create("tus", "whole.txt", 5, body=b"hello", contentType="text/plain")
    assert whole.status_code == 201 and whole.headers["upload-offset"] == "5"
    assert download(server, "tus", "whole.txt").content == b"hello"
    assert await db.admin.fetchval("SELECT count(*) FROM storage.resumable_uploads WHERE name LIKE '%.txt'") == 0
    empty = service.create("tus", "empty.txt", 0)
    assert empty.status_code == 201
    assert download(server, "tus", "empty.txt").content == b""


def test_a_name_with_quotes_and_unicode_is_only_data(server: RunningServer, service: Tus) -> None:
    name = "folder/it's \"quoted\"; DROP TABLE storage.objects; -- ü %2F.txt"
    created = service.create("tus", name, 4, body=b"data", contentType="text/plain")
    assert created.status_code == 201, created.text
    got = httpx.get(f"{server.url}/storage/v1/object/tus/{quote(name)}", headers={"apikey": server.keys.secret_key})
    assert got.content == b"data"


def test_the_offset_must_match(service: Tus) -> None:
    data = os.urandom(2 * CHUNK)
    url = service.url("tus", "offsets.bin", len(data))
    assert service.patch(url, 0, data[:CHUNK]).status_code == 204
    replay = service.patch(url, 0, data[:CHUNK])
    assert replay.status_code == 409 and replay.json()["code"] == "TusError"
    ahead = service.patch(url, 2 * CHUNK - 10, data[:10])
    assert ahead.status_code == 409
    assert service.head(url).headers["upload-offset"] == str(CHUNK)


@pytest.mark.parametrize(("headers", "status"), [
    ({"Content-Type": "application/octet-stream"}, 415),
    ({"Content-Type": "text/plain"}, 415),
    ({"Tus-Resumable": "0.2.2"}, 412),
    ({"Upload-Offset": "-1"}, 400),
    ({"Upload-Offset": "1e3"}, 400),
    ({"Upload-Offset": "99999999999999999999"}, 400),
])
def test_a_malformed_patch_is_refused(service: Tus, headers: dict[str, str], status: int) -> None:
    url = service.url("tus", f"malformed-{uuid.uuid4().hex[:6]}.bin", 2 * CHUNK)
    answer = service.patch(url, 0, os.urandom(CHUNK), **headers)
    assert answer.status_code == status, answer.text
    assert answer.headers["tus-resumable"] == "1.0.0"
    if status == 412:
        assert answer.headers["tus-version"] == "1.0.0"
    assert service.head(url).headers["upload-offset"] == "0"


def test_a_chunk_past_the_declared_length_is_refused(service: Tus, db: Database) -> None:
    url = service.url("tus", "overflow.bin", CHUNK + 100)
    declared = service.patch(url, 0, os.urandom(CHUNK + 101))
    assert declared.status_code == 413 and declared.json()["code"] == "EntityTooLarge"

    def streamed() -> Iterator[bytes]:  # no Content-Length: caught while it arrives
        for _ in range(4):
            yield os.urandom(CHUNK // 2)

    assert service.patch(url, 0, streamed()).status_code == 413
    assert service.head(url).headers["upload-offset"] == "0"
    small = service.patch(url, 0, b"x" * 1000)  # neither the last chunk nor a chunk's least size
    assert small.status_code == 400 and str(CHUNK) in small.json()["message"]
    assert service.head(url).headers["upload-offset"] == "0"


def test_a_chunk_cut_short_keeps_nothing(server: RunningServer, service: Tus, storage: Path) -> None:
    """The client goes away mid-chunk: none of it counts, the temporary file goes, the upload goes on."""
    data = os.urandom(2 * CHUNK)
    url = service.url("tus", "cut.bin", len(data))
    path = urlsplit(url).path
    request = (f"PATCH {path} HTTP/1.1\r\nHost: 127.0.0.1\r\napikey: {server.keys.secret_key}\r\n"
               f"Tus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\nContent-Type: application/offset+octet-stream\r\n"
               f"Content-Length: {CHUNK}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", urlsplit(server.url).port or 80)) as sock:
        sock.sendall(request + data[: CHUNK // 2])
    deadline = time.monotonic() + 20
    while f"PATCH {path} 400" not in server.log():  # the server has noticed, and answered nobody
        assert time.monotonic() < deadline, server.log()[-2000:]
        time.sleep(0.05)
    assert service.head(url).headers["upload-offset"] == "0"
    assert not list((storage / ".spool").glob("tus-*"))
    service.upload(url, data)
    assert download(server, "tus", "cut.bin").content == data


@pytest.mark.parametrize(("length", "status"), [
    ("-1", 400), ("abc", 400), ("", 400), ("1.5", 400), ("99999999999999999999", 400),
    (str(50 * 1024 * 1024 + 1), 413),
])
def test_a_bad_upload_length_is_refused(service: Tus, length: str, status: int) -> None:
    answer = service.client.post(ENDPOINT, headers={"Upload-Length": length,
                                                    "Upload-Metadata": metadata(bucketName="tus", objectName="x")})
    assert answer.status_code == status, answer.text


def test_creation_checks_the_bucket_early(service: Tus) -> None:
    assert service.create("tus-small", "big.txt", 1001, contentType="text/plain").status_code == 413
    refused_type = service.create("tus-small", "page.html", 10, contentType="text/html")
    assert refused_type.status_code == 415 and refused_type.json()["code"] == "InvalidMimeType"
    missing = service.create("no-such-bucket", "a.txt", 10)
    assert missing.status_code == 404 and missing.json()["code"] == "NoSuchBucket"
    no_defer = service.client.post(ENDPOINT, headers={"Upload-Defer-Length": "1",
                                                      "Upload-Metadata": metadata(bucketName="tus", objectName="x")})
    assert no_defer.status_code == 400
    no_version = service.client.post(ENDPOINT, headers={"Tus-Resumable": "", "Upload-Length": "1",
                                                        "Upload-Metadata": metadata(bucketName="tus", objectName="x")})
    assert no_version.status_code == 412


@pytest.mark.parametrize("header", [
    None,
    "bucketName dHVz",  # no objectName
    "bucketName dHVz,objectName !!!",  # not base64
    "bucketName dHVz,objectName eA",  # unpadded
    "bucketName dHVz,objectName /w==",  # not UTF-8
    "bucketName dHVz,objectName eA==,objectName eQ==",  # twice
    "bucketName dHVz,objectName eA== extra",
    "bucketName dHVz,,objectName eA==",
    "bucketName dHVz," + ",".join(f"k{i} eA==" for i in range(40)) + ",objectName eA==",
    "bucketName dHVz,objectName eA==,junk " + "QUFB" * 5000,
    metadata(bucketName="tus", objectName="x", metadata="not json"),
    metadata(bucketName="tus", objectName="x", metadata="[1, 2]"),
    metadata(bucketName="tus", objectName="x", metadata='{"a": "' + "b" * 9000 + '"}'),
    metadata(bucketName="tus", objectName="x", contentType="text/plain, text/html"),
    metadata(bucketName="tus", objectName="x", contentType="multipart/form-data; boundary=x"),
    metadata(bucketName="tus", objectName="x", cacheControl="max-age=1\r\nSet-Cookie: a=b"),
    metadata(bucketName="tus", objectName="../escape"),
    metadata(bucketName="tus", objectName="a//b"),
    metadata(bucketName="tus", objectName="line\nbreak"),
    metadata(bucketName="tus", objectName="/absolute"),
    metadata(bucketName="Not A Bucket", objectName="x"),
    metadata(bucketName="tus'; DROP TABLE storage.objects; --", objectName="x"),
])
def test_malformed_metadata_is_refused(service: Tus, db: Database, header: str | None) -> None:
    headers = {"Upload-Length": "10"} | ({"Upload-Metadata": header} if header is not None else {})
    answer = service.client.post(ENDPOINT, headers=headers)
    assert answer.status_code == 400, answer.text
    assert answer.json()["statusCode"] == "400" and answer.json()["message"]


def test_callers_without_a_valid_token_are_refused(server: RunningServer, service: Tus,
                                                   people: tuple[Tus, Tus, str]) -> None:
    alice, _, token = people
    header, payload, signature = token.split(".")
    forged = f"{header}.{payload}.{signature[:-4]}AAAA"
    expired = server.keys.sign({"sub": str(uuid.uuid4()), "role": "authenticated", "exp": 1_600_000_000})
    url = alice.url("tus-users", "mine.bin", 2 * CHUNK)
    for headers in ({"Authorization": f"Bearer {forged}", "apikey": server.keys.publishable_key},
                    {"Authorization": f"Bearer {expired}", "apikey": server.keys.publishable_key},
                    {"apikey": "sb_publishable_not-ours"},
                    {}):
        stranger = Tus(server, headers)
        try:
            assert stranger.create("tus-users", "x.bin", 10).status_code in (401, 403)
            assert stranger.head(url).status_code in (401, 403)
            assert stranger.patch(url, 0, os.urandom(CHUNK)).status_code in (401, 403)
            assert stranger.delete(url).status_code in (401, 403)
        finally:
            stranger.close()
    assert alice.head(url).headers["upload-offset"] == "0"


def test_another_callers_upload_does_not_exist_for_them(service: Tus, people: tuple[Tus, Tus, str]) -> None:
    alice, bob, _ = people
    url = alice.url("tus-users", "alice.bin", 2 * CHUNK)
    assert alice.patch(url, 0, os.urandom(CHUNK)).status_code == 204
    for caller in (bob, service):
        assert caller.head(url).status_code == 404
        assert caller.patch(url, CHUNK, os.urandom(CHUNK)).json()["code"] == "NoSuchUpload"
        assert caller.delete(url).status_code == 404
    assert alice.head(url).headers["upload-offset"] == str(CHUNK)


@pytest.mark.parametrize("upload_id", [
    "!!!!", "AAAA", "a" * 3000, "dHVzL3gvbm90LWEtdXVpZA",  # tus/x/not-a-uuid
    "dHVzL3g", "_-_-", "%00", "..%2F..%2Fetc",
])
def test_an_upload_id_that_is_no_id_is_refused(service: Tus, upload_id: str) -> None:
    for answer in (service.head(f"{ENDPOINT}/{upload_id}"), service.delete(f"{ENDPOINT}/{upload_id}"),
                   service.patch(f"{ENDPOINT}/{upload_id}", 0, b"x")):
        assert answer.status_code in (400, 404), (upload_id, answer.status_code)


def test_an_id_for_another_name_or_an_unknown_upload_is_not_found(service: Tus) -> None:
    url = service.url("tus", "named.bin", 2 * CHUNK)
    token = url.rsplit("/", 1)[1]
    upload_id = base64.urlsafe_b64decode(token + "==").decode().rsplit("/", 1)[1]

    def id_for(text: str) -> str:
        return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")

    for other in (f"tus/other.bin/{upload_id}", f"tus-users/named.bin/{upload_id}", f"tus/named.bin/{uuid.uuid4()}"):
        assert service.head(f"{ENDPOINT}/{id_for(other)}").status_code == 404
    assert service.head(url).status_code == 200


async def test_rls_refuses_at_the_end_and_nothing_stays(server: RunningServer, people: tuple[Tus, Tus, str],
                                                        db: Database, storage: Path) -> None:
    alice, _, _ = people
    data = os.urandom(CHUNK + 500)
    url = alice.url("tus", "not-allowed.bin", len(data))  # no policy lets users write "tus"
    assert alice.patch(url, 0, data[:CHUNK]).status_code == 204
    parts = await part_versions(db, url)
    refused = alice.patch(url, CHUNK, data[CHUNK:])
    assert refused.status_code == 403 and refused.json()["code"] == "AccessDenied"
    assert await db.admin.fetchval("SELECT count(*) FROM storage.objects WHERE name = 'not-allowed.bin'") == 0
    assert await db.admin.fetchval("SELECT count(*) FROM storage.resumable_uploads WHERE name = 'not-allowed.bin'") == 0
    assert alice.head(url).status_code == 404
    await collect_garbage(db.admin, storage)
    assert not parts & blobs(storage, "tus")
    assert not [p for p in (storage / ".spool").iterdir() if p.is_file()]


def test_x_upsert_decides_whether_an_object_is_replaced(server: RunningServer, people: tuple[Tus, Tus, str]) -> None:
    alice, _, _ = people
    first, second = os.urandom(CHUNK + 1), os.urandom(CHUNK + 2)
    alice.upload(alice.url("tus-users", "twice.bin", len(first)), first)
    url = alice.url("tus-users", "twice.bin", len(second))
    assert alice.patch(url, 0, second[:CHUNK]).status_code == 204
    conflict = alice.patch(url, CHUNK, second[CHUNK:])
    assert conflict.status_code == 409 and conflict.json()["code"] == "KeyAlreadyExists"
    assert download(server, "tus-users", "twice.bin").content == first
    created = alice.create("tus-users", "twice.bin", len(second), upsert=True)
    alice.upload(created.headers["location"], second)
    assert download(server, "tus-users", "twice.bin").content == second


async def test_termination_deletes_the_upload(service: Tus, db: Database, storage: Path) -> None:
    url = service.url("tus", "terminated.bin", 3 * CHUNK)
    assert service.patch(url, 0, os.urandom(CHUNK)).status_code == 204
    parts = await part_versions(db, url)
    assert parts
    answer = service.delete(url)
    assert answer.status_code == 204 and answer.headers["tus-resumable"] == "1.0.0"
    assert service.head(url).status_code == 404
    assert service.patch(url, CHUNK, os.urandom(CHUNK)).status_code == 404
    assert service.delete(url).status_code == 404
    await collect_garbage(db.admin, storage)
    assert not parts & blobs(storage, "tus")
