"""Chromium at 360 px, by keyboard: the Mail section (a refused test email, retried once the SMTP
server accepts, then sent) and the Health section (its four charts drawn by uPlot, under the
dashboard's CSP). Screenshots go to test-output/."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.chromium import watched_page
from tests.dashboard.helpers import sign_in_page
from tests.dashboard.test_mail import Switchable, smtp, smtp_port  # noqa: F401 - the same SMTP server
from tests.smtp import smtp_env
from tests.support import RunningServer

try:
    from playwright.sync_api import Browser, ConsoleMessage, Page, expect
except ImportError:  # pragma: no cover - the test extras install it
    pytest.skip("the Python package playwright is not installed (pip install -e '.[test]')", allow_module_level=True)

VIEWPORT = {"width": 360, "height": 740}


@pytest.fixture(scope="module")
def server(server_factory: Callable[..., RunningServer], smtp: Switchable, smtp_port: int) -> RunningServer:  # noqa: F811
    return server_factory(env=smtp_env(smtp_port) | {"GATEHOUSE_MAIL_MAX_ATTEMPTS": "1",
                                                     "GATEHOUSE_METRICS_SAMPLE_INTERVAL": "0.5"})


def reload_until(page: Page, selector: str, text: str) -> None:
    """Reload until ``selector`` says ``text``: the outbox's sender works in the server's own time.
    Each change redirected to the message's page, so a reload reads it again and never posts again."""
    deadline = time.monotonic() + 30
    while text not in page.locator(selector).inner_text():
        assert time.monotonic() < deadline, f"{selector} never said {text!r}"
        page.wait_for_timeout(100)
        page.reload()
    assert "/retry" not in page.url and "/test" not in page.url


def no_csp_violations(page: Page) -> Callable[[], list[str]]:
    seen: list[str] = []

    def keep(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text or "Refused to" in message.text:
            seen.append(message.text)

    page.on("console", keep)
    return lambda: seen


def test_mail_retry_at_360_px(browser: Browser, server: RunningServer, smtp: Switchable,  # noqa: F811
                              admin_email: str, output_dir: Path) -> None:
    smtp.refusing = True
    with watched_page(browser, viewport=VIEWPORT) as page:
        violations = no_csp_violations(page)
        sign_in_page(page, server, admin_email)
        page.get_by_role("link", name="Mail", exact=True).focus()
        page.keyboard.press("Enter")
        expect(page.locator("h1")).to_have_text("Mail")
        page.locator("#test-to").focus()
        page.keyboard.type("browser-retry@example.com")
        page.keyboard.press("Enter")
        expect(page.locator("#notice")).to_contain_text("The test email is in the outbox")
        expect(page.locator("#to")).to_have_text("browser-retry@example.com")
        reload_until(page, "#status", "failed")
        expect(page.locator("#attempts")).to_contain_text("554 5.7.1 Message refused by policy")
        assert page.evaluate("document.documentElement.scrollWidth") <= 360
        page.screenshot(path=str(output_dir / "mail-failed-360.png"), full_page=True)

        smtp.refusing = False
        page.locator("#retry").focus()  # by keyboard
        page.keyboard.press("Enter")
        expect(page.locator("#notice")).to_contain_text("The message is due now")
        reload_until(page, "#status", "sent")
        expect(page.locator("#attempts")).to_contain_text("250 2.0.0 Ok: queued as")
        page.screenshot(path=str(output_dir / "mail-sent-360.png"), full_page=True)
        assert any(received.recipients == ["browser-retry@example.com"] for received in smtp.received)

        page.goto(f"{server.url}/_/mail")
        expect(page.locator("#fig-backlog")).to_be_visible()
        assert page.evaluate("document.documentElement.scrollWidth") <= 360
        page.screenshot(path=str(output_dir / "mail-outbox-360.png"), full_page=True)
        page.get_by_role("link", name="confirmation", exact=True).click()
        frame = page.frame_locator("#preview")
        expect(frame.locator("body")).to_contain_text("123456")
        assert page.evaluate("document.documentElement.scrollWidth") <= 360
        page.screenshot(path=str(output_dir / "mail-template-360.png"), full_page=True)
        assert violations() == []


def test_health_charts_at_360_px_and_wide(browser: Browser, server: RunningServer, admin_email: str,
                                          output_dir: Path) -> None:
    for width, height in ((360, 740), (1280, 900)):
        with watched_page(browser, viewport={"width": width, "height": height}) as page:
            violations = no_csp_violations(page)
            sign_in_page(page, server, admin_email)
            expect(page.locator("#health-figures")).to_be_visible()  # the overview loaded them (htmx, CSRF header)
            page.get_by_role("link", name="Health", exact=True).focus()
            page.keyboard.press("Enter")
            expect(page.locator("h1")).to_have_text("Health")
            for chart in ("rate", "errors", "latency", "pool"):
                expect(page.locator(f"#chart-{chart} canvas")).to_have_count(1)
            expect(page.locator("#chart-latency .u-legend")).to_contain_text("p99 ms")
            expect(page.locator("#chart-error")).to_be_hidden()
            assert page.evaluate("document.documentElement.scrollWidth") <= width
            page.screenshot(path=str(output_dir / f"health-{width}.png"), full_page=True)
            assert violations() == []
