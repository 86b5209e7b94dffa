"""Email links and codes: single use, expiry, types, GET redirects, PKCE, recovery, magic links, email change."""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest

from gatehouse.core.db import Database
from tests.auth.helpers import CODE, PASSWORD, Auth, new_email
from tests.support import RunningServer


@pytest.fixture(scope="module")
def auth(server_factory: Callable[..., RunningServer]) -> Iterator[Auth]:
    client = Auth(server_factory(env={"GATEHOUSE_RATE_LIMITS_ENABLED": "false"}))
    yield client
    client.close()


def test_link_works_once(auth: Auth) -> None:
    email = new_email()
    auth.sign_up(email)
    token_hash, _ = auth.latest_link(email)
    assert auth.post("/verify", {"type": "email", "token_hash": token_hash}).status_code == 200
    again = auth.post("/verify", {"type": "email", "token_hash": token_hash})
    assert again.status_code == 403 and again.json()["code"] == "otp_expired"


async def test_expired_link_is_refused(auth: Auth, db: Database) -> None:
    email = new_email()
    auth.sign_up(email)
    token_hash, _ = auth.latest_link(email)
    await db.admin.execute(
        "UPDATE auth.one_time_tokens SET expires_at = now() - interval '1 second' "
        "WHERE user_id = (SELECT id FROM auth.users WHERE email = $1)",
        email,
    )
    response = auth.post("/verify", {"type": "email", "token_hash": token_hash})
    assert response.status_code == 403 and response.json()["code"] == "otp_expired"
    assert auth.log_in(email).json()["code"] == "email_not_confirmed"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"type": "email", "token_hash": "0" * 56}, 403, "otp_expired"),
        ({"type": "recovery", "token_hash": "REAL"}, 403, "otp_expired"),  # a signup token is not a recovery token
        ({"type": "email", "token_hash": "REAL", "email": "x@example.com"}, 400, "validation_failed"),
        ({"type": "teleport", "token_hash": "REAL"}, 400, "validation_failed"),
        ({"type": "email"}, 400, "validation_failed"),
        ({"type": "email", "email": "x@example.com", "token": "000000"}, 403, "otp_expired"),
        ({"token_hash": "REAL"}, 400, "validation_failed"),
    ],
)
def test_bad_verifications(auth: Auth, body: dict[str, str], status: int, code: str) -> None:
    email = new_email()
    auth.sign_up(email)
    real, _ = auth.latest_link(email)
    body = {key: (real if value == "REAL" else value) for key, value in body.items()}
    response = auth.post("/verify", body)
    assert response.status_code == status, response.text
    assert response.json()["code"] == code
    assert auth.post("/verify", {"type": "email", "token_hash": real}).status_code == 200  # still unused


def test_code_from_the_email_verifies(auth: Auth) -> None:
    email = new_email()
    auth.sign_up(email)
    code = CODE.search(auth.messages(email)[0]["text"])
    assert code
    wrong = "000000" if code.group(1) != "000000" else "111111"
    assert auth.post("/verify", {"type": "email", "email": email, "token": wrong}).status_code == 403
    session = auth.post("/verify", {"type": "signup", "email": email.upper(), "token": code.group(1)}).json()
    assert session["user"]["email"] == email and session["user"]["identities"][0]["identity_data"]["email_verified"]


def _signed_up_with_code(auth: Auth) -> tuple[str, str, str]:
    """A new sign-up's (email, link token, code)."""
    email = new_email()
    auth.sign_up(email)
    link, _ = auth.latest_link(email)
    code = CODE.search(auth.messages(email)[0]["text"])
    assert code
    return email, link, code.group(1)


def _wrong(code: str, n: int) -> str:
    return f"{(int(code) + 1 + n) % 1_000_000:06d}"


def test_the_link_token_is_random_not_derived_from_the_code(auth: Auth) -> None:
    email, link, code = _signed_up_with_code(auth)
    derived = hashlib.sha224((email + code).encode()).hexdigest()  # GoTrue's token_hash
    assert link != derived and len(link) == 32 and int(link, 16) >= 0
    refused = auth.post("/verify", {"type": "email", "token_hash": derived})
    assert refused.status_code == 403 and refused.json()["code"] == "otp_expired"
    by_get = auth.http.get("/verify", params={"token": derived, "type": "signup"})
    assert parse_qs(urlsplit(by_get.headers["location"]).fragment)["error_code"] == ["otp_expired"]
    assert auth.post("/verify", {"type": "email", "token_hash": link}).status_code == 200
    assert auth.post("/verify", {"type": "email", "token_hash": link}).json()["code"] == "otp_expired"


async def test_wrong_codes_are_counted_per_address_whatever_the_client(auth: Auth, db: Database) -> None:
    """Five wrong codes from five client addresses, in every form, kill the code (not the link)."""
    email, link, code = _signed_up_with_code(auth)
    forms = [
        {"type": "email", "email": email},
        {"type": "signup", "email": email.upper()},
        {"type": "email", "email": f"  {email} "},
        {"type": "magiclink", "email": email},
        {"type": "signup", "email": email},
    ]
    for n, form in enumerate(forms):
        other = Auth(auth.server, source_ip=f"127.0.0.{n + 2}")
        try:
            guess = _wrong(code, n)
            derived = hashlib.sha224((email + guess).encode()).hexdigest()
            assert other.post("/verify", {"type": "email", "token_hash": derived}).json()["code"] == "otp_expired"
            assert other.post("/verify", {**form, "token": guess}).json()["code"] == "otp_expired"
        finally:
            other.close()
    last = Auth(auth.server, source_ip="127.0.0.9")
    try:
        right = last.post("/verify", {"type": "email", "email": email, "token": code})
        assert right.status_code == 403 and right.json()["code"] == "otp_expired"
        derived = hashlib.sha224((email + code).encode()).hexdigest()
        assert last.post("/verify", {"type": "email", "token_hash": derived}).json()["code"] == "otp_expired"
        assert last.post("/verify", {"type": "email", "token_hash": link}).status_code == 200  # the link still works
    finally:
        last.close()
    assert await db.admin.fetchval(
        "SELECT count(*) FROM auth.one_time_tokens WHERE relates_to = $1", email
    ) == 0


async def test_concurrent_guesses_are_all_counted(auth: Auth, db: Database) -> None:
    email, _, code = _signed_up_with_code(auth)
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(
            lambda n: auth.post("/verify", {"type": "email", "email": email, "token": _wrong(code, n)}).status_code,
            range(16),
        ))
    assert answers == [403] * 16
    row = await db.admin.fetchrow(
        "SELECT failed_attempts, code_hash FROM auth.one_time_tokens WHERE relates_to = $1", email
    )
    assert row["failed_attempts"] == 5 and row["code_hash"] is None
    assert auth.post("/verify", {"type": "email", "email": email, "token": code}).json()["code"] == "otp_expired"


def test_under_the_limit_the_code_works_and_a_new_email_starts_a_new_count(auth: Auth) -> None:
    email, _, code = _signed_up_with_code(auth)
    for n in range(5):
        auth.post("/verify", {"type": "email", "email": email, "token": _wrong(code, n)})
    auth.post("/resend", {"type": "signup", "email": email})
    fresh = CODE.search(auth.messages(email)[0]["text"])
    assert fresh
    for n in range(4):
        assert auth.post("/verify", {"type": "email", "email": email, "token": _wrong(fresh.group(1), n)}).status_code == 403
    assert auth.post("/verify", {"type": "email", "email": email, "token": fresh.group(1)}).status_code == 200


def test_a_code_works_only_for_the_address_it_was_mailed_to(auth: Auth) -> None:
    first, _, first_code = _signed_up_with_code(auth)
    second, _, _ = _signed_up_with_code(auth)
    assert auth.post("/verify", {"type": "email", "email": second, "token": first_code}).json()["code"] == "otp_expired"
    assert auth.post("/verify", {"type": "email", "email": first, "token": first_code}).status_code == 200


def test_get_verify_redirects_with_the_session_in_the_fragment(auth: Auth) -> None:
    email = new_email()
    auth.sign_up(email)
    token_hash, _ = auth.latest_link(email)
    target = f"{auth.server.url}/welcome"
    response = auth.http.get("/verify", params={"token": token_hash, "type": "signup", "redirect_to": target})
    assert response.status_code == 303
    location = urlsplit(response.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == target
    fragment = parse_qs(location.fragment)
    assert fragment["token_type"] == ["bearer"] and fragment["type"] == ["signup"]
    claims = jwt.decode(fragment["access_token"][0], options={"verify_signature": False})
    assert claims["email"] == email and fragment["refresh_token"][0]


def test_get_verify_errors_go_to_the_fragment_and_foreign_redirects_to_the_site(auth: Auth) -> None:
    response = auth.http.get(
        "/verify", params={"token": "f" * 56, "type": "signup", "redirect_to": "https://evil.example/steal"}
    )
    assert response.status_code == 303
    location = urlsplit(response.headers["location"])
    assert location.netloc == urlsplit(auth.server.url).netloc  # not evil.example
    assert parse_qs(location.fragment)["error_code"] == ["otp_expired"]


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def test_pkce_link_gives_a_code_exchanged_with_the_verifier(auth: Auth) -> None:
    email = new_email()
    _verifier, challenge = pkce_pair()
    auth.sign_up(email, code_challenge=challenge, code_challenge_method="s256")
    token_hash, _ = auth.latest_link(email)
    assert token_hash.startswith("pkce_")
    response = auth.http.get("/verify", params={"token": token_hash, "type": "signup", "redirect_to": auth.server.url})
    code = parse_qs(urlsplit(response.headers["location"]).query)["code"][0]

    wrong = auth.post("/token?grant_type=pkce", {"auth_code": code, "code_verifier": "x" * 43})
    assert wrong.status_code == 400 and wrong.json()["code"] == "bad_code_verifier"

    verifier2, challenge2 = pkce_pair()
    email2 = new_email()
    auth.sign_up(email2, code_challenge=challenge2, code_challenge_method="s256")
    link2, _ = auth.latest_link(email2)
    code2 = parse_qs(urlsplit(auth.http.get("/verify", params={"token": link2, "type": "signup"}).headers["location"]).query)["code"][0]
    session = auth.post("/token?grant_type=pkce", {"auth_code": code2, "code_verifier": verifier2})
    assert session.status_code == 200 and session.json()["user"]["email"] == email2
    reused = auth.post("/token?grant_type=pkce", {"auth_code": code2, "code_verifier": verifier2})
    assert reused.status_code == 404 and reused.json()["code"] == "flow_state_not_found"


def test_recovery_for_unknown_and_known_addresses_answers_the_same(auth: Auth) -> None:
    email, _ = auth.confirmed_user()
    known = auth.post("/recover", {"email": email})
    unknown = auth.post("/recover", {"email": new_email("nobody")})
    assert known.status_code == unknown.status_code == 200
    assert known.json() == unknown.json() == {}
    token_hash, link_type = auth.latest_link(email)
    assert link_type == "recovery"
    session = auth.post("/verify", {"type": "recovery", "token_hash": token_hash}).json()
    assert session["user"]["email"] == email
    assert jwt.decode(session["access_token"], options={"verify_signature": False})["amr"][0]["method"] == "recovery"


def test_otp_creates_the_user_and_then_sends_magic_links(auth: Auth) -> None:
    email = new_email("otp")
    assert auth.post("/otp", {"email": email, "data": {"full_name": "Otp"}}).json() == {}
    token_hash, link_type = auth.latest_link(email)
    assert link_type == "email"  # a new address confirms first
    first = auth.post("/verify", {"type": "email", "token_hash": token_hash}).json()
    assert first["user"]["user_metadata"] == {"full_name": "Otp"}
    auth.post("/otp", {"email": email})
    magic, link_type = auth.latest_link(email)
    assert link_type == "magiclink"
    assert auth.post("/verify", {"type": "magiclink", "token_hash": magic}).status_code == 200


def test_otp_without_create_user_refuses_unknown_addresses(auth: Auth) -> None:
    response = auth.post("/otp", {"email": new_email(), "create_user": False})
    assert response.status_code == 422 and response.json()["code"] == "otp_disabled"


def test_resend_is_silent_when_nothing_is_pending(auth: Auth) -> None:
    email, _ = auth.confirmed_user()
    before = len(auth.messages(email))
    assert auth.post("/resend", {"type": "signup", "email": email}).json() == {}
    assert auth.post("/resend", {"type": "signup", "email": new_email()}).json() == {}
    assert len(auth.messages(email)) == before
    assert auth.post("/resend", {"type": "carrier-pigeon", "email": email}).status_code == 400


def test_update_metadata(auth: Auth) -> None:
    _, session = auth.confirmed_user()
    token = session["access_token"]
    assert auth.put("/user", {"data": {"a": 1, "b": 2}}, token=token).json()["user_metadata"] == {"a": 1, "b": 2}
    assert auth.put("/user", {"data": {"a": None, "c": 3}}, token=token).json()["user_metadata"] == {"b": 2, "c": 3}


def test_password_change_rules(auth: Auth) -> None:
    email, session = auth.confirmed_user()
    token = session["access_token"]
    same = auth.put("/user", {"password": PASSWORD}, token=token)
    assert same.status_code == 422 and same.json()["code"] == "same_password"
    weak = auth.put("/user", {"password": "123"}, token=token)
    assert weak.status_code == 422 and weak.json()["code"] == "weak_password"

    # a session signed in long ago must prove it knows the current password
    claims = jwt.decode(token, options={"verify_signature": False})
    stale = auth.server.keys.sign(claims | {"amr": [{"method": "password", "timestamp": int(time.time()) - 90000}]})
    refused = auth.put("/user", {"password": "a different passphrase"}, token=stale)
    assert refused.status_code == 400 and refused.json()["code"] == "reauthentication_needed"
    wrong = auth.put("/user", {"password": "a different passphrase", "current_password": "nope"}, token=stale)
    assert wrong.status_code == 400 and wrong.json()["code"] == "invalid_credentials"

    other = auth.log_in(email).json()
    changed = auth.put("/user", {"password": "a different passphrase", "current_password": PASSWORD}, token=stale)
    assert changed.status_code == 200
    assert auth.log_in(email, "a different passphrase").status_code == 200
    assert auth.log_in(email).status_code == 400
    # other sessions end with the old password
    assert auth.get("/user", token=other["access_token"]).json()["code"] == "session_not_found"
    assert auth.get("/user", token=token).status_code == 200


def test_secure_email_change_needs_both_addresses(auth: Auth) -> None:
    old_email, session = auth.confirmed_user()
    token = session["access_token"]
    target = new_email("moved")
    user = auth.put("/user", {"email": target}, token=token).json()
    assert user["email"] == old_email and user["new_email"] == target
    to_new, kind = auth.latest_link(target)
    to_old, _ = auth.latest_link(old_email)
    assert kind == "email_change" and to_new != to_old

    first = auth.post("/verify", {"type": "email_change", "token_hash": to_new})
    assert first.json() == {
        "msg": "Confirmation link accepted. Please proceed to confirm link sent to the other email", "code": "200"
    }
    assert auth.get("/user", token=token).json()["email"] == old_email
    second = auth.post("/verify", {"type": "email_change", "token_hash": to_old}).json()
    assert second["user"]["email"] == target and "new_email" not in second["user"]
    assert auth.log_in(target).status_code == 200
    assert auth.log_in(old_email).status_code == 400


def test_email_change_to_a_taken_address(auth: Auth) -> None:
    taken, _ = auth.confirmed_user()
    _, session = auth.confirmed_user()
    response = auth.put("/user", {"email": taken}, token=session["access_token"])
    assert response.status_code == 422 and response.json()["code"] == "email_exists"


def test_a_deleted_user_loses_access(auth: Auth) -> None:
    _, session = auth.confirmed_user()
    admin = Auth(auth.server, auth.server.keys.secret_key)
    try:
        assert admin.http.request("DELETE", f"/admin/users/{session['user']['id']}", json={}).status_code == 200
    finally:
        admin.close()
    assert auth.get("/user", token=session["access_token"]).json()["code"] == "user_not_found"
    assert auth.refresh(session["refresh_token"]).status_code == 400
    assert str(uuid.UUID(session["user"]["id"]))
