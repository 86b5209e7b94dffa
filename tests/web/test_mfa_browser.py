"""Two-step sign-in in the app's pages, in Debian's Chromium: set up an authenticator app (codes
from pyotp, as the app would show them), recovery codes shown once, the second step at log-in by
app code and by recovery code, and turning it off."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator

import httpx
import pyotp
import pytest

from tests.auth.helpers import PASSWORD
from tests.chromium import IN_CI, chromium, watched_page
from tests.support import RunningServer

try:
    from playwright.sync_api import Browser, Page, expect
except ImportError:  # pragma: no cover - the test extras install it
    if IN_CI:
        raise
    pytest.skip("the Python package playwright is not installed (pip install -e '.[test]')", allow_module_level=True)


@pytest.fixture(scope="module")
def server(server_factory: Callable[..., RunningServer]) -> RunningServer:
    return server_factory(env={"GATEHOUSE_RATE_LIMITS_ENABLED": "false"})


@pytest.fixture(scope="module")
def browser(server_factory: Callable[..., RunningServer]) -> Iterator[Browser]:
    with chromium() as found:
        yield found


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    with watched_page(browser) as found:
        yield found


def log_in(page: Page, server: RunningServer, email: str) -> None:
    page.goto(f"{server.url}/login")
    page.locator("#email").fill(email)
    page.locator("#password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()


def code_at(secret: str, steps_ahead: int) -> str:
    return pyotp.TOTP(secret).at(time.time() + 30 * steps_ahead)


def test_two_step_sign_in_from_set_up_to_recovery(page: Page, server: RunningServer) -> None:
    email = f"web-mfa-{uuid.uuid4().hex[:8]}@example.com"
    created = httpx.post(f"{server.url}/auth/v1/admin/users", headers={"apikey": server.keys.secret_key},
                         json={"email": email, "password": PASSWORD, "email_confirm": True}, timeout=10)
    assert created.status_code == 200, created.text
    log_in(page, server, email)
    page.wait_for_url(f"{server.url}/account")
    page.locator("#mfa-link").click()
    page.locator("#mfa-start").click()
    expect(page.locator("#mfa-qr")).to_be_visible()
    secret = page.locator("#mfa-secret").inner_text()
    page.locator("#code").fill("000000" if code_at(secret, 0) != "000000" else "111111")
    page.get_by_role("button", name="Turn on").click()
    expect(page.locator("#mfa-error")).to_contain_text("not right")  # and the same set-up stays on the page
    assert page.locator("#mfa-secret").inner_text() == secret
    page.locator("#code").fill(code_at(secret, 0))
    page.get_by_role("button", name="Turn on").click()
    codes = page.locator("#recovery-codes code").all_inner_texts()
    assert len(codes) == 10 and all(len(code) == 11 and code[5] == "-" for code in codes)

    # a new log-in stops at the second step until the app's code is given
    page.context.clear_cookies()
    log_in(page, server, email)
    page.wait_for_url(f"{server.url}/login/factor")
    page.goto(f"{server.url}/account")
    page.wait_for_url(f"{server.url}/login/factor")  # no page of the account before the second step
    page.locator("#code").fill(code_at(secret, 1))
    page.get_by_role("button", name="Continue").click()
    page.wait_for_url(f"{server.url}/account")

    # and with a recovery code instead, once
    page.context.clear_cookies()
    log_in(page, server, email)
    page.wait_for_url(f"{server.url}/login/factor")
    page.locator("#code").fill(codes[0])
    page.get_by_role("button", name="Continue").click()
    page.wait_for_url(f"{server.url}/account")
    page.context.clear_cookies()
    log_in(page, server, email)
    page.locator("#code").fill(codes[0])
    page.get_by_role("button", name="Continue").click()
    expect(page.locator("#factor-error")).to_be_visible()
    page.locator("#code").fill(codes[1].upper().replace("-", " "))  # as a person might type it
    page.get_by_role("button", name="Continue").click()
    page.wait_for_url(f"{server.url}/account")
    page.goto(f"{server.url}/account/mfa")
    expect(page.locator("#codes-left")).to_have_text("8")

    # turned off from an aal2 session: log-ins are one step again
    page.locator("#mfa-remove").click()
    page.wait_for_url(f"{server.url}/account?changed=mfa")
    page.context.clear_cookies()
    log_in(page, server, email)
    page.wait_for_url(f"{server.url}/account")
