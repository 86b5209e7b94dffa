"""Execution plans (``Accept: application/vnd.pgrst.plan``) through supabase-py's ``.explain()``: run as the
caller under RLS, never showing the rows it hides, and keeping nothing a planned write would change."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from supabase import Client

from tests.support import RunningServer, once_served, run_sql

SCHEMA = """
CREATE TABLE public.plan_notes (id int PRIMARY KEY, shared boolean NOT NULL, body text NOT NULL);
GRANT SELECT, INSERT ON public.plan_notes TO anon;
ALTER TABLE public.plan_notes ENABLE ROW LEVEL SECURITY;
CREATE POLICY shared_only ON public.plan_notes FOR SELECT TO anon USING (shared);
CREATE POLICY add_shared ON public.plan_notes FOR INSERT TO anon WITH CHECK (shared);
INSERT INTO public.plan_notes VALUES (1, true, 'hello'), (2, false, 'the launch code is 0000'), (3, false, 'private');
CREATE FUNCTION public.plan_count() RETURNS bigint LANGUAGE sql STABLE AS 'SELECT count(*) FROM public.plan_notes';
NOTIFY gatehouse_schema, 'reload';
"""


@pytest.fixture(scope="module")
def live(server_factory: Callable[..., RunningServer], database_url: str) -> RunningServer:
    run_sql(database_url, SCHEMA)
    server = server_factory(env={"GATEHOUSE_RATE_LIMITS_ENABLED": "false", "GATEHOUSE_REST_EXPLAIN": "true"})
    once_served(lambda: httpx.get(f"{server.url}/rest/v1/plan_notes", headers={"apikey": server.keys.publishable_key}))
    return server


def nodes(plan: Any) -> Iterator[dict[str, Any]]:
    """Every node of an EXPLAIN (FORMAT JSON) tree."""
    stack = [plan[0]["Plan"]]
    while stack:
        node = stack.pop()
        yield node
        stack += node.get("Plans", [])


def test_a_text_plan_of_the_read(client: Client) -> None:
    plan = client.table("plan_notes").select("id,body").eq("id", 1).explain().execute()
    assert isinstance(plan, str) and "plan_notes" in plan and "cost=" in plan


def test_an_analyzed_json_plan_counts_only_what_rls_shows(client: Client) -> None:
    plan = client.table("plan_notes").select("*").explain(analyze=True, verbose=True, format="json").execute().data
    scans = [node for node in nodes(plan) if node.get("Relation Name") == "plan_notes"]
    assert scans and scans[0]["Actual Rows"] == 1  # the one shared note
    text = str(plan)
    assert "launch code" not in text and "private" not in text  # no hidden row's contents


def test_a_planned_write_keeps_nothing(client: Client) -> None:
    plan = client.table("plan_notes").insert({"id": 10, "shared": True, "body": "new"}).explain(analyze=True).execute()
    assert "Insert on" in str(plan)
    assert client.table("plan_notes").select("id").eq("id", 10).execute().data == []


def test_a_function_call_and_the_object_form(live: RunningServer) -> None:
    key = {"apikey": live.keys.publishable_key}
    called = httpx.post(f"{live.url}/rest/v1/rpc/plan_count", json={},
                        headers={**key, "Accept": "application/vnd.pgrst.plan+json"})
    assert called.status_code == 200 and called.json()[0]["Plan"]
    single = httpx.get(f"{live.url}/rest/v1/plan_notes?id=eq.1",
                       headers={**key, "Accept": 'application/vnd.pgrst.plan+text; for="application/vnd.pgrst.object+json"'})
    assert single.status_code == 200
    assert single.headers["content-type"].startswith('application/vnd.pgrst.plan+text; for="application/vnd.pgrst.object+json"')


@pytest.mark.parametrize(
    ("accept", "status", "code"),
    [
        ("application/vnd.pgrst.plan+json; options=analyze|drop", 400, "PGRST100"),
        ("application/vnd.pgrst.plan+json; options=analyze|format text) DROP TABLE plan_notes; --", 400, "PGRST100"),
        ('application/vnd.pgrst.plan+json; for="text/html"', 406, "PGRST107"),
    ],
)
def test_bad_plan_requests_are_refused(live: RunningServer, accept: str, status: int, code: str) -> None:
    answer = httpx.get(f"{live.url}/rest/v1/plan_notes", headers={"apikey": live.keys.publishable_key, "Accept": accept})
    assert (answer.status_code, answer.json()["code"]) == (status, code), answer.text


def test_options_are_never_sql(live: RunningServer, client: Client) -> None:
    """A comma ends the media type: the rest is another (unknown) one, never part of the EXPLAIN."""
    accept = "application/vnd.pgrst.plan+json; options=analyze, format text); DROP TABLE plan_notes; --"
    answer = httpx.get(f"{live.url}/rest/v1/plan_notes", headers={"apikey": live.keys.publishable_key, "Accept": accept})
    assert answer.status_code == 200 and answer.json()[0]["Plan"]
    assert client.table("plan_notes").select("id").execute().data == [{"id": 1}]


def test_plans_are_off_by_default(server_factory: Callable[..., RunningServer], live: RunningServer) -> None:
    server = server_factory(env={"GATEHOUSE_RATE_LIMITS_ENABLED": "false"})
    answer = httpx.get(f"{server.url}/rest/v1/plan_notes",
                       headers={"apikey": server.keys.publishable_key, "Accept": "application/vnd.pgrst.plan+json"})
    assert answer.status_code == 406 and answer.json()["code"] == "PGRST107"
