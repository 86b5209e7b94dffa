"""The ASGI app: mounts each service under its prefix and renders errors in each client's shape."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from gatehouse.auth import api as auth_api
from gatehouse.auth.admin import AdminService
from gatehouse.auth.service import AuthService
from gatehouse.core import logs
from gatehouse.core.caller import CallerMiddleware, Callers, bearer_token
from gatehouse.core.config import ConfigError, Settings, load_settings
from gatehouse.core.db import Database, is_unavailable, unavailable
from gatehouse.core.errors import GatehouseError, from_status
from gatehouse.core.http import ApiMount, BodyLimitMiddleware, JSONResponse, RequestContextMiddleware
from gatehouse.core.keyring import Keyring
from gatehouse.core.keys import JWTVerifier, KeySet, load_keys
from gatehouse.core.metrics import metrics_endpoint
from gatehouse.core.metrics import observe as observe_request
from gatehouse.core.samples import Sampler, Tally
from gatehouse.dashboard import routes as dashboard_routes
from gatehouse.dashboard.service import Dashboard
from gatehouse.dashboard.storage_upload import STREAMED_PREFIX
from gatehouse.mail import inbox as mail_inbox
from gatehouse.mail import outbox
from gatehouse.mail.outbox import OutboxSender
from gatehouse.mail.render import Templates
from gatehouse.mail.smtp import SMTPMailer
from gatehouse.realtime import http as realtime_http
from gatehouse.realtime import socket as realtime_socket
from gatehouse.realtime.service import Realtime
from gatehouse.rest import api as rest_api
from gatehouse.rest.watcher import SchemaWatcher
from gatehouse.services import Services, services
from gatehouse.storage import api as storage_api
from gatehouse.storage.backends import create_backend
from gatehouse.storage.janitor import BlobJanitor
from gatehouse.storage.origin import StorageOriginMiddleware
from gatehouse.storage.render_cache import RenderCache
from gatehouse.storage.resumable import Sweeper as ResumableSweeper
from gatehouse.storage.s3 import api as s3_api
from gatehouse.storage.s3.multipart import MultipartJanitor
from gatehouse.storage.service import StorageService
from gatehouse.web import routes as web_routes
from gatehouse.web.session import SessionMiddleware

log = logging.getLogger("gatehouse.app")

Endpoint = Callable[[Request], Awaitable[Response]]

#: The APIs, each under its prefix with its wire error shape and its edge rules: the one list of
#: API prefixes. Only these answer other sites' scripts (CORS); the pages, the development inbox
#: and /metrics answer same-origin callers only.
API_MOUNTS: tuple[ApiMount, ...] = (auth_api.MOUNT, rest_api.MOUNT, s3_api.MOUNT, storage_api.MOUNT, realtime_http.MOUNT)

CORS_ALLOW_HEADERS = [
    "authorization", "apikey", "content-type", "x-client-info", "x-supabase-api-version", "prefer", "range",
    "accept-profile", "content-profile", "x-upsert", "cache-control", "x-metadata", "x-request-id",
    # postgrest-js numbers its retries after a 503; supabase-js sends W3C trace context when asked to.
    "x-retry-count", "traceparent", "tracestate", "baggage",
    # TUS resumable uploads (storage/tus.py), as tus-js-client sends them from a page.
    "tus-resumable", "upload-length", "upload-offset", "upload-metadata", "upload-defer-length",
    "x-http-method-override",
]
CORS_EXPOSE_HEADERS = [
    "Content-Range", "X-Total-Count", "Link", "X-Supabase-Api-Version", "X-Request-Id",
    "Location", "Tus-Resumable", "Tus-Version", "Tus-Extension", "Tus-Max-Size", "Upload-Offset", "Upload-Length",
    "Upload-Metadata", "Upload-Expires", "Tus-Complete",
]


class ApiCORSMiddleware:
    """Starlette's CORS middleware on the API prefixes only; other paths get no CORS headers.

    ``Access-Control-Allow-Origin: *`` lets any web page read the answer from a visitor's browser.
    The APIs are meant for that (their callers present keys and tokens), but the development
    inbox holds live sign-in links and must never be readable by another site's script.
    """

    def __init__(self, app: ASGIApp, *, prefixes: tuple[str, ...], options: dict[str, Any]) -> None:
        self.app = app
        self.prefixes = prefixes
        self.cors = CORSMiddleware(app, **options)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] == "http" and (path + "/").startswith(self.prefixes):
            await self.cors(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def secret_key_only(endpoint: Endpoint, callers: Callers) -> Endpoint:
    """``endpoint`` for callers that send the secret key (or the legacy service_role JWT) only.

    The key may come as ``Authorization: Bearer <key>`` (what Prometheus' ``authorization``
    setting sends) or in the ``apikey`` header.
    """

    async def guarded(request: Request) -> Response:
        granted = callers.key(bearer_token(request.headers) or request.headers.get("apikey"))
        if granted is None or granted[0] != "service_role":
            raise GatehouseError(
                "secret_key_required",
                f"{request.url.path} needs the secret key: send it as Authorization: Bearer <secret key>",
                status=401,
            )
        return await endpoint(request)

    return guarded


def _render_plain(scope: Scope, error: GatehouseError) -> Response:
    """Errors outside the APIs: a page for browsers, JSON for everyone else."""
    accept = Headers(scope=scope).get("accept", "")
    if "text/html" in accept:
        message = "That page does not exist." if error.status == 404 else error.message
        return HTMLResponse(
            web_routes.templates.get_template("error.html").render(
                message=message, hint="Go back to the log-in page and try again.", user_id=None, csrf=""
            ),
            status_code=error.status,
        )
    return JSONResponse({"code": error.code, "message": error.message, **error.extra}, status_code=error.status)


def render_error(scope: Scope, error: GatehouseError) -> Response:
    """The error in the wire shape of the API the request was for; plain outside the APIs."""
    path: str = scope.get("path", "")
    for mount in API_MOUNTS:
        if mount.owns(path):
            return mount.renderer(scope, error)
    return _render_plain(scope, error)


async def _on_gatehouse_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GatehouseError)
    return render_error(request.scope, exc)


async def _on_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    response = render_error(request.scope, from_status(exc.status_code, exc.detail))
    if exc.headers:
        response.headers.update(exc.headers)
    return response


async def _on_unavailable(request: Request, exc: Exception) -> Response:
    if not is_unavailable(exc):
        return await _on_unexpected(request, exc)
    log.warning("database unavailable on %s %s: %s", request.method, request.url.path, exc)
    return render_error(request.scope, unavailable())


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    error = GatehouseError("unexpected_failure", "Unexpected failure; the server log has the details", status=500)
    return render_error(request.scope, error)


def _reload_on_sighup(watcher: SchemaWatcher) -> None:
    """SIGHUP reloads the data API's schema cache (as ``NOTIFY gatehouse_schema`` does)."""
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[object]] = set()

    def reload() -> None:
        task = loop.create_task(watcher.reload())
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    try:
        loop.add_signal_handler(signal.SIGHUP, reload)
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or no signals here
        log.info("SIGHUP cannot reload the schema cache in this process; use NOTIFY gatehouse_schema")


async def live(request: Request) -> Response:
    """Liveness: the process answers. Nothing else is checked (a restart would not help)."""
    return JSONResponse({"status": "ok"})


async def ready(request: Request) -> Response:
    """Readiness: the database answers and its migrations are current."""
    settings = services(request).settings
    try:
        checks = await services(request).database.ready(settings.migrations_dir)
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready", said plainly
        return JSONResponse({"status": "unavailable", "database": str(exc) or type(exc).__name__}, status_code=503)
    status = 200 if checks["migrations"] == "current" else 503
    return JSONResponse({"status": "ready" if status == 200 else "unavailable", **checks}, status_code=status)


def body_limit_for(limit: int) -> Callable[[str], int | None]:
    """The body cap of a path: none where the handler caps its own stream (storage, dashboard uploads), else ``limit``."""
    unlimited = (*(mount.prefix + "/" for mount in API_MOUNTS if not mount.limit_body), STREAMED_PREFIX)
    return lambda path: None if path.startswith(unlimited) else limit


def longest_token_life(settings: Settings) -> int:
    """Seconds the longest-lived token a signing key makes can stay valid: an access token, or a
    signed download or upload URL. A key that stopped signing retires only after this."""
    return max(settings.jwt_expiry, settings.storage_signed_url_max_expiry, settings.storage_signed_upload_expiry)


def create_app(settings: Settings, keys: KeySet | None = None) -> Starlette:
    """Build the app. The database must already be prepared (``gatehouse serve`` does that)."""
    if not settings.database_url:
        raise ConfigError("create_app needs GATEHOUSE_DATABASE_URL; `gatehouse serve` sets it for you")
    keys = keys or load_keys(settings)
    verifier = JWTVerifier(keys, cache_size=settings.jwt_cache_size)
    callers = Callers(keys, verifier)
    database = Database(settings.database_url, keys, settings)
    auth = AuthService(database, settings, keys, Templates(settings))
    backend = create_backend(settings)
    storage_root = settings.storage_dir or settings.data_dir.expanduser().resolve() / "storage"
    auth_admin = AdminService(auth)
    container = Services(
        settings=settings, keys=keys, callers=callers, database=database, auth=auth, auth_admin=auth_admin,
        storage=StorageService(database, backend, settings, keys), render_cache=RenderCache(storage_root / "render-cache"),
        realtime=Realtime(database, callers, settings), dashboard=Dashboard(auth_admin, keys),
        keyring=Keyring(keys, lambda: database.listen_pool, longest_token_life=longest_token_life(settings),
                        hub=lambda: database.listener),
    )

    tally = Tally()  # every request, for the dashboard's Health page, whether or not /metrics is on

    def observe(scope: Scope, status: int, seconds: float) -> None:
        observe_request(scope, status, seconds)
        tally.observe(scope, status, seconds)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await database.open()
        await container.keyring.start()  # before the first request: sign and verify by the ring in force
        schema_watcher = SchemaWatcher(database.listen_pool, settings.exposed_schemas, hub=database.listener,
                                       on_reload=lambda _cache: container.realtime.schema_changed())
        await schema_watcher.start()
        container.rest_schema = schema_watcher
        _reload_on_sighup(schema_watcher)
        janitor = BlobJanitor(database.admin, backend, sweep_after=settings.storage_sweep_after)
        await janitor.start()
        expired_uploads = ResumableSweeper(container.storage.resumable, interval=min(60, settings.storage_resumable_expiry))
        await expired_uploads.start()
        multipart_janitor = MultipartJanitor(database.admin, expiry=settings.storage_s3_multipart_expiry)
        await multipart_janitor.start()
        await container.realtime.start()
        sampler = None
        if settings.metrics_sample_interval > 0:
            sampler = Sampler(database, tally, interval=settings.metrics_sample_interval,
                              retention=settings.metrics_retention, max_per_pool=settings.db_pool_max_size)
            await sampler.start()
        sender: OutboxSender | None = None
        if settings.smtp_host:
            sender = OutboxSender(database.listen_pool, SMTPMailer(settings), max_attempts=settings.mail_max_attempts,
                                  hub=database.listener)
            await sender.start()
        elif settings.environment == "production":
            log.warning("GATEHOUSE_SMTP_HOST is not set: emails wait in gatehouse.mail_outbox, undelivered "
                        "(the /_inbox page is off in production)")
        try:
            yield
        finally:
            if sender is not None:
                await sender.stop()  # before the pool closes: each of these listens on database.listener
            await schema_watcher.stop()
            await container.realtime.stop()
            await container.keyring.stop()
            await expired_uploads.stop()
            await janitor.stop()
            await multipart_janitor.stop()
            if sampler is not None:
                await sampler.stop()  # its last sample needs the pool
            await database.close()
            await backend.close()
            auth.close()

    body_limit = settings.max_body_bytes

    routes: list[BaseRoute] = [
        Route("/health/live", live, methods=["GET", "HEAD"]),
        Route("/health/ready", ready, methods=["GET", "HEAD"]),
        *(mount.route for mount in API_MOUNTS),
        WebSocketRoute("/realtime/v1/websocket", realtime_socket.endpoint),
    ]
    development = settings.environment == "development"
    if development:
        # The development inbox: the outbox, readable in a browser. Never in production: the
        # messages hold live sign-in and recovery links.
        routes += mail_inbox.routes(database)
    if settings.metrics_enabled:
        metrics = metrics_endpoint(database, outbox.figures(database))
        endpoint = metrics if development else secret_key_only(metrics, callers)
        routes.append(Route("/metrics", endpoint, methods=["GET"]))
    routes.append(Mount("/_", routes=dashboard_routes.routes))  # the admin dashboard: its own accounts and cookie
    routes += web_routes.routes  # the pages: /, /login, /account, /auth/confirm, ...

    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(RequestContextMiddleware, observe=observe if settings.metrics_enabled else tally.observe),
            Middleware(StorageOriginMiddleware, storage_url=settings.storage_public_url),
            Middleware(
                ApiCORSMiddleware,
                prefixes=tuple(mount.prefix + "/" for mount in API_MOUNTS),
                options={
                    "allow_origins": ["*"],
                    "allow_methods": ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
                    "allow_headers": CORS_ALLOW_HEADERS,
                    "expose_headers": CORS_EXPOSE_HEADERS,
                    "max_age": 3600,
                },
            ),
            Middleware(CallerMiddleware, callers=callers, mounts=API_MOUNTS),
            Middleware(
                SessionMiddleware,
                auth=auth,
                callers=callers,
                secure=settings.public_site_url.startswith("https://"),
                skip_prefixes=(*(mount.prefix for mount in API_MOUNTS), "/_inbox", "/_/"),
            ),
            Middleware(BodyLimitMiddleware, limit_for=body_limit_for(body_limit), renderer=render_error),
        ],
        exception_handlers={
            GatehouseError: _on_gatehouse_error,
            HTTPException: _on_http_exception,
            # A lost database: a fast 503 in each client's shape, not a 500 with a traceback.
            OSError: _on_unavailable,
            TimeoutError: _on_unavailable,
            asyncpg.InterfaceError: _on_unavailable,
            asyncpg.PostgresConnectionError: _on_unavailable,
            asyncpg.CannotConnectNowError: _on_unavailable,
            asyncpg.AdminShutdownError: _on_unavailable,
            Exception: _on_unexpected,
        },
        lifespan=lifespan,
    )
    app.state.services = container
    return app


def create_app_from_env() -> Starlette:
    """Factory for ASGI servers' worker processes: settings from the environment."""
    settings = load_settings()
    logs.configure(settings.log_level, settings.log_format)
    app = create_app(settings)
    # What start-up made (modules, templates, the app) lives as long as the worker: keep it out
    # of the collector's reach, so that full collections, which stop every request in the worker
    # while they run, only walk what requests create.
    gc.collect()
    gc.freeze()
    return app
