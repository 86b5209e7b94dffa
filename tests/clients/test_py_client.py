"""The tutorial's auth flow through the unmodified supabase-py client, against a live Gatehouse.

Mail is read the two ways a developer would: from a real SMTP server, and from /_inbox.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator

import httpx
import pytest
from supabase import Client, create_client
from supabase_auth.errors import AuthApiError

from tests.smtp import SMTPServer, smtp_env
from tests.support import RunningServer

PASSWORD = "a long passphrase 4 tests"
LINK = re.compile(r"/auth/confirm\?token_hash=([\w-]+)&type=(\w+)")


@pytest.fixture(scope="module")
def mailing_server(server_factory: Callable[..., RunningServer], module_smtp: SMTPServer) -> RunningServer:
    return server_factory(
        env={
            **smtp_env(module_smtp.port),
            "GATEHOUSE_RATE_LIMITS_ENABLED": "false",
        }
    )


@pytest.fixture(scope="module")
def inbox_server(server_factory: Callable[..., RunningServer]) -> RunningServer:
    return server_factory(env={"GATEHOUSE_RATE_LIMITS_ENABLED": "false"})


_opened: list[Client] = []


def client(server: RunningServer, key: str | None = None) -> Client:
    created = create_client(server.url, key or server.keys.publishable_key)
    _opened.append(created)
    return created


@pytest.fixture(autouse=True)
def close_clients() -> Iterator[None]:
    """supabase.Client has no close(); its auth clients do, and own the HTTP connections."""
    yield
    while _opened:
        opened = _opened.pop()
        opened.auth.admin.close()
        opened.auth.close()


def tutorial_flow(server: RunningServer, read_link: Callable[[str], tuple[str, str]]) -> None:
    email = f"py-{uuid.uuid4().hex[:8]}@example.com"
    supabase = client(server)
    signed_up = supabase.auth.sign_up(
        {"email": email, "password": PASSWORD, "options": {"data": {"full_name": "Ada Lovelace"}}}
    )
    assert signed_up.session is None and signed_up.user is not None  # confirmation first
    token_hash, link_type = read_link(email)
    assert link_type == "email"

    verified = supabase.auth.verify_otp({"token_hash": token_hash, "type": "email"})
    assert verified.session is not None and verified.user is not None
    assert verified.user.id == signed_up.user.id and verified.user.email_confirmed_at is not None

    me = supabase.auth.get_user()
    assert me is not None and me.user.id == signed_up.user.id
    assert me.user.user_metadata["full_name"] == "Ada Lovelace"

    old = supabase.auth.get_session()
    assert old is not None
    refreshed = supabase.auth.refresh_session()
    assert refreshed.session is not None and refreshed.session.refresh_token != old.refresh_token

    supabase.auth.sign_out()
    for stale in (old.refresh_token, refreshed.session.refresh_token):
        with pytest.raises(AuthApiError) as refused:
            client(server).auth.refresh_session(stale)
        assert refused.value.status == 400

    # the same token link cannot be used twice
    with pytest.raises(AuthApiError) as reused:
        client(server).auth.verify_otp({"token_hash": token_hash, "type": "email"})
    assert reused.value.code == "otp_expired"


def test_tutorial_flow_with_mail_from_smtp(mailing_server: RunningServer, module_smtp: SMTPServer) -> None:
    def read_link(email: str) -> tuple[str, str]:
        before = len(module_smtp.received)
        for received in module_smtp.wait_for_sync(before if before else 1):
            if email in received.recipients:
                body = received.email.get_body(("plain",))
                assert body is not None
                text = body.get_content()
                code = re.search(r"\b(\d{6})\b", text)
                assert code, "the email carries the 6-digit code"
                match = LINK.search(text)
                assert match
                return match.group(1), match.group(2)
        raise AssertionError(f"no email to {email}")

    tutorial_flow(mailing_server, read_link)
    sent = [r for r in module_smtp.received if r.email["Subject"] == "Confirm your email address"]
    assert sent and sent[-1].email["From"].endswith("<noreply@localhost>")


def test_tutorial_flow_with_mail_from_the_inbox(inbox_server: RunningServer) -> None:
    def read_link(email: str) -> tuple[str, str]:
        messages = httpx.get(f"{inbox_server.url}/_inbox/messages", params={"to": email}).json()["messages"]
        match = LINK.search(messages[0]["text"])
        assert match
        return match.group(1), match.group(2)

    tutorial_flow(inbox_server, read_link)


def test_verify_with_the_emailed_code(inbox_server: RunningServer) -> None:
    email = f"code-{uuid.uuid4().hex[:8]}@example.com"
    supabase = client(inbox_server)
    supabase.auth.sign_up({"email": email, "password": PASSWORD})
    text = httpx.get(f"{inbox_server.url}/_inbox/messages", params={"to": email}).json()["messages"][0]["text"]
    code = re.search(r"code: (\d{6})", text)
    assert code
    verified = supabase.auth.verify_otp({"email": email, "token": code.group(1), "type": "email"})
    assert verified.session is not None


def test_password_login_magic_link_and_recovery(inbox_server: RunningServer) -> None:
    email = f"login-{uuid.uuid4().hex[:8]}@example.com"
    supabase = client(inbox_server)
    supabase.auth.sign_up({"email": email, "password": PASSWORD})
    with pytest.raises(AuthApiError) as unconfirmed:
        supabase.auth.sign_in_with_password({"email": email, "password": PASSWORD})
    assert unconfirmed.value.code == "email_not_confirmed"

    def newest(kind_hint: str) -> tuple[str, str]:
        messages = httpx.get(f"{inbox_server.url}/_inbox/messages", params={"to": email}).json()["messages"]
        match = LINK.search(messages[0]["text"])
        assert match, messages[0]["text"]
        assert match.group(2) == kind_hint
        return match.group(1), match.group(2)

    supabase.auth.verify_otp({"token_hash": newest("email")[0], "type": "email"})
    session = supabase.auth.sign_in_with_password({"email": email, "password": PASSWORD})
    assert session.session is not None

    supabase.auth.sign_in_with_otp({"email": email})  # a confirmed user gets a magic link
    magic = client(inbox_server).auth.verify_otp({"token_hash": newest("magiclink")[0], "type": "magiclink"})
    assert magic.session is not None

    supabase.auth.reset_password_for_email(email)
    recovered = client(inbox_server)
    recovery = recovered.auth.verify_otp({"token_hash": newest("recovery")[0], "type": "recovery"})
    assert recovery.session is not None
    recovered.auth.update_user({"password": "a brand new passphrase"})
    assert client(inbox_server).auth.sign_in_with_password(
        {"email": email, "password": "a brand new passphrase"}
    ).session is not None


def test_admin_api_through_the_client(inbox_server: RunningServer) -> None:
    admin = client(inbox_server, inbox_server.keys.secret_key).auth.admin
    email = f"admin-{uuid.uuid4().hex[:8]}@example.com"
    created = admin.create_user({"email": email, "password": PASSWORD, "email_confirm": True, "user_metadata": {"a": 1}})
    assert created.user.email == email and created.user.email_confirmed_at is not None
    assert admin.get_user_by_id(created.user.id).user.user_metadata == {"a": 1}
    listed = admin.list_users(page=1, per_page=1000)
    assert email in [user.email for user in listed]
    updated = admin.update_user_by_id(created.user.id, {"user_metadata": {"b": 2}, "ban_duration": "24h"})
    assert updated.user.user_metadata == {"a": 1, "b": 2} and updated.user.banned_until is not None
    with pytest.raises(AuthApiError) as banned:
        client(inbox_server).auth.sign_in_with_password({"email": email, "password": PASSWORD})
    assert banned.value.code == "user_banned"
    link = admin.generate_link({"type": "magiclink", "email": email})
    assert link.properties.action_link.startswith(f"{inbox_server.url}/auth/v1/verify?token=")
    assert len(link.properties.email_otp) == 6 and link.properties.verification_type == "magiclink"
    admin.delete_user(created.user.id)
    with pytest.raises(AuthApiError) as gone:
        admin.get_user_by_id(created.user.id)
    assert gone.value.status == 404


def test_publishable_key_is_not_admin(inbox_server: RunningServer) -> None:
    with pytest.raises(AuthApiError) as refused:
        client(inbox_server).auth.admin.list_users()
    assert refused.value.code == "not_admin" and refused.value.status == 403


def test_a_second_sign_up_of_an_unconfirmed_address_starts_over(inbox_server: RunningServer) -> None:
    """Pre-account takeover through the client: the first sign-up's password and link die."""
    email = f"twice-{uuid.uuid4().hex[:8]}@example.com"

    def newest_link() -> str:
        messages = httpx.get(f"{inbox_server.url}/_inbox/messages", params={"to": email}).json()["messages"]
        match = LINK.search(messages[0]["text"])
        assert match
        return match.group(1)

    first = client(inbox_server).auth.sign_up(
        {"email": email, "password": "the attackers passphrase", "options": {"data": {"full_name": "Mallory"}}}
    )
    first_link = newest_link()
    second = client(inbox_server).auth.sign_up(
        {"email": email, "password": PASSWORD, "options": {"data": {"full_name": "Victor"}}}
    )
    assert first.user is not None and second.user is not None and second.user.id != first.user.id
    assert second.user.user_metadata == {"full_name": "Victor"}

    supabase = client(inbox_server)
    verified = supabase.auth.verify_otp({"token_hash": newest_link(), "type": "email"})
    assert verified.user is not None and verified.user.user_metadata == {"full_name": "Victor"}
    with pytest.raises(AuthApiError) as refused:
        client(inbox_server).auth.sign_in_with_password({"email": email, "password": "the attackers passphrase"})
    assert refused.value.code == "invalid_credentials"
    assert client(inbox_server).auth.sign_in_with_password({"email": email, "password": PASSWORD}).session is not None
    with pytest.raises(AuthApiError) as dead:
        client(inbox_server).auth.verify_otp({"token_hash": first_link, "type": "email"})
    assert dead.value.code == "otp_expired"
