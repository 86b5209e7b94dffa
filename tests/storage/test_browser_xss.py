"""Stored XSS through Storage, in a real browser (Chromium via Playwright): no payload runs script.

The payloads are those reproduced against the app (security issue #12, item 1): a script in
HTML, an XSL document (alone, and as the stylesheet of an XML document) with a script, SVG with a
script, the comma-joined types ``text/plain,text/html`` and ``application/octet-stream,text/html``
that Chromium reads as HTML, mixed-case types and types with parameters. Each is opened by
navigation through every download route (public, the plain object route, a signed URL), from a
bucket that serves documents as attachments and from one that serves them inline (where only the
sandbox stands between the page and its script), and through the storage origin.

A payload's script would set the title to ``XSS``, mark the document, call a function the test
exposes to every page and fetch a marker URL; none of that may happen. Comma-joined types can no
longer be uploaded, so they are written into the rows in SQL, as rows stored before the fix.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from PIL import Image

from gatehouse.core.db import Database
from gatehouse.core.embedded import free_port
from tests.chromium import IN_CI, chromium
from tests.support import RunningServer

try:
    from playwright.sync_api import Browser, BrowserContext, Download, Page, Request
    from playwright.sync_api import Error as PlaywrightError
except ImportError:  # pragma: no cover - the test extras install it
    if IN_CI:
        raise
    pytest.skip("the Python package playwright is not installed (pip install -e '.[test]')", allow_module_level=True)

STORAGE_HOST = "files.gatehouse.test"
TIMEOUT_MS = 15_000
MARKER = "xss-marker"


def script(origin: str) -> str:
    """What every payload tries: each of these is evidence that script ran."""
    return (
        "document.title='XSS';document.documentElement.setAttribute('data-xss','ran');"
        "if(window.xssRan){window.xssRan(location.href)}"
        f"fetch('{origin}/{MARKER}').catch(function(){{}});new Image().src='{origin}/{MARKER}-img';"
    )


def html(origin: str) -> bytes:
    return (f"<!doctype html><html><head><title>stored</title></head><body><p id='shown'>stored page</p>"
            f"<script>{script(origin)}</script><img src=x onerror=\"{script(origin)}\"></body></html>").encode()


def svg(origin: str) -> bytes:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10" onload="{script(origin)}">'
            f'<rect id="shown" width="10" height="10"/><script>{script(origin)}</script></svg>').encode()


def xsl(origin: str) -> bytes:
    """An XSL stylesheet is itself an XML document; opened alone, its XHTML script would run too."""
    return (
        '<?xml version="1.0"?>\n'
        '<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform" '
        'xmlns="http://www.w3.org/1999/xhtml">'
        '<xsl:template match="/"><html><head><title>stored</title></head><body><p id="shown">transformed</p>'
        f"<script>{script(origin)}</script></body></html></xsl:template>"
        f'<script xmlns="http://www.w3.org/1999/xhtml">{script(origin)}</script>'
        "</xsl:stylesheet>"
    ).encode()


def xml_with_stylesheet(stylesheet: str) -> bytes:
    return f'<?xml version="1.0"?>\n<?xml-stylesheet type="text/xsl" href="{stylesheet}"?>\n<doc id="shown">data</doc>'.encode()


@dataclass(frozen=True)
class Payload:
    name: str
    body: bytes
    upload_as: str
    stored_as: str  # the type in the row (set in SQL when it can no longer be uploaded)


def payloads(origin: str) -> list[Payload]:
    page, picture, sheet = html(origin), svg(origin), xsl(origin)
    return [
        Payload("page.html", page, "text/html", "text/html"),
        Payload("upper.html", page, "TEXT/HTML", "text/html"),
        Payload("charset.html", page, "Text/Html; charset=utf-8", "text/html"),
        Payload("xhtml.xhtml", page.replace(b"<!doctype html><html>", b'<html xmlns="http://www.w3.org/1999/xhtml">'),
                "application/xhtml+xml", "application/xhtml+xml"),
        Payload("sheet.xsl", sheet, "text/xsl", "text/xsl"),
        Payload("sheet-upper.xsl", sheet, "TEXT/XSL; charset=UTF-8", "text/xsl"),
        Payload("doc.xml", xml_with_stylesheet("sheet.xsl"), "text/xml", "text/xml"),
        Payload("doc-app.xml", xml_with_stylesheet("sheet.xsl"), "application/xml; charset=utf-8", "application/xml"),
        Payload("picture.svg", picture, "image/svg+xml", "image/svg+xml"),
        Payload("picture-upper.svg", picture, "IMAGE/SVG+XML; charset=utf-8", "image/svg+xml"),
        Payload("plain-html.txt", page, "text/plain", "text/plain,text/html"),
        Payload("octet-html.bin", page, "text/plain", "application/octet-stream,text/html"),
        Payload("spaced-html.txt", page, "text/plain", "text/plain, text/html"),
        Payload("xsl-list.txt", sheet, "text/plain", "text/plain,text/xsl"),
    ]


@dataclass(frozen=True)
class Stored:
    server: RunningServer
    split: RunningServer  # a server with a storage origin
    storage_origin: str
    payloads: list[Payload]
    signed: dict[tuple[str, str, str], str]  # (server url, bucket, name) -> signed path


async def _store(server: RunningServer, db: Database, bucket: str, inline: bool, items: list[Payload],
                 signed: dict[tuple[str, str, str], str]) -> None:
    admin = httpx.AsyncClient(base_url=f"{server.url}/storage/v1", headers={"apikey": server.keys.secret_key}, timeout=15)
    async with admin:
        created = await admin.post("/bucket", json={"id": bucket, "public": True, "inline_documents": inline})
        assert created.status_code == 200, created.text
        for item in items:
            put = await admin.post(f"/object/{bucket}/{item.name}", content=item.body,
                                   headers={"Content-Type": item.upload_as})
            assert put.status_code == 200, (item, put.text)
            answer = await admin.post(f"/object/sign/{bucket}/{item.name}", json={"expiresIn": 600})
            signed[(server.url, bucket, item.name)] = "/storage/v1" + answer.json()["signedURL"]
    for item in items:  # the rows as they were stored before uploads were checked
        await db.admin.execute(
            "UPDATE storage.objects SET metadata = jsonb_set(metadata, '{mimetype}', to_jsonb($3::text)) "
            "WHERE bucket_id = $1 AND name = $2", bucket, item.name, item.stored_as,
        )


@pytest.fixture(scope="module")
async def stored(server_factory: Callable[..., RunningServer], db: Database,
                 tmp_path_factory: pytest.TempPathFactory) -> Stored:
    files = {"GATEHOUSE_STORAGE_DIR": str(tmp_path_factory.mktemp("shared-storage"))}  # one database, one folder
    server = server_factory(env=files)
    port = free_port()
    storage_origin = f"http://{STORAGE_HOST}:{port}"
    split = server_factory(port=port, env=files | {"GATEHOUSE_STORAGE_PUBLIC_URL": storage_origin})
    items = payloads(server.url)
    signed: dict[tuple[str, str, str], str] = {}
    await _store(server, db, "drops", False, items, signed)
    await _store(server, db, "site", True, items, signed)
    # the same database: the split server serves the same rows
    for bucket in ("drops", "site"):
        for item in items:
            signed[(split.url, bucket, item.name)] = signed[(server.url, bucket, item.name)]
    return Stored(server, split, storage_origin, items, signed)


@pytest.fixture(scope="module")
def browser(stored: Stored) -> Iterator[Browser]:
    """Headless Chromium, started after the async fixtures (its sync API marks the loop as running)."""
    with chromium(f"--host-resolver-rules=MAP {STORAGE_HOST} 127.0.0.1") as browser:
        yield browser


class Evidence:
    """Everything that would show a payload's script ran."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.marker_requests: list[str] = []
        self.downloads: list[str] = []
        self.dialogs: list[str] = []

    def on_request(self, request: Request) -> None:
        if MARKER in request.url:
            self.marker_requests.append(request.url)

    def on_download(self, download: Download) -> None:
        self.downloads.append(download.url)


@pytest.fixture
def evidence() -> Evidence:
    return Evidence()


@pytest.fixture
def context(browser: Browser, evidence: Evidence) -> Iterator[BrowserContext]:
    ctx = browser.new_context(accept_downloads=True)
    ctx.set_default_timeout(TIMEOUT_MS)
    ctx.expose_binding("xssRan", lambda source, url: evidence.calls.append(str(url)))
    ctx.on("request", evidence.on_request)
    yield ctx
    ctx.close()
    assert evidence.calls == [], f"a payload's script ran: {evidence.calls}"
    assert evidence.marker_requests == [], f"a payload's script made requests: {evidence.marker_requests}"
    assert evidence.dialogs == []


def open_payload(context: BrowserContext, evidence: Evidence, url: str) -> tuple[Page, bool]:
    """Navigate a new tab to ``url``; (the tab, whether a document was shown rather than downloaded)."""
    tab = context.new_page()
    tab.on("download", evidence.on_download)
    tab.on("dialog", lambda dialog: (evidence.dialogs.append(dialog.message), dialog.dismiss()))
    try:
        tab.goto(url, wait_until="load")
    except PlaywrightError as error:
        assert "Download is starting" in str(error) or "ERR_ABORTED" in str(error), str(error)
        return tab, False
    return tab, True


def assert_no_script(tab: Page, url: str) -> None:
    assert tab.title() != "XSS", f"script ran at {url}"
    marked = "document.documentElement ? document.documentElement.getAttribute('data-xss') : null"
    assert tab.evaluate(marked) is None, f"script ran at {url}"


def routes(stored: Stored, server: RunningServer, bucket: str, name: str) -> list[str]:
    return [
        f"{server.url}/storage/v1/object/public/{bucket}/{name}",
        f"{server.url}/storage/v1/object/{bucket}/{name}",
        f"{server.url}{stored.signed[(server.url, bucket, name)]}",
    ]


def test_attachment_bucket_downloads_every_payload(stored: Stored, context: BrowserContext, evidence: Evidence) -> None:
    shown = []
    for item in stored.payloads:
        for url in routes(stored, stored.server, "drops", item.name):
            tab, rendered = open_payload(context, evidence, url)
            if rendered:  # a type that is not a document (a legacy comma list becomes octet-stream: a download)
                shown.append(url)
                assert_no_script(tab, url)
            tab.close()
    assert shown == [], f"documents were shown instead of downloaded: {shown}"
    assert len(evidence.downloads) == 3 * len(stored.payloads)


def test_inline_bucket_shows_documents_without_running_their_script(stored: Stored, context: BrowserContext,
                                                                    evidence: Evidence) -> None:
    """Only the sandbox stands between these documents and their script: it must hold in Chromium."""
    shown = 0
    for item in stored.payloads:
        for url in routes(stored, stored.server, "site", item.name):
            tab, rendered = open_payload(context, evidence, url)
            if rendered:
                shown += 1
                assert_no_script(tab, url)
                if item.stored_as in ("text/html", "image/svg+xml", "application/xhtml+xml"):
                    assert tab.locator("#shown").count() == 1, f"the document was not shown at {url}"
            tab.close()
    # every real document type is shown inline; the legacy comma lists are served as octet-stream downloads
    legacy = sum(1 for item in stored.payloads if "," in item.stored_as)
    assert shown == 3 * (len(stored.payloads) - legacy)
    assert len(evidence.downloads) == 3 * legacy


def test_the_storage_origin_takes_every_navigation(stored: Stored, context: BrowserContext, evidence: Evidence) -> None:
    storage_host = urlsplit(stored.storage_origin).netloc
    for bucket in ("drops", "site"):
        for item in stored.payloads:
            for url in routes(stored, stored.split, bucket, item.name):
                requested: list[str] = []

                def record(request: Request, requested: list[str] = requested) -> None:
                    requested.append(request.url)

                context.on("request", record)
                tab, rendered = open_payload(context, evidence, url)
                if rendered:
                    assert urlsplit(tab.url).netloc == storage_host, f"{url} was shown on {tab.url}"
                    assert_no_script(tab, url)
                assert any(urlsplit(r).netloc == storage_host for r in requested), f"{url} was not redirected"
                context.remove_listener("request", record)
                tab.close()


def test_a_plain_fetch_from_a_page_is_not_redirected(stored: Stored, context: BrowserContext, evidence: Evidence) -> None:
    """supabase-js downloads with fetch(): on the app's origin it gets the bytes, not a redirect."""
    tab = context.new_page()
    tab.goto(f"{stored.split.url}/login")
    url = f"{stored.split.url}/storage/v1/object/public/drops/page.html"
    result = tab.evaluate(
        "async (url) => { const r = await fetch(url, {redirect: 'manual'}); "
        "return {status: r.status, redirected: r.redirected, body: await r.text()}; }", url,
    )
    assert result["status"] == 200 and not result["redirected"] and "stored page" in result["body"]
    tab.close()


def test_the_account_page_shows_the_avatar_from_the_storage_origin(
    stored: Stored, context: BrowserContext, evidence: Evidence, tmp_path: Path
) -> None:
    """With a storage origin the pages build object URLs on it, and the app's cookies never go there."""
    email, password = f"avatar-{uuid.uuid4().hex[:8]}@example.com", "a-long-Passphrase-for-the-origin-42"
    created = httpx.post(f"{stored.split.url}/auth/v1/admin/users", headers={"apikey": stored.split.keys.secret_key},
                         json={"email": email, "password": password, "email_confirm": True})
    assert created.status_code == 200, created.text
    storage_host = urlsplit(stored.storage_origin).netloc
    to_storage: list[dict[str, str]] = []

    def record(request: Request) -> None:
        if urlsplit(request.url).netloc == storage_host:
            to_storage.append(request.all_headers())

    context.on("request", record)
    tab = context.new_page()
    tab.goto(f"{stored.split.url}/login")
    tab.fill("#email", email)
    tab.fill("#password", password)
    tab.get_by_role("button", name="Log in", exact=True).click()
    tab.wait_for_url(f"{stored.split.url}/account")
    picture = tmp_path / "me.png"
    Image.new("RGB", (200, 200), (200, 80, 20)).save(picture)
    tab.set_input_files("#avatar", str(picture))
    tab.get_by_role("button", name="Upload", exact=True).click()
    tab.wait_for_url(re.compile(r"/account\?avatar=updated$"))
    src = tab.locator("img#avatar-image").get_attribute("src") or ""
    assert src.startswith(f"{stored.storage_origin}/storage/v1/render/image/public/avatars/"), src
    tab.wait_for_function(
        "() => { const i = document.querySelector('img#avatar-image'); return i && i.complete && i.naturalWidth > 0 }"
    )
    assert context.cookies(stored.split.url), "signed in: the app's origin has cookies"
    assert to_storage and all("cookie" not in headers for headers in to_storage), to_storage
    context.remove_listener("request", record)
    tab.close()
