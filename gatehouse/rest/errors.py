"""PostgREST's error shape (``code``, ``details``, ``hint``, ``message``) and its status table.

``from_postgres`` is the one place a PostgreSQL error becomes an HTTP status (PostgREST's
``mapSQLtoHTTP``): unique and foreign-key violations are 409, a permission or RLS failure is 401
for anonymous callers and 403 for signed-in ones, other client errors are 400.
"""

from __future__ import annotations

import asyncpg
from starlette.responses import Response
from starlette.types import Scope

from gatehouse.core.db import SessionEnded, is_unavailable, unavailable
from gatehouse.core.errors import GatehouseError
from gatehouse.core.http import JSONResponse

_EXACT = {
    "23503": 409, "23505": 409, "25006": 405, "42883": 404, "42P01": 404, "P0001": 400, "57014": 504,
    "53300": 503, "53400": 503, "42P17": 500, "0A000": 501,
}
_CLASSES = {
    "08": 503, "09": 500, "0L": 403, "0P": 403, "22": 400, "23": 400, "25": 500, "28": 403, "2D": 500, "38": 500,
    "39": 500, "3B": 500, "40": 500, "53": 503, "54": 500, "55": 500, "57": 500, "58": 500, "F0": 500, "HV": 500,
    "P0": 500, "XX": 500, "42": 400,
}


def status_for(sqlstate: str, role: str) -> int:
    if sqlstate == "42501":
        return 401 if role == "anon" else 403
    if sqlstate in _EXACT:
        return _EXACT[sqlstate]
    if len(sqlstate) == 5 and sqlstate.startswith("PT") and sqlstate[2:].isdigit():
        return int(sqlstate[2:])  # RAISE ... USING ERRCODE = 'PT402' picks the status, as in PostgREST
    return _CLASSES.get(sqlstate[:2], 400)


def from_postgres(error: asyncpg.PostgresError, role: str) -> GatehouseError:
    if is_unavailable(error):
        return unavailable()
    sqlstate = error.sqlstate or "XX000"
    if sqlstate == "GH124":  # gatehouse.max_affected: the write changed more rows than Prefer allowed
        return rest_error("PGRST124", error.message, 400, details=getattr(error, "detail", None))
    status = status_for(sqlstate, role)
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
