"""The dashboard's audit trail: one row per action an administrator takes, with their id.

Sign-in, sign-out, TOTP enrolment and every change made through the dashboard are recorded in
``gatehouse.dashboard_audit``; a failed sign-in on an existing administrator is recorded with
that administrator's id, so an owner can see that someone is guessing.
"""

from __future__ import annotations

import uuid
from typing import Any

from gatehouse.core.db import Queryable


async def record(
    db: Queryable, admin_id: uuid.UUID | None, action: str, *, ip: str, target: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    await db.execute(
        "INSERT INTO gatehouse.dashboard_audit (admin_id, action, target, detail, ip) VALUES ($1, $2, $3, $4, $5)",
        admin_id, action, target, detail or {}, ip[:64],
    )


async def latest(db: Queryable, limit: int = 50) -> list[dict[str, Any]]:
    """The newest entries, with the acting administrator's email."""
    rows = await db.fetch(
        """SELECT a.created_at, a.action, a.target, a.ip, d.email AS admin_email
           FROM gatehouse.dashboard_audit a LEFT JOIN gatehouse.dashboard_admins d ON d.id = a.admin_id
           ORDER BY a.created_at DESC, a.id DESC LIMIT $1""",
        limit,
    )
    return [dict(row) for row in rows]
