"""One-time tokens (email links and codes); where links may send people is ``redirects``.

A token row is deleted when it is used, so a link works once; it also dies at ``expires_at``
and when a newer token of the same type replaces it (one per user and type).
"""

from __future__ import annotations

import uuid

import asyncpg

from gatehouse.auth.redirects import Redirects
from gatehouse.auth.tokens import PKCE_PREFIX, new_otp, stored_hash, token_hash

__all__ = ["VERIFY_TYPES", "Redirects", "consume", "issue", "pending_types"]

#: Which stored token types each verification ``type`` may consume.
VERIFY_TYPES: dict[str, tuple[str, ...]] = {
    "signup": ("confirmation_token",),
    "invite": ("confirmation_token",),
    "magiclink": ("recovery_token", "confirmation_token"),
    "recovery": ("recovery_token",),
    "email": ("confirmation_token", "recovery_token"),
    "email_change": ("email_change_token_new", "email_change_token_current"),
}


async def issue(
    conn: asyncpg.Connection,
    *,
    user_id: uuid.UUID,
    token_type: str,
    address: str,
    expires_in: int,
    flow_state_id: uuid.UUID | None = None,
) -> tuple[str, str]:
    """Create (or replace) the user's token of this type. Returns (6-digit code, link token)."""
    otp = new_otp()
    link_token = token_hash(address, otp)
    await conn.execute(
        """
        INSERT INTO auth.one_time_tokens (user_id, token_type, token_hash, relates_to, expires_at, flow_state_id)
        VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5), $6)
        ON CONFLICT (user_id, token_type) DO UPDATE
        SET token_hash = excluded.token_hash, relates_to = excluded.relates_to, expires_at = excluded.expires_at,
            flow_state_id = excluded.flow_state_id, created_at = now(), updated_at = now()
        """,
        user_id,
        token_type,
        stored_hash(link_token),
        address,
        float(expires_in),
        flow_state_id,
    )
    if flow_state_id is not None:
        link_token = PKCE_PREFIX + link_token
    return otp, link_token


async def consume(conn: asyncpg.Connection, link_token: str, verify_type: str) -> asyncpg.Record | None:
    """Use a token: delete it and return its row, or None if unknown, of another type or expired."""
    return await conn.fetchrow(
        """
        WITH used AS (
            DELETE FROM auth.one_time_tokens WHERE token_hash = $1 AND token_type::text = ANY($2::text[])
            RETURNING *
        )
        SELECT * FROM used WHERE expires_at > now()
        """,
        stored_hash(link_token),
        list(VERIFY_TYPES[verify_type]),
    )


async def pending_types(conn: asyncpg.Connection, user_id: uuid.UUID, token_types: tuple[str, ...]) -> list[str]:
    rows = await conn.fetch(
        "SELECT token_type::text FROM auth.one_time_tokens WHERE user_id = $1 AND token_type::text = ANY($2::text[]) "
        "AND expires_at > now()",
        user_id,
        list(token_types),
    )
    return [row[0] for row in rows]
