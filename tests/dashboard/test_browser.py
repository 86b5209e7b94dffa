"""Chromium at 360 px, by keyboard only: sign in, skip to the content, search as you type (htmx),
page on, open a user. Screenshots go to test-output/."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chromium import watched_page
from tests.dashboard.helpers import make_admin, sign_in_page
from tests.support import RunningServer, run_sql

try:
    from playwright.sync_api import Browser, expect
except ImportError:  # pragma: no cover - the test extras install it
    pytest.skip("the Python package playwright is not installed (pip install -e '.[test]')", allow_module_level=True)


@pytest.fixture(scope="module")
def admin_email(database_url: str) -> str:
    """An administrator and 120 users, made before Playwright's event loop runs (the SQL helpers use asyncio.run)."""
    run_sql(database_url, """
        INSERT INTO auth.users (id, aud, role, email, created_at, email_confirmed_at, raw_user_meta_data)
        SELECT gen_random_uuid(), 'authenticated', 'authenticated', format('walker-%s@example.com', n),
               now() - make_interval(secs => n), now(), '{}'
        FROM generate_series(1, 120) AS n""")
    return make_admin(database_url)


def test_users_page_at_360_px_by_keyboard(browser: Browser, server: RunningServer, admin_email: str,
                                          output_dir: Path) -> None:
    with watched_page(browser, viewport={"width": 360, "height": 740}) as page:
        sign_in_page(page, server, admin_email)  # autofocus on the email field: the one thing to do on this page
        page.goto(f"{server.url}/_/users")
        page.keyboard.press("Tab")
        expect(page.locator(".skip")).to_be_focused()
        page.keyboard.press("Enter")
        page.keyboard.press("Tab")
        expect(page.locator("#q")).to_be_focused()
        page.keyboard.type("walker-11")
        expect(page.locator("#results a[href^='/_/users/']")).to_have_count(11)  # walker-11, -110 ... -119
        expect(page).to_have_url(f"{server.url}/_/users?q=walker-11")
        page.screenshot(path=str(output_dir / "users-360.png"), full_page=True)
        assert page.evaluate("document.documentElement.scrollWidth") <= 360
        page.fill("#q", "walker-")
        expect(page.locator("#next")).to_be_visible()
        first = page.locator("#results a[href^='/_/users/']").first.inner_text()
        page.locator("#next").focus()
        page.keyboard.press("Enter")
        expect(page.locator("#previous")).to_be_visible()
        assert page.locator("#results a[href^='/_/users/']").first.inner_text() != first
        page.locator("#previous").focus()
        page.keyboard.press("Enter")
        expect(page.locator("#results a[href^='/_/users/']").first).to_have_text(first)
        page.locator("#results a[href^='/_/users/']").first.focus()
        page.keyboard.press("Enter")
        expect(page.locator("h1")).to_have_text(first)
        assert page.evaluate("document.documentElement.scrollWidth") <= 360
        page.screenshot(path=str(output_dir / "user-360.png"), full_page=True)


def test_users_page_wide(browser: Browser, server: RunningServer, admin_email: str, output_dir: Path) -> None:
    """The users page on a laptop's screen: the picture in the README (docs/dashboard-users.png)."""
    with watched_page(browser, viewport={"width": 1280, "height": 760}) as page:
        sign_in_page(page, server, admin_email)
        page.goto(f"{server.url}/_/users")
        expect(page.locator("#results a[href^='/_/users/']").first).to_be_visible()
        assert page.evaluate("document.documentElement.scrollWidth") <= 1280
        page.screenshot(path=str(output_dir / "users-1280.png"))
