"""What a PostgreSQL error means for the caller: the one SQLSTATE classification.

``http_status`` is PostgREST's ``mapSQLtoHTTP``: unique and foreign-key violations are 409, a
permission or RLS failure is 401 for anonymous callers and 403 for signed-in ones, other client
errors are 400, and ``RAISE ... USING ERRCODE = 'PT402'`` picks its own status. Each API's
renderer maps the class to its own wire code (the data API keeps the SQLSTATE, storage names it).
"""

from __future__ import annotations

UNIQUE_VIOLATION = "23505"
FOREIGN_KEY_VIOLATION = "23503"
CHECK_VIOLATION = "23514"
INSUFFICIENT_PRIVILEGE = "42501"
QUERY_CANCELED = "57014"

_EXACT = {
    "23503": 409, "23505": 409, "25006": 405, "42883": 404, "42P01": 404, "P0001": 400, "57014": 504,
    "53300": 503, "53400": 503, "42P17": 500, "0A000": 501,
}
_CLASSES = {
    "08": 503, "09": 500, "0L": 403, "0P": 403, "22": 400, "23": 400, "25": 500, "28": 403, "2D": 500, "38": 500,
    "39": 500, "3B": 500, "40": 500, "53": 503, "54": 500, "55": 500, "57": 500, "58": 500, "F0": 500, "HV": 500,
    "P0": 500, "XX": 500, "42": 400,
}


def http_status(sqlstate: str, *, anonymous: bool) -> int:
    """The HTTP status an error with this SQLSTATE means (PostgREST's table)."""
    if sqlstate == INSUFFICIENT_PRIVILEGE:
        return 401 if anonymous else 403
    if sqlstate in _EXACT:
        return _EXACT[sqlstate]
    if len(sqlstate) == 5 and sqlstate.startswith("PT") and sqlstate[2:].isdigit():
        return int(sqlstate[2:])
    return _CLASSES.get(sqlstate[:2], 400)


def is_bad_input(sqlstate: str) -> bool:
    """Data the database cannot take (class 22: NUL, overflow, bad text) or a CHECK it refused."""
    return sqlstate.startswith("22") or sqlstate == CHECK_VIOLATION
