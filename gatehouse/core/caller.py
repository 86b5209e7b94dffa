"""Who is calling, decided once at the edge.

The ``apikey`` header, the bearer token and the web session's cookie all come down to one frozen
:class:`Caller`: the database role the request runs as, the verified claims (``auth.uid()``,
``auth.jwt()``), and which kind of key it showed. :class:`CallerMiddleware` resolves it for every
request to an API mount and stores it on the request; handlers read it with :func:`caller`. A
refusal is one domain error, :class:`Unauthenticated`, with a reason each API's renderer turns into
its own wire code (``PGRST301``/``PGRST303``, storage's ``InvalidJWT``, auth's ``bad_jwt``).

This module is the only place an access token or an API key is verified.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from starlette.datastructures import Headers
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

from gatehouse.core.errors import GatehouseError
from gatehouse.core.http import ApiMount
from gatehouse.core.keys import InvalidToken, JWTVerifier, KeySet

#: Which key a request showed: an ``sb_`` key, a legacy role JWT used as a key, or none at all.
KeyKind = Literal["publishable", "secret", "legacy_anon", "legacy_service_role", "none"]

#: Why a caller was refused. Each API renders these in its own shape.
Reason = Literal[
    "no_api_key",  # an API that needs a key got none
    "invalid_api_key",  # the key is not ours
    "secret_key_in_browser",  # a valid secret key, sent by a web page
    "invalid_token",  # the bearer token is malformed, forged or signed by another key
    "expired_token",  # the bearer token was ours but has expired
    "no_token",  # the endpoint needs a signed-in user and no access token came
]

ADMIN_ROLES = frozenset({"service_role", "supabase_admin"})


class Unauthenticated(GatehouseError):
    """The request's key or token was refused, or an endpoint needs one that was not sent."""

    def __init__(self, reason: Reason, message: str, *, detail: str = "", **extra: Any) -> None:
        super().__init__(reason, message, status=401, **extra)
        self.reason: Reason = reason
        #: The verifier's own words (``token is expired``, ``malformed token: ...``), for renderers that quote them.
        self.detail = detail or message


@dataclass(frozen=True, slots=True)
class Caller:
    """Who a request comes from. ``claims`` are what the database sees as ``request.jwt.claims``."""

    role: str
    claims: Mapping[str, Any]
    key: KeyKind = "none"
    #: The verified access token, when the caller is a signed-in user (bearer or web cookie).
    token: str | None = None
    #: Why the bearer token was refused, when an API decides that only at the endpoint (auth, storage).
    refused: Unauthenticated | None = field(default=None, compare=False)

    @property
    def user_id(self) -> str | None:
        sub = self.claims.get("sub")
        return str(sub) if sub else None

    @property
    def session_id(self) -> str | None:
        value = self.claims.get("session_id")
        return str(value) if value else None

    @property
    def is_admin(self) -> bool:
        return self.role in ADMIN_ROLES

    def db_claims(self) -> dict[str, Any]:
        """The claims as a plain dict, for the database and the services."""
        return dict(self.claims)

    def signed_in(self) -> Caller:
        """This caller if it carries a verified user token; else the refusal an endpoint that needs one gives."""
        if self.refused is not None:
            raise self.refused
        if self.token is None:
            raise Unauthenticated("no_token", "This endpoint requires a Bearer token")
        return self

    def checked(self) -> Caller:
        """This caller, unless its bearer token was refused: the token decides, not the key."""
        if self.refused is not None:
            raise self.refused
        return self


def role_caller(role: str, key: KeyKind = "none", refused: Unauthenticated | None = None) -> Caller:
    """A caller known only by a role (an API key, or nobody: ``anon``)."""
    return Caller(role=role, claims=MappingProxyType({"role": role}), key=key, refused=refused)


ANONYMOUS = role_caller("anon")


def bearer_token(headers: Headers) -> str | None:
    value = headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def presented_key(headers: Headers) -> str | None:
    """The API key a request presents: the ``apikey`` header, else an ``sb_`` key sent as bearer."""
    key = headers.get("apikey")
    if not key:
        bearer = bearer_token(headers)
        key = bearer if bearer and bearer.startswith("sb_") else None
    return key or None


def is_browser(headers: Headers) -> bool:
    """Whether a request comes from a web page, by the headers only browsers send.

    ``Origin`` (any cross-origin or non-GET request a page makes), or the fetch metadata that
    only browsers add: ``Sec-Fetch-Site``, ``Sec-Fetch-Dest``, ``Sec-Fetch-User``. Node's
    ``fetch`` (undici) sends ``Sec-Fetch-Mode: cors`` on every request, server side too, so
    that header alone counts only with a browser's ``Mozilla/`` user agent.
    """
    if "origin" in headers or "sec-fetch-site" in headers or "sec-fetch-dest" in headers or "sec-fetch-user" in headers:
        return True
    return headers.get("user-agent", "").startswith("Mozilla/") and "sec-fetch-mode" in headers


class Callers:
    """Verifies API keys and access tokens: the one place either is checked."""

    def __init__(self, keys: KeySet, verifier: JWTVerifier) -> None:
        self.keys = keys
        self.verifier = verifier

    def key(self, key: str | None) -> tuple[str, KeyKind] | None:
        """The base role a key grants and its kind, or None if it is not one of ours."""
        if not key:
            return None
        if key.startswith("sb_"):
            role = self.keys.role_for_api_key(key)
            if role is None:
                return None
            return role, "publishable" if role == "anon" else "secret"
        try:
            role = self.verifier.verify(key).get("role")
        except InvalidToken:
            return None
        if role == "anon":
            return role, "legacy_anon"
        if role == "service_role":
            return role, "legacy_service_role"
        return None

    def token(self, token: str, key: KeyKind = "none") -> Caller:
        """The caller a user access token (or a legacy role JWT) makes; raises Unauthenticated."""
        try:
            claims = self.verifier.verify(token)
        except InvalidToken as exc:
            detail = str(exc)
            if "expired" in detail:
                raise Unauthenticated("expired_token", "JWT expired", detail=detail) from None
            raise Unauthenticated("invalid_token", detail) from None
        claims.setdefault("role", "anon")
        return Caller(role=claims["role"], claims=MappingProxyType(claims), key=key, token=token)

    def secret_key_from_browser(self, headers: Headers) -> Unauthenticated | None:
        """The refusal of a valid secret key (``sb_secret_``) sent by a web page, or None.

        Both places a key can travel count: the ``apikey`` header and an ``sb_`` bearer token. A
        secret key in a page is readable by anyone using it: on Supabase it is refused too.
        """
        bearer = bearer_token(headers)
        presented = [key for key in (headers.get("apikey"), bearer) if key and key.startswith("sb_secret_")]
        if not presented or not is_browser(headers):
            return None
        if not any(self.keys.role_for_api_key(key) == "service_role" for key in presented):
            return None  # not our secret key: the key check refuses it
        return Unauthenticated(
            "secret_key_in_browser",
            "Secret API keys cannot be used in a browser, where anyone using the page could read them. "
            "Use the publishable key there, and keep the secret key on your server.",
        )

    def resolve(self, headers: Headers, *, key_required: bool, token_at_edge: bool) -> Caller:
        """The caller of an API request; raises Unauthenticated for what the edge refuses.

        ``key_required``: the API needs an ``apikey`` (auth and the data API; storage's public
        URLs need none). ``token_at_edge``: a bad bearer token is refused here, before the request
        is parsed (PostgREST's order); otherwise the refusal waits in ``Caller.refused`` for an
        endpoint that needs the token.
        """
        browser_refusal = self.secret_key_from_browser(headers)
        if browser_refusal is not None:
            raise browser_refusal
        raw_key = presented_key(headers)
        granted = self.key(raw_key)
        key_refusal: Unauthenticated | None = None
        if raw_key is None and key_required:
            raise Unauthenticated(
                "no_api_key",
                "No API key found in request. Send your publishable key in the apikey header.",
                hint="No `apikey` request header or url param was found.",
            )
        if raw_key is not None and granted is None:
            key_refusal = Unauthenticated("invalid_api_key", "Invalid API key", hint="Double check your API key.")
            if key_required:
                raise key_refusal
        role, kind = granted if granted is not None else ("anon", "none")
        token = bearer_token(headers)
        if token is not None and not token.startswith("sb_"):
            try:
                return self.token(token, kind)
            except Unauthenticated as refusal:
                if token_at_edge:
                    raise
                key_refusal = refusal
        if key_refusal is not None:
            return role_caller(role, kind, key_refusal)
        return role_caller(role, kind) if granted is not None else ANONYMOUS


class CallerMiddleware:
    """Resolves the caller of every API request once and stores it on the request."""

    def __init__(self, app: ASGIApp, *, callers: Callers, mounts: tuple[ApiMount, ...]) -> None:
        self.app = app
        self.callers = callers
        self.mounts = mounts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] == "OPTIONS":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        for mount in self.mounts:
            if mount.owns(path):
                break
        else:
            await self.app(scope, receive, send)
            return
        open_path = path in mount.open_paths
        try:
            found = self.callers.resolve(
                Headers(scope=scope),
                key_required=mount.key_required and not open_path,
                token_at_edge=mount.token_at_edge and not open_path,
            )
        except Unauthenticated as refusal:
            if not open_path:
                await mount.renderer(scope, refusal)(scope, receive, send)
                return
            found = ANONYMOUS  # health, the key set, links opened from mail: no key is checked there
        remember(scope, found)
        await self.app(scope, receive, send)


def remember(scope: Scope, found: Caller) -> None:
    """Store the caller on the request (and its user id for the access log)."""
    request_state: dict[str, Any] = scope.setdefault("state", {})
    request_state["caller"] = found
    if found.user_id:
        request_state["user_id"] = found.user_id


def caller(conn: HTTPConnection) -> Caller:
    """The request's caller, as the edge resolved it; anonymous where no edge rule applies."""
    found: Caller | None = conn.scope.get("state", {}).get("caller")
    return found if found is not None else ANONYMOUS
