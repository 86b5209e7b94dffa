"""What every page of the user-management app shares: rendering with the pages' headers, reading
a form (and checking its CSRF token), the signed-in user, and the way back to the log-in page.

Pages call the same services as the HTTP APIs, in-process, passing plain arguments: never a
``Request``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.templating import Jinja2Templates

from gatehouse.auth.service import AuthService, Client
from gatehouse.core.errors import GatehouseError
from gatehouse.services import services
from gatehouse.web.session import WebSession, clear, csrf_ok, web_session

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=str(HERE / "templates"))
PAGE_CSP = (
    "default-src 'self'; img-src 'self' {storage}blob: data:; script-src 'self'; "
    "style-src 'self' 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": PAGE_CSP.format(storage=""),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
}


def auth(request: Request) -> AuthService:
    return services(request).auth


def client(request: Request) -> Client:
    return Client(ip=request.client.host if request.client else "", user_agent=request.headers.get("user-agent", ""))


def page(request: Request, name: str, status: int = 200, **context: Any) -> Response:
    session = web_session(request)
    settings = services(request).settings
    context.setdefault("user_id", session.user_id)
    return templates.TemplateResponse(
        request, name, {"csrf": session.csrf, "development": settings.environment == "development", **context},
        status_code=status, headers=_page_headers(settings.storage_public_url),
    )


def _page_headers(storage_url: str | None) -> dict[str, str]:
    """The pages' headers; images may also come from the storage origin when there is one."""
    if not storage_url:
        return PAGE_HEADERS
    return PAGE_HEADERS | {"Content-Security-Policy": PAGE_CSP.format(storage=f"{storage_url} ")}


def secure(request: Request) -> bool:
    """Whether the session cookies may only travel over HTTPS."""
    return bool(services(request).settings.public_site_url.startswith("https://"))


def error_page(request: Request, message: str, status: int = 400, *, hint: str = "") -> Response:
    return page(request, "error.html", status=status, message=message, hint=hint)


async def read_form(request: Request) -> dict[str, Any]:
    form = await request.form(max_files=1, max_fields=20)
    return dict(form)


async def checked_form(request: Request) -> dict[str, Any] | Response:
    """The posted form, or the error page when its CSRF token is not this session's."""
    data = await read_form(request)
    if not csrf_ok(web_session(request), data.get("csrf")):
        return error_page(request, "This form expired or did not come from this site.", 403,
                          hint="Go back, reload the page and send it again.")
    return data


async def current_user(request: Request) -> WebSession | None:
    """The signed-in user, if the token is good and the session still exists."""
    session = web_session(request)
    if not session.claims:
        return None
    try:
        session.user = await auth(request).account.current_user(session.claims)
    except GatehouseError:
        clear(session, secure=secure(request))
        return None
    return session


def to_login() -> Response:
    return RedirectResponse("/login", status_code=303)


def second_factor_pending(session: WebSession) -> bool:
    """Whether this browser's user (as ``current_user`` read it) has a verified second factor not
    yet passed in this session."""
    if (session.claims or {}).get("aal") == "aal2" or session.user is None:
        return False
    return any(factor.status == "verified" for factor in session.user.factors)


def to_second_factor() -> Response:
    return RedirectResponse("/login/factor", status_code=303)


async def signed_in_page(request: Request) -> WebSession | Response:
    """The signed-in user for a page of theirs, or where to send the browser instead: the log-in
    page, or the second step when the user has a second factor this session has not passed."""
    session = await current_user(request)
    if session is None:
        return to_login()
    if second_factor_pending(session):
        return to_second_factor()
    return session


async def signed_in_form(request: Request) -> tuple[WebSession, dict[str, Any]] | Response:
    """A form posted by the signed-in user (``signed_in_page``), its CSRF token checked."""
    session = await signed_in_page(request)
    if isinstance(session, Response):
        return session
    data = await checked_form(request)
    if isinstance(data, Response):
        return data
    return session, data
