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
from gatehouse.core.db import Conn
from gatehouse.mail.base import Message

__all__ = [
    "CHECK_TYPES", "VERIFY_TYPES", "Flow", "Redirects", "consume", "consume_code", "issue", "new_secrets", "pending_types",
    "send_if_found",
]

#: Which stored token types each verification ``type`` may consume.
VERIFY_TYPES: dict[str, tuple[str, ...]] = {
    "signup": ("confirmation_token",),
    "invite": ("confirmation_token",),
    "magiclink": ("recovery_token", "confirmation_token"),
    "recovery": ("recovery_token",),
    "email": ("confirmation_token", "recovery_token"),
    "email_change": ("email_change_token_new", "email_change_token_current"),
}
#: Codes that sign nobody in, used only where they are asked for (``PUT /user``'s nonce); never
#: accepted by /verify.
CHECK_TYPES: dict[str, tuple[str, ...]] = {"reauthentication": ("reauthentication_token",)}


async def issue(
    conn: Conn,
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


async def consume(conn: Conn, link_token: str, verify_type: str) -> asyncpg.Record | None:
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
    conn: Conn, address: str, otp: str, verify_type: str, max_attempts: int
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
        list({**VERIFY_TYPES, **CHECK_TYPES}[verify_type]),
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


async def pending_types(conn: Conn, user_id: uuid.UUID, token_types: tuple[str, ...]) -> list[str]:
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


def new_secrets(flow: Flow | None) -> tuple[str, str]:
    """A fresh (6-digit code, link token) pair for ``send_if_found``; PKCE links carry ``pkce_``."""
    otp, link_token = new_otp(), new_link_token()
    return otp, (PKCE_PREFIX + link_token if flow is not None else link_token)


#: Everything an email to an existing address needs, in one statement that also runs, changing
#: no rows but the audit log's, when there is no such address. Both cases send the same statement,
#: write one row and flush the log at commit: their cost does not tell whether the address has an
#: account. The outbox row is ``mail.outbox.enqueue``'s, written here to stay in this statement.
_SEND_IF_FOUND = """
WITH target AS (
    SELECT id FROM auth.users
    WHERE email = $1 AND is_sso_user = false AND deleted_at IS NULL AND (email_confirmed_at IS NOT NULL) = $2
    FOR UPDATE
), flow AS (
    INSERT INTO auth.flow_state (code_challenge_method, code_challenge, authentication_method)
    SELECT $3, $4, $5 FROM target WHERE $4::text IS NOT NULL
    RETURNING id
), token AS (
    INSERT INTO auth.one_time_tokens
        (user_id, token_type, token_hash, code_hash, relates_to, expires_at, flow_state_id)
    SELECT target.id, $6::auth.one_time_token_type, $7, $8, $1, now() + make_interval(secs => $9),
           (SELECT id FROM flow)
    FROM target
    ON CONFLICT (user_id, token_type) DO UPDATE
    SET token_hash = excluded.token_hash, code_hash = excluded.code_hash, failed_attempts = 0,
        relates_to = excluded.relates_to, expires_at = excluded.expires_at,
        flow_state_id = excluded.flow_state_id, created_at = now(), updated_at = now()
    RETURNING user_id
), stamped AS (
    UPDATE auth.users
    SET recovery_sent_at = CASE WHEN $6 = 'recovery_token' THEN now() ELSE recovery_sent_at END,
        confirmation_sent_at = CASE WHEN $6 = 'confirmation_token' THEN now() ELSE confirmation_sent_at END
    WHERE id IN (SELECT user_id FROM token)
), queued AS (
    INSERT INTO gatehouse.mail_outbox (kind, to_address, subject, text_body, html_body, user_id)
    SELECT $10, $1, $11, $12, $13, user_id FROM token
    RETURNING id
), audited AS (
    INSERT INTO auth.audit_log_entries (payload, ip_address)
    SELECT json_build_object(
        'action', $14::text, 'actor_id', coalesce((SELECT id::text FROM target), ''),
        'actor_username', CASE WHEN EXISTS (SELECT 1 FROM target) THEN $1 ELSE '' END, 'actor_via_sso', false,
        'log_type', 'user', 'traits', json_build_object('account_found', EXISTS (SELECT 1 FROM target))
    ), $15
)
SELECT id, pg_notify('gatehouse_mail', '') FROM queued
"""


async def send_if_found(
    conn: Conn,
    *,
    address: str,
    confirmed: bool,
    token_type: str,
    secrets: tuple[str, str],
    expires_in: int,
    flow: Flow | None,
    message: Message,
    audit_action: str,
    ip: str,
) -> bool:
    """Issue a token to the account with this address (confirmed or not, as asked) and queue its
    email, already rendered with ``secrets`` (from ``new_secrets``). True if there was one."""
    otp, link_token = secrets
    queued = await conn.fetch(
        _SEND_IF_FOUND,
        address,
        confirmed,
        flow.challenge_method if flow else None,
        flow.challenge if flow else None,
        flow.authentication_method if flow else None,
        token_type,
        stored_hash(link_token),
        code_hash(address, otp),
        float(expires_in),
        message.kind,
        message.subject,
        message.text,
        message.html,
        audit_action,
        ip[:64],
    )
    return bool(queued)
