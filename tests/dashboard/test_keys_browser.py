"""Chromium at 360 px, by keyboard: the keys and settings page, and a signing-key rotation through
its buttons (standby, switch, retire, each with its confirmation step). Screenshots go to
test-output/."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.chromium import watched_page
from tests.dashboard.helpers import sign_in_page
from tests.support import RunningServer, run_sql

try:
    from playwright.sync_api import Browser, Page, expect
except ImportError:  # pragma: no cover - the test extras install it
    pytest.skip("the Python package playwright is not installed (pip install -e '.[test]')", allow_module_level=True)


@pytest.fixture(scope="module")
def server(server_factory: Callable[..., RunningServer]) -> RunningServer:
    return server_factory(env={"GATEHOUSE_JWT_EXPIRY": "120"})


def outside_the_loop(work: Callable[[], object]) -> None:
    """Run a database helper (it uses asyncio.run) beside Playwright's event loop."""
    thread = threading.Thread(target=work)
    thread.start()
    thread.join()


def press(page: Page, selector: str) -> None:
    page.locator(selector).focus()
    page.keyboard.press("Enter")


def confirm(page: Page) -> None:
    expect(page.locator("#question")).to_be_visible()
    press(page, "button.danger")


def test_a_rotation_through_the_buttons_at_360_px(browser: Browser, server: RunningServer, admin_email: str,
                                                  database_url: str, output_dir: Path) -> None:
    root = server.keys.kid
    with watched_page(browser, viewport={"width": 360, "height": 740}) as page:
        sign_in_page(page, server, admin_email)
        press(page, "nav a[href='/_/settings']")
        expect(page.locator("h1")).to_have_text("Keys and settings")
        expect(page.locator("#publishable-key")).to_have_text(server.keys.publishable_key)
        assert server.keys.secret_key not in page.content()
        assert page.evaluate("document.documentElement.scrollWidth") <= 360
        page.screenshot(path=str(output_dir / "keys-settings.png"), full_page=True)

        press(page, "form[action='/_/settings/keys/standby'] button")
        expect(page.locator("#question")).to_be_visible()  # the confirmation page, not the page leaving
        page.screenshot(path=str(output_dir / "keys-confirm-standby.png"), full_page=True)
        confirm(page)
        expect(page.locator("#notice")).to_contain_text("standby key is published")
        expect(page.locator("tr[data-state='standby']")).to_have_count(1)
        standby = page.locator("tr[data-state='standby']").get_attribute("data-kid")
        published = httpx.get(f"{server.url}/auth/v1/.well-known/jwks.json").json()["keys"]
        assert [key["kid"] for key in published] == [root, standby]

        press(page, "form[action='/_/settings/keys/switch'] button")
        confirm(page)
        expect(page.locator("#notice")).to_contain_text("signs from now on")
        expect(page.locator(f"tr[data-kid='{standby}']")).to_have_attribute("data-state", "current")
        expect(page.locator(f"tr[data-kid='{root}']")).to_have_attribute("data-state", "previous")
        expect(page.locator(f"tr[data-kid='{root}']")).to_contain_text("possible from")
        page.screenshot(path=str(output_dir / "keys-switched.png"), full_page=True)

        press(page, f"tr[data-kid='{root}'] button")
        expect(page.locator("#question")).to_contain_text("legacy anon and service_role")
        page.screenshot(path=str(output_dir / "keys-confirm-retire-root.png"), full_page=True)
        confirm(page)
        expect(page.locator("#error")).to_contain_text("may still be valid")  # too early: refused, shown
        outside_the_loop(lambda: run_sql(database_url, "UPDATE gatehouse.signing_keys SET deactivated_at = "
                                         "deactivated_at - interval '30 days' WHERE kid = $1", root))
        page.goto(f"{server.url}/_/settings")
        expect(page.locator(f"tr[data-kid='{root}']")).to_contain_text("possible now")
        press(page, f"tr[data-kid='{root}'] button")
        confirm(page)
        expect(page.locator("#notice")).to_have_text("The key is retired.")
        expect(page.locator(f"tr[data-kid='{root}']")).to_have_attribute("data-state", "retired")
        assert page.evaluate("document.documentElement.scrollWidth") <= 360
        page.screenshot(path=str(output_dir / "keys-retired.png"), full_page=True)
    published = httpx.get(f"{server.url}/auth/v1/.well-known/jwks.json").json()["keys"]
    assert [key["kid"] for key in published] == [standby]
