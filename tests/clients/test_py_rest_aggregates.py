"""Aggregates and spread embeds through supabase-py (postgrest-py), under RLS, as PostgREST 12/13 answer them.

The data mirrors PostgREST's own aggregate tests (clients, projects, invoices); one invoice is
hidden from ``anon`` by RLS and must never be counted or summed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from postgrest.exceptions import APIError
from supabase import Client

from tests.support import RunningServer, once_served, run_sql

SCHEMA = """
CREATE TABLE public.agg_clients (id int PRIMARY KEY, name text NOT NULL);
CREATE TABLE public.agg_projects (
    id int PRIMARY KEY, name text NOT NULL, client_id int REFERENCES public.agg_clients(id));
CREATE TABLE public.agg_invoices (
    id int PRIMARY KEY, project_id int NOT NULL REFERENCES public.agg_projects(id), total numeric NOT NULL,
    data jsonb, hidden boolean NOT NULL DEFAULT false);
GRANT SELECT ON public.agg_clients, public.agg_projects, public.agg_invoices TO anon;
ALTER TABLE public.agg_invoices ENABLE ROW LEVEL SECURITY;
CREATE POLICY shown ON public.agg_invoices FOR SELECT TO anon USING (NOT hidden);
INSERT INTO public.agg_clients VALUES (1, 'Microsoft'), (2, 'Apple');
INSERT INTO public.agg_projects VALUES
    (1, 'Windows 7', 1), (2, 'Windows 10', 1), (3, 'IOS', 2), (4, 'OSX', 2), (5, 'Orphan', NULL);
INSERT INTO public.agg_invoices (id, project_id, total, data) VALUES
    (1, 1, 100, '{"k": "1"}'), (2, 1, 200, '{"k": "2"}'), (3, 2, 500, NULL), (4, 2, 700, NULL),
    (5, 3, 1200, NULL), (6, 3, 2000, NULL), (7, 4, 100, '{"k": "21"}'), (8, 4, 4000, NULL);
INSERT INTO public.agg_invoices VALUES (9, 4, 99999, '{"k": "1000"}', true);
CREATE FUNCTION public.agg_all_invoices() RETURNS SETOF public.agg_invoices LANGUAGE sql STABLE
    AS 'SELECT * FROM public.agg_invoices';
NOTIFY gatehouse_schema, 'reload';
"""


@pytest.fixture(scope="module")
def live(server_factory: Callable[..., RunningServer], database_url: str) -> RunningServer:
    run_sql(database_url, SCHEMA)
    server = server_factory(env={"GATEHOUSE_RATE_LIMITS_ENABLED": "false", "GATEHOUSE_REST_AGGREGATES": "true"})
    once_served(lambda: httpx.get(f"{server.url}/rest/v1/agg_invoices",
                                  headers={"apikey": server.keys.publishable_key}))
    return server


def rows(request: Any) -> Any:
    return request.execute().data


# -- aggregates ---------------------------------------------------------------------------------------


def test_counts_sums_and_the_rest_see_only_what_rls_shows(client: Client) -> None:
    invoices = client.table("agg_invoices")
    assert rows(invoices.select("count()")) == [{"count": 8}]
    assert rows(invoices.select("n:count()::text")) == [{"n": "8"}]
    assert rows(invoices.select("total.sum(),total.max(),total.min(),total.count()")) == [
        {"sum": 8800, "max": 4000, "min": 100, "count": 8}
    ]
    assert rows(invoices.select("average:total.avg()::int")) == [{"average": 1100}]
    assert rows(invoices.select("data->>k::int.sum()")) == [{"sum": 24}]
    assert rows(invoices.select("s:data->>k::int.sum()::text")) == [{"s": "24"}]


def test_the_other_columns_group(client: Client) -> None:
    grouped = rows(client.table("agg_invoices").select("total.sum(),pid:project_id").order("project_id", desc=True))
    assert grouped == [{"sum": 4100, "pid": 4}, {"sum": 3200, "pid": 3}, {"sum": 1200, "pid": 2}, {"sum": 300, "pid": 1}]
    filtered = client.table("agg_invoices").select("project_id,n:count()", count="exact").gte("total", 500)
    answer = filtered.order("project_id").execute()
    assert answer.data == [{"project_id": 2, "n": 2}, {"project_id": 3, "n": 2}, {"project_id": 4, "n": 1}]
    assert answer.count == 3  # the groups, not the rows


def test_a_to_one_embed_groups_with_its_parent(client: Client) -> None:
    answer = rows(client.table("agg_invoices").select("project_id,total:total.sum(),agg_projects(name)").order("project_id"))
    assert answer == [
        {"project_id": 1, "total": 300, "agg_projects": {"name": "Windows 7"}},
        {"project_id": 2, "total": 1200, "agg_projects": {"name": "Windows 10"}},
        {"project_id": 3, "total": 3200, "agg_projects": {"name": "IOS"}},
        {"project_id": 4, "total": 4100, "agg_projects": {"name": "OSX"}},
    ]


def test_aggregates_inside_embeds_and_embedded_counts(client: Client) -> None:
    projects = rows(client.table("agg_projects").select("name,agg_invoices(total.sum(),total.count())").order("id"))
    assert projects[0] == {"name": "Windows 7", "agg_invoices": [{"sum": 300, "count": 2}]}
    assert projects[3] == {"name": "OSX", "agg_invoices": [{"sum": 4100, "count": 2}]}  # the hidden one is not there
    assert projects[4] == {"name": "Orphan", "agg_invoices": [{"sum": None, "count": 0}]}
    counted = rows(client.table("agg_clients").select("name,agg_projects(count)").order("id"))
    assert counted == [{"name": "Microsoft", "agg_projects": [{"count": 2}]},
                       {"name": "Apple", "agg_projects": [{"count": 2}]}]


def test_aggregates_over_a_function_returning_rows(live: RunningServer) -> None:
    response = httpx.get(f"{live.url}/rest/v1/rpc/agg_all_invoices?select=total.max()",
                         headers={"apikey": live.keys.publishable_key})
    assert response.status_code == 200 and response.json() == [{"max": 4000}]


# -- spread embeds ------------------------------------------------------------------------------------


def test_a_to_one_spread_joins_the_parent_object(client: Client) -> None:
    answer = rows(client.table("agg_invoices").select("id,...agg_projects(project:name,client_id)").lte("id", 2)
                  .order("id"))
    assert answer == [{"id": 1, "project": "Windows 7", "client_id": 1}, {"id": 2, "project": "Windows 7", "client_id": 1}]
    nested = rows(client.table("agg_invoices").select("id,...agg_projects(...agg_clients(client:name))").eq("id", 5))
    assert nested == [{"id": 5, "client": "Apple"}]


def test_aggregates_group_by_a_spread_column_and_order_by_it(client: Client) -> None:
    answer = rows(client.table("agg_invoices").select("total.sum(),...agg_projects(client_id)")
                  .order("agg_projects(client_id)", desc=True))
    assert answer == [{"sum": 7300, "client_id": 2}, {"sum": 1500, "client_id": 1}]
    counted = rows(client.table("agg_invoices").select("...agg_projects(...agg_clients(client:name)),n:count()"))
    assert sorted(counted, key=lambda row: row["client"]) == [{"client": "Apple", "n": 4}, {"client": "Microsoft", "n": 4}]


def test_a_to_many_spread_is_arrays_of_the_childrens_values(client: Client) -> None:
    answer = rows(client.table("agg_clients").select("name,...agg_projects(names:name,ids:id)")
                  .order("id").order("id", foreign_table="agg_projects", desc=True))
    assert answer == [{"name": "Microsoft", "names": ["Windows 10", "Windows 7"], "ids": [2, 1]},
                      {"name": "Apple", "names": ["OSX", "IOS"], "ids": [4, 3]}]
    counted = rows(client.table("agg_projects").select("name,...agg_invoices(n:count(),totals:total)").in_("id", [4, 5])
                   .order("id"))
    assert counted == [{"name": "OSX", "n": 2, "totals": [100, 4000]}, {"name": "Orphan", "n": 0, "totals": []}]


def test_a_spread_with_inner_keeps_only_parents_with_a_match(client: Client) -> None:
    answer = rows(client.table("agg_projects").select("name,...agg_clients!inner(client:name)")
                  .eq("agg_clients.name", "Apple").order("id"))
    assert answer == [{"name": "IOS", "client": "Apple"}, {"name": "OSX", "client": "Apple"}]
    left = rows(client.table("agg_projects").select("name,...agg_clients!left(client:name)").eq("id", 5))
    assert left == [{"name": "Orphan", "client": None}]


# -- refusals -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("select", "code"),
    [
        ("total.sum(),nope", "42703"),  # an unknown column
        ("total.median()", "PGRST100"),  # not an aggregate PostgREST offers
        ("total.sum(", "PGRST100"),
        ("total::te$xt.sum()", "PGRST100"),  # a cast that is not a type name
        ("total::no_such_type.sum()", "42704"),  # a type that does not exist: the database says so
        ("name.sum(),id", None),  # sum(text): the database refuses (42883)
    ],
)
def test_bad_aggregates_are_4xx_in_postgrests_shape(client: Client, select: str, code: str | None) -> None:
    table = "agg_projects" if select.startswith("name") else "agg_invoices"
    with pytest.raises(APIError) as caught:
        client.table(table).select(select).execute()
    assert code is None or caught.value.code == code, caught.value
    assert caught.value.message


def test_grouping_mistakes_are_the_databases_4xx(live: RunningServer) -> None:
    key = {"apikey": live.keys.publishable_key}
    ungrouped_order = httpx.get(f"{live.url}/rest/v1/agg_invoices?select=total.sum()&order=id", headers=key)
    assert ungrouped_order.status_code == 400 and ungrouped_order.json()["code"] == "42803"
    paged_spread = httpx.get(f"{live.url}/rest/v1/agg_clients?select=...agg_projects(name)&agg_projects.limit=1",
                             headers=key)
    assert paged_spread.status_code == 400 and paged_spread.json()["code"] == "PGRST100"


def test_aggregates_are_off_by_default(server_factory: Callable[..., RunningServer], live: RunningServer) -> None:
    server = server_factory(env={"GATEHOUSE_RATE_LIMITS_ENABLED": "false"})
    response = httpx.get(f"{server.url}/rest/v1/agg_invoices?select=count()",
                         headers={"apikey": server.keys.publishable_key})
    assert response.status_code == 400
    assert response.json()["code"] == "PGRST123"
    assert response.json()["message"] == "Use of aggregate functions is not allowed"
