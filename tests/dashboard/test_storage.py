"""The dashboard's Storage section over HTTP: buckets made, edited, emptied and deleted; uploads
held to their bucket's rules; folders, paging, moves, deletes, downloads, thumbnails and an
object's metadata; each change audited with the administrator and the names, never content."""

from __future__ import annotations

import base64
import io
import json
import uuid
from urllib.parse import parse_qs, urlsplit

import pytest
from PIL import Image

from tests.dashboard.helpers import Visitor
from tests.dashboard.storage_helpers import (
    audited,
    bucket_row,
    create_bucket,
    names_in,
    new_bucket_id,
    object_row,
    shown,
    stored_files,
    upload,
)
from tests.support import RunningServer, png, run_sql


@pytest.fixture
def bucket(visitor: Visitor) -> str:
    name = new_bucket_id()
    create_bucket(visitor, name)
    return name


def test_bucket_create_edit_empty_delete(visitor: Visitor, database_url: str, admin_email: str) -> None:
    name = new_bucket_id("made")
    page = create_bucket(visitor, name, public="yes", file_size_limit="1000", allowed_mime_types="image/png, text/*")
    assert shown(page, "notice") == f"Bucket {name} created."
    row = bucket_row(database_url, name)
    assert row is not None and row["public"] is True and row["file_size_limit"] == 1000
    assert row["allowed_mime_types"] == ["image/png", "text/*"]
    listed = visitor.get("/_/storage")
    assert f'href="/_/storage/buckets/{name}"' in listed.text and "image/png, text/*" in listed.text
    again = visitor.post("/_/storage/buckets", {"id": name})
    assert again.status_code == 409 and "already exists" in shown(again, "error")

    edited = visitor.post(f"/_/storage/buckets/{name}/settings", {"file_size_limit": "2MB", "allowed_mime_types": ""})
    assert edited.status_code == 200 and shown(edited, "notice") == "Bucket settings saved."
    row = bucket_row(database_url, name)
    assert row is not None and row["public"] is False and row["file_size_limit"] == 2_000_000
    assert row["allowed_mime_types"] is None
    bad = visitor.post(f"/_/storage/buckets/{name}/settings", {"file_size_limit": "lots", "public": "yes"})
    assert bad.status_code == 400 and "not a size" in shown(bad, "error")
    assert bucket_row(database_url, name)["public"] is False  # type: ignore[index]

    assert upload(visitor, name, "kept.txt", b"kept").status_code == 200
    row_html = visitor.get("/_/storage").text.split(f'href="/_/storage/buckets/{name}"')[1].split("</tr>")[0]
    assert '<td data-label="Objects">1</td>' in row_html and '<td data-label="Stored">4 Bytes</td>' in row_html
    refused = visitor.post(f"/_/storage/buckets/{name}/delete", {"confirmed": "yes"})
    assert refused.status_code == 409 and "not empty" in shown(refused, "error")
    asked = visitor.post(f"/_/storage/buckets/{name}/empty", {})
    assert shown(asked, "question") == f"Empty bucket {name}? 1 object will be deleted for good."
    assert names_in(database_url, name) == ["kept.txt"]
    emptied = visitor.post(f"/_/storage/buckets/{name}/empty", {"confirmed": "yes"})
    assert emptied.status_code == 200 and names_in(database_url, name) == []

    asked = visitor.post(f"/_/storage/buckets/{name}/delete", {})
    assert shown(asked, "question").startswith(f"Delete bucket {name}?") and bucket_row(database_url, name)
    gone = visitor.post(f"/_/storage/buckets/{name}/delete", {"confirmed": "yes"})
    assert gone.status_code == 200 and shown(gone, "notice") == f"Bucket {name} deleted."
    assert bucket_row(database_url, name) is None
    actions = [entry["action"] for entry in audited(database_url, name)]
    assert actions == ["storage_bucket_create", "storage_bucket_update", "storage_bucket_empty",
                       "storage_bucket_delete"]
    assert {entry["email"] for entry in audited(database_url, name)} == {admin_email}


def test_upload_within_and_over_the_size_limit(visitor: Visitor, server: RunningServer, database_url: str) -> None:
    name = new_bucket_id("limit")
    create_bucket(visitor, name, file_size_limit="1000")
    page = upload(visitor, name, "small.txt", b"x" * 1000, metadata='{"team": "blue"}')
    assert page.status_code == 200 and shown(page, "notice") == "Uploaded small.txt."
    row = object_row(database_url, name, "small.txt")
    assert row is not None and row["metadata"]["size"] == 1000 and row["user_metadata"] == {"team": "blue"}
    (entry,) = audited(database_url, f"{name}/small.txt")
    assert entry["action"] == "storage_object_upload"
    assert entry["detail"] == {"bucket": name, "name": "small.txt", "size": 1000, "upsert": False}

    before = stored_files(server)
    over = upload(visitor, name, "big.txt", b"x" * 5000)
    assert over.status_code == 413 and "1000 bytes" in shown(over, "error")
    assert object_row(database_url, name, "big.txt") is None and stored_files(server) == before
    assert audited(database_url, f"{name}/big.txt") == []


def test_disallowed_type_and_upsert(visitor: Visitor, server: RunningServer, database_url: str) -> None:
    name = new_bucket_id("types")
    create_bucket(visitor, name, allowed_mime_types="image/png")
    before = stored_files(server)
    refused = upload(visitor, name, "notes.txt", b"hello", "text/plain")
    assert refused.status_code == 415 and "not supported" in shown(refused, "error")
    faked = upload(visitor, name, "fake.png", b"not a png at all", "image/png")
    assert faked.status_code == 415
    assert names_in(database_url, name) == [] and stored_files(server) == before

    assert upload(visitor, name, "a.png", png(8, "red"), "image/png").status_code == 200
    again = upload(visitor, name, "a.png", png(8, "blue"), "image/png")
    assert again.status_code == 409 and "already exists" in shown(again, "error")
    replaced = upload(visitor, name, "a.png", png(8, "blue"), "image/png", upsert="yes")
    assert replaced.status_code == 200
    assert object_row(database_url, name, "a.png")["metadata"]["size"] == len(png(8, "blue"))  # type: ignore[index]


def test_folders_breadcrumbs_and_paging(visitor: Visitor, bucket: str, database_url: str) -> None:
    for target in ("top.txt", "docs/readme.txt", "docs/deep/inner.txt"):
        assert upload(visitor, bucket, "file.txt", b"x", name=target).status_code == 200
    named = upload(visitor, bucket, "given.txt", b"y", folder="docs/")
    assert named.status_code == 200 and "docs/given.txt" in names_in(database_url, bucket)
    top = visitor.get(f"/_/storage/buckets/{bucket}")
    assert ">docs/</a>" in top.text and ">top.txt</a>" in top.text and "readme" not in top.text
    docs = visitor.get(f"/_/storage/buckets/{bucket}", params={"prefix": "docs/"})
    assert ">deep/</a>" in docs.text and ">readme.txt</a>" in docs.text and ">given.txt</a>" in docs.text
    assert "top.txt" not in docs.text
    assert f'href="/_/storage/buckets/{bucket}?prefix=docs%2F" aria-current="page">docs</a>' in docs.text
    deep = visitor.get(f"/_/storage/buckets/{bucket}", params={"prefix": "docs/deep"})  # the slash is optional
    assert ">inner.txt</a>" in deep.text

    for number in range(55):
        assert upload(visitor, bucket, "f.txt", b"p", name=f"many/{number:03}.txt").status_code == 200
    first = visitor.get(f"/_/storage/buckets/{bucket}", params={"prefix": "many/"})
    assert first.text.count('class="object"') == 50 and ">000.txt</a>" in first.text and "054.txt" not in first.text
    next_link = first.text.split('id="next" rel="next" href="')[1].split('"')[0].replace("&amp;", "&")
    second = visitor.get(next_link)
    assert second.text.count('class="object"') == 5 and ">054.txt</a>" in second.text and 'id="first"' in second.text
    assert 'id="next"' not in second.text
    assert visitor.get(f"/_/storage/buckets/{bucket}", params={"cursor": "garbage"}).status_code == 400


def test_move_and_delete_with_confirmation(visitor: Visitor, bucket: str, database_url: str) -> None:
    upload(visitor, bucket, "old.txt", b"moving", name="old.txt")
    other = new_bucket_id("other")
    create_bucket(visitor, other)
    moved = visitor.post(f"/_/storage/buckets/{bucket}/move", {"name": "old.txt", "target": "new/place.txt"})
    assert moved.status_code == 200 and shown(moved, "notice") == f"Moved to {bucket}/new/place.txt."
    assert names_in(database_url, bucket) == ["new/place.txt"]
    across = visitor.post(f"/_/storage/buckets/{bucket}/move",
                          {"name": "new/place.txt", "target": "there.txt", "target_bucket": other})
    assert across.status_code == 200 and names_in(database_url, other) == ["there.txt"]
    assert names_in(database_url, bucket) == []
    assert [e["action"] for e in audited(database_url, f"{bucket}/old.txt")] == [
        "storage_object_upload", "storage_object_move"]

    strict = new_bucket_id("strict")
    create_bucket(visitor, strict, allowed_mime_types="image/*")
    refused = visitor.post(f"/_/storage/buckets/{other}/move",
                           {"name": "there.txt", "target": "there.txt", "target_bucket": strict})
    assert refused.status_code == 415 and names_in(database_url, strict) == []  # the target bucket's rules hold
    upload(visitor, other, "x.txt", b"taken", name="taken.txt")
    clash = visitor.post(f"/_/storage/buckets/{other}/move", {"name": "there.txt", "target": "taken.txt"})
    assert clash.status_code == 409 and names_in(database_url, other) == ["taken.txt", "there.txt"]

    asked = visitor.post(f"/_/storage/buckets/{other}/remove", {"name": "there.txt"})
    assert asked.status_code == 200 and shown(asked, "question").startswith("Delete there.txt")
    assert "there.txt" in names_in(database_url, other)
    done = visitor.post(f"/_/storage/buckets/{other}/remove", {"name": "there.txt", "confirmed": "yes"})
    assert done.status_code == 200 and shown(done, "notice") == "Deleted there.txt."
    assert names_in(database_url, other) == ["taken.txt"]
    (entry,) = audited(database_url, f"{other}/there.txt")
    assert entry["action"] == "storage_object_delete" and entry["detail"]["name"] == "there.txt"
    again = visitor.post(f"/_/storage/buckets/{other}/remove", {"name": "there.txt", "confirmed": "yes"})
    assert again.status_code == 404


@pytest.mark.parametrize(("filename", "content_type", "content"), [
    ("page.html", "text/html", b"<html><script>alert(document.cookie)</script></html>"),
    ("logo.svg", "image/svg+xml", b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'),
])
def test_download_is_an_attachment_from_the_storage_api(visitor: Visitor, bucket: str, database_url: str,
                                                         filename: str, content_type: str, content: bytes) -> None:
    assert upload(visitor, bucket, filename, content, content_type).status_code == 200
    link = visitor.get(f"/_/storage/buckets/{bucket}/download", params={"name": filename})
    assert link.status_code == 303
    location = link.headers["location"]
    assert location.startswith(f"/storage/v1/object/sign/{bucket}/{filename}?token=") and "download=" in location
    token = parse_qs(urlsplit(location).query)["token"][0]
    claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    assert claims["aud"] == "storage" and claims["purpose"] == "storage.download" and "role" not in claims
    assert claims["exp"] - claims["iat"] == 60  # a capability for this one object, for a minute
    served = visitor.http.get(location)
    assert served.status_code == 200 and served.content == content
    assert served.headers["content-disposition"] == f"attachment; filename*=UTF-8''{filename}"
    assert served.headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in served.headers["content-security-policy"]
    assert [e["action"] for e in audited(database_url, f"{bucket}/{filename}")] == [
        "storage_object_upload", "storage_object_download"]


def test_thumbnail_and_metadata(visitor: Visitor, server: RunningServer, bucket: str, database_url: str) -> None:
    upload(visitor, bucket, "big.png", png(200, "green"), "image/png", name="pics/big.png",
           metadata='{"caption": "a green square", "n": 3}')
    folder = visitor.get(f"/_/storage/buckets/{bucket}", params={"prefix": "pics/"})
    assert f'src="/_/storage/buckets/{bucket}/thumbnail?name=pics/big.png"' in folder.text
    thumb = visitor.get(f"/_/storage/buckets/{bucket}/thumbnail", params={"name": "pics/big.png"})
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/png"
    assert thumb.headers["x-content-type-options"] == "nosniff" and "sandbox" in thumb.headers["content-security-policy"]
    assert Image.open(io.BytesIO(thumb.content)).size == (96, 96)
    larger = visitor.get(f"/_/storage/buckets/{bucket}/thumbnail", params={"name": "pics/big.png", "size": "m"})
    assert Image.open(io.BytesIO(larger.content)).size == (200, 200)  # never enlarged
    assert visitor.get(f"/_/storage/buckets/{bucket}/thumbnail",
                       params={"name": "pics/big.png", "size": "9999"}).status_code == 400
    upload(visitor, bucket, "t.txt", b"text", name="pics/t.txt")
    assert visitor.get(f"/_/storage/buckets/{bucket}/thumbnail", params={"name": "pics/t.txt"}).status_code == 404

    page = visitor.get(f"/_/storage/buckets/{bucket}/object", params={"name": "pics/big.png"})
    assert page.status_code == 200
    assert json.loads(shown(page, "user-metadata")) == {"caption": "a green square", "n": 3}
    assert "image/png" in page.text and f"<dd>{len(png(200, 'green'))} bytes" in page.text
    assert "none (not uploaded by a signed-in user)" in page.text
    for secret in (server.keys.secret_key, server.keys.service_role_key):  # no key ever reaches the browser
        assert secret not in page.text and secret not in folder.text
    owner = str(uuid.uuid4())
    run_sql(database_url, "UPDATE storage.objects SET owner_id = $3 WHERE bucket_id = $1 AND name = $2 RETURNING 1",
            bucket, "pics/big.png", owner)
    page = visitor.get(f"/_/storage/buckets/{bucket}/object", params={"name": "pics/big.png"})
    assert f'<a href="/_/users/{owner}">{owner}</a>' in page.text
    missing = visitor.get(f"/_/storage/buckets/{bucket}/object", params={"name": "pics/none.png"})
    assert missing.status_code == 404
