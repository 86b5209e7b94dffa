"""The storage origin (GATEHOUSE_STORAGE_PUBLIC_URL) over the wire: browsers are sent there for
object content, API clients are served where they ask, and that origin serves storage only."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import httpx
import pytest

from gatehouse.core.embedded import free_port
from tests.support import RunningServer, png

CSP = "default-src 'none'; sandbox"
NAVIGATE = {"Sec-Fetch-Dest": "document", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Site": "cross-site"}



@pytest.fixture(scope="module")
def split_server(server_factory: Callable[..., RunningServer]) -> RunningServer:
    port = free_port()
    return server_factory(port=port, env={"GATEHOUSE_STORAGE_PUBLIC_URL": f"http://files.gatehouse.test:{port}"})


@pytest.fixture(scope="module")
def storage_host(split_server: RunningServer) -> str:
    return "files.gatehouse.test:" + split_server.url.rsplit(":", 1)[1]


@pytest.fixture(scope="module")
def stored(split_server: RunningServer) -> Iterator[dict[str, str]]:
    """A public bucket with a page and an image, and a signed URL for the page."""
    admin = httpx.Client(base_url=f"{split_server.url}/storage/v1", headers={"apikey": split_server.keys.secret_key})
    assert admin.post("/bucket", json={"id": "site", "public": True}).status_code == 200
    page, image = f"{uuid.uuid4().hex}.html", f"{uuid.uuid4().hex}.png"
    assert admin.post(f"/object/site/{page}", content=b"<script>alert(1)</script>",
                      headers={"Content-Type": "text/html"}).status_code == 200
    assert admin.post(f"/object/site/{image}", content=png(), headers={"Content-Type": "image/png"}).status_code == 200
    signed = admin.post(f"/object/sign/site/{page}", json={"expiresIn": 60}).json()["signedURL"]
    yield {"page": page, "image": image, "signed": signed}
    admin.close()


def test_browsers_opening_object_content_on_the_app_origin_go_to_the_storage_origin(
    split_server: RunningServer, storage_host: str, stored: dict[str, str]
) -> None:
    page, image = stored["page"], stored["image"]
    paths = [
        f"/storage/v1/object/public/site/{page}",
        f"/storage/v1/object/site/{page}",
        f"/storage/v1/object/authenticated/site/{page}",
        f"/storage/v1{stored['signed']}",
        f"/storage/v1/render/image/public/site/{image}?width=10",
    ]
    for path in paths:
        for browser in (NAVIGATE, {"Sec-Fetch-Dest": "iframe"}, {"Sec-Fetch-Dest": "image"},
                        {"Accept": "text/html,application/xhtml+xml"}):  # the last: a browser without fetch metadata
            for method in ("GET", "HEAD"):
                moved = httpx.request(method, f"{split_server.url}{path}", headers=browser)
                assert moved.status_code == 307, (path, browser, moved.text)
                assert moved.headers["location"] == f"http://{storage_host}{path}"
                assert moved.headers["content-security-policy"] == CSP


def test_api_clients_are_served_on_the_app_origin(split_server: RunningServer, stored: dict[str, str]) -> None:
    url = f"{split_server.url}/storage/v1/object/public/site/{stored['image']}"
    for client in ({}, {"Sec-Fetch-Dest": "empty", "Sec-Fetch-Mode": "cors"}, {"Accept": "*/*"}):
        served = httpx.get(url, headers=client)
        assert served.status_code == 200 and served.content == png(), client
        assert served.headers["content-security-policy"] == CSP
        assert {"Sec-Fetch-Dest", "Accept"} <= {v.strip() for v in served.headers["vary"].split(",")}  # not cached for browsers
    info = httpx.get(f"{split_server.url}/storage/v1/object/info/public/site/{stored['image']}", headers=NAVIGATE)
    assert info.status_code == 200 and info.json()["name"] == stored["image"]  # not content: not moved


def test_the_storage_origin_serves_objects(split_server: RunningServer, storage_host: str, stored: dict[str, str]) -> None:
    host = {"Host": storage_host}
    page = httpx.get(f"{split_server.url}/storage/v1/object/public/site/{stored['page']}", headers=host | NAVIGATE)
    assert page.status_code == 200 and page.headers["content-security-policy"] == CSP
    assert page.headers["content-disposition"].startswith("attachment")
    signed = httpx.get(f"{split_server.url}/storage/v1{stored['signed']}", headers=host | NAVIGATE)
    assert signed.status_code == 200 and signed.content == b"<script>alert(1)</script>"
    render = httpx.get(f"{split_server.url}/storage/v1/render/image/public/site/{stored['image']}?width=8",
                       headers=host | {"Sec-Fetch-Dest": "image"})
    assert render.status_code == 200 and render.headers["content-security-policy"] == CSP
    api = httpx.get(f"{split_server.url}/storage/v1/bucket/site", headers=host | {"apikey": split_server.keys.secret_key})
    assert api.status_code == 200 and api.json()["id"] == "site"


@pytest.mark.parametrize(
    "path",
    ["/", "/login", "/account", "/account/password", "/auth/confirm", "/auth/v1/settings", "/auth/v1/health",
     "/rest/v1/", "/rest/v1/profiles", "/_inbox", "/_inbox/messages", "/health/live", "/static/avatar.js", "/metrics",
     "/storage", "/storagex/v1/bucket"],
)
def test_the_storage_origin_serves_nothing_else(split_server: RunningServer, storage_host: str, path: str) -> None:
    headers = {"Host": storage_host, "apikey": split_server.keys.publishable_key}
    for method in ("GET", "POST"):
        answer = httpx.request(method, f"{split_server.url}{path}", headers=headers)
        assert answer.status_code == 404, (path, answer.text)
        assert "stored files only" in answer.text and "set-cookie" not in answer.headers
        assert answer.headers["content-security-policy"] == CSP
    assert httpx.get(f"{split_server.url}{path}").status_code != 404 or path.startswith(("/storage", "/metrics"))


def test_the_pages_allow_images_from_the_storage_origin(split_server: RunningServer, storage_host: str) -> None:
    page = httpx.get(f"{split_server.url}/login")
    assert page.status_code == 200
    assert f"img-src 'self' http://{storage_host} blob: data:" in page.headers["content-security-policy"]


async def test_no_websocket_of_the_app_on_the_storage_origin() -> None:
    from gatehouse.storage.origin import StorageOriginMiddleware

    reached: list[str] = []

    async def app(scope: object, receive: object, send: object) -> None:
        reached.append("app")

    sent: list[dict[str, object]] = []

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    async def receive() -> dict[str, object]:
        return {"type": "websocket.connect"}

    middleware = StorageOriginMiddleware(app, storage_url="https://files.example-usercontent.com")
    scope = {"type": "websocket", "path": "/realtime/v1/websocket", "headers": [(b"host", b"files.example-usercontent.com")]}
    await middleware(scope, receive, send)  # type: ignore[arg-type]
    assert sent == [{"type": "websocket.close", "code": 1008}] and reached == []
    await middleware(scope | {"headers": [(b"host", b"app.example.com")]}, receive, send)  # type: ignore[arg-type]
    assert reached == ["app"]


@pytest.mark.parametrize(
    ("headers", "opens"),
    [
        ({"sec-fetch-dest": "document"}, True), ({"sec-fetch-dest": "iframe"}, True), ({"sec-fetch-dest": "image"}, True),
        ({"sec-fetch-dest": "empty", "accept": "text/html"}, False), ({"accept": "text/html,*/*"}, True),
        ({"sec-fetch-mode": "cors", "accept": "text/html"}, False), ({"accept": "*/*"}, False), ({}, False),
    ],
)
def test_what_counts_as_a_browser_opening_content(headers: dict[str, str], opens: bool) -> None:
    from starlette.datastructures import Headers

    from gatehouse.storage.origin import opens_in_browser

    assert opens_in_browser(Headers(headers)) is opens
