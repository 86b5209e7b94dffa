"""Where stored files are served from: the object headers on every storage response, and the
optional separate storage origin (``GATEHOUSE_STORAGE_PUBLIC_URL``).

Stored files are uploaded by users, so a browser must never treat one as a page of the app.
Every ``/storage/v1`` response (objects, renders, 304s, errors alike) leaves here with
``Content-Security-Policy: default-src 'none'; sandbox`` and ``X-Content-Type-Options: nosniff``,
whatever the handler set: a document runs no script and gets an opaque origin of its own.

With a storage origin configured, stored files also live on another host name, as
googleusercontent.com does for Google: the strongest setting, because it does not depend on the
browser honouring the sandbox. Then

- a browser that opens object content on the app's origin (a navigation, an ``<img>``, an
  ``<iframe>``: any request with fetch metadata naming a destination, or an old browser asking
  for HTML) is redirected (307) to the same path on the storage origin; API clients (``fetch``,
  server-side SDKs) are served where they ask, so nothing changes for them;
- the storage origin answers only ``/storage/v1``: the pages, ``/auth``, ``/rest``, the inbox
  and the rest are 404 there, so a script that ever ran on it could reach no page of the app,
  and the app's cookies (host-only) are never sent to it.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gatehouse.storage.media import OBJECT_CSP

PREFIX = "/storage/v1"
#: Object content a browser may open: downloads (public, authenticated, signed) and renders.
CONTENT_PREFIXES = (f"{PREFIX}/object/", f"{PREFIX}/render/")
NOT_CONTENT_PREFIXES = (f"{PREFIX}/object/info/", f"{PREFIX}/object/list/", f"{PREFIX}/object/upload/")


def opens_in_browser(headers: Headers) -> bool:
    """A request a browser makes to show or embed a resource, not a script's ``fetch``.

    ``Sec-Fetch-Dest`` names the destination (``document``, ``iframe``, ``image``, ...; a
    script's fetch says ``empty``); browsers without fetch metadata are recognised by asking
    for HTML.
    """
    dest = headers.get("sec-fetch-dest")
    if dest is not None:
        return dest != "empty"
    return "sec-fetch-mode" not in headers and "text/html" in headers.get("accept", "")


def is_content_path(path: str) -> bool:
    return path.startswith(CONTENT_PREFIXES) and not path.startswith(NOT_CONTENT_PREFIXES)


class StorageOriginMiddleware:
    """Puts the object headers on storage responses; keeps the storage origin apart, if set."""

    def __init__(self, app: ASGIApp, *, storage_url: str | None) -> None:
        self.app = app
        self.storage_url = storage_url
        self.storage_host = urlsplit(storage_url).netloc.lower() if storage_url else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and self._on_storage_host(scope):
            await send({"type": "websocket.close", "code": 1008})  # no socket of the app on the storage origin
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        storage = path == PREFIX or path.startswith(PREFIX + "/")
        if self.storage_host is not None:
            response = self._route(scope, path, storage)
            if response is not None:
                await self._with_object_headers(response)(scope, receive, send)
                return
        if not storage:
            await self.app(scope, receive, send)
            return

        # Content the app's origin serves to API clients is redirected for browsers: caches must not mix them.
        vary = self.storage_host is not None and is_content_path(path)

        async def send_sandboxed(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["Content-Security-Policy"] = OBJECT_CSP
                headers["X-Content-Type-Options"] = "nosniff"
                if vary:
                    headers.add_vary_header("Sec-Fetch-Dest")
                    headers.add_vary_header("Accept")
            await send(message)

        await self.app(scope, receive, send_sandboxed)

    def _on_storage_host(self, scope: Scope) -> bool:
        return self.storage_host is not None and Headers(scope=scope).get("host", "").lower() == self.storage_host

    def _route(self, scope: Scope, path: str, storage: bool) -> Response | None:
        """A response that replaces the app's: the storage origin's 404, or a redirect to it."""
        headers = Headers(scope=scope)
        if self._on_storage_host(scope):
            if storage:
                return None
            return PlainTextResponse(
                "Not found: this host serves stored files only (/storage/v1).", status_code=404,
                headers={"Cache-Control": "no-store"},
            )
        if storage and scope["method"] in ("GET", "HEAD") and is_content_path(path) and opens_in_browser(headers):
            query = scope.get("query_string", b"").decode("latin-1")
            raw_path = scope.get("raw_path") or path.encode()
            target = f"{self.storage_url}{raw_path.decode('latin-1')}" + (f"?{query}" if query else "")
            return Response(status_code=307, headers={"Location": target, "Cache-Control": "no-store",
                                                      "Vary": "Sec-Fetch-Dest, Accept"})
        return None

    @staticmethod
    def _with_object_headers(response: Response) -> Response:
        response.headers["Content-Security-Policy"] = OBJECT_CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response
