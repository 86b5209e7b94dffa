"""gatehouse.profiles: the caller's profile through run_as, so the starter's RLS policies decide.

Real SQL, real policies: user A reads and saves A's profile; B's profile is as A's policies
allow (readable by everyone, never writable); every refusal is a ``ProfileError`` with a code,
never an asyncpg exception.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from gatehouse import profiles
from gatehouse.core.db import Database, SessionEnded
from gatehouse.core.errors import GatehouseError
from gatehouse.profiles import Profile, ProfileError


def claims_for(user_id: uuid.UUID) -> dict[str, Any]:
    return {"sub": str(user_id), "role": "authenticated", "aud": "authenticated", "email": f"{user_id}@example.com"}


async def new_user(db: Database, *, profile: bool = True, **metadata: str) -> uuid.UUID:
    """A user as the auth service inserts one; the sign-up trigger gives it a profile unless told not to."""
    user_id = uuid.uuid4()
    await db.admin.execute(
        "INSERT INTO auth.users (id, aud, role, email, raw_user_meta_data, raw_app_meta_data) "
        "VALUES ($1, 'authenticated', 'authenticated', $2, $3, '{}')",
        user_id, f"{user_id}@example.com", metadata,
    )
    if not profile:
        await db.admin.execute("DELETE FROM public.profiles WHERE id = $1", user_id)
    return user_id


async def stored(db: Database, user_id: uuid.UUID) -> dict[str, Any] | None:
    row = await db.admin.fetchrow(
        "SELECT username, full_name, website, avatar_url FROM public.profiles WHERE id = $1", user_id
    )
    return dict(row) if row else None


@pytest.fixture(scope="module")
async def alice(db: Database) -> uuid.UUID:
    return await new_user(db, full_name="Alice Liddell", avatar_url="alice.png")


@pytest.fixture(scope="module")
async def bob(db: Database) -> uuid.UUID:
    return await new_user(db, full_name="Bob")


# -- reading ---------------------------------------------------------------------------------------------


async def test_reads_the_callers_profile_as_a_typed_value(db: Database, alice: uuid.UUID) -> None:
    profile = await profiles.read(db, claims_for(alice), alice)
    assert profile is not None
    assert (profile.id, profile.full_name, profile.avatar_url, profile.username) == (
        alice, "Alice Liddell", "alice.png", None
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        profile.username = "changed"  # type: ignore[misc]


async def test_a_user_without_a_row_reads_none(db: Database) -> None:
    carol = await new_user(db, profile=False)
    assert await profiles.read(db, claims_for(carol), carol) is None


async def test_everyone_may_read_a_profile_under_the_starters_policy(db: Database, alice: uuid.UUID,
                                                                     bob: uuid.UUID) -> None:
    seen_by_alice = await profiles.read(db, claims_for(alice), bob)
    seen_by_anon = await profiles.read(db, None, bob)
    assert seen_by_alice is not None and seen_by_alice.full_name == "Bob"
    assert seen_by_anon == seen_by_alice


@pytest.fixture
async def own_profiles_only(db: Database) -> AsyncIterator[None]:
    """The app's stricter policy: a signed-in user sees only their own profile."""
    public = '"Public profiles are viewable by everyone."'
    await db.admin.execute(f"DROP POLICY {public} ON public.profiles")
    await db.admin.execute('CREATE POLICY "own" ON public.profiles FOR SELECT USING ((SELECT auth.uid()) = id)')
    try:
        yield
    finally:
        await db.admin.execute('DROP POLICY "own" ON public.profiles')
        await db.admin.execute(f"CREATE POLICY {public} ON public.profiles FOR SELECT USING (true)")


@pytest.mark.usefixtures("own_profiles_only")
async def test_a_profile_the_policies_hide_reads_none(db: Database, alice: uuid.UUID, bob: uuid.UUID) -> None:
    assert await profiles.read(db, claims_for(alice), bob) is None
    own = await profiles.read(db, claims_for(alice), alice)
    assert own is not None and own.id == alice


# -- saving ----------------------------------------------------------------------------------------------


async def test_saves_and_clears_the_callers_details(db: Database, alice: uuid.UUID) -> None:
    await profiles.save_details(db, claims_for(alice), alice, full_name="Alice", username="alice",
                                website="https://alice.example")
    assert await stored(db, alice) == {"username": "alice", "full_name": "Alice", "website": "https://alice.example",
                                       "avatar_url": "alice.png"}
    await profiles.save_details(db, claims_for(alice), alice, full_name="Alice", username=None, website=None)
    profile = await profiles.read(db, claims_for(alice), alice)
    assert profile is not None and (profile.username, profile.website) == (None, None)
    assert profile.updated_at is not None


async def test_creates_the_row_a_user_lacks(db: Database) -> None:
    dora = await new_user(db, profile=False)
    await profiles.save_avatar(db, claims_for(dora), dora, f"{dora}-1.png")
    profile = await profiles.read(db, claims_for(dora), dora)
    assert profile is not None and profile.updated_at is not None
    assert profile == Profile(dora, avatar_url=f"{dora}-1.png", updated_at=profile.updated_at)


async def test_cannot_change_another_users_profile(db: Database, alice: uuid.UUID, bob: uuid.UUID) -> None:
    before = await stored(db, bob)
    with pytest.raises(ProfileError) as details:
        await profiles.save_details(db, claims_for(alice), bob, full_name="hacked", username=None, website=None)
    with pytest.raises(ProfileError) as avatar:
        await profiles.save_avatar(db, claims_for(alice), bob, "mallory.png")
    for caught in (details, avatar):
        assert (caught.value.code, caught.value.status) == (profiles.PROFILE_FORBIDDEN, 403)
    assert await stored(db, bob) == before


async def test_cannot_create_another_users_missing_profile(db: Database, alice: uuid.UUID) -> None:
    erin = await new_user(db, profile=False)
    with pytest.raises(ProfileError) as caught:
        await profiles.save_details(db, claims_for(alice), erin, full_name="x", username=None, website=None)
    assert caught.value.code == profiles.PROFILE_FORBIDDEN
    assert await stored(db, erin) is None


async def test_anonymous_callers_cannot_save(db: Database, bob: uuid.UUID) -> None:
    with pytest.raises(ProfileError) as caught:
        await profiles.save_avatar(db, None, bob, "anon.png")
    assert caught.value.code == profiles.PROFILE_FORBIDDEN


async def test_a_taken_username_and_a_short_one_are_coded(db: Database, alice: uuid.UUID, bob: uuid.UUID) -> None:
    await profiles.save_details(db, claims_for(bob), bob, full_name="Bob", username="bobby", website=None)
    with pytest.raises(ProfileError) as taken:
        await profiles.save_details(db, claims_for(alice), alice, full_name=None, username="bobby", website=None)
    with pytest.raises(ProfileError) as short:
        await profiles.save_details(db, claims_for(alice), alice, full_name=None, username="ab", website=None)
    assert (taken.value.code, taken.value.status) == (profiles.USERNAME_TAKEN, 409)
    assert (short.value.code, short.value.status) == (profiles.USERNAME_TOO_SHORT, 400)


async def test_text_the_database_cannot_store_is_coded(db: Database, alice: uuid.UUID) -> None:
    with pytest.raises(ProfileError) as caught:
        await profiles.save_details(db, claims_for(alice), alice, full_name="nul\x00byte", username=None, website=None)
    assert (caught.value.code, caught.value.status) == (profiles.INVALID_PROFILE, 400)


async def test_an_ended_session_is_refused_before_anything_runs(db: Database, alice: uuid.UUID) -> None:
    claims = claims_for(alice) | {"session_id": str(uuid.uuid4())}  # a session that does not exist
    with pytest.raises(SessionEnded):
        await profiles.read(db, claims, alice)
    with pytest.raises(SessionEnded):
        await profiles.save_avatar(db, claims, alice, "ended.png")


async def test_without_a_profiles_table_every_call_is_coded(db: Database, alice: uuid.UUID) -> None:
    """GATEHOUSE_STARTER_SCHEMA=none and no table of the app's own: an error page, not a traceback."""
    await db.admin.execute("ALTER TABLE public.profiles RENAME TO profiles_elsewhere")
    try:
        for call in (profiles.read(db, claims_for(alice), alice),
                     profiles.save_avatar(db, claims_for(alice), alice, "x.png")):
            with pytest.raises(ProfileError) as caught:
                await call
            assert (caught.value.code, caught.value.status) == (profiles.PROFILES_MISSING, 500)
    finally:
        await db.admin.execute("ALTER TABLE public.profiles_elsewhere RENAME TO profiles")


# -- no asyncpg error escapes ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "code", "status"),
    [
        (asyncpg.UniqueViolationError, profiles.USERNAME_TAKEN, 409),
        (asyncpg.CheckViolationError, profiles.USERNAME_TOO_SHORT, 400),
        (asyncpg.InsufficientPrivilegeError, profiles.PROFILE_FORBIDDEN, 403),
        (asyncpg.CharacterNotInRepertoireError, profiles.INVALID_PROFILE, 400),
        (asyncpg.UndefinedTableError, profiles.PROFILES_MISSING, 500),
        (asyncpg.UndefinedColumnError, profiles.PROFILES_MISSING, 500),
        (asyncpg.ConnectionDoesNotExistError, "database_unavailable", 503),
        (asyncpg.CannotConnectNowError, "database_unavailable", 503),
        (asyncpg.DeadlockDetectedError, profiles.PROFILE_FAILED, 500),
    ],
)
def test_database_errors_become_domain_errors(error: type[asyncpg.PostgresError], code: str, status: int) -> None:
    translated = profiles._translate(error("from the database"))
    assert isinstance(translated, GatehouseError) and not isinstance(translated, asyncpg.PostgresError)
    assert (translated.code, translated.status) == (code, status)
