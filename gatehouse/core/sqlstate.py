"""What a PostgreSQL error means for the caller: the one SQLSTATE classification.

``http_status`` is PostgREST's ``mapSQLtoHTTP``: unique and foreign-key violations are 409, a
permission or RLS failure is 401 for anonymous callers and 403 for signed-in ones, other client
errors are 400, and ``RAISE ... USING ERRCODE = 'PT402'`` picks its own status. Each API's
renderer maps the class to its own wire code (the data API keeps the SQLSTATE, storage names it).
"""

from __future__ import annotations

from enum import StrEnum

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


class Fault(StrEnum):
    """What kind of refusal an error is, for APIs that name their own codes (storage, profiles)."""

    CONFLICT = "conflict"  # 23505: a unique key already taken
    MISSING_REFERENCE = "missing_reference"  # 23503: a foreign key pointing nowhere
    CHECK = "check"  # 23514: a CHECK constraint refused the row
    BAD_INPUT = "bad_input"  # class 22: data the database cannot take (NUL, overflow, bad text)
    FORBIDDEN = "forbidden"  # 42501: a grant or a row-level security policy
    UNDEFINED = "undefined"  # 42P01, 42703, 42883: a table, column or function that does not exist
    OTHER = "other"  # anything else: the server's fault, logged by whoever meets it


_FAULTS = {
    UNIQUE_VIOLATION: Fault.CONFLICT, FOREIGN_KEY_VIOLATION: Fault.MISSING_REFERENCE, CHECK_VIOLATION: Fault.CHECK,
    INSUFFICIENT_PRIVILEGE: Fault.FORBIDDEN, "42P01": Fault.UNDEFINED, "42703": Fault.UNDEFINED,
    "42883": Fault.UNDEFINED,
}


def fault(sqlstate: str | None) -> Fault:
    """The kind of refusal a SQLSTATE names."""
    state = sqlstate or "XX000"
    if state in _FAULTS:
        return _FAULTS[state]
    return Fault.BAD_INPUT if state.startswith("22") else Fault.OTHER
