"""The web app over plain HTTP (no browser): CSRF, redirects, escaping, errors, cookie sessions."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import pytest

from tests.auth.helpers import PASSWORD, new_email
from tests.support import ConfirmedSession, RunningServer
from tests.web.test_avatars import AVATAR_QUERY, HOSTILE_AVATARS

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@pytest.fixture(scope="module")
def server(server_factory: Callable[..., RunningServer]) -> RunningServer:
    return server_factory(env={"GATEHOUSE_RATE_LIMITS_ENABLED": "false"})


class Browser:
    """A cookie-keeping HTTP client that reads CSRF tokens off forms, like a browser without JS."""

    def __init__(self, server: RunningServer, confirm: ConfirmedSession) -> None:
        self.server = server
        self.confirm = confirm
        self.http = httpx.Client(base_url=server.url, follow_redirects=False, timeout=15)

    def csrf(self, path: str = "/login") -> str:
        match = CSRF.search(self.http.get(path).text)
        assert match
        return match.group(1)

    def new_user(self) -> str:
        """The email of a new user whose address is confirmed (and who has not signed in here)."""
        return self.confirm(self.server)[0]

    def sign_in(self) -> str:
        email = self.new_user()
        response = self.http.post("/login", data={"csrf": self.csrf(), "email": email, "password": PASSWORD,
                                                  "action": "login"})
        assert response.status_code == 303 and response.headers["location"] == "/account"
        return email


@pytest.fixture
def browser(server: RunningServer, confirmed_session: ConfirmedSession) -> Iterator[Browser]:
    client = Browser(server, confirmed_session)
    yield client
    client.http.close()


def test_home_redirects_to_login_then_account(browser: Browser) -> None:
    assert browser.http.get("/").headers["location"] == "/login"
    assert browser.http.get("/account").headers["location"] == "/login"
    browser.sign_in()
    assert browser.http.get("/").headers["location"] == "/account"
    assert browser.http.get("/account").status_code == 200


def test_cookies_are_httponly_and_lax(browser: Browser) -> None:
    browser.csrf()
    email = browser.new_user()
    response = browser.http.post("/login", data={"csrf": browser.http.cookies["gh-csrf"], "email": email,
                                                 "password": PASSWORD, "action": "login"})
    cookies = response.headers.get_list("set-cookie")
    for name in ("gh-access-token", "gh-refresh-token"):
        (line,) = [c for c in cookies if c.startswith(name + "=")]
        assert "HttpOnly" in line and "SameSite=Lax" in line and "Path=/" in line
        assert "Secure" not in line  # http:// site; https sites get Secure


def test_forms_without_the_csrf_token_are_refused(browser: Browser) -> None:
    email = browser.new_user()
    no_token = browser.http.post("/login", data={"email": email, "password": PASSWORD, "action": "login"})
    assert no_token.status_code == 403 and "did not come from this site" in no_token.text
    assert "gh-access-token" not in browser.http.cookies
    browser.sign_in()
    forged = browser.http.post("/account", data={"csrf": "x" * 43, "full_name": "Mallory"})
    assert forged.status_code == 403
    signout = browser.http.post("/auth/signout", data={})
    assert signout.status_code == 403 and browser.http.get("/account").status_code == 200


def test_sign_up_shows_check_email_with_the_inbox_link(browser: Browser) -> None:
    email = new_email("web")
    response = browser.http.post("/login", data={"csrf": browser.csrf(), "email": email, "password": PASSWORD,
                                                 "action": "signup"})
    assert response.status_code == 303 and response.headers["location"].startswith("/check-email")
    page = browser.http.get(response.headers["location"])
    assert email in page.text and 'href="/_inbox"' in page.text


def test_login_errors_keep_the_input(browser: Browser) -> None:
    email = new_email("nobody")
    response = browser.http.post("/login", data={"csrf": browser.csrf(), "email": email, "password": "wrong password",
                                                 "action": "login"})
    assert response.status_code == 400
    assert "do not match an account" in response.text and f'value="{email}"' in response.text


def _link(server: RunningServer, email: str) -> str:
    text = httpx.get(f"{server.url}/_inbox/messages", params={"to": email}).json()["messages"][0]["text"]
    match = re.search(r"(http://\S+/auth/confirm\?\S+)", text)
    assert match
    return match.group(1)


def test_confirm_get_does_not_use_the_token_and_post_signs_in(browser: Browser, server: RunningServer) -> None:
    email = new_email("confirm")
    browser.http.post("/login", data={"csrf": browser.csrf(), "email": email, "password": PASSWORD, "action": "signup"})
    link = _link(server, email)
    path = link.removeprefix(server.url)
    for _ in range(3):  # a mail scanner opening the link changes nothing
        assert browser.http.get(path).status_code == 200
    query = parse_qs(urlsplit(link).query)
    response = browser.http.post("/auth/confirm", data={"csrf": browser.http.cookies["gh-csrf"],
                                                         "token_hash": query["token_hash"][0], "type": "email",
                                                         "next": "/account"})
    assert response.status_code == 303 and response.headers["location"] == "/account"
    assert "token" not in response.headers["location"]
    assert browser.http.get("/account").status_code == 200
    again = browser.http.post("/auth/confirm", data={"csrf": browser.http.cookies["gh-csrf"],
                                                     "token_hash": query["token_hash"][0], "type": "email"})
    assert again.status_code == 400 and "expired or was already used" in again.text


def test_open_redirect_through_next_is_refused(browser: Browser, server: RunningServer) -> None:
    email = new_email("redirect")
    browser.http.post("/login", data={"csrf": browser.csrf(), "email": email, "password": PASSWORD, "action": "signup"})
    query = parse_qs(urlsplit(_link(server, email)).query)
    response = browser.http.post("/auth/confirm", data={"csrf": browser.http.cookies["gh-csrf"],
                                                        "token_hash": query["token_hash"][0], "type": "email",
                                                        "next": "https://evil.example/phish"})
    assert response.status_code == 303 and response.headers["location"] == "/account"


def test_profile_validation_and_escaping(browser: Browser) -> None:
    browser.sign_in()
    token = browser.http.cookies["gh-csrf"]
    short = browser.http.post("/account", data={"csrf": token, "full_name": "Kept Name", "username": "ab",
                                                "website": "not a url"})
    assert short.status_code == 400
    assert "at least 3 characters" in short.text and "starting with https://" in short.text
    assert 'value="Kept Name"' in short.text and 'value="not a url"' in short.text
    hostile = "<script>alert(1)</script>"
    saved = browser.http.post("/account", data={"csrf": token, "full_name": hostile, "username": "", "website": ""})
    assert saved.status_code == 303 and saved.headers["location"] == "/account?changed=profile"
    assert "Profile updated." in browser.http.get(saved.headers["location"]).text
    page = browser.http.get("/account").text
    assert hostile not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_username_taken_is_shown_next_to_the_field(server: RunningServer, confirmed_session: ConfirmedSession) -> None:
    first, second = Browser(server, confirmed_session), Browser(server, confirmed_session)
    try:
        first.sign_in()
        second.sign_in()
        name = f"taken_{int(time.time() * 1000) % 10**9}"
        first.http.post("/account", data={"csrf": first.http.cookies["gh-csrf"], "username": name})
        clash = second.http.post("/account", data={"csrf": second.http.cookies["gh-csrf"], "username": name})
        assert clash.status_code == 400 and "That username is taken" in clash.text
    finally:
        first.http.close()
        second.http.close()


def test_avatar_upload_errors_are_shown(browser: Browser) -> None:
    browser.sign_in()
    token = browser.http.cookies["gh-csrf"]
    not_image = browser.http.post("/account/avatar", data={"csrf": token},
                                  files={"avatar": ("a.png", b"this is text", "image/png")})
    assert "avatar_error" in not_image.headers["location"]
    shown = browser.http.get(not_image.headers["location"]).text
    assert "not a PNG, JPEG, GIF or WebP image" in shown
    pdf = browser.http.post("/account/avatar", data={"csrf": token}, files={"avatar": ("a.pdf", b"%PDF-1.4", "application/pdf")})
    assert "Upload+a+PNG" in pdf.headers["location"]


def test_sign_out_ends_the_session_server_side(browser: Browser, server: RunningServer) -> None:
    browser.sign_in()
    access = browser.http.cookies["gh-access-token"]
    response = browser.http.post("/auth/signout", data={"csrf": browser.http.cookies["gh-csrf"]})
    assert response.headers["location"] == "/login"
    assert browser.http.get("/account").headers["location"] == "/login"
    me = httpx.get(f"{server.url}/auth/v1/user", headers={"apikey": server.keys.publishable_key,
                                                          "Authorization": f"Bearer {access}"})
    assert me.status_code == 403 and me.json()["error_code"] == "session_not_found"


def test_error_page_and_unknown_pages(browser: Browser) -> None:
    page = browser.http.get("/error", params={"message": "<b>boom</b>"})
    assert page.status_code == 400 and "&lt;b&gt;boom&lt;/b&gt;" in page.text
    missing = browser.http.get("/nope", headers={"Accept": "text/html"})
    assert missing.status_code == 404 and "does not exist" in missing.text


def test_pages_send_security_headers(browser: Browser) -> None:
    headers = browser.http.get("/login").headers
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["cache-control"] == "no-store" and headers["x-frame-options"] == "DENY"


def test_avatar_urls_written_through_the_rest_api_never_leave_the_bucket(browser: Browser, server: RunningServer) -> None:
    browser.sign_in()
    access = browser.http.cookies["gh-access-token"]
    user_id = jwt.decode(access, options={"verify_signature": False})["sub"]
    rest = httpx.Client(base_url=f"{server.url}/rest/v1", timeout=15, headers={
        "apikey": server.keys.publishable_key, "Authorization": f"Bearer {access}", "Prefer": "resolution=merge-duplicates",
    })
    with rest:
        for value in HOSTILE_AVATARS:
            saved = rest.post("/profiles", json={"id": user_id, "avatar_url": value})
            assert saved.status_code == 201, saved.text
            page = browser.http.get("/account")
            assert page.status_code == 200
            assert '<img id="avatar-image"' not in page.text, value
            assert 'aria-label="No photo yet"' in page.text
        good = f"{user_id}/photo 1.png"
        assert rest.post("/profiles", json={"id": user_id, "avatar_url": good}).status_code == 201
        html = browser.http.get("/account").text
        src = f"/storage/v1/render/image/public/avatars/{user_id}/photo%201.png{AVATAR_QUERY.replace('&', '&amp;')}"
        assert f'<img id="avatar-image" class="avatar" src="{src}"' in html
