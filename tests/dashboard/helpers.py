"""A dashboard visitor over HTTP, keeping cookies like a browser (Secure ones too: the test
servers speak plain http on loopback), and administrators made straight in the database."""

from __future__ import annotations

import re
import time
import uuid
from http.cookies import SimpleCookie
from typing import TYPE_CHECKING, Any

import httpx
import pyotp

from gatehouse.auth.passwords import PasswordHasher
from gatehouse.core.config import load_settings
from tests.support import RunningServer, fetch_rows, run_sql

if TYPE_CHECKING:
    from playwright.sync_api import Page

PASSWORD = "dashboard passphrase 4 tests"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')
SECRET = re.compile(r'<code id="secret">([A-Z2-7]+)</code>')
_hasher = PasswordHasher(load_settings(), max_threads=1)


def new_email(prefix: str = "admin") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}@example.com"


def make_admin(database_url: str, email: str | None = None, password: str = PASSWORD) -> str:
    """An administrator without TOTP, inserted as `gatehouse admin create` would make it."""
    email = email or new_email()
    run_sql(database_url, "INSERT INTO gatehouse.dashboard_admins (email, password_hash) VALUES ($1, $2) RETURNING id",
            email, _hasher.hash(password))
    return email


def code(secret: str, *, steps_ahead: int = 0) -> str:
    return str(pyotp.TOTP(secret).at(time.time() + 30 * steps_ahead))


class Visitor:
    """One browser on the dashboard: its cookies (with their attributes), its latest CSRF token."""

    def __init__(self, server: RunningServer, local_address: str | None = None) -> None:
        transport = httpx.HTTPTransport(local_address=local_address) if local_address else None
        self.http = httpx.Client(base_url=server.url, timeout=30, transport=transport)
        self.cookies: dict[str, str] = {}
        self.set_cookies: list[str] = []
        self.csrf = ""

    def close(self) -> None:
        self.http.close()

    def _keep(self, response: httpx.Response) -> httpx.Response:
        for header in response.headers.get_list("set-cookie"):
            self.set_cookies.append(header)
            parsed = SimpleCookie()
            parsed.load(header)
            for name, morsel in parsed.items():
                if morsel["max-age"] == "0":
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value
        found = CSRF.search(response.text)
        if found:
            self.csrf = found[1]
        return response

    def _headers(self, extra: dict[str, str] | None) -> dict[str, str]:
        cookie = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        return ({"cookie": cookie} if cookie else {}) | (extra or {})

    def get(self, path: str, headers: dict[str, str] | None = None, **kwargs: Any) -> httpx.Response:
        return self._keep(self.http.get(path, headers=self._headers(headers), **kwargs))

    def post(self, path: str, data: dict[str, str], *, csrf: str | None = None,
             headers: dict[str, str] | None = None) -> httpx.Response:
        body = {"csrf": self.csrf if csrf is None else csrf, **data}
        if csrf == "":
            body.pop("csrf")
        return self._keep(self.http.post(path, data=body, headers=self._headers(headers)))

    def sign_in(self, email: str, password: str = PASSWORD) -> httpx.Response:
        self.get("/_/login")
        return self.post("/_/login", {"email": email, "password": password})

    def htmx(self, path: str, **params: Any) -> httpx.Response:
        return self.get(path, params=params, headers={"hx-request": "true", "hx-target": "results",
                                                      "x-csrf-token": self.csrf})


def app_credentials(server: RunningServer, session: dict[str, Any]) -> list[dict[str, str]]:
    """What an app's callers may send, none of it a dashboard session: a user's access token, the
    secret key (as the apikey and the bearer token), and the web pages' session cookies."""
    token = session["access_token"]
    return [
        {"authorization": f"Bearer {token}"},
        {"apikey": server.keys.secret_key, "authorization": f"Bearer {server.keys.secret_key}"},
        {"cookie": f"gh-access-token={token}; gh-refresh-token={session['refresh_token']}"},
    ]


def sign_in_page(page: Page, server: RunningServer, email: str, password: str = PASSWORD) -> None:
    """Sign in in Chromium by keyboard, as a person would: the email field has the focus (autofocus),
    Tab leads to the password, Enter sends the form and lands on the overview."""
    from playwright.sync_api import expect

    page.goto(f"{server.url}/_/login")
    expect(page.locator("#email")).to_be_focused()
    page.keyboard.type(email)
    page.keyboard.press("Tab")
    expect(page.locator("#password")).to_be_focused()
    page.keyboard.type(password)
    page.keyboard.press("Enter")
    expect(page).to_have_url(f"{server.url}/_/")


#: The rows of one query, as the database's owner: ``tests.support.fetch_rows`` under the name these tests use.
fetch = fetch_rows


def age_session(database_url: str, email: str, column: str, interval: str) -> None:
    """Move the administrator's dashboard session's ``column`` (created_at, last_seen_at) back by ``interval``."""
    assert column in ("created_at", "last_seen_at")
    run_sql(database_url, f"UPDATE gatehouse.dashboard_sessions s SET {column} = now() - $2::text::interval "
            "FROM gatehouse.dashboard_admins a WHERE a.id = s.admin_id AND a.email = $1 RETURNING 1", email, interval)
