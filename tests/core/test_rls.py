"""The RLS context: one helper, as_user(claims), decides who the SQL runs as. Real SQL, real policies."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import pytest

from gatehouse.core.db import Database
from gatehouse.core.errors import GatehouseError


def claims_for(user_id: uuid.UUID, role: str = "authenticated") -> dict[str, Any]:
    return {"sub": str(user_id), "role": role, "aud": "authenticated", "email": f"{user_id}@example.com"}


async def new_user(db: Database, **metadata: str) -> uuid.UUID:
    """Insert a user as the auth service would; the sign-up trigger creates the profile."""
    user_id = uuid.uuid4()
    await db.admin.execute(
        "INSERT INTO auth.users (id, aud, role, email, raw_user_meta_data, raw_app_meta_data) "
        "VALUES ($1, 'authenticated', 'authenticated', $2, $3, '{}')",
        user_id,
        f"{user_id}@example.com",
        metadata,
    )
    return user_id


@pytest.fixture(scope="module")
async def alice(db: Database) -> uuid.UUID:
    return await new_user(db, full_name="Alice Liddell", avatar_url="alice.png")


@pytest.fixture(scope="module")
async def bob(db: Database) -> uuid.UUID:
    return await new_user(db, full_name="Bob")


async def test_signup_trigger_creates_profile_from_metadata(db: Database, alice: uuid.UUID) -> None:
    row = await db.admin.fetchrow("SELECT full_name, avatar_url, username FROM public.profiles WHERE id = $1", alice)
    assert dict(row) == {"full_name": "Alice Liddell", "avatar_url": "alice.png", "username": None}


async def test_user_updates_own_profile(db: Database, alice: uuid.UUID) -> None:
    async with db.as_user(claims_for(alice)) as conn:
        status = await conn.execute("UPDATE public.profiles SET username = 'alice' WHERE id = $1", alice)
    assert status == "UPDATE 1"
    assert await db.admin.fetchval("SELECT username FROM public.profiles WHERE id = $1", alice) == "alice"


async def test_user_cannot_update_another_users_profile(db: Database, alice: uuid.UUID, bob: uuid.UUID) -> None:
    async with db.as_user(claims_for(alice)) as conn:
        status = await conn.execute("UPDATE public.profiles SET full_name = 'hacked' WHERE id = $1", bob)
        # The row is visible (profiles are public) but the UPDATE policy filters it out.
        assert await conn.fetchval("SELECT count(*) FROM public.profiles WHERE id = $1", bob) == 1
    assert status == "UPDATE 0"
    assert await db.admin.fetchval("SELECT full_name FROM public.profiles WHERE id = $1", bob) == "Bob"


async def test_user_cannot_move_own_profile_to_another_id(db: Database, alice: uuid.UUID, bob: uuid.UUID) -> None:
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
        async with db.as_user(claims_for(alice)) as conn:
            await conn.execute("UPDATE public.profiles SET id = $2 WHERE id = $1", alice, uuid.uuid4())


async def test_user_cannot_insert_profile_for_another_id(db: Database, alice: uuid.UUID) -> None:
    stranger = await new_user(db)
    await db.admin.execute("DELETE FROM public.profiles WHERE id = $1", stranger)
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
        async with db.as_user(claims_for(alice)) as conn:
            await conn.execute("INSERT INTO public.profiles (id, full_name) VALUES ($1, 'x')", stranger)
    assert await db.admin.fetchval("SELECT count(*) FROM public.profiles WHERE id = $1", stranger) == 0


async def test_user_inserts_own_missing_profile(db: Database) -> None:
    carol = await new_user(db)
    await db.admin.execute("DELETE FROM public.profiles WHERE id = $1", carol)
    async with db.as_user(claims_for(carol)) as conn:
        await conn.execute("INSERT INTO public.profiles (id, username) VALUES ($1, 'carol')", carol)
    assert await db.admin.fetchval("SELECT username FROM public.profiles WHERE id = $1", carol) == "carol"


async def test_user_cannot_delete_profiles(db: Database, alice: uuid.UUID) -> None:
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        async with db.as_user(claims_for(alice)) as conn:
            await conn.execute("DELETE FROM public.profiles WHERE id = $1", alice)


@pytest.mark.parametrize("claims", [None, {"role": "anon"}])
async def test_anon_reads_profiles(db: Database, alice: uuid.UUID, claims: dict[str, str] | None) -> None:
    async with db.as_user(claims, readonly=True) as conn:
        assert await conn.fetchval("SELECT full_name FROM public.profiles WHERE id = $1", alice) == "Alice Liddell"
        assert await conn.fetchval("SELECT current_user") == "anon"


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE public.profiles SET full_name = 'anon was here'",
        "INSERT INTO public.profiles (id) VALUES (gen_random_uuid())",
        "DELETE FROM public.profiles",
    ],
)
async def test_anon_cannot_write_profiles(db: Database, statement: str) -> None:
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
        async with db.as_user(None) as conn:
            await conn.execute(statement)
    assert await db.admin.fetchval("SELECT count(*) FROM public.profiles WHERE full_name = 'anon was here'") == 0


async def test_service_role_bypasses_rls(db: Database, bob: uuid.UUID) -> None:
    async with db.as_user({"role": "service_role"}) as conn:
        status = await conn.execute("UPDATE public.profiles SET website = 'https://bob.example' WHERE id = $1", bob)
        assert await conn.fetchval("SELECT current_user") == "service_role"
    assert status == "UPDATE 1"
    assert await db.admin.fetchval("SELECT website FROM public.profiles WHERE id = $1", bob) == "https://bob.example"


async def test_auth_functions_see_the_claims(db: Database, alice: uuid.UUID) -> None:
    claims = claims_for(alice) | {"app_metadata": {"provider": "email"}}
    async with db.as_user(claims, readonly=True) as conn:
        row = await conn.fetchrow("SELECT auth.uid() AS uid, auth.role() AS role, auth.email() AS email, auth.jwt() AS jwt")
    assert row["uid"] == alice
    assert row["role"] == "authenticated"
    assert row["email"] == f"{alice}@example.com"
    assert row["jwt"] == claims


async def test_context_ends_with_the_transaction(db: Database, alice: uuid.UUID) -> None:
    """A pooled connection never carries the previous caller's role or claims."""
    for _ in range(3):  # the pool hands back the same few connections
        async with db.as_user(claims_for(alice)):
            pass
    pool = db._request
    assert pool is not None
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT current_user") == "authenticator"
        assert await conn.fetchval("SELECT current_setting('request.jwt.claims', true)") in (None, "")


async def test_rollback_on_error_keeps_nothing(db: Database, alice: uuid.UUID) -> None:
    with pytest.raises(asyncpg.CheckViolationError):
        async with db.as_user(claims_for(alice)) as conn:
            await conn.execute("UPDATE public.profiles SET full_name = 'half' WHERE id = $1", alice)
            await conn.execute("UPDATE public.profiles SET username = 'ab' WHERE id = $1", alice)
    assert await db.admin.fetchval("SELECT full_name FROM public.profiles WHERE id = $1", alice) != "half"


async def test_authenticator_alone_has_no_rights(db: Database) -> None:
    pool = db._request
    assert pool is not None
    async with pool.acquire() as conn:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.fetch("SELECT * FROM public.profiles")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.fetch("SELECT * FROM auth.users")


@pytest.mark.parametrize("role", ["postgres", "authenticator", "", "Authenticated"])
async def test_other_roles_are_refused_before_sql(db: Database, role: str) -> None:
    with pytest.raises(GatehouseError) as caught:
        async with db.as_user({"role": role}):
            pass
    assert caught.value.code == "bad_jwt"


async def test_signed_in_users_cannot_read_auth_tables(db: Database, alice: uuid.UUID) -> None:
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        async with db.as_user(claims_for(alice), readonly=True) as conn:
            await conn.fetch("SELECT encrypted_password FROM auth.users")


async def test_deleting_a_user_deletes_their_profile(db: Database) -> None:
    dave = await new_user(db, full_name="Dave")
    await db.admin.execute("DELETE FROM auth.users WHERE id = $1", dave)
    assert await db.admin.fetchval("SELECT count(*) FROM public.profiles WHERE id = $1", dave) == 0
