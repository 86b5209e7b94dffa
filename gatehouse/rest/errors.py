"""PostgREST's error shape (``code``, ``details``, ``hint``, ``message``) and its status table.

``from_postgres`` turns a PostgreSQL error into PostgREST's answer, with the status from core's
one SQLSTATE classification (``core.sqlstate``). The edge's own refusals (a bad token, a bad
body, an ended session) become PostgREST's codes here.
"""

from __future__ import annotations

import asyncpg
from starlette.responses import Response
from starlette.types import Scope

from gatehouse.core.caller import Unauthenticated
from gatehouse.core.db import SessionEnded, is_unavailable, unavailable
from gatehouse.core.errors import GatehouseError
from gatehouse.core.http import InvalidBody, JSONResponse
from gatehouse.core.sqlstate import http_status


def from_postgres(error: asyncpg.PostgresError, role: str) -> GatehouseError:
    if is_unavailable(error):
        return unavailable()
    sqlstate = error.sqlstate or "XX000"
    if sqlstate == "GH124":  # gatehouse.max_affected: the write changed more rows than Prefer allowed
        return rest_error("PGRST124", error.message, 400, details=getattr(error, "detail", None))
    status = http_status(sqlstate, anonymous=role == "anon")
    message = error.message if status < 500 or sqlstate == "57014" else "Database error; the server log has the details"
    return GatehouseError(
        sqlstate, message, status=status, details=getattr(error, "detail", None), hint=getattr(error, "hint", None)
    )


def rest_error(code: str, message: str, status: int, *, details: str | None = None, hint: str | None = None) -> GatehouseError:
    return GatehouseError(code, message, status=status, details=details, hint=hint)


def render_rest_error(scope: Scope, error: GatehouseError) -> Response:
    if isinstance(error, SessionEnded):
        # PostgREST knows no sessions; a token it would refuse is PGRST303 ("JWT expired" and other
        # claim failures), 401, which clients already treat as "sign in again".
        error = rest_error("PGRST303", error.message, 401)
    elif isinstance(error, Unauthenticated):
        error = _refusal(error)
    elif isinstance(error, InvalidBody):
        error = rest_error("PGRST102", "Empty or invalid json", 400, details=error.message)
    extra = dict(error.extra)
    body = {
        "code": error.code,
        "details": extra.pop("details", None),
        "hint": extra.pop("hint", None),
        "message": error.message,
    }
    headers = {}
    if error.code in ("PGRST301", "PGRST302", "PGRST303"):
        headers["WWW-Authenticate"] = f'Bearer error="invalid_token", error_description="{error.message}"'
    return JSONResponse(body, status_code=error.status, headers=headers)


def _refusal(error: Unauthenticated) -> GatehouseError:
    if error.reason == "expired_token":
        return rest_error("PGRST303", "JWT expired", 401)
    if error.reason in ("invalid_token", "no_token"):
        return rest_error("PGRST301", error.message, 401)
    if error.reason == "secret_key_in_browser":
        return GatehouseError("forbidden_secret_key", error.message, status=401)
    return error  # no_api_key, invalid_api_key: the gateway's own codes, as Supabase answers them
