"""What every dashboard page shares: who is visiting (their session, read once per request),
rendering with the pages' security headers, CSRF checks, and where to send a visitor who may
not see a page yet.

A handler calls ``signed_in`` (pages) or ``signed_in_form`` (changes) first and gets either the
``Visit`` or the response to return instead: the log-in page, the TOTP step, or a 403.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.templating import Jinja2Templates

from gatehouse.dashboard.service import Dashboard
from gatehouse.dashboard.sessions import PRE_CSRF_COOKIE, SESSION_COOKIE, DashboardSession, csrf_matches
from gatehouse.services import services
from gatehouse.web.pages import PAGE_HEADERS

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=str(HERE / "templates"))
#: JSON shown as text (metadata): escaped by the templates' autoescape like any other text.
templates.env.filters["pretty"] = lambda value: json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False,
                                                           default=str)
CSRF_HEADER = "x-csrf-token"


@dataclass
class Visit:
    """The visitor of one request: their session token and session (if live), their CSRF token,
    and the cookies the response must set."""

    token: str | None
    session: DashboardSession | None
    csrf: str
    set_cookies: list[str] = field(default_factory=list)


def dashboard(request: Request) -> Dashboard:
    return services(request).dashboard


def client_ip(request: Request) -> str:
    return request.client.host if request.client else ""


async def visit(request: Request) -> Visit:
    """Who is visiting, read once per request (an idle session ends here)."""
    cached = request.scope.setdefault("state", {}).get("dashboard_visit")
    if isinstance(cached, Visit):
        return cached
    dash = dashboard(request)
    token = request.cookies.get(SESSION_COOKIE) or None
    session = await dash.sessions.load(token) if token else None
    found = Visit(token=token if session else None, session=session, csrf="")
    if token and session is None:
        found.set_cookies.append(dash.sessions.clear_cookie())
    if session is not None and token:
        found.csrf = dash.sessions.csrf_for_session(token)
    else:
        found.csrf = request.cookies.get(PRE_CSRF_COOKIE, "")
        if len(found.csrf) != 43:
            found.csrf = secrets.token_urlsafe(32)
            found.set_cookies.append(dash.sessions.pre_csrf_cookie(found.csrf))
    request.scope["state"]["dashboard_visit"] = found
    return found


def finish(response: Response, current: Visit) -> Response:
    """The response with the security headers and the visit's cookies."""
    response.headers.update(PAGE_HEADERS)
    for value in current.set_cookies:
        response.headers.append("set-cookie", value)
    return response


def render(request: Request, current: Visit, name: str, status: int = 200, **context: Any) -> Response:
    dash = dashboard(request)
    page = templates.TemplateResponse(
        request, name,
        {"csrf": current.csrf, "admin": current.session.admin if current.session and current.session.stage == "full"
         else None, "development": dash.development, "now_ts": time.time(), **context},
        status_code=status,
    )
    return finish(page, current)


def redirect(current: Visit, to: str) -> Response:
    return finish(RedirectResponse(to, status_code=303), current)


def refused(request: Request, current: Visit) -> Response:
    return render(request, current, "error.html", status=403, title="Refused",
                  message="This request did not come from a dashboard page (its CSRF token is missing or wrong). "
                  "Reload the page and try again.")


def csrf_header_ok(request: Request, current: Visit) -> bool:
    """htmx requests carry the token in a header: refused without it, whatever their method."""
    if request.headers.get("hx-request") != "true":
        return True  # a plain page load; forms are checked by ``form``
    return csrf_matches(current.csrf, request.headers.get(CSRF_HEADER))


async def form(request: Request, current: Visit) -> dict[str, str] | None:
    """The posted form if its CSRF token (field or header) is this visitor's, else None."""
    data = {key: value for key, value in (await request.form(max_files=0, max_fields=20)).items()
            if isinstance(value, str)}
    if csrf_matches(current.csrf, data.get("csrf")) or csrf_matches(current.csrf, request.headers.get(CSRF_HEADER)):
        return data
    return None


async def signed_in(request: Request) -> Visit | Response:
    """The visit of an administrator through every step of sign-in, or where to send them."""
    current = await visit(request)
    if current.session is None:
        return redirect(current, "/_/login")
    if current.session.stage == "totp":
        return redirect(current, "/_/login/totp")
    if current.session.stage == "enrol":
        return redirect(current, "/_/totp")
    if not csrf_header_ok(request, current):
        return refused(request, current)
    return current


async def signed_in_form(request: Request) -> tuple[Visit, dict[str, str]] | Response:
    """A form posted by a signed-in administrator, its CSRF token checked (403 otherwise)."""
    current = await signed_in(request)
    if isinstance(current, Response):
        return current
    data = await form(request, current)
    if data is None:
        return refused(request, current)
    return current, data
