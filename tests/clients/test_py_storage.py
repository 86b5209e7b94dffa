"""The tutorial's avatar flow through the unmodified supabase-py storage client, against a live server."""

from __future__ import annotations

import io
import time
import uuid
from collections.abc import Callable

import httpx
import pytest
from PIL import Image
from storage3.exceptions import StorageApiError
from supabase import Client

from tests.support import RunningServer


def png(size: int = 32, color: str = "teal") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (size, size), color).save(out, format="PNG")
    return out.getvalue()


def test_avatar_flow(live: RunningServer, clients: Callable[..., tuple[Client, str | None]]) -> None:
    supabase, uid = clients()
    image = png()
    path = f"{uid}-{uuid.uuid4().hex[:8]}.png"
    uploaded = supabase.storage.from_("avatars").upload(path, image, {"content-type": "image/png"})
    assert uploaded.path == path
    supabase.from_("profiles").upsert({"id": uid, "avatar_url": path}).execute()
    assert supabase.from_("profiles").select("avatar_url").eq("id", uid).single().execute().data["avatar_url"] == path

    assert supabase.storage.from_("avatars").download(path) == image
    public_url = supabase.storage.from_("avatars").get_public_url(path)
    served = httpx.get(public_url)
    assert served.status_code == 200 and served.content == image
    assert served.headers["content-type"] == "image/png" and served.headers["etag"]
    assert httpx.get(public_url, headers={"If-None-Match": served.headers["etag"]}).status_code == 304
    partial = httpx.get(public_url, headers={"Range": "bytes=0-9"})
    assert partial.status_code == 206 and partial.content == image[:10]

    anon, _ = clients(signed_in=False)
    assert anon.storage.from_("avatars").download(path) == image
    with pytest.raises(StorageApiError) as refused:
        anon.storage.from_("avatars").upload(f"{uid}-anon.png", png(color="red"), {"content-type": "image/png"})
    assert refused.value.status == "403"

    signed = supabase.storage.from_("avatars").create_signed_url(path, 2)
    assert httpx.get(signed["signedURL"]).content == image
    time.sleep(2.2)
    expired = httpx.get(signed["signedURL"])
    assert expired.status_code == 400 and expired.json()["statusCode"] == "400"
    assert expired.json()["code"] == "ExpiredToken"


def test_users_cannot_touch_each_others_avatars(clients: Callable[..., tuple[Client, str | None]]) -> None:
    alice, alice_id = clients()
    bob, _ = clients()
    path = f"{alice_id}-mine.png"
    alice.storage.from_("avatars").upload(path, png(), {"content-type": "image/png"})
    with pytest.raises(StorageApiError) as overwrite:
        bob.storage.from_("avatars").update(path, png(color="red"), {"content-type": "image/png"})
    assert overwrite.value.status == "403"
    with pytest.raises(StorageApiError):
        bob.storage.from_("avatars").upload(f"{alice_id}-fake.png", png(), {"content-type": "image/png"})
    assert bob.storage.from_("avatars").remove([path]) == []  # nothing deleted: RLS hid it
    assert alice.storage.from_("avatars").download(path) == png()


def test_upload_rules(clients: Callable[..., tuple[Client, str | None]]) -> None:
    supabase, uid = clients()
    bucket = supabase.storage.from_("avatars")
    with pytest.raises(StorageApiError) as duplicate:
        bucket.upload(f"{uid}-dup.png", png(), {"content-type": "image/png"})
        bucket.upload(f"{uid}-dup.png", png(), {"content-type": "image/png"})
    assert duplicate.value.status == "409"
    bucket.upload(f"{uid}-dup.png", png(color="blue"), {"content-type": "image/png", "upsert": "true"})
    assert bucket.download(f"{uid}-dup.png") == png(color="blue")
    with pytest.raises(StorageApiError) as big:
        bucket.upload(f"{uid}-big.png", b"\x89PNG\r\n\x1a\n" + b"0" * (2 * 1024 * 1024), {"content-type": "image/png"})
    assert big.value.status == "413"
    with pytest.raises(StorageApiError) as wrong_type:
        bucket.upload(f"{uid}-doc.pdf", b"%PDF-1.4 hello", {"content-type": "application/pdf"})
    assert wrong_type.value.status == "415"
    with pytest.raises(StorageApiError) as lying:
        bucket.upload(f"{uid}-fake.png", b"GIF89a not a png at all", {"content-type": "image/png"})
    assert lying.value.status == "415"


def test_list_move_copy_info_remove(clients: Callable[..., tuple[Client, str | None]], live: RunningServer) -> None:
    service, _ = clients(signed_in=False, key=live.keys.secret_key)
    bucket_id = f"files-{uuid.uuid4().hex[:6]}"
    service.storage.create_bucket(bucket_id, options={"public": False})
    files = service.storage.from_(bucket_id)
    files.upload("docs/a.txt", b"alpha", {"content-type": "text/plain"})
    files.upload("docs/b.txt", b"beta", {"content-type": "text/plain"})
    files.upload("docs/deep/c.txt", b"gamma", {"content-type": "text/plain"})
    listed = files.list("docs")
    assert [item["name"] for item in listed] == ["deep", "a.txt", "b.txt"]
    assert listed[0]["id"] is None and listed[1]["metadata"]["size"] == 5
    assert [i["name"] for i in files.list("docs", {"search": "b"})] == ["b.txt"]
    files.move("docs/a.txt", "archive/a.txt")
    files.copy("docs/b.txt", "archive/b-copy.txt")
    assert files.download("archive/a.txt") == b"alpha" and files.download("archive/b-copy.txt") == b"beta"
    assert files.exists("docs/a.txt") is False and files.exists("archive/a.txt") is True
    assert files.info("archive/b-copy.txt")["size"] == 4
    removed = files.remove(["archive/a.txt", "archive/b-copy.txt", "not/there.txt"])
    assert sorted(r["name"] for r in removed) == ["archive/a.txt", "archive/b-copy.txt"]
    bucket = service.storage.get_bucket(bucket_id)
    assert bucket.public is False
    service.storage.update_bucket(bucket_id, {"public": True, "allowed_mime_types": ["text/*"]})
    assert service.storage.get_bucket(bucket_id).public is True
    with pytest.raises(StorageApiError):
        service.storage.delete_bucket(bucket_id)  # not empty
    service.storage.empty_bucket(bucket_id)
    service.storage.delete_bucket(bucket_id)


def test_signed_upload_url(clients: Callable[..., tuple[Client, str | None]]) -> None:
    supabase, uid = clients()
    path = f"{uid}-signed.png"
    signed = supabase.storage.from_("avatars").create_signed_upload_url(path)
    anon, _ = clients(signed_in=False)
    anon.storage.from_("avatars").upload_to_signed_url(path, signed["token"], png(), {"content-type": "image/png"})
    assert supabase.storage.from_("avatars").download(path) == png()


def test_user_metadata_on_upload_comes_back_from_info(clients: Callable[..., tuple[Client, str | None]]) -> None:
    """storage3's ``metadata`` file option (a form field): kept with the object, answered by
    ``info``; not a JSON object, or over 8 KB, refused."""
    supabase, uid = clients()
    bucket = supabase.storage.from_("avatars")
    path = f"{uid}-meta-{uuid.uuid4().hex[:6]}.png"
    bucket.upload(path, png(), {"content-type": "image/png", "metadata": {"alt": "a teal square", "n": 1}})
    assert bucket.info(path)["metadata"] == {"alt": "a teal square", "n": 1}
    with pytest.raises(StorageApiError) as oversized:
        bucket.upload(f"{uid}-big.png", png(), {"content-type": "image/png", "metadata": {"x": "y" * 9000}})
    assert oversized.value.status in (400, "400")
