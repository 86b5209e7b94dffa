"""The development inbox: the outbox shown as a page (``/_inbox``) and as JSON (``/_inbox/messages``).

Without SMTP the outbox is where mail ends up, so in development this is how a person (or a
test) reads the confirmation link and code. The app mounts these routes in development mode
only: the messages hold live sign-in links. Everything a message contains is escaped; its
HTML part is shown in a sandboxed frame, under a policy that allows no script at all.
"""

from __future__ import annotations

import re
from importlib import resources
from typing import Any

from jinja2 import Environment
from markupsafe import Markup, escape
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from gatehouse.core.db import Database
from gatehouse.core.http import JSONResponse
from gatehouse.mail.outbox import OutboxEntry, recent

DEFAULT_LIMIT = 50
MAX_LIMIT = 500

#: No script, no plugin, no form; inline styles and remote images (as mail clients allow).
_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src http: https: data:; frame-src 'self'; "
        "form-action 'none'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}

# Runs on already-escaped text, so an entity (&lt; &gt; &#34; &#39;) ends a link.
_URL = re.compile(r"https?://(?:(?!&lt;|&gt;|&#34;|&#39;)[^\s<>\"'])+")
_TRAILING = ".,:!?)]"


def linkify(text: str) -> Markup:
    """Escape ``text`` and make its http(s) links clickable."""

    def link(match: re.Match[str]) -> str:
        url = match.group(0)
        tail = ""
        while url and url[-1] in _TRAILING:
            url, tail = url[:-1], url[-1] + tail
        return f'<a href="{url}">{url}</a>{tail}'

    return Markup(_URL.sub(link, str(escape(text))))


_env = Environment(autoescape=True)
_env.filters["linkify"] = linkify
_page = _env.from_string((resources.files("gatehouse.mail") / "inbox.html").read_text(encoding="utf-8"))


def _query(request: Request) -> tuple[int, str | None]:
    try:
        limit = int(request.query_params.get("limit", DEFAULT_LIMIT))
    except ValueError:
        limit = DEFAULT_LIMIT
    to = request.query_params.get("to") or None
    return max(1, min(limit, MAX_LIMIT)), to


def as_json(entry: OutboxEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "to": entry.to,
        "subject": entry.subject,
        "text": entry.text,
        "html": entry.html,
        "kind": entry.kind,
        "created_at": entry.created_at.isoformat(),
        "status": entry.status,
        "attempts": entry.attempts,
        "sent_at": entry.sent_at.isoformat() if entry.sent_at else None,
        "last_error": entry.last_error,
        "user_id": str(entry.user_id) if entry.user_id else None,
    }


def routes(database: Database) -> list[Route]:
    """The inbox's two routes, reading ``database``'s outbox (development only: see app.py)."""

    async def inbox_page(request: Request) -> Response:
        limit, to = _query(request)
        messages = await recent(database.admin, limit, to=to)
        html = _page.render(
            messages=messages,
            json_url=request.url_for("inbox_messages"),
            # Links in a message's HTML open outside the sandboxed frame.
            frame_prefix='<base target="_blank">',  # escaped into the srcdoc attribute
        )
        return HTMLResponse(html, headers=_HEADERS)

    async def inbox_messages(request: Request) -> Response:
        """``{"messages": [...]}``, newest first; ``?to=`` keeps one address, ``?limit=`` caps the count."""
        limit, to = _query(request)
        messages = await recent(database.admin, limit, to=to)
        return JSONResponse({"messages": [as_json(entry) for entry in messages]}, headers=_HEADERS)

    return [
        Route("/_inbox", inbox_page, methods=["GET"], name="inbox"),
        Route("/_inbox/messages", inbox_messages, methods=["GET"], name="inbox_messages"),
    ]
