"""Functions with variadic and array parameters through supabase-py, and functions that take the raw
request body (text or bytes) as their one unnamed parameter, as PostgREST calls them."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import httpx
import pytest
from postgrest.exceptions import APIError
from supabase import Client, create_client

from tests.support import RunningServer, once_served, run_sql

SCHEMA = """
CREATE FUNCTION public.joined(sep text, VARIADIC parts text[]) RETURNS text LANGUAGE sql IMMUTABLE
    AS 'SELECT array_to_string(parts, sep)';
CREATE FUNCTION public.total(VARIADIC numbers int[] DEFAULT '{}') RETURNS int LANGUAGE sql IMMUTABLE
    AS 'SELECT coalesce(sum(n), 0)::int FROM unnest(numbers) n';
CREATE FUNCTION public.grid_size(grid int[]) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT cardinality(grid)';
CREATE FUNCTION public.shout(text) RETURNS text LANGUAGE sql IMMUTABLE AS 'SELECT $1 || ''!''';
CREATE FUNCTION public.digest_of(bytea) RETURNS text LANGUAGE sql IMMUTABLE AS 'SELECT md5($1)';
CREATE TABLE public.rpc_notes (id int PRIMARY KEY, body text NOT NULL);
GRANT SELECT, INSERT ON public.rpc_notes TO anon;
CREATE FUNCTION public.keep_note(text) RETURNS int LANGUAGE sql VOLATILE
    AS 'INSERT INTO public.rpc_notes VALUES ((SELECT count(*) + 1 FROM public.rpc_notes), $1) RETURNING id';
NOTIFY gatehouse_schema, 'reload';
"""


@pytest.fixture(scope="module")
def client(live: RunningServer, database_url: str) -> Iterator[Client]:
    run_sql(database_url, SCHEMA)
    once_served(lambda: httpx.post(f"{live.url}/rest/v1/rpc/total", json={},
                                   headers={"apikey": live.keys.publishable_key}))
    supabase = create_client(live.url, live.keys.publishable_key)
    yield supabase
    supabase.postgrest.session.close()
    supabase.auth.close()


def call(live: RunningServer, name: str, body: bytes, content_type: str) -> httpx.Response:
    return httpx.post(f"{live.url}/rest/v1/rpc/{name}", content=body,
                      headers={"apikey": live.keys.publishable_key, "Content-Type": content_type})


def test_variadic_parameters_take_arrays(client: Client, live: RunningServer) -> None:
    assert client.rpc("joined", {"sep": "-", "parts": ["a", "b", "c"]}).execute().data == "a-b-c"
    assert client.rpc("joined", {"sep": "-", "parts": "solo"}).execute().data == "solo"  # one value: an array of one
    assert client.rpc("total", {"numbers": [1, 2, 39]}).execute().data == 42
    assert client.rpc("total", {}).execute().data == 0  # the default
    key = {"apikey": live.keys.publishable_key}
    repeated = httpx.get(f"{live.url}/rest/v1/rpc/total?numbers=40&numbers=2", headers=key)
    assert repeated.status_code == 200 and repeated.json() == 42
    single = httpx.get(f"{live.url}/rest/v1/rpc/joined?sep=%2B&parts=x", headers=key)
    assert single.json() == "x"


def test_array_parameters_take_json_arrays_nested_too(client: Client) -> None:
    assert client.rpc("grid_size", {"grid": [1, 2, 3]}).execute().data == 3
    assert client.rpc("grid_size", {"grid": [[1, 2], [3, 4]]}).execute().data == 4


@pytest.mark.parametrize(
    ("args", "code"),
    [
        ({"sep": "-", "parts": {"not": "an array"}}, "22P02"),
        ({"grid": [[1, 2], [3]]}, "22P02"),  # ragged: not an array PostgreSQL can hold
        ({"grid": "not an array"}, "22P02"),
    ],
)
def test_bad_array_arguments_are_400(client: Client, args: dict[str, object], code: str) -> None:
    name = "grid_size" if "grid" in args else "joined"
    with pytest.raises(APIError) as caught:
        client.rpc(name, args).execute()
    assert caught.value.code == code, caught.value


def test_raw_bodies_go_to_the_one_unnamed_parameter(live: RunningServer, client: Client) -> None:
    shouted = call(live, "shout", "héllo wörld".encode(), "text/plain; charset=utf-8")
    assert shouted.status_code == 200 and shouted.json() == "héllo wörld!"
    raw = bytes(range(256)) * 3
    digest = call(live, "digest_of", raw, "application/octet-stream")
    assert digest.status_code == 200 and digest.json() == hashlib.md5(raw).hexdigest()
    kept = call(live, "keep_note", b"a note; DROP TABLE rpc_notes; --", "text/plain")
    assert kept.status_code == 200
    assert client.table("rpc_notes").select("body").execute().data == [{"body": "a note; DROP TABLE rpc_notes; --"}]


@pytest.mark.parametrize(
    ("name", "body", "content_type", "status", "code"),
    [
        ("shout", b"\xff\xfe not utf-8", "text/plain", 400, "PGRST102"),
        ("shout", b"nul \x00 inside", "text/plain", 400, "22P05"),
        ("joined", b"plain text", "text/plain", 404, "PGRST202"),  # no unnamed text parameter
        ("shout", b"plain", "application/octet-stream", 404, "PGRST202"),  # shout takes text, not bytes
        ("nope", b"x", "text/plain", 404, "PGRST202"),
    ],
)
def test_raw_bodies_refused_in_postgrests_shape(live: RunningServer, client: Client, name: str, body: bytes,
                                                content_type: str, status: int, code: str) -> None:
    answer = call(live, name, body, content_type)
    assert (answer.status_code, answer.json()["code"]) == (status, code), answer.text
    assert answer.json()["message"]
