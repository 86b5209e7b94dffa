"""The users pages over 20,000 users made by bulk SQL: search, filters, keyset paging both ways,
the index the pages read, hostile query parameters, and one user's page."""

from __future__ import annotations

import html
import re
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import asyncpg
import pytest

from gatehouse.auth.listing import Cursor, UserQuery, page_sql
from tests.auth.helpers import Auth
from tests.dashboard.helpers import Visitor, fetch, make_admin
from tests.support import RunningServer, run_sql

ROWS = 20_000
USER_LINK = re.compile(r'href="/_/users/([0-9a-f-]{36})"')
PAGER = re.compile(r'id="(next|previous)" rel="\w+" href="([^"]+)"')

BULK = f"""
INSERT INTO auth.users (id, aud, role, email, created_at, email_confirmed_at, banned_until, is_anonymous,
                        raw_user_meta_data, raw_app_meta_data)
SELECT gen_random_uuid(), 'authenticated', 'authenticated',
       CASE WHEN n % 100 = 0 THEN NULL ELSE format('bulk-%s@example.com', n) END,
       timestamptz '2024-01-01' - make_interval(secs => n / 3),  -- three users per moment: ties go by id
       CASE WHEN n % 10 = 0 THEN NULL ELSE timestamptz '2024-01-02' END,
       CASE WHEN n % 50 = 0 THEN now() + interval '1 day' END,
       n % 100 = 0,
       jsonb_build_object('team', 'team-' || (n % 7), 'n', n),
       '{{"provider": "email", "providers": ["email"]}}'
FROM generate_series(1, {ROWS}) AS n;
INSERT INTO auth.mfa_factors (user_id, factor_type, status, friendly_name)
SELECT id, 'totp', 'verified', 'phone' FROM auth.users WHERE raw_user_meta_data->>'n' IN ('7', '77', '777');
ANALYZE auth.users;
"""
ORDER = "ORDER BY created_at DESC NULLS FIRST, id DESC"


@pytest.fixture(scope="module")
def bulk(database_url: str) -> None:
    run_sql(database_url, BULK)


@pytest.fixture(scope="module")
def visitor(bulk: None, server: RunningServer, database_url: str) -> Iterator[Visitor]:
    signed_in = Visitor(server)
    signed_in.sign_in(make_admin(database_url))
    signed_in.get("/_/")
    yield signed_in
    signed_in.close()


def ids(database_url: str, where: str, *args: Any) -> list[str]:
    rows = fetch(database_url, f"SELECT id FROM auth.users u WHERE deleted_at IS NULL AND {where} {ORDER}", *args)
    return [str(row["id"]) for row in rows]


def listed(answer: Any) -> tuple[list[str], dict[str, str]]:
    assert answer.status_code == 200, answer.text
    return USER_LINK.findall(answer.text), {name: html.unescape(href) for name, href in PAGER.findall(answer.text)}


def walk(visitor: Visitor, first: str) -> tuple[list[str], list[str]]:
    """Every page from ``first`` by next links, then back by previous links: (forwards, backwards)."""
    forwards: list[list[str]] = []
    found, links = listed(visitor.get(first))
    forwards.append(found)
    while "next" in links:
        found, links = listed(visitor.get(links["next"]))
        forwards.append(found)
    backwards: list[list[str]] = [found]
    while "previous" in links:
        found, links = listed(visitor.get(links["previous"]))
        backwards.append(found)
    return [i for page in forwards for i in page], [i for page in reversed(backwards) for i in page]


def test_a_filter_pages_through_every_match_both_ways(visitor: Visitor, database_url: str) -> None:
    expected = ids(database_url, "email_confirmed_at IS NULL AND NOT is_anonymous")
    assert len(expected) == 1800
    forwards, backwards = walk(visitor, "/_/users?filter=unconfirmed")
    assert forwards == expected and backwards == expected


def test_next_and_previous_pages_of_everyone(visitor: Visitor, database_url: str) -> None:
    everyone = ids(database_url, "true")
    first, links = listed(visitor.get("/_/users"))
    assert first == everyone[:50] and "previous" not in links
    second, links = listed(visitor.get(links["next"]))
    third, links = listed(visitor.get(links["next"]))
    assert second + third == everyone[50:150]
    back, links = listed(visitor.get(links["previous"]))
    assert back == second
    back, links = listed(visitor.get(links["previous"]))
    assert back == first and "previous" not in links


@pytest.mark.parametrize(("params", "where", "args"), [
    ({"q": "bulk-1234@"}, "email = $1", ("bulk-1234@example.com",)),
    ({"q": "BULK-999@EXAMPLE.COM"}, "email = $1", ("bulk-999@example.com",)),
    ({"q": '"n": 4321'}, "raw_user_meta_data->>'n' = $1", ("4321",)),
    ({"q": "team-3", "filter": "banned"}, "raw_user_meta_data->>'team' = $1 AND banned_until > now()", ("team-3",)),
    ({"filter": "anonymous"}, "is_anonymous = $1", (True,)),
    ({"filter": "mfa"}, "raw_user_meta_data->>'n' = ANY($1)", (["7", "77", "777"],)),
    ({"q": "%"}, "email LIKE $1", ("%\\%%",)),  # wildcards are taken literally: nobody has % in their email
    ({"q": "bulk_1"}, "email LIKE $1", ("%bulk\\_1%",)),
])
def test_search_and_filters(visitor: Visitor, database_url: str, params: dict[str, str], where: str,
                            args: tuple[Any, ...]) -> None:
    found, _ = listed(visitor.get("/_/users", params=params))
    assert found == ids(database_url, where, *args)[:50]


def test_search_by_id_and_the_htmx_partial(visitor: Visitor, database_url: str) -> None:
    some = ids(database_url, "email = $1", "bulk-42@example.com")
    answer = visitor.htmx("/_/users", q=some[0])
    assert answer.text.lstrip().startswith('<section id="results"') and "<html" not in answer.text
    assert USER_LINK.findall(answer.text) == some


def test_the_pages_read_the_index_in_order(database_url: str) -> None:
    """A deep page reads users_listed_idx backwards from the cursor: no sort, no scan of the rows before it."""
    async def plans() -> list[str]:
        conn = await asyncpg.connect(database_url)
        try:
            row = await conn.fetchrow(f"SELECT created_at, id FROM auth.users WHERE deleted_at IS NULL {ORDER} "
                                      "OFFSET 15000 LIMIT 1")
            cursor = Cursor(row["created_at"], row["id"])
            found = []
            for query in (UserQuery(), UserQuery(after=cursor), UserQuery(before=cursor),
                          UserQuery(after=cursor, filters=frozenset({"unconfirmed"}))):
                sql, args = page_sql(query)
                found.append("\n".join(r[0] for r in await conn.fetch("EXPLAIN " + sql, *args)))
            return found
        finally:
            await conn.close()

    import asyncio

    for plan in asyncio.run(plans()):
        top = plan.splitlines()[:2]  # Limit, then what feeds it: the index in order (the rest is per row)
        assert top[0].startswith("Limit") and "Index Scan Backward using users_listed_idx" in top[1] or \
            "Index Scan using users_listed_idx" in top[1], plan


@pytest.mark.parametrize("params", [
    {"q": "' OR 1=1 --"}, {"q": "x'); DROP TABLE auth.users; --"}, {"q": "\\"}, {"q": "a" * 5000},
    {"q": "\x00"}, {"filter": "banned' OR '1'='1"}, {"filter": "x" * 100}, {"after": "garbage"},
    {"after": "1.not-a-uuid"}, {"after": "99999999999999999999999.00000000-0000-0000-0000-000000000000"},
    {"before": "-.00000000-0000-0000-0000-000000000000"}, {"before": "1e9.00000000-0000-0000-0000-000000000000"},
    {"after": "1.00000000-0000-0000-0000-000000000000", "before": "1.00000000-0000-0000-0000-000000000000"},
    {"after": "' OR 1=1 --"},
])
def test_hostile_parameters_get_a_4xx_or_nothing(visitor: Visitor, database_url: str, params: dict[str, str]) -> None:
    answer = visitor.get("/_/users", params=params)
    assert answer.status_code in (200, 400), answer.text
    if answer.status_code == 200 and "q" in params:
        assert USER_LINK.findall(answer.text) == []  # matched literally: nobody's email or metadata has it
    assert fetch(database_url, "SELECT count(*) AS n FROM auth.users")[0]["n"] >= ROWS


def test_a_users_page(visitor: Visitor, server: RunningServer, database_url: str) -> None:
    auth = Auth(server)
    email, _ = auth.confirmed_user()
    run_sql(database_url, "UPDATE auth.users SET raw_user_meta_data = raw_user_meta_data || $2 WHERE email = $1 "
            "RETURNING 1", email, '{"bio": "<script>alert(1)</script>"}')
    (user,) = fetch(database_url, "SELECT id FROM auth.users WHERE email = $1", email)
    page = visitor.get(f"/_/users/{user['id']}")
    assert page.status_code == 200
    assert "<script>alert(1)</script>" not in page.text and "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert "email (" + email in page.text  # the identity
    assert "python-httpx" in page.text  # the session's client
    assert "login" in page.text or "user_signedup" in page.text  # its audit events
    assert visitor.get(f"/_/users/{uuid.uuid4()}").status_code == 404
    assert visitor.get("/_/users/not-an-id").status_code == 404
    listing, _ = listed(visitor.get("/_/users", params={"q": "<script>"}))
    assert listing == [str(user["id"])]
    auth.close()


def test_the_overview_counts(visitor: Visitor, database_url: str) -> None:
    page = visitor.get("/_/")
    (row,) = fetch(database_url, "SELECT count(*) AS users, count(*) FILTER (WHERE email_confirmed_at IS NULL "
                     "AND NOT is_anonymous) AS unconfirmed, count(*) FILTER (WHERE banned_until > now()) AS banned "
                     "FROM auth.users WHERE deleted_at IS NULL")
    for name in ("users", "unconfirmed", "banned"):
        assert f'id="fig-{name}">{row[name]}<' in page.text


@pytest.fixture(scope="module")
def server(server_factory: Callable[..., RunningServer]) -> RunningServer:
    return server_factory()
