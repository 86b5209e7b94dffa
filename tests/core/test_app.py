"""The app shell over real HTTP: health, JWKS, API keys, error shapes, request ids, body limits."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx
import jwt
import pytest

from tests.smtp import SMTPServer, smtp_env
from tests.support import RunningServer

VERSIONED = {"X-Supabase-Api-Version": "2024-01-01"}


def test_health_needs_no_key(server: RunningServer) -> None:
    response = httpx.get(f"{server.url}/auth/v1/health")
    assert response.status_code == 200
    assert response.json()["name"] == "GoTrue"


def test_jwks_serves_the_public_key(server: RunningServer) -> None:
    response = httpx.get(f"{server.url}/auth/v1/.well-known/jwks.json")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "public, max-age=600"
    (jwk,) = response.json()["keys"]
    assert jwk["kid"] == server.keys.kid and "d" not in jwk
    token = server.keys.sign({"sub": "x", "exp": int(time.time()) + 60})
    assert jwt.decode(token, jwt.PyJWK(jwk).key, algorithms=["ES256"])["sub"] == "x"


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ({}, 401, "no_api_key"),
        ({"apikey": "sb_publishable_wrong"}, 401, "invalid_api_key"),
        ({"apikey": "eyJhbGciOiJub25lIn0.e30."}, 401, "invalid_api_key"),
        ({"Authorization": "Bearer sb_publishable_wrong"}, 401, "invalid_api_key"),
    ],
)
def test_api_paths_need_a_valid_key(server: RunningServer, headers: dict[str, str], status: int, code: str) -> None:
    response = httpx.get(f"{server.url}/auth/v1/settings", headers=headers | VERSIONED)
    assert response.status_code == status
    assert response.json()["code"] == code
    assert response.json()["message"]


@pytest.mark.parametrize("key_name", ["publishable_key", "secret_key", "anon_key", "service_role_key"])
def test_each_key_is_accepted(server: RunningServer, key_name: str) -> None:
    key = getattr(server.keys, key_name)
    response = httpx.get(f"{server.url}/auth/v1/no-such-route", headers={"apikey": key} | VERSIONED)
    assert response.status_code == 404  # past the key check, to the router
    assert response.json()["code"] == "not_found"


def test_key_may_come_as_bearer(server: RunningServer) -> None:
    headers = {"Authorization": f"Bearer {server.keys.publishable_key}"}
    assert httpx.get(f"{server.url}/auth/v1/no-such-route", headers=headers).status_code == 404


def test_secret_key_from_a_browser_is_refused(server: RunningServer) -> None:
    headers = {
        "apikey": server.keys.secret_key,
        "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/156.0",
        "Sec-Fetch-Mode": "cors",
    }
    response = httpx.get(f"{server.url}/auth/v1/no-such-route", headers=headers | VERSIONED)
    assert response.status_code == 401
    assert response.json()["code"] == "forbidden_secret_key"


#: What browsers send that server-side clients do not: any one of these marks a browser.
BROWSER_HEADERS = [
    {"Origin": "https://app.example.com"},
    {"Origin": "null"},
    {"Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Dest": "empty"},
    {"Sec-Fetch-User": "?1"},
    {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/156.0", "Sec-Fetch-Mode": "cors"},
]
#: One read per API, and how each API's clients read a refusal.
API_READS = {
    "auth": ("/auth/v1/settings", lambda body: body["error_code"] == "forbidden_secret_key" and body["code"] == 401),
    "rest": ("/rest/v1/", lambda body: body["code"] == "forbidden_secret_key" and set(body) >= {"details", "hint"}),
    "storage": ("/storage/v1/bucket", lambda body: body["statusCode"] == "401" and body["code"] == "forbidden_secret_key"
                and body["error"] == "Unauthorized"),
}


@pytest.mark.parametrize("api", sorted(API_READS))
@pytest.mark.parametrize("browser", BROWSER_HEADERS, ids=lambda h: "+".join(h))
@pytest.mark.parametrize("carrier", ["apikey", "bearer"])
def test_secret_key_from_a_browser_is_refused_by_every_api(server: RunningServer, api: str, browser: dict[str, str],
                                                            carrier: str) -> None:
    path, refused_shape = API_READS[api]
    key = server.keys.secret_key
    sent = {"apikey": key} if carrier == "apikey" else {"Authorization": f"Bearer {key}"}
    response = httpx.get(f"{server.url}{path}", headers=sent | browser)
    assert response.status_code == 401, response.text
    body = response.json()
    assert refused_shape(body), body
    assert "browser" in (body.get("message") or body.get("msg"))
    # the same request from a server is served
    assert httpx.get(f"{server.url}{path}", headers=sent).status_code == 200


@pytest.mark.parametrize("api", sorted(API_READS))
def test_a_secret_bearer_beside_a_publishable_apikey_is_refused_too(server: RunningServer, api: str) -> None:
    path, refused_shape = API_READS[api]
    headers = {"apikey": server.keys.publishable_key, "Authorization": f"Bearer {server.keys.secret_key}",
               "Origin": "https://app.example.com"}
    response = httpx.get(f"{server.url}{path}", headers=headers)
    assert response.status_code == 401 and refused_shape(response.json()), response.text


@pytest.mark.parametrize("api", sorted(API_READS))
def test_server_side_fetch_and_browsers_with_the_publishable_key_are_served(server: RunningServer, api: str) -> None:
    path, _ = API_READS[api]
    node_fetch = {"User-Agent": "node", "Sec-Fetch-Mode": "cors", "Accept-Language": "*"}  # undici's own headers
    assert httpx.get(f"{server.url}{path}", headers={"apikey": server.keys.secret_key} | node_fetch).status_code == 200
    browser = {"Origin": "https://app.example.com", "Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "cors"}
    publishable = httpx.get(f"{server.url}{path}", headers={"apikey": server.keys.publishable_key} | browser)
    assert publishable.status_code == 200, publishable.text


def test_auth_errors_have_the_legacy_shape_without_api_version(server: RunningServer) -> None:
    body = httpx.get(f"{server.url}/auth/v1/settings").json()
    assert body["code"] == 401 and body["error_code"] == "no_api_key" and body["msg"]


def test_auth_errors_have_the_new_shape_with_api_version(server: RunningServer) -> None:
    response = httpx.get(f"{server.url}/auth/v1/settings", headers=VERSIONED)
    assert response.headers["x-supabase-api-version"] == "2024-01-01"
    assert response.json()["code"] == "no_api_key"


def test_request_ids(server: RunningServer) -> None:
    given = httpx.get(f"{server.url}/auth/v1/health", headers={"X-Request-Id": "abc-123"})
    assert given.headers["x-request-id"] == "abc-123"
    hostile = httpx.get(f"{server.url}/auth/v1/health", headers={"X-Request-Id": "a b;<script>"})
    assert len(hostile.headers["x-request-id"]) == 32 and hostile.headers["x-request-id"].isalnum()
    again = httpx.get(f"{server.url}/auth/v1/health")
    assert again.headers["x-request-id"] != hostile.headers["x-request-id"]
    assert '"request_id":"abc-123"' in server.log()


def test_oversized_body_is_refused_up_front(server: RunningServer) -> None:
    with server.client() as client:
        response = client.post("/auth/v1/no-such-route", content=b"x" * 2_000_000, headers=VERSIONED)
    assert response.status_code == 413
    assert response.json()["code"] == "request_too_large"


def test_bad_content_length_is_refused(server: RunningServer) -> None:
    with server.client() as client:
        response = client.post("/auth/v1/no-such-route", content=b"{}", headers={"Content-Length": "2"} | VERSIONED)
    assert response.status_code == 404


def test_cors_preflight(server: RunningServer) -> None:
    response = httpx.options(
        f"{server.url}/auth/v1/settings",
        headers={
            "Origin": "http://localhost:3000",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "apikey, authorization, x-client-info, content-type",
        },
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "*"
    assert "apikey" in response.headers["access-control-allow-headers"]


#: Every header the official clients may send (supabase-js lists its own in @supabase/supabase-js/cors:
#: x-retry-count from postgrest-js retries, W3C trace context when tracePropagation is on).
CLIENT_HEADERS = [
    "apikey", "authorization", "x-client-info", "content-type", "x-supabase-api-version", "prefer", "range",
    "accept-profile", "content-profile", "x-upsert", "cache-control", "x-metadata", "x-retry-count",
    "traceparent", "tracestate", "baggage",
]


@pytest.mark.parametrize("header", CLIENT_HEADERS)
@pytest.mark.parametrize("path", ["/auth/v1/token", "/rest/v1/profiles", "/storage/v1/object/avatars/a.png"])
def test_cors_preflight_allows_every_client_header(server: RunningServer, path: str, header: str) -> None:
    response = httpx.options(
        f"{server.url}{path}",
        headers={"Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": header},
    )
    assert response.status_code == 200, response.text
    allowed = [h.strip().lower() for h in response.headers["access-control-allow-headers"].split(",")]
    assert header in allowed


def test_unknown_top_level_path_is_a_json_404(server: RunningServer) -> None:
    response = httpx.get(f"{server.url}/no/such/page")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


def test_the_worker_factory_freezes_what_start_up_made(tmp_path: Path, keys_dir: Path) -> None:
    """gatehouse serve's factory moves start-up objects out of the collector's reach (gc.freeze)."""
    import os
    import shutil
    import subprocess
    import sys

    shutil.copy(keys_dir / "keys.json", tmp_path / "keys.json")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEHOUSE_")} | {
        "GATEHOUSE_DATA_DIR": str(tmp_path), "GATEHOUSE_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none",
    }
    code = ("import gc; from gatehouse.app import create_app_from_env; assert gc.get_freeze_count() == 0; "
            "create_app_from_env(); print(gc.get_freeze_count())")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert int(out.stdout) > 10_000


# -- development mode: asked for or obvious; the inbox and /metrics closed otherwise ------------------


def test_behind_a_reverse_proxy_the_inbox_and_metrics_are_closed(
    server_factory: Callable[..., RunningServer], smtp: SMTPServer
) -> None:
    """127.0.0.1 behind nginx with an https site URL and SMTP: production, so no open inbox or metrics."""
    server = server_factory(env={
        "GATEHOUSE_SITE_URL": "https://app.example.com", "GATEHOUSE_METRICS": "true",
        **smtp_env(smtp.port),
    })
    assert "Mode             production: GATEHOUSE_ENV is unset and the site URL https://app.example.com is https" in server.log()
    for path in ("/_inbox", "/_inbox/messages?to=victim@example.com"):
        response = httpx.get(server.url + path, headers={"Origin": "https://evil.example"})
        assert response.status_code == 404, path
        assert "access-control-allow-origin" not in response.headers
    secret = server.keys.secret_key
    for headers in ({}, {"apikey": server.keys.publishable_key}, {"Authorization": f"Bearer {server.keys.publishable_key}"},
                    {"Authorization": f"Bearer {server.keys.anon_key}"}, {"Authorization": f"Bearer {secret}x"},
                    {"Authorization": "Bearer eyJhbGciOiJub25lIn0.e30."}):
        response = httpx.get(f"{server.url}/metrics", headers={"Origin": "https://evil.example", **headers})
        assert response.status_code == 401, headers
        assert response.json()["code"] == "secret_key_required"
        assert "access-control-allow-origin" not in response.headers
    for headers in ({"Authorization": f"Bearer {secret}"}, {"apikey": secret},
                    {"Authorization": f"Bearer {server.keys.service_role_key}"}):
        response = httpx.get(f"{server.url}/metrics", headers=headers)
        assert response.status_code == 200, headers
        assert "gatehouse_requests_total" in response.text


def test_development_on_loopback_keeps_the_inbox_same_origin(server: RunningServer) -> None:
    assert "Mode             development: GATEHOUSE_ENV is unset and the site URL http://127.0.0.1:" in server.log()
    for path in ("/_inbox/messages", "/metrics"):
        response = httpx.get(server.url + path, headers={"Origin": "https://evil.example"})
        assert response.status_code == 200, path
        assert "access-control-allow-origin" not in response.headers, path
        preflight = httpx.options(server.url + path, headers={
            "Origin": "https://evil.example", "Access-Control-Request-Method": "GET",
        })
        assert "access-control-allow-origin" not in preflight.headers, path
    # the APIs keep answering other origins
    response = httpx.get(f"{server.url}/rest/v1/profiles", headers={"Origin": "https://app.example",
                                                                     "apikey": server.keys.publishable_key})
    assert response.headers["access-control-allow-origin"] == "*"


def test_development_asked_for_on_a_public_site_url_is_warned_about(
    server_factory: Callable[..., RunningServer],
) -> None:
    server = server_factory(env={"GATEHOUSE_ENV": "development", "GATEHOUSE_SITE_URL": "https://app.example.com"})
    log = server.log()
    assert "Mode             development: GATEHOUSE_ENV is development" in log
    assert "WARNING          development mode: /_inbox (sign-in links) and /metrics are open" in log
    assert httpx.get(f"{server.url}/_inbox/messages").status_code == 200  # asked for explicitly
