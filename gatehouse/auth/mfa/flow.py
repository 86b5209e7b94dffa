"""Second factors, as the upstream server speaks them: enrol, challenge, verify, unenrol.

A session starts at ``aal1`` (one factor: a password, a link, a provider). Verifying a TOTP code
in it raises it to ``aal2`` (the session row, and so every access token it issues from then on,
with ``{method: totp}`` added to its ``amr``). Which level a session may still reach is the
client's to work out from the user's verified factors (``mfa.getAuthenticatorAssuranceLevel``).

Rules kept here:

- A user with a verified factor enrols another, or removes a verified one, only from an ``aal2``
  session: a stolen password alone cannot change the second factor.
- The first verification of a factor ends the user's other ``aal1`` sessions (as upstream):
  whoever was signed in with the password alone must now pass the second factor too.
- A challenge lives five minutes, is answered from the address that asked for it, and once.
  A code works once (totp.py). Verification attempts per factor are rate-limited
  (``GATEHOUSE_RATE_LIMIT_MFA_VERIFY``), counted in PostgreSQL like every limit.
- Removing a factor takes the sessions it raised back to ``aal1``.
"""

from __future__ import annotations

import ipaddress
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from gatehouse.auth import users
from gatehouse.auth.flows.base import Client, Flow
from gatehouse.auth.mfa import totp
from gatehouse.auth.models import Factor, Session
from gatehouse.core.db import Conn
from gatehouse.core.errors import GatehouseError
from gatehouse.core.ratelimit import Limit

CHALLENGE_LIFETIME = timedelta(minutes=5)
#: An enrolment never verified is dropped after this long.
UNVERIFIED_LIFETIME = timedelta(minutes=10)
MAX_FACTORS = 10
MAX_NAME = 255


def factor_not_found() -> GatehouseError:
    return GatehouseError("mfa_factor_not_found", "Factor not found", status=404)


@dataclass(frozen=True)
class Enrolled:
    """A new TOTP factor: its id and name, and (once, now) its secret, URI and QR code."""

    id: uuid.UUID
    friendly_name: str
    secret: str
    uri: str
    qr_code: str


@dataclass(frozen=True)
class Challenged:
    id: uuid.UUID
    factor_type: str
    expires_at: int


class MFAFlow(Flow):
    async def _factor(self, conn: Conn, user_id: uuid.UUID, factor_id: str) -> asyncpg.Record:
        try:
            wanted = uuid.UUID(factor_id)
        except ValueError:
            raise factor_not_found() from None
        row = await conn.fetchrow("SELECT * FROM auth.mfa_factors WHERE id = $1 AND user_id = $2 FOR UPDATE",
                                  wanted, user_id)
        if row is None:
            raise factor_not_found()
        return row

    async def enroll(self, claims: dict[str, Any], *, factor_type: str, friendly_name: str | None,
                     issuer: str | None, client: Client) -> Enrolled:
        if factor_type == "phone":
            raise GatehouseError("mfa_phone_enroll_not_enabled", "MFA enroll is disabled for Phone", status=422)
        if factor_type != "totp":
            raise GatehouseError("validation_failed", "factor_type needs to be totp", status=400)
        name = (friendly_name or "").strip()
        if len(name) > MAX_NAME:
            raise GatehouseError("validation_failed", f"friendly_name must be at most {MAX_NAME} characters", status=400)
        issuer = (issuer or "").strip() or urlsplit(self.settings.public_site_url).netloc
        if len(issuer) > MAX_NAME or not issuer.isprintable():
            raise GatehouseError("validation_failed", f"issuer must be printable and at most {MAX_NAME} characters",
                                 status=400)
        user = await self.signed_in(claims)
        secret = totp.new_secret()
        factor_id = uuid.uuid4()
        account = user["email"] or user["phone"] or str(user["id"])
        async with self.db.admin.acquire() as conn, conn.transaction():
            await conn.execute("DELETE FROM auth.mfa_factors WHERE user_id = $1 AND status = 'unverified' "
                               "AND created_at < now() - make_interval(secs => $2)",
                               user["id"], UNVERIFIED_LIFETIME.total_seconds())
            factors = await conn.fetch("SELECT friendly_name, status FROM auth.mfa_factors WHERE user_id = $1 FOR UPDATE",
                                       user["id"])
            if name and any(f["friendly_name"] == name for f in factors):
                raise GatehouseError("mfa_factor_name_conflict",
                                     f'A factor with the friendly name "{name}" for this user already exists', status=422)
            if len(factors) >= MAX_FACTORS:
                raise GatehouseError("too_many_enrolled_mfa_factors",
                                     "Maximum number of verified factors reached, unenroll to continue", status=422)
            if any(f["status"] == "verified" for f in factors) and await session_aal(conn, claims) != "aal2":
                raise GatehouseError("insufficient_aal", "AAL2 required to enroll a new factor", status=403)
            await conn.execute(
                "INSERT INTO auth.mfa_factors (id, user_id, friendly_name, factor_type, status, secret) "
                "VALUES ($1, $2, $3, 'totp', 'unverified', $4)",
                factor_id, user["id"], name or None, self.deps.secret_box.seal(factor_id, secret),
            )
            await users.audit(conn, "factor_enrolled", actor=user, ip=client.ip,
                              traits={"factor_id": str(factor_id), "factor_type": "totp"})
        uri = totp.uri(secret, account=account, issuer=issuer)
        return Enrolled(factor_id, name, secret, uri, totp.qr_svg(uri))

    async def challenge(self, claims: dict[str, Any], factor_id: str, client: Client) -> Challenged:
        user = await self.signed_in(claims)
        # Each challenge is a row: a user may ask for three times as many as they may verify.
        verify = self.limits.mfa_verify
        await self.limit(f"mfa-challenge:{user['id']}", Limit(verify.count * 3, verify.seconds))
        async with self.db.admin.acquire() as conn, conn.transaction():
            factor = await self._factor(conn, user["id"], factor_id)
            challenge_id: uuid.UUID = await conn.fetchval(
                "INSERT INTO auth.mfa_challenges (factor_id, ip_address) VALUES ($1, $2::inet) RETURNING id",
                factor["id"], _inet(client.ip),
            )
            created = await conn.fetchval(
                "UPDATE auth.mfa_factors SET last_challenged_at = now() WHERE id = $1 RETURNING last_challenged_at",
                factor["id"],
            )
            await conn.execute("DELETE FROM auth.mfa_challenges WHERE created_at < now() - interval '1 day'")
        return Challenged(challenge_id, str(factor["factor_type"]), int((created + CHALLENGE_LIFETIME).timestamp()))

    async def verify(self, claims: dict[str, Any], factor_id: str, *, challenge_id: str, code: str,
                     client: Client) -> Session:
        if not code:
            raise GatehouseError("validation_failed", "Code needs to be non-empty", status=400)
        user = await self.signed_in(claims)
        # Counted per user and factor: another account's attempts cannot use up the owner's.
        await self.limit(f"mfa-verify:{user['id']}:{factor_id[:64]}", self.limits.mfa_verify)
        session_id = uuid.UUID(str(claims["session_id"]))
        async with self.db.admin.acquire() as conn, conn.transaction():
            factor = await self._factor(conn, user["id"], factor_id)
            try:
                wanted = uuid.UUID(challenge_id)
            except ValueError:
                wanted = None
            challenge = await conn.fetchrow(
                "SELECT *, host(ip_address) AS ip FROM auth.mfa_challenges WHERE id = $1 AND factor_id = $2 FOR UPDATE",
                wanted, factor["id"],
            ) if wanted else None
            if challenge is None:
                raise GatehouseError("mfa_factor_not_found", "MFA factor with the provided challenge ID not found",
                                     status=422)
            if challenge["verified_at"] is not None or challenge["ip"] != _inet(client.ip):
                raise GatehouseError("mfa_ip_address_mismatch", "Challenge and verify IP addresses mismatch.",
                                     status=422)
            if challenge["created_at"] + CHALLENGE_LIFETIME < datetime.now(UTC):
                await conn.execute("DELETE FROM auth.mfa_challenges WHERE id = $1", challenge["id"])
                raise GatehouseError(
                    "mfa_challenge_expired",
                    f"MFA challenge {challenge['id']} has expired, verify against another challenge or create a new "
                    "challenge.", status=422)
            secret = self.deps.secret_box.open(factor["id"], factor["secret"])
            step = totp.matching_step(secret, code)
            if step is None or (factor["last_used_step"] is not None and step <= factor["last_used_step"]):
                raise GatehouseError("mfa_verification_failed", "Invalid TOTP code entered", status=422)
            newly_verified = factor["status"] != "verified"
            await conn.execute("UPDATE auth.mfa_challenges SET verified_at = now() WHERE id = $1", challenge["id"])
            await conn.execute(
                "UPDATE auth.mfa_factors SET status = 'verified', last_used_step = $2, updated_at = now() WHERE id = $1",
                factor["id"], step,
            )
            if newly_verified:
                # Whoever is signed in with the first factor alone must now pass this one too.
                await conn.execute(
                    """
                    WITH others AS (DELETE FROM auth.sessions WHERE user_id = $1 AND id <> $2 AND aal = 'aal1')
                    DELETE FROM auth.mfa_factors WHERE user_id = $1 AND status = 'unverified' AND id <> $3
                    """,
                    user["id"], session_id, factor["id"],
                )
            await users.audit(conn, "verification_attempted", actor=user, ip=client.ip,
                              traits={"factor_id": str(factor["id"]), "factor_type": "totp"})
            return await self.deps.sessions.raise_to_aal2(conn, user["id"], session_id, factor["id"], "totp")

    async def new_recovery_codes(self, claims: dict[str, Any], client: Client) -> list[str]:
        """Ten new recovery codes for a user with a verified factor, from an aal2 session; the old
        ones stop working. Shown once: only their HMACs are kept."""
        user = await self.signed_in(claims)
        codes = totp.new_recovery_codes()
        async with self.db.admin.acquire() as conn, conn.transaction():
            if not await has_verified_factor(conn, user["id"]):
                raise GatehouseError("mfa_factor_not_found", "Recovery codes need a verified second factor first",
                                     status=422)
            if await session_aal(conn, claims) != "aal2":
                raise GatehouseError("insufficient_aal", "AAL2 required to make recovery codes", status=403)
            await conn.execute("DELETE FROM auth.mfa_recovery_codes WHERE user_id = $1", user["id"])
            await conn.executemany(
                "INSERT INTO auth.mfa_recovery_codes (user_id, code_hash) VALUES ($1, $2)",
                [(user["id"], self.deps.secret_box.code_hash(user["id"], code)) for code in codes],
            )
            await users.audit(conn, "recovery_codes_generated", actor=user, ip=client.ip)
        return codes

    async def use_recovery_code(self, claims: dict[str, Any], code: str, client: Client) -> Session:
        """Pass the second factor with a recovery code instead (the phone is lost): each code once."""
        user = await self.signed_in(claims)
        await self.limit(f"mfa-verify:{user['id']}:recovery", self.limits.mfa_verify)
        if len(totp.normalize_recovery_code(code)) != 10:
            raise GatehouseError("mfa_verification_failed", "Invalid recovery code entered", status=422)
        session_id = uuid.UUID(str(claims["session_id"]))
        async with self.db.admin.acquire() as conn, conn.transaction():
            used = await conn.fetchval(
                "UPDATE auth.mfa_recovery_codes SET used_at = now() "
                "WHERE user_id = $1 AND code_hash = $2 AND used_at IS NULL RETURNING id",
                user["id"], self.deps.secret_box.code_hash(user["id"], code),
            )
            if used is None:
                raise GatehouseError("mfa_verification_failed", "Invalid recovery code entered", status=422)
            factor_id = await conn.fetchval(
                "SELECT id FROM auth.mfa_factors WHERE user_id = $1 AND status = 'verified' ORDER BY created_at LIMIT 1",
                user["id"])
            if factor_id is None:
                raise GatehouseError("mfa_factor_not_found", "There is no second factor to stand in for", status=422)
            await users.audit(conn, "recovery_code_used", actor=user, ip=client.ip)
            return await self.deps.sessions.raise_to_aal2(conn, user["id"], session_id, factor_id, "recovery_code")

    async def recovery_codes_left(self, user_id: uuid.UUID) -> int:
        found: int = await self.db.admin.fetchval(
            "SELECT count(*) FROM auth.mfa_recovery_codes WHERE user_id = $1 AND used_at IS NULL", user_id)
        return found

    async def unenroll(self, claims: dict[str, Any], factor_id: str, client: Client) -> uuid.UUID:
        user = await self.signed_in(claims)
        async with self.db.admin.acquire() as conn, conn.transaction():
            factor = await self._factor(conn, user["id"], factor_id)
            if factor["status"] == "verified" and await session_aal(conn, claims) != "aal2":
                raise GatehouseError("insufficient_aal", "AAL2 required to unenroll verified factor", status=422)
            await remove(conn, factor["id"])
            await _forget_codes_without_factors(conn, user["id"])
            await users.audit(conn, "factor_unenrolled", actor=user, ip=client.ip,
                              traits={"factor_id": str(factor["id"]), "factor_type": str(factor["factor_type"])})
        return uuid.UUID(str(factor["id"]))

    async def factors_of(self, user_id: uuid.UUID) -> list[Factor]:
        """A user's factors (the admin API)."""
        found = await users.by_id(self.db.admin, user_id)
        if found is None:
            raise GatehouseError("user_not_found", "User not found", status=404)
        return [Factor.from_json(f) for f in (found["factors"] or [])]

    async def delete_for_admin(self, user_id: uuid.UUID, factor_id: str, client: Client) -> Factor:
        """Remove a user's factor (the admin API: a lost phone)."""
        async with self.db.admin.acquire() as conn, conn.transaction():
            factor = await self._factor(conn, user_id, factor_id)
            await remove(conn, factor["id"])
            await _forget_codes_without_factors(conn, user_id)
            await users.audit(conn, "factor_deleted", actor=None, ip=client.ip,
                              traits={"user_id": str(user_id), "factor_id": str(factor["id"])})
        return Factor(id=str(factor["id"]), factor_type=str(factor["factor_type"]), status=str(factor["status"]),
                      friendly_name=factor["friendly_name"], created_at=factor["created_at"].isoformat(),
                      updated_at=factor["updated_at"].isoformat(),
                      last_challenged_at=factor["last_challenged_at"].isoformat() if factor["last_challenged_at"] else None)


async def remove(conn: Conn, factor_id: uuid.UUID) -> None:
    """Delete a factor; the sessions it raised go back to aal1 and lose its amr entry."""
    await conn.execute(
        """
        WITH lowered AS (
            UPDATE auth.sessions SET aal = 'aal1', factor_id = NULL, updated_at = now() WHERE factor_id = $1
            RETURNING id
        ), claims AS (
            DELETE FROM auth.mfa_amr_claims WHERE session_id IN (SELECT id FROM lowered)
                AND authentication_method IN ('totp', 'webauthn', 'mfa/totp', 'recovery_code')
        )
        DELETE FROM auth.mfa_factors WHERE id = $1
        """,
        factor_id,
    )


async def session_aal(conn: Conn, claims: dict[str, Any]) -> str:
    """The assurance level of the claims' session as the database has it now (the token's may be older)."""
    found = await conn.fetchval("SELECT aal::text FROM auth.sessions WHERE id = $1", uuid.UUID(str(claims["session_id"])))
    return str(found or "aal1")


async def has_verified_factor(conn: Conn, user_id: uuid.UUID) -> bool:
    found: bool = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM auth.mfa_factors WHERE user_id = $1 AND status = 'verified')", user_id)
    return found


async def _forget_codes_without_factors(conn: Conn, user_id: uuid.UUID) -> None:
    """Recovery codes stand in for a second factor: with none left, they go too."""
    await conn.execute(
        "DELETE FROM auth.mfa_recovery_codes WHERE user_id = $1 AND NOT EXISTS "
        "(SELECT 1 FROM auth.mfa_factors WHERE user_id = $1 AND status = 'verified')", user_id)


def _inet(ip: str) -> str:
    try:
        return str(ipaddress.ip_address(ip))
    except ValueError:
        return "0.0.0.0"


__all__ = ["CHALLENGE_LIFETIME", "Challenged", "Enrolled", "MFAFlow", "has_verified_factor", "remove", "session_aal"]
