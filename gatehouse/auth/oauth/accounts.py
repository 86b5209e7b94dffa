"""Which account a provider's sign-in belongs to: the rules, and their SQL.

The rule, in order (``sign_in``):

1. **The identity is known** (this provider, this subject): its account.
2. **The provider vouches for the address** (``email_verified``) and an account has it:
   - its address was confirmed: the identity joins that account (one person, two ways in);
   - it was never confirmed: whoever signed up with it never proved they own the address, and the
     provider has just proved that this person does. The account is theirs: the unconfirmed
     password, metadata, pending links and sessions are dropped before the identity joins it (the
     pre-account takeover: sign up with someone's address, wait for them to use a provider).
3. **Otherwise a new account**: with the address if the provider vouches for it; without one if
   it does not. An address nobody has verified is kept in the identity's data only, so it can
   neither claim an account nor block the address's owner from signing up.

An unverified address never joins or claims an account, whatever the server's other settings
(``GATEHOUSE_MAILER_AUTOCONFIRM`` included). ``link`` adds an identity to a signed-in user's own
account; ``unlink`` removes one, never the last.
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

import asyncpg

from gatehouse.auth import users
from gatehouse.auth.forms import normalize_email
from gatehouse.auth.oauth.providers import ProviderIdentity
from gatehouse.core.db import Conn
from gatehouse.core.errors import GatehouseError

_INSERT_IDENTITY = """
INSERT INTO auth.identities (provider_id, user_id, identity_data, provider, last_sign_in_at)
VALUES ($1, $2, $3, $4, now())
"""

#: The account's providers in app_metadata, as the upstream server keeps them (from its identities).
_PROVIDERS = """
UPDATE auth.users u
SET raw_app_meta_data = coalesce(u.raw_app_meta_data, '{}'::jsonb)
        || jsonb_build_object('providers', coalesce((SELECT jsonb_agg(DISTINCT i.provider) FROM auth.identities i
                                                      WHERE i.user_id = u.id), '[]'::jsonb)),
    updated_at = now()
WHERE u.id = $1
"""


def banned() -> GatehouseError:
    return GatehouseError("user_banned", "User is banned", status=403)


def _normalized(identity: ProviderIdentity) -> ProviderIdentity:
    """The identity with its address normalized as sign-up normalizes one; an address that is not
    one (malformed, too long) counts as none."""
    try:
        email = normalize_email(identity.email, required=False)
    except GatehouseError:
        email = None
    return dataclasses.replace(identity, email=email, email_verified=identity.email_verified and email is not None)


async def sign_in(conn: Conn, provider: str, identity: ProviderIdentity, *, allow_signup: bool,
                  ip: str) -> tuple[asyncpg.Record, bool]:
    """The account this sign-in belongs to (made if need be), and whether it was made now.

    Runs in the caller's transaction. Two sign-ins racing to make the same account: the second
    finds the first's (a savepoint retries once after a unique violation).
    """
    identity = _normalized(identity)
    for attempt in (1, 2):
        try:
            async with conn.transaction():
                return await _sign_in(conn, provider, identity, allow_signup=allow_signup, ip=ip)
        except asyncpg.UniqueViolationError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


async def _sign_in(conn: Conn, provider: str, identity: ProviderIdentity, *, allow_signup: bool,
                   ip: str) -> tuple[asyncpg.Record, bool]:
    known = await conn.fetchrow(
        "SELECT user_id FROM auth.identities WHERE provider = $1 AND provider_id = $2 FOR UPDATE",
        provider, identity.subject,
    )
    if known is not None:
        await conn.execute(
            "UPDATE auth.identities SET identity_data = $3, last_sign_in_at = now(), updated_at = now() "
            "WHERE provider = $1 AND provider_id = $2", provider, identity.subject, identity.data,
        )
        user = await users.by_id(conn, known["user_id"], for_update=True)
        if user is None:
            raise GatehouseError("user_not_found", "The account of this identity has been deleted", status=403)
        await users.audit(conn, "login", actor=user, ip=ip, traits={"provider": provider})
        return user, False
    if identity.email and identity.email_verified:
        owner = await users.by_email(conn, identity.email, for_update=True)
        if owner is not None:
            if owner["email_confirmed_at"] is None:
                await _claim_unconfirmed(conn, owner["id"])
            await conn.execute(_INSERT_IDENTITY, identity.subject, owner["id"], identity.data, provider)
            await conn.execute(_PROVIDERS, owner["id"])
            user = await users.by_id(conn, owner["id"])
            assert user is not None
            await users.audit(conn, "identity_linked", actor=user, ip=ip, traits={"provider": provider})
            return user, False
    if not allow_signup:
        raise GatehouseError("signup_disabled", "Signups not allowed for this instance", status=422)
    user = await _create(conn, provider, identity)
    await users.audit(conn, "user_signedup", actor=user, ip=ip, traits={"provider": provider})
    return user, True


async def _claim_unconfirmed(conn: Conn, user_id: uuid.UUID) -> None:
    """The address's owner has proved it through a provider: drop what the unproven sign-up left."""
    await users.drop_pending(conn, user_id)
    await conn.execute(
        """
        WITH tokens AS (DELETE FROM auth.one_time_tokens WHERE user_id = $1),
             flows AS (DELETE FROM auth.flow_state WHERE user_id = $1),
             others AS (DELETE FROM auth.identities WHERE user_id = $1 AND provider <> 'email')
        DELETE FROM auth.sessions WHERE user_id = $1
        """,
        user_id,
    )
    await users.mark_email_confirmed(conn, user_id)


async def _create(conn: Conn, provider: str, identity: ProviderIdentity) -> asyncpg.Record:
    user_id = uuid.uuid4()
    verified = identity.email if identity.email_verified else None
    metadata = {key: value for key, value in identity.data.items() if key not in ("iss", "phone_verified")}
    await conn.execute(
        """
        WITH new_user AS (
            INSERT INTO auth.users (id, aud, role, email, email_confirmed_at, raw_app_meta_data, raw_user_meta_data,
                                    is_super_admin)
            VALUES ($1, 'authenticated', 'authenticated', $2::text, CASE WHEN $2::text IS NOT NULL THEN now() END,
                    $3, $4, false)
            RETURNING id
        )
        INSERT INTO auth.identities (provider_id, user_id, identity_data, provider, last_sign_in_at)
        SELECT $5, id, $6, $7, now() FROM new_user
        """,
        user_id, verified, {"provider": provider, "providers": [provider]}, metadata,
        identity.subject, identity.data, provider,
    )
    user = await users.by_id(conn, user_id)
    assert user is not None
    return user


async def link(conn: Conn, user_id: uuid.UUID, provider: str, identity: ProviderIdentity, *, ip: str) -> asyncpg.Record:
    """Add the identity to a signed-in user's account (``linkIdentity``)."""
    known = await conn.fetchrow(
        "SELECT user_id FROM auth.identities WHERE provider = $1 AND provider_id = $2 FOR UPDATE",
        provider, identity.subject,
    )
    if known is not None and known["user_id"] != user_id:
        raise GatehouseError("identity_already_exists", "Identity is already linked to another user", status=422)
    user = await users.by_id(conn, user_id, for_update=True)
    if user is None:
        raise GatehouseError("user_not_found", "User not found", status=404)
    if known is None:
        await conn.execute(_INSERT_IDENTITY, identity.subject, user_id, identity.data, provider)
        await users.make_permanent(conn, user_id, provider)  # an anonymous user now has a way back in
        await conn.execute(_PROVIDERS, user_id)
        await users.audit(conn, "identity_linked", actor=user, ip=ip, traits={"provider": provider})
    else:
        await conn.execute(
            "UPDATE auth.identities SET identity_data = $3, last_sign_in_at = now(), updated_at = now() "
            "WHERE provider = $1 AND provider_id = $2", provider, identity.subject, identity.data,
        )
    found = await users.by_id(conn, user_id)
    assert found is not None
    return found


async def unlink(conn: Conn, user_id: uuid.UUID, identity_id: uuid.UUID, *, ip: str) -> asyncpg.Record:
    """Remove one of the user's identities, never the last. Removing the ``email`` identity also
    removes the password: it is the identity a password signs in with."""
    user = await users.by_id(conn, user_id, for_update=True)
    if user is None:
        raise GatehouseError("user_not_found", "User not found", status=404)
    identities: list[dict[str, Any]] = list(user["identities"] or [])
    target = next((i for i in identities if str(i["id"]) == str(identity_id)), None)
    if target is None:
        raise GatehouseError("identity_not_found", "Identity doesn't exist", status=404)
    if len(identities) <= 1:
        raise GatehouseError("single_identity_not_deletable", "User must have at least 1 identity after unlinking",
                             status=422)
    await conn.execute("DELETE FROM auth.identities WHERE id = $1 AND user_id = $2", identity_id, user_id)
    if target["provider"] == "email":
        await conn.execute("UPDATE auth.users SET encrypted_password = NULL, updated_at = now() WHERE id = $1", user_id)
    await conn.execute(_PROVIDERS, user_id)
    await users.audit(conn, "identity_unlinked", actor=user, ip=ip, traits={"provider": target["provider"]})
    found = await users.by_id(conn, user_id)
    assert found is not None
    return found


__all__ = ["banned", "link", "sign_in", "unlink"]
