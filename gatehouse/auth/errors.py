"""GoTrue's error shape, the one supabase-py's and supabase-js's auth clients parse.

Requests that send ``X-Supabase-Api-Version: 2024-01-01`` (both clients do) get
``{"code": error_code, "message": ...}`` and the header echoed; older ones get the legacy
``{"code": status, "error_code": ..., "msg": ...}``. Both shapes carry all three keys the
clients look at, so a reader of either finds what it wants.
"""

from __future__ import annotations

from starlette.responses import Response
from starlette.types import Scope

from gatehouse.core.errors import GatehouseError
from gatehouse.core.http import JSONResponse

API_VERSION_HEADER = "x-supabase-api-version"
API_VERSION = "2024-01-01"


def _requested_api_version(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"x-supabase-api-version":
            return value.decode("latin-1").strip()
    return None


def render_auth_error(scope: Scope, error: GatehouseError) -> Response:
    version = _requested_api_version(scope)
    headers: dict[str, str] = {}
    body: dict[str, object]
    if version is not None and version >= API_VERSION:
        body = {"code": error.code, "error_code": error.code, "message": error.message, "msg": error.message}
        headers["X-Supabase-Api-Version"] = API_VERSION
    else:
        body = {"code": error.status, "error_code": error.code, "msg": error.message, "message": error.message}
    body.update(error.extra)
    if error.status == 429 and "retry_after" in error.extra:
        headers["Retry-After"] = str(error.extra["retry_after"])
    return JSONResponse(body, status_code=error.status, headers=headers)
