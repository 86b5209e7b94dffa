"""Browser sessions in cookies, refreshed before the page runs, and CSRF tokens for every form.

The access and refresh tokens live in HttpOnly, SameSite=Lax cookies (Secure when the site URL
is https). ``SessionMiddleware`` runs before every page: when the access token has expired (or
is missing) and a refresh token is there, it rotates the refresh token through the auth service,
hands the page the new claims, and writes the new cookies on the response, as the Supabase SSR
proxy does. Pages that need a user also check that the session still exists, so a sign-out
elsewhere logs the browser out.

CSRF: a random token in its own HttpOnly cookie, repeated in a hidden field of every form
(double submit); a POST whose field does not match is refused. SameSite=Lax already stops
cross-site POSTs in current browsers; the token covers the rest.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gatehouse.auth.models import Session, User
from gatehouse.auth.service import AuthService, Client
from gatehouse.core.caller import Caller, Callers, Unauthenticated, remember
from gatehouse.core.errors import GatehouseError
from gatehouse.core.http import state

ACCESS = "gh-access-token"
REFRESH = "gh-refresh-token"
CSRF = "gh-csrf"
REFRESH_MAX_AGE = 30 * 24 * 3600


@dataclass
class WebSession:
    """What the middleware found out about the browser, for the page and for the response."""

    claims: dict[str, Any] | None = None
    access_token: str | None = None
    csrf: str = ""
    set_cookies: list[str] = field(default_factory=list)
    #: The signed-in user as ``pages.current_user`` read it (its session confirmed alive): read once
    #: per request, for every check and page that needs it.
    user: User | None = None

    @property
    def user_id(self) -> str | None:
        return str(self.claims["sub"]) if self.claims else None


def web_session(conn: HTTPConnection) -> WebSession:
    return state(conn.scope)["web_session"]  # type: ignore[no-any-return]


def cookie(name: str, value: str, *, max_age: int, secure: bool) -> str:
    parts = [f"{name}={value}", "Path=/", f"Max-Age={max_age}", "HttpOnly", "SameSite=Lax"]
    if secure:
        parts.append("Secure")
    return "; ".join(parts)


class SessionMiddleware:
    """Resolves the browser's session for the pages; ``skip_prefixes`` (the APIs) have their own callers."""

    def __init__(
        self, app: ASGIApp, *, auth: AuthService, callers: Callers, secure: bool, skip_prefixes: tuple[str, ...]
    ) -> None:
        self.app = app
        self.auth = auth
        self.callers = callers
        self.secure = secure
        self.skip_prefixes = skip_prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(self.skip_prefixes):
            await self.app(scope, receive, send)
            return
        conn = HTTPConnection(scope)
        session = WebSession(csrf=conn.cookies.get(CSRF, ""))
        if not session.csrf or len(session.csrf) != 43:
            session.csrf = secrets.token_urlsafe(32)
            session.set_cookies.append(cookie(CSRF, session.csrf, max_age=REFRESH_MAX_AGE, secure=self.secure))
        await self._load(conn, session)
        state(scope)["web_session"] = session
        if session.claims:
            remember(scope, Caller(role=str(session.claims["role"]), claims=MappingProxyType(session.claims),
                                   token=session.access_token))

        async def send_with_cookies(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for value in session.set_cookies:
                    headers.append("set-cookie", value)
            await send(message)

        await self.app(scope, receive, send_with_cookies)

    async def _load(self, conn: HTTPConnection, session: WebSession) -> None:
        access = conn.cookies.get(ACCESS)
        if access:
            try:
                session.claims = self.callers.token(access).db_claims()
                session.access_token = access
                return
            except Unauthenticated:
                pass  # expired or bad: try the refresh token
        refresh = conn.cookies.get(REFRESH)
        if not refresh:
            if access:
                clear(session, secure=self.secure)
            return
        client = Client(ip=conn.client.host if conn.client else "", user_agent=conn.headers.get("user-agent", ""))
        try:
            fresh = await self.auth.login.refresh(refresh, client)
        except GatehouseError:
            clear(session, secure=self.secure)  # the session ended: the browser is signed out
            return
        store(session, fresh, secure=self.secure)


def store(session: WebSession, signed_in: Session, *, secure: bool) -> None:
    """Put a new session (from log-in, verification or refresh) into the cookies. Its claims
    are the ones auth signed into its access token: nothing to verify again."""
    session.access_token = signed_in.access_token
    session.claims = dict(signed_in.claims)
    session.set_cookies += [
        cookie(ACCESS, signed_in.access_token, max_age=REFRESH_MAX_AGE, secure=secure),
        cookie(REFRESH, signed_in.refresh_token, max_age=REFRESH_MAX_AGE, secure=secure),
    ]


def clear(session: WebSession, *, secure: bool) -> None:
    session.claims = None
    session.access_token = None
    session.set_cookies += [cookie(ACCESS, "", max_age=0, secure=secure), cookie(REFRESH, "", max_age=0, secure=secure)]


def csrf_ok(session: WebSession, submitted: Any) -> bool:
    return isinstance(submitted, str) and bool(submitted) and hmac.compare_digest(submitted, session.csrf)
