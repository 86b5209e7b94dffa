"""Log-in, access tokens, refresh rotation, sign-out, and the user endpoint."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from gatehouse.auth import users
from gatehouse.auth.sessions import Sessions
from gatehouse.auth.tokens import AccessTokens, RefreshTokens
from gatehouse.core.config import Settings
from gatehouse.core.db import Database
from gatehouse.core.keys import JWTVerifier, KeySet
from tests.auth.helpers import PASSWORD, Auth, new_email
from tests.support import RunningServer


@pytest.fixture(scope="module")
def auth(server_factory: Callable[..., RunningServer]) -> Iterator[Auth]:
    client = Auth(server_factory(env={"GATEHOUSE_RATE_LIMITS_ENABLED": "false"}))
    yield client
    client.close()


@pytest.fixture(scope="module")
def strict(server_factory: Callable[..., RunningServer]) -> Iterator[Auth]:
    """A server whose rotated refresh tokens may not be reused at all."""
    client = Auth(
        server_factory(env={"GATEHOUSE_RATE_LIMITS_ENABLED": "false", "GATEHOUSE_REFRESH_TOKEN_REUSE_INTERVAL": "0"})
    )
    yield client
    client.close()


def claims_of(token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})


def test_password_log_in_returns_a_session_with_supabase_claims(auth: Auth) -> None:
    email, _ = auth.confirmed_user()
    response = auth.log_in(email)
    assert response.status_code == 200
    session = response.json()
    assert session["token_type"] == "bearer" and session["expires_in"] == 3600
    assert session["expires_at"] == pytest.approx(time.time() + 3600, abs=10)
    assert len(session["refresh_token"]) >= 32
    header = jwt.get_unverified_header(session["access_token"])
    assert header["alg"] == "ES256" and header["kid"] == auth.server.keys.kid
    claims = claims_of(session["access_token"])
    assert set(claims) >= {"sub", "aud", "exp", "iat", "iss", "email", "phone", "role", "aal", "amr", "session_id",
                           "is_anonymous", "app_metadata", "user_metadata"}
    assert claims["aud"] == "authenticated" and claims["role"] == "authenticated" and claims["aal"] == "aal1"
    assert claims["iss"] == f"{auth.server.url}/auth/v1"
    assert claims["amr"][0]["method"] == "password" and claims["sub"] == session["user"]["id"]
    assert session["user"]["last_sign_in_at"]


@pytest.mark.parametrize("case", ["wrong password", "unknown user", "no password"])
def test_bad_credentials_say_nothing_more(auth: Auth, case: str) -> None:
    email, _ = auth.confirmed_user()
    body = {
        "wrong password": {"email": email, "password": "not the password"},
        "unknown user": {"email": new_email("ghost"), "password": PASSWORD},
        "no password": {"email": email},
    }[case]
    response = auth.post("/token?grant_type=password", body)
    assert response.status_code == 400
    assert response.json() == {
        "code": "invalid_credentials", "error_code": "invalid_credentials",
        "message": "Invalid login credentials", "msg": "Invalid login credentials",
    }


def test_unconfirmed_email_cannot_log_in(auth: Auth) -> None:
    email = new_email()
    auth.sign_up(email)
    response = auth.log_in(email)
    assert response.status_code == 400 and response.json()["code"] == "email_not_confirmed"


def test_unknown_grant_type(auth: Auth) -> None:
    response = auth.post("/token?grant_type=client_credentials", {})
    assert response.status_code == 400 and response.json()["code"] == "unsupported_grant_type"


def test_refresh_rotates_and_keeps_the_session(auth: Auth) -> None:
    _, session = auth.confirmed_user()
    first = auth.refresh(session["refresh_token"]).json()
    assert first["refresh_token"] != session["refresh_token"]
    second = auth.refresh(first["refresh_token"]).json()
    assert second["refresh_token"] not in (first["refresh_token"], session["refresh_token"])
    old, new = claims_of(session["access_token"]), claims_of(second["access_token"])
    assert old["session_id"] == new["session_id"]
    assert new["amr"] == old["amr"]  # how the session signed in survives refreshes


def test_retried_refresh_within_the_interval_gets_the_same_successor(auth: Auth) -> None:
    _, session = auth.confirmed_user()
    first = auth.refresh(session["refresh_token"]).json()
    retried = auth.refresh(session["refresh_token"]).json()
    assert retried["refresh_token"] == first["refresh_token"]
    # even after the chain moved on once more
    second = auth.refresh(first["refresh_token"]).json()
    assert auth.refresh(session["refresh_token"]).json()["refresh_token"] == second["refresh_token"]


def test_the_parent_of_the_active_token_gets_the_active_token_at_any_delay(strict: Auth) -> None:
    """As the upstream server: a client that never stored its refresh's answer sends the parent again."""
    _, session = strict.confirmed_user()
    rotated = strict.refresh(session["refresh_token"]).json()
    again = strict.refresh(session["refresh_token"])
    assert again.status_code == 200 and again.json()["refresh_token"] == rotated["refresh_token"]
    assert strict.get("/user", token=again.json()["access_token"]).status_code == 200
    nxt = strict.refresh(rotated["refresh_token"])  # the chain goes on from the active token
    assert nxt.status_code == 200 and nxt.json()["refresh_token"] != rotated["refresh_token"]


def test_reuse_of_an_older_token_after_the_interval_revokes_the_whole_session(strict: Auth) -> None:
    _, session = strict.confirmed_user()
    rotated = strict.refresh(session["refresh_token"]).json()
    active = strict.refresh(rotated["refresh_token"]).json()
    reused = strict.refresh(session["refresh_token"])  # the grandparent of the active token
    assert reused.status_code == 400 and reused.json()["code"] == "refresh_token_already_used"
    # the thief's copy killed the family: the legitimate tokens die too
    assert strict.refresh(active["refresh_token"]).json()["code"] == "refresh_token_not_found"
    assert strict.refresh(rotated["refresh_token"]).json()["code"] == "refresh_token_not_found"
    assert strict.get("/user", token=active["access_token"]).json()["code"] == "session_not_found"


@pytest.mark.parametrize(("token", "code"), [("short", "validation_failed"), ("x" * 40, "refresh_token_not_found")])
def test_bad_refresh_tokens(auth: Auth, token: str, code: str) -> None:
    response = auth.refresh(token)
    assert response.status_code == 400 and response.json()["code"] == code


def test_get_user(auth: Auth) -> None:
    email, session = auth.confirmed_user()
    response = auth.get("/user", token=session["access_token"])
    assert response.status_code == 200
    assert response.json()["email"] == email and response.json()["email_confirmed_at"]


def forged(auth: Auth, session: dict[str, Any]) -> dict[str, str]:
    claims = claims_of(session["access_token"])
    keys = auth.server.keys
    public_pem = keys.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    hs = jwt.api_jws.PyJWS(algorithms=["HS256"])
    hs._algorithms["HS256"].prepare_key = lambda key: key  # type: ignore[method-assign]

    def b64(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return {
        "alg none": b64({"alg": "none", "typ": "JWT"}) + "." + b64(claims) + ".",
        "wrong key": jwt.encode(claims, ec.generate_private_key(ec.SECP256R1()), algorithm="ES256"),
        "HS256 signed with the public key": hs.encode(json.dumps(claims).encode(), public_pem, algorithm="HS256"),
        "expired": keys.sign(claims | {"exp": int(time.time()) - 5}),
        "garbage": "abc.def.ghi",
    }


@pytest.mark.parametrize("case", ["alg none", "wrong key", "HS256 signed with the public key", "expired", "garbage"])
def test_forged_tokens_are_refused(auth: Auth, case: str) -> None:
    _, session = auth.confirmed_user()
    response = auth.get("/user", token=forged(auth, session)[case])
    assert response.status_code == 403
    assert response.json()["code"] == "bad_jwt"


def test_no_token_is_401(auth: Auth) -> None:
    response = auth.get("/user")
    assert response.status_code == 401 and response.json()["code"] == "no_authorization"
    assert auth.get("/user", token=auth.server.keys.publishable_key).status_code == 401


def test_sign_out_scopes(auth: Auth) -> None:
    email, first = auth.confirmed_user()
    second, third = auth.log_in(email).json(), auth.log_in(email).json()

    assert auth.post("/logout?scope=others", token=second["access_token"]).status_code == 204
    assert auth.get("/user", token=second["access_token"]).status_code == 200
    for ended in (first, third):
        assert auth.get("/user", token=ended["access_token"]).json()["code"] == "session_not_found"
        assert auth.refresh(ended["refresh_token"]).status_code == 400

    fourth = auth.log_in(email).json()
    assert auth.post("/logout?scope=local", token=second["access_token"]).status_code == 204
    assert auth.get("/user", token=second["access_token"]).status_code == 403
    assert auth.get("/user", token=fourth["access_token"]).status_code == 200

    assert auth.post("/logout", token=fourth["access_token"]).status_code == 204  # global by default
    assert auth.get("/user", token=fourth["access_token"]).status_code == 403

    bad = auth.post("/logout?scope=everything", token=auth.log_in(email).json()["access_token"])
    assert bad.status_code == 400 and bad.json()["code"] == "validation_failed"


async def test_bcrypt_hash_from_a_supabase_dump_logs_in_and_is_upgraded(auth: Auth, db: Database) -> None:
    import bcrypt

    email = new_email("imported")
    admin = Auth(auth.server, auth.server.keys.secret_key)
    try:
        hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode().replace("$2b$", "$2a$")
        created = admin.post("/admin/users", {"email": email, "password_hash": hashed, "email_confirm": True})
        assert created.status_code == 200, created.text
    finally:
        admin.close()
    assert auth.log_in(email).status_code == 200
    stored = await db.admin.fetchval("SELECT encrypted_password FROM auth.users WHERE email = $1", email)
    assert stored.startswith("$argon2id$")
    assert auth.log_in(email).status_code == 200


def test_weak_stored_password_is_flagged_at_log_in(auth: Auth) -> None:
    email = new_email()
    admin = Auth(auth.server, auth.server.keys.secret_key)
    try:
        admin.post("/admin/users", {"email": email, "password": "password", "email_confirm": True})
    finally:
        admin.close()
    session = auth.log_in(email, "password").json()
    assert session["weak_password"]["reasons"] == ["pwned"] or "length" in session["weak_password"]["reasons"]


async def test_every_auth_event_is_audited(auth: Auth, db: Database) -> None:
    _email, session = auth.confirmed_user()
    refreshed = auth.refresh(session["refresh_token"]).json()
    auth.put("/user", {"data": {"x": 1}}, token=refreshed["access_token"])
    auth.post("/logout", token=refreshed["access_token"])
    rows = await db.admin.fetch(
        "SELECT payload->>'action' AS action FROM auth.audit_log_entries "
        "WHERE payload->>'actor_id' = $1 ORDER BY created_at",
        session["user"]["id"],
    )
    assert [row["action"] for row in rows] == [
        "user_signedup", "user_confirmed", "token_refreshed", "user_modified", "logout"
    ]


async def test_a_session_carries_the_claims_its_access_token_verifies_to(
    db: Database, keys: KeySet, settings: Settings
) -> None:
    """The web app stores a fresh Session's claims as they are: they must be the token's."""
    sessions = Sessions(AccessTokens(keys, settings), RefreshTokens(keys), settings.refresh_token_reuse_interval)
    async with db.admin.acquire() as conn, conn.transaction():
        user = await users.create(
            conn, email=new_email(), password_hash=None, user_metadata={"full_name": "Ada"}, confirmed=True
        )
        session = await sessions.create(conn, user, method="password", ip="192.0.2.1", user_agent="test")
    assert session.claims == JWTVerifier(keys).verify(session.access_token)
    assert session.claims["sub"] == str(session.user.id)
    assert session.claims["user_metadata"] == {"full_name": "Ada"}
