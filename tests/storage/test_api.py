"""Storage over the wire: faults leave table and folder consistent; policies decide; images render."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import h11
import httpx
import pytest
from PIL import Image

from gatehouse.core.db import Database
from tests.support import ConfirmedSession, RunningServer, png


@pytest.fixture(scope="module")
async def folder_policy(db: Database) -> None:
    """A user's own policy, added the way a migration would: only into a folder named after auth.uid()."""
    await db.admin.execute(
        """
        INSERT INTO storage.buckets (id, name) VALUES ('docs', 'docs');
        CREATE POLICY "own folder only" ON storage.objects FOR INSERT TO authenticated
            WITH CHECK (bucket_id = 'docs' AND (storage.foldername(name))[1] = (SELECT auth.uid())::text);
        CREATE POLICY "read own folder" ON storage.objects FOR SELECT TO authenticated
            USING (bucket_id = 'docs' AND (storage.foldername(name))[1] = (SELECT auth.uid())::text);
        """
    )


@pytest.fixture(scope="module")
def server(server_factory: Callable[..., RunningServer], folder_policy: None) -> RunningServer:
    return server_factory(env={"GATEHOUSE_RATE_LIMITS_ENABLED": "false"})


async def consistent(db: Database, server: RunningServer) -> None:
    """Every row has its bytes and every stored blob has its row (or waits in the janitor's queue)."""
    rows = {r["key"] for r in await db.admin.fetch("SELECT bucket_id || '/' || version AS key FROM storage.objects")}
    queued = {r["key"] for r in await db.admin.fetch("SELECT key FROM storage.deleted_blobs")}
    blobs_root = server.data_dir.resolve() / "storage" / "blobs"
    blobs = {str(p.relative_to(blobs_root)) for p in blobs_root.rglob("*") if p.is_file()} if blobs_root.exists() else set()
    assert rows <= blobs, f"rows without bytes: {rows - blobs}"
    assert blobs <= rows | queued, f"bytes without a row: {blobs - rows - queued}"
    spool = server.data_dir.resolve() / "storage" / ".spool"
    assert not [p for p in spool.iterdir()] if spool.exists() else True, "temporary upload files left behind"


async def test_the_folder_policy_decides(user: tuple[httpx.Client, str], db: Database, server: RunningServer) -> None:
    client, uid = user
    ok = client.post(f"/object/docs/{uid}/notes.txt", content=b"mine", headers={"Content-Type": "text/plain"})
    assert ok.status_code == 200, ok.text
    elsewhere = client.post("/object/docs/someone-else/notes.txt", content=b"x", headers={"Content-Type": "text/plain"})
    assert elsewhere.status_code == 400 and elsewhere.json()["statusCode"] == "403"
    assert elsewhere.json()["code"] == "AccessDenied"
    top = client.post("/object/docs/top.txt", content=b"x", headers={"Content-Type": "text/plain"})
    assert top.json()["statusCode"] == "403"
    await consistent(db, server)


@pytest.mark.parametrize(
    "name",
    ["{uid}/../../escape.png", "../{uid}.png", "/{uid}.png", "{uid}//b.png", "{uid}/./x.png", "{uid}\x01.png",
     "{uid}\\slash.png", "{uid}" + "x" * 1100, "{uid}\x00.png"],
)
async def test_hostile_names_are_refused(user: tuple[httpx.Client, str], db: Database, server: RunningServer,
                                         name: str) -> None:
    client, uid = user
    # percent-encoded (dots too), so that no client-side URL clean-up hides the attempt
    raw = quote(name.format(uid=uid), safe="/").replace(".", "%2E")
    response = client.post(f"/object/avatars/{raw}", content=png(), headers={"Content-Type": "image/png"})
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "InvalidKey"
    await consistent(db, server)


async def test_zero_byte_and_wrong_types(user: tuple[httpx.Client, str], db: Database, server: RunningServer) -> None:
    client, uid = user
    empty_image = client.post(f"/object/avatars/{uid}-empty.png", content=b"", headers={"Content-Type": "image/png"})
    assert empty_image.json()["statusCode"] == "415"
    empty_doc = client.post(f"/object/docs/{uid}/empty.txt", content=b"", headers={"Content-Type": "text/plain"})
    assert empty_doc.status_code == 200
    assert client.get(f"/object/docs/{uid}/empty.txt").content == b""
    junk = client.post(f"/object/avatars/{uid}-junk.png", content=b"\x89PNG\r\n\x1a\n" + b"junk" * 250,
                       headers={"Content-Type": "image/png"})
    assert junk.json()["statusCode"] == "415" and "not a valid image/png" in junk.json()["message"]
    html = client.post(f"/object/avatars/{uid}-x.html", content=b"<script>", headers={"Content-Type": "text/html"})
    assert html.json()["statusCode"] == "415"
    await consistent(db, server)


async def test_oversized_upload_stops_early(user: tuple[httpx.Client, str], db: Database, server: RunningServer) -> None:
    client, uid = user
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as raw:  # declares 3 MiB, sends 10 bytes
        raw.sendall(
            f"POST /storage/v1/object/avatars/{uid}-big.png HTTP/1.1\r\nHost: {host}\r\n"
            f"Authorization: {client.headers['authorization']}\r\nContent-Type: image/png\r\n"
            f"Content-Length: {3 * 1024 * 1024}\r\n\r\n".encode() + b"x" * 10
        )
        answer = ""
        while "}" not in answer:  # the status line may arrive before the body
            chunk = raw.recv(4096).decode()
            if not chunk:
                break
            answer += chunk
    assert answer.startswith("HTTP/1.1 400") and '"statusCode":"413"' in answer  # answered before the body came

    def chunks() -> Iterator[bytes]:
        yield b"\x89PNG\r\n\x1a\n"
        for _ in range(64):
            yield b"0" * 65536  # 4 MiB in all, chunked: no Content-Length to trust

    try:
        streamed = client.post(f"/object/avatars/{uid}-stream.png", content=chunks(), headers={"Content-Type": "image/png"})
    except (httpx.TransportError, h11.LocalProtocolError):
        pass  # the server answered 413 and closed before the client finished sending: also a refusal
    else:
        assert streamed.json()["statusCode"] == "413"
    await consistent(db, server)


async def test_client_hanging_up_mid_upload_leaves_nothing(user: tuple[httpx.Client, str], db: Database,
                                                           server: RunningServer) -> None:
    client, uid = user
    host, port = server.url.removeprefix("http://").split(":")
    token = client.headers["authorization"]
    with socket.create_connection((host, int(port))) as raw:
        raw.sendall(
            f"POST /storage/v1/object/docs/{uid}/partial.txt HTTP/1.1\r\nHost: {host}\r\n"
            f"Authorization: {token}\r\nContent-Type: text/plain\r\nContent-Length: 1000000\r\n\r\n".encode()
            + b"x" * 100_000
        )
        time.sleep(0.3)
    time.sleep(0.5)
    assert client.get(f"/object/docs/{uid}/partial.txt").json()["statusCode"] == "404"
    await consistent(db, server)


async def test_a_failing_backend_write_leaves_no_row(user: tuple[httpx.Client, str], db: Database,
                                                     server: RunningServer) -> None:
    client, uid = user
    blobs = server.data_dir.resolve() / "storage" / "blobs" / "docs"
    blobs.mkdir(parents=True, exist_ok=True)
    # the move into place fails: a read-only folder (root ignores mode bits, so make it immutable)
    lock = ["chattr", "+i", str(blobs)] if os.geteuid() == 0 else ["chmod", "0500", str(blobs)]
    unlock = ["chattr", "-i", str(blobs)] if os.geteuid() == 0 else ["chmod", "0700", str(blobs)]
    if subprocess.run(lock, capture_output=True, check=False).returncode != 0:
        pytest.skip("cannot make a folder read-only here")
    try:
        failed = client.post(f"/object/docs/{uid}/doomed.txt", content=b"bytes", headers={"Content-Type": "text/plain"})
    finally:
        subprocess.run(unlock, capture_output=True, check=True)
    assert failed.status_code >= 500 or failed.json()["statusCode"].startswith("5")
    assert client.get(f"/object/docs/{uid}/doomed.txt").json()["statusCode"] == "404"
    await consistent(db, server)


async def test_overwrite_and_delete_queue_old_bytes_for_the_janitor(user: tuple[httpx.Client, str], db: Database,
                                                                    server: RunningServer) -> None:
    client, uid = user
    path = f"/object/avatars/{uid}-cycle.png"
    client.post(path, content=png(color="red"), headers={"Content-Type": "image/png"})
    client.put(path, content=png(color="blue"), headers={"Content-Type": "image/png"})
    assert client.get(path).content == png(color="blue")
    client.delete(path)
    deadline = time.monotonic() + 15
    while await db.admin.fetchval("SELECT count(*) FROM storage.deleted_blobs"):
        assert time.monotonic() < deadline, "the janitor did not delete the old bytes"
        time.sleep(0.1)
    await consistent(db, server)


async def test_deleting_a_user_deletes_their_objects(
    server: RunningServer, db: Database, confirmed_session: ConfirmedSession
) -> None:
    _, session = confirmed_session(server)
    uid = session["user"]["id"]
    headers = {"Authorization": f"Bearer {session['access_token']}", "Content-Type": "image/png"}
    assert httpx.post(f"{server.url}/storage/v1/object/avatars/{uid}-bye.png", content=png(), headers=headers).status_code == 200
    admin = httpx.request("DELETE", f"{server.url}/auth/v1/admin/users/{uid}", headers={"apikey": server.keys.secret_key},
                          json={})
    assert admin.status_code == 200
    assert await db.admin.fetchval("SELECT count(*) FROM storage.objects WHERE owner = $1::uuid", uid) == 0
    deadline = time.monotonic() + 15
    while await db.admin.fetchval("SELECT count(*) FROM storage.deleted_blobs"):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    await consistent(db, server)


def test_render_image(user: tuple[httpx.Client, str], server: RunningServer) -> None:
    client, uid = user
    client.post(f"/object/avatars/{uid}-render.png", content=png(200), headers={"Content-Type": "image/png"})
    rendered = httpx.get(f"{server.url}/storage/v1/render/image/public/avatars/{uid}-render.png",
                         params={"width": "50", "height": "50", "resize": "cover", "format": "origin"})
    assert rendered.status_code == 200 and rendered.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(rendered.content)).size == (50, 50)
    bad = httpx.get(f"{server.url}/storage/v1/render/image/public/avatars/{uid}-render.png", params={"width": "-3"})
    assert bad.status_code == 400 and bad.json()["statusCode"] == "400"


def test_bucket_admin_needs_the_service_role(user: tuple[httpx.Client, str], server: RunningServer) -> None:
    client, _ = user
    created = client.post("/bucket", json={"id": f"mine-{uuid.uuid4().hex[:6]}", "public": True})
    assert created.json()["statusCode"] == "403"
    assert [b["id"] for b in client.get("/bucket").json()] == ["avatars"]  # the public one
    service = httpx.post(f"{server.url}/storage/v1/bucket", headers={"apikey": server.keys.secret_key},
                         json={"id": "bad name!"})
    assert service.status_code == 400 and service.json()["code"] == "InvalidBucketName"


def test_active_content_is_sandboxed(server: RunningServer) -> None:
    key = {"apikey": server.keys.secret_key}
    httpx.post(f"{server.url}/storage/v1/bucket", headers=key, json={"id": "site", "public": True})
    httpx.post(f"{server.url}/storage/v1/object/site/page.html", headers=key | {"Content-Type": "text/html"},
               content=b"<script>alert(1)</script>")
    served = httpx.get(f"{server.url}/storage/v1/object/public/site/page.html")
    assert served.headers["content-security-policy"] == "default-src 'none'; sandbox"
    assert served.headers["content-disposition"].startswith("attachment")
    assert served.headers["x-content-type-options"] == "nosniff"
    assert Path


async def test_uploads_follow_bucket_changes_made_elsewhere(user: tuple[httpx.Client, str], db: Database,
                                                            server: RunningServer) -> None:
    """A process remembers a bucket's settings between uploads; changes made by another process (here
    straight in SQL) still decide: at the stream's limit, at the type check, and in the row's statement."""
    client, uid = user

    def put(size: int, content_type: str = "text/plain", *, chunked: bool = False) -> httpx.Response:
        body = b"x" * size
        content: bytes | Iterator[bytes] = iter([body[:size // 2], body[size // 2:]]) if chunked else body
        return client.post(f"/object/docs/{uid}/{uuid.uuid4()}.txt", content=content,
                           headers={"Content-Type": content_type})

    async def settings(limit: int | None, types: list[str] | None) -> None:
        await db.admin.execute("UPDATE storage.buckets SET file_size_limit = $1, allowed_mime_types = $2 "
                               "WHERE id = 'docs'", limit, types)

    try:
        await settings(10_000, None)
        assert put(10).status_code == 200  # the server now remembers 10,000 bytes, any type
        await settings(1_000, None)  # lowered: the row's statement sees it, the upload is checked again
        lowered = put(5_000)
        assert lowered.status_code == 400 and lowered.json()["statusCode"] == "413", lowered.text

        await settings(100, None)
        assert put(50).status_code == 200  # remembered: 100 bytes
        await settings(10_000, None)  # raised: refusals on a remembered copy are confirmed first
        assert put(5_000).status_code == 200  # by Content-Length
        await settings(100, None)
        assert put(50).status_code == 200
        await settings(10_000, None)
        assert put(5_000, chunked=True).status_code == 200  # by the stream's limit, no Content-Length

        await settings(None, ["image/png"])  # remembered: any type; the row's statement refuses
        refused = put(10)
        assert refused.status_code == 400 and refused.json()["statusCode"] == "415", refused.text
        await settings(None, ["text/plain"])
        assert put(10).status_code == 200  # the remembered list said image/png only: confirmed first
        await settings(None, ["image/png"])
        refused = put(10)
        assert refused.status_code == 400 and refused.json()["statusCode"] == "415", refused.text
    finally:
        await settings(None, None)
    await consistent(db, server)
