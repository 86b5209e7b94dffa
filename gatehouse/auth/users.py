"""Users and identities: the SQL. (Their GoTrue JSON is in ``wire.py``.)

All functions take a connection from the admin pool: ``auth.*`` is the auth service's own data.
Reads return the row with its identities; the flows turn it into a ``models.User`` to return.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg

from gatehouse.core.db import Conn, Queryable

#: A user's identities as a JSON array (``u`` is the user's row).
_IDENTITIES = """coalesce((SELECT jsonb_agg(to_jsonb(i) ORDER BY i.created_at) FROM auth.identities i
                  WHERE i.user_id = u.id), '[]'::jsonb) AS identities"""

#: The same, for listings beyond this module (``auth.listing``).
IDENTITIES = _IDENTITIES

#: A user's second factors as a JSON array, without their secrets (null when none).
FACTORS = """(SELECT jsonb_agg(jsonb_build_object('id', f.id, 'factor_type', f.factor_type, 'status', f.status,
                                                'friendly_name', f.friendly_name, 'created_at', f.created_at,
                                                'updated_at', f.updated_at, 'last_challenged_at', f.last_challenged_at)
                             ORDER BY f.created_at)
               FROM auth.mfa_factors f WHERE f.user_id = u.id) AS factors"""

#: One user row plus its identities and factors as JSON arrays: one round trip per user read.
_SELECT = f"""
SELECT u.*,
       {_IDENTITIES},
       {FACTORS}
FROM auth.users u
"""

#: The users not deleted, oldest first: how many (X-Total-Count), and one page ($1 rows after $2).
#: Both read only ``users_listed_idx`` (0018_scale_indexes.sql). The page's ids come first, so the
#: rows and identities are read for the page alone, not for the rows its OFFSET skips.
COUNT_LISTED_SQL = "SELECT count(*) FROM auth.users WHERE deleted_at IS NULL"
PAGE_SQL = f"""
SELECT u.*,
       {_IDENTITIES},
       {FACTORS}
FROM (SELECT id, created_at FROM auth.users WHERE deleted_at IS NULL ORDER BY created_at, id LIMIT $1 OFFSET $2) AS page
JOIN auth.users u ON u.id = page.id
ORDER BY page.created_at, page.id
"""

APP_METADATA_EMAIL = {"provider": "email", "providers": ["email"]}


def is_banned(row: asyncpg.Record, now: datetime) -> bool:
    return row["banned_until"] is not None and row["banned_until"] > now


async def by_id(conn: Queryable, user_id: uuid.UUID, *, for_update: bool = False) -> asyncpg.Record | None:
    lock = " FOR UPDATE OF u" if for_update else ""
    return await conn.fetchrow(_SELECT + " WHERE u.id = $1 AND u.deleted_at IS NULL" + lock, user_id)


async def by_email(conn: Queryable, email: str, *, for_update: bool = False) -> asyncpg.Record | None:
    lock = " FOR UPDATE OF u" if for_update else ""
    return await conn.fetchrow(
        _SELECT + " WHERE u.email = $1 AND u.is_sso_user = false AND u.deleted_at IS NULL" + lock, email
    )


async def create(
    conn: Conn,
    *,
    email: str,
    password_hash: str | None,
    user_metadata: dict[str, Any],
    app_metadata: dict[str, Any] | None = None,
    confirmed: bool,
    invited: bool = False,
    user_id: uuid.UUID | None = None,
    role: str = "authenticated",
) -> asyncpg.Record:
    """Insert a user and their email identity (the sign-up trigger adds the profile)."""
    user_id = user_id or uuid.uuid4()
    app = {**APP_METADATA_EMAIL, **(app_metadata or {})}
    await conn.execute(
        """
        WITH new_user AS (
            INSERT INTO auth.users (id, aud, role, email, encrypted_password, email_confirmed_at, invited_at,
                                    raw_app_meta_data, raw_user_meta_data, is_super_admin)
            VALUES ($1, 'authenticated', $7, $2, $3, CASE WHEN $4 THEN now() END, CASE WHEN $8 THEN now() END,
                    $5, $6, false)
            RETURNING id
        )
        INSERT INTO auth.identities (provider_id, user_id, identity_data, provider, last_sign_in_at)
        SELECT id::text, id, $9, 'email', now() FROM new_user
        """,
        user_id,
        email,
        password_hash,
        confirmed,
        app,
        user_metadata,
        role,
        invited,
        {"sub": str(user_id), "email": email, "email_verified": confirmed, "phone_verified": False},
    )
    row = await by_id(conn, user_id)
    assert row is not None
    return row


async def create_anonymous(conn: Conn, *, user_metadata: dict[str, Any]) -> asyncpg.Record:
    """An anonymous user: no address, no password, no identity (the sign-up trigger adds the profile)."""
    user_id = uuid.uuid4()
    await conn.execute(
        """
        INSERT INTO auth.users (id, aud, role, raw_app_meta_data, raw_user_meta_data, is_super_admin, is_anonymous)
        VALUES ($1, 'authenticated', 'authenticated', $2, $3, false, true)
        """,
        user_id, {"provider": "anonymous", "providers": ["anonymous"]}, user_metadata,
    )
    row = await by_id(conn, user_id)
    assert row is not None
    return row


async def prune_anonymous(conn: Conn, older_than_seconds: float) -> int:
    """Delete anonymous users not seen for this long (their objects go with them: a trigger)."""
    status = await conn.execute(
        "DELETE FROM auth.users WHERE is_anonymous "
        "AND coalesce(last_sign_in_at, created_at) < now() - make_interval(secs => $1)",
        older_than_seconds,
    )
    return int(status.split()[-1])


async def make_permanent(conn: Conn, user_id: uuid.UUID, provider: str) -> None:
    """An anonymous user gained a way back in (a confirmed address, a linked provider): no longer anonymous."""
    await conn.execute(
        """
        UPDATE auth.users
        SET is_anonymous = false,
            raw_app_meta_data = coalesce(raw_app_meta_data, '{}'::jsonb) || jsonb_build_object('provider', $2::text),
            updated_at = now()
        WHERE id = $1 AND is_anonymous
        """,
        user_id, provider,
    )


async def start_over(
    conn: Conn,
    pending: asyncpg.Record,
    *,
    password_hash: str | None,
    user_metadata: dict[str, Any],
    invited: bool = False,
) -> tuple[asyncpg.Record, bool]:
    """Replace a never-confirmed registration with a new one for the same address.

    Nothing of the old registration survives: its password, metadata, profile, links and
    codes go with its row, and the new one gets a new id. Returns (user, True). If another
    table refers to the old row without ``ON DELETE CASCADE`` (an application's own table),
    the row is kept and reset in place instead: same id, new password and metadata, no links
    or flows left. Returns (user, False) then.
    """
    try:
        async with conn.transaction():  # a savepoint: the in-place reset below needs the rest intact
            await conn.execute("DELETE FROM auth.users WHERE id = $1 AND email_confirmed_at IS NULL", pending["id"])
            user = await create(
                conn, email=pending["email"], password_hash=password_hash, user_metadata=user_metadata,
                confirmed=False, invited=invited,
            )
        return user, True
    except asyncpg.ForeignKeyViolationError:
        pass
    await conn.execute(
        """
        WITH reset AS (
            UPDATE auth.users
            SET encrypted_password = $2, raw_user_meta_data = $3, invited_at = CASE WHEN $4 THEN now() END,
                confirmation_sent_at = NULL, recovery_sent_at = NULL, email_change = '', email_change_sent_at = NULL,
                email_change_confirm_status = 0, updated_at = now()
            WHERE id = $1 AND email_confirmed_at IS NULL RETURNING id
        ), tokens AS (
            DELETE FROM auth.one_time_tokens WHERE user_id IN (SELECT id FROM reset)
        )
        DELETE FROM auth.flow_state WHERE user_id IN (SELECT id FROM reset)
        """,
        pending["id"],
        password_hash,
        user_metadata,
        invited,
    )
    row = await by_id(conn, pending["id"])
    assert row is not None
    return row, False


async def drop_pending(conn: Conn, user_id: uuid.UUID) -> None:
    """Forget what a never-confirmed sign-up asked for (password and metadata): someone who did
    not send that sign-up is confirming the address."""
    await conn.execute(
        "UPDATE auth.users SET encrypted_password = NULL, raw_user_meta_data = '{}', updated_at = now() "
        "WHERE id = $1 AND email_confirmed_at IS NULL",
        user_id,
    )


async def mark_email_confirmed(conn: Conn, user_id: uuid.UUID) -> None:
    await conn.execute(
        """
        WITH confirmed AS (
            UPDATE auth.users SET email_confirmed_at = coalesce(email_confirmed_at, now()), updated_at = now()
            WHERE id = $1 RETURNING id
        )
        UPDATE auth.identities SET identity_data = identity_data || '{"email_verified": true}', updated_at = now()
        WHERE user_id IN (SELECT id FROM confirmed) AND provider = 'email'
        """,
        user_id,
    )


async def set_password(conn: Conn, user_id: uuid.UUID, password_hash: str) -> None:
    await conn.execute(
        "UPDATE auth.users SET encrypted_password = $2, updated_at = now() WHERE id = $1", user_id, password_hash
    )


async def signed_in(conn: Conn, user_id: uuid.UUID) -> None:
    await conn.execute(
        """
        WITH u AS (UPDATE auth.users SET last_sign_in_at = now() WHERE id = $1 RETURNING id)
        UPDATE auth.identities SET last_sign_in_at = now() WHERE user_id IN (SELECT id FROM u)
        """,
        user_id,
    )


async def change_email(conn: Conn, user_id: uuid.UUID, new_email: str) -> None:
    """Apply a confirmed email change to the user and their email identity (made if the user had
    none: an anonymous user, or one who signed up through a provider, becomes one with an address)."""
    await conn.execute(
        """
        WITH changed AS (
            UPDATE auth.users
            SET email = $2, email_change = '', email_change_token_new = '', email_change_token_current = '',
                email_change_confirm_status = 0, email_confirmed_at = coalesce(email_confirmed_at, now()),
                updated_at = now()
            WHERE id = $1 RETURNING id
        ), updated AS (
            UPDATE auth.identities
            SET identity_data = identity_data || jsonb_build_object('email', $2::text, 'email_verified', true),
                updated_at = now()
            WHERE user_id IN (SELECT id FROM changed) AND provider = 'email'
            RETURNING id
        )
        INSERT INTO auth.identities (provider_id, user_id, identity_data, provider, last_sign_in_at)
        SELECT id::text, id, jsonb_build_object('sub', id::text, 'email', $2::text, 'email_verified', true,
                                                'phone_verified', false), 'email', now()
        FROM changed WHERE NOT EXISTS (SELECT 1 FROM updated)
        """,
        user_id,
        new_email,
    )
    await make_permanent(conn, user_id, "email")
    await conn.execute(
        """
        UPDATE auth.users u
        SET raw_app_meta_data = coalesce(u.raw_app_meta_data, '{}'::jsonb)
                || jsonb_build_object('providers', (SELECT jsonb_agg(DISTINCT i.provider) FROM auth.identities i
                                                     WHERE i.user_id = u.id))
        WHERE u.id = $1
        """,
        user_id,
    )


async def audit(
    conn: Conn, action: str, *, actor: asyncpg.Record | None, ip: str, traits: dict[str, Any] | None = None
) -> None:
    """Record an auth event in ``auth.audit_log_entries`` (GoTrue's payload shape)."""
    payload = {
        "action": action,
        "actor_id": str(actor["id"]) if actor is not None else "",
        "actor_username": (actor["email"] or "") if actor is not None else "",
        "actor_via_sso": False,
        "log_type": _LOG_TYPES.get(action, "account"),
        "traits": traits or {},
    }
    await conn.execute(
        "INSERT INTO auth.audit_log_entries (payload, ip_address) VALUES ($1::json, $2)", payload, ip[:64]
    )


_LOG_TYPES = {
    "login": "account",
    "logout": "account",
    "token_refreshed": "token",
    "token_revoked": "token",
    "user_signedup": "team",
    "user_confirmation_requested": "user",
    "user_recovery_requested": "user",
    "user_updated_password": "user",
    "user_modified": "user",
    "user_deleted": "team",
    "user_invited": "team",
}
