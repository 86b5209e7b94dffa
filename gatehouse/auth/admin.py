"""Admin flows (secret key / service_role only): manage users, invite, generate links.

Admins act on ``auth.*`` directly: no password-strength check on passwords they set (as in
GoTrue), and ``generate_link`` returns the link instead of mailing it.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from gatehouse.auth import links, listing, users
from gatehouse.auth.flows.base import Client, Flow
from gatehouse.auth.forms import AdminUserForm, GenerateLinkForm, InviteForm, normalize_email
from gatehouse.auth.models import GeneratedLink, User
from gatehouse.auth.passwords import check_max_length
from gatehouse.auth.service import AuthService
from gatehouse.core.db import Conn
from gatehouse.core.errors import GatehouseError

MAX_PER_PAGE = 1000
MAX_PAGE = 1_000_000
MAX_BAN_SECONDS = 100 * 365 * 86400
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s)")
_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_HASH_PREFIXES = ("$argon2id$", "$argon2i$", "$2a$", "$2b$", "$2y$")


def user_not_found() -> GatehouseError:
    return GatehouseError("user_not_found", "User not found", status=404)


def email_exists() -> GatehouseError:
    return GatehouseError("email_exists", "A user with this email address has already been registered", status=422)


def parse_ban_duration(value: str) -> datetime | None:
    """Go's duration syntax as GoTrue takes it ("24h", "1h30m", "none" to lift a ban)."""
    if value == "none":
        return None
    parts = _DURATION.findall(value)
    if not parts or "".join(number + unit for number, unit in parts) != value:
        raise GatehouseError("validation_failed", f"ban_duration {value!r} is not a duration like 24h or 90m", status=400)
    seconds = sum(float(number) * _UNITS[unit] for number, unit in parts)
    if seconds > MAX_BAN_SECONDS:
        raise GatehouseError("validation_failed", "ban_duration is longer than 100 years", status=400)
    return datetime.now(UTC) + timedelta(seconds=seconds)


class AdminService(Flow):
    """The admin API's flows, over the same parts (and mail path) as ``auth``'s."""

    def __init__(self, auth: AuthService) -> None:
        super().__init__(auth.deps)

    async def list_users(self, page: int, per_page: int) -> tuple[list[User], int]:
        per_page = max(1, min(per_page, MAX_PER_PAGE))
        page = max(1, min(page, MAX_PAGE))
        async with self.db.admin.acquire() as conn:
            total = await conn.fetchval(users.COUNT_LISTED_SQL)
            rows = await conn.fetch(users.PAGE_SQL, per_page, (page - 1) * per_page)
        return [User.from_row(row) for row in rows], int(total)

    async def search_users(self, query: listing.UserQuery) -> listing.UserPage:
        """One keyset page of users, newest first, matching the search and filters (``auth.listing``)."""
        sql, args = listing.page_sql(query)
        async with self.db.admin.acquire() as conn:
            rows = await conn.fetch(sql, *args)
        return listing.to_page(query, list(rows))

    async def user_figures(self) -> dict[str, int]:
        """How many users are listed, unconfirmed and banned now."""
        row = await self.db.admin.fetchrow(listing.FIGURES_SQL)
        assert row is not None
        return {name: int(row[name]) for name in ("users", "unconfirmed", "banned")}

    async def user_sessions(self, user_id: uuid.UUID) -> list[dict[str, Any]]:
        """A user's sessions (at most 100), latest activity first, with their client."""
        return [dict(row) for row in await self.db.admin.fetch(listing.SESSIONS_SQL, user_id)]

    async def user_events(self, user_id: uuid.UUID, limit: int = 20) -> list[dict[str, Any]]:
        """The latest audit log entries naming a user as actor or subject."""
        return [dict(row) for row in await self.db.admin.fetch(listing.AUDIT_SQL, str(user_id), limit)]

    async def get_user(self, user_id: uuid.UUID) -> User:
        row = await users.by_id(self.db.admin, user_id)
        if row is None:
            raise user_not_found()
        return User.from_row(row)

    async def create_user(self, form: AdminUserForm, client: Client) -> User:
        if form.phone and not form.email:
            raise GatehouseError("phone_provider_disabled", "Phone users are not available on this server", status=422)
        email = normalize_email(form.email)
        assert email is not None
        password_hash = await self._password_hash(form)
        async with self.db.admin.acquire() as conn, conn.transaction():
            if await users.by_email(conn, email) is not None:
                raise email_exists()
            if form.id is not None and await users.by_id(conn, form.id) is not None:
                raise GatehouseError("user_already_exists", "A user with this id already exists", status=422)
            user = await users.create(
                conn,
                email=email,
                password_hash=password_hash,
                user_metadata=form.user_metadata or {},
                app_metadata=form.app_metadata,
                confirmed=bool(form.email_confirm),
                user_id=form.id,
                role=form.role or "authenticated",
            )
            if form.ban_duration:
                await self._ban(conn, user["id"], form.ban_duration)
            await users.audit(conn, "user_signedup", actor=None, ip=client.ip, traits={"user_id": str(user["id"]), "by": "admin"})
            fresh = await users.by_id(conn, user["id"])
        assert fresh is not None
        return User.from_row(fresh)

    async def update_user(self, user_id: uuid.UUID, form: AdminUserForm, client: Client) -> User:
        password_hash = await self._password_hash(form)
        async with self.db.admin.acquire() as conn, conn.transaction():
            user = await users.by_id(conn, user_id, for_update=True)
            if user is None:
                raise user_not_found()
            if form.email is not None:
                email = normalize_email(form.email)
                other = await users.by_email(conn, email) if email else None
                if other is not None and other["id"] != user_id:
                    raise email_exists()
                if email != user["email"]:
                    await users.change_email(conn, user_id, email)  # type: ignore[arg-type]
            if password_hash is not None:
                await users.set_password(conn, user_id, password_hash)
            if form.email_confirm:
                await users.mark_email_confirmed(conn, user_id)
            if form.user_metadata is not None:
                merged = {**(user["raw_user_meta_data"] or {}), **form.user_metadata}
                await conn.execute("UPDATE auth.users SET raw_user_meta_data = $2 WHERE id = $1", user_id,
                                   {k: v for k, v in merged.items() if v is not None})
            if form.app_metadata is not None:
                merged = {**(user["raw_app_meta_data"] or {}), **form.app_metadata}
                await conn.execute("UPDATE auth.users SET raw_app_meta_data = $2 WHERE id = $1", user_id,
                                   {k: v for k, v in merged.items() if v is not None})
            if form.role is not None:
                await conn.execute("UPDATE auth.users SET role = $2 WHERE id = $1", user_id, form.role)
            if form.ban_duration:
                await self._ban(conn, user_id, form.ban_duration)
            await conn.execute("UPDATE auth.users SET updated_at = now() WHERE id = $1", user_id)
            await users.audit(conn, "user_modified", actor=None, ip=client.ip, traits={"user_id": str(user_id), "by": "admin"})
            fresh = await users.by_id(conn, user_id)
        assert fresh is not None
        return User.from_row(fresh)

    async def delete_user(self, user_id: uuid.UUID, *, soft: bool, client: Client) -> None:
        async with self.db.admin.acquire() as conn, conn.transaction():
            user = await users.by_id(conn, user_id, for_update=True)
            if user is None:
                raise user_not_found()
            if soft:
                # Keep the row (for references and the audit trail) but free the address and end access.
                await conn.execute(
                    "UPDATE auth.users SET deleted_at = now(), email = NULL, phone = NULL, encrypted_password = NULL, "
                    "updated_at = now() WHERE id = $1",
                    user_id,
                )
                await conn.execute("DELETE FROM auth.identities WHERE user_id = $1", user_id)
                await conn.execute("DELETE FROM auth.sessions WHERE user_id = $1", user_id)
            else:
                await conn.execute("DELETE FROM auth.users WHERE id = $1", user_id)
            await users.audit(conn, "user_deleted", actor=None, ip=client.ip, traits={"user_id": str(user_id), "soft": soft})

    async def sign_out(self, user_id: uuid.UUID, client: Client) -> int:
        """End every session of a user (their refresh tokens die with them); how many ended."""
        async with self.db.admin.acquire() as conn, conn.transaction():
            if await users.by_id(conn, user_id, for_update=True) is None:
                raise user_not_found()
            status = await conn.execute("DELETE FROM auth.sessions WHERE user_id = $1", user_id)
            ended = int(status.split()[-1])
            await users.audit(conn, "logout", actor=None, ip=client.ip,
                              traits={"user_id": str(user_id), "scope": "global", "by": "admin", "sessions": ended})
        return ended

    async def prune_anonymous(self, older_than_seconds: float, client: Client) -> int:
        """Delete anonymous users whose last sign-in is older than this (their objects go too)."""
        async with self.db.admin.acquire() as conn, conn.transaction():
            removed = await users.prune_anonymous(conn, older_than_seconds)
            await users.audit(conn, "anonymous_users_pruned", actor=None, ip=client.ip,
                              traits={"deleted": removed, "older_than_seconds": older_than_seconds})
        return removed

    async def invite(self, form: InviteForm, client: Client, redirect_to: str | None) -> User:
        email = normalize_email(form.email)
        assert email is not None
        async with self.db.admin.acquire() as conn, conn.transaction():
            user = await users.by_email(conn, email, for_update=True)
            if user is not None and user["email_confirmed_at"] is not None:
                raise email_exists()
            if user is None:
                user = await users.create(
                    conn, email=email, password_hash=None, user_metadata=form.data or {}, confirmed=False, invited=True
                )
            else:  # a sign-up nobody confirmed: the invitee must not inherit its password or metadata
                user, _ = await users.start_over(
                    conn, user, password_hash=None, user_metadata=form.data or {}, invited=True
                )
            await self.send(  # the same mail path as every flow
                conn, user, kind="invite", token_type="confirmation_token", verify_type="invite",
                to=email, redirect_to=redirect_to,
            )
            await conn.execute("UPDATE auth.users SET invited_at = coalesce(invited_at, now()) WHERE id = $1", user["id"])
            await users.audit(conn, "user_invited", actor=None, ip=client.ip, traits={"user_email": email})
            fresh = await users.by_id(conn, user["id"])
        assert fresh is not None
        return User.from_row(fresh)

    async def generate_link(self, form: GenerateLinkForm, client: Client, redirect_to: str | None) -> GeneratedLink:
        """Make the link (and code) an email would carry, without sending it."""
        email = normalize_email(form.email)
        assert email is not None
        redirect = self.deps.redirects.allowed(redirect_to or form.redirect_to)
        async with self.db.admin.acquire() as conn, conn.transaction():
            user = await users.by_email(conn, email, for_update=True)
            link_type = form.type
            if link_type == "magiclink" and user is None:
                link_type = "signup"
            if user is None:
                if link_type == "recovery" or link_type.startswith("email_change"):
                    raise user_not_found()
                password_hash = await self._password_hash(AdminUserForm(password=form.password)) if form.password else None
                user = await users.create(
                    conn, email=email, password_hash=password_hash, user_metadata=form.data or {},
                    confirmed=False, invited=link_type == "invite",
                )
            elif link_type in ("signup", "invite") and user["email_confirmed_at"] is not None:
                raise email_exists()
            elif link_type in ("signup", "invite"):  # a sign-up nobody confirmed starts over with this one
                password_hash = await self._password_hash(AdminUserForm(password=form.password)) if form.password else None
                user, _ = await users.start_over(
                    conn, user, password_hash=password_hash, user_metadata=form.data or {},
                    invited=link_type == "invite",
                )
            token_type, verify_type, address = {
                "signup": ("confirmation_token", "signup", email),
                "invite": ("confirmation_token", "invite", email),
                "magiclink": ("recovery_token", "magiclink", email),
                "recovery": ("recovery_token", "recovery", email),
                "email_change_current": ("email_change_token_current", "email_change", email),
                "email_change_new": ("email_change_token_new", "email_change", form.new_email or ""),
            }[link_type]
            if link_type.startswith("email_change"):
                new_email = normalize_email(form.new_email)
                assert new_email is not None
                if await users.by_email(conn, new_email) is not None:
                    raise email_exists()
                address = new_email if link_type == "email_change_new" else email
                await conn.execute(
                    "UPDATE auth.users SET email_change = $2, email_change_sent_at = now() WHERE id = $1",
                    user["id"], new_email,
                )
            otp, link_token = await links.issue(
                conn, user_id=user["id"], token_type=token_type, address=address, expires_in=self.settings.otp_expiry
            )
            fresh = await users.by_id(conn, user["id"])
        assert fresh is not None
        query = urlencode({"token": link_token, "type": verify_type, "redirect_to": redirect})
        return GeneratedLink(
            user=User.from_row(fresh),
            action_link=f"{self.settings.public_api_url}/auth/v1/verify?{query}",
            email_otp=otp,
            hashed_token=link_token,
            verification_type=link_type,  # the requested type, as upstream echoes it (email_change_current, ...)
            redirect_to=redirect,
        )

    async def _password_hash(self, form: AdminUserForm) -> str | None:
        if form.password_hash is not None:
            if not form.password_hash.startswith(_HASH_PREFIXES):
                raise GatehouseError("validation_failed", "password_hash must be an argon2 or bcrypt hash", status=400)
            return form.password_hash
        if form.password is None:
            return None
        check_max_length(form.password)
        if not form.password:
            raise GatehouseError("validation_failed", "password must not be empty", status=400)
        return await self.deps.hasher.hash_async(form.password)

    async def _ban(self, conn: Conn, user_id: uuid.UUID, duration: str) -> None:
        until = parse_ban_duration(duration)
        await conn.execute("UPDATE auth.users SET banned_until = $2 WHERE id = $1", user_id, until)
        if until is not None:
            await conn.execute("DELETE FROM auth.sessions WHERE user_id = $1", user_id)
