"""Copy and move over the wire: the target bucket's rules apply exactly as to an upload.

A refusal answers as the upload would (same code and status) and leaves nothing half-done: no
row at the target, no bytes without a row, the source as it was.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterator

import httpx
import pytest
from PIL import Image

from gatehouse.core.db import Database
from tests.storage.conftest import S3Bucket
from tests.storage.test_api import consistent
from tests.support import RunningServer, png


def noisy_png(side: int) -> bytes:
    """A real PNG that does not compress: about 3 × side² bytes."""
    out = io.BytesIO()
    Image.frombytes("RGB", (side, side), os.urandom(3 * side * side)).save(out, format="PNG", compress_level=1)
    return out.getvalue()


@pytest.fixture(scope="module")
async def policies(db: Database) -> None:
    """``notes``: a user writes only their own folder, but (a common slip) may update any object
    they own, whatever its bucket. ``vault``: no one but the service role may create objects."""
    await db.admin.execute(
        """
        INSERT INTO storage.buckets (id, name) VALUES ('notes', 'notes'), ('vault', 'vault'), ('open', 'open');
        CREATE POLICY "notes: own folder" ON storage.objects FOR INSERT TO authenticated
            WITH CHECK (bucket_id = 'notes' AND (storage.foldername(name))[1] = (SELECT auth.uid())::text);
        CREATE POLICY "own objects: read" ON storage.objects FOR SELECT TO authenticated
            USING (owner = (SELECT auth.uid()));
        CREATE POLICY "own objects: update" ON storage.objects FOR UPDATE TO authenticated
            USING (owner = (SELECT auth.uid()));
        """
    )


@pytest.fixture(scope="module")
def server(server_factory: Callable[..., RunningServer], policies: None) -> RunningServer:
    return server_factory(env={"GATEHOUSE_RATE_LIMITS_ENABLED": "false"})


@pytest.fixture(scope="module")
def service(server: RunningServer) -> Iterator[httpx.Client]:
    client = httpx.Client(base_url=f"{server.url}/storage/v1", headers={"apikey": server.keys.secret_key}, timeout=30)
    yield client
    client.close()


def transfer(client: httpx.Client, verb: str, source: str, target_bucket: str, target: str,
             bucket: str = "open") -> httpx.Response:
    return client.post(f"/object/{verb}", json={"bucketId": bucket, "sourceKey": source,
                                                "destinationBucket": target_bucket, "destinationKey": target})


def refused(response: httpx.Response, status: str, code: str) -> None:
    assert response.status_code == 400, response.text
    assert response.json()["statusCode"] == status and response.json()["code"] == code, response.text


async def rows(db: Database, bucket: str, name: str) -> int:
    return int(await db.admin.fetchval("SELECT count(*) FROM storage.objects WHERE bucket_id = $1 AND name = $2",
                                       bucket, name))


@pytest.mark.parametrize("verb", ["copy", "move"])
async def test_html_cannot_be_copied_or_moved_into_an_images_only_bucket(
    verb: str, service: httpx.Client, user: tuple[httpx.Client, str], db: Database, server: RunningServer
) -> None:
    client, uid = user
    page = f"{uid}/{verb}-page.html"
    assert client.post(f"/object/notes/{page}", content=b"<script>alert(1)</script>",
                       headers={"Content-Type": "text/html"}).status_code == 200
    upload = client.post(f"/object/avatars/{uid}-upload.png", content=b"<script>alert(1)</script>",
                         headers={"Content-Type": "text/html"})
    refused(upload, "415", "InvalidMimeType")  # what an upload answers ...
    answer = transfer(client, verb, page, "avatars", f"{uid}-{verb}.png", bucket="notes")
    refused(answer, "415", "InvalidMimeType")  # ... is what copy and move answer
    # the service role bypasses RLS, not the bucket's rules
    service.post("/object/open/page.html", content=b"<h1>hi</h1>", headers={"Content-Type": "text/html"})
    refused(transfer(service, verb, "page.html", "avatars", f"{verb}-page.png"), "415", "InvalidMimeType")
    assert httpx.get(f"{server.url}/storage/v1/object/public/avatars/{uid}-{verb}.png").json()["statusCode"] == "404"
    assert await rows(db, "avatars", f"{uid}-{verb}.png") == 0 and await rows(db, "notes", page) == 1
    assert client.get(f"/object/notes/{page}").content == b"<script>alert(1)</script>"
    await consistent(db, server)


@pytest.mark.parametrize("verb", ["copy", "move"])
async def test_too_big_for_the_target_bucket(verb: str, service: httpx.Client, db: Database,
                                             server: RunningServer) -> None:
    big = noisy_png(900)  # about 2.3 MB; avatars takes 2 MB
    assert len(big) > 2 * 1024 * 1024
    assert service.post(f"/object/open/{verb}-big.png", content=big, headers={"Content-Type": "image/png"}).status_code == 200
    refused(service.post(f"/object/avatars/{verb}-big.png", content=big, headers={"Content-Type": "image/png"}),
            "413", "EntityTooLarge")
    refused(transfer(service, verb, f"{verb}-big.png", "avatars", f"{verb}-big.png"), "413", "EntityTooLarge")
    assert await rows(db, "avatars", f"{verb}-big.png") == 0
    assert service.get(f"/object/open/{verb}-big.png").content == big
    # a limit tightened after the upload holds for copies and moves inside the bucket too
    await db.admin.execute("UPDATE storage.buckets SET file_size_limit = 1000 WHERE id = 'open'")
    try:
        refused(transfer(service, verb, f"{verb}-big.png", "open", f"{verb}-renamed.png"), "413", "EntityTooLarge")
    finally:
        await db.admin.execute("UPDATE storage.buckets SET file_size_limit = NULL WHERE id = 'open'")
    assert await rows(db, "open", f"{verb}-renamed.png") == 0 and await rows(db, "open", f"{verb}-big.png") == 1
    await consistent(db, server)


async def test_stored_bytes_are_verified_like_an_upload(service: httpx.Client, db: Database,
                                                        server: RunningServer) -> None:
    """An object whose row says image/png but whose bytes are not one (stored before the checks
    existed, or written around them) cannot be copied into an images-only bucket."""
    service.post("/object/open/fake.png", content=b"\x89PNG\r\n\x1a\n" + b"junk" * 100,
                 headers={"Content-Type": "application/octet-stream"})
    service.post("/object/open/html.png", content=b"<html><script>x</script>",
                 headers={"Content-Type": "application/octet-stream"})
    await db.admin.execute("UPDATE storage.objects SET metadata = metadata || '{\"mimetype\": \"image/png\"}' "
                           "WHERE bucket_id = 'open' AND name IN ('fake.png', 'html.png')")
    for name, message in (("fake.png", "not a valid image/png"), ("html.png", "not a image/png image")):
        for verb in ("copy", "move"):
            answer = transfer(service, verb, name, "avatars", f"verified-{verb}-{name}")
            refused(answer, "415", "InvalidMimeType")
            assert message in answer.json()["message"]
            assert await rows(db, "avatars", f"verified-{verb}-{name}") == 0 and await rows(db, "open", name) == 1
    await consistent(db, server)


async def test_images_within_the_rules_still_copy_and_move(user: tuple[httpx.Client, str], db: Database,
                                                           server: RunningServer) -> None:
    client, uid = user
    assert client.post(f"/object/notes/{uid}/face.png", content=png(), headers={"Content-Type": "image/png"}).status_code == 200
    copied = transfer(client, "copy", f"{uid}/face.png", "avatars", f"{uid}-copy.png", bucket="notes")
    assert copied.status_code == 200 and copied.json()["Key"] == f"avatars/{uid}-copy.png"
    moved = transfer(client, "move", f"{uid}/face.png", "avatars", f"{uid}-moved.png", bucket="notes")
    assert moved.status_code == 200, moved.text
    for name in (f"{uid}-copy.png", f"{uid}-moved.png"):
        served = httpx.get(f"{server.url}/storage/v1/object/public/avatars/{name}")
        assert served.content == png() and served.headers["content-type"] == "image/png"
    assert await rows(db, "notes", f"{uid}/face.png") == 0
    await consistent(db, server)


async def test_the_target_name_and_the_callers_rights_are_checked(
    user: tuple[httpx.Client, str], db: Database, server: RunningServer
) -> None:
    client, uid = user
    source = f"{uid}/memo.txt"
    assert client.post(f"/object/notes/{source}", content=b"memo", headers={"Content-Type": "text/plain"}).status_code == 200
    for verb in ("copy", "move"):
        refused(transfer(client, verb, source, "notes", f"{uid}/../escape.txt", bucket="notes"), "400", "InvalidKey")
        refused(transfer(client, verb, source, "Bad Bucket!", "x.txt", bucket="notes"), "400", "InvalidBucketName")
        refused(transfer(client, verb, source, "nowhere", "x.txt", bucket="notes"), "404", "NoSuchBucket")
        # an upload into vault is refused by RLS: so is copying or moving there, even though the
        # update policy alone would let the owner's row be rewritten into any bucket
        refused(client.post("/object/vault/memo.txt", content=b"memo", headers={"Content-Type": "text/plain"}),
                "403", "AccessDenied")
        refused(transfer(client, verb, source, "vault", "memo.txt", bucket="notes"), "403", "AccessDenied")
        refused(transfer(client, verb, source, "notes", f"someone-else/{verb}.txt", bucket="notes"), "403", "AccessDenied")
        assert await rows(db, "vault", "memo.txt") == 0
    assert client.post(f"/object/notes/{uid}/taken.txt", content=b"t", headers={"Content-Type": "text/plain"}).status_code == 200
    refused(transfer(client, "move", source, "notes", f"{uid}/taken.txt", bucket="notes"), "409", "KeyAlreadyExists")
    refused(transfer(client, "copy", source, "notes", f"{uid}/taken.txt", bucket="notes"), "409", "KeyAlreadyExists")
    assert client.get(f"/object/notes/{source}").content == b"memo"
    assert client.get(f"/object/notes/{uid}/taken.txt").content == b"t"
    await consistent(db, server)


async def test_the_checks_read_the_bytes_from_s3_too(server_factory: Callable[..., RunningServer], db: Database,
                                                     policies: None, s3: S3Bucket) -> None:
    """With S3 the stored bytes are not on this disk: the checks read them (a range, or a download
    for image verification, removed afterwards) and a refusal leaves no blob behind."""
    remote = server_factory(env=s3.env)
    with httpx.Client(base_url=f"{remote.url}/storage/v1", headers={"apikey": remote.keys.secret_key},
                      timeout=30) as client:
        for name, body, kind in (("s3-face.png", png(), "image/png"), ("s3-page.html", b"<h1>", "text/html"),
                                 ("s3-fake.png", b"\x89PNG\r\n\x1a\n" + b"junk" * 100, "application/octet-stream")):
            assert client.post(f"/object/open/{name}", content=body, headers={"Content-Type": kind}).status_code == 200
        await db.admin.execute("UPDATE storage.objects SET metadata = metadata || '{\"mimetype\": \"image/png\"}' "
                               "WHERE bucket_id = 'open' AND name = 's3-fake.png'")
        assert transfer(client, "copy", "s3-face.png", "avatars", "s3-face.png").status_code == 200
        assert client.get("/object/avatars/s3-face.png").content == png()
        refused(transfer(client, "copy", "s3-page.html", "avatars", "s3-page.png"), "415", "InvalidMimeType")
        refused(transfer(client, "move", "s3-fake.png", "avatars", "s3-fake.png"), "415", "InvalidMimeType")
    keys = {item["Key"] for item in s3.client.list_objects_v2(Bucket=s3.name).get("Contents", [])}
    rows = {r["key"] for r in await db.admin.fetch(
        "SELECT bucket_id || '/' || version AS key FROM storage.objects WHERE name LIKE 's3-%'")}
    assert keys == rows, f"bytes without a row: {keys - rows}"
    assert not list((remote.data_dir.resolve() / "storage" / ".spool").glob("*")), "downloads left behind"
