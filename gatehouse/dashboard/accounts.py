"""Dashboard administrators: creating them, the one-time set-up link, and checking their
password and TOTP code.

Administrators are accounts of their own (``gatehouse.dashboard_admins``), not app users. Their
passwords pass the app's password policy and are hashed with the app's argon2id hasher; their
TOTP secrets are sealed with the MFA factors' ``SecretBox`` (the admin's id as associated data).

Sign-in is throttled as the app's log-in is (``auth.throttle.PasswordThrottle``, counters in
PostgreSQL): per client address for every attempt, per address and account for failures, and a
bounded slow-down per account, so an attacker is slowed and the owner is never locked out for
long. Accounts are keyed ``dashboard:EMAIL``, apart from the app users' counters. An unknown email
costs one argon2id computation, like a known one, and gets the same answer.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from gatehouse.auth.flows.base import Deps
from gatehouse.auth.mfa import totp
from gatehouse.core.db import Queryable
from gatehouse.core.errors import GatehouseError
from gatehouse.dashboard import audit

SETUP_LINK_SECONDS = 3600


@dataclass(frozen=True)
class Admin:
    id: uuid.UUID
    email: str
    totp_confirmed: bool
    created_at: datetime
    last_sign_in_at: datetime | None

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Admin:
        return cls(row["id"], row["email"], row["totp_confirmed"], row["created_at"], row["last_sign_in_at"])


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def normalize_email(email: str) -> str:
    """The address as stored (lower case); ValueError when it cannot be an address."""
    address = email.strip().lower()
    local, at, domain = address.rpartition("@")
    if not at or not local or "." not in domain or len(address) > 254 or any(c.isspace() for c in address):
        raise ValueError("not an email address")
    return address


def invalid_credentials() -> GatehouseError:
    return GatehouseError("invalid_credentials", "That email and password do not match an administrator.", status=400)


async def issue_setup_token(conn: asyncpg.Connection[asyncpg.Record]) -> str | None:
    """A new one-time set-up token (valid for an hour) when no administrator exists yet, else None.

    Only ``gatehouse serve`` in development calls this; the token is printed once and stored hashed.
    """
    if await conn.fetchval("SELECT EXISTS (SELECT 1 FROM gatehouse.dashboard_admins)"):
        return None
    token = secrets.token_urlsafe(32)
    await conn.execute(
        "INSERT INTO gatehouse.dashboard_setup_tokens (token_hash, expires_at) "
        "VALUES ($1, now() + make_interval(secs => $2::float8))",
        token_hash(token), SETUP_LINK_SECONDS,
    )
    return token


class Accounts:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        self.box = deps.secret_box

    @property
    def pool(self) -> asyncpg.Pool[asyncpg.Record]:
        return self.deps.db.admin

    async def create(self, email: str, password: str, *, ip: str, conn: Queryable | None = None,
                     by: uuid.UUID | None = None) -> Admin:
        """A new administrator; refuses an address in use and a password the policy refuses."""
        try:
            address = normalize_email(email)
        except ValueError:
            raise GatehouseError("validation_failed", "Enter a valid email address.", status=400) from None
        self.deps.policy.validate(password)
        password_hash = await self.deps.hasher.hash_async(password)
        db = conn if conn is not None else self.pool
        row = await db.fetchrow(
            "INSERT INTO gatehouse.dashboard_admins (email, password_hash) VALUES ($1, $2) "
            "ON CONFLICT (lower(email)) DO NOTHING RETURNING *",
            address, password_hash,
        )
        if row is None:
            raise GatehouseError("admin_exists", f"An administrator with the email {address} already exists", status=409)
        admin = Admin.from_row(row)
        await audit.record(db, by or admin.id, "admin_created", ip=ip, target=str(admin.id))
        return admin

    async def setup_link_valid(self, token: str) -> bool:
        return bool(await self.pool.fetchval(
            "SELECT EXISTS (SELECT 1 FROM gatehouse.dashboard_setup_tokens WHERE token_hash = $1 AND used_at IS NULL "
            "AND expires_at > now()) AND NOT EXISTS (SELECT 1 FROM gatehouse.dashboard_admins)",
            token_hash(token),
        ))

    async def redeem_setup(self, token: str, email: str, password: str, *, ip: str) -> Admin:
        """Create the first administrator with a set-up token: once, within the hour, only while none exists."""
        self.deps.policy.validate(password)  # a weak password does not use the link up
        async with self.pool.acquire() as conn, conn.transaction():
            used = await conn.fetchval(
                "UPDATE gatehouse.dashboard_setup_tokens SET used_at = now() "
                "WHERE token_hash = $1 AND used_at IS NULL AND expires_at > now() RETURNING true",
                token_hash(token),
            )
            await conn.execute("LOCK TABLE gatehouse.dashboard_admins IN SHARE ROW EXCLUSIVE MODE")
            if not used or await conn.fetchval("SELECT EXISTS (SELECT 1 FROM gatehouse.dashboard_admins)"):
                raise GatehouseError("setup_link_invalid", "This set-up link has expired or was already used.", status=404)
            return await self.create(email, password, ip=ip, conn=conn)

    async def check_password(self, email: str, password: str, *, ip: str) -> Admin:
        """The administrator whose email and password these are; ``invalid_credentials`` or 429 otherwise."""
        limits = self.deps.limiter.limits
        await self.deps.limiter.hit(self.pool, f"dashboard-login:{ip}", limits.token,
                                    message="Too many sign-in attempts from your address. Wait and try again.")
        try:
            address = normalize_email(email)
        except ValueError:
            address = email.strip().lower()[:254]
        attempt = await self.deps.throttle.begin(f"dashboard:{address}", ip, {})
        row = await self.pool.fetchrow("SELECT * FROM gatehouse.dashboard_admins WHERE lower(email) = $1", address)
        good = await self.deps.hasher.verify_async(row["password_hash"] if row else None, password)
        if row is None or not good:
            await attempt.failed()
            if row is not None:
                await audit.record(self.pool, row["id"], "sign_in_failed", ip=ip)
            raise invalid_credentials()
        await attempt.succeeded()
        return Admin.from_row(row)

    async def signed_in(self, admin_id: uuid.UUID, *, ip: str) -> None:
        await self.pool.execute("UPDATE gatehouse.dashboard_admins SET last_sign_in_at = now() WHERE id = $1", admin_id)
        await audit.record(self.pool, admin_id, "sign_in", ip=ip)

    async def enrolment_secret(self, admin_id: uuid.UUID) -> str:
        """The TOTP secret being enrolled: the pending one, or a new one (sealed at rest)."""
        row = await self.pool.fetchrow(
            "SELECT totp_secret, totp_confirmed FROM gatehouse.dashboard_admins WHERE id = $1", admin_id
        )
        if row is None or row["totp_confirmed"]:
            raise GatehouseError("totp_enrolled", "TOTP is already set up for this administrator", status=409)
        if row["totp_secret"]:
            return self.box.open(admin_id, row["totp_secret"])
        secret = totp.new_secret()
        await self.pool.execute(
            "UPDATE gatehouse.dashboard_admins SET totp_secret = $2 WHERE id = $1 AND NOT totp_confirmed",
            admin_id, self.box.seal(admin_id, secret),
        )
        return secret

    async def _step(self, admin_id: uuid.UUID, code: str, *, ip: str) -> int | None:
        await self.deps.limiter.hit(self.pool, f"dashboard-totp:{admin_id}", self.deps.limiter.limits.mfa_verify,
                                    message="Too many codes tried. Wait a few minutes and try again.")
        sealed = await self.pool.fetchval("SELECT totp_secret FROM gatehouse.dashboard_admins WHERE id = $1", admin_id)
        if not sealed:
            return None
        return totp.matching_step(self.box.open(admin_id, sealed), code.strip().replace(" ", ""))

    async def confirm_totp(self, admin_id: uuid.UUID, code: str, *, ip: str) -> bool:
        """Finish enrolment with a first good code (which is then used up)."""
        step = await self._step(admin_id, code, ip=ip)
        done = step is not None and await self.pool.fetchval(
            "UPDATE gatehouse.dashboard_admins SET totp_confirmed = true, totp_last_step = $2 "
            "WHERE id = $1 AND NOT totp_confirmed RETURNING true",
            admin_id, step,
        )
        if done:
            await audit.record(self.pool, admin_id, "totp_enrolled", ip=ip)
        return bool(done)

    async def verify_totp(self, admin_id: uuid.UUID, code: str, *, ip: str) -> bool:
        """Whether ``code`` is good and not used before: a code's step is accepted once, atomically."""
        step = await self._step(admin_id, code, ip=ip)
        if step is None:
            return False
        return bool(await self.pool.fetchval(
            "UPDATE gatehouse.dashboard_admins SET totp_last_step = $2 WHERE id = $1 AND totp_confirmed "
            "AND (totp_last_step IS NULL OR totp_last_step < $2) RETURNING true",
            admin_id, step,
        ))
