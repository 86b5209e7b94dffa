"""GoTrue's error shape, the one supabase-py's and supabase-js's auth clients parse.

Requests that send ``X-Supabase-Api-Version: 2024-01-01`` (both clients do) get
``{"code": error_code, "message": ...}`` and the header echoed; older ones get the legacy
``{"code": status, "error_code": ..., "msg": ...}``. Both shapes carry all three keys the
clients look at, so a reader of either finds what it wants.
"""

from __future__ import annotations

from starlette.responses import Response
from starlette.types import Scope

from gatehouse.core.caller import Unauthenticated
from gatehouse.core.errors import GatehouseError
from gatehouse.core.http import InvalidBody, JSONResponse

API_VERSION_HEADER = "x-supabase-api-version"
API_VERSION = "2024-01-01"


def _requested_api_version(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"x-supabase-api-version":
            return bytes(value).decode("latin-1").strip()
    return None


def _auth_shaped(error: GatehouseError) -> GatehouseError:
    """The edge's and core's own errors, as GoTrue names them."""
    if isinstance(error, Unauthenticated):
        if error.reason in ("invalid_token", "expired_token"):
            return GatehouseError(
                "bad_jwt", f"invalid JWT: unable to parse or verify signature, {error.detail}", status=403
            )
        if error.reason == "no_token":
            return GatehouseError("no_authorization", error.message, status=401)
        if error.reason == "secret_key_in_browser":
            return GatehouseError("forbidden_secret_key", error.message, status=401)
        return error  # no_api_key, invalid_api_key
    if isinstance(error, InvalidBody):
        return GatehouseError("validation_failed" if error.reason == "nul" else "bad_json", error.message, status=400)
    return error


def render_auth_error(scope: Scope, error: GatehouseError) -> Response:
    error = _auth_shaped(error)
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
