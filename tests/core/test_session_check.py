"""A signed-out, banned, deleted or expired session's access token stops working at once.

The token itself stays signed and unexpired for up to an hour; what ends is the session it names.
Every request that runs as a user (rest reads, writes and RPC; every storage operation) checks
the session inside the same round trip (``gatehouse.run_as`` / ``as_user``), so the same token
fails on /rest/v1 and /storage/v1 right after the event, while the user's other sessions (or
other users) keep working, and nothing is written (no object survives a deleted user).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import asyncpg
import httpx
import jwt
import pytest

from tests.auth.helpers import PASSWORD, Auth, new_email
from tests.support import RunningServer, png

RPC_FUNCTIONS = """
CREATE FUNCTION public.session_probe() RETURNS uuid LANGUAGE sql STABLE AS 'SELECT auth.uid()';
CREATE FUNCTION public.session_touch() RETURNS uuid LANGUAGE sql VOLATILE AS 'SELECT auth.uid()';
GRANT EXECUTE ON FUNCTION public.session_probe(), public.session_touch() TO anon, authenticated, service_role;
"""



PNG = png(4, "red")


@pytest.fixture(scope="module")
async def functions(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(RPC_FUNCTIONS)
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def server(server_factory: Callable[..., RunningServer], functions: None) -> RunningServer:
    return server_factory(env={"GATEHOUSE_MAILER_AUTOCONFIRM": "true", "GATEHOUSE_RATE_LIMITS_ENABLED": "false"})


@pytest.fixture(scope="module")
def auth(server: RunningServer) -> Iterator[Auth]:
    client = Auth(server)
    yield client
    client.close()


@pytest.fixture(scope="module")
def admin(server: RunningServer) -> Iterator[Auth]:
    client = Auth(server, key=server.keys.secret_key)
    yield client
    client.close()


@dataclass
class User:
    id: str
    email: str
    first: str  # access token of the first session
    second: str  # access token of a second session (another log-in)
    avatar: str  # an object the user uploaded before anything happened

    @staticmethod
    def session_of(token: str) -> str:
        return str(jwt.decode(token, options={"verify_signature": False})["session_id"])


def api(server: RunningServer, token: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=15, headers={
        "apikey": server.keys.publishable_key, "Authorization": f"Bearer {token}",
    })


def upload(server: RunningServer, token: str, name: str) -> httpx.Response:
    with api(server, token) as client:
        return client.post(f"/storage/v1/object/avatars/{name}", content=PNG, headers={"Content-Type": "image/png"})


def new_user(server: RunningServer, auth: Auth) -> User:
    email = new_email("session")
    signed_up = auth.sign_up(email)
    assert signed_up.status_code == 200, signed_up.text
    first = signed_up.json()["access_token"]
    logged_in = auth.log_in(email)
    assert logged_in.status_code == 200, logged_in.text
    second = logged_in.json()["access_token"]
    user_id = signed_up.json()["user"]["id"]
    avatar = f"{user_id}-before.png"
    assert upload(server, first, avatar).status_code == 200
    return User(user_id, email, first, second, avatar)


def object_exists(server: RunningServer, name: str) -> bool:
    with httpx.Client(base_url=server.url, timeout=15, headers={
        "apikey": server.keys.secret_key, "Authorization": f"Bearer {server.keys.secret_key}",
    }) as client:
        return client.get(f"/storage/v1/object/info/avatars/{name}").status_code == 200


def refusals(server: RunningServer, user: User, token: str) -> dict[str, httpx.Response]:
    """Every way of running as the user, with ``token``; each answer by operation."""
    name, uid = user.avatar, user.id
    fresh = f"{uid}-{uuid.uuid4().hex[:8]}.png"
    with api(server, token) as client:
        answers = {
            "rest read": client.get(f"/rest/v1/profiles?id=eq.{uid}"),
            "rest head": client.head(f"/rest/v1/profiles?id=eq.{uid}"),
            "rest update": client.patch(f"/rest/v1/profiles?id=eq.{uid}", json={"full_name": "changed"}),
            "rest insert": client.post("/rest/v1/profiles", json={"id": uid, "full_name": "again"},
                                       headers={"Prefer": "resolution=merge-duplicates"}),
            "rest delete": client.delete(f"/rest/v1/profiles?id=eq.{uid}"),
            "rest rpc get": client.get("/rest/v1/rpc/session_probe"),
            "rest rpc post": client.post("/rest/v1/rpc/session_touch", json={}),
            "storage upload": client.post(f"/storage/v1/object/avatars/{fresh}", content=PNG,
                                          headers={"Content-Type": "image/png"}),
            "storage upsert": client.put(f"/storage/v1/object/avatars/{name}", content=PNG,
                                         headers={"Content-Type": "image/png"}),
            "storage download": client.get(f"/storage/v1/object/authenticated/avatars/{name}"),
            "storage download (no prefix)": client.get(f"/storage/v1/object/avatars/{name}"),
            "storage info": client.get(f"/storage/v1/object/info/authenticated/avatars/{name}"),
            "storage list": client.post("/storage/v1/object/list/avatars", json={"prefix": ""}),
            "storage move": client.post("/storage/v1/object/move", json={
                "bucketId": "avatars", "sourceKey": name, "destinationKey": f"{uid}-moved.png"}),
            "storage copy": client.post("/storage/v1/object/copy", json={
                "bucketId": "avatars", "sourceKey": name, "destinationKey": f"{uid}-copied.png"}),
            "storage sign": client.post(f"/storage/v1/object/sign/avatars/{name}", json={"expiresIn": 60}),
            "storage sign many": client.post("/storage/v1/object/sign/avatars", json={"expiresIn": 60, "paths": [name]}),
            "storage sign upload": client.post(f"/storage/v1/object/upload/sign/avatars/{fresh}"),
            "storage render": client.get(f"/storage/v1/render/image/authenticated/avatars/{name}?width=2"),
            "storage buckets": client.get("/storage/v1/bucket"),
            "storage remove": client.request("DELETE", "/storage/v1/object/avatars", json={"prefixes": [name]}),
            "storage remove one": client.delete(f"/storage/v1/object/avatars/{name}"),
        }
    assert not object_exists(server, fresh), "an upload with an ended session created an object"
    return answers


def assert_refused(server: RunningServer, user: User, token: str) -> None:
    answers = refusals(server, user, token)
    wrong = {}
    for operation, response in answers.items():
        if operation.startswith("rest"):
            ok = response.status_code == 401 and (operation == "rest head" or response.json()["code"] == "PGRST303")
            if ok and operation != "rest head":
                ok = "Session from session_id claim in JWT does not exist" in response.json()["message"]
                ok = ok and response.headers["www-authenticate"].startswith('Bearer error="invalid_token"')
        else:
            body = response.json() if response.content else {}
            ok = response.status_code == 400 and body.get("statusCode") == "403" and body.get("code") == "InvalidJWT"
        if not ok:
            wrong[operation] = (response.status_code, response.text[:200])
    assert not wrong, wrong
    with httpx.Client(base_url=server.url, timeout=15) as client:  # auth says the same, in GoTrue's words
        me = client.get("/auth/v1/user", headers={"apikey": server.keys.publishable_key,
                                                  "Authorization": f"Bearer {token}"})
    assert me.status_code == 403 and me.json()["error_code"] in ("session_not_found", "user_not_found")


def assert_works(server: RunningServer, user: User, token: str) -> None:
    with api(server, token) as client:
        read = client.get(f"/rest/v1/profiles?id=eq.{user.id}")
        assert read.status_code == 200 and read.json()[0]["id"] == user.id, read.text
        probe = client.get("/rest/v1/rpc/session_probe")
        assert probe.status_code == 200 and probe.json() == user.id
        info = client.get(f"/storage/v1/object/info/authenticated/avatars/{user.avatar}")
        assert info.status_code == 200, info.text
        listed = client.post("/storage/v1/object/list/avatars", json={"prefix": ""})
        assert listed.status_code == 200, listed.text
    name = f"{user.id}-{uuid.uuid4().hex[:8]}.png"
    assert upload(server, token, name).status_code == 200
    assert object_exists(server, name)


def test_signing_out_locally_ends_that_token_only(server: RunningServer, auth: Auth) -> None:
    user = new_user(server, auth)
    assert auth.post("/logout?scope=local", token=user.first).status_code == 204
    assert_refused(server, user, user.first)
    assert object_exists(server, user.avatar)  # nothing the refused token tried happened
    assert_works(server, user, user.second)


def test_signing_out_others_ends_the_other_sessions(server: RunningServer, auth: Auth) -> None:
    user = new_user(server, auth)
    assert auth.post("/logout?scope=others", token=user.second).status_code == 204
    assert_refused(server, user, user.first)
    assert_works(server, user, user.second)


def test_signing_out_globally_ends_every_session(server: RunningServer, auth: Auth) -> None:
    user, other = new_user(server, auth), new_user(server, auth)
    assert auth.post("/logout?scope=global", token=user.first).status_code == 204
    assert_refused(server, user, user.first)
    assert_refused(server, user, user.second)
    assert_works(server, other, other.first)


def test_a_ban_ends_the_users_tokens(server: RunningServer, auth: Auth, admin: Auth) -> None:
    user, other = new_user(server, auth), new_user(server, auth)
    assert admin.put(f"/admin/users/{user.id}", {"ban_duration": "24h"}).status_code == 200
    assert_refused(server, user, user.first)
    assert_refused(server, user, user.second)
    assert_works(server, other, other.second)


@pytest.mark.parametrize("soft", [False, True], ids=["hard", "soft"])
def test_deleting_the_user_ends_their_tokens_and_nothing_is_created(
    server: RunningServer, auth: Auth, admin: Auth, soft: bool
) -> None:
    user, other = new_user(server, auth), new_user(server, auth)
    deleted = admin.http.request("DELETE", f"/admin/users/{user.id}", json={"should_soft_delete": soft})
    assert deleted.status_code == 200, deleted.text
    assert_refused(server, user, user.first)  # includes an upload of a new object: none is created
    assert_refused(server, user, user.second)
    assert_works(server, other, other.first)


async def test_an_expired_session_ends_its_token(server: RunningServer, auth: Auth, database_url: str) -> None:
    user = new_user(server, auth)
    conn = await asyncpg.connect(database_url)
    try:  # the session's own end (not_after) has passed; the access token's exp has not
        await conn.execute("UPDATE auth.sessions SET not_after = now() - interval '1 second' WHERE id = $1",
                           uuid.UUID(User.session_of(user.first)))
    finally:
        await conn.close()
    assert_refused(server, user, user.first)
    assert_works(server, user, user.second)


def test_a_signed_upload_url_dies_with_the_session_that_signed_it(server: RunningServer, auth: Auth) -> None:
    user = new_user(server, auth)
    name = f"{user.id}-signed.png"
    with api(server, user.first) as client:
        signed = client.post(f"/storage/v1/object/upload/sign/avatars/{name}")
    assert signed.status_code == 200, signed.text
    assert auth.post("/logout?scope=local", token=user.first).status_code == 204
    used = httpx.put(server.url + "/storage/v1" + signed.json()["url"], content=PNG,
                     headers={"Content-Type": "image/png"})
    assert used.status_code == 400 and used.json()["code"] == "InvalidJWT", used.text
    assert not object_exists(server, name)


def test_api_keys_carry_no_session_and_keep_working(server: RunningServer) -> None:
    for key in (server.keys.publishable_key, server.keys.anon_key):
        response = httpx.get(f"{server.url}/rest/v1/profiles?limit=1", headers={"apikey": key, "Authorization": f"Bearer {key}"})
        assert response.status_code == 200, response.text
    assert object_exists(server, "nothing-here.png") is False  # the secret key runs storage as service_role


@pytest.mark.parametrize("forge", ["someone else's session", "session_id not a uuid", "sub not a uuid", "unknown session"])
def test_a_token_naming_a_session_it_does_not_own_is_refused(server: RunningServer, auth: Auth, forge: str) -> None:
    """Tokens signed with the real key (as after a key leak, or a bug elsewhere) still need their own live session."""
    user, other = new_user(server, auth), new_user(server, auth)
    claims = jwt.decode(user.first, options={"verify_signature": False})
    claims["session_id"] = {
        "someone else's session": User.session_of(other.first),
        "session_id not a uuid": "'; DROP TABLE auth.sessions; --",
        "sub not a uuid": claims["session_id"],
        "unknown session": str(uuid.uuid4()),
    }[forge]
    if forge == "sub not a uuid":
        claims["sub"] = "not-a-uuid"
    token = server.keys.sign(claims)
    with api(server, token) as client:
        read = client.get(f"/rest/v1/profiles?id=eq.{user.id}")
        stored = client.post(f"/storage/v1/object/avatars/{user.id}-forged.png", content=PNG,
                             headers={"Content-Type": "image/png"})
    assert read.status_code == 401 and read.json()["code"] == "PGRST303", read.text
    assert stored.status_code == 400 and stored.json()["code"] == "InvalidJWT", stored.text
    assert not object_exists(server, f"{user.id}-forged.png")
    assert_works(server, user, user.first)


def test_the_web_app_refuses_an_ended_session_too(server: RunningServer, auth: Auth, admin: Auth) -> None:
    user = new_user(server, auth)
    with httpx.Client(base_url=server.url, follow_redirects=False, timeout=15) as browser:
        browser.get("/login")
        csrf = browser.cookies["gh-csrf"]
        signed_in = browser.post("/login", data={"csrf": csrf, "email": user.email, "password": PASSWORD,
                                                 "action": "login"})
        assert signed_in.status_code == 303 and signed_in.headers["location"] == "/account"
        assert browser.get("/account").status_code == 200
        assert admin.put(f"/admin/users/{user.id}", {"ban_duration": "1h"}).status_code == 200
        assert browser.get("/account").headers["location"] == "/login"
        photo = browser.post("/account/avatar", data={"csrf": csrf}, files={"avatar": ("a.png", PNG, "image/png")})
        assert photo.status_code == 303 and photo.headers["location"] == "/login"
