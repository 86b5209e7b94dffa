"""Who may see a change: each subscriber's RLS decides, checked as that subscriber, N at a time.

``visible_to`` asks ``realtime.visible_to`` (0027_realtime_changes.sql) in one round trip, on
the request pool (as ``authenticator``, read-only): for each subscriber's claims it checks the
session, switches to the claims' role with ``request.jwt.claims`` set, and looks the row up by
its primary key, so the table's policies decide as they would for that user's own SELECT.

INSERT and UPDATE are checked against the row as it is when the check runs (as upstream does):
a row changed again or deleted meanwhile is judged by its newer state. A DELETE, and a change
to a table without a primary key, go to every subscriber whose role may SELECT from the table;
``Change.data(row_security=...)`` then cuts a DELETE's old record to its primary key for those
under RLS.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from gatehouse.core.db import REQUEST_ROLES, Queryable
from gatehouse.realtime.models import Change

_CHECK = """
SELECT subscriber, hidden_columns, row_security
FROM realtime.visible_to($1::text, $2::text, $3::text, $4::text, $5::text)
"""


@dataclass(frozen=True, slots=True)
class Sight:
    """What one subscriber may see of a change: pass both fields to ``Change.data``."""

    hidden_columns: frozenset[str]
    row_security: bool


def _checkable(claims: Mapping[str, Any]) -> bool:
    """Claims the database may be asked about: a request role, and uuids where a session is named.

    Anything else is refused here (sees nothing) rather than failing the whole call.
    """
    if claims.get("role") not in REQUEST_ROLES:
        return False
    if claims.get("session_id") is None:
        return True
    try:
        uuid.UUID(str(claims["session_id"]))
        uuid.UUID(str(claims.get("sub")))
    except ValueError:
        return False
    return True


async def visible_to(pool: Queryable, change: Change, claims: Sequence[Mapping[str, Any]]) -> dict[int, Sight]:
    """Which of the subscribers (given by their verified JWT claims) may see ``change``.

    Returns {index in ``claims``: what it may see}; absent indexes may see nothing. ``pool`` is
    the request pool (``authenticator``): the function is executable by that role only.
    """
    asked = [(index, dict(item)) for index, item in enumerate(claims) if _checkable(item)]
    if not asked:
        return {}
    rows = await pool.fetch(
        _CHECK,
        change.schema,
        change.table,
        change.type,
        orjson.dumps(dict(change.primary_key)).decode() if change.primary_key else None,
        orjson.dumps([item for _, item in asked]).decode(),
    )
    return {
        asked[row["subscriber"]][0]: Sight(frozenset(row["hidden_columns"] or ()), bool(row["row_security"]))
        for row in rows
    }
