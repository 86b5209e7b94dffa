"""The keys and settings page over HTTP, against two live servers on one database: a signing-key
rotation through the dashboard that signs nobody out and that the other process follows; each
step confirmed, audited, and refused when it cannot be taken; forged and retired keys' tokens
refused; derived secrets untouched; no secret value anywhere in the page."""

from __future__ import annotations

import html
import json
import re
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import jwt
import pyotp
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.auth.helpers import PASSWORD as USER_PASSWORD
from tests.auth.helpers import Auth, new_email
from tests.dashboard.helpers import Visitor, app_credentials, fetch, make_admin
from tests.support import RunningServer, run_sql

SECRETS = {"GATEHOUSE_SMTP_PASSWORD": "smtp-hunter2-secret", "GATEHOUSE_S3_SECRET_ACCESS_KEY": "s3-secret-shh-123",
           "GATEHOUSE_OAUTH_GITHUB_CLIENT_ID": "gh-client-id", "GATEHOUSE_OAUTH_GITHUB_CLIENT_SECRET": "gh-secret-xyz",
           "GATEHOUSE_S3_ENDPOINT_URL": "http://minio:url-password-777@s3.example.com:9000"}
ENV = {"GATEHOUSE_JWT_EXPIRY": "120", "GATEHOUSE_STORAGE_SIGNED_URL_MAX_EXPIRY": "300",
       "GATEHOUSE_STORAGE_SIGNED_UPLOAD_EXPIRY": "300", "GATEHOUSE_RATE_LIMIT_TOKEN": "1000/60",
       "GATEHOUSE_SMTP_SENDER_NAME": "<script>alert(1)</script>", **SECRETS}
#: How the APIs refuse a token of an unknown or retired key: auth says bad_jwt with 403 (as GoTrue
#: does), the data API 401.
REFUSED = (403, 401)
WAIT = 300 + 60  # the longest token life above, plus the keyring's reload margin


@pytest.fixture(scope="module")
def pair(server_factory: Callable[..., RunningServer]) -> tuple[RunningServer, RunningServer]:
    return server_factory(env=ENV), server_factory(env=ENV)


@pytest.fixture(scope="module")
def server(pair: tuple[RunningServer, RunningServer]) -> RunningServer:
    return pair[0]


def user_session(server: RunningServer, auth: Auth) -> tuple[str, dict[str, Any]]:
    email = new_email("rot")
    httpx.post(f"{server.url}/auth/v1/admin/users", headers={"apikey": server.keys.secret_key},
               json={"email": email, "password": USER_PASSWORD, "email_confirm": True}).raise_for_status()
    response = auth.log_in(email)
    assert response.status_code == 200, response.text
    return email, response.json()


def kid(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])


def jwks(server: RunningServer) -> list[str]:
    return [key["kid"] for key in httpx.get(f"{server.url}/auth/v1/.well-known/jwks.json").json()["keys"]]


def ring(database_url: str) -> dict[str, str]:
    return {row["kid"]: row["state"] for row in fetch(database_url, "SELECT kid, state FROM gatehouse.signing_keys")}


def works(server: RunningServer, token: str) -> tuple[int, int]:
    """The status of /auth/v1/user and of a /rest/v1 read with this access token."""
    headers = {"apikey": server.keys.publishable_key, "Authorization": f"Bearer {token}"}
    user = httpx.get(f"{server.url}/auth/v1/user", headers=headers)
    rest = httpx.get(f"{server.url}/rest/v1/profiles?select=id&limit=1", headers=headers)
    return user.status_code, rest.status_code


def step(visitor: Visitor, name: str, **fields: str) -> httpx.Response:
    """A rotation step through its confirmation page, as the buttons do it."""
    first = visitor.post(f"/_/settings/keys/{name}", fields)
    if first.status_code != 200 or 'name="confirmed"' not in first.text:
        return first
    return visitor.post(f"/_/settings/keys/{name}", {**fields, "confirmed": "yes"})


def age(database_url: str, key: str, seconds: int) -> None:
    """Move the moment ``key`` stopped signing ``seconds`` into the past, rather than waiting."""
    run_sql(database_url, "UPDATE gatehouse.signing_keys SET deactivated_at = now() - make_interval(secs => $1) "
            "WHERE kid = $2", float(seconds), key)


def message(page: httpx.Response, element: str) -> str:
    found = re.search(rf'id="{element}">([^<]*)<', page.text)
    return html.unescape(found[1]) if found else ""


def rotate(visitor: Visitor, database_url: str) -> tuple[str, str]:
    """standby, switch and retire the previous key: (new current, retired)."""
    before = next(k for k, s in ring(database_url).items() if s == "current") if ring(database_url) else None
    assert step(visitor, "standby").status_code == 200
    assert step(visitor, "switch").status_code == 200
    states = ring(database_url)
    old = before or next(k for k, s in states.items() if s == "previous")
    age(database_url, old, WAIT + 1)
    assert step(visitor, "retire", kid=old).status_code == 200
    return next(k for k, s in ring(database_url).items() if s == "current"), old


def test_a_rotation_through_the_dashboard_signs_nobody_out(
    pair: tuple[RunningServer, RunningServer], visitor: Visitor, auth: Auth, database_url: str,
) -> None:
    a, b = pair
    root = a.keys.kid
    email, session = user_session(a, auth)
    assert kid(session["access_token"]) == root
    factor = auth.post("/factors", {"factor_type": "totp"}, token=session["access_token"]).json()
    secret = factor["totp"]["secret"]  # sealed under a key derived from the root key
    assert jwks(a) == jwks(b) == [root]

    asked = visitor.post("/_/settings/keys/standby", {})
    assert asked.status_code == 200 and "published in the JWKS at once" in message(asked, "question")
    assert ring(database_url) == {}  # the question changed nothing
    made = visitor.post("/_/settings/keys/standby", {"confirmed": "yes"})
    assert made.status_code == 200 and message(made, "notice")
    standby = next(k for k, s in ring(database_url).items() if s == "standby")
    assert jwks(a) == [root, standby]
    _until(lambda: jwks(b) == [root, standby])  # the other process heard of it

    switched = step(visitor, "switch")
    assert switched.status_code == 200, switched.text
    assert ring(database_url) == {root: "previous", standby: "current"}
    assert works(a, session["access_token"]) == (200, 200)
    _until(lambda: signs_with(b, email, standby))
    assert works(b, session["access_token"]) == (200, 200)  # B accepts the old key's token ...
    refreshed = auth.refresh(session["refresh_token"]).json()
    assert kid(refreshed["access_token"]) == standby
    assert works(b, refreshed["access_token"]) == (200, 200)  # ... and the new key's

    early = step(visitor, "retire", kid=root)
    assert early.status_code == 409 and "may still be valid" in message(early, "error")
    assert "legacy anon and service_role" in visitor.post("/_/settings/keys/retire", {"kid": root}).text
    assert ring(database_url)[root] == "previous"
    age(database_url, root, WAIT + 1)
    retired = step(visitor, "retire", kid=root)
    assert retired.status_code == 200 and message(retired, "notice") == "The key is retired."
    assert jwks(a) == [standby]
    _until(lambda: jwks(b) == [standby])
    for server in pair:
        assert works(server, session["access_token"]) == REFUSED
        assert works(server, refreshed["access_token"]) == (200, 200)
        legacy = httpx.get(f"{server.url}/rest/v1/profiles", headers={"apikey": server.keys.anon_key})
        assert legacy.status_code == 401  # the legacy keys were the root key's
        assert httpx.get(f"{server.url}/rest/v1/profiles",
                         headers={"apikey": server.keys.publishable_key}).status_code == 200

    again = auth.refresh(refreshed["refresh_token"]).json()  # the session outlived the retired key
    assert kid(again["access_token"]) == standby
    challenge = auth.post(f"/factors/{factor['id']}/challenge", {}, token=again["access_token"]).json()
    verified = auth.post(f"/factors/{factor['id']}/verify", {"challenge_id": challenge["id"],
                                                              "code": pyotp.TOTP(secret).now()},
                         token=again["access_token"])
    assert verified.status_code == 200, verified.text  # the derived MFA key did not change
    logged = fetch(database_url, "SELECT a.action, a.target, a.detail, d.email FROM gatehouse.dashboard_audit a "
                   "JOIN gatehouse.dashboard_admins d ON d.id = a.admin_id WHERE a.action LIKE 'signing_key_%' "
                   "ORDER BY a.id")
    assert [(row["action"], row["target"]) for row in logged] == [
        ("signing_key_standby", standby), ("signing_key_switch", standby), ("signing_key_retire", root)]
    assert json.loads(logged[1]["detail"]) == {"previous": root}


def signs_with(server: RunningServer, email: str, expected: str) -> bool:
    """Whether a log-in on ``server`` now gets a token signed by ``expected``."""
    client = Auth(server)
    try:
        return kid(client.log_in(email).json()["access_token"]) == expected
    finally:
        client.close()


def _until(condition: Callable[[], bool], seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the other process did not follow"
        time.sleep(0.1)


def root_retired(visitor: Visitor, database_url: str, root: str) -> None:
    """Bring the ring to a state where the root key is retired (the first test leaves it so)."""
    if ring(database_url).get(root) != "retired":
        rotate(visitor, database_url)
    assert ring(database_url)[root] == "retired"


def test_forged_tokens_and_tokens_of_a_retired_key_are_refused(
    pair: tuple[RunningServer, RunningServer], visitor: Visitor, database_url: str,
) -> None:
    a = pair[0]
    root_retired(visitor, database_url, a.keys.kid)
    now = int(time.time())
    claims = {"sub": "00000000-0000-0000-0000-000000000001", "role": "authenticated", "aud": "authenticated",
              "iat": now, "exp": now + 60, "session_id": "00000000-0000-0000-0000-000000000002"}
    stranger = ec.generate_private_key(ec.SECP256R1())
    current = next(k for k, s in ring(database_url).items() if s == "current")
    forged = {
        "the retired root key, its kid": jwt.encode(claims, a.keys.private_key, algorithm="ES256",
                                                    headers={"kid": a.keys.kid}),
        "the retired root key, no kid": jwt.encode(claims, a.keys.private_key, algorithm="ES256"),
        "an unknown kid": jwt.encode(claims, stranger, algorithm="ES256", headers={"kid": "u" * 43}),
        "the current kid, another key": jwt.encode(claims, stranger, algorithm="ES256", headers={"kid": current}),
    }
    for name, token in forged.items():
        for server in pair:
            assert works(server, token) == REFUSED, name


def test_the_page_shows_the_configuration_and_no_secret_value(server: RunningServer, visitor: Visitor) -> None:
    page = visitor.get("/_/settings")
    assert page.status_code == 200
    text = page.text
    assert server.keys.publishable_key in text and server.keys.anon_key in text
    assert "/auth/v1/.well-known/jwks.json" in text
    pem = server.keys.private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    database_password = httpx.URL(server.env["GATEHOUSE_DATABASE_URL"]).password
    assert database_password
    never = [server.keys.secret_key, server.keys.service_role_key, server.keys.authenticator_password,
             database_password, *pem.splitlines()[1:-1], "smtp-hunter2-secret", "s3-secret-shh-123", "gh-secret-xyz",
             "url-password-777"]
    for secret in never:
        assert secret not in text and html.escape(secret) not in text, secret
    assert "http://minio:••••••••@s3.example.com:9000" in text  # only the password of a URL is masked
    assert "gh-client-id" in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text and "<script>alert" not in text

    def row(variable: str) -> str:
        found = re.search(rf"<code>{variable}</code></td>(.*?)</tr>", text, re.DOTALL)
        assert found, variable
        return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", found[1])).strip()

    assert row("GATEHOUSE_JWT_EXPIRY").startswith("120 environment Access-token lifetime")
    assert row("GATEHOUSE_REST_MAX_ROWS").startswith("1000 default")
    assert row("GATEHOUSE_SECRET_KEY").startswith("•••••••• keys.json")
    assert row("GATEHOUSE_PUBLISHABLE_KEY").startswith(f"{server.keys.publishable_key} keys.json")
    assert row("GATEHOUSE_SMTP_PASSWORD").startswith("•••••••• environment")
    assert row("GATEHOUSE_OAUTH_GITHUB_CLIENT_SECRET").startswith("•••••••• environment")
    assert row("GATEHOUSE_DATABASE_URL").count("••••••••") == 1


def test_every_key_like_setting_declares_whether_it_is_secret() -> None:
    from pydantic import BaseModel

    from gatehouse.core.config import OAuthProviderSettings, Settings, secrecy

    models: list[type[BaseModel]] = [Settings, OAuthProviderSettings]
    for model in models:
        for name, info in model.model_fields.items():
            text = info.annotation in (str, str | None)  # a number or a switch holds no secret
            if text and re.search(r"(^|_)(key|secret|password)$|private|database_url", name):
                assert isinstance(info.json_schema_extra, dict) and "secret" in info.json_schema_extra, name
    assert secrecy(Settings, "database_url") == "url" and secrecy(Settings, "publishable_key") == "none"


def test_no_session_an_app_users_credentials_or_the_secret_key_reach_the_page(
    server: RunningServer, auth: Auth, database_url: str,
) -> None:
    _, session = user_session(server, auth)
    before = ring(database_url)
    for headers in [{}, *app_credentials(server, session)]:
        with httpx.Client(base_url=server.url, headers=headers) as client:
            page = client.get("/_/settings")
            assert page.status_code == 303 and page.headers["location"] == "/_/login"
            assert server.keys.publishable_key not in page.text
            for name in ("standby", "switch", "retire"):
                posted = client.post(f"/_/settings/keys/{name}", data={"confirmed": "yes", "kid": server.keys.kid})
                assert posted.status_code in (303, 403)
    assert ring(database_url) == before


def test_a_post_without_the_csrf_token_changes_nothing(visitor: Visitor, database_url: str) -> None:
    before = ring(database_url)
    for csrf in ("", "x" * 43):
        for name in ("standby", "switch", "retire"):
            refused = visitor.post(f"/_/settings/keys/{name}", {"confirmed": "yes", "kid": "k" * 43}, csrf=csrf)
            assert refused.status_code == 403
    assert ring(database_url) == before
    assert visitor.get("/_/settings").status_code == 200  # the session is still good


def test_steps_that_cannot_be_taken_are_refused_on_the_page(
    server: RunningServer, visitor: Visitor, database_url: str,
) -> None:
    assert "standby" not in ring(database_url).values()
    none = step(visitor, "switch")
    assert none.status_code == 409 and "no standby key" in message(none, "error")
    current = next((k for k, s in ring(database_url).items() if s == "current"), server.keys.kid)
    for kid, status in [("' OR 1=1 --", 400), ("../../etc/passwd", 400), ("<script>alert(1)</script>", 400),
                        ("k" * 10_000, 400), ("", 400), ("k" * 43, 409), (current, 409)]:
        refused = visitor.post("/_/settings/keys/retire", {"kid": kid, "confirmed": "yes"})
        assert refused.status_code == status, kid
        assert "<script>alert(1)" not in refused.text
    for name in ("delete", "%3Cscript%3Ealert(1)%3C%2Fscript%3E", "..%2F..%2Fusers", "standby'%20OR%201=1"):
        unknown = visitor.post(f"/_/settings/keys/{name}", {"confirmed": "yes"})
        assert unknown.status_code == 404 and "<script>alert" not in unknown.text, name
    before = ring(database_url)
    assert step(visitor, "standby").status_code == 200
    twice = visitor.post("/_/settings/keys/standby", {"confirmed": "yes"})
    assert twice.status_code == 409 and "already" in message(twice, "error")
    assert len(ring(database_url)) == len(before) + 1


def test_two_switches_at_once_leave_exactly_one_current_key(
    server: RunningServer, visitor: Visitor, database_url: str,
) -> None:
    if "standby" not in ring(database_url).values():
        assert step(visitor, "standby").status_code == 200
    other = Visitor(server)
    try:
        other.sign_in(make_admin(database_url))
        other.get("/_/settings")
        statuses: list[int] = []

        def switch(who: Visitor) -> None:
            statuses.append(who.post("/_/settings/keys/switch", {"confirmed": "yes"}).status_code)

        threads = [threading.Thread(target=switch, args=(who,)) for who in (visitor, other)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        other.close()
    assert sorted(statuses) == [200, 409]
    assert list(ring(database_url).values()).count("current") == 1
    assert "standby" not in ring(database_url).values()


def test_signed_urls_and_the_web_apps_cookies_keep_working_across_a_rotation(
    server: RunningServer, visitor: Visitor, auth: Auth, database_url: str,
) -> None:
    storage = httpx.Client(base_url=f"{server.url}/storage/v1", headers={"apikey": server.keys.secret_key}, timeout=15)
    try:
        storage.post("/bucket", json={"id": "rotation", "public": False})
        assert storage.put("/object/rotation/a.txt", content=b"kept", headers={"content-type": "text/plain"}
                           ).status_code == 200
        signed = storage.post("/object/sign/rotation/a.txt", json={"expiresIn": 300}).json()["signedURL"]
        email, session = user_session(server, auth)
        cookies = f"gh-access-token={session['access_token']}; gh-refresh-token={session['refresh_token']}"
        assert email in httpx.get(f"{server.url}/account", headers={"cookie": cookies}).text

        assert step(visitor, "standby").status_code == 200
        assert step(visitor, "switch").status_code == 200
        current = next(k for k, s in ring(database_url).items() if s == "current")
        assert httpx.get(f"{server.url}/storage/v1{signed}").content == b"kept"  # made before the switch
        after = storage.post("/object/sign/rotation/a.txt", json={"expiresIn": 300}).json()["signedURL"]
        assert kid(httpx.URL(after).params["token"]) == current
        assert httpx.get(f"{server.url}/storage/v1{after}").content == b"kept"
        page = httpx.get(f"{server.url}/account", headers={"cookie": cookies})
        assert email in page.text and "gh-access-token" not in str(page.headers)  # the old token still serves

        previous = kid(session["access_token"])
        age(database_url, previous, WAIT + 1)
        assert step(visitor, "retire", kid=previous).status_code == 200
        page = httpx.get(f"{server.url}/account", headers={"cookie": cookies}, follow_redirects=False)
        assert email in page.text  # the browser stays signed in: its refresh token made a new access token
        renewed = re.search(r"gh-access-token=([^;]+)", " ".join(page.headers.get_list("set-cookie")))
        assert renewed and kid(renewed[1]) == current
    finally:
        storage.close()
