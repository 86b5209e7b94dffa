"""Passkeys (WebAuthn): register them for a signed-in user, and sign in with one, no password.

The protocol is the upstream server's ``/passkeys`` routes, which supabase-js calls
(``registerPasskey``, ``signInWithPasskey``, ``passkey.list/update/delete``); py_webauthn checks
the ceremonies. The relying party is the app's site: its id is ``GATEHOUSE_SITE_URL``'s host and
the only origin accepted is that URL's origin (browsers allow WebAuthn on ``localhost`` and on
real domain names, not on IP addresses).

- Every ceremony has its own challenge (32 random bytes), stored with its purpose and user,
  consumed once (deleted as it is read), five minutes long.
- User verification is required (the authenticator checked a PIN or a biometric), so a passkey
  sign-in is two factors at once (possession, and what the person is or knows): its session is
  ``aal2`` with ``{method: passkey}`` in ``amr``.
- An assertion whose signature counter does not grow (where the authenticator counts) is
  refused: a sign that the credential was cloned.
- With a verified second factor, passkeys are added or removed only from an aal2 session.
"""

from __future__ import annotations

import json
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import asyncpg
from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import base64url_to_bytes, bytes_to_base64url
from webauthn.helpers.exceptions import InvalidAuthenticationResponse, InvalidRegistrationResponse
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from gatehouse.auth import users
from gatehouse.auth.flows.base import Client, Flow
from gatehouse.auth.mfa.flow import has_verified_factor, session_aal
from gatehouse.auth.models import Session
from gatehouse.core.db import Conn
from gatehouse.core.errors import GatehouseError

CHALLENGE_LIFETIME = timedelta(minutes=5)
MAX_PASSKEYS = 10
MAX_NAME = 120


@dataclass(frozen=True)
class Ceremony:
    """What the browser needs to start a ceremony: the challenge's id, the options, and when it ends."""

    challenge_id: uuid.UUID
    options: dict[str, Any]
    expires_at: int


@dataclass(frozen=True)
class Passkey:
    id: str
    friendly_name: str
    created_at: datetime
    last_used_at: datetime | None


def not_found() -> GatehouseError:
    return GatehouseError("passkey_not_found", "Passkey not found", status=404)


def _passkey(row: asyncpg.Record) -> Passkey:
    return Passkey(str(row["id"]), row["friendly_name"], row["created_at"], row["last_used_at"])


class PasskeyFlow(Flow):
    @property
    def rp_id(self) -> str:
        return urlsplit(self.settings.public_site_url).hostname or "localhost"

    @property
    def origin(self) -> str:
        parts = urlsplit(self.settings.public_site_url)
        return f"{parts.scheme}://{parts.netloc}"

    async def _require_aal2_if_mfa(self, conn: Conn, user_id: uuid.UUID, claims: dict[str, Any]) -> None:
        if await has_verified_factor(conn, user_id) and await session_aal(conn, claims) != "aal2":
            raise GatehouseError("insufficient_aal",
                                 "AAL2 session is required to manage passkeys when MFA is enabled", status=403)

    async def _store_challenge(self, conn: Conn, kind: str, user_id: uuid.UUID | None, challenge: bytes) -> Ceremony:
        expires = datetime.now(UTC) + CHALLENGE_LIFETIME
        challenge_id: uuid.UUID = await conn.fetchval(
            """
            WITH expired AS (DELETE FROM auth.webauthn_challenges WHERE expires_at < now() - interval '1 hour')
            INSERT INTO auth.webauthn_challenges (user_id, challenge_type, session_data, expires_at)
            VALUES ($1, $2, $3, $4) RETURNING id
            """,
            user_id, kind, {"challenge": bytes_to_base64url(challenge)}, expires,
        )
        return Ceremony(challenge_id, {}, int(expires.timestamp()))

    async def _consume(self, conn: Conn, challenge_id: str, kind: str, user_id: uuid.UUID | None) -> bytes:
        try:
            wanted = uuid.UUID(challenge_id)
        except ValueError:
            raise GatehouseError("validation_failed", "challenge_id must be a valid UUID", status=400) from None
        row = await conn.fetchrow(
            "DELETE FROM auth.webauthn_challenges WHERE id = $1 AND challenge_type = $2 "
            "AND user_id IS NOT DISTINCT FROM $3 RETURNING *",
            wanted, kind, user_id,
        )
        if row is None:
            raise GatehouseError("webauthn_challenge_not_found", "Challenge not found or already used", status=400)
        if row["expires_at"] < datetime.now(UTC):
            raise GatehouseError("webauthn_challenge_expired", "Challenge has expired", status=400)
        return base64url_to_bytes(row["session_data"]["challenge"])

    async def registration_options(self, claims: dict[str, Any], client: Client) -> Ceremony:
        user = await self.signed_in(claims)
        async with self.db.admin.acquire() as conn, conn.transaction():
            await self._require_aal2_if_mfa(conn, user["id"], claims)
            existing = await conn.fetch("SELECT credential_id FROM auth.webauthn_credentials WHERE user_id = $1",
                                        user["id"])
            if len(existing) >= MAX_PASSKEYS:
                raise GatehouseError("too_many_passkeys", "Maximum number of passkeys reached", status=422)
            challenge = secrets.token_bytes(32)
            name = user["email"] or user["phone"] or str(user["id"])
            options = generate_registration_options(
                rp_id=self.rp_id, rp_name=self.rp_id, user_id=str(user["id"]).encode(), user_name=name,
                user_display_name=name, challenge=challenge,
                exclude_credentials=[PublicKeyCredentialDescriptor(id=bytes(r["credential_id"])) for r in existing],
                authenticator_selection=AuthenticatorSelectionCriteria(
                    resident_key=ResidentKeyRequirement.REQUIRED, user_verification=UserVerificationRequirement.REQUIRED,
                ),
            )
            stored = await self._store_challenge(conn, "registration", user["id"], challenge)
        return Ceremony(stored.challenge_id, json.loads(options_to_json(options)), stored.expires_at)

    async def registration_verify(self, claims: dict[str, Any], challenge_id: str, credential: Any,
                                  client: Client) -> Passkey:
        user = await self.signed_in(claims)
        async with self.db.admin.acquire() as conn, conn.transaction():
            await self._require_aal2_if_mfa(conn, user["id"], claims)
            challenge = await self._consume(conn, challenge_id, "registration", user["id"])
        try:
            verified = verify_registration_response(
                credential=credential, expected_challenge=challenge, expected_rp_id=self.rp_id,
                expected_origin=self.origin, require_user_verification=True,
            )
        except (InvalidRegistrationResponse, ValueError, TypeError, KeyError) as exc:
            raise GatehouseError("webauthn_verification_failed", f"Credential verification failed: {exc}",
                                 status=400) from None
        transports = _transports(credential)
        async with self.db.admin.acquire() as conn, conn.transaction():
            await conn.execute("SELECT 1 FROM auth.users WHERE id = $1 FOR UPDATE", user["id"])  # one at a time
            count = await conn.fetchval("SELECT count(*) FROM auth.webauthn_credentials WHERE user_id = $1", user["id"])
            if count >= MAX_PASSKEYS:
                raise GatehouseError("too_many_passkeys", "Maximum number of passkeys reached", status=422)
            try:
                row = await conn.fetchrow(
                    """
                    INSERT INTO auth.webauthn_credentials (user_id, credential_id, public_key, attestation_type, aaguid,
                                                           sign_count, transports, backup_eligible, backed_up, friendly_name)
                    VALUES ($1, $2, $3, $4, $5::uuid, $6, $7, $8, $9, $10) RETURNING *
                    """,
                    user["id"], verified.credential_id, verified.credential_public_key, _text(verified.fmt),
                    verified.aaguid or None, verified.sign_count, transports,
                    _text(verified.credential_device_type) == "multi_device", verified.credential_backed_up,
                    "Passkey",
                )
            except asyncpg.UniqueViolationError:
                raise GatehouseError("webauthn_credential_exists", "This credential is already registered",
                                     status=422) from None
            assert row is not None
            await users.audit(conn, "passkey_registered", actor=user, ip=client.ip, traits={"passkey_id": str(row["id"])})
        return _passkey(row)

    async def authentication_options(self, client: Client) -> Ceremony:
        await self.limit(f"token:{client.ip}", self.limits.token)
        challenge = secrets.token_bytes(32)
        options = generate_authentication_options(
            rp_id=self.rp_id, challenge=challenge, user_verification=UserVerificationRequirement.REQUIRED,
        )
        async with self.db.admin.acquire() as conn:
            stored = await self._store_challenge(conn, "authentication", None, challenge)
        return Ceremony(stored.challenge_id, json.loads(options_to_json(options)), stored.expires_at)

    async def authentication_verify(self, challenge_id: str, credential: Any, client: Client) -> Session:
        """Sign in with a passkey: a new session at aal2."""
        await self.limit(f"token:{client.ip}", self.limits.token)
        async with self.db.admin.acquire() as conn, conn.transaction():
            challenge = await self._consume(conn, challenge_id, "authentication", None)
        try:
            raw_id = base64url_to_bytes(str(credential["rawId"] if isinstance(credential, dict) else ""))
        except (ValueError, TypeError, KeyError):
            raw_id = b""
        async with self.db.admin.acquire() as conn, conn.transaction():
            stored = await conn.fetchrow("SELECT * FROM auth.webauthn_credentials WHERE credential_id = $1 FOR UPDATE",
                                         raw_id) if raw_id else None
            if stored is None:
                raise GatehouseError("webauthn_verification_failed", "Credential verification failed: unknown passkey",
                                     status=400)
            handle = _user_handle(credential)
            if handle is not None and handle != str(stored["user_id"]):
                raise GatehouseError("webauthn_verification_failed",
                                     "Credential verification failed: the passkey belongs to another user", status=400)
            try:
                verified = verify_authentication_response(
                    credential=credential, expected_challenge=challenge, expected_rp_id=self.rp_id,
                    expected_origin=self.origin, credential_public_key=bytes(stored["public_key"]),
                    credential_current_sign_count=stored["sign_count"], require_user_verification=True,
                )
            except (InvalidAuthenticationResponse, ValueError, TypeError, KeyError) as exc:
                raise GatehouseError("webauthn_verification_failed", f"Credential verification failed: {exc}",
                                     status=400) from None
            user = await users.by_id(conn, stored["user_id"], for_update=True)
            if user is None:
                raise GatehouseError("user_not_found", "User not found", status=404)
            if user["email"] and user["email_confirmed_at"] is None:
                raise GatehouseError("email_not_confirmed", "Email not confirmed", status=403)
            if users.is_banned(user, datetime.now(UTC)):
                raise GatehouseError("user_banned", "User is banned", status=403)
            await conn.execute(
                "UPDATE auth.webauthn_credentials SET sign_count = $2, last_used_at = now(), updated_at = now(), "
                "backed_up = $3 WHERE id = $1",
                stored["id"], verified.new_sign_count, verified.credential_backed_up,
            )
            await users.audit(conn, "login", actor=user, ip=client.ip, traits={"passkey_id": str(stored["id"])})
            return await self.deps.sessions.create(conn, user, method="passkey", ip=client.ip,
                                                   user_agent=client.user_agent, aal="aal2")

    async def of_user(self, claims: dict[str, Any]) -> list[Passkey]:
        user = await self.signed_in(claims)
        rows = await self.db.admin.fetch(
            "SELECT * FROM auth.webauthn_credentials WHERE user_id = $1 ORDER BY created_at", user["id"])
        return [_passkey(row) for row in rows]

    async def rename(self, claims: dict[str, Any], passkey_id: str, name: str, client: Client) -> Passkey:
        name = name.strip()
        if not name:
            raise GatehouseError("validation_failed", "friendly_name is required", status=400)
        if len(name) > MAX_NAME or not name.isprintable():
            raise GatehouseError("validation_failed", f"friendly_name must be {MAX_NAME} printable characters or less",
                                 status=400)
        user = await self.signed_in(claims)
        async with self.db.admin.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "UPDATE auth.webauthn_credentials SET friendly_name = $3, updated_at = now() "
                "WHERE id = $1 AND user_id = $2 RETURNING *",
                _uuid(passkey_id), user["id"], name,
            )
            if row is None:
                raise not_found()
            await users.audit(conn, "passkey_updated", actor=user, ip=client.ip, traits={"passkey_id": passkey_id})
        return _passkey(row)

    async def delete(self, claims: dict[str, Any], passkey_id: str, client: Client) -> None:
        user = await self.signed_in(claims)
        async with self.db.admin.acquire() as conn, conn.transaction():
            await self._require_aal2_if_mfa(conn, user["id"], claims)
            deleted = await conn.fetchval(
                "DELETE FROM auth.webauthn_credentials WHERE id = $1 AND user_id = $2 RETURNING id",
                _uuid(passkey_id), user["id"],
            )
            if deleted is None:
                raise not_found()
            await users.audit(conn, "passkey_deleted", actor=user, ip=client.ip, traits={"passkey_id": passkey_id})


def _text(value: Any) -> str:
    """An enum member's value, or the string py_webauthn gave (its versions differ)."""
    return str(getattr(value, "value", value))


def _uuid(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise not_found() from None


def _transports(credential: Any) -> list[str]:
    found = credential.get("response", {}).get("transports") if isinstance(credential, dict) else None
    return [t for t in found if isinstance(t, str)][:8] if isinstance(found, list) else []


def _user_handle(credential: Any) -> str | None:
    """The user handle an assertion names (the user's id, as registration gave it), if any."""
    handle = credential.get("response", {}).get("userHandle") if isinstance(credential, dict) else None
    if not handle or not isinstance(handle, str):
        return None
    try:
        return base64url_to_bytes(handle).decode()
    except (ValueError, UnicodeDecodeError):
        return ""


__all__ = ["CHALLENGE_LIFETIME", "Ceremony", "Passkey", "PasskeyFlow"]
