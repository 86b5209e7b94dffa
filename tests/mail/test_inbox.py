"""The development inbox: the outbox as a page and as JSON, newest first, everything escaped."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette

from gatehouse.core.config import Settings
from gatehouse.core.db import Database
from gatehouse.mail import Message, Templates, enqueue
from gatehouse.mail.inbox import linkify, routes


@pytest.fixture(autouse=True)
async def empty_outbox(db: Database) -> None:
    await db.admin.execute("TRUNCATE gatehouse.mail_outbox CASCADE")


@pytest.fixture(scope="module")
async def client(db: Database) -> AsyncIterator[httpx.AsyncClient]:
    app = Starlette(routes=routes(db))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client:
        yield client


async def queue(db: Database, *messages: Message) -> None:
    async with db.admin.acquire() as conn, conn.transaction():
        for message in messages:
            await enqueue(conn, message)


async def test_messages_as_json_newest_first(db: Database, client: httpx.AsyncClient, settings: Settings) -> None:
    confirmation = Templates(settings).message(
        "confirmation", "alice@example.com", action_url="http://127.0.0.1:8000/auth/v1/verify?token=t", token="123456"
    )
    await queue(db, confirmation, Message(to="bob@example.com", subject="Second", text="two", kind="test"))

    response = await client.get("/_inbox/messages")

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    second, first = response.json()["messages"]
    assert {key: second[key] for key in ("to", "subject", "text", "html", "kind", "status")} == {
        "to": "bob@example.com",
        "subject": "Second",
        "text": "two",
        "html": None,
        "kind": "test",
        "status": "pending",
    }
    assert first["kind"] == "confirmation" and first["to"] == "alice@example.com"
    assert "123456" in first["text"] and "123456" in first["html"]
    assert first["id"] < second["id"]
    assert first["created_at"].endswith("+00:00")


async def test_json_filters_by_address_and_limits(db: Database, client: httpx.AsyncClient) -> None:
    await queue(db, *(Message(to=f"u{n % 2}@example.com", subject=f"m{n}", text="t") for n in range(5)))

    only = (await client.get("/_inbox/messages", params={"to": "U1@example.com"})).json()["messages"]
    assert [m["subject"] for m in only] == ["m3", "m1"]
    limited = (await client.get("/_inbox/messages", params={"limit": "2"})).json()["messages"]
    assert [m["subject"] for m in limited] == ["m4", "m3"]
    nonsense = (await client.get("/_inbox/messages", params={"limit": "lots"})).json()["messages"]
    assert len(nonsense) == 5


async def test_page_lists_messages_with_clickable_links(db: Database, client: httpx.AsyncClient) -> None:
    link = "http://127.0.0.1:8000/auth/v1/verify?token=abc&type=signup"
    await queue(
        db, Message(to="alice@example.com", subject="Confirm", text=f"Open {link}.\nCode: 123456", kind="confirmation")
    )

    response = await client.get("/_inbox")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "script-src" not in response.headers["content-security-policy"]  # default-src 'none': no script
    page = response.text
    assert "alice@example.com" in page and "Confirm" in page and "pending" in page and "confirmation" in page
    escaped = link.replace("&", "&amp;")
    assert f'<a href="{escaped}">{escaped}</a>.' in page  # the sentence's full stop is not part of the link
    assert "Code: 123456" in page


async def test_page_escapes_everything(db: Database, client: httpx.AsyncClient) -> None:
    await queue(
        db,
        Message(
            to="<script>to()</script>@example.com",
            subject="<script>subject()</script>",
            text='<script>text()</script> https://x.example/"><script>link()</script>',
            html='<p onclick="x()">"quoted"</p><script>html()</script>',
            kind="<b>kind</b>",
        ),
    )

    page = (await client.get("/_inbox")).text

    assert "<script>" not in page
    assert "&lt;script&gt;subject()&lt;/script&gt;" in page
    assert "&lt;b&gt;kind&lt;/b&gt;" in page
    # The HTML part lives only inside the sandboxed frame's attribute, fully escaped.
    assert 'srcdoc="&lt;base target=&#34;_blank&#34;&gt;&lt;p onclick=&#34;x()&#34;&gt;' in page
    assert "sandbox=" in page


async def test_empty_inbox(client: httpx.AsyncClient) -> None:
    assert "No mail yet." in (await client.get("/_inbox")).text
    assert (await client.get("/_inbox/messages")).json() == {"messages": []}


@pytest.mark.parametrize(
    ("text", "html"),
    [
        (
            "see https://a.example/x?y=1&z=2",
            'see <a href="https://a.example/x?y=1&amp;z=2">https://a.example/x?y=1&amp;z=2</a>',
        ),
        ("(https://a.example/p)", '(<a href="https://a.example/p">https://a.example/p</a>)'),
        ("<https://a.example/>", '&lt;<a href="https://a.example/">https://a.example/</a>&gt;'),
        ("javascript:alert(1) ftp://a.example", "javascript:alert(1) ftp://a.example"),
        (
            'https://a.example/"onmouseover="x',
            '<a href="https://a.example/">https://a.example/</a>&#34;onmouseover=&#34;x',
        ),
    ],
)
def test_linkify(text: str, html: str) -> None:
    assert linkify(text) == html
