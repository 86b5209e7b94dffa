"""Signing in to /_/ in development: the CLI's administrators, one answer for a wrong password and
an unknown email, the throttle, the cookie, CSRF, app credentials refused, idle expiry, the audit."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.auth.helpers import Auth
from tests.auth.throttling import next_address
from tests.dashboard.helpers import PASSWORD, Visitor, age_session, app_credentials, make_admin, new_email
from tests.support import RunningServer, gatehouse_command, run_sql

#: Two failures per address and account, then that address is refused for the account.
ENV = {"GATEHOUSE_RATE_LIMIT_PASSWORD_CLIENT": "2/3600", "GATEHOUSE_RATE_LIMIT_PASSWORD_ATTEMPTS": "50/3600"}


@pytest.fixture(scope="module")
def server(server_factory: Callable[..., RunningServer]) -> RunningServer:
    return server_factory(env=ENV)


def admin_create(database_url: str, keys_dir: Path, email: str, password: str) -> subprocess.CompletedProcess[str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEHOUSE_")} | {
        "GATEHOUSE_DATABASE_URL": database_url, "GATEHOUSE_LOG_LEVEL": "warning"}
    return subprocess.run(
        gatehouse_command("admin", "create", email, "--password-stdin", "--data-dir", str(keys_dir)),
        input=password + "\n", capture_output=True, text=True, env=env, timeout=120, check=False,
    )


def test_admin_create_from_the_cli(server: RunningServer, database_url: str, keys_dir: Path) -> None:
    email = new_email()
    weak = admin_create(database_url, keys_dir, email, "password")
    assert weak.returncode == 1 and "password" in weak.stderr.lower()
    made = admin_create(database_url, keys_dir, email.upper(), PASSWORD)
    assert made.returncode == 0, made.stderr
    assert email in made.stdout
    again = admin_create(database_url, keys_dir, email, PASSWORD)
    assert again.returncode == 1 and "already exists" in again.stderr
    (row,) = run_sql(database_url, "SELECT email, password_hash, totp_secret FROM gatehouse.dashboard_admins "
                     "WHERE email = $1", email)
    assert row["password_hash"].startswith("$argon2id$") and row["totp_secret"] is None
    visitor = Visitor(server)
    assert visitor.sign_in(email).headers["location"] == "/_/"  # development: TOTP offered, not required
    page = visitor.get("/_/")
    assert page.status_code == 200 and email in page.text
    visitor.close()


def test_wrong_password_and_unknown_email_get_the_same_answer(server: RunningServer, database_url: str) -> None:
    email = make_admin(database_url)
    visitor = Visitor(server, next_address())
    wrong = visitor.sign_in(email, "not the password at all")
    unknown = visitor.sign_in(new_email(), "not the password at all")
    assert wrong.status_code == unknown.status_code == 400
    assert "do not match an administrator" in wrong.text and "do not match an administrator" in unknown.text
    assert "gh-dash=" not in " ".join(visitor.set_cookies)
    visitor.close()


def test_guessing_is_refused_per_address_and_the_owner_still_gets_in(server: RunningServer, database_url: str) -> None:
    email = make_admin(database_url)
    attacker = Visitor(server, next_address())
    for _ in range(2):
        assert attacker.sign_in(email, "wrong guess of a password").status_code == 400
    refused = attacker.sign_in(email, PASSWORD)
    assert refused.status_code == 429 and "Retry-After" in refused.headers
    owner = Visitor(server, next_address())
    assert owner.sign_in(email).status_code == 303
    attacker.close()
    owner.close()


def test_cookie_flags_and_sign_out(server: RunningServer, database_url: str) -> None:
    email = make_admin(database_url)
    visitor = Visitor(server)
    answer = visitor.sign_in(email)
    (session,) = [c for c in answer.headers.get_list("set-cookie") if c.startswith("gh-dash=")]
    flags = [part.strip() for part in session.split(";")]
    assert "HttpOnly" in flags and "SameSite=Strict" in flags and "Path=/_/" in flags
    assert "Secure" not in flags  # development on plain http; production: test_totp.py
    page = visitor.get("/_/users")
    assert page.status_code == 200
    for secret in (server.keys.secret_key, server.keys.service_role_key, server.keys.publishable_key):
        assert secret not in page.text
    assert visitor.post("/_/logout", {}).headers["location"] == "/_/login"
    assert visitor.get("/_/users").headers["location"] == "/_/login"
    actions = [row["action"] for row in run_sql(
        database_url, "SELECT action FROM gatehouse.dashboard_audit a JOIN gatehouse.dashboard_admins d "
        "ON d.id = a.admin_id WHERE d.email = $1 ORDER BY a.id", email)]
    assert actions == ["sign_in", "sign_out"]
    visitor.close()


def test_csrf_missing_or_wrong_is_refused_and_changes_nothing(server: RunningServer, database_url: str) -> None:
    email = make_admin(database_url)
    visitor = Visitor(server)
    visitor.sign_in(email)
    visitor.get("/_/")
    for csrf in ("", "wrong" * 9):
        assert visitor.post("/_/logout", {}, csrf=csrf).status_code == 403
    assert visitor.get("/_/").status_code == 200  # still signed in: the sign-out did not happen
    assert visitor.get("/_/users", headers={"hx-request": "true"}).status_code == 403  # htmx without the header
    assert visitor.htmx("/_/users").status_code == 200
    stranger = Visitor(server)
    stranger.get("/_/login")
    assert stranger.post("/_/login", {"email": email, "password": PASSWORD}, csrf="").status_code == 403
    assert "gh-dash=" not in " ".join(stranger.set_cookies)
    visitor.close()
    stranger.close()


def test_app_credentials_give_no_access(server: RunningServer) -> None:
    auth = Auth(server)
    _, session = auth.confirmed_user()
    for headers in app_credentials(server, session):
        for path in ("/_/", "/_/users"):
            answer = auth.http.get(f"{server.url}{path}", headers=headers)
            assert answer.status_code == 303 and answer.headers["location"] == "/_/login", (path, headers)
    auth.close()


def test_an_idle_session_ends(server: RunningServer, database_url: str) -> None:
    email = make_admin(database_url)
    visitor = Visitor(server)
    visitor.sign_in(email)
    assert visitor.get("/_/").status_code == 200
    age_session(database_url, email, "last_seen_at", "31 minutes")
    assert visitor.get("/_/").headers["location"] == "/_/login"
    visitor.close()


def test_a_session_ends_after_its_lifetime_however_busy(server: RunningServer, database_url: str) -> None:
    email = make_admin(database_url)
    visitor = Visitor(server)
    visitor.sign_in(email)
    age_session(database_url, email, "created_at", "8 hours 1 minute")
    assert visitor.get("/_/").headers["location"] == "/_/login"
    visitor.close()


def test_failed_sign_ins_are_audited_with_the_admins_id(server: RunningServer, database_url: str) -> None:
    email = make_admin(database_url)
    visitor = Visitor(server, next_address())
    visitor.sign_in(email, "not the right passphrase")
    rows = run_sql(database_url, "SELECT a.action, a.admin_id = d.id AS same FROM gatehouse.dashboard_audit a "
                   "JOIN gatehouse.dashboard_admins d ON d.id = a.admin_id WHERE d.email = $1", email)
    assert [(r["action"], r["same"]) for r in rows] == [("sign_in_failed", True)]
    visitor.close()
