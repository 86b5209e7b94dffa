"""The user-management starter's profile (``public.profiles``): read and saved as the caller.

Every statement runs through ``Database.run_as`` with the caller's claims, the same path the data
API takes, so the table's row-level security policies are the one judge of who may read or write
which profile; nothing here uses a privileged role or checks ownership itself. Database errors
become ``ProfileError`` codes (or the database's own ``unavailable`` and ``SessionEnded``), never
asyncpg exceptions. With ``GATEHOUSE_STARTER_SCHEMA=none`` the table is the app's own (the
tutorial's SQL creates the same columns); without one, every call fails with ``profiles_missing``.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from gatehouse.core.db import Database, is_unavailable, unavailable
from gatehouse.core.errors import GatehouseError
from gatehouse.core.sqlstate import Fault, fault

log = logging.getLogger("gatehouse.profiles")

#: Error codes (API: pages and clients match on them).
USERNAME_TAKEN = "username_taken"
USERNAME_TOO_SHORT = "username_too_short"
INVALID_PROFILE = "invalid_profile"
PROFILE_FORBIDDEN = "profile_forbidden"
PROFILES_MISSING = "profiles_missing"
PROFILE_FAILED = "profile_failed"


class ProfileError(GatehouseError):
    """A profile read or change that the database refused, with one of the codes above."""


@dataclass(frozen=True)
class Profile:
    """One row of ``public.profiles`` (``Profile(id)``, every field None, stands for a missing row)."""

    id: uuid.UUID
    username: str | None = None
    full_name: str | None = None
    website: str | None = None
    avatar_url: str | None = None
    updated_at: datetime | None = None


# Statements for ``run_as``: $1 is the JSON array of values; each yields (body, count, total).
_READ = (
    "SELECT (SELECT to_jsonb(p) FROM (SELECT id, username, full_name, website, avatar_url, updated_at "
    "FROM public.profiles WHERE id = ($1->>0)::uuid) p)::text, 1::bigint, NULL::bigint"
)
#: No RETURNING: a new row is checked against the insert and update policies only, as a plain
#: upsert is. An existing row the caller may not update is an error (42501), not a silent no-op.
_SAVE_DETAILS = (
    "WITH saved AS (INSERT INTO public.profiles (id, full_name, username, website, updated_at) "
    "VALUES (($1->>0)::uuid, $1->>1, $1->>2, $1->>3, now()) ON CONFLICT (id) DO UPDATE SET "
    "full_name = excluded.full_name, username = excluded.username, website = excluded.website, updated_at = now()) "
    "SELECT NULL::text, NULL::bigint, NULL::bigint"
)
_SAVE_AVATAR = (
    "WITH saved AS (INSERT INTO public.profiles (id, avatar_url, updated_at) VALUES (($1->>0)::uuid, $1->>1, now()) "
    "ON CONFLICT (id) DO UPDATE SET avatar_url = excluded.avatar_url, updated_at = now()) "
    "SELECT NULL::text, NULL::bigint, NULL::bigint"
)


async def read(database: Database, claims: Mapping[str, Any] | None, user_id: uuid.UUID) -> Profile | None:
    """``user_id``'s profile as the caller may see it, or None (no row, or the policies hide it)."""
    body = await _run(database, claims, _READ, [str(user_id)], readonly=True)
    if body is None:
        return None
    row = orjson.loads(body)
    updated_at = row.get("updated_at")
    return Profile(
        id=uuid.UUID(row["id"]), username=row.get("username"), full_name=row.get("full_name"),
        website=row.get("website"), avatar_url=row.get("avatar_url"),
        updated_at=datetime.fromisoformat(updated_at) if updated_at else None,
    )


async def save_details(
    database: Database, claims: Mapping[str, Any] | None, user_id: uuid.UUID, *,
    full_name: str | None, username: str | None, website: str | None,
) -> None:
    """Create or update ``user_id``'s name, username and website (None clears a field)."""
    await _run(database, claims, _SAVE_DETAILS, [str(user_id), full_name, username, website])


async def save_avatar(database: Database, claims: Mapping[str, Any] | None, user_id: uuid.UUID, avatar_url: str) -> None:
    """Create or update ``user_id``'s ``avatar_url`` (an object name in the ``avatars`` bucket)."""
    await _run(database, claims, _SAVE_AVATAR, [str(user_id), avatar_url])


async def _run(
    database: Database, claims: Mapping[str, Any] | None, sql: str, values: list[Any], *, readonly: bool = False
) -> str | None:
    try:
        result = await database.run_as(claims, sql, values, readonly=readonly)
    except asyncpg.PostgresError as exc:
        raise _translate(exc) from None
    return result.body


def _translate(error: asyncpg.PostgresError) -> GatehouseError:
    """The domain error for what the database said (the caller's input or rights, or our setup)."""
    if is_unavailable(error):
        return unavailable()
    kind = fault(error.sqlstate)
    if kind is Fault.CONFLICT:
        return ProfileError(USERNAME_TAKEN, "Another profile already has that username", status=409)
    if kind is Fault.CHECK:  # the starter's one check: username_length
        return ProfileError(USERNAME_TOO_SHORT, "A username needs at least 3 characters")
    if kind is Fault.FORBIDDEN:  # a grant or a row-level security policy
        return ProfileError(PROFILE_FORBIDDEN, "You may not read or change this profile", status=403)
    if kind is Fault.BAD_INPUT:  # text the database cannot store: a NUL byte, bad encoding
        return ProfileError(INVALID_PROFILE, "The profile holds characters that cannot be stored")
    if kind is Fault.UNDEFINED:
        log.error("public.profiles is missing or lacks a column (GATEHOUSE_STARTER_SCHEMA=none and no "
                  "profiles table of the app's own?): %s", error.message)
        return ProfileError(PROFILES_MISSING, "This site keeps no profiles; the server log has the details",
                            status=500)
    log.error("a profile statement failed in the database", exc_info=error)
    return ProfileError(PROFILE_FAILED, "The profile could not be saved; the server log has the details",
                        status=500)
