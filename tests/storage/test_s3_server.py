"""A live Gatehouse storing object bytes in S3 (SeaweedFS's S3 gateway)."""

from __future__ import annotations

import io
from collections.abc import Callable

import httpx
import pytest
from PIL import Image

from tests.storage.conftest import S3Bucket
from tests.support import ConfirmedSession, RunningServer


@pytest.fixture(scope="module")
def server(server_factory: Callable[..., RunningServer], s3: S3Bucket) -> RunningServer:
    return server_factory(env=s3.env)


def s3_keys(s3: S3Bucket) -> list[str]:
    listing = s3.client.list_objects_v2(Bucket=s3.name)
    return [item["Key"] for item in listing.get("Contents", [])]


def test_upload_download_range_delete(
    server: RunningServer, s3: S3Bucket, confirmed_session: ConfirmedSession
) -> None:
    _, session = confirmed_session(server)
    uid = session["user"]["id"]
    headers = {"Authorization": f"Bearer {session['access_token']}"}
    out = io.BytesIO()
    Image.new("RGB", (300, 300), "purple").save(out, format="PNG")
    image = out.getvalue()
    base = f"{server.url}/storage/v1/object"
    uploaded = httpx.post(f"{base}/avatars/{uid}-s3.png", content=image, headers=headers | {"Content-Type": "image/png"})
    assert uploaded.status_code == 200, uploaded.text
    (key,) = s3_keys(s3)
    assert key.startswith("avatars/")
    assert s3.client.get_object(Bucket=s3.name, Key=key)["Body"].read() == image

    assert httpx.get(f"{base}/public/avatars/{uid}-s3.png").content == image
    ranged = httpx.get(f"{base}/public/avatars/{uid}-s3.png", headers={"Range": "bytes=10-19"})
    assert ranged.status_code == 206 and ranged.content == image[10:20]
    assert ranged.headers["content-range"] == f"bytes 10-19/{len(image)}"
    tail = httpx.get(f"{base}/public/avatars/{uid}-s3.png", headers={"Range": "bytes=-5"})
    assert tail.content == image[-5:]
    bad = httpx.get(f"{base}/public/avatars/{uid}-s3.png", headers={"Range": f"bytes={len(image) + 10}-"})
    assert bad.json()["statusCode"] == "416"
    thumb = httpx.get(f"{server.url}/storage/v1/render/image/public/avatars/{uid}-s3.png", params={"width": "30"})
    assert Image.open(io.BytesIO(thumb.content)).size == (30, 30)

    assert httpx.delete(f"{base}/avatars/{uid}-s3.png", headers=headers).status_code == 200
    assert httpx.get(f"{base}/public/avatars/{uid}-s3.png").json()["statusCode"] == "404"
    import time

    deadline = time.monotonic() + 15
    while s3_keys(s3):  # the janitor deletes the bytes
        assert time.monotonic() < deadline
        time.sleep(0.1)
