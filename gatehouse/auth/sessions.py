"""Sessions: created at log-in, kept alive by rotating refresh tokens, ended by sign-out.

A session row is the server-side truth: an access token names its ``session_id``, and a
request that needs the user checks the session still exists, so signing out ends it
everywhere at once even though access tokens are stateless.
"""

from __future__ import annotations

import ipaddress
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg

from gatehouse.auth import users
from gatehouse.auth.models import Session, User
from gatehouse.auth.tokens import AccessTokens, RefreshTokens, sha256_hex
from gatehouse.core.db import Conn, Queryable
from gatehouse.core.errors import GatehouseError

#: How many times a retried refresh may walk forward along a token chain rotated meanwhile.
_MAX_ADVANCE = 5

_CREATE = """
WITH s AS (
    INSERT INTO auth.sessions (user_id, aal, ip, user_agent, refreshed_at)
    VALUES ($1, $6::auth.aal_level, $2::inet, $3, now()::timestamp)
    RETURNING id
), amr AS (
    INSERT INTO auth.mfa_amr_claims (session_id, authentication_method) SELECT id, $5 FROM s
)
INSERT INTO auth.refresh_tokens (token, user_id, session_id, revoked)
SELECT $4, $1::text, id, false FROM s
RETURNING session_id, floor(extract(epoch FROM now()))::bigint AS authenticated_at
"""

#: A refresh in one round trip: rotate the token (auth.rotate_refresh_token), and, when that
#: succeeded, the session's user as the new access token needs it; one transaction of its own.
#:
#: A rotation commits without waiting for its WAL to reach the disk (``synchronous_commit`` off for
#: this transaction only, set after the rotation by its outcome: ``set_config`` inside the function
#: would be undone when the function returns). What a crash of PostgreSQL can cost: the rotations
#: of the last fraction of a second, each lost whole. The session's active token is then the one
#: before; its client, holding the lost successor, is told to sign in again (a refused refresh,
#: never a token accepted twice: see tests/auth/test_refresh_crash.py, which kills PostgreSQL).
#: Every other outcome, a session ended for token reuse among them, commits durably.
REFRESH_SQL = f"""
SELECT r.outcome AS rotation_outcome, r.session_id AS rotation_session_id,
       set_config('synchronous_commit', CASE WHEN r.outcome = 'rotated' THEN 'off' ELSE 'on' END, true)
           AS rotation_commit,
       u.*
FROM auth.rotate_refresh_token($1, $2, $3) r
LEFT JOIN LATERAL (
    SELECT u.*,
           coalesce((SELECT jsonb_agg(to_jsonb(i) ORDER BY i.created_at) FROM auth.identities i WHERE i.user_id = u.id),
                    '[]'::jsonb) AS identities,
           {users.FACTORS},
           coalesce((SELECT jsonb_agg(jsonb_build_object('method', c.authentication_method,
                                                         'timestamp', floor(extract(epoch FROM c.created_at))::bigint)
                                      ORDER BY c.created_at DESC)
                     FROM auth.mfa_amr_claims c WHERE c.session_id = r.session_id), '[]'::jsonb) AS amr,
           (SELECT s.aal::text FROM auth.sessions s WHERE s.id = r.session_id) AS session_aal
    FROM auth.users u WHERE u.id = r.user_id AND u.deleted_at IS NULL
) u ON r.outcome IN ('rotated', 'reused')
"""


def _inet(ip: str | None) -> str | None:
    if not ip:
        return None
    try:
        return str(ipaddress.ip_address(ip))
    except ValueError:
        return None


class Sessions:
    def __init__(self, access: AccessTokens, refresh: RefreshTokens, reuse_interval: int) -> None:
        self._access = access
        self._refresh = refresh
        self._reuse_interval = reuse_interval

    def _session(
        self, row: asyncpg.Record, session_id: uuid.UUID, refresh_token: str, amr: list[dict[str, Any]],
        aal: str = "aal1",
    ) -> Session:
        """A Session for the user ``row``: a new access token, and the claims signed into it."""
        user = User.from_row(row)
        access = self._access.issue(_claimed(user), session_id, amr=amr, aal=aal)
        return Session(
            access_token=access.token,
            refresh_token=refresh_token,
            expires_in=access.expires_in,
            expires_at=access.expires_at,
            user=user,
            claims=access.claims,
        )

    def claims_without_session(self, user: User) -> dict[str, Any]:
        """The claims a token for ``user`` would carry, with no session and no sign-in method
        (``amr`` empty, ``aal1``): what the dashboard's "view as" runs a query under."""
        return self._access.claims(_claimed(user), None, amr=[])

    async def create(
        self, conn: Conn, user: asyncpg.Record, *, method: str, ip: str | None, user_agent: str | None,
        aal: str = "aal1",
    ) -> Session:
        """Start a session for ``user`` authenticated by ``method`` (password, otp, recovery, ...);
        ``aal2`` when that method alone is two factors (a passkey: possession and verification)."""
        token = self._refresh.new()
        created = await conn.fetchrow(
            _CREATE, user["id"], _inet(ip), (user_agent or "")[:512], sha256_hex(token), method, aal
        )
        await users.signed_in(conn, user["id"])
        fresh = await users.by_id(conn, user["id"])
        assert fresh is not None and created is not None
        amr = [{"method": method, "timestamp": created["authenticated_at"]}]
        return self._session(fresh, created["session_id"], token, amr, aal)

    async def raise_to_aal2(self, conn: Conn, user_id: uuid.UUID, session_id: uuid.UUID, factor_id: uuid.UUID,
                            method: str) -> Session:
        """A second factor was verified in this session: it becomes aal2, ``method`` joins its amr,
        and the client gets new tokens. The session's earlier refresh tokens are revoked, so one
        copied before the second factor was passed cannot refresh into an aal2 token."""
        token = self._refresh.new()
        row = await conn.fetchrow(
            """
            WITH raised AS (
                UPDATE auth.sessions SET aal = 'aal2', factor_id = $3, updated_at = now()
                WHERE id = $2 AND user_id = $1 RETURNING id
            ), claim AS (
                INSERT INTO auth.mfa_amr_claims (session_id, authentication_method)
                SELECT id, $4 FROM raised
                ON CONFLICT (session_id, authentication_method) DO UPDATE SET updated_at = now(), created_at = now()
            ), revoked AS (
                UPDATE auth.refresh_tokens SET revoked = true, updated_at = now()
                WHERE session_id IN (SELECT id FROM raised) AND NOT revoked
            )
            INSERT INTO auth.refresh_tokens (token, user_id, session_id, revoked)
            SELECT $5, $1::text, id, false FROM raised
            RETURNING session_id
            """,
            user_id, session_id, factor_id, method, sha256_hex(token),
        )
        if row is None:
            raise GatehouseError("session_not_found", "Session from session_id claim in JWT does not exist", status=403)
        user = await users.by_id(conn, user_id)
        amr = await conn.fetchval(
            """
            SELECT jsonb_agg(jsonb_build_object('method', authentication_method,
                                                'timestamp', floor(extract(epoch FROM created_at))::bigint)
                             ORDER BY created_at DESC)
            FROM auth.mfa_amr_claims WHERE session_id = $1
            """,
            session_id,
        )
        assert user is not None
        return self._session(user, session_id, token, list(amr or []), "aal2")

    async def refresh(self, pool: asyncpg.Pool, token: str) -> Session:
        """Rotate ``token``; return the new Session. Raises GoTrue's refresh errors."""
        presented = token
        for _ in range(_MAX_ADVANCE):
            successor = self._refresh.successor(presented)
            user = await pool.fetchrow(REFRESH_SQL, sha256_hex(presented), sha256_hex(successor), self._reuse_interval)
            assert user is not None  # the statement always answers one row: the outcome
            outcome = user["rotation_outcome"]
            if outcome in ("rotated", "reused"):
                if user["id"] is None:
                    raise GatehouseError("user_not_found", "User from the refresh token no longer exists", status=400)
                if users.is_banned(user, datetime.now(UTC)):
                    raise GatehouseError("user_banned", "User is banned", status=400)
                return self._session(user, user["rotation_session_id"], successor, list(user["amr"]),
                                     user["session_aal"] or "aal1")
            if outcome == "advanced":
                presented = successor
                continue
            raise refresh_error(outcome)
        raise refresh_error("already_used")

    @staticmethod
    async def is_active(conn: Queryable, session_id: str | None, user_id: str | None) -> bool:
        if not session_id or not user_id:
            return False
        try:
            sid, uid = uuid.UUID(session_id), uuid.UUID(user_id)
        except ValueError:
            return False
        found = await conn.fetchval(
            "SELECT true FROM auth.sessions WHERE id = $1 AND user_id = $2 AND (not_after IS NULL OR not_after > now())",
            sid,
            uid,
        )
        return bool(found)

    @staticmethod
    async def end(conn: Conn, user_id: uuid.UUID, session_id: uuid.UUID, scope: str) -> int:
        """Sign out: ``local`` ends this session, ``others`` every other one, ``global`` all."""
        if scope == "local":
            status = await conn.execute("DELETE FROM auth.sessions WHERE id = $1 AND user_id = $2", session_id, user_id)
        elif scope == "others":
            status = await conn.execute("DELETE FROM auth.sessions WHERE user_id = $1 AND id <> $2", user_id, session_id)
        else:
            status = await conn.execute("DELETE FROM auth.sessions WHERE user_id = $1", user_id)
        return int(status.split()[-1])


_REFRESH_ERRORS = {
    "not_found": ("refresh_token_not_found", "Invalid Refresh Token: Refresh Token Not Found"),
    "already_used": ("refresh_token_already_used", "Invalid Refresh Token: Already Used"),
    "session_not_found": ("session_not_found", "Invalid Refresh Token: the session has ended; sign in again"),
    "session_expired": ("session_expired", "Invalid Refresh Token: Session Expired"),
}


def refresh_error(outcome: str) -> GatehouseError:
    code, message = _REFRESH_ERRORS[outcome]
    return GatehouseError(code, message, status=400)


def _claimed(user: User) -> dict[str, Any]:
    """What the access token's claims are made of, from the user."""
    return {
        "id": user.id, "email": user.email, "phone": user.phone, "app_metadata": user.app_metadata,
        "user_metadata": user.user_metadata, "role": user.role, "is_anonymous": user.is_anonymous,
    }
