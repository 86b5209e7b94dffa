"""Bucket rules and signed URLs through the unmodified supabase-py storage client."""

from __future__ import annotations

import io
import uuid
from collections.abc import Callable

import httpx
import pytest
from PIL import Image
from storage3.exceptions import StorageApiError
from supabase import Client

from tests.support import RunningServer, png


def test_copy_and_move_follow_the_buckets_rules(live: RunningServer,
                                                clients: Callable[..., tuple[Client, str | None]]) -> None:
    """Rules tightened after the upload hold for copies and moves, which answer as an upload would."""
    service, _ = clients(signed_in=False, key=live.keys.secret_key)
    bucket_id = f"rules-{uuid.uuid4().hex[:6]}"
    service.storage.create_bucket(bucket_id, options={"public": True})
    files = service.storage.from_(bucket_id)
    files.upload("page.html", b"<script>alert(1)</script>", {"content-type": "text/html"})
    files.upload("big.txt", b"x" * 5000, {"content-type": "text/plain"})
    files.upload("face.png", png(), {"content-type": "image/png"})
    service.storage.update_bucket(bucket_id, {"public": True, "allowed_mime_types": ["image/*", "text/plain"],
                                              "file_size_limit": 1000})
    for operation in (files.copy, files.move):
        with pytest.raises(StorageApiError) as html:
            operation("page.html", "page.png")
        assert html.value.status == "415" and "text/html" in html.value.message
        with pytest.raises(StorageApiError) as big:
            operation("big.txt", "big-copy.txt")
        assert big.value.status == "413" and "1000 bytes" in big.value.message
    with pytest.raises(StorageApiError) as upload:
        files.upload("again.html", b"<p>", {"content-type": "text/html"})
    assert upload.value.status == "415"
    assert files.exists("page.png") is False and files.exists("big-copy.txt") is False
    assert files.download("page.html") == b"<script>alert(1)</script>" and files.download("big.txt") == b"x" * 5000
    files.copy("face.png", "face-copy.png")
    files.move("face.png", "face-moved.png")
    assert files.download("face-copy.png") == png() and files.download("face-moved.png") == png()


def test_signed_urls_are_capped_and_bound_to_the_version(clients: Callable[..., tuple[Client, str | None]]) -> None:
    supabase, uid = clients()
    avatars = supabase.storage.from_("avatars")
    path = f"{uid}-signed-{uuid.uuid4().hex[:6]}.png"
    avatars.upload(path, png(color="red"), {"content-type": "image/png"})
    week = 7 * 86400
    for ask in (lambda: avatars.create_signed_url(path, week + 1),
                lambda: avatars.create_signed_urls([path], week + 1),
                lambda: avatars.create_signed_url(path, 10 * 365 * 86400)):
        with pytest.raises(StorageApiError) as too_long:
            ask()
        assert too_long.value.status == "400" and "expiresIn" in too_long.value.message
    old = avatars.create_signed_url(path, week)["signedURL"]
    old_batch = avatars.create_signed_urls([path], week)[0]["signedURL"]
    assert "/object/sign/avatars/" in old and "?token=" in old
    assert httpx.get(old).content == png(color="red") and httpx.get(old_batch).content == png(color="red")

    avatars.update(path, png(color="blue"), {"content-type": "image/png"})  # the object is replaced
    for stale in (old, old_batch):
        answer = httpx.get(stale)
        assert answer.status_code == 400 and answer.json()["code"] == "InvalidSignature"
    fresh = avatars.create_signed_url(path, 60)["signedURL"]
    assert httpx.get(fresh).content == png(color="blue")
    tampered = fresh[:-3] + ("aaa" if not fresh.endswith("aaa") else "bbb")
    assert httpx.get(tampered).json()["code"] in ("InvalidSignature", "InvalidJWT")


def test_a_signed_url_with_a_transformation_renders_it(clients: Callable[..., tuple[Client, str | None]]) -> None:
    supabase, uid = clients()
    avatars = supabase.storage.from_("avatars")
    path = f"{uid}-poster-{uuid.uuid4().hex[:6]}.png"
    avatars.upload(path, png(64), {"content-type": "image/png"})
    signed = avatars.create_signed_url(path, 60, {"transform": {"width": 16, "height": 8}})["signedURL"]
    assert "/render/image/sign/avatars/" in signed
    rendered = httpx.get(signed)
    assert rendered.status_code == 200 and Image.open(io.BytesIO(rendered.content)).size == (16, 8)
    avatars.update(path, png(64, color="red"), {"content-type": "image/png"})
    assert httpx.get(signed).json()["code"] == "InvalidSignature"
