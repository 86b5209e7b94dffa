"""Who may see a change is decided by each subscriber's RLS, checked as that subscriber, in one call."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import pytest

from gatehouse.core.db import Database
from gatehouse.realtime.feed import ChangeFeed
from gatehouse.realtime.models import Change
from gatehouse.realtime.visibility import Sight, visible_to
from tests.realtime.conftest import Received, published_table

NOTES = "id uuid PRIMARY KEY DEFAULT gen_random_uuid(), owner uuid, body text, private boolean NOT NULL DEFAULT false"


async def signed_in(db: Database) -> dict[str, Any]:
    """A user with a live session: the claims its access token would carry."""
    user_id = uuid.uuid4()
    await db.admin.execute("INSERT INTO auth.users (id, aud, role, email) VALUES ($1, 'authenticated', "
                           "'authenticated', $2)", user_id, f"{user_id}@example.com")
    session_id = await db.admin.fetchval("INSERT INTO auth.sessions (user_id) VALUES ($1) RETURNING id", user_id)
    return {"sub": str(user_id), "role": "authenticated", "aud": "authenticated", "session_id": str(session_id)}


@pytest.fixture(scope="module")
async def notes(db: Database) -> str:
    """A published table whose private rows only their owner may read."""
    table = await published_table(db, NOTES)
    await db.admin.execute(
        f"ALTER TABLE public.{table} ENABLE ROW LEVEL SECURITY; "
        f"CREATE POLICY readable ON public.{table} FOR SELECT USING (NOT private OR owner = auth.uid())"
    )
    return table


async def change_of(db: Database, got: Received, table: str, statement: str, *args: object) -> Change:
    before = len(got.of(table))
    await db.admin.execute(statement, *args)
    changes = await got.wait(table, before + 1)
    return changes[-1]


async def test_rls_decides_who_sees_an_insert(
    db: Database, request_pool: asyncpg.Pool, feed: ChangeFeed, got: Received, notes: str
) -> None:
    alice, bob = await signed_in(db), await signed_in(db)
    signed_out = await signed_in(db)
    await db.admin.execute("DELETE FROM auth.sessions WHERE id = $1", uuid.UUID(signed_out["session_id"]))
    subscribers = [alice, bob, {"role": "anon"}, {"role": "service_role"}, signed_out]

    private = await change_of(db, got, notes, f"INSERT INTO public.{notes} (owner, body, private) "
                                              "VALUES ($1, 'bob only', true)", uuid.UUID(bob["sub"]))
    assert set(await visible_to(request_pool, private, subscribers)) == {1, 3}  # bob, service_role

    public = await change_of(db, got, notes, f"INSERT INTO public.{notes} (owner, body) VALUES ($1, 'hello')",
                             uuid.UUID(bob["sub"]))
    assert set(await visible_to(request_pool, public, subscribers)) == {0, 1, 2, 3}  # not the ended session

    made_private = await change_of(db, got, notes, f"UPDATE public.{notes} SET private = true WHERE id = $1",
                                   uuid.UUID(public.record["id"]))
    assert set(await visible_to(request_pool, made_private, subscribers)) == {1, 3}


async def test_a_signed_out_users_session_sees_nothing(
    db: Database, request_pool: asyncpg.Pool, feed: ChangeFeed, got: Received, notes: str
) -> None:
    carol = await signed_in(db)
    own = await change_of(db, got, notes, f"INSERT INTO public.{notes} (owner, body, private) "
                                          "VALUES ($1, 'mine', true)", uuid.UUID(carol["sub"]))
    assert await visible_to(request_pool, own, [carol]) == {0: Sight(frozenset(), True)}
    await db.admin.execute("DELETE FROM auth.sessions WHERE user_id = $1", uuid.UUID(carol["sub"]))
    assert await visible_to(request_pool, own, [carol]) == {}


async def test_a_delete_reaches_readers_of_the_table_with_the_key_only_under_rls(
    db: Database, request_pool: asyncpg.Pool, feed: ChangeFeed, got: Received, notes: str
) -> None:
    """The deleted row can no longer be checked: as upstream, every reader gets it, cut to its key under RLS."""
    await db.admin.execute(f"ALTER TABLE public.{notes} REPLICA IDENTITY FULL")
    dave = await signed_in(db)
    inserted = await change_of(db, got, notes, f"INSERT INTO public.{notes} (owner, body, private) "
                                               "VALUES ($1, 'gone soon', true)", uuid.UUID(dave["sub"]))
    deleted = await change_of(db, got, notes, f"DELETE FROM public.{notes} WHERE id = $1",
                              uuid.UUID(inserted.record["id"]))
    sights = await visible_to(request_pool, deleted, [dave, {"role": "anon"}, {"role": "service_role"}])
    assert sights == {0: Sight(frozenset(), True), 1: Sight(frozenset(), True), 2: Sight(frozenset(), False)}
    assert deleted.data(**_kw(sights[1]))["old_record"] == {"id": inserted.record["id"]}
    assert deleted.data(**_kw(sights[2]))["old_record"]["body"] == "gone soon"


async def test_columns_a_role_may_not_read_are_hidden(
    db: Database, request_pool: asyncpg.Pool, feed: ChangeFeed, got: Received
) -> None:
    table = await published_table(db, "id int PRIMARY KEY, body text, secret text")
    await db.admin.execute(f"REVOKE SELECT ON public.{table} FROM anon; GRANT SELECT (id, body) ON public.{table} TO anon; "
                           f"REVOKE SELECT ON public.{table} FROM authenticated")
    change = await change_of(db, got, table, f"INSERT INTO public.{table} VALUES (1, 'hi', 'psst')")
    sights = await visible_to(request_pool, change, [{"role": "anon"}, {"role": "authenticated"},
                                                     {"role": "service_role"}])
    assert sights == {0: Sight(frozenset({"secret"}), False), 2: Sight(frozenset(), False)}
    data = change.data(**_kw(sights[0]))
    assert data["record"] == {"id": 1, "body": "hi"}
    assert [column["name"] for column in data["columns"]] == ["id", "body"]


async def test_claims_that_are_not_a_request_roles_see_nothing(
    db: Database, request_pool: asyncpg.Pool, feed: ChangeFeed, got: Received, notes: str
) -> None:
    change = await change_of(db, got, notes, f"INSERT INTO public.{notes} (body) VALUES ('open')")
    strangers = [{"role": "postgres"}, {"role": "authenticator"}, {}, {"role": "authenticated", "sub": "x",
                                                                       "session_id": "not-a-uuid"},
                 {"role": "anon"}]
    assert set(await visible_to(request_pool, change, strangers)) == {4}
    assert await visible_to(request_pool, change, []) == {}


async def test_only_authenticator_may_ask(db: Database, request_pool: asyncpg.Pool) -> None:
    async with request_pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL ROLE anon")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.fetch("SELECT * FROM realtime.visible_to('public', 'x', 'INSERT', '{}', '[]')")


def _kw(sight: Sight) -> dict[str, Any]:
    return {"hidden_columns": sight.hidden_columns, "row_security": sight.row_security}


async def test_a_change_whose_key_column_is_gone_is_shown_to_nobody(
    db: Database, request_pool: asyncpg.Pool, feed: ChangeFeed, got: Received
) -> None:
    table = await published_table(db, "id int PRIMARY KEY, body text")
    change = await change_of(db, got, table, f"INSERT INTO public.{table} VALUES (1, 'x')")
    await db.admin.execute(f"ALTER TABLE public.{table} RENAME COLUMN id TO key")
    assert await visible_to(request_pool, change, [{"role": "service_role"}, {"role": "anon"}]) == {}
