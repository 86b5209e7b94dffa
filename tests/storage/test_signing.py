"""Signed download URLs: a bounded lifetime, and bound to the version of the object they were made for."""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Callable, Iterator

import httpx
import orjson
import pytest
from PIL import Image

from gatehouse.core.keys import KeySet
from tests.support import RunningServer, png

WEEK = 7 * 86400



@pytest.fixture(scope="module")
def server(server_factory: Callable[..., RunningServer]) -> RunningServer:
    return server_factory(env={"GATEHOUSE_RATE_LIMITS_ENABLED": "false"})


@pytest.fixture(scope="module")
def service(server: RunningServer) -> Iterator[httpx.Client]:
    client = httpx.Client(base_url=f"{server.url}/storage/v1", headers={"apikey": server.keys.secret_key}, timeout=15)
    client.post("/bucket", json={"id": "files", "public": False})
    yield client
    client.close()


def put(client: httpx.Client, name: str, content: bytes, content_type: str = "text/plain") -> None:
    answer = client.put(f"/object/files/{name}", content=content, headers={"Content-Type": content_type})
    assert answer.status_code == 200, answer.text


def sign(client: httpx.Client, name: str, expires_in: object = 60) -> str:
    answer = client.post(f"/object/sign/files/{name}", json={"expiresIn": expires_in})
    assert answer.status_code == 200, answer.text
    return str(answer.json()["signedURL"])


def fetch(server: RunningServer, signed: str) -> httpx.Response:
    return httpx.get(f"{server.url}/storage/v1{signed}")


def invalid_signature(answer: httpx.Response) -> None:
    assert answer.status_code == 400, answer.text
    assert answer.json()["statusCode"] == "400" and answer.json()["code"] == "InvalidSignature", answer.text


@pytest.mark.parametrize("expires_in", [WEEK + 1, str(WEEK + 1), 10 * 365 * 86400, 0, -5, "soon", None])
def test_expires_in_beyond_the_cap_or_nonsense_is_refused(service: httpx.Client, expires_in: object) -> None:
    put(service, "capped.txt", b"capped")
    for path, body in (("/object/sign/files/capped.txt", {"expiresIn": expires_in}),
                       ("/object/sign/files", {"expiresIn": expires_in, "paths": ["capped.txt"]})):
        answer = service.post(path, json=body)
        assert answer.status_code == 400, answer.text
        assert answer.json()["statusCode"] == "400" and answer.json()["code"] == "InvalidRequest"
        assert "expiresIn" in answer.json()["message"]


def test_expires_in_at_the_cap_is_accepted(service: httpx.Client, server: RunningServer) -> None:
    put(service, "week.txt", b"a week")
    signed = sign(service, "week.txt", WEEK)
    assert fetch(server, signed).content == b"a week"
    token = signed.split("token=", 1)[1]
    claims = orjson.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    assert claims["exp"] - claims["iat"] == WEEK
    many = service.post("/object/sign/files", json={"expiresIn": str(WEEK), "paths": ["week.txt"]})
    assert many.status_code == 200 and fetch(server, many.json()[0]["signedURL"]).content == b"a week"


def test_a_replaced_object_needs_a_new_url(service: httpx.Client, server: RunningServer) -> None:
    put(service, "report.txt", b"first draft")
    first = sign(service, "report.txt")
    batch = service.post("/object/sign/files", json={"expiresIn": 60, "paths": ["report.txt"]}).json()[0]["signedURL"]
    assert fetch(server, first).content == b"first draft" and fetch(server, batch).content == b"first draft"

    put(service, "report.txt", b"final, with secrets")  # upsert
    invalid_signature(fetch(server, first))
    invalid_signature(fetch(server, batch))
    second = sign(service, "report.txt")
    assert fetch(server, second).content == b"final, with secrets"

    assert service.delete("/object/files/report.txt").status_code == 200  # delete, then upload again
    assert fetch(server, second).json()["statusCode"] == "404"
    put(service, "report.txt", b"someone else's")
    invalid_signature(fetch(server, second))
    third = sign(service, "report.txt")
    assert fetch(server, third).content == b"someone else's"

    service.delete("/object/files/report.txt")  # a move onto the name
    put(service, "other.txt", b"moved here")
    moved = service.post("/object/move", json={"bucketId": "files", "sourceKey": "other.txt",
                                               "destinationKey": "report.txt"})
    assert moved.status_code == 200, moved.text
    for old in (first, second, third):
        invalid_signature(fetch(server, old))
    assert fetch(server, sign(service, "report.txt")).content == b"moved here"


def test_tampered_and_borrowed_tokens_are_refused(service: httpx.Client, server: RunningServer, keys: KeySet) -> None:
    put(service, "mine.txt", b"mine")
    put(service, "theirs.txt", b"theirs")
    signed = sign(service, "mine.txt")
    token = signed.split("token=", 1)[1]
    header, payload, signature = token.split(".")
    claims = orjson.loads(base64.urlsafe_b64decode(payload + "=="))

    def forge(**changes: object) -> str:
        body = base64.urlsafe_b64encode(orjson.dumps(claims | changes)).rstrip(b"=").decode()
        return f"{header}.{body}.{signature}"

    theirs_version = service.get("/object/info/files/theirs.txt").json()["version"]
    for bad in (forge(url="files/theirs.txt"), forge(v=theirs_version), forge(exp=claims["exp"] + 10**8),
                token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB"), "", "not.a.token"):
        for name in ("mine.txt", "theirs.txt"):
            answer = httpx.get(f"{server.url}/storage/v1/object/sign/files/{name}", params={"token": bad})
            assert answer.status_code == 400 and answer.json()["code"] in ("InvalidSignature", "InvalidJWT"), answer.text
    borrowed = httpx.get(f"{server.url}/storage/v1/object/sign/files/theirs.txt", params={"token": token})
    invalid_signature(borrowed)  # a good token for another object
    now = int(time.time())
    legacy = keys.sign({"aud": "storage", "purpose": "storage.download", "url": "files/mine.txt", "iat": now,
                        "exp": now + 60})  # made before tokens named a version
    invalid_signature(httpx.get(f"{server.url}/storage/v1/object/sign/files/mine.txt", params={"token": legacy}))
    assert fetch(server, signed).content == b"mine"


def test_signed_image_renders_follow_the_same_rule(service: httpx.Client, server: RunningServer) -> None:
    put(service, "photo.png", png(color="red"), "image/png")
    token = sign(service, "photo.png").split("token=", 1)[1]
    render = f"{server.url}/storage/v1/render/image/sign/files/photo.png"
    first = httpx.get(render, params={"token": token, "width": "10", "format": "png"})
    assert first.status_code == 200 and Image.open(io.BytesIO(first.content)).size == (10, 10)
    put(service, "photo.png", png(color="blue"), "image/png")
    invalid_signature(httpx.get(render, params={"token": token, "width": "10", "format": "png"}))
    invalid_signature(httpx.get(render, params={"token": token, "width": "12", "format": "png"}))
    fresh = sign(service, "photo.png").split("token=", 1)[1]
    assert httpx.get(render, params={"token": fresh, "width": "10", "format": "png"}).status_code == 200


def test_a_signed_transformation_is_fixed(service: httpx.Client, server: RunningServer) -> None:
    """``transform`` in the request (supabase-js and supabase-py send it) gives a render URL, as on
    Supabase; the token fixes the size, so its holder cannot ask for other renders."""
    put(service, "poster.png", png(64, color="green"), "image/png")
    answer = service.post("/object/sign/files/poster.png", json={"expiresIn": 60, "transform": {"width": 16, "height": 8}})
    assert answer.status_code == 200, answer.text
    signed = answer.json()["signedURL"]
    assert signed.startswith("/render/image/sign/files/poster.png?token=")
    for extra in ("", "&width=40&height=40", "&format=webp"):
        rendered = fetch(server, signed + extra)
        assert rendered.status_code == 200 and Image.open(io.BytesIO(rendered.content)).size == (16, 8)
    for bad in ({"width": -1}, {"resize": "explode"}, {"quality": 5}, {"width": True}, "big", {"width": [1]}):
        refused = service.post("/object/sign/files/poster.png", json={"expiresIn": 60, "transform": bad})
        assert refused.status_code == 400 and refused.json()["code"] == "InvalidRequest", refused.text
    put(service, "poster.png", png(64, color="blue"), "image/png")
    invalid_signature(fetch(server, signed))
