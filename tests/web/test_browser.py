"""The web app in a real browser: headless Chromium (Debian's) driven by Playwright's sync API.

Sign up, confirm by email (a real SMTP server), edit the profile, upload a photo, sign out and in
again; the session refresh when the access token expires, and the sign-out from elsewhere; escaping.
An expired access token is made, not waited for: the browser's token re-signed with an ``exp`` in the past.

The sync API runs its own event loop and, while a browser is open, marks it as the thread's running
loop between calls. So the tests are plain ``def`` functions, and the browser fixture depends on
``server_factory`` (hence on the async ``database_url``): pytest sets the database up before the
browser starts and tears it down after the browser has stopped.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import pytest
from PIL import Image

from tests.chromium import IN_CI, chromium
from tests.smtp import SMTPServer, smtp_env
from tests.support import RunningServer

try:
    from playwright.sync_api import Browser, BrowserContext, Cookie, Dialog, Page, ViewportSize, expect
except ImportError:  # pragma: no cover - the test extras install it
    if IN_CI:
        raise
    pytest.skip("the Python package playwright is not installed (pip install -e '.[test]')", allow_module_level=True)

PASSWORD = "a-long-Passphrase-for-the-browser-42"
TIMEOUT_MS = 15_000
RENDER_PREFIX = "/storage/v1/render/image/public/avatars/"
WIDE: ViewportSize = {"width": 1280, "height": 900}
NARROW: ViewportSize = {"width": 360, "height": 740}

MailReader = Callable[[str], str]


# -- fixtures ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mail_server(server_factory: Callable[..., RunningServer], module_smtp: SMTPServer) -> RunningServer:
    """A server that sends its mail to the SMTP server above."""
    return server_factory(env={
        **smtp_env(module_smtp.port),
        "GATEHOUSE_RATE_LIMITS_ENABLED": "false",
    })


@pytest.fixture(scope="module")
def inbox_server(server_factory: Callable[..., RunningServer]) -> RunningServer:
    """A server whose mail goes to the development inbox."""
    return server_factory(env={"GATEHOUSE_RATE_LIMITS_ENABLED": "false"})


@pytest.fixture(scope="module")
def browser(server_factory: Callable[..., RunningServer]) -> Iterator[Browser]:
    """Headless Chromium. Depends on ``server_factory`` so that the database outlives the browser."""
    with chromium() as browser:
        yield browser


class Dialogs:
    """Every JavaScript dialog and uncaught error of the pages: there should be none."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.page_errors: list[str] = []

    def on_dialog(self, dialog: Dialog) -> None:
        self.messages.append(dialog.message)
        dialog.dismiss()


@pytest.fixture
def dialogs() -> Dialogs:
    return Dialogs()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    ctx = browser.new_context(viewport=WIDE)
    ctx.set_default_timeout(TIMEOUT_MS)
    yield ctx
    ctx.close()


@pytest.fixture
def page(context: BrowserContext, dialogs: Dialogs) -> Iterator[Page]:
    tab = context.new_page()
    tab.on("dialog", dialogs.on_dialog)
    tab.on("pageerror", lambda error: dialogs.page_errors.append(str(error)))
    yield tab
    assert dialogs.messages == [], f"a page opened a JavaScript dialog: {dialogs.messages}"
    assert dialogs.page_errors == [], f"a page raised a JavaScript error: {dialogs.page_errors}"


# -- helpers -------------------------------------------------------------------------------------------


def smtp_reader(mail: SMTPServer, server: RunningServer) -> MailReader:
    """The confirmation link of the latest message to an address, from the SMTP server."""

    def read(email: str) -> str:
        deadline = time.monotonic() + 15
        while True:
            messages = [m for m in mail.received if email in m.recipients]
            if messages:
                break
            assert time.monotonic() < deadline, f"no mail to {email}; server log:\n{server.log()[-4000:]}"
            time.sleep(0.05)
        body = messages[-1].email.get_body(preferencelist=("plain",))
        assert body is not None, "the confirmation email has no text part"
        return confirm_link(body.get_content(), server)

    return read


def inbox_reader(server: RunningServer) -> MailReader:
    """The confirmation link of the latest message to an address, from the development inbox."""

    def read(email: str) -> str:
        deadline = time.monotonic() + 15
        while True:
            response = httpx.get(f"{server.url}/_inbox/messages", params={"to": email}, timeout=10)
            assert response.status_code == 200, response.text
            messages = response.json()["messages"]
            if messages:
                break
            assert time.monotonic() < deadline, f"no mail to {email} in the inbox; server log:\n{server.log()[-4000:]}"
            time.sleep(0.05)
        return confirm_link(messages[0]["text"], server)

    return read


def confirm_link(text: str, server: RunningServer) -> str:
    links = re.findall(r"https?://\S+/auth/confirm\?\S+", text)
    assert links, f"no /auth/confirm link in the email:\n{text}"
    link: str = links[0]
    assert link.startswith(f"{server.url}/auth/confirm?"), link
    query = parse_qs(urlsplit(link).query)
    assert query.get("type") == ["email"], link
    assert query.get("token_hash") and len(query["token_hash"][0]) >= 20, link
    return link


def path_of(page: Page) -> str:
    return urlsplit(page.url).path


def sign_up_and_confirm(page: Page, server: RunningServer, email: str, read_link: MailReader) -> None:
    """The whole sign-up in the browser, ending signed in on /account."""
    page.goto(f"{server.url}/login")
    page.fill("#email", email)
    page.fill("#password", PASSWORD)
    page.get_by_role("button", name="Sign up", exact=True).click()
    expect(page).to_have_url(re.compile(r"/check-email\?"))
    expect(page.locator("h1")).to_have_text("Check your email")
    expect(page.locator("main")).to_contain_text(email)

    link = read_link(email)
    # A mail scanner opening the link first must not use it up: GET only shows the button.
    scanner = httpx.get(link, timeout=10)
    assert scanner.status_code == 200, scanner.text
    assert "Confirm your email" in scanner.text
    page.goto(link)
    expect(page.locator("h1")).to_have_text("Confirm your email")
    page.get_by_role("button", name="Confirm", exact=True).click()
    expect(page).to_have_url(f"{server.url}/account")
    expect(page.locator("h1")).to_have_text("Your account")
    expect(page.locator("#email")).to_have_value(email)


def cookies(context: BrowserContext, server: RunningServer) -> dict[str, dict[str, object]]:
    return {c["name"]: dict(c) for c in context.cookies(server.url)}


def expire_access_token(context: BrowserContext, server: RunningServer, jar: list[Cookie] | None = None) -> None:
    """Put ``jar`` (default: the browser's cookies) back with the access token re-signed, same claims,
    expired a minute ago: what the browser holds once its access token has run out, without waiting."""
    jar = context.cookies(server.url) if jar is None else jar
    tokens = [item for item in jar if item["name"] == "gh-access-token"]
    assert len(tokens) == 1, f"no access token cookie: {[item['name'] for item in jar]}"
    claims = jwt.decode(tokens[0]["value"], options={"verify_signature": False})
    lifetime = int(claims["exp"]) - int(claims["iat"])
    claims["exp"] = int(time.time()) - 60
    claims["iat"] = claims["exp"] - lifetime
    expired = [{**item, "value": server.keys.sign(claims)} if item is tokens[0] else item for item in jar]
    context.add_cookies(expired)  # type: ignore[arg-type]


def assert_cookie_flags(context: BrowserContext, server: RunningServer) -> None:
    jar = cookies(context, server)
    for name in ("gh-access-token", "gh-refresh-token", "gh-csrf"):
        assert name in jar, f"no {name} cookie: {sorted(jar)}"
        assert jar[name]["httpOnly"] is True, jar[name]
        assert jar[name]["sameSite"] == "Lax", jar[name]
        assert jar[name]["path"] == "/", jar[name]
        assert jar[name]["secure"] is False, jar[name]  # plain http on loopback


def assert_fits(page: Page, width: int) -> None:
    scroll_width = page.evaluate("document.documentElement.scrollWidth")
    assert scroll_width <= width, f"{path_of(page)} scrolls sideways at {width}px: scrollWidth={scroll_width}"


def screenshot(page: Page, path: Path) -> None:
    page.screenshot(path=str(path), full_page=True)
    assert path.is_file() and path.stat().st_size > 0, path


def assert_profile(page: Page, full_name: str, username: str, website: str) -> None:
    expect(page.locator("#full_name")).to_have_value(full_name)
    expect(page.locator("#username")).to_have_value(username)
    expect(page.locator("#website")).to_have_value(website)


def avatar_loaded(page: Page) -> int:
    """Wait until ``img#avatar-image`` has loaded; its natural width."""
    page.wait_for_function(
        "() => { const i = document.querySelector('img#avatar-image'); return i && i.complete && i.naturalWidth > 0 }"
    )
    return int(page.evaluate("document.querySelector('img#avatar-image').naturalWidth"))


def assert_clean_log(server: RunningServer) -> None:
    """No server error while the pages ran: no 5xx, nothing logged above info."""
    problems = []
    for line in server.log().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # the start-up banner
        if record.get("level") not in ("debug", "info") or int(record.get("status") or 0) >= 500:
            problems.append(line)
    assert not problems, "the server logged problems:\n" + "\n".join(problems)


# -- tests ---------------------------------------------------------------------------------------------


def test_sign_up_profile_avatar_sign_out_and_in(
    page: Page, context: BrowserContext, mail_server: RunningServer, module_smtp: SMTPServer,
    output_dir: Path, tmp_path: Path,
) -> None:
    server = mail_server
    email = f"browser-{uuid.uuid4().hex[:8]}@example.com"
    profile = ("Ada Lovelace", f"ada_{uuid.uuid4().hex[:6]}", "https://example.com/ada")

    # The log-in page, wide and at 360 px.
    page.goto(f"{server.url}/login")
    expect(page.locator("h1")).to_have_text("Log in or sign up")
    screenshot(page, output_dir / "login.png")
    page.set_viewport_size(NARROW)
    page.reload()
    screenshot(page, output_dir / "login-360.png")
    assert_fits(page, NARROW["width"])
    page.set_viewport_size(WIDE)

    sign_up_and_confirm(page, server, email, smtp_reader(module_smtp, server))
    assert_cookie_flags(context, server)

    # The profile: saved, and still there on a fresh load.
    page.fill("#full_name", profile[0])
    page.fill("#username", profile[1])
    page.fill("#website", profile[2])
    page.get_by_role("button", name="Update", exact=True).click()
    expect(page.locator("p.notice")).to_have_text("Profile updated.")
    assert_profile(page, *profile)
    page.reload()  # the update redirected (POST/redirect/GET), so a reload sends nothing again
    expect(page.locator("h1")).to_have_text("Your account")
    assert_profile(page, *profile)

    # The photo: a real PNG through the file input, then shown through the image renderer.
    png = tmp_path / "me.png"
    Image.new("RGB", (320, 240), (30, 120, 200)).save(png)
    page.set_input_files("#avatar", str(png))
    page.get_by_role("button", name="Upload", exact=True).click()
    expect(page).to_have_url(re.compile(r"/account\?avatar=updated$"))
    expect(page.get_by_text("Photo updated.")).to_be_visible()
    image = page.locator("img#avatar-image")
    expect(image).to_have_attribute("src", re.compile("^" + re.escape(RENDER_PREFIX)))
    assert avatar_loaded(page) > 0
    src = image.get_attribute("src") or ""
    assert urlsplit(src).path.startswith(RENDER_PREFIX), src
    rendered = httpx.get(server.url + src, timeout=10)
    assert rendered.status_code == 200 and rendered.headers["content-type"].startswith("image/"), rendered.headers
    assert_profile(page, *profile)  # the upload leaves the profile alone
    screenshot(page, output_dir / "account.png")

    page.set_viewport_size(NARROW)
    page.goto(f"{server.url}/account")
    avatar_loaded(page)
    screenshot(page, output_dir / "account-360.png")
    assert_fits(page, NARROW["width"])
    page.set_viewport_size(WIDE)

    # Sign out: back on /login, the session cookies gone, /account sends to /login.
    page.get_by_role("button", name="Sign out").first.click()
    expect(page).to_have_url(f"{server.url}/login")
    jar = cookies(context, server)
    assert "gh-access-token" not in jar and "gh-refresh-token" not in jar, sorted(jar)
    page.goto(f"{server.url}/account")
    expect(page).to_have_url(f"{server.url}/login")
    expect(page.locator("h1")).to_have_text("Log in or sign up")

    # Log in again: the profile and the photo are still there.
    page.fill("#email", email)
    page.fill("#password", PASSWORD)
    page.get_by_role("button", name="Log in", exact=True).click()
    expect(page).to_have_url(f"{server.url}/account")
    assert_profile(page, *profile)
    expect(page.locator("img#avatar-image")).to_have_attribute("src", re.compile("^" + re.escape(RENDER_PREFIX)))
    assert avatar_loaded(page) > 0
    assert_cookie_flags(context, server)
    assert_clean_log(server)


def test_expired_access_token_is_refreshed_and_global_sign_out_ends_the_browser_session(
    page: Page, context: BrowserContext, inbox_server: RunningServer,
) -> None:
    server = inbox_server
    email = f"refresh-{uuid.uuid4().hex[:8]}@example.com"
    sign_up_and_confirm(page, server, email, inbox_reader(server))
    assert_cookie_flags(context, server)
    first = cookies(context, server)

    expire_access_token(context, server)  # the access token has expired; the refresh token has not
    expired = cookies(context, server)["gh-access-token"]["value"]
    assert expired != first["gh-access-token"]["value"]
    page.reload()
    expect(page).to_have_url(f"{server.url}/account")
    expect(page.locator("h1")).to_have_text("Your account")
    expect(page.locator("#email")).to_have_value(email)
    second = cookies(context, server)
    assert second["gh-access-token"]["value"] not in (expired, first["gh-access-token"]["value"]), (
        "the access token was not refreshed"
    )
    assert second["gh-refresh-token"]["value"] != first["gh-refresh-token"]["value"], "the refresh token did not rotate"
    assert_cookie_flags(context, server)

    # Sign the user out everywhere, from outside the browser.
    apikey = server.keys.publishable_key
    grant = httpx.post(
        f"{server.url}/auth/v1/token", params={"grant_type": "password"},
        json={"email": email, "password": PASSWORD}, headers={"apikey": apikey}, timeout=10,
    )
    assert grant.status_code == 200, grant.text
    logout = httpx.post(
        f"{server.url}/auth/v1/logout", params={"scope": "global"},
        headers={"apikey": apikey, "Authorization": f"Bearer {grant.json()['access_token']}"}, timeout=10,
    )
    assert logout.status_code == 204, logout.text

    # The session is gone, though the access token in the browser has not expired.
    stale = context.cookies(server.url)
    page.reload()
    expect(page).to_have_url(f"{server.url}/login")
    expect(page.locator("h1")).to_have_text("Log in or sign up")
    jar = cookies(context, server)
    assert "gh-access-token" not in jar and "gh-refresh-token" not in jar, sorted(jar)

    # The same cookies once the access token has expired: the ended session's refresh token is refused.
    expire_access_token(context, server, stale)
    page.goto(f"{server.url}/account")
    expect(page).to_have_url(f"{server.url}/login")
    jar = cookies(context, server)
    assert "gh-access-token" not in jar and "gh-refresh-token" not in jar, sorted(jar)
    assert_clean_log(server)


def test_profile_values_are_escaped(
    page: Page, context: BrowserContext, mail_server: RunningServer, module_smtp: SMTPServer, dialogs: Dialogs,
) -> None:
    server = mail_server
    page.evaluate("alert('probe')")  # the dialog hook works (CSP would also stop inline scripts: check the HTML)
    assert dialogs.messages == ["probe"]
    dialogs.messages.clear()
    email = f"escape-{uuid.uuid4().hex[:8]}@example.com"
    sign_up_and_confirm(page, server, email, smtp_reader(module_smtp, server))
    script = "<script>alert(1)</script>"

    page.fill("#full_name", script)
    page.get_by_role("button", name="Update", exact=True).click()
    expect(page.locator("p.notice")).to_have_text("Profile updated.")
    expect(page.locator("#full_name")).to_have_value(script)
    response = page.goto(f"{server.url}/account")
    assert response is not None and response.status == 200
    expect(page.locator("#full_name")).to_have_value(script)
    html = response.text()
    assert script not in html
    assert 'value="&lt;script&gt;alert(1)&lt;/script&gt;"' in html, html

    # A value that would close the attribute, sent back with a field error, stays inside it.
    breakout = '"><img src=x onerror="alert(2)">'
    page.fill("#username", breakout)
    with page.expect_response(lambda r: r.request.method == "POST" and urlsplit(r.url).path == "/account") as sent:
        page.get_by_role("button", name="Update", exact=True).click()
    assert sent.value.status == 400
    assert breakout not in sent.value.text()
    expect(page.locator("#username-error")).to_be_visible()
    expect(page.locator("#username")).to_have_value(breakout)
    expect(page.locator("#full_name")).to_have_value(script)
    expect(page.locator("img[src=x]")).to_have_count(0)
    page.wait_for_timeout(300)  # a dialog would open right after the load
    assert dialogs.messages == []
    assert_clean_log(server)


def test_the_account_page_shows_a_profile_changed_in_another_tab(
    page: Page, context: BrowserContext, mail_server: RunningServer, module_smtp: SMTPServer,
) -> None:
    """The account page subscribes to its profile's changes (realtime, signed in by its own session
    cookie): a change saved in another tab appears without a reload; a field being edited is kept."""
    server = mail_server
    email = f"live-{uuid.uuid4().hex[:8]}@example.com"
    sign_up_and_confirm(page, server, email, smtp_reader(module_smtp, server))
    expect(page.locator("#live-status")).to_be_visible()  # subscribed
    other = context.new_page()
    other.goto(f"{server.url}/account")
    other.fill("#full_name", "Changed Elsewhere")
    other.fill("#website", "https://example.com/live")
    other.get_by_role("button", name="Update", exact=True).click()
    expect(other.locator("p.notice")).to_have_text("Profile updated.")
    expect(page.locator("#full_name")).to_have_value("Changed Elsewhere")
    expect(page.locator("#website")).to_have_value("https://example.com/live")
    page.fill("#username", "typing_now")  # being edited here: a change elsewhere leaves it alone
    other.fill("#username", "set_elsewhere")
    other.fill("#full_name", "Second Change")
    other.get_by_role("button", name="Update", exact=True).click()
    expect(page.locator("#full_name")).to_have_value("Second Change")
    expect(page.locator("#username")).to_have_value("typing_now")
    other.close()
    assert_clean_log(server)
