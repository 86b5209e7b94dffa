"""Debian's Chromium through Playwright, for the browser tests: one way to launch it, one rule when it is missing.

Playwright's own browser downloads cannot run here, so the tests drive the system's ``chromium``
(``executable_path``). Without it a test is skipped on a developer's machine and fails under CI,
where ``.ci/run`` installs it and a skip would hide a missing install step.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

IN_CI = bool(os.environ.get("CI"))
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",  # the suite runs as root
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@contextmanager
def chromium(*extra_args: str) -> Iterator[Browser]:
    """A headless Chromium for the block (``extra_args`` after the common ones)."""
    if not Path(CHROMIUM).exists():
        reason = f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)"
        if IN_CI:
            pytest.fail(reason + ": .ci/run installs it", pytrace=False)
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[*ARGS, *extra_args], headless=True)
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def watched_page(browser: Browser, timeout_ms: int = 30_000, **context_options: object) -> Iterator[Page]:
    """A page in a context of its own; a JavaScript error the page raised fails the test at the end.
    Each action may take ``timeout_ms``: under ``make test`` two browsers and their servers share
    two cores, and a full-page screenshot has been seen to take more than 15 s there."""
    context = browser.new_context(**context_options)  # type: ignore[arg-type]
    context.set_default_timeout(timeout_ms)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        yield page
    finally:
        context.close()
    assert errors == [], f"a page raised a JavaScript error: {errors}"
