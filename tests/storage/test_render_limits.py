"""Image renders over the wire: a pixel limit on the sources anonymous callers may have decoded,
and a rate limit on new renders (cache misses) per client address."""

from __future__ import annotations

import io
from collections.abc import Callable

import httpx
import pytest
from PIL import Image

from gatehouse.core.db import Database
from gatehouse.core.ratelimit import key_digest
from tests.support import RunningServer

#: Every request of these tests comes from here, so they share one count.
ADDRESS_KEY = key_digest("render:ip:127.0.0.1")


def png(width: int, height: int, mode: str = "RGB") -> bytes:
    out = io.BytesIO()
    Image.new(mode, (width, height), "orange" if mode == "RGB" else 1).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def server(server_factory: Callable[..., RunningServer]) -> RunningServer:
    return server_factory(env={
        "GATEHOUSE_RATE_LIMIT_RENDER": "3/3600",
        "GATEHOUSE_STORAGE_RENDER_MAX_PIXELS_PUBLIC": "10000",  # 100 x 100
        "GATEHOUSE_STORAGE_RENDER_MAX_PIXELS": "40000",  # 200 x 200
    })


@pytest.fixture(autouse=True)
async def fresh_count(db: Database) -> None:
    await db.admin.execute("DELETE FROM auth.rate_limits WHERE key = $1", ADDRESS_KEY)


def refused(response: httpx.Response, status: str, code: str) -> None:
    assert response.status_code == (429 if status == "429" else 400), response.text
    assert response.json()["statusCode"] == status and response.json()["code"] == code, response.text


async def test_big_sources_are_refused_for_anonymous_renders(user: tuple[httpx.Client, str], server: RunningServer,
                                                             db: Database) -> None:
    client, uid = user
    name = f"{uid}-big.png"
    assert client.post(f"/object/avatars/{name}", content=png(150, 150), headers={"Content-Type": "image/png"}).status_code == 200
    base = f"{server.url}/storage/v1/render/image"
    params = {"width": "20", "format": "png"}
    public = httpx.get(f"{base}/public/avatars/{name}", params=params)
    refused(public, "413", "EntityTooLarge")
    assert "22500 pixels" in public.json()["message"] and "10000" in public.json()["message"]
    anon_key = httpx.get(f"{base}/authenticated/avatars/{name}", params=params,
                         headers={"apikey": server.keys.publishable_key})
    refused(anon_key, "413", "EntityTooLarge")
    token = client.post(f"/object/sign/avatars/{name}", json={"expiresIn": 60}).json()["signedURL"].split("token=")[1]
    refused(httpx.get(f"{base}/sign/avatars/{name}", params=params | {"token": token}), "413", "EntityTooLarge")
    # refusals were new renders too: they count (3/3600 here), so hammering a big source is limited
    refused(client.get(f"/render/image/authenticated/avatars/{name}", params=params), "429", "SlowDown")
    await db.admin.execute("DELETE FROM auth.rate_limits WHERE key = $1", ADDRESS_KEY)
    # signed-in callers have the higher limit
    mine = client.get(f"/render/image/authenticated/avatars/{name}", params=params)
    assert mine.status_code == 200 and Image.open(io.BytesIO(mine.content)).size == (20, 20)
    # a 1-bit PNG of 50 MP is a few kilobytes; it is refused from its header, for everyone
    huge = f"{uid}-huge.png"
    assert client.post(f"/object/avatars/{huge}", content=png(10_000, 5_000, "1"),
                       headers={"Content-Type": "image/png"}).status_code == 200
    for url, headers in ((f"{base}/public/avatars/{huge}", {}),
                         (f"{server.url}/storage/v1/render/image/authenticated/avatars/{huge}",
                          dict(client.headers))):
        answer = httpx.get(url, params={"width": "10"}, headers=headers)
        refused(answer, "413", "EntityTooLarge")
        assert "50000000 pixels" in answer.json()["message"]


def test_new_renders_are_rate_limited_per_address(user: tuple[httpx.Client, str], server: RunningServer) -> None:
    client, uid = user
    name = f"{uid}-small.png"
    assert client.post(f"/object/avatars/{name}", content=png(60, 60), headers={"Content-Type": "image/png"}).status_code == 200
    url = f"{server.url}/storage/v1/render/image/public/avatars/{name}"
    for width in (10, 11, 12):  # three new sizes: the limit
        assert httpx.get(url, params={"width": str(width)}).status_code == 200
    for _ in range(5):  # cached: not counted
        assert httpx.get(url, params={"width": "10"}).status_code == 200
    over = httpx.get(url, params={"width": "13"})
    refused(over, "429", "SlowDown")
    assert int(over.headers["retry-after"]) >= 1
    # signed-in callers from the same address share its count; cached variants are still served
    refused(client.get(f"/render/image/authenticated/avatars/{name}", params={"width": "14"}), "429", "SlowDown")
    assert client.get(f"/render/image/authenticated/avatars/{name}", params={"width": "11"}).status_code == 200
    # the service role (server code rendering for many users) is not counted
    service = httpx.get(f"{server.url}/storage/v1/render/image/authenticated/avatars/{name}", params={"width": "15"},
                        headers={"apikey": server.keys.secret_key})
    assert service.status_code == 200


def test_the_defaults_refuse_a_20_megapixel_source_to_anonymous_callers(
    server_factory: Callable[..., RunningServer]
) -> None:
    defaults = server_factory()  # a folder of its own: the image is uploaded through it
    key = {"apikey": defaults.keys.secret_key, "Content-Type": "image/png"}
    uploaded = httpx.post(f"{defaults.url}/storage/v1/object/avatars/20mp.png", content=png(5_000, 4_000, "1"),
                          headers=key)
    assert uploaded.status_code == 200, uploaded.text
    answer = httpx.get(f"{defaults.url}/storage/v1/render/image/public/avatars/20mp.png", params={"width": "10"})
    refused(answer, "413", "EntityTooLarge")
    assert "16000000" in answer.json()["message"]
    signed_in = httpx.get(f"{defaults.url}/storage/v1/render/image/authenticated/avatars/20mp.png",
                          params={"width": "10"}, headers={"apikey": defaults.keys.secret_key})
    assert signed_in.status_code == 200  # under the 40 MP limit of signed-in callers and the service role
