"""Data API answers supabase-py used to get wrong: range operators, counts on writes, max-affected."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from postgrest.exceptions import APIError
from supabase import Client, create_client

from gatehouse.core.db import Database
from tests.support import RunningServer

SCHEMA = """
CREATE TABLE public.slots (id int PRIMARY KEY, during int4range NOT NULL, label text);
GRANT SELECT, INSERT, UPDATE, DELETE ON public.slots TO anon;
INSERT INTO public.slots VALUES
    (1, '[1,5)', 'a'), (2, '[5,11)', 'b'), (3, '[12,15)', 'c'),
    (4, '[15,25)', 'd'), (5, '[20,30)', 'e'), (6, '[0,40)', 'f');
NOTIFY gatehouse_schema, 'reload';
"""


@pytest.fixture(scope="module")
async def slots(live: RunningServer, db: Database) -> None:
    await db.admin.execute(SCHEMA)
    deadline = time.monotonic() + 10
    key = {"apikey": live.keys.publishable_key}
    while httpx.get(f"{live.url}/rest/v1/slots", headers=key).status_code != 200:
        assert time.monotonic() < deadline, "the server never saw the test table"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def client(live: RunningServer, slots: None) -> Iterator[Client]:
    supabase = create_client(live.url, live.keys.publishable_key)
    yield supabase
    supabase.postgrest.session.close()
    supabase.auth.close()


def ids(response: object) -> list[int]:
    return sorted(row["id"] for row in response.data)  # type: ignore[attr-defined]


# The query range (10,20) is [11,20) once PostgreSQL makes it canonical. Each client method sends
# the operator PostgREST documents for it; the rows are what PostgreSQL's range operator keeps.
@pytest.mark.parametrize(
    ("method", "operator", "expected"),
    [
        ("range_gt", "sr: >>, strictly right of", [5]),
        ("range_gte", "nxl: &>, does not extend to the left of", [3, 4, 5]),
        ("range_lt", "sl: <<, strictly left of", [1, 2]),
        ("range_lte", "nxr: &<, does not extend to the right of", [1, 2, 3]),
        ("range_adjacent", "adj: -|-, adjacent to", [2, 5]),
    ],
)
def test_range_operators(client: Client, method: str, operator: str, expected: list[int]) -> None:
    query = getattr(client.table("slots").select("id"), method)("during", (10, 20))
    assert ids(query.execute()) == expected, operator


def test_range_overlaps_contains_and_contained_by(client: Client) -> None:
    assert ids(client.table("slots").select("id").overlaps("during", "[11,20)").execute()) == [3, 4, 6]  # &&
    assert ids(client.table("slots").select("id").contains("during", "[2,3)").execute()) == [1, 6]  # @>
    assert ids(client.table("slots").select("id").contained_by("during", "[0,12)").execute()) == [1, 2]  # <@
    assert ids(client.table("slots").select("id").eq("during", "[12,15)").execute()) == [3]
    assert ids(client.table("slots").select("id").neq("during", "[12,15)").execute()) == [1, 2, 4, 5, 6]


def test_counts_on_writes(client: Client) -> None:
    inserted = client.table("slots").insert(
        [{"id": 100, "during": "[100,101)"}, {"id": 101, "during": "[101,102)"}], count="exact"
    ).execute()
    assert inserted.count == 2 and ids(inserted) == [100, 101]
    updated = client.table("slots").update({"label": "x"}, count="exact").gte("id", 100).execute()
    assert updated.count == 2 and {row["label"] for row in updated.data} == {"x"}
    minimal = client.table("slots").update({"label": "y"}, count="exact", returning="minimal").gte("id", 100).execute()
    assert minimal.count == 2
    deleted = client.table("slots").delete(count="exact").gte("id", 100).execute()
    assert deleted.count == 2
    nothing = client.table("slots").delete(count="exact").gte("id", 100).execute()
    assert nothing.count == 0


def test_max_affected_refuses_and_keeps_nothing(client: Client) -> None:
    with pytest.raises(APIError) as refused:
        client.table("slots").update({"label": "too many"}).in_("id", [1, 2]).max_affected(1).execute()
    assert refused.value.code == "PGRST124"
    assert refused.value.details == "The query affects 2 rows"
    labels = client.table("slots").select("label").in_("id", [1, 2]).order("id").execute()
    assert [row["label"] for row in labels.data] == ["a", "b"]  # rolled back

    with pytest.raises(APIError) as refused_delete:
        client.table("slots").delete().in_("id", [1, 2]).max_affected(1).execute()
    assert refused_delete.value.code == "PGRST124"
    assert ids(client.table("slots").select("id").in_("id", [1, 2]).execute()) == [1, 2]

    within = client.table("slots").update({"label": "ok"}).in_("id", [1, 2]).max_affected(2).execute()
    assert sorted(row["label"] for row in within.data) == ["ok", "ok"]
    client.table("slots").update({"label": "a"}).eq("id", 1).execute()
    client.table("slots").update({"label": "b"}).eq("id", 2).execute()


def test_max_affected_needs_strict_handling(live: RunningServer, slots: None) -> None:
    headers = {"apikey": live.keys.publishable_key, "Prefer": "max-affected=1, return=minimal"}
    lenient = httpx.patch(f"{live.url}/rest/v1/slots", params={"id": "in.(1,2)"}, json={"label": "z"}, headers=headers)
    assert lenient.status_code == 204  # PostgREST ignores max-affected without handling=strict
    strict = {**headers, "Prefer": "max-affected=1, handling=strict"}
    bad = httpx.patch(f"{live.url}/rest/v1/slots", params={"id": "in.(1,2)"}, json={"label": "z"},
                      headers={**strict, "Prefer": "max-affected=one, handling=strict"})
    assert bad.status_code == 400 and bad.json()["code"] == "PGRST100"
    httpx.patch(f"{live.url}/rest/v1/slots", params={"id": "eq.1"}, json={"label": "a"}, headers=headers)
    httpx.patch(f"{live.url}/rest/v1/slots", params={"id": "eq.2"}, json={"label": "b"}, headers=headers)
