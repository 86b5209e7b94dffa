"""Every hot-path statement finds its rows through an index, never by reading a whole table.

Each statement is the code's own (imported from it, or sent by its own function), run on the
module's migrated database the way the server runs it: as the caller through
``gatehouse.run_as`` or ``gatehouse.become`` where RLS applies. ``auto_explain`` hands every plan
back as a notice, nested ones included (the rotation inside ``auth.rotate_refresh_token``, the
session check inside ``gatehouse.become``), and ``enable_seqscan = off`` makes the planner take an
index whenever one can serve, even on these near-empty tables: a ``Seq Scan`` left on a table
that grows with the users means no index can. bench/scale.py measures the same requests at 10k,
100k and 1M users.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest

from gatehouse.auth import users
from gatehouse.auth.sessions import REFRESH_SQL, Sessions
from gatehouse.auth.tokens import AccessTokens, RefreshTokens, sha256_hex
from gatehouse.core import db as core_db
from gatehouse.core.config import Settings
from gatehouse.core.keys import KeySet
from gatehouse.rest import api as rest_api
from gatehouse.rest.schema import SchemaCache
from gatehouse.storage import janitor, listing, objects

#: Tables whose rows grow with the users (audit entries are only ever appended).
GROWING = {"auth.users", "auth.identities", "auth.sessions", "auth.refresh_tokens", "auth.mfa_amr_claims",
           "auth.one_time_tokens", "public.profiles", "storage.objects"}

_AUTO_EXPLAIN = [
    "LOAD 'auto_explain'",
    "SET auto_explain.log_min_duration = 0",
    "SET auto_explain.log_nested_statements = on",
    "SET auto_explain.log_verbose = on",
    "SET auto_explain.log_format = 'json'",
    "SET auto_explain.log_level = 'notice'",
]


@dataclass
class Scan:
    node: str
    table: str
    index: str | None
    query: str


def _scans(plan: dict[str, Any], query: str) -> Iterator[Scan]:
    if "Relation Name" in plan:
        yield Scan(plan["Node Type"], f"{plan.get('Schema')}.{plan['Relation Name']}", plan.get("Index Name"), query)
    for child in plan.get("Plans", []):
        yield from _scans(child, query)


class _Rollback(Exception):
    pass


@dataclass
class World:
    conn: asyncpg.Connection
    user: asyncpg.Record
    claims: dict[str, Any]
    refresh_token: str
    successor: str
    schema: SchemaCache
    settings: Settings

    async def plans(self, run: Callable[[asyncpg.Connection], Awaitable[object]]) -> list[Scan]:
        """Run ``run`` in a transaction that is rolled back; every scan of every plan it ran."""
        notices: list[str] = []

        def listen(conn: object, message: asyncpg.PostgresLogMessage) -> None:
            notices.append(message.message)

        self.conn.add_log_listener(listen)
        try:
            async with self.conn.transaction():
                await self.conn.execute("SET LOCAL enable_seqscan = off")
                await run(self.conn)
                raise _Rollback
        except _Rollback:
            pass
        finally:
            await asyncio.sleep(0)  # log listeners are called soon after the notice, not during it
            self.conn.remove_log_listener(listen)
        found: list[Scan] = []
        for text in notices:
            if "{" in text:
                document = json.loads(text[text.index("{"):])
                found += _scans(document["Plan"], document.get("Query Text", ""))
        assert found, f"auto_explain sent no plans: {notices}"
        return found

    async def as_caller(self, conn: asyncpg.Connection, sql: str, values: list[Any]) -> core_db.Result:
        return await core_db._run_as(conn, "authenticated", self.claims, True, sql, values)

    async def become(self, conn: asyncpg.Connection) -> None:
        await conn.execute("SELECT gatehouse.become($1, $2)", "authenticated", core_db._claims_json(self.claims))


@pytest.fixture(scope="module")
async def world(database_url: str, keys: KeySet, settings: Settings) -> AsyncIterator[World]:
    conn = await asyncpg.connect(database_url)
    await core_db._init_connection(conn)
    email = "plans@example.com"
    user = await users.create(conn, email=email, password_hash="$argon2id$unused", user_metadata={"full_name": "P"},
                              confirmed=True)
    refresh = RefreshTokens(keys)
    session = await Sessions(AccessTokens(keys, settings), refresh, 10).create(
        conn, user, method="password", ip=None, user_agent=None)
    await conn.execute(
        "INSERT INTO storage.objects (bucket_id, name, owner, version) VALUES ('avatars', $1, $2, $3), "
        "('avatars', 'album/photo-1.png', $2, $4)",
        f"{user['id']}-avatar.png", user["id"], str(uuid.uuid4()), str(uuid.uuid4()),
    )
    schema = await SchemaCache.load(conn, ("public",))
    for statement in _AUTO_EXPLAIN:
        await conn.execute(statement)
    yield World(conn, user, session.claims, session.refresh_token, refresh.successor(session.refresh_token), schema,
                settings)
    await conn.close()


def _read(world: World, query: str) -> rest_api.ReadStatement:
    """The statement the data API runs for GET /rest/v1/profiles?<query>."""
    single = "id=eq." in query  # read own profile: Accept: application/vnd.pgrst.object+json
    return rest_api._read_statement(world.schema, "public", "profiles", query.encode(), None, single, False,
                                    world.settings.rest_max_rows)


def _hot_paths(world: World) -> dict[str, Callable[[asyncpg.Connection], Awaitable[object]]]:
    uid = world.user["id"]
    own_profile = _read(world, f"select=full_name,username,website,avatar_url&id=eq.{uid}")

    async def list_folder(conn: asyncpg.Connection) -> object:
        await world.become(conn)
        return await conn.fetch(objects._LIST.format(order="name ASC"), "avatars", "album/", "", 100, 0)

    async def list_v2(conn: asyncpg.Connection) -> object:
        await world.become(conn)
        return await conn.fetch(listing._by_name(False), "avatars", "album/", None, 101, False)

    return {
        "auth: user by email": lambda conn: users.by_email(conn, world.user["email"]),
        "auth: user by id": lambda conn: users.by_id(conn, uid),
        "auth: refresh-token rotation": lambda conn: conn.fetchrow(
            REFRESH_SQL, sha256_hex(world.refresh_token), sha256_hex(world.successor), 10),
        "auth: session check (gatehouse.become)": world.become,
        "storage: object by bucket and name": lambda conn: world.as_caller(
            conn, objects._FIND, ["avatars", f"{uid}-avatar.png"]),
        "storage: list a folder": list_folder,
        "storage: list-v2 by prefix": list_v2,
        "storage: start-up sweep, blobs still referenced": lambda conn: conn.fetch(
            janitor.SWEEP_REFERENCED_SQL, [str(uuid.uuid4()) for _ in range(3)]),
        "rest: own profile by id": lambda conn: world.as_caller(conn, own_profile.sql, list(own_profile.values)),
    }


async def test_hot_paths_scan_no_growing_table_whole(world: World) -> None:
    unserved = {}
    for name, run in _hot_paths(world).items():
        whole = [s for s in await world.plans(run) if s.node == "Seq Scan" and s.table in GROWING]
        if whole:
            unserved[name] = [(s.table, " ".join(s.query.split())[:300]) for s in whole]
    assert not unserved, f"no index serves these scans: {unserved}"


async def test_the_rotation_and_the_session_check_were_explained(world: World) -> None:
    """The checks above saw inside the functions: the rotation's and the session check's lookups."""
    rotated = await world.plans(_hot_paths(world)["auth: refresh-token rotation"])
    assert {"auth.refresh_tokens", "auth.sessions", "auth.users", "auth.identities", "auth.mfa_amr_claims"} <= {
        s.table for s in rotated}
    checked = await world.plans(world.become)
    assert {"auth.sessions", "auth.users"} <= {s.table for s in checked}


async def test_profiles_newest_first_read_in_index_order(world: World) -> None:
    """?order=updated_at.desc&limit=50 walks profiles_updated_at_idx: 50 rows, not a sort of all."""
    newest = _read(world, "select=*&order=updated_at.desc&limit=50")
    scans = await world.plans(lambda conn: world.as_caller(conn, newest.sql, list(newest.values)))
    assert [s.index for s in scans if s.table == "public.profiles"] == ["profiles_updated_at_idx"]


async def test_admin_list_counts_and_pages_from_its_index(world: World) -> None:
    """X-Total-Count and a page (at any OFFSET) read users_listed_idx; rows only for the page."""
    count = await world.plans(lambda conn: conn.fetchval(users.COUNT_LISTED_SQL))
    assert [s.index for s in count if s.table == "auth.users"] == ["users_listed_idx"]
    page = await world.plans(lambda conn: conn.fetch(users.PAGE_SQL, 50, 500))
    assert sorted(s.index or s.node for s in page if s.table == "auth.users") == ["users_listed_idx", "users_pkey"]
