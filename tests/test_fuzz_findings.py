"""Bugs schemathesis found, pinned one by one: each was a 500 or a wrong shape."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from tests.auth.helpers import PASSWORD, new_email
from tests.support import ConfirmedSession, RunningServer


@pytest.fixture(scope="module")
def server(server_factory: Callable[..., RunningServer]) -> RunningServer:
    return server_factory(env={"GATEHOUSE_RATE_LIMITS_ENABLED": "false"})


def api(server: RunningServer, method: str, path: str, *, key: str | None = None, **kwargs: object) -> httpx.Response:
    headers = {"apikey": key or server.keys.publishable_key, **kwargs.pop("headers", {})}  # type: ignore[dict-item]
    return httpx.request(method, f"{server.url}{path}", headers=headers, timeout=15, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/auth/v1/signup", {"email": "nul@example.com", "password": PASSWORD, "data": {"a": "x\u0000"}}),
        ("/auth/v1/signup", {"email": "nul2@example.com", "password": PASSWORD, "code_challenge": "a\u0000"}),
        ("/auth/v1/admin/users", {"email": "nul3@example.com", "role": "r\u0000"}),
    ],
)
def test_nul_characters_are_a_400(server: RunningServer, path: str, body: dict[str, object]) -> None:
    key = server.keys.secret_key if "admin" in path else None
    response = api(server, "POST", path, key=key, json=body)
    assert response.status_code == 400 and response.json()["error_code"] == "validation_failed"


def test_malformed_redirect_goes_to_the_site(server: RunningServer) -> None:
    response = api(server, "GET", "/auth/v1/verify", params={"token": "abc", "type": "signup",
                                                             "redirect_to": "http://[::1"})
    assert response.status_code == 303 and response.headers["location"].startswith(server.url)
    signup = api(server, "POST", "/auth/v1/signup", params={"redirect_to": "http://[::1"},
                 json={"email": new_email(), "password": PASSWORD})
    assert signup.status_code == 200


def test_admin_edge_values(server: RunningServer) -> None:
    key = server.keys.secret_key
    huge_page = api(server, "GET", "/auth/v1/admin/users", key=key, params={"page": "99999999999999999999"})
    assert huge_page.status_code == 200 and huge_page.json()["users"] == []
    user = api(server, "POST", "/auth/v1/admin/users", key=key, json={"email": new_email()}).json()
    ban = api(server, "PUT", f"/auth/v1/admin/users/{user['id']}", key=key,
              json={"ban_duration": "2379595078152119m0.6360082986s"})
    assert ban.status_code == 400 and "100 years" in ban.json()["msg"]


def test_storage_bad_values_are_400(server: RunningServer) -> None:
    key = server.keys.secret_key
    sort = api(server, "POST", "/storage/v1/object/list/avatars", key=key,
               json={"prefix": "", "sortBy": {"column": {}, "order": "asc"}})
    assert sort.status_code == 400 and sort.json()["statusCode"] == "400"
    nul = api(server, "POST", "/storage/v1/bucket", key=key, json={"id": "nulbucket", "name": "a\u0000"})
    assert nul.status_code == 400 and nul.json()["statusCode"] == "400"
    api(server, "POST", "/storage/v1/bucket", key=key, json={"id": "edge"})
    public = api(server, "PUT", "/storage/v1/bucket/edge", key=key, json={"public": "yes"})
    assert public.json()["statusCode"] == "400"
    big = api(server, "PUT", "/storage/v1/bucket/edge", key=key, json={"file_size_limit": "99999999999999999999GB"})
    assert big.json()["statusCode"] == "400"
    missing = api(server, "POST", "/storage/v1/bucket/nope/empty", key=key)
    assert missing.json()["statusCode"] == "404"


def test_signed_upload_urls_made_with_a_key_work(server: RunningServer) -> None:
    key = server.keys.secret_key
    api(server, "POST", "/storage/v1/bucket", key=key, json={"id": "drop"})
    signed = api(server, "POST", "/storage/v1/object/upload/sign/drop/file.txt", key=key).json()
    uploaded = httpx.put(f"{server.url}/storage/v1{signed['url']}", content=b"hi", headers={"Content-Type": "text/plain"})
    assert uploaded.status_code == 200, uploaded.text


def test_storage_range_errors_have_storage_shape(server: RunningServer) -> None:
    key = server.keys.secret_key
    api(server, "POST", "/storage/v1/bucket", key=key, json={"id": "ranges", "public": True})
    api(server, "POST", "/storage/v1/object/ranges/a.txt", key=key, content=b"0123456789",
        headers={"Content-Type": "text/plain"})
    empty = httpx.get(f"{server.url}/storage/v1/object/public/ranges/a.txt", headers={"Range": ""})
    assert empty.status_code == 200 and empty.content == b"0123456789"
    beyond = httpx.get(f"{server.url}/storage/v1/object/public/ranges/a.txt", headers={"Range": "bytes=50-"})
    assert beyond.status_code == 400 and beyond.json()["statusCode"] == "416"


def test_empty_insert_answers_an_empty_json_array(server: RunningServer, confirmed_session: ConfirmedSession) -> None:
    _, session = confirmed_session(server)
    response = api(server, "POST", "/rest/v1/profiles", json=[],
                   headers={"Authorization": f"Bearer {session['access_token']}"})
    assert response.status_code == 201 and response.json() == []
    assert response.headers["content-type"].startswith("application/json")
