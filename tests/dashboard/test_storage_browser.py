"""Chromium at 360 px through the Storage section: make a bucket, open it, upload a PNG through the
form, see it listed with its thumbnail, open it and delete it after the confirmation step.
Screenshots go to test-output/<test>/storage-*.png."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chromium import watched_page
from tests.dashboard.helpers import sign_in_page
from tests.dashboard.storage_helpers import new_bucket_id
from tests.support import RunningServer, png

try:
    from playwright.sync_api import Browser, FilePayload, Page, expect
except ImportError:  # pragma: no cover - the test extras install it
    pytest.skip("the Python package playwright is not installed (pip install -e '.[test]')", allow_module_level=True)


def fits(page: Page) -> None:
    assert page.evaluate("document.documentElement.scrollWidth") <= 360


def test_upload_see_the_thumbnail_and_delete(browser: Browser, server: RunningServer, admin_email: str,
                                             output_dir: Path) -> None:
    bucket = new_bucket_id("shots")
    with watched_page(browser, viewport={"width": 360, "height": 740}) as page:
        sign_in_page(page, server, admin_email)
        page.get_by_role("link", name="Storage").click()
        expect(page.locator("h1")).to_have_text("Storage")
        page.fill("#bucket-id", bucket)
        page.fill("#new-limit", "1MB")
        page.get_by_role("button", name="Create bucket").click()
        expect(page.locator("#notice")).to_have_text(f"Bucket {bucket} created.")
        page.get_by_role("link", name="Storage", exact=True).first.click()
        expect(page.get_by_role("link", name=bucket)).to_be_visible()
        fits(page)
        page.screenshot(path=str(output_dir / "storage-buckets.png"), full_page=True)
        page.get_by_role("link", name=bucket).click()
        expect(page.locator("#empty-folder")).to_be_visible()
        fits(page)
        page.screenshot(path=str(output_dir / "storage-bucket.png"), full_page=True)

        page.fill("#upload-name", "pictures/square.png")
        square: FilePayload = {"name": "square.png", "mimeType": "image/png", "buffer": png(300, "teal")}
        page.set_input_files("#upload-file", files=[square])
        page.locator("#upload").click()
        expect(page.locator("#notice")).to_have_text("Uploaded pictures/square.png.")
        page.get_by_role("link", name="pictures/").click()
        row = page.locator("tr.object", has_text="square.png")
        expect(row).to_have_count(1)
        thumbnail = row.locator("img")
        thumbnail.scroll_into_view_if_needed()
        page.wait_for_function("img => img.complete && img.naturalWidth === 96", arg=thumbnail.element_handle())
        fits(page)
        page.screenshot(path=str(output_dir / "storage-uploaded.png"), full_page=True)

        row.get_by_role("link", name="square.png").click()
        expect(page.locator("#object-name")).to_have_text("pictures/square.png")
        page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=page.locator("img.preview")
                               .element_handle())
        fits(page)
        page.screenshot(path=str(output_dir / "storage-object.png"), full_page=True)
        page.locator("#delete").click()
        expect(page.locator("#question")).to_contain_text("Delete pictures/square.png")
        page.screenshot(path=str(output_dir / "storage-confirm.png"), full_page=True)
        page.locator("#confirm").focus()
        page.keyboard.press("Enter")
        expect(page.locator("#notice")).to_have_text("Deleted pictures/square.png.")
        expect(page.locator("tr.object")).to_have_count(0)
        fits(page)
        page.screenshot(path=str(output_dir / "storage-deleted.png"), full_page=True)
