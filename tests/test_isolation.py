"""No user reads or changes another's private rows or objects, whatever the users, policies and requests.

Hypothesis draws sequences of requests by three signed-in users (A, B, C) and an anonymous caller
(the publishable key only) against a real server, on this module's own database:

* the data API over tables guarded by a small family of owner-based policies (owner only; owner or
  shared rows readable; everyone reads and the owner writes; a write-only drop box; comments that
  follow their row's visibility): reads with eq/neq/gt/lt/in/like/is filters, not., nested
  or/and, embeds both ways and !inner, order, limit/offset, counts and single objects; inserts
  (own and forged owners, bulk), upserts on id (merge and ignore), PATCH and DELETE with filters
  (unfiltered ones refused), RPC through SECURITY INVOKER functions (also a volatile one through a
  read-only GET), bursts of concurrent reads by different callers, and attempts to reach
  auth.users or storage.objects through embeds and other schemas;
* storage in a private bucket whose policies confine each user to the folder named after their id:
  uploads (POST, PUT, x-upsert, multipart, signed upload URLs, tokens replayed on other paths),
  downloads (authenticated, plain, public, HEAD, ranges, concurrent bursts), info, lists, batch
  and single removes, moves, copies, signed URLs (single, batch, replayed on other paths),
  image renders, names climbing out with "..", and the bucket API (empty, delete, make public).

A model of what each user owns predicts every answer. After every step the database itself, read
through the privileged pool, is the ground truth: first the isolation invariants are checked
against the state before the step (nobody's rows or objects were created, changed or deleted by
someone else; nothing another user may not see came back in any answer; anon never sees a private
row or object; no 5xx), then the whole state and answer are compared with the model's prediction,
so that a broken test cannot pass by refusing everything. Each example starts from a few rows and
objects per user; a failure prints the drawn steps and the last requests with their answers.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from gatehouse.core.db import Database
from tests.support import ConfirmedSession, RunningServer

USERS = ("A", "B", "C")
ACTORS = (*USERS, "anon")
WORDS = ("alpha", "beta", "gamma", "delta")
PATTERNS = ("*a*", "al*", "*ta", "*mm*", "b*")
TABLES = ("iso_private", "iso_shared", "iso_public", "iso_inbox", "iso_comments")
OWNED = ("iso_private", "iso_shared", "iso_public", "iso_inbox")  # (id, owner, body, shared)
FILES = ("a.txt", "b.txt", "sub/c.txt", "p.png", "d.txt", "sub/e.png")
BUCKET = "private"
# Bounded for CI (about 30 s on an idle two-core machine, setup included). To search harder locally:
# ISOLATION_SCALE=10 (ten times the examples) and ISOLATION_RANDOM=1 (fresh random examples each run).
SCALE = float(os.environ.get("ISOLATION_SCALE", "1"))
ROW_EXAMPLES = int(80 * SCALE)
OBJECT_EXAMPLES = int(60 * SCALE)
MAX_STEPS = 30
EXAMPLE_SETTINGS = settings(
    deadline=None, derandomize=not os.environ.get("ISOLATION_RANDOM"), database=None, print_blob=False, report_multiple_bugs=False,
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],  # no "explain": slow, and says little here
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)

SCHEMA_TEMPLATE = """
-- Four owner-based policy variants, written as a Supabase user would (grants included: Supabase's
-- default privileges give anon and authenticated everything, so only the policies protect).
{owned_tables}
CREATE TABLE public.iso_comments (
    id bigserial PRIMARY KEY,
    owner uuid NOT NULL DEFAULT auth.uid() REFERENCES auth.users (id) ON DELETE CASCADE,
    row_id bigint NOT NULL REFERENCES public.iso_shared (id) ON DELETE CASCADE,
    body text NOT NULL DEFAULT ''
);

ALTER TABLE public.iso_private ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.iso_shared ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.iso_public ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.iso_inbox ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.iso_comments ENABLE ROW LEVEL SECURITY;

-- owner only
CREATE POLICY "owner reads" ON public.iso_private FOR SELECT TO authenticated USING (owner = auth.uid());
CREATE POLICY "owner inserts" ON public.iso_private FOR INSERT TO authenticated WITH CHECK (owner = auth.uid());
CREATE POLICY "owner updates" ON public.iso_private FOR UPDATE TO authenticated USING (owner = auth.uid());
CREATE POLICY "owner deletes" ON public.iso_private FOR DELETE TO authenticated USING (owner = auth.uid());

-- owner, or anyone when shared, reads; the owner writes (one FOR ALL policy)
CREATE POLICY "own or shared rows are visible" ON public.iso_shared FOR SELECT
    USING (shared OR owner = (SELECT auth.uid()));
CREATE POLICY "owner manages" ON public.iso_shared FOR ALL TO authenticated
    USING (owner = (SELECT auth.uid())) WITH CHECK (owner = (SELECT auth.uid()));

-- everyone reads; only the owner writes
CREATE POLICY "anyone reads" ON public.iso_public FOR SELECT USING (true);
CREATE POLICY "owner inserts" ON public.iso_public FOR INSERT TO authenticated WITH CHECK ((SELECT auth.uid()) = owner);
CREATE POLICY "owner updates" ON public.iso_public FOR UPDATE TO authenticated
    USING ((SELECT auth.uid()) = owner) WITH CHECK ((SELECT auth.uid()) = owner);
CREATE POLICY "owner deletes" ON public.iso_public FOR DELETE TO authenticated USING ((SELECT auth.uid()) = owner);

-- a drop box: the owner writes, nobody reads back
CREATE POLICY "owner drops off" ON public.iso_inbox FOR INSERT TO authenticated WITH CHECK (owner = auth.uid());

-- comments on iso_shared rows: visible with their row; written as yourself, on rows you can see
CREATE POLICY "comments of visible rows" ON public.iso_comments FOR SELECT
    USING (EXISTS (SELECT 1 FROM public.iso_shared s WHERE s.id = row_id));
CREATE POLICY "comment as yourself" ON public.iso_comments FOR INSERT TO authenticated
    WITH CHECK (owner = auth.uid() AND EXISTS (SELECT 1 FROM public.iso_shared s WHERE s.id = row_id));
CREATE POLICY "edit own comments" ON public.iso_comments FOR UPDATE TO authenticated
    USING (owner = auth.uid())
    WITH CHECK (owner = auth.uid() AND EXISTS (SELECT 1 FROM public.iso_shared s WHERE s.id = row_id));
CREATE POLICY "delete own comments" ON public.iso_comments FOR DELETE TO authenticated USING (owner = auth.uid());

GRANT ALL ON public.iso_private, public.iso_shared, public.iso_public, public.iso_inbox, public.iso_comments
    TO anon, authenticated, service_role;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO anon, authenticated, service_role;

CREATE FUNCTION public.iso_search(q text) RETURNS SETOF public.iso_shared
    LANGUAGE sql STABLE SECURITY INVOKER
    AS $$ SELECT * FROM public.iso_shared WHERE strpos(body, q) > 0 $$;
CREATE FUNCTION public.iso_rename(target bigint, new_body text) RETURNS SETOF public.iso_private
    LANGUAGE sql VOLATILE SECURITY INVOKER
    AS $$ UPDATE public.iso_private SET body = new_body WHERE id = target RETURNING * $$;
GRANT EXECUTE ON FUNCTION public.iso_search(text), public.iso_rename(bigint, text) TO anon, authenticated;

-- storage: a private bucket, each user confined to the folder named after their id
INSERT INTO storage.buckets (id, name, public) VALUES ('private', 'private', false);
CREATE POLICY "iso read own folder" ON storage.objects FOR SELECT TO authenticated
    USING (bucket_id = 'private' AND (storage.foldername(name))[1] = auth.uid()::text);
CREATE POLICY "iso upload to own folder" ON storage.objects FOR INSERT TO authenticated
    WITH CHECK (bucket_id = 'private' AND (storage.foldername(name))[1] = auth.uid()::text);
CREATE POLICY "iso update own folder" ON storage.objects FOR UPDATE TO authenticated
    USING (bucket_id = 'private' AND (storage.foldername(name))[1] = auth.uid()::text);
CREATE POLICY "iso delete own folder" ON storage.objects FOR DELETE TO authenticated
    USING (bucket_id = 'private' AND (storage.foldername(name))[1] = auth.uid()::text);
"""

OWNED_TABLE = """
CREATE TABLE public.{name} (
    id bigserial PRIMARY KEY,
    owner uuid NOT NULL DEFAULT auth.uid() REFERENCES auth.users (id) ON DELETE CASCADE,
    body text NOT NULL DEFAULT '',
    shared boolean NOT NULL DEFAULT false
);"""
SCHEMA = SCHEMA_TEMPLATE.replace("{owned_tables}", "".join(OWNED_TABLE.format(name=t) for t in OWNED))

RESET = """
TRUNCATE public.iso_comments, public.iso_private, public.iso_shared, public.iso_public, public.iso_inbox RESTART IDENTITY;
DELETE FROM storage.objects WHERE bucket_id = 'private';
"""

ROWS_SNAPSHOT = "SELECT json_build_object(" + ", ".join(
    f"'{t}', (SELECT coalesce(json_agg(t ORDER BY t.id), '[]') FROM public.{t} t)" for t in TABLES
) + ")"

OBJECTS_SNAPSHOT = """
SELECT coalesce(json_agg(json_build_object('name', name, 'owner', owner, 'etag', metadata->>'eTag', 'version', version)
                ORDER BY name), '[]')
FROM storage.objects WHERE bucket_id = 'private'
"""


# -- the world: a server, the schema, three users and anon -------------------------------------------


@dataclass
class World:
    server: RunningServer
    db: Database
    uids: dict[str, str]  # actor name -> user id
    rest: dict[str, httpx.AsyncClient]
    storage: dict[str, httpx.AsyncClient]
    names: dict[str, str] = field(default_factory=dict)  # user id -> actor name

    def name(self, uid: str | None) -> str:
        return self.names.get(str(uid), f"?{uid}")

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.server.log().splitlines()[-lines:])


@pytest.fixture(scope="module")
async def world(db: Database, server_factory: Any, confirmed_session: ConfirmedSession) -> AsyncIterator[World]:
    await db.admin.execute(SCHEMA)
    server = server_factory(env={"GATEHOUSE_RATE_LIMITS_ENABLED": "false"})
    await db.admin.execute("NOTIFY gatehouse_schema, 'reload'")
    key = server.keys.publishable_key
    sessions = {name: confirmed_session(server)[1] for name in USERS}
    uids = {name: str(s["user"]["id"]) for name, s in sessions.items()}
    tokens = {name: str(s["access_token"]) for name, s in sessions.items()}

    def headers(actor: str) -> dict[str, str]:
        return {"apikey": key} | ({"Authorization": f"Bearer {tokens[actor]}"} if actor in tokens else {})

    # Idle connections are dropped after 2 s: uvicorn closes them after 5 s, httpx's default expiry is also
    # 5 s, and a request sent on a connection the server is closing at that instant fails (ReadError).
    limits = httpx.Limits(keepalive_expiry=2)

    def client(api: str, actor: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=f"{server.url}/{api}", headers=headers(actor), timeout=30, limits=limits)

    rest = {a: client("rest/v1", a) for a in ACTORS}
    storage = {a: client("storage/v1", a) for a in ACTORS}
    try:
        deadline = time.monotonic() + 15
        while True:  # the schema cache has the tables, the relationship and the functions
            embed = await rest["A"].get("/iso_comments", params={"select": "id,iso_shared(id)"})
            rpc = await rest["A"].get("/rpc/iso_search", params={"q": "x"})
            if embed.status_code == 200 and rpc.status_code == 200:
                break
            assert time.monotonic() < deadline, f"the server never saw the test schema: {embed.text} {rpc.text}"
            await db.admin.execute("NOTIFY gatehouse_schema, 'reload'")
            await asyncio.sleep(0.1)
        yield World(server, db, uids, rest, storage, {uid: name for name, uid in uids.items()})
    finally:
        for client in (*rest.values(), *storage.values()):
            await client.aclose()


# -- data API: operations ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cond:
    column: str
    op: str
    value: Any
    negated: bool = False


@dataclass(frozen=True)
class Logic:
    op: str  # "and" | "or"
    items: tuple[Cond | Logic, ...]
    negated: bool = False


Filter = Cond | Logic
Row = dict[str, Any]
State = dict[str, dict[int, Row]]


@dataclass(frozen=True)
class Read:
    actor: str
    table: str
    select: str  # "*", a column list, "embed" or "inner"
    filters: tuple[Filter, ...] = ()
    desc: bool = False
    limit: int | None = None
    offset: int = 0
    count: bool = False
    single: bool = False
    embed_owner: str = "A"  # for "inner": keep rows with a comment by this user


@dataclass(frozen=True)
class NewRow:
    owner: str | None  # None: leave it to the column default, auth.uid()
    body: str
    shared: bool = False
    row_id: int = 1  # comments only


@dataclass(frozen=True)
class Insert:
    actor: str
    table: str
    rows: tuple[NewRow, ...]
    bulk: bool = False
    returning: bool = False


@dataclass(frozen=True)
class UpRow:
    target: tuple[str, int]  # ("existing", k): the k-th existing id; ("fresh", k): id 1000 + k
    owner: str | None
    body: str
    shared: bool


@dataclass(frozen=True)
class Upsert:
    actor: str
    table: str
    rows: tuple[UpRow, ...]
    merge: bool
    returning: bool = False


@dataclass(frozen=True)
class Changes:
    body: str | None = None
    shared: bool | None = None
    owner: str | None = None
    row_id: int | None = None

    def json(self, uids: dict[str, str]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.body is not None:
            out["body"] = self.body
        if self.shared is not None:
            out["shared"] = self.shared
        if self.owner is not None:
            out["owner"] = uids.get(self.owner)
        if self.row_id is not None:
            out["row_id"] = self.row_id
        return out


@dataclass(frozen=True)
class Patch:
    actor: str
    table: str
    filters: tuple[Filter, ...]
    changes: Changes
    returning: bool = False


@dataclass(frozen=True)
class Delete:
    actor: str
    table: str
    filters: tuple[Filter, ...]
    returning: bool = False


PEEKS = {  # reaching auth.users or storage.objects through the data API: none of them may work
    "embed auth.users": ("/iso_public", [("select", "*,users(*)")], {}, 400),
    "embed auth.users by column": ("/iso_private", [("select", "*,users!owner(email)")], {}, 400),
    "nested embed auth.users": ("/iso_comments", [("select", "*,iso_shared(*,users(*))")], {}, 400),
    "storage schema": ("/objects", [], {"Accept-Profile": "storage"}, 406),
    "auth schema": ("/users", [], {"Accept-Profile": "auth"}, 406),
}


@dataclass(frozen=True)
class Peek:
    actor: str
    what: str  # a key of PEEKS


@dataclass(frozen=True)
class Burst:
    """Reads by several callers at once: no caller's identity may leak into another's request."""

    reads: tuple[Read, ...]
    actor: str = "(several)"


@dataclass(frozen=True)
class Search:
    actor: str
    q: str
    filters: tuple[Filter, ...] = ()
    get: bool = True


@dataclass(frozen=True)
class Rename:
    actor: str
    target: int
    new_body: str
    get: bool = False  # GET runs read-only: a volatile function must fail and change nothing


# -- data API: strategies ------------------------------------------------------------------------------

actors = st.sampled_from(ACTORS)
users = st.sampled_from(USERS)
words = st.sampled_from(WORDS)
booleans = st.booleans()
maybe = st.one_of(st.none(), booleans)


class Drawer:
    """Draws one data API request with the current rows in view (ids that exist, rows to comment on).

    One composite strategy is built once and reads the run's state while drawing: building strategies
    afresh at every step costs Hypothesis more than the requests themselves.
    """

    def __init__(self) -> None:
        self.state: State = {t: {} for t in TABLES}

    def id(self, draw: st.DrawFn, table: str) -> int:
        existing = sorted(self.state[table])
        if existing and draw(st.integers(0, 2)):
            return draw(st.sampled_from(existing))
        return draw(st.sampled_from([1, 2, (existing[-1] if existing else 0) + 1]))

    def cond(self, draw: st.DrawFn, table: str) -> Cond:
        kind = draw(st.integers(0, 6))
        negated = draw(booleans)
        if kind == 0:
            return Cond("id", draw(st.sampled_from(["eq", "eq", "neq", "gt", "lt"])), self.id(draw, table), negated)
        if kind == 1:
            values = tuple(dict.fromkeys(self.id(draw, table) for _ in range(draw(st.integers(1, 3)))))
            return Cond("id", "in", values, negated)
        if kind == 2:
            return Cond("owner", draw(st.sampled_from(["eq", "neq"])), draw(users), negated)
        if kind == 3:
            return Cond("owner", "in", tuple(dict.fromkeys(draw(users) for _ in range(draw(st.integers(1, 2))))), negated)
        if kind == 4:
            return Cond("body", draw(st.sampled_from(["eq", "neq"])), draw(words), negated)
        if kind == 5:
            return Cond("body", "like", draw(st.sampled_from(PATTERNS)), negated)
        if table == "iso_comments":
            return Cond("row_id", draw(st.sampled_from(["eq", "neq"])), self.id(draw, "iso_shared"), negated)
        return Cond("shared", draw(st.sampled_from(["is", "eq"])), draw(booleans), negated)

    def filter(self, draw: st.DrawFn, table: str, depth: int = 0) -> Filter:
        if depth >= 2 or draw(st.integers(0, 2)):
            return self.cond(draw, table)
        items = tuple(self.filter(draw, table, depth + 1) for _ in range(draw(st.integers(1, 3))))
        return Logic(draw(st.sampled_from(["or", "and"])), items, draw(booleans))

    def filters(self, draw: st.DrawFn, table: str, min_size: int = 0) -> tuple[Filter, ...]:
        return tuple(self.filter(draw, table) for _ in range(draw(st.integers(min_size, 2))))

    def read(self, draw: st.DrawFn, actor: str) -> Read:
        table = draw(st.sampled_from(TABLES))
        paged = draw(booleans)
        return Read(
            actor, table, draw(st.sampled_from(SELECTS[table])), self.filters(draw, table),
            desc=draw(booleans),
            limit=draw(st.integers(0, 3)) if paged else None,
            offset=draw(st.integers(0, 2)) if paged else 0,
            count=draw(booleans), single=draw(st.integers(0, 5)) == 0, embed_owner=draw(users),
        )

    def operation(self) -> st.SearchStrategy[Any]:
        @st.composite
        def operation(draw: st.DrawFn) -> Any:
            kind = draw(st.sampled_from(["insert", "insert", "insert", "read", "read", "read", "upsert", "patch",
                                         "patch", "delete", "search", "rename", "burst", "peek"]))
            actor = draw(actors)
            if kind == "read":
                return self.read(draw, actor)
            if kind == "burst":
                return Burst(tuple(self.read(draw, draw(actors)) for _ in range(draw(st.integers(2, 6)))))
            if kind == "insert":
                table = draw(st.sampled_from(TABLES))
                n = draw(st.integers(1, 3))
                explicit = draw(booleans)
                rows = tuple(
                    NewRow(draw(st.sampled_from((actor, actor, *ACTORS))) if explicit else None, draw(words),
                           draw(booleans), self.id(draw, "iso_shared"))
                    for _ in range(n)
                )
                return Insert(actor, table, rows, bulk=n > 1 or draw(booleans), returning=draw(booleans))
            if kind == "upsert":
                table = draw(st.sampled_from(("iso_private", "iso_shared", "iso_public")))
                explicit = draw(booleans)
                targets = dict.fromkeys(
                    (draw(st.sampled_from(["existing", "existing", "fresh"])), draw(st.integers(0, 5)))
                    for _ in range(draw(st.integers(1, 3)))
                )
                rows = tuple(
                    UpRow(target, draw(st.sampled_from((actor, *ACTORS))) if explicit else None, draw(words),
                          draw(booleans))
                    for target in targets
                )
                return Upsert(actor, table, rows, merge=draw(booleans), returning=draw(booleans))
            if kind in ("patch", "delete"):
                table = draw(st.sampled_from(TABLES))
                filters = () if draw(st.integers(0, 15)) == 0 else self.filters(draw, table, min_size=1)
                if kind == "delete":
                    return Delete(actor, table, filters, returning=draw(booleans))
                comments = table == "iso_comments"
                changes = Changes(
                    body=draw(st.one_of(st.none(), words)),
                    shared=None if comments else draw(maybe),
                    owner=draw(st.sampled_from((None, None, *ACTORS))),
                    row_id=(self.id(draw, "iso_shared") if draw(booleans) else None) if comments else None,
                )
                return Patch(actor, table, filters, changes, returning=draw(booleans))
            if kind == "peek":
                return Peek(actor, draw(st.sampled_from(sorted(PEEKS))))
            if kind == "search":
                return Search(actor, draw(st.sampled_from(["a", "ph", "et", "mm", "z"])),
                              self.filters(draw, "iso_shared")[:1], draw(booleans))
            return Rename(actor, self.id(draw, "iso_private"), draw(words), draw(st.integers(0, 4)) == 0)

        return operation()


SELECTS = {
    "iso_private": ("*", "id,body"),
    "iso_shared": ("*", "id,body", "embed", "inner"),
    "iso_public": ("*", "id,owner,shared"),
    "iso_inbox": ("*",),
    "iso_comments": ("*", "embed"),
}


# -- data API: the model ---------------------------------------------------------------------------------

def visible(table: str, actor: str, row: Row, state: State) -> bool:
    """What the table's SELECT policies let ``actor`` see."""
    if table == "iso_private":
        return actor != "anon" and row["owner"] == actor
    if table == "iso_shared":
        return bool(row["shared"]) or (actor != "anon" and row["owner"] == actor)
    if table == "iso_public":
        return True
    if table == "iso_inbox":
        return False
    parent = state["iso_shared"].get(row["row_id"])
    return parent is not None and visible("iso_shared", actor, parent, state)


def writable(table: str, actor: str, row: Row, state: State) -> bool:
    """Rows an UPDATE or DELETE with a filter reaches: SELECT and UPDATE/DELETE policies both pass."""
    return table != "iso_inbox" and actor != "anon" and row["owner"] == actor and visible(table, actor, row, state)


def insertable(table: str, actor: str, row: Row, state: State) -> bool:
    if actor == "anon" or row["owner"] != actor:
        return False
    if table == "iso_comments":
        parent = state["iso_shared"].get(row["row_id"])
        return parent is not None and visible("iso_shared", actor, parent, state)
    return True


def like(value: str, pattern: str) -> bool:
    return re.fullmatch(".*".join(re.escape(part) for part in pattern.split("*")), value) is not None


def matches(f: Filter, row: Row) -> bool:
    if isinstance(f, Logic):
        results = [matches(item, row) for item in f.items]
        result = all(results) if f.op == "and" else any(results)
    else:
        value = row[f.column]
        result = {
            "eq": lambda: value == f.value, "neq": lambda: value != f.value, "gt": lambda: value > f.value,
            "lt": lambda: value < f.value, "in": lambda: value in f.value, "like": lambda: like(value, f.value),
            "is": lambda: value is f.value,
        }[f.op]()
    return result != f.negated


def render_value(f: Cond, uids: dict[str, str]) -> str:
    def one(v: Any) -> str:
        if f.column == "owner":
            return uids[v]
        if isinstance(v, bool):
            return "true" if v else "false"
        return str(v)

    value = "(" + ",".join(one(v) for v in f.value) + ")" if f.op == "in" else one(f.value)
    return f"{'not.' if f.negated else ''}{f.op}.{value}"


def render_inner(f: Filter, uids: dict[str, str]) -> str:
    if isinstance(f, Cond):
        return f"{f.column}.{render_value(f, uids)}"
    return f"{'not.' if f.negated else ''}{f.op}({','.join(render_inner(i, uids) for i in f.items)})"


def render_filters(filters: tuple[Filter, ...], uids: dict[str, str]) -> list[tuple[str, str]]:
    params = []
    for f in filters:
        if isinstance(f, Cond):
            params.append((f.column, render_value(f, uids)))
        else:
            params.append((f"{'not.' if f.negated else ''}{f.op}",
                           "(" + ",".join(render_inner(i, uids) for i in f.items) + ")"))
    return params


@dataclass
class Expected:
    status: int | tuple[int, ...]
    state: State  # rows expected to exist with known ids
    new: dict[str, list[Row]] = field(default_factory=dict)  # rows expected to appear (ids unknown)
    body: list[Row] | None = None  # the exact answer (reads, RPC)
    body_ids: tuple[str, list[int], bool] | None = None  # (table, known ids, + new rows) for representations
    total: int | None = None
    single: bool = False


def copy_state(state: State) -> State:
    return {t: {i: dict(r) for i, r in rows.items()} for t, rows in state.items()}


def strip(row: Row) -> Row:
    return {k: v for k, v in row.items() if k != "id"}


def canonical(row: Row) -> list[tuple[str, Any]]:
    return sorted(row.items())


def denied(actor: str) -> int:
    return 401 if actor == "anon" else 403


def project(table: str, select: str, row: Row, state: State, op: Read) -> Row:
    if select == "*":
        return dict(row)
    if select in ("embed", "inner"):
        if table == "iso_comments":
            return dict(row) | {"iso_shared": dict(state["iso_shared"][row["row_id"]])}
        comments = [c for c in state["iso_comments"].values() if c["row_id"] == row["id"]]
        if select == "inner":
            comments = [c for c in comments if c["owner"] == op.embed_owner]
        return dict(row) | {"iso_comments": sorted((dict(c) for c in comments), key=lambda c: c["id"])}
    return {k: row[k] for k in select.split(",")}


def predict(op: Any, state: State) -> Expected:
    after = copy_state(state)
    if isinstance(op, Read):
        rows = [r for r in sorted(state[op.table].values(), key=lambda r: r["id"])
                if visible(op.table, op.actor, r, state) and all(matches(f, r) for f in op.filters)]
        if op.select == "inner":
            rows = [r for r in rows if any(c["row_id"] == r["id"] and c["owner"] == op.embed_owner
                                           for c in state["iso_comments"].values())]
        total = len(rows)
        if op.desc:
            rows.reverse()
        rows = rows[op.offset:]
        if op.limit is not None:
            rows = rows[: op.limit]
        body = [project(op.table, op.select, r, state, op) for r in rows]
        if op.single:
            status = 406 if len(body) != 1 else 206 if op.count and total > 1 else 200
            return Expected(status, after, body=body, single=True)
        status = 206 if op.count and len(body) < total else 200
        return Expected(status, after, body=body, total=total if op.count else None)
    if isinstance(op, Insert):
        rows = [{"owner": r.owner or op.actor, "body": r.body}
                | ({"row_id": r.row_id} if op.table == "iso_comments" else {"shared": r.shared}) for r in op.rows]
        if not all(insertable(op.table, op.actor, r, state) for r in rows):
            return Expected(denied(op.actor), after)
        if op.returning and op.table == "iso_inbox":  # RETURNING needs a SELECT policy
            return Expected(403, after)  # PostgreSQL checks RETURNING rows against SELECT policies
        return Expected(201, after, new={op.table: rows}, body_ids=(op.table, [], True) if op.returning else None)
    if isinstance(op, Upsert):
        table = after[op.table]
        changed: list[int] = []
        new: list[Row] = []
        for target, r in upsert_rows(op, state):
            row = {"owner": r.owner or op.actor, "body": r.body, "shared": r.shared}
            if not insertable(op.table, op.actor, row, state):  # INSERT's WITH CHECK comes first, for every row
                return Expected(denied(op.actor), copy_state(state))
            existing = table.get(target)
            if existing is None:
                table[target] = {"id": target} | row
                changed.append(target)
            elif op.merge:
                if existing["owner"] != op.actor:  # ON CONFLICT DO UPDATE on a row the UPDATE policy refuses
                    return Expected(denied(op.actor), copy_state(state))
                existing.update(body=r.body, shared=r.shared)
                changed.append(target)
        return Expected(201, after, new={op.table: new}, body_ids=(op.table, changed, False) if op.returning else None)
    if isinstance(op, Patch | Delete):
        if not op.filters:
            return Expected(400, after)
        hit = [i for i, r in state[op.table].items() if writable(op.table, op.actor, r, state)
               and all(matches(f, r) for f in op.filters)]
        ok = 200 if op.returning else 204
        if isinstance(op, Delete):
            for i in hit:
                del after[op.table][i]
            if op.table == "iso_shared":  # ON DELETE CASCADE, whoever wrote the comments
                after["iso_comments"] = {i: c for i, c in after["iso_comments"].items() if c["row_id"] not in hit}
            return Expected(ok, after, body=[state[op.table][i] for i in sorted(hit)] if op.returning else None)
        changes = op.changes.json({a: a for a in ACTORS})
        if "owner" in changes and changes["owner"] == "anon":
            changes["owner"] = None
        if not changes:
            return Expected(ok, after, body=[] if op.returning else None)
        for i in hit:
            after[op.table][i].update(changes)
            new_row = after[op.table][i]
            if new_row["owner"] != op.actor:
                return Expected(denied(op.actor), copy_state(state))
            if op.table == "iso_comments":
                parent = state["iso_shared"].get(new_row["row_id"])
                if parent is None or not visible("iso_shared", op.actor, parent, state):
                    return Expected(denied(op.actor), copy_state(state))
        return Expected(ok, after, body_ids=(op.table, sorted(hit), False) if op.returning else None)
    if isinstance(op, Peek):
        return Expected(PEEKS[op.what][3], after)
    if isinstance(op, Search):
        rows = [r for r in sorted(state["iso_shared"].values(), key=lambda r: r["id"])
                if visible("iso_shared", op.actor, r, state) and op.q in r["body"]
                and all(matches(f, r) for f in op.filters)]
        return Expected(200, after, body=rows)
    if isinstance(op, Rename):
        row = state["iso_private"].get(op.target)
        if op.get:
            return Expected(405, after)  # 25006: read-only transaction
        if row is None or not writable("iso_private", op.actor, row, state):
            return Expected(200, after, body=[])
        after["iso_private"][op.target]["body"] = op.new_body
        return Expected(200, after, body=[after["iso_private"][op.target]])
    raise TypeError(f"unknown operation {op!r}")


def upsert_rows(op: Upsert, state: State) -> list[tuple[int, UpRow]]:
    """The rows with their ids resolved against the state (each id once: PostgreSQL refuses a row twice)."""
    existing = sorted(state[op.table])
    rows: dict[int, UpRow] = {}
    for row in op.rows:
        kind, k = row.target
        rows.setdefault(existing[k % len(existing)] if kind == "existing" and existing else 1000 + k, row)
    return list(rows.items())


def http_request(op: Any, state: State, uids: dict[str, str]) -> tuple[str, str, list[tuple[str, str]], Any, dict[str, str]]:
    """(method, path, params, json, headers) for one operation."""
    prefer = "return=representation" if getattr(op, "returning", False) else "return=minimal"
    if isinstance(op, Read):
        select = {"embed": "*,iso_comments(*)" if op.table == "iso_shared" else "*,iso_shared(*)",
                  "inner": "*,iso_comments!inner(*)"}.get(op.select, op.select)
        params = [("select", select), *render_filters(op.filters, uids), ("order", "id.desc" if op.desc else "id.asc")]
        if op.select == "inner":
            params.append(("iso_comments.owner", f"eq.{uids[op.embed_owner]}"))
        if op.limit is not None:
            params.append(("limit", str(op.limit)))
        if op.offset:
            params.append(("offset", str(op.offset)))
        headers = {"Prefer": "count=exact"} if op.count else {}
        if op.single:
            headers["Accept"] = "application/vnd.pgrst.object+json"
        return "GET", f"/{op.table}", params, None, headers
    if isinstance(op, Insert):
        rows = []
        for r in op.rows:
            row: dict[str, Any] = {"body": r.body}
            if r.owner is not None:
                row["owner"] = uids.get(r.owner)
            row |= {"row_id": r.row_id} if op.table == "iso_comments" else {"shared": r.shared}
            rows.append(row)
        return "POST", f"/{op.table}", [], rows if op.bulk else rows[0], {"Prefer": prefer}
    if isinstance(op, Upsert):
        rows = []
        for target, r in upsert_rows(op, state):
            row = {"id": target, "body": r.body, "shared": r.shared}
            if r.owner is not None:
                row["owner"] = uids.get(r.owner)
            rows.append(row)
        resolution = "merge-duplicates" if op.merge else "ignore-duplicates"
        return "POST", f"/{op.table}", [("on_conflict", "id")], rows, {"Prefer": f"{prefer},resolution={resolution}"}
    if isinstance(op, Patch):
        return "PATCH", f"/{op.table}", render_filters(op.filters, uids), op.changes.json(uids), {"Prefer": prefer}
    if isinstance(op, Delete):
        return "DELETE", f"/{op.table}", render_filters(op.filters, uids), None, {"Prefer": prefer}
    if isinstance(op, Search):
        params = [*render_filters(op.filters, uids), ("order", "id.asc")]
        if op.get:
            return "GET", "/rpc/iso_search", [("q", op.q), *params], None, {}
        return "POST", "/rpc/iso_search", params, {"q": op.q}, {}
    if isinstance(op, Peek):
        path, params, headers, _ = PEEKS[op.what]
        return "GET", path, params, None, headers
    if isinstance(op, Rename):
        args = {"target": str(op.target), "new_body": op.new_body}
        if op.get:
            return "GET", "/rpc/iso_rename", list(args.items()), None, {}
        return "POST", "/rpc/iso_rename", [], {"target": op.target, "new_body": op.new_body}, {}
    raise TypeError(f"unknown operation {op!r}")


# -- data API: the run -------------------------------------------------------------------------------------


class RowsRun:
    def __init__(self, world: World) -> None:
        self.world = world
        self.state: State = {t: {} for t in TABLES}
        self.transcript: list[str] = []

    async def snapshot(self) -> State:
        raw = await self.world.db.admin.fetchval(ROWS_SNAPSHOT)
        return {t: {r["id"]: self.normal(r) for r in raw[t]} for t in TABLES}

    def normal(self, row: Row) -> Row:
        """A row as the model writes it: owners by actor name."""
        out = dict(row)
        if "owner" in out:
            out["owner"] = self.world.name(out["owner"])
        for key in ("iso_comments",):
            if isinstance(out.get(key), list):
                out[key] = sorted((self.normal(c) for c in out[key]), key=lambda c: c["id"])
        if isinstance(out.get("iso_shared"), dict):
            out["iso_shared"] = self.normal(out["iso_shared"])
        return out

    def fail(self, message: str) -> str:
        steps = "\n".join(self.transcript[-40:])
        return f"{message}\n-- the last requests (oldest first):\n{steps}"

    async def send(self, op: Any) -> httpx.Response:
        method, path, params, body, headers = http_request(op, self.state, self.world.uids)
        response = await self.world.rest[op.actor].request(method, path, params=params, json=body, headers=headers)
        self.transcript.append(
            f"{op}\n    {method} {path}?{'&'.join(f'{k}={v}' for k, v in params)} json={body} headers={headers}"
            f"\n    -> {response.status_code} {response.text[:400]}"
        )
        assert response.status_code < 500, self.fail(f"5xx from the server\n-- server log:\n{self.world.log_tail()}")
        event(f"{type(op).__name__} {getattr(op, 'table', '')} -> {response.status_code}")
        return response

    async def step(self, op: Any) -> None:
        before = self.state
        ops = list(op.reads) if isinstance(op, Burst) else [op]
        if isinstance(op, Burst):
            self.transcript.append("Burst: the next requests ran at the same time")
        responses = await asyncio.gather(*(self.send(o) for o in ops))
        after = await self.snapshot()
        for o, response in zip(ops, responses):
            answer: Any = response.json() if response.content and response.status_code < 300 else None
            self.check_isolation(o, before, after, answer)
            self.check_prediction(o, predict(o, before), response, answer, after)
        self.state = after

    # the invariants: they hold whatever the model predicts

    def check_isolation(self, op: Any, before: State, after: State, answer: Any) -> None:
        actor = op.actor
        deleted_parents = set(before["iso_shared"]) - set(after["iso_shared"])
        for table in TABLES:
            for i, row in before[table].items():
                now = after[table].get(i)
                if row["owner"] != actor:
                    cascaded = table == "iso_comments" and row["row_id"] in deleted_parents
                    assert now == row or (now is None and cascaded), self.fail(
                        f"ISOLATION: {actor} changed or deleted {row['owner']}'s {table} row {row} -> {now}")
                elif now is not None:
                    assert now["owner"] == row["owner"], self.fail(
                        f"ISOLATION: {actor} gave away their {table} row {row} -> {now}")
            for i, row in after[table].items():
                if i not in before[table]:
                    assert actor != "anon" and row["owner"] == actor, self.fail(
                        f"ISOLATION: {actor} created a {table} row owned by {row['owner']}: {row}")
                if table == "iso_comments" and row != before[table].get(i):
                    parent = before["iso_shared"].get(row["row_id"])
                    assert parent is not None and visible("iso_shared", actor, parent, before), self.fail(
                        f"ISOLATION: {actor} attached a comment to a row they cannot see: {row} (row: {parent})")
        for table, row in self.answer_rows(op, answer):
            row = self.normal(row)
            if isinstance(op, Read | Search):
                truth = before[table].get(row["id"])
                assert truth is not None and visible(table, actor, truth, before), self.fail(
                    f"ISOLATION: {actor} read {table} row {row}, which is {truth}")
                assert {k: truth[k] for k in row if k in truth} == {k: v for k, v in row.items() if k in truth}, \
                    self.fail(f"{actor} read {table} row {row}, but the database has {truth}")
            else:
                truth = after[table].get(row["id"]) or before[table].get(row["id"])
                assert truth is not None and truth["owner"] == actor, self.fail(
                    f"ISOLATION: {actor}'s write returned {table} row {row}, owned by {truth and truth['owner']}")

    def answer_rows(self, op: Any, answer: Any) -> list[tuple[str, Row]]:
        if answer is None:
            return []
        table = "iso_shared" if isinstance(op, Search) else "iso_private" if isinstance(op, Rename) else op.table
        rows = answer if isinstance(answer, list) else [answer]
        out: list[tuple[str, Row]] = []
        for row in rows:
            out.append((table, {k: v for k, v in row.items() if k not in ("iso_comments", "iso_shared")}))
            for comment in row.get("iso_comments") or []:
                assert comment["row_id"] == row["id"], self.fail(f"an embedded comment {comment} of another row")
                out.append(("iso_comments", comment))
            if isinstance(row.get("iso_shared"), dict):
                out.append(("iso_shared", row["iso_shared"]))
        return out

    # the prediction: the server did what the policies say, no less

    def check_prediction(self, op: Any, expected: Expected, response: httpx.Response, answer: Any, after: State) -> None:
        statuses = expected.status if isinstance(expected.status, tuple) else (expected.status,)
        assert response.status_code in statuses, self.fail(f"expected status {expected.status}")
        if response.status_code >= 400:
            code = response.json().get("code")
            if response.status_code in (401, 403):
                assert code == "42501", self.fail("a refusal that is not an RLS/privilege error")
        for table in TABLES:
            known = expected.state[table]
            extra = {i: r for i, r in after[table].items() if i not in known}
            for i, row in known.items():
                assert after[table].get(i) == row, self.fail(f"expected {table} row {row}, found {after[table].get(i)}")
            got = sorted((strip(r) for r in extra.values()), key=canonical)
            assert got == sorted(expected.new.get(table, []), key=canonical), self.fail(
                f"expected new {table} rows {expected.new.get(table, [])}, found {got}")
        if expected.body is not None and response.status_code < 300:
            got = self.normal(answer) if expected.single else [self.normal(r) for r in answer]
            want = expected.body[0] if expected.single else expected.body
            if isinstance(op, Delete):
                got = sorted(got, key=lambda r: r["id"])
            assert got == want, self.fail(f"expected the answer {want}")
        if expected.body_ids is not None:
            table, ids, with_new = expected.body_ids
            want_ids = set(ids) | ({i for i in after[table] if i not in self.state[table]} if with_new else set())
            got_rows = sorted((self.normal(r) for r in answer), key=lambda r: r["id"])
            assert got_rows == [after[table][i] for i in sorted(want_ids)], self.fail("expected the written rows back")
        if expected.total is not None:
            assert response.headers["content-range"].endswith(f"/{expected.total}"), self.fail(
                f"expected a total of {expected.total}")


async def seed_rows(world: World) -> None:
    """Everyone starts with a private and a shared row in every table, and a comment on the next user's shared row."""
    owners = [world.uids[user] for user in USERS]
    async with world.db.admin.acquire() as conn, conn.transaction():
        for table in OWNED:
            await conn.execute(
                f"INSERT INTO public.{table} (owner, body, shared) "
                "SELECT o::uuid, b, s FROM unnest($1::text[]) AS o, (VALUES ('alpha', false), ('beta', true)) AS v(b, s) "
                "ORDER BY o, s", owners)
        await conn.execute(
            "INSERT INTO public.iso_comments (owner, row_id, body) "
            "SELECT c.o::uuid, s.id, 'gamma' FROM unnest($1::text[], $2::text[]) AS c(o, parent) "
            "JOIN public.iso_shared s ON s.owner = c.parent::uuid AND s.shared", owners, owners[1:] + owners[:1])


@settings(EXAMPLE_SETTINGS, max_examples=ROW_EXAMPLES)
@given(data=st.data())
async def test_rows_stay_with_their_owners(world: World, data: st.DataObject) -> None:
    await world.db.admin.execute(RESET)
    run = RowsRun(world)
    await seed_rows(world)
    run.state = await run.snapshot()
    drawer = Drawer()
    operations = drawer.operation()
    for number in range(data.draw(st.integers(1, MAX_STEPS), label="steps")):
        drawer.state = run.state
        await run.step(data.draw(operations, label=f"step {number}"))


# -- storage: operations --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Path:
    folder: str | None  # a user's folder, or None: the bucket's top level
    file: str
    via: str | None = None  # "{folder}/../{via}/{file}": an attempt to climb into another folder

    def name(self, uids: dict[str, str]) -> str:
        if self.folder is None:
            return self.file
        if self.via is not None:
            return f"{uids[self.folder]}/../{uids[self.via]}/{self.file}"
        return f"{uids[self.folder]}/{self.file}"


def q(name: str) -> str:
    """An object name in a URL, dots percent-encoded so that no client-side clean-up hides a '..'."""
    return quote(name, safe="/").replace(".", "%2E")


@dataclass(frozen=True)
class Upload:
    actor: str
    path: Path
    content: int
    mode: str  # post | put | x-upsert | multipart


@dataclass(frozen=True)
class SignedUpload:
    actor: str
    path: Path
    content: int
    upsert: bool
    elsewhere: Path | None  # also try the token on another path


@dataclass(frozen=True)
class Download:
    actor: str
    path: Path
    route: str  # authenticated | plain | public | head | range


@dataclass(frozen=True)
class Info:
    actor: str
    path: Path
    route: str = ""  # "" | "authenticated/" | "public/"


@dataclass(frozen=True)
class ListFolder:
    actor: str
    folder: str | None
    sub: bool
    search: str


@dataclass(frozen=True)
class Remove:
    actor: str
    paths: tuple[Path, ...]
    single: bool


@dataclass(frozen=True)
class Move:
    actor: str
    source: Path
    target: Path
    copy: bool


@dataclass(frozen=True)
class Sign:
    actor: str
    paths: tuple[Path, ...]
    single: bool
    elsewhere: Path | None  # also try a returned token on another path


@dataclass(frozen=True)
class Downloads:
    """Downloads by several callers at once."""

    reads: tuple[Download, ...]
    actor: str = "(several)"


@dataclass(frozen=True)
class Render:
    actor: str
    path: Path
    mode: str = "authenticated"  # or "public"


@dataclass(frozen=True)
class BucketAdmin:
    actor: str
    action: str  # empty | delete | make-public | get | list




@st.composite
def storage_operations(draw: st.DrawFn, existing: tuple[Path, ...]) -> Any:
    """One storage request; paths lean towards existing objects, the caller's own above all."""
    actor = draw(actors)
    own = [p for p in existing if p.folder == actor]

    def fresh() -> Path:
        folder = draw(st.sampled_from((actor, actor, actor, *USERS, None) if actor != "anon" else (*USERS, None)))
        via = draw(users) if draw(st.integers(0, 11)) == 0 else None  # "{folder}/../{via}/...": climbing out
        return Path(folder, draw(st.sampled_from(FILES)), via)

    def path(images: bool = False) -> Path:
        choice = draw(st.integers(0, 9))
        mine = [p for p in own if p.file.endswith(".png")] if images and any(
            p.file.endswith(".png") for p in own) else own
        if mine and choice < 5:
            return draw(st.sampled_from(mine))
        if existing and choice < 8:
            return draw(st.sampled_from(existing))
        return fresh()

    def paths() -> tuple[Path, ...]:
        return tuple(path() for _ in range(draw(st.integers(1, 3))))

    kind = draw(st.sampled_from(["upload", "upload", "signed-upload", "download", "download", "info", "list", "remove",
                                 "move", "move", "sign", "render", "burst", "bucket"]))
    if kind == "burst":
        readers = [draw(actors) for _ in range(draw(st.integers(2, 6)))]
        return Downloads(tuple(Download(reader, draw(st.sampled_from(existing)) if existing else fresh(), "authenticated")
                               for reader in readers))
    if kind == "upload":
        return Upload(actor, path(), draw(st.integers(0, 2)), draw(st.sampled_from(["post", "put", "x-upsert", "multipart"])))
    if kind == "signed-upload":
        return SignedUpload(actor, path(), draw(st.integers(0, 2)), draw(st.booleans()),
                            path() if draw(st.booleans()) else None)
    if kind == "download":
        return Download(actor, path(), draw(st.sampled_from(["authenticated", "plain", "public", "head", "range"])))
    if kind == "info":
        return Info(actor, path(), draw(st.sampled_from(["", "", "authenticated/", "public/"])))
    if kind == "bucket":
        return BucketAdmin(actor, draw(st.sampled_from(["empty", "delete", "make-public", "get", "list"])))
    if kind == "list":
        return ListFolder(actor, draw(st.one_of(st.none(), st.just(actor) if actor != "anon" else users, users)),
                          draw(st.booleans()), draw(st.sampled_from(["", "", "a", "s"])))
    if kind == "remove":
        return Remove(actor, paths(), draw(st.booleans()))
    if kind == "move":
        target = draw(st.integers(0, 3))
        if target == 0 or actor == "anon":
            destination = fresh()
        elif target == 1:
            destination = path()
        else:  # somewhere in the caller's own folder, where a move or copy may succeed
            destination = Path(actor, draw(st.sampled_from(FILES)))
        return Move(actor, path(), destination, draw(st.booleans()))
    if kind == "sign":
        return Sign(actor, paths(), draw(st.booleans()), path() if draw(st.booleans()) else None)
    return Render(actor, path(images=True), draw(st.sampled_from(["authenticated", "authenticated", "public"])))


def png(color: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (12, 12), ("red", "green", "blue")[color]).save(out, format="PNG")
    return out.getvalue()


PNGS = [png(i) for i in range(3)]


def content(path: Path, n: int) -> tuple[bytes, str]:
    if path.file.endswith(".png"):
        return PNGS[n], "image/png"
    return f"secret {n} in {path.folder}/{path.file}".encode(), "text/plain"


def etag(data: bytes) -> str:
    return f'"{hashlib.md5(data).hexdigest()}"'


@dataclass(frozen=True)
class Stored:
    owner: str
    data: bytes


class ObjectsRun:
    def __init__(self, world: World) -> None:
        self.world = world
        self.model: dict[str, Stored] = {}
        self.current = ""
        self.truth: dict[str, dict[str, Any]] = {}
        self.transcript: list[str] = []

    def fail(self, message: str) -> str:
        steps = "\n".join(self.transcript[-40:])
        return f"{message}\n-- the last requests (oldest first):\n{steps}"

    def existing(self) -> tuple[Path, ...]:
        users_by_uid = {uid: user for user, uid in self.world.uids.items()}
        out = []
        for name in sorted(self.model):
            folder, _, file = name.partition("/")
            out.append(Path(users_by_uid[folder], file))
        return tuple(out)

    def mine(self, actor: str, name: str) -> bool:
        """What the folder policies let ``actor`` read and write (names with '..' are refused outright)."""
        if ".." in name.split("/"):
            return False
        return actor != "anon" and "/" in name and name.split("/", 1)[0] == self.world.uids[actor]

    async def call(self, actor: str, method: str, url: str, **kwargs: Any) -> httpx.Response:
        response = await self.world.storage[actor].request(method, url, **kwargs)
        shown = response.text[:300] if "text" in response.headers.get("content-type", "") or "json" in \
            response.headers.get("content-type", "") else f"<{len(response.content)} bytes>"
        self.transcript.append(f"    {actor}: {method} {url} {kwargs.get('json', '')} -> {response.status_code} {shown}")
        assert response.status_code < 500, self.fail(f"5xx from the server\n-- server log:\n{self.world.log_tail()}")
        return response

    def refused(self, response: httpx.Response, what: str) -> None:
        assert not 200 <= response.status_code < 300, self.fail(f"expected a refusal: {what}")
        event(f"{self.current}: refused")

    def ok(self, response: httpx.Response, what: str) -> None:
        assert 200 <= response.status_code < 300, self.fail(f"expected success: {what}")
        event(f"{self.current}: ok")

    def readable(self, actor: str, name: str) -> bool:
        return name in self.model and self.mine(actor, name)

    def check_read(self, actor: str, name: str, response: httpx.Response, *, body: bool = True) -> None:
        if 200 <= response.status_code < 300 and not self.readable(actor, name):
            owner = self.model[name].owner if name in self.model else None
            raise AssertionError(self.fail(f"ISOLATION: {actor} read {name!r} (owned by {owner})"))
        if self.readable(actor, name):
            self.ok(response, f"{actor} reads their own {name!r}")
            if body:
                data = self.model[name].data
                assert response.content == data or (
                    response.status_code == 206 and data.startswith(response.content)), self.fail("wrong bytes")
        else:
            self.refused(response, f"{actor} reads {name!r}")

    async def snapshot(self) -> dict[str, dict[str, Any]]:
        rows = await self.world.db.admin.fetchval(OBJECTS_SNAPSHOT)
        return {r["name"]: r | {"owner": self.world.name(r["owner"])} for r in rows}

    async def step(self, op: Any) -> None:
        self.transcript.append(str(op))
        self.current = type(op).__name__
        uids = self.world.uids
        expected = dict(self.model)
        actor = op.actor
        if isinstance(op, Upload):
            name = op.path.name(uids)
            data, mime = content(op.path, op.content)
            url = f"/object/{BUCKET}/{q(name)}"
            if op.mode == "multipart":
                response = await self.call(actor, "POST", url, files={"file": (op.path.file, data, mime)},
                                           data={"cacheControl": "3600"})
            else:
                headers = {"Content-Type": mime} | ({"x-upsert": "true"} if op.mode == "x-upsert" else {})
                response = await self.call(actor, "PUT" if op.mode == "put" else "POST", url, content=data,
                                           headers=headers)
            upsert = op.mode in ("put", "x-upsert")
            self.expect_write(actor, name, data, upsert, response, expected)
        elif isinstance(op, SignedUpload):
            name = op.path.name(uids)
            data, mime = content(op.path, op.content)
            signed = await self.call(actor, "POST", f"/object/upload/sign/{BUCKET}/{q(name)}",
                                     headers={"x-upsert": "true"} if op.upsert else {})
            if ".." in name.split("/") and not 200 <= signed.status_code < 300:
                self.refused(signed, "an upload URL for a name with '..'")
                return await self.finish(op, expected)
            self.ok(signed, "anyone may ask for an upload URL; the upload itself is checked")
            token = signed.json()["token"]
            if op.elsewhere is not None and op.elsewhere.name(uids) != name:
                other = op.elsewhere.name(uids)
                moved = await self.call(actor, "PUT", f"/object/upload/sign/{BUCKET}/{q(other)}",
                                        params={"token": token}, content=b"hijack", headers={"Content-Type": "text/plain"})
                self.refused(moved, f"an upload token for {name!r} used on {other!r}")
            url = signed.json()["url"]
            response = await self.call(actor, "PUT", url, content=data, headers={"Content-Type": mime})
            self.expect_write(actor, name, data, op.upsert, response, expected)
        elif isinstance(op, Download):
            name = op.path.name(uids)
            route = {"authenticated": f"/object/authenticated/{BUCKET}/{q(name)}",
                     "public": f"/object/public/{BUCKET}/{q(name)}"}.get(op.route, f"/object/{BUCKET}/{q(name)}")
            if op.route == "head":
                route = f"/object/authenticated/{BUCKET}/{q(name)}"
            method = "HEAD" if op.route == "head" else "GET"
            headers = {"Range": "bytes=0-3"} if op.route == "range" else {}
            response = await self.call(actor, method, route, headers=headers)
            if op.route == "public":  # the bucket is not public: nobody, not even the owner
                self.refused(response, "a public URL of a private bucket")
            else:
                self.check_read(actor, name, response, body=method == "GET")
        elif isinstance(op, Downloads):
            names = [d.path.name(uids) for d in op.reads]
            responses = await asyncio.gather(*(
                self.call(d.actor, "GET", f"/object/authenticated/{BUCKET}/{q(n)}") for d, n in zip(op.reads, names)))
            for d, n, response in zip(op.reads, names, responses):
                self.check_read(d.actor, n, response)
        elif isinstance(op, Info):
            name = op.path.name(uids)
            response = await self.call(actor, "GET", f"/object/info/{op.route}{BUCKET}/{q(name)}")
            if op.route == "public/":  # the bucket is not public
                assert not 200 <= response.status_code < 300, self.fail(f"ISOLATION: {actor} read info of {name!r}")
                self.refused(response, "public info of a private bucket")
            else:
                self.check_read(actor, name, response, body=False)
            if response.status_code == 200:
                assert response.json()["name"] == name and response.json()["etag"] == etag(self.model[name].data)
        elif isinstance(op, ListFolder):
            prefix = ""
            if op.folder is not None:
                prefix = uids[op.folder] + ("/sub" if op.sub else "")
            response = await self.call(actor, "POST", f"/object/list/{BUCKET}",
                                       json={"prefix": prefix, "limit": 100, "offset": 0, "search": op.search})
            self.ok(response, "listing")
            got = sorted((item["name"], item["id"] is None) for item in response.json())
            want = set()
            start = prefix + "/" if prefix else ""
            for name in self.model:
                if self.mine(actor, name) and name.startswith(start):
                    rest = name[len(start):]
                    item, _, tail = rest.partition("/")
                    if item.lower().startswith(op.search.lower()):
                        want.add((item, bool(tail)))
            leaked = [item for item in got if item not in want]
            assert not leaked, self.fail(f"ISOLATION: {actor} listed {leaked} under {prefix!r}")
            assert got == sorted(want), self.fail(f"expected the listing {sorted(want)}")
        elif isinstance(op, Remove):
            names = [p.name(uids) for p in op.paths]
            if op.single:
                name = names[0]
                response = await self.call(actor, "DELETE", f"/object/{BUCKET}/{q(name)}")
                if self.readable(actor, name):
                    self.ok(response, f"{actor} removes their own {name!r}")
                    del expected[name]
                else:
                    self.refused(response, f"{actor} removes {name!r}")
            elif any(".." in n.split("/") for n in names):
                response = await self.call(actor, "DELETE", f"/object/{BUCKET}", json={"prefixes": names})
                self.refused(response, "a batch removal naming '..'")
            else:
                response = await self.call(actor, "DELETE", f"/object/{BUCKET}", json={"prefixes": names})
                self.ok(response, "a batch removal answers with what it removed")
                gone = sorted({n for n in names if self.readable(actor, n)})
                assert sorted(o["name"] for o in response.json()) == gone, self.fail(f"expected to remove {gone}")
                for n in gone:
                    del expected[n]
        elif isinstance(op, Move):
            source, target = op.source.name(uids), op.target.name(uids)
            response = await self.call(actor, "POST", "/object/copy" if op.copy else "/object/move",
                                       json={"bucketId": BUCKET, "sourceKey": source, "destinationKey": target})
            allowed = self.readable(actor, source) and self.mine(actor, target) and (
                target not in self.model or (target == source and not op.copy))
            if allowed:
                self.ok(response, f"{actor} {'copies' if op.copy else 'moves'} within their folder")
                stored = self.model[source]
                if not op.copy:
                    del expected[source]
                expected[target] = Stored(actor, stored.data)
            else:
                self.refused(response, f"{actor} {'copies' if op.copy else 'moves'} {source!r} to {target!r}")
        elif isinstance(op, Sign):
            names = [p.name(uids) for p in op.paths]
            if op.single:
                response = await self.call(actor, "POST", f"/object/sign/{BUCKET}/{q(names[0])}",
                                           json={"expiresIn": 60})
                urls = {names[0]: response.json().get("signedURL") if response.status_code == 200 else None}
                if self.readable(actor, names[0]):
                    self.ok(response, f"{actor} signs their own {names[0]!r}")
            else:
                response = await self.call(actor, "POST", f"/object/sign/{BUCKET}",
                                           json={"expiresIn": 60, "paths": names})
                self.ok(response, "batch signing answers per path")
                urls = {item["path"]: item["signedURL"] for item in response.json()}
            for name, url in urls.items():
                if not self.readable(actor, name):
                    assert url is None, self.fail(f"ISOLATION: {actor} got a signed URL for {name!r}")
                    continue
                assert url, self.fail(f"{actor} got no signed URL for their own {name!r}")
                fetched = await self.call(actor, "GET", url)
                assert fetched.status_code == 200 and fetched.content == self.model[name].data, self.fail("signed bytes")
                other = op.elsewhere.name(uids) if op.elsewhere else None
                if other and other != name:
                    token = url.split("token=", 1)[1]
                    stolen = await self.call("anon", "GET", f"/object/sign/{BUCKET}/{q(other)}",
                                             params={"token": token})
                    self.refused(stolen, f"a signed URL for {name!r} used on {other!r}")
                    rendered = await self.call("anon", "GET", f"/render/image/sign/{BUCKET}/{q(other)}",
                                               params={"token": token, "width": "6"})
                    self.refused(rendered, f"a signed URL for {name!r} used to render {other!r}")
        elif isinstance(op, Render):
            name = op.path.name(uids)
            response = await self.call(actor, "GET", f"/render/image/{op.mode}/{BUCKET}/{q(name)}",
                                       params={"width": "6", "height": "6"})
            readable = self.readable(actor, name) and op.mode == "authenticated"
            if 200 <= response.status_code < 300:
                assert readable, self.fail(f"ISOLATION: {actor} rendered {name!r} ({op.mode})")
            if readable and self.model[name].data.startswith(b"\x89PNG"):
                self.ok(response, f"{actor} renders their own image")
            else:
                self.refused(response, f"{actor} renders {name!r}")
        elif isinstance(op, BucketAdmin):
            if op.action == "empty":  # as the caller: RLS lets each user empty their own folder only
                response = await self.call(actor, "POST", f"/bucket/{BUCKET}/empty")
                self.ok(response, "emptying deletes what the caller may delete")
                for name in list(expected):
                    if self.mine(actor, name):
                        del expected[name]
            elif op.action == "list":
                response = await self.call(actor, "GET", "/bucket")
                self.ok(response, "listing buckets")
                assert BUCKET not in [b["id"] for b in response.json()], self.fail("a private bucket was listed")
            else:
                method, body = {"delete": ("DELETE", None), "make-public": ("PUT", {"public": True}),
                                "get": ("GET", None)}[op.action]
                response = await self.call(actor, method, f"/bucket/{BUCKET}", json=body)
                self.refused(response, f"{actor} may not {op.action} the bucket")
        else:
            raise TypeError(f"unknown operation {op!r}")
        await self.finish(op, expected)

    async def finish(self, op: Any, expected: dict[str, Stored]) -> None:
        """The bucket after the step: nobody else's objects touched, and exactly what the model expects."""
        after = await self.snapshot()
        public = await self.world.db.admin.fetchval("SELECT public FROM storage.buckets WHERE id = $1", BUCKET)
        assert public is False, self.fail(f"ISOLATION: {op.actor} made the bucket public (or deleted it): {public}")
        self.check_isolation("anon" if isinstance(op, Downloads) else op.actor, self.truth, after)  # reads write nothing
        got = {n: (r["owner"], r["etag"]) for n, r in after.items()}
        want = {n: (s.owner, etag(s.data)) for n, s in expected.items()}
        assert got == want, self.fail(f"expected the bucket to hold {want}, it holds {got}")
        self.model, self.truth = expected, after

    def expect_write(self, actor: str, name: str, data: bytes, upsert: bool, response: httpx.Response,
                     expected: dict[str, Stored]) -> None:
        if self.mine(actor, name) and (upsert or name not in self.model):
            self.ok(response, f"{actor} writes {name!r} in their folder")
            expected[name] = Stored(actor, data)
        else:
            self.refused(response, f"{actor} writes {name!r} (upsert={upsert})")
            body = response.json()
            if self.mine(actor, name):
                assert body.get("statusCode") == "409", self.fail("an existing object answers 409")
            elif ".." in name.split("/"):
                pass  # InvalidKey, or InvalidSignature when a client cleaned the '..' out of a signed URL
            else:
                assert body.get("statusCode") == "403", self.fail("another's folder answers 403")

    def check_isolation(self, actor: str, before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]) -> None:
        for name, row in before.items():
            if not self.mine(actor, name):
                assert after.get(name) == row, self.fail(
                    f"ISOLATION: {actor} changed, moved or deleted {name!r} ({row} -> {after.get(name)})")
        for name, row in after.items():
            if name not in before or row != before[name]:
                assert self.mine(actor, name) and row["owner"] == actor, self.fail(
                    f"ISOLATION: {actor} wrote {name!r}, now {row}")
            folder = name.split("/", 1)[0]
            assert self.world.uids.get(row["owner"]) == folder, self.fail(
                f"ISOLATION: {name!r} is owned by {row['owner']}, not by its folder's user")


@settings(EXAMPLE_SETTINGS, max_examples=OBJECT_EXAMPLES)
@given(data=st.data())
async def test_objects_stay_in_their_folders(world: World, data: st.DataObject) -> None:
    await world.db.admin.execute(RESET)
    run = ObjectsRun(world)
    run.truth = await run.snapshot()
    for user in USERS:  # everyone starts with a few objects of their own
        for number, file in enumerate(FILES):
            if file in ("a.txt", "sub/c.txt", "p.png"):
                await run.step(Upload(user, Path(user, file), number % 3, "post"))
    for number in range(data.draw(st.integers(1, MAX_STEPS), label="steps")):
        await run.step(data.draw(storage_operations(run.existing()), label=f"step {number}"))
