"""Sign-up and confirmation over the wire: shapes, mail, enumeration safety, bad input."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest

from gatehouse.core.db import Database
from tests.auth.helpers import CODE, PASSWORD, Auth, new_email, shape
from tests.support import RunningServer


@pytest.fixture(scope="module")
def auth(server_factory: Callable[..., RunningServer]) -> Iterator[Auth]:
    client = Auth(server_factory(env={"GATEHOUSE_RATE_LIMITS_ENABLED": "false"}))
    yield client
    client.close()


def test_sign_up_returns_a_user_without_session_and_mails_link_and_code(auth: Auth) -> None:
    email = new_email()
    response = auth.sign_up(email.upper(), data={"full_name": "Grace Hopper"})
    assert response.status_code == 200
    user = response.json()
    assert "access_token" not in user
    assert user["email"] == email  # lower-cased
    assert user["aud"] == "authenticated" and user["role"] == "authenticated"
    assert user["app_metadata"] == {"provider": "email", "providers": ["email"]}
    assert user["user_metadata"] == {"full_name": "Grace Hopper"}
    assert "confirmation_sent_at" in user and "email_confirmed_at" not in user
    (identity,) = user["identities"]
    assert identity["identity_data"]["email_verified"] is False and identity["provider"] == "email"

    (message,) = auth.messages(email)
    assert message["subject"] == "Confirm your email address"
    assert f"{auth.server.url}/auth/confirm?token_hash=" in message["text"] and "&type=email" in message["text"]
    code = CODE.search(message["text"])
    assert code and code.group(1) in message["html"]
    token_hash = message["text"].split("token_hash=")[1].split("&")[0]
    assert token_hash in message["html"]


async def test_sign_up_creates_the_profile_and_an_audit_entry(auth: Auth, db: Database) -> None:
    email = new_email()
    user = auth.sign_up(email, data={"full_name": "Profile Person", "avatar_url": "p.png"}).json()
    profile = await db.admin.fetchrow("SELECT full_name, avatar_url FROM public.profiles WHERE id = $1::uuid", user["id"])
    assert dict(profile) == {"full_name": "Profile Person", "avatar_url": "p.png"}
    actions = await db.admin.fetch(
        "SELECT payload->>'action' AS action FROM auth.audit_log_entries WHERE payload->>'actor_id' = $1", user["id"]
    )
    assert [row["action"] for row in actions] == ["user_signedup"]


async def test_tokens_and_codes_are_stored_hashed(auth: Auth, db: Database) -> None:
    email = new_email()
    auth.sign_up(email)
    token_hash, _ = auth.latest_link(email)
    code = CODE.search(auth.messages(email)[0]["text"])
    assert code
    stored = await db.admin.fetchval(
        "SELECT token_hash FROM auth.one_time_tokens t JOIN auth.users u ON u.id = t.user_id WHERE u.email = $1", email
    )
    assert stored not in (token_hash, token_hash.removeprefix("pkce_"), code.group(1))
    password = await db.admin.fetchval("SELECT encrypted_password FROM auth.users WHERE email = $1", email)
    assert password.startswith("$argon2id$v=19$m=19456,t=2,p=1$")


def test_existing_address_gets_an_indistinguishable_answer(auth: Auth) -> None:
    taken, _ = auth.confirmed_user()
    fresh = new_email()
    for_taken = auth.sign_up(taken, data={"x": 1})
    for_fresh = auth.sign_up(fresh, data={"x": 1})
    assert for_taken.status_code == for_fresh.status_code == 200
    assert shape(for_taken.json()) == shape(for_fresh.json())
    assert len(for_taken.json()["identities"]) == len(for_fresh.json()["identities"]) == 1
    assert for_taken.json()["email"] == taken
    # and the owner hears about it instead
    assert auth.messages(taken)[0]["subject"] == "You already have an account"


async def test_a_second_sign_up_of_an_unconfirmed_address_starts_over(auth: Auth, db: Database) -> None:
    """Pre-account takeover: the attacker's pending password and metadata must not survive the
    victim's sign-up and confirmation, and the answer must not show the attacker's registration."""
    email = new_email("victim")
    attacker = auth.sign_up(email, "the attackers passphrase", data={"full_name": "Mallory", "avatar_url": "m.png"})
    attacker_link, _ = auth.latest_link(email)
    attacker_code = CODE.search(auth.messages(email)[0]["text"])
    assert attacker_code

    victim = auth.sign_up(email, PASSWORD, data={"full_name": "Victor"})
    assert victim.status_code == 200
    answer = victim.json()
    assert answer["id"] != attacker.json()["id"] and answer["created_at"] != attacker.json()["created_at"]
    assert answer["user_metadata"] == {"full_name": "Victor"}
    assert shape(answer) == shape(auth.sign_up(new_email(), data={"full_name": "Other"}).json())
    assert len(auth.messages(email)) == 2
    victim_link, _ = auth.latest_link(email)
    assert victim_link != attacker_link

    # the attacker's link and code are dead
    assert auth.post("/verify", {"type": "email", "token_hash": attacker_link}).json()["code"] == "otp_expired"
    dead = auth.post("/verify", {"type": "email", "email": email, "token": attacker_code.group(1)})
    assert dead.json()["code"] == "otp_expired"
    # the victim confirms from the mailbox: only the victim's password works
    session = auth.post("/verify", {"type": "email", "token_hash": victim_link}).json()
    assert session["user"]["id"] == answer["id"] and session["user"]["user_metadata"] == {"full_name": "Victor"}
    assert auth.log_in(email, "the attackers passphrase").json()["code"] == "invalid_credentials"
    assert auth.log_in(email, PASSWORD).status_code == 200
    profile = await db.admin.fetchrow("SELECT full_name, avatar_url FROM public.profiles WHERE id = $1::uuid", answer["id"])
    assert dict(profile) == {"full_name": "Victor", "avatar_url": None}
    assert await db.admin.fetchval("SELECT count(*) FROM auth.users WHERE email = $1", email) == 1


def test_a_sign_up_after_the_victims_kills_the_victims_link_not_the_rule(auth: Auth) -> None:
    """Whoever signs up last owns the only live link; confirming it activates that sign-up's password."""
    email = new_email()
    auth.sign_up(email, PASSWORD)
    first_link, _ = auth.latest_link(email)
    auth.sign_up(email, "a second passphrase here")
    second_link, _ = auth.latest_link(email)
    assert auth.post("/verify", {"type": "email", "token_hash": first_link}).json()["code"] == "otp_expired"
    assert auth.post("/verify", {"type": "email", "token_hash": second_link}).status_code == 200
    assert auth.log_in(email, PASSWORD).status_code == 400
    assert auth.log_in(email, "a second passphrase here").status_code == 200


async def test_a_sign_up_kept_by_an_application_table_starts_over_in_place(auth: Auth, db: Database) -> None:
    """An application's table that refers to users without ON DELETE CASCADE keeps the row: the
    sign-up is reset in place (same id, new password and metadata) and the answer is a lookalike."""
    await db.admin.execute(
        "CREATE TABLE IF NOT EXISTS public.app_notes (user_id uuid NOT NULL REFERENCES auth.users (id), note text)"
    )
    email = new_email()
    first = auth.sign_up(email, "the attackers passphrase", data={"role": "admin"}).json()
    await db.admin.execute("INSERT INTO public.app_notes VALUES ($1::uuid, 'kept')", first["id"])
    old_link, _ = auth.latest_link(email)
    again = auth.sign_up(email, PASSWORD, data={"x": 1})
    assert again.status_code == 200 and again.json()["id"] != first["id"] and again.json()["user_metadata"] == {"x": 1}
    assert auth.post("/verify", {"type": "email", "token_hash": old_link}).json()["code"] == "otp_expired"
    link, _ = auth.latest_link(email)
    session = auth.post("/verify", {"type": "email", "token_hash": link}).json()
    assert session["user"]["id"] == first["id"] and session["user"]["user_metadata"] == {"x": 1}
    assert auth.log_in(email, "the attackers passphrase").status_code == 400
    assert auth.log_in(email, PASSWORD).status_code == 200


async def test_a_magic_link_for_an_unconfirmed_address_drops_the_pending_password(auth: Auth, db: Database) -> None:
    email = new_email()
    auth.sign_up(email, "the attackers passphrase", data={"full_name": "Mallory"})
    assert auth.post("/otp", {"email": email}).status_code == 200
    link, link_type = auth.latest_link(email)
    assert link_type == "email"
    session = auth.post("/verify", {"type": "email", "token_hash": link}).json()
    assert session["user"]["user_metadata"] == {}
    assert auth.log_in(email, "the attackers passphrase").json()["code"] == "invalid_credentials"
    assert await db.admin.fetchval("SELECT full_name FROM public.profiles WHERE id = $1::uuid", session["user"]["id"]) is None


def test_a_reset_for_an_unconfirmed_address_sends_nothing(auth: Auth) -> None:
    email = new_email()
    auth.sign_up(email, "the attackers passphrase")
    assert auth.post("/recover", {"email": email}).json() == {}
    assert [message["subject"] for message in auth.messages(email)] == ["Confirm your email address"]


def test_a_newer_link_replaces_the_older_one(auth: Auth) -> None:
    email = new_email()
    auth.sign_up(email)
    old, _ = auth.latest_link(email)
    auth.post("/resend", {"type": "signup", "email": email})
    new, _ = auth.latest_link(email)
    assert old != new
    assert auth.post("/verify", {"type": "email", "token_hash": old}).json()["code"] == "otp_expired"
    assert auth.post("/verify", {"type": "email", "token_hash": new}).status_code == 200


@pytest.mark.parametrize(
    ("password", "status", "code", "reasons"),
    [
        ("short", 422, "weak_password", ["length"]),
        ("password123", 422, "weak_password", ["pwned"]),
        ("x" * 73, 400, "validation_failed", None),
        ("", 400, "validation_failed", None),
    ],
)
def test_weak_passwords_are_refused_with_reasons(
    auth: Auth, password: str, status: int, code: str, reasons: list[str] | None
) -> None:
    email = new_email()
    response = auth.sign_up(email, password)
    assert response.status_code == status
    assert response.json()["code"] == code
    if reasons is not None:
        assert response.json()["weak_password"]["reasons"] == reasons
        assert response.json()["message"]
    assert auth.messages(email) == []  # nothing half-done


@pytest.mark.parametrize(
    ("content", "status", "code"),
    [
        (b"{not json", 400, "bad_json"),
        (b"[1, 2]", 400, "bad_json"),
        (b'"a string"', 400, "bad_json"),
        (b'{"email": 42, "password": "a long passphrase"}', 400, "validation_failed"),
        (b'{"email": "not-an-email", "password": "a long passphrase"}', 400, "email_address_invalid"),
        (b'{"email": "a@example.com", "password": "a long passphrase", "data": "x"}', 400, "validation_failed"),
        (b'{"email": "a@example.com", "password": ["a long passphrase"]}', 400, "validation_failed"),
        (b'{"email": "' + b"a" * 300 + b'@example.com", "password": "a long passphrase"}', 400, "email_address_invalid"),
        (b'{"password": "a long passphrase"}', 422, "anonymous_provider_disabled"),
        (b'{"phone": "+15551234567", "password": "a long passphrase"}', 422, "phone_provider_disabled"),
        (b'{"email": "a\\u0000b@example.com", "password": "a long passphrase"}', 400, "validation_failed"),
    ],
)
def test_malformed_bodies_get_clear_4xx(auth: Auth, content: bytes, status: int, code: str) -> None:
    response = auth.http.post("/signup", content=content, headers={"Content-Type": "application/json"})
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code and body["message"]


def test_oversized_body_is_413(auth: Auth) -> None:
    response = auth.http.post("/signup", content=b'{"email": "' + b"a" * 2_000_000 + b'"}')
    assert response.status_code == 413
    assert response.json()["code"] == "request_too_large"


def test_signup_disabled(server_factory: Callable[..., RunningServer]) -> None:
    closed = Auth(server_factory(env={"GATEHOUSE_DISABLE_SIGNUP": "true"}))
    try:
        response = closed.sign_up(new_email())
        assert response.status_code == 422 and response.json()["code"] == "signup_disabled"
        assert closed.get("/settings").json()["disable_signup"] is True
    finally:
        closed.close()


def test_autoconfirm_signs_in_at_once(server_factory: Callable[..., RunningServer]) -> None:
    auto = Auth(server_factory(env={"GATEHOUSE_MAILER_AUTOCONFIRM": "true", "GATEHOUSE_RATE_LIMITS_ENABLED": "false"}))
    try:
        email = new_email()
        session = auto.sign_up(email).json()
        assert session["access_token"] and session["refresh_token"] and session["user"]["email_confirmed_at"]
        assert auto.messages(email) == []
        again = auto.sign_up(email)
        assert again.status_code == 422 and again.json()["code"] == "user_already_exists"
    finally:
        auto.close()


def test_settings_tell_what_is_on(auth: Auth) -> None:
    settings = auth.get("/settings").json()
    assert settings["external"]["email"] is True and settings["external"]["phone"] is False
    assert settings["mailer_autoconfirm"] is False and settings["disable_signup"] is False


def test_inbox_page_lists_mail(auth: Auth) -> None:
    email = new_email("inbox")
    auth.sign_up(email)
    page = httpx.get(f"{auth.server.url}/_inbox")
    assert page.status_code == 200 and email in page.text
