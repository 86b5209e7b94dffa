"""The HTTP edge shared by every service: JSON responses, request ids, API keys, body limits.

The middlewares are plain ASGI (no per-request task or body copy) and render their own errors
through the app's ``ErrorRenderer``, so each client gets the error shape it parses.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import secrets
import time
from collections.abc import Callable
from typing import Any

import orjson
from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gatehouse.core.errors import ErrorRenderer, GatehouseError
from gatehouse.core.keys import API_KEY_ROLES, InvalidToken, JWTVerifier, KeySet

access_log = logging.getLogger("gatehouse.access")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS)


def has_nul(value: Any) -> bool:
    """True if a parsed JSON value holds a NUL character anywhere: PostgreSQL text cannot store one."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(has_nul(k) or has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(has_nul(item) for item in value)
    return False


def state(scope: Scope) -> dict[str, Any]:
    """The per-request state dict Starlette exposes as ``request.state``."""
    return scope.setdefault("state", {})  # type: ignore[no-any-return]


#: Request ids: a random per-process prefix and a counter, unique without a syscall per request.
_ID_PREFIX = secrets.token_hex(8)
_id_counter = itertools.count(1)


def _new_request_id() -> str:
    return f"{_ID_PREFIX}{next(_id_counter):016x}"


def _new_id_prefix() -> None:
    global _ID_PREFIX, _id_counter
    _ID_PREFIX, _id_counter = secrets.token_hex(8), itertools.count(1)


os.register_at_fork(after_in_child=_new_id_prefix)  # a forked worker must not repeat its parent's ids


#: Called once per answered request with (scope, status, seconds): the metrics hook.
Observer = Callable[[Scope, int, float], None]


class RequestContextMiddleware:
    """Gives each request an id (``X-Request-Id``, kept if the client sent a sane one), logs it,
    and hands its status and duration to ``observe`` (metrics), measured once for both."""

    def __init__(self, app: ASGIApp, *, observe: Observer | None = None) -> None:
        self.app = app
        self.observe = observe

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = Headers(scope=scope).get("x-request-id", "")
        request_id = given if _REQUEST_ID.match(given) else _new_request_id()
        state(scope)["request_id"] = request_id
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)["X-Request-Id"] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            if self.observe is not None:
                self.observe(scope, status, elapsed)
            if access_log.isEnabledFor(logging.INFO):  # the record is built only when it is written
                access_log.info(
                    "%s %s %d",
                    scope["method"],
                    scope["path"],
                    status,
                    extra={
                        "request_id": request_id,
                        "method": scope["method"],
                        "path": scope["path"],
                        "status": status,
                        "duration_ms": round(elapsed * 1000, 2),
                        "user_id": state(scope).get("user_id"),
                    },
                )


def bearer_token(headers: Headers) -> str | None:
    value = headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


class ApiKeyMiddleware:
    """Requires an ``apikey`` on API paths and records the base role it grants.

    ``sb_publishable_`` and legacy anon JWTs grant ``anon``; ``sb_secret_`` and legacy
    service_role JWTs grant ``service_role``. As on Supabase, a secret key sent by a browser is
    refused (:func:`secret_key_from_browser`): it would be visible to anyone using the page.
    ``open_paths`` need no key (health, the public key set, links opened from email).
    ``browser_checked_prefixes`` (storage, which resolves its callers itself because public URLs
    need no key) get only the browser check, the same one, in the same place.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        keys: KeySet,
        verifier: JWTVerifier,
        renderer: ErrorRenderer,
        protected_prefixes: tuple[str, ...],
        open_paths: frozenset[str],
        browser_checked_prefixes: tuple[str, ...] = (),
    ) -> None:
        self.app = app
        self.keys = keys
        self.verifier = verifier
        self.renderer = renderer
        self.protected_prefixes = protected_prefixes
        self.open_paths = open_paths
        self.checked_prefixes = protected_prefixes + browser_checked_prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] == "OPTIONS":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if path in self.open_paths or not path.startswith(self.checked_prefixes):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        key = presented_key(headers)
        if not path.startswith(self.protected_prefixes):  # the key is optional here; the browser rule is not
            error = secret_key_from_browser(headers, self.keys)
            if error is not None:
                await self.renderer(scope, error)(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        if not key:
            error = GatehouseError(
                "no_api_key",
                "No API key found in request. Send your publishable key in the apikey header.",
                status=401,
                hint="No `apikey` request header or url param was found.",
            )
            await self.renderer(scope, error)(scope, receive, send)
            return
        role = self._role_for(key)
        if role is None:
            error = GatehouseError("invalid_api_key", "Invalid API key", status=401, hint="Double check your API key.")
            await self.renderer(scope, error)(scope, receive, send)
            return
        error = secret_key_from_browser(headers, self.keys)
        if error is not None:
            await self.renderer(scope, error)(scope, receive, send)
            return
        state(scope)["api_role"] = role
        await self.app(scope, receive, send)

    def _role_for(self, key: str) -> str | None:
        return key_role(key, self.keys, self.verifier)


def key_role(key: str, keys: KeySet, verifier: JWTVerifier) -> str | None:
    """The base role an API key grants: an ``sb_`` key's, or a legacy anon/service_role JWT's; else None."""
    if not key:
        return None
    if key.startswith("sb_"):
        return keys.role_for_api_key(key)
    try:
        role = verifier.verify(key).get("role")
    except InvalidToken:
        return None
    return role if role in API_KEY_ROLES else None


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


def secret_key_from_browser(headers: Headers, keys: KeySet) -> GatehouseError | None:
    """The refusal of a valid secret key (``sb_secret_``) sent by a browser, or None.

    Both places a key can travel count: the ``apikey`` header and an ``sb_`` bearer token. One
    rule for auth, the data API and storage; each renders the error in its own shape (401).
    """
    bearer = bearer_token(headers)
    presented = [key for key in (headers.get("apikey"), bearer) if key and key.startswith("sb_secret_")]
    if not presented or not is_browser(headers):
        return None
    if not any(keys.role_for_api_key(key) == "service_role" for key in presented):
        return None  # not our secret key: the API's own key check refuses it
    return GatehouseError(
        "forbidden_secret_key",
        "Secret API keys cannot be used in a browser, where anyone using the page could read them. "
        "Use the publishable key there, and keep the secret key on your server.",
        status=401,
    )


class BodyLimitMiddleware:
    """Refuses request bodies over a limit: by Content-Length up front, else while they stream."""

    def __init__(self, app: ASGIApp, *, limit_for: Callable[[str], int | None], renderer: ErrorRenderer) -> None:
        self.app = app
        self.limit_for = limit_for
        self.renderer = renderer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        if limit is None:
            await self.app(scope, receive, send)
            return
        length = Headers(scope=scope).get("content-length")
        if length is not None:
            if not length.isdigit():
                error = GatehouseError("bad_request", "Content-Length must be a number", status=400)
                await self.renderer(scope, error)(scope, receive, send)
                return
            if int(length) > limit:
                await self.renderer(scope, too_large(limit))(scope, receive, send)
                return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise too_large(limit)
            return message

        await self.app(scope, counting_receive, send)


def too_large(limit: int) -> GatehouseError:
    return GatehouseError(
        "request_too_large", f"Request body is larger than the limit of {limit} bytes", status=413
    )
