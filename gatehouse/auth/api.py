"""HTTP handlers of ``/auth/v1``: parse, call, render."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gatehouse import __version__
from gatehouse.core.http import JSONResponse


async def health(request: Request) -> Response:
    return JSONResponse(
        {
            "version": __version__,
            "name": "GoTrue",
            "description": "Gatehouse auth: a GoTrue-compatible user management API",
        }
    )


async def jwks(request: Request) -> Response:
    keys = request.app.state.keys
    return JSONResponse(keys.jwks(), headers={"Cache-Control": "public, max-age=600"})


routes = [
    Route("/health", health, methods=["GET", "HEAD"]),
    Route("/.well-known/jwks.json", jwks, methods=["GET", "HEAD"]),
]

#: Paths under /auth/v1 that need no API key, as on Supabase's gateway.
OPEN_PATHS = frozenset({"/auth/v1/health", "/auth/v1/.well-known/jwks.json"})
