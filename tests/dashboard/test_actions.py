"""The actions on a user's page: each one done, audited and shown; destructive ones only after a
second step; CSRF, another administrator's session and an ended one change nothing; hostile input
gets a 4xx with a message on the page and leaves the user as they were."""

from __future__ import annotations

import html
import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.auth.helpers import Auth
from tests.dashboard.helpers import PASSWORD, Visitor, code, fetch, make_admin, new_email, sign_in_page
from tests.support import RunningServer, run_sql

ENV = {"GATEHOUSE_RATE_LIMIT_EMAIL": "1000/60", "GATEHOUSE_RATE_LIMIT_EMAIL_ADDRESS": "1000/60",
       "GATEHOUSE_RATE_LIMIT_SIGNUP": "1000/60", "GATEHOUSE_RATE_LIMIT_TOKEN": "1000/60"}


@pytest.fixture(scope="module")
def server(server_factory: Callable[..., RunningServer]) -> RunningServer:
    return server_factory(env=ENV)


def make_user(database_url: str, *, confirmed: bool = True, app_metadata: dict[str, Any] | None = None) -> str:
    email = new_email("user")
    (row,) = run_sql(
        database_url,
        "INSERT INTO auth.users (id, aud, role, email, email_confirmed_at, raw_app_meta_data, raw_user_meta_data, "
        "created_at, updated_at) VALUES (gen_random_uuid(), 'authenticated', 'authenticated', $1, "
        "CASE WHEN $2 THEN now() END, $3::jsonb, '{}', now(), now()) RETURNING id",
        email, confirmed, json.dumps(app_metadata or {"provider": "email", "providers": ["email"]}),
    )
    return str(row["id"])


def user_row(database_url: str, user_id: str) -> dict[str, Any] | None:
    rows = fetch(database_url, "SELECT * FROM auth.users WHERE id = $1", uuid.UUID(user_id))
    if not rows:
        return None
    row = dict(rows[0])
    row["raw_app_meta_data"] = json.loads(row["raw_app_meta_data"])  # the owner's connection has no jsonb codec
    return row


def audited(database_url: str, target: str) -> list[dict[str, Any]]:
    rows = fetch(database_url, "SELECT a.action, a.detail, d.email FROM gatehouse.dashboard_audit a "
                 "JOIN gatehouse.dashboard_admins d ON d.id = a.admin_id WHERE a.target = $1 ORDER BY a.id", target)
    return [{**dict(row), "detail": json.loads(row["detail"])} for row in rows]


def notice(page: Any) -> str:
    marker = 'id="notice">'
    start = page.text.find(marker)
    if start < 0:
        return ""
    start += len(marker)
    return html.unescape(page.text[start:page.text.find("<", start)])


def inbox(server: RunningServer, email: str, count: int = 1) -> list[dict[str, Any]]:
    import httpx

    deadline = time.monotonic() + 10
    while len(found := httpx.get(f"{server.url}/_inbox/messages", params={"to": email}).json()["messages"]) < count:
        assert time.monotonic() < deadline, found
        time.sleep(0.05)
    return found  # type: ignore[no-any-return]


def confirmed_twice(visitor: Visitor, path: str, data: dict[str, str]) -> Any:
    """Post an action, check it asks first and changed nothing yet, then confirm it."""
    first = visitor.post(path, data)
    assert first.status_code == 200 and 'id="question"' in first.text, first.text
    return visitor.post(path, {**data, "confirmed": "yes"})


# -- each action ------------------------------------------------------------------------------


def test_create_and_invite(visitor: Visitor, server: RunningServer, database_url: str, admin_email: str) -> None:
    assert visitor.get("/_/users/new").status_code == 200
    email = new_email("created")
    page = visitor.post("/_/users/new", {"kind": "create", "email": email, "password": "s3cret pass word",
                                         "email_confirm": "yes"})
    assert page.status_code == 200 and notice(page) == "User created."
    (row,) = fetch(database_url, "SELECT id, email_confirmed_at, encrypted_password FROM auth.users WHERE email = $1",
                   email)
    assert row["email_confirmed_at"] is not None and row["encrypted_password"].startswith("$argon2id$")
    (entry,) = audited(database_url, str(row["id"]))
    assert entry["action"] == "user_create" and entry["email"] == admin_email
    assert "s3cret" not in json.dumps(entry["detail"]) and entry["detail"]["password_set"] is True
    again = visitor.post("/_/users/new", {"kind": "create", "email": email})
    assert again.status_code == 422 and "already been registered" in again.text

    invited = new_email("invited")
    page = visitor.post("/_/users/new", {"kind": "invite", "email": invited})
    assert page.status_code == 200 and "invitation was sent" in notice(page)
    (row,) = fetch(database_url, "SELECT id, invited_at FROM auth.users WHERE email = $1", invited)
    assert row["invited_at"] is not None
    assert inbox(server, invited)[0]["subject"]
    assert [e["action"] for e in audited(database_url, str(row["id"]))] == ["user_invite"]


def test_confirm(visitor: Visitor, database_url: str) -> None:
    user_id = make_user(database_url, confirmed=False)
    page = visitor.post(f"/_/users/{user_id}/confirm", {})
    assert page.status_code == 200 and notice(page) == "Email address confirmed."
    assert user_row(database_url, user_id)["email_confirmed_at"] is not None  # type: ignore[index]
    assert [e["action"] for e in audited(database_url, user_id)] == ["user_confirm"]


@pytest.mark.parametrize(("action", "kind"), [("recovery", "recovery"), ("magiclink", "magiclink")])
def test_mail_links(visitor: Visitor, server: RunningServer, database_url: str, action: str, kind: str) -> None:
    user_id = make_user(database_url)
    email = user_row(database_url, user_id)["email"]  # type: ignore[index]
    page = visitor.post(f"/_/users/{user_id}/{action}", {})
    assert page.status_code == 200 and email in notice(page)
    (message,) = inbox(server, email)
    assert f"type={kind}" in message["text"]
    (entry,) = audited(database_url, user_id)
    assert entry["action"] == f"user_{action}" and "token" not in json.dumps(entry["detail"])
    unconfirmed = make_user(database_url, confirmed=False)
    refused = visitor.post(f"/_/users/{unconfirmed}/{action}", {})
    assert refused.status_code == 409 and 'id="error"' in refused.text and audited(database_url, unconfirmed) == []


def test_ban_asks_first_then_unban(visitor: Visitor, auth: Auth, database_url: str) -> None:
    email, session = auth.confirmed_user()
    (row,) = fetch(database_url, "SELECT id FROM auth.users WHERE email = $1", email)
    user_id = str(row["id"])
    first = visitor.post(f"/_/users/{user_id}/ban", {"duration": "24h"})
    assert first.status_code == 200 and 'id="question"' in first.text
    assert user_row(database_url, user_id)["banned_until"] is None  # type: ignore[index]
    page = visitor.post(f"/_/users/{user_id}/ban", {"duration": "24h", "confirmed": "yes"})
    assert page.status_code == 200 and notice(page).startswith("Banned until")
    assert user_row(database_url, user_id)["banned_until"] is not None  # type: ignore[index]
    assert auth.refresh(session["refresh_token"]).status_code >= 400
    assert auth.log_in(email).status_code == 400
    page = visitor.post(f"/_/users/{user_id}/unban", {})
    assert page.status_code == 200 and user_row(database_url, user_id)["banned_until"] is None  # type: ignore[index]
    assert auth.log_in(email).status_code == 200
    actions = audited(database_url, user_id)
    assert [e["action"] for e in actions] == ["user_ban", "user_unban"] and actions[0]["detail"]["duration"] == "24h"


def test_sign_out_everywhere(visitor: Visitor, auth: Auth, database_url: str) -> None:
    email, first = auth.confirmed_user()
    second = auth.log_in(email).json()
    (row,) = fetch(database_url, "SELECT id FROM auth.users WHERE email = $1", email)
    user_id = str(row["id"])
    page = confirmed_twice(visitor, f"/_/users/{user_id}/signout", {})
    assert page.status_code == 200 and "2 sessions ended" in notice(page)
    for session in (first, second):
        assert auth.refresh(session["refresh_token"]).status_code == 400
        assert auth.get("/user", token=session["access_token"]).status_code == 403
    assert fetch(database_url, "SELECT count(*) AS n FROM auth.sessions WHERE user_id = $1", row["id"])[0]["n"] == 0
    (entry,) = audited(database_url, user_id)
    assert entry["action"] == "user_signout" and entry["detail"] == {"sessions": 2}


def add_factor(database_url: str, user_id: str) -> str:
    (row,) = run_sql(database_url, "INSERT INTO auth.mfa_factors (user_id, factor_type, status, friendly_name) "
                     "VALUES ($1, 'totp', 'verified', 'phone') RETURNING id", uuid.UUID(user_id))
    return str(row["id"])


def test_remove_a_factor_and_not_another_users(visitor: Visitor, database_url: str) -> None:
    user_id, other = make_user(database_url), make_user(database_url)
    factor, others = add_factor(database_url, user_id), add_factor(database_url, other)
    assert f"/factors/{factor}/remove" in visitor.get(f"/_/users/{user_id}").text
    wrong = visitor.post(f"/_/users/{user_id}/factors/{others}/remove", {})
    assert wrong.status_code == 404 and "Factor not found" in wrong.text
    for garbage in ("not-a-uuid", "' OR 1=1 --"):
        assert visitor.post(f"/_/users/{user_id}/factors/{garbage}/remove", {}).status_code == 404
    assert len(fetch(database_url, "SELECT id FROM auth.mfa_factors WHERE id = ANY($1::uuid[])",
                     [uuid.UUID(factor), uuid.UUID(others)])) == 2
    page = visitor.post(f"/_/users/{user_id}/factors/{factor}/remove", {})
    assert page.status_code == 200 and "totp factor was removed" in notice(page)
    assert fetch(database_url, "SELECT id FROM auth.mfa_factors WHERE user_id = $1", uuid.UUID(user_id)) == []
    (entry,) = audited(database_url, user_id)
    assert entry["action"] == "user_remove_factor" and entry["detail"]["factor_id"] == factor
    assert audited(database_url, other) == []


def test_soft_delete_keeps_the_row(visitor: Visitor, auth: Auth, database_url: str) -> None:
    email, session = auth.confirmed_user()
    (row,) = fetch(database_url, "SELECT id FROM auth.users WHERE email = $1", email)
    user_id = str(row["id"])
    page = confirmed_twice(visitor, f"/_/users/{user_id}/delete", {"mode": "soft"})
    assert page.status_code == 200 and notice(page) == "The user was soft-deleted."
    kept = user_row(database_url, user_id)
    assert kept is not None and kept["deleted_at"] is not None and kept["email"] is None
    assert auth.refresh(session["refresh_token"]).status_code == 400
    assert visitor.get(f"/_/users/{user_id}").status_code == 404
    assert [e["detail"] for e in audited(database_url, user_id)] == [{"mode": "soft"}]


def test_hard_delete_removes_the_user_and_sessions(visitor: Visitor, auth: Auth, database_url: str) -> None:
    email, session = auth.confirmed_user()
    (row,) = fetch(database_url, "SELECT id FROM auth.users WHERE email = $1", email)
    user_id = str(row["id"])
    page = confirmed_twice(visitor, f"/_/users/{user_id}/delete", {"mode": "hard"})
    assert page.status_code == 200 and notice(page) == "The user was deleted."
    assert user_row(database_url, user_id) is None
    assert fetch(database_url, "SELECT count(*) AS n FROM auth.sessions WHERE user_id = $1", row["id"])[0]["n"] == 0
    assert auth.refresh(session["refresh_token"]).status_code == 400
    (entry,) = audited(database_url, user_id)
    assert entry["action"] == "user_delete" and entry["detail"] == {"mode": "hard"}


def test_a_hard_delete_an_app_table_forbids_changes_nothing(visitor: Visitor, database_url: str) -> None:
    user_id = make_user(database_url)
    run_sql(database_url, "CREATE TABLE public.dash_notes (owner uuid NOT NULL REFERENCES auth.users (id))")
    try:
        run_sql(database_url, "INSERT INTO public.dash_notes VALUES ($1) RETURNING 1", uuid.UUID(user_id))
        answer = visitor.post(f"/_/users/{user_id}/delete", {"mode": "hard", "confirmed": "yes"})
        assert answer.status_code == 409 and "dash_notes" in answer.text and 'id="error"' in answer.text
        assert user_row(database_url, user_id) is not None and audited(database_url, user_id) == []
    finally:
        run_sql(database_url, "DROP TABLE public.dash_notes")


def test_edit_app_metadata(visitor: Visitor, database_url: str) -> None:
    user_id = make_user(database_url, app_metadata={"provider": "email", "plan": "free", "old": 1})
    wanted = {"provider": "email", "plan": "pro", "roles": ["editor"], "note": "<script>x</script>"}
    page = visitor.post(f"/_/users/{user_id}/app_metadata", {"app_metadata": json.dumps(wanted)})
    assert page.status_code == 200 and notice(page) == "App metadata saved."
    assert user_row(database_url, user_id)["raw_app_meta_data"] == wanted  # type: ignore[index]
    assert "<script>x</script>" not in page.text
    (entry,) = audited(database_url, user_id)
    assert entry["detail"] == {"changed": ["note", "plan", "roles"], "removed": ["old"]}


# -- refused ----------------------------------------------------------------------------------


@pytest.mark.parametrize("csrf", ["", "wrong", "0" * 64])
def test_csrf_missing_or_wrong_changes_nothing(visitor: Visitor, database_url: str, csrf: str) -> None:
    user_id = make_user(database_url, confirmed=False)
    for path, data in [("confirm", {}), ("ban", {"duration": "1h", "confirmed": "yes"}),
                       ("delete", {"mode": "hard", "confirmed": "yes"}), ("app_metadata", {"app_metadata": "{}"})]:
        answer = visitor.post(f"/_/users/{user_id}/{path}", data, csrf=csrf)
        assert answer.status_code == 403, path
    answer = visitor.post("/_/users/new", {"kind": "create", "email": new_email()}, csrf=csrf)
    assert answer.status_code == 403
    row = user_row(database_url, user_id)
    assert row is not None and row["email_confirmed_at"] is None and row["banned_until"] is None
    assert audited(database_url, user_id) == []


def test_another_admins_token_or_an_ended_session_changes_nothing(
    visitor: Visitor, server: RunningServer, database_url: str,
) -> None:
    user_id = make_user(database_url, confirmed=False)
    other_email = make_admin(database_url)
    other = Visitor(server)
    other.sign_in(other_email)
    other.get("/_/")
    crossed = other.post(f"/_/users/{user_id}/confirm", {}, csrf=visitor.csrf)
    assert crossed.status_code == 403
    run_sql(database_url, "UPDATE gatehouse.dashboard_sessions SET last_seen_at = now() - interval '1 day' "
            "WHERE admin_id = (SELECT id FROM gatehouse.dashboard_admins WHERE email = $1) RETURNING 1", other_email)
    answer = other.post(f"/_/users/{user_id}/confirm", {}, csrf=other.csrf)
    assert answer.status_code == 303 and answer.headers["location"] == "/_/login"
    assert user_row(database_url, user_id)["email_confirmed_at"] is None  # type: ignore[index]
    assert audited(database_url, user_id) == []
    other.close()


BANS = ["-1h", "0x10h", "1e9h", "9999999999h", "876001h", "24", "h", "1h; DROP TABLE auth.users", "' OR 1=1 --",
        "none", "", "1" * 40, "\x00", "24h 1m"]


@pytest.mark.parametrize("duration", BANS)
def test_hostile_ban_durations(visitor: Visitor, database_url: str, duration: str) -> None:
    user_id = make_user(database_url)
    answer = visitor.post(f"/_/users/{user_id}/ban", {"duration": duration, "confirmed": "yes"})
    assert 400 <= answer.status_code < 500 and 'id="error"' in answer.text, answer.text
    assert user_row(database_url, user_id)["banned_until"] is None  # type: ignore[index]
    assert audited(database_url, user_id) == []


METADATA = ["[1, 2]", '"text"', "42", "null", "{", "{'a': 1}", '{"a": NaN}', '{"a": Infinity}', '{"a": 1e999}',
            '{"a": "\\u0000"}', '{"\\u0000": 1}', "[" * 5000 + "]" * 5000, '{"a": ' * 40 + "1" + "}" * 40,
            json.dumps({"big": "x" * 20_000}), '{"a": 1} trailing', "'; DROP TABLE auth.users; --"]


@pytest.mark.parametrize("text", METADATA)
def test_hostile_app_metadata(visitor: Visitor, database_url: str, text: str) -> None:
    user_id = make_user(database_url, app_metadata={"provider": "email", "keep": True})
    answer = visitor.post(f"/_/users/{user_id}/app_metadata", {"app_metadata": text})
    assert 400 <= answer.status_code < 500 and 'id="error"' in answer.text, answer.text[:500]
    assert user_row(database_url, user_id)["raw_app_meta_data"] == {"provider": "email", "keep": True}  # type: ignore[index]
    assert audited(database_url, user_id) == []


@pytest.mark.parametrize("email", ["", "not an email", "a@b'; DROP TABLE auth.users; --", "<script>@x.com",
                                   "x" * 300 + "@example.com", "a\x00@example.com"])
@pytest.mark.parametrize("kind", ["create", "invite"])
def test_hostile_new_users(visitor: Visitor, database_url: str, email: str, kind: str) -> None:
    before = fetch(database_url, "SELECT count(*) AS n FROM auth.users")[0]["n"]
    answer = visitor.post("/_/users/new", {"kind": kind, "email": email, "password": "x"})
    assert 400 <= answer.status_code < 500 and 'id="error"' in answer.text, answer.text[:500]
    assert "<script>@" not in answer.text
    assert fetch(database_url, "SELECT count(*) AS n FROM auth.users")[0]["n"] == before


@pytest.mark.parametrize("path", ["confirm", "ban", "unban", "signout", "delete", "app_metadata", "recovery",
                                  "magiclink", "nonsense", "factors/00000000-0000-0000-0000-000000000000/remove"])
@pytest.mark.parametrize("user_id", [str(uuid.UUID(int=7)), "not-a-uuid", "' OR 1=1 --"])
def test_unknown_users_and_actions(visitor: Visitor, path: str, user_id: str) -> None:
    answer = visitor.post(f"/_/users/{user_id}/{path}", {"duration": "1h", "mode": "hard", "confirmed": "yes"})
    assert answer.status_code == 404 and "No such user" in answer.text


def test_an_unknown_action_on_a_real_user(visitor: Visitor, database_url: str) -> None:
    user_id = make_user(database_url)
    assert visitor.post(f"/_/users/{user_id}/remove_factor", {}).status_code == 404
    assert visitor.post(f"/_/users/{user_id}/delete", {"mode": "'; DROP", "confirmed": "yes"}).status_code == 400
    assert user_row(database_url, user_id) is not None


# -- in a browser -----------------------------------------------------------------------------


def test_ban_and_delete_in_chromium_at_360_px(server: RunningServer, database_url: str, output_dir: Path) -> None:
    """By keyboard at 360 px: set up TOTP and sign in with a code, find an unconfirmed user, confirm
    them, ban with its confirmation step, a refused metadata edit, a hard delete."""
    pytest.importorskip("playwright")
    from playwright.sync_api import expect

    from tests.chromium import chromium, watched_page

    # SQL before Playwright's event loop runs
    email, user_id = make_admin(database_url), make_user(database_url, confirmed=False)
    user = user_row(database_url, user_id)
    assert user is not None
    with chromium() as browser, watched_page(browser, viewport={"width": 360, "height": 740}) as page:
        sign_in_page(page, server, email)
        page.goto(f"{server.url}/_/totp")  # in development TOTP is offered, then asked for at each sign-in
        secret = page.locator("#secret").inner_text()
        page.fill("#code", code(secret))
        page.keyboard.press("Enter")
        expect(page).to_have_url(f"{server.url}/_/")
        page.locator("form.signout button").click()
        expect(page).to_have_url(f"{server.url}/_/login")
        page.fill("#email", email)
        page.fill("#password", PASSWORD)
        page.keyboard.press("Enter")
        expect(page).to_have_url(f"{server.url}/_/login/totp")
        page.screenshot(path=str(output_dir / "totp-360.png"), full_page=True)
        page.fill("#code", code(secret, steps_ahead=1))  # the first code was used up by the set-up
        page.keyboard.press("Enter")
        expect(page).to_have_url(f"{server.url}/_/")

        page.goto(f"{server.url}/_/users")
        page.get_by_label("Unconfirmed").check()
        page.fill("#q", user["email"])
        page.locator(f"#results a[href='/_/users/{user_id}']").click()
        page.get_by_role("button", name="Confirm email").click()
        expect(page.locator("#notice")).to_contain_text("onfirmed")
        page.locator("#ban-duration").focus()
        page.keyboard.type("24h")
        page.keyboard.press("Enter")
        expect(page.locator("#question")).to_contain_text("Ban this user for 24h?")
        page.screenshot(path=str(output_dir / "ban-confirm-360.png"), full_page=True)
        page.get_by_role("button", name="Yes, do it").focus()
        page.keyboard.press("Enter")
        expect(page.locator("#notice")).to_contain_text("Banned until")
        assert page.evaluate("document.documentElement.scrollWidth") <= 360
        page.screenshot(path=str(output_dir / "user-actions-360.png"), full_page=True)
        page.fill("#app-metadata", "[1, 2]")
        page.get_by_role("button", name="Save app metadata").click()
        expect(page.locator("#error")).to_have_text("app_metadata must be a JSON object ({...})")
        expect(page.locator("#app-metadata")).to_have_value("[1, 2]")
        page.get_by_label("Hard (remove the row)").check()
        page.get_by_role("button", name="Delete…").click()
        page.get_by_role("button", name="Yes, do it").click()
        expect(page.locator("#notice")).to_have_text("The user was deleted.")
