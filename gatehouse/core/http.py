"""The HTTP edge shared by every service: JSON responses, request ids, the mount table, body limits.

The middlewares are plain ASGI (no per-request task or body copy) and render their own errors
through the app's ``ErrorRenderer``, so each client gets the error shape it parses.
"""

from __future__ import annotations

import itertools
import os
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gatehouse.core import logs
from gatehouse.core.errors import ErrorRenderer, GatehouseError

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
            logs.access(scope["method"], scope["path"], status, round(elapsed * 1000, 2), request_id,
                        state(scope).get("user_id"))


@dataclass(frozen=True, slots=True)
class ApiMount:
    """One API under its prefix: its routes, the renderer of its wire error shape, and how the edge
    treats its callers and bodies. The app's table of these is the one list of API prefixes."""

    #: The routes, mounted under the API's prefix (``route.path``).
    route: Mount
    renderer: ErrorRenderer
    #: The API needs an ``apikey`` (auth and the data API); storage's public URLs need none.
    key_required: bool
    #: A bad bearer token is refused before the request is parsed (PostgREST's order); otherwise
    #: the refusal waits for an endpoint that needs the token.
    token_at_edge: bool
    #: Bodies are capped by ``GATEHOUSE_MAX_BODY_BYTES`` at the edge; False for an API that streams
    #: bodies and caps them itself (storage uploads).
    limit_body: bool = True
    #: Paths under the prefix that need no key: health, the public key set, links opened from mail.
    open_paths: frozenset[str] = frozenset()

    @property
    def prefix(self) -> str:
        return self.route.path

    def owns(self, path: str) -> bool:
        return path == self.prefix or path.startswith(self.prefix + "/")


class InvalidBody(GatehouseError):
    """A request body that is not the JSON an endpoint takes. Each API renders it in its own shape."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__("bad_json", message, status=400)
        #: ``syntax`` (not JSON), ``shape`` (not an object) or ``nul`` (holds a NUL character).
        self.reason = reason


async def read_json(request: Request, *, object_only: bool = True, reject_nul: bool = True) -> Any:
    """The request body as JSON: the one reader every API uses; raises :class:`InvalidBody`.

    An empty body is ``{}`` (``None`` when any JSON value is taken). ``reject_nul``: PostgreSQL
    text cannot hold a NUL character, so refuse it here with a sentence a person can act on.
    """
    raw = await request.body()
    if not raw.strip():
        return {} if object_only else None
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidBody("syntax", f"Could not parse request body as JSON: {exc}") from None
    if object_only and not isinstance(data, dict):
        raise InvalidBody("shape", "Request body must be a JSON object")
    if reject_nul and has_nul(data):
        raise InvalidBody("nul", "Request body contains a NUL character, which cannot be stored")
    return data


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


class TooLarge(GatehouseError):
    """A body over a limit. Each API renders it in its own shape (storage: ``EntityTooLarge``)."""

    def __init__(self, limit: int, what: str = "Request body") -> None:
        super().__init__("request_too_large", f"{what} is larger than the limit of {limit} bytes", status=413)
        self.limit = limit


def too_large(limit: int) -> TooLarge:
    return TooLarge(limit)
