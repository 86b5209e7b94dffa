"""One-time tokens: the link and the code an email carries.

A token row is deleted when it is used, so a link works once; it also dies at ``expires_at``
and when a newer token of the same type replaces it (one per user and type).

The link and the code are two secrets of one row. The link token is 128 random bits, so it
cannot be guessed. The code has six digits, so guesses are counted: each wrong code typed for
an address counts against every token that address could use, and after ``max_attempts``
wrong codes a token's code stops working (its link still works). The count lives in the row,
so it holds whichever client address the guesses come from.
"""

from __future__ import annotations

import hmac
import uuid
from dataclasses import dataclass

import asyncpg

from gatehouse.auth.redirects import Redirects
from gatehouse.auth.tokens import PKCE_PREFIX, code_hash, new_link_token, new_otp, stored_hash

__all__ = ["VERIFY_TYPES", "Flow", "Redirects", "consume", "consume_code", "issue", "pending_types"]

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
    otp, link_token = new_otp(), new_link_token()
    await conn.execute(
        """
        INSERT INTO auth.one_time_tokens
            (user_id, token_type, token_hash, code_hash, relates_to, expires_at, flow_state_id)
        VALUES ($1, $2, $3, $4, $5, now() + make_interval(secs => $6), $7)
        ON CONFLICT (user_id, token_type) DO UPDATE
        SET token_hash = excluded.token_hash, code_hash = excluded.code_hash, failed_attempts = 0,
            relates_to = excluded.relates_to, expires_at = excluded.expires_at,
            flow_state_id = excluded.flow_state_id, created_at = now(), updated_at = now()
        """,
        user_id,
        token_type,
        stored_hash(link_token),
        code_hash(address, otp),
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


async def consume_code(
    conn: asyncpg.Connection, address: str, otp: str, verify_type: str, max_attempts: int
) -> asyncpg.Record | None:
    """Use a typed code: delete and return the matching token mailed to ``address``, or count a failure.

    Run it in a transaction that commits even when the answer is None (the failure count must
    stay). The candidate rows are locked, so concurrent guesses for one address are counted one
    after the other and none of them slips past the limit.
    """
    rows = await conn.fetch(
        """
        SELECT id, code_hash FROM auth.one_time_tokens
        WHERE relates_to = $1 AND token_type::text = ANY($2::text[]) AND code_hash IS NOT NULL AND expires_at > now()
        ORDER BY id
        FOR UPDATE
        """,
        address,
        list(VERIFY_TYPES[verify_type]),
    )
    if not rows:
        return None
    wanted = code_hash(address, otp)
    match = None
    for row in rows:  # compare with every row, so the time does not tell which one matched
        if hmac.compare_digest(row["code_hash"], wanted) and match is None:
            match = row["id"]
    if match is not None:
        return await conn.fetchrow("DELETE FROM auth.one_time_tokens WHERE id = $1 RETURNING *", match)
    await conn.execute(
        """
        UPDATE auth.one_time_tokens
        SET failed_attempts = failed_attempts + 1,
            code_hash = CASE WHEN failed_attempts + 1 >= $2 THEN NULL ELSE code_hash END
        WHERE id = ANY($1::uuid[])
        """,
        [row["id"] for row in rows],
        max_attempts,
    )
    return None


async def pending_types(conn: asyncpg.Connection, user_id: uuid.UUID, token_types: tuple[str, ...]) -> list[str]:
    rows = await conn.fetch(
        "SELECT token_type::text FROM auth.one_time_tokens WHERE user_id = $1 AND token_type::text = ANY($2::text[]) "
        "AND expires_at > now()",
        user_id,
        list(token_types),
    )
    return [row[0] for row in rows]


@dataclass(frozen=True)
class Flow:
    """A PKCE challenge that waits in ``auth.flow_state`` until its link is opened."""

    challenge_method: str
    challenge: str
    authentication_method: str
