"""The outbox as an administrator reads it: newest first, by status, a page at a time.

Paging is by id (keyset), so a page costs the same however long the history grows; the
``(status, id)`` index of migration 0033 serves the filtered pages. Rows are ``OutboxEntry``
values, as the development inbox reads them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

from gatehouse.mail.outbox import OutboxEntry

#: Every status a row may have (see migration 0004 and 0033), in the order a person reads them.
STATUSES = ("pending", "sending", "sent", "failed", "cancelled")

_COLUMNS = """id, kind, to_address, subject, text_body, html_body, status, attempts, created_at, next_attempt_at,
    sent_at, last_error, user_id"""


@dataclass(frozen=True)
class OutboxPage:
    entries: list[OutboxEntry]
    #: The id to pass as ``before`` for older rows, and as ``after`` for newer ones (None: no such page).
    older: int | None
    newer: int | None


def _entry(row: Any) -> OutboxEntry:
    return OutboxEntry(
        id=row["id"], kind=row["kind"], to=row["to_address"], subject=row["subject"], text=row["text_body"],
        html=row["html_body"], status=row["status"], attempts=row["attempts"], created_at=row["created_at"],
        next_attempt_at=row["next_attempt_at"], sent_at=row["sent_at"], last_error=row["last_error"],
        user_id=row["user_id"],
    )


async def page(
    pool: asyncpg.Pool, *, status: str | None = None, before: int | None = None, after: int | None = None,
    limit: int = 50,
) -> OutboxPage:
    """Up to ``limit`` rows, newest first: older than ``before``, or the newest ones newer than ``after``.

    ``status`` must be one of STATUSES or None (all).
    """
    if status is not None and status not in STATUSES:
        raise ValueError(f"unknown status {status!r}")
    backwards = after is not None and before is None
    # Only the conditions in use, so that each variant's plan can use its index (a generic plan
    # for "$1 IS NULL OR status = $1" could not); the values are always bound.
    where, args = [], []
    for column, operator, value in (("status", "=", status), ("id", "<", before),
                                    ("id", ">", after if backwards else None)):
        if value is not None:
            args.append(value)
            where.append(f"{column} {operator} ${len(args)}")
    rows = await pool.fetch(
        f"""SELECT {_COLUMNS} FROM gatehouse.mail_outbox {"WHERE " + " AND ".join(where) if where else ""}
            ORDER BY id {"ASC" if backwards else "DESC"} LIMIT ${len(args) + 1}""",
        *args, limit + 1,
    )
    more = len(rows) > limit
    rows = rows[:limit]
    if backwards:
        rows.reverse()
    entries = [_entry(row) for row in rows]
    if not entries:
        return OutboxPage([], None, None)
    older = entries[-1].id if (more or backwards) else None
    newer = entries[0].id if ((more and backwards) or before is not None) else None
    return OutboxPage(entries, older, newer)


async def message(pool: asyncpg.Pool, outbox_id: int) -> OutboxEntry | None:
    row = await pool.fetchrow(f"SELECT {_COLUMNS} FROM gatehouse.mail_outbox WHERE id = $1", outbox_id)
    return _entry(row) if row is not None else None


async def failed_count(pool: asyncpg.Pool) -> int:
    """How many messages were given up (the index on status keeps this cheap)."""
    count: int = await pool.fetchval("SELECT count(*) FROM gatehouse.mail_outbox WHERE status = 'failed'")
    return count
