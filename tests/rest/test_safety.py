"""Hostile input in every position: a 4xx, never a 5xx, and nothing changes or leaks."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gatehouse.core.db import Database
from tests.rest.conftest import Rest

UserFactory = Callable[[], tuple[Rest, dict[str, object]]]

INJECTIONS = [
    "1; DROP TABLE public.countries; --",
    "' OR '1'='1",
    '" OR "1"="1',
    "1) OR (1=1",
    "$1",
    "$$; DROP TABLE public.countries; $$",
    "name\x00",
    "../../etc/passwd",
    "pg_sleep(5)",
    "(SELECT password FROM auth.users)",
    "*/ DROP TABLE public.countries /*",
    "E'\\x27'",
]


async def snapshot(db: Database) -> tuple[int, int, int, list[str]]:
    return (
        await db.admin.fetchval("SELECT count(*) FROM public.countries"),
        await db.admin.fetchval("SELECT count(*) FROM public.cities"),
        await db.admin.fetchval("SELECT count(*) FROM auth.users"),
        [r[0] for r in await db.admin.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")],
    )


def positions(payload: str) -> list[tuple[str, str, dict[str, str], object]]:
    return [
        ("GET", "/countries", {"select": payload}, None),
        ("GET", "/countries", {"select": f"alias:{payload}"}, None),
        ("GET", "/countries", {"select": f"name::{payload}"}, None),
        ("GET", "/countries", {payload: "eq.1"}, None),
        ("GET", "/countries", {"name": f"{payload}.x"}, None),
        ("GET", "/countries", {"name": f"eq.{payload}"}, None),
        ("GET", "/countries", {"id": f"in.({payload})"}, None),
        ("GET", "/countries", {"order": payload}, None),
        ("GET", "/countries", {"order": f"name.{payload}"}, None),
        ("GET", "/countries", {"or": f"(name.eq.{payload})"}, None),
        ("GET", "/countries", {"meta->>capital": f"eq.{payload}"}, None),
        ("GET", "/countries", {f"meta->>{payload}": "eq.x"}, None),
        ("GET", "/countries", {"limit": payload}, None),
        ("GET", f"/{payload}", {}, None),
        ("POST", "/rpc/add", {}, {"a": payload, "b": 1}),
        ("POST", "/rpc/add", {}, {payload: 1}),
        ("GET", "/rpc/add", {"a": payload}, None),
        ("POST", f"/rpc/{payload}", {}, {}),
        ("POST", "/countries", {}, {payload: "x"}),
        ("POST", "/countries", {"columns": payload}, [{"name": "x"}]),
        ("POST", "/countries", {"on_conflict": payload}, {"name": "x"}),
        ("PATCH", "/countries", {"name": f"eq.{payload}"}, {"code": "PW"}),
        ("DELETE", "/cities", {"name": f"eq.{payload}"}, None),
    ]


@pytest.mark.parametrize("payload", INJECTIONS)
async def test_injection_in_every_position(user_factory: UserFactory, db: Database, payload: str) -> None:
    rest, _ = user_factory()
    before = await snapshot(db)
    for method, path, params, body in positions(payload):
        try:
            response = rest.http.request(method, path, params=params, json=body)
        except httpx.InvalidURL:
            continue  # the client itself refused to send it (a NUL in the path)
        assert response.status_code < 500, (method, path, params, body, response.text)
        if response.status_code < 300 and method == "GET":
            continue  # a harmless read, e.g. a name that simply matches nothing
        if response.status_code < 300:
            # a write that succeeded must only have used the payload as data
            assert method in ("PATCH", "DELETE"), (method, path, params, response.text)
    assert await snapshot(db) == before


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    key=st.sampled_from(["id", "body", "owner", "private", "or", "and", "not.or", "body->>x", "select", "order"]),
    value=st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)
    | st.builds(
        lambda op, v: f"{op}.{v}",
        st.sampled_from(["eq", "neq", "like", "ilike", "in", "is", "cs", "not.eq", "gt", "fts", "match"]),
        st.text(max_size=20),
    ),
)
def test_random_filters_never_fail_or_leak(owner_and_stranger: tuple[Rest, Rest, set[int]], key: str, value: str) -> None:
    _, stranger, secret_ids = owner_and_stranger
    try:
        response = stranger.http.get("/notes", params={key: value})
    except httpx.InvalidURL:
        return
    assert response.status_code < 500, (key, value, response.text)
    if response.status_code == 200:
        rows = response.json()
        assert isinstance(rows, list)
        assert not {row.get("id") for row in rows if isinstance(row, dict)} & secret_ids, (key, value)


@pytest.fixture(scope="module")
def owner_and_stranger(user_factory: UserFactory) -> tuple[Rest, Rest, set[int]]:
    owner, _ = user_factory()
    stranger, _ = user_factory()
    ids = set()
    for body in ("secret one", "secret two", "x"):
        ids.add(owner.http.post("/notes", json={"body": body}, headers={"Prefer": "return=representation"}).json()[0]["id"])
    return owner, stranger, ids
