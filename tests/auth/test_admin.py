"""The admin API: only the secret key or a service_role token; users, links, invites."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.auth.helpers import PASSWORD, Auth, new_email
from tests.support import RunningServer


@pytest.fixture(scope="module")
def server(server_factory: Callable[..., RunningServer]) -> RunningServer:
    return server_factory(env={"GATEHOUSE_RATE_LIMITS_ENABLED": "false"})


@pytest.fixture(scope="module")
def admin(server: RunningServer) -> Iterator[Auth]:
    client = Auth(server, server.keys.secret_key)
    yield client
    client.close()


@pytest.fixture(scope="module")
def public(server: RunningServer) -> Iterator[Auth]:
    client = Auth(server)
    yield client
    client.close()


@pytest.mark.parametrize("who", ["publishable key", "user token", "anon JWT"])
def test_only_admins(public: Auth, server: RunningServer, who: str) -> None:
    if who == "user token":
        _, session = public.confirmed_user()
        response = public.get("/admin/users", token=session["access_token"])
    elif who == "anon JWT":
        response = public.get("/admin/users", token=server.keys.anon_key)
    else:
        response = public.get("/admin/users")
    assert response.status_code == 403 and response.json()["code"] == "not_admin"


def test_service_role_jwt_is_admin(public: Auth, server: RunningServer) -> None:
    assert public.get("/admin/users", token=server.keys.service_role_key).status_code == 200


def test_create_get_update_delete(admin: Auth, public: Auth) -> None:
    email = new_email("managed")
    created = admin.post("/admin/users", {"email": email, "password": PASSWORD, "user_metadata": {"plan": "free"},
                                          "app_metadata": {"tier": 1}})
    assert created.status_code == 200
    user = created.json()
    assert "email_confirmed_at" not in user and user["app_metadata"]["tier"] == 1
    assert public.log_in(email).json()["code"] == "email_not_confirmed"

    user_id = user["id"]
    confirmed = admin.put(f"/admin/users/{user_id}", {"email_confirm": True, "user_metadata": {"plan": "pro"}}).json()
    assert confirmed["email_confirmed_at"] and confirmed["user_metadata"] == {"plan": "pro"}
    assert public.log_in(email).status_code == 200

    renamed = admin.put(f"/admin/users/{user_id}", {"email": new_email("renamed"), "password": "another passphrase"})
    assert renamed.status_code == 200
    assert public.log_in(renamed.json()["email"], "another passphrase").status_code == 200

    assert admin.get(f"/admin/users/{user_id}").json()["id"] == user_id
    assert admin.http.request("DELETE", f"/admin/users/{user_id}", json={}).json() == {}
    missing = admin.get(f"/admin/users/{user_id}")
    assert missing.status_code == 404 and missing.json()["code"] == "user_not_found"


def test_soft_delete_frees_the_address(admin: Auth) -> None:
    email = new_email("soft")
    user_id = admin.post("/admin/users", {"email": email, "email_confirm": True}).json()["id"]
    assert admin.http.request("DELETE", f"/admin/users/{user_id}", json={"should_soft_delete": True}).status_code == 200
    assert admin.get(f"/admin/users/{user_id}").status_code == 404
    assert admin.post("/admin/users", {"email": email}).status_code == 200


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"email": "not an email"}, 400, "email_address_invalid"),
        ({"email": "ok@example.com", "password_hash": "plaintext"}, 400, "validation_failed"),
        ({"email": "ok@example.com", "ban_duration": "forever"}, 400, "validation_failed"),
        ({"email": "ok@example.com", "id": "not-a-uuid"}, 400, "validation_failed"),
    ],
)
def test_create_refuses_bad_input(admin: Auth, body: dict[str, str], status: int, code: str) -> None:
    response = admin.post("/admin/users", body)
    assert response.status_code == status and response.json()["code"] == code


def test_duplicate_email(admin: Auth) -> None:
    email = new_email()
    admin.post("/admin/users", {"email": email})
    response = admin.post("/admin/users", {"email": email})
    assert response.status_code == 422 and response.json()["code"] == "email_exists"


def test_unknown_and_malformed_ids(admin: Auth) -> None:
    assert admin.get("/admin/users/00000000-0000-0000-0000-000000000000").status_code == 404
    assert admin.get("/admin/users/not-a-uuid").status_code == 400


def test_list_pages_with_total_and_links(admin: Auth) -> None:
    for _ in range(3):
        admin.post("/admin/users", {"email": new_email("page")})
    response = admin.get("/admin/users", params={"page": "1", "per_page": "2"})
    total = int(response.headers["x-total-count"])
    assert len(response.json()["users"]) == 2 and response.json()["aud"] == "authenticated"
    assert total >= 3
    last = -(-total // 2)
    assert response.headers["link"] == (
        f'</admin/users?page=2&per_page=2>; rel="next", </admin/users?page={last}&per_page=2>; rel="last"'
    )
    empty_params = admin.get("/admin/users", params={"page": "", "per_page": ""})  # as supabase-py sends them
    assert empty_params.status_code == 200
    assert admin.get("/admin/users", params={"page": "-1"}).status_code == 400


def test_ban_ends_sessions_and_unban_restores(admin: Auth, public: Auth) -> None:
    email, session = public.confirmed_user()
    user_id = session["user"]["id"]
    assert admin.put(f"/admin/users/{user_id}", {"ban_duration": "1h30m"}).json()["banned_until"]
    assert public.get("/user", token=session["access_token"]).status_code == 403
    assert public.log_in(email).json()["code"] == "user_banned"
    admin.put(f"/admin/users/{user_id}", {"ban_duration": "none"})
    assert public.log_in(email).status_code == 200


def test_generate_link_returns_everything_and_sends_nothing(admin: Auth, public: Auth) -> None:
    email, _ = public.confirmed_user()
    before = len(public.messages(email))
    link = admin.post("/admin/generate_link?redirect_to=" + admin.server.url + "/next",
                      {"type": "recovery", "email": email}).json()
    assert link["email"] == email and link["verification_type"] == "recovery"
    assert link["redirect_to"] == admin.server.url + "/next"
    assert len(link["email_otp"]) == 6 and link["hashed_token"]
    query = parse_qs(urlsplit(link["action_link"]).query)
    assert query["token"] == [link["hashed_token"]] and query["type"] == ["recovery"]
    assert len(public.messages(email)) == before
    verified = public.post("/verify", {"type": "recovery", "email": email, "token": link["email_otp"]})
    assert verified.status_code == 200


def test_generate_link_for_unknown_addresses(admin: Auth) -> None:
    assert admin.post("/admin/generate_link", {"type": "recovery", "email": new_email()}).status_code == 404
    signup = admin.post("/admin/generate_link", {"type": "magiclink", "email": new_email()}).json()
    assert signup["verification_type"] == "signup"
    bad = admin.post("/admin/generate_link", {"type": "teleport", "email": new_email()})
    assert bad.status_code == 400


def test_invite(admin: Auth, public: Auth) -> None:
    email = new_email("invited")
    user = admin.post("/invite", {"email": email, "data": {"team": "blue"}}).json()
    assert user["invited_at"] and user["user_metadata"] == {"team": "blue"}
    token_hash, link_type = public.latest_link(email)
    assert link_type == "invite"
    session = public.post("/verify", {"type": "invite", "token_hash": token_hash}).json()
    assert session["user"]["email_confirmed_at"]
    again = admin.post("/invite", {"email": email})
    assert again.status_code == 422 and again.json()["code"] == "email_exists"


def test_an_invite_to_an_unconfirmed_address_drops_the_pending_sign_up(admin: Auth, public: Auth) -> None:
    email = new_email("invited")
    pending = public.sign_up(email, "the attackers passphrase", data={"full_name": "Mallory"}).json()
    attacker_link, _ = public.latest_link(email)
    user = admin.post("/invite", {"email": email, "data": {"team": "blue"}}).json()
    assert user["id"] != pending["id"] and user["user_metadata"] == {"team": "blue"}
    assert public.post("/verify", {"type": "email", "token_hash": attacker_link}).json()["code"] == "otp_expired"
    token_hash, _ = public.latest_link(email)
    session = public.post("/verify", {"type": "invite", "token_hash": token_hash}).json()
    assert session["user"]["user_metadata"] == {"team": "blue"}
    assert public.log_in(email, "the attackers passphrase").json()["code"] == "invalid_credentials"


@pytest.mark.parametrize("link_type", ["magiclink", "recovery"])
def test_a_generated_link_confirming_an_unconfirmed_address_drops_the_pending_password(
    admin: Auth, public: Auth, link_type: str
) -> None:
    email = new_email()
    public.sign_up(email, "the attackers passphrase", data={"full_name": "Mallory"})
    link = admin.post("/admin/generate_link", {"type": link_type, "email": email}).json()
    session = public.post("/verify", {"type": link_type, "token_hash": link["hashed_token"]}).json()
    assert session["user"]["email_confirmed_at"] and session["user"]["user_metadata"] == {}
    assert public.log_in(email, "the attackers passphrase").json()["code"] == "invalid_credentials"


def test_a_generated_sign_up_link_for_an_unconfirmed_address_starts_over(admin: Auth, public: Auth) -> None:
    email = new_email()
    public.sign_up(email, "the attackers passphrase")
    link = admin.post("/admin/generate_link", {"type": "signup", "email": email, "password": PASSWORD}).json()
    assert public.post("/verify", {"type": "signup", "token_hash": link["hashed_token"]}).status_code == 200
    assert public.log_in(email, "the attackers passphrase").status_code == 400
    assert public.log_in(email, PASSWORD).status_code == 200
