"""Reads over the wire: select, filters, order, paging, counts, single objects, CSV, embeds, errors."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from openapi_spec_validator import validate

from tests.rest.conftest import Rest
from tests.support import RunningServer


def names(response: object) -> list[str]:
    return [row["name"] for row in response.json()]  # type: ignore[attr-defined]


def test_select_star_and_columns(anon: Rest) -> None:
    everything = anon.http.get("/countries", params={"order": "id"})
    assert everything.status_code == 200
    assert everything.headers["content-range"] == "0-4/*"
    assert set(everything.json()[0]) == {"id", "name", "code", "population", "tags", "meta", "created_at"}
    some = anon.http.get("/countries", params={"select": "name, country:code, pop:population::text", "id": "eq.1"})
    assert some.json() == [{"name": "France", "country": "FR", "pop": "68000000"}]


def test_json_paths(anon: Rest) -> None:
    response = anon.http.get("/countries", params={"select": "name,meta->>capital,first:meta->languages->0", "id": "eq.2"})
    assert response.json() == [{"name": "Germany", "capital": "Berlin", "first": "de"}]
    filtered = anon.http.get("/countries", params={"select": "name", "meta->>capital": "eq.Tokyo"})
    assert names(filtered) == ["Japan"]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"code": "eq.FR"}, ["France"]),
        ({"code": "neq.FR", "population": "not.is.null"}, ["Germany", "Japan", "Iceland"]),
        ({"population": "gt.84000000"}, ["Japan"]),
        ({"population": "gte.84000000"}, ["Germany", "Japan"]),
        ({"population": "lt.1000000"}, ["Iceland"]),
        ({"population": "lte.68000000"}, ["France", "Iceland"]),
        ({"name": "like.*an*"}, ["France", "Germany", "Japan", "Iceland", 'Nowhere, "Land"']),
        ({"name": "ilike.*LAND*"}, ["Iceland", 'Nowhere, "Land"']),
        ({"name": "match.^[FG]"}, ["France", "Germany"]),
        ({"name": "imatch.^j"}, ["Japan"]),
        ({"code": "is.null"}, ['Nowhere, "Land"']),
        ({"code": "not.is.null", "population": "lt.70000000"}, ["France", "Iceland"]),
        ({"code": "isdistinct.FR", "population": "gt.1000000"}, ["Germany", "Japan"]),
        ({"code": "in.(FR,JP)"}, ["France", "Japan"]),
        ({"name": 'in.("Nowhere, \\"Land\\"",France)'}, ["France", 'Nowhere, "Land"']),
        ({"code": "not.in.(FR,JP,DE)"}, ["Iceland"]),
        ({"tags": "cs.{euro}"}, ["France", "Germany"]),
        ({"tags": "cd.{europe,euro,asia}", "population": "not.is.null"}, ["France", "Germany", "Japan", "Iceland"]),
        ({"tags": "ov.{asia,nothing}"}, ["Japan"]),
        ({"meta": 'cs.{"capital":"Paris"}'}, ["France"]),
        ({"name": "fts.germany"}, ["Germany"]),
        ({"name": "plfts(english).iceland"}, ["Iceland"]),
        ({"name": "like(any).{F*,J*}"}, ["France", "Japan"]),
        ({"name": "like(all).{*a*,*e*}"}, ["France", "Germany", "Iceland", 'Nowhere, "Land"']),
        ({"or": "(code.eq.FR,code.eq.JP)"}, ["France", "Japan"]),
        ({"or": "(code.eq.FR,and(population.gt.100000000,code.eq.JP))"}, ["France", "Japan"]),
        ({"not.or": "(code.eq.FR,code.is.null)", "population": "gt.1000000"}, ["Germany", "Japan"]),
        ({"and": "(tags.cs.{europe},code.not.eq.IS)"}, ["France", "Germany"]),
        ({"or": '(name.eq."Nowhere, \\"Land\\"",code.eq.DE)'}, ["Germany", 'Nowhere, "Land"']),
    ],
)
def test_filters(anon: Rest, params: dict[str, str], expected: list[str]) -> None:
    response = anon.http.get("/countries", params={"select": "name", "order": "id", **params})
    assert response.status_code == 200, response.text
    assert names(response) == expected


def test_order_and_nulls(anon: Rest) -> None:
    first = anon.http.get("/countries", params={"select": "name", "order": "population.desc.nullsfirst"})
    assert names(first) == ['Nowhere, "Land"', "Japan", "Germany", "France", "Iceland"]
    last = anon.http.get("/countries", params={"select": "name", "order": "code.asc.nullslast,name"})
    assert names(last)[-1] == 'Nowhere, "Land"'


def test_paging_with_counts(anon: Rest) -> None:
    page = anon.http.get("/countries", params={"select": "name", "order": "id", "limit": "2", "offset": "1"},
                         headers={"Prefer": "count=exact"})
    assert page.status_code == 206
    assert page.headers["content-range"] == "1-2/5"
    assert names(page) == ["Germany", "Japan"]
    ranged = anon.http.get("/countries", params={"select": "name", "order": "id"}, headers={"Range": "3-10"})
    assert names(ranged) == ["Iceland", 'Nowhere, "Land"'] and ranged.headers["content-range"] == "3-4/*"
    none = anon.http.get("/countries", params={"id": "eq.999"}, headers={"Prefer": "count=exact"})
    assert none.status_code == 200 and none.headers["content-range"] == "*/0" and none.json() == []
    head = anon.http.head("/countries", headers={"Prefer": "count=exact"})
    assert head.status_code == 200 and head.headers["content-range"] == "0-4/5" and head.content == b""


def test_single_object(anon: Rest) -> None:
    accept = {"Accept": "application/vnd.pgrst.object+json"}
    one = anon.http.get("/countries", params={"select": "name", "code": "eq.JP"}, headers=accept)
    assert one.status_code == 200 and one.json() == {"name": "Japan"}
    for params, rows in (({"code": "eq.XX"}, 0), ({"tags": "cs.{euro}"}, 2)):
        refused = anon.http.get("/countries", params=params, headers=accept)
        assert refused.status_code == 406
        assert refused.json() == {
            "code": "PGRST116", "details": f"The result contains {rows} rows", "hint": None,
            "message": "Cannot coerce the result to a single JSON object",
        }


def test_csv(anon: Rest) -> None:
    response = anon.http.get("/countries", params={"select": "name,code,tags", "order": "id", "limit": "1"},
                             headers={"Accept": "text/csv"})
    assert response.headers["content-type"].startswith("text/csv")
    assert response.text == 'name,code,tags\nFrance,FR,"[""europe"",""euro""]"\n'


def test_embed_to_one_and_to_many(anon: Rest) -> None:
    cities = anon.http.get("/cities", params={"select": "name,countries(name)", "order": "id", "limit": "1"})
    assert cities.json() == [{"name": "Paris", "countries": {"name": "France"}}]
    orphan = anon.http.get("/cities", params={"select": "name,country:countries(name)", "name": "eq.Atlantis"})
    assert orphan.json() == [{"name": "Atlantis", "country": None}]
    countries = anon.http.get(
        "/countries",
        params={"select": "name,cities(name)", "id": "eq.1", "cities.order": "rank.desc", "cities.limit": "2"},
    )
    assert countries.json() == [{"name": "France", "cities": [{"name": "Lyon"}, {"name": "Marseille"}]}]
    by_fk_column = anon.http.get("/cities", params={"select": "name,country_id(code)", "id": "eq.4"})
    assert by_fk_column.json() == [{"name": "Berlin", "country_id": {"code": "DE"}}]


def test_embed_filters_and_inner_join(anon: Rest) -> None:
    params = {"select": "name,cities(name)", "cities.rank": "eq.1", "order": "id", "population": "gt.80000000"}
    assert anon.http.get("/countries", params=params).json() == [
        {"name": "Germany", "cities": [{"name": "Berlin"}]}, {"name": "Japan", "cities": [{"name": "Tokyo"}]},
    ]
    inner = anon.http.get("/countries", params={"select": "name,cities!inner(name)", "cities.name": "eq.Lyon"})
    assert inner.json() == [{"name": "France", "cities": [{"name": "Lyon"}]}]


@pytest.mark.parametrize(
    ("path", "params", "status", "code"),
    [
        ("/nowhere", {}, 404, "PGRST205"),
        ("/countries", {"select": "id,nope"}, 400, "42703"),
        ("/countries", {"nope": "eq.1"}, 400, "42703"),
        ("/countries", {"order": "nope.desc"}, 400, "42703"),
        ("/countries", {"id": "eqq.1"}, 400, "PGRST100"),
        ("/countries", {"id": "eq.abc"}, 400, "22P02"),
        ("/countries", {"select": "name,planets(*)"}, 400, "PGRST200"),
        ("/countries", {"limit": "-1"}, 400, "PGRST100"),
        ("/countries", {"select": "id::text;drop table x"}, 400, "PGRST100"),
        ("/countries", {"or": "(id.eq.1"}, 400, "PGRST100"),
        ("/countries", {"planets.id": "eq.1", "select": "*"}, 400, "PGRST108"),
    ],
)
def test_errors_are_postgrest_shaped(anon: Rest, path: str, params: dict[str, str], status: int, code: str) -> None:
    response = anon.http.get(path, params=params)
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code and body["message"] and set(body) == {"code", "details", "hint", "message"}


def test_schema_profiles(anon: Rest) -> None:
    assert anon.http.get("/countries", headers={"Accept-Profile": "public"}).status_code == 200
    refused = anon.http.get("/countries", headers={"Accept-Profile": "auth"})
    assert refused.status_code == 406 and refused.json()["code"] == "PGRST106"


def test_unacceptable_media_type(anon: Rest) -> None:
    response = anon.http.get("/countries", headers={"Accept": "image/png"})
    assert response.status_code == 406 and response.json()["code"] == "PGRST107"


def test_openapi_lists_the_tables(anon: Rest) -> None:
    document = anon.http.get("/").json()
    assert document["openapi"].startswith("3.")
    assert {"/countries", "/cities", "/profiles", "/rpc/add"} <= set(document["paths"])


def test_max_rows_is_enforced(anon: Rest) -> None:
    response = anon.http.get("/countries", params={"limit": "100000"})
    assert len(response.json()) == 5


async def test_schema_cache_reloads_on_notify_and_on_sighup(anon: Rest, db: object) -> None:
    import os
    import signal
    import time

    from gatehouse.core.db import Database

    assert isinstance(db, Database)
    assert anon.http.get("/late_table").status_code == 404
    await db.admin.execute("CREATE TABLE public.late_table (id int); GRANT SELECT ON public.late_table TO anon")
    assert anon.http.get("/late_table").status_code == 404  # the cache is not read per request
    await db.admin.execute("NOTIFY gatehouse_schema, 'reload'")
    deadline = time.monotonic() + 10
    while anon.http.get("/late_table").status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.05)

    await db.admin.execute("CREATE TABLE public.later_table (id int); GRANT SELECT ON public.later_table TO anon")
    assert anon.http.get("/later_table").status_code == 404
    os.kill(anon.server.process.pid, signal.SIGHUP)
    deadline = time.monotonic() + 10
    while anon.http.get("/later_table").status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.05)


async def test_a_remembered_read_is_planned_again_after_a_schema_change(anon: Rest, db: object) -> None:
    """Reads are remembered per query string; a reloaded schema cache starts afresh."""
    import time

    from gatehouse.core.db import Database

    assert isinstance(db, Database)
    await db.admin.execute("CREATE TABLE public.reshaped (id int); GRANT SELECT ON public.reshaped TO anon;"
                           "INSERT INTO public.reshaped VALUES (1)")
    await db.admin.execute("NOTIFY gatehouse_schema, 'reload'")
    deadline = time.monotonic() + 10
    while anon.http.get("/reshaped?id=eq.1").status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert anon.http.get("/reshaped?id=eq.1").json() == [{"id": 1}]
    await db.admin.execute("ALTER TABLE public.reshaped ADD COLUMN label text DEFAULT 'new'")
    await db.admin.execute("NOTIFY gatehouse_schema, 'reload'")
    while anon.http.get("/reshaped?id=eq.1").json() != [{"id": 1, "label": "new"}]:
        assert time.monotonic() < deadline
        time.sleep(0.05)


async def test_openapi_follows_the_callers_privileges(
    anon: Rest, service: Rest, user_factory: Callable[[], tuple[Rest, dict[str, object]]], db: object
) -> None:
    """As PostgREST's follow-privileges: only what the role may use, operations per privilege."""
    import time

    from gatehouse.core.db import Database

    assert isinstance(db, Database)
    await db.admin.execute("""
        CREATE TABLE public.staff_only (id int PRIMARY KEY, note text);
        GRANT SELECT, INSERT ON public.staff_only TO authenticated;
        GRANT ALL ON public.staff_only TO service_role;
        CREATE TABLE public.column_granted (id int PRIMARY KEY, shown text, kept text);
        GRANT SELECT (id, shown) ON public.column_granted TO anon;
        CREATE FUNCTION public.staff_secret() RETURNS int LANGUAGE sql AS 'SELECT 1';
        REVOKE EXECUTE ON FUNCTION public.staff_secret() FROM PUBLIC;
        GRANT EXECUTE ON FUNCTION public.staff_secret() TO service_role;
        CREATE FUNCTION public.overloaded(a int) RETURNS int LANGUAGE sql AS 'SELECT a';
        CREATE FUNCTION public.overloaded(a text) RETURNS text LANGUAGE sql AS 'SELECT a';
        REVOKE EXECUTE ON FUNCTION public.overloaded(text) FROM PUBLIC;
        NOTIFY gatehouse_schema, 'reload';
    """)
    deadline = time.monotonic() + 10
    while "/staff_only" not in service.http.get("/").json()["paths"]:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    user, _ = user_factory()
    documents = {name: client.http.get("/").json() for name, client in
                 (("anon", anon), ("user", user), ("service", service))}
    paths = {name: document["paths"] for name, document in documents.items()}

    assert "/staff_only" not in paths["anon"] and "StaffOnly" not in str(documents["anon"]["components"]["schemas"])
    assert "staff_only" not in documents["anon"]["components"]["schemas"]
    assert "/rpc/staff_secret" not in paths["anon"] and "/rpc/staff_secret" not in paths["user"]
    assert set(paths["user"]["/staff_only"]) == {"get", "post"}
    assert set(paths["service"]["/staff_only"]) == {"get", "post", "patch", "delete"}
    assert "/rpc/staff_secret" in paths["service"]
    assert set(paths["anon"]["/countries"]) == {"get"}  # SELECT only
    assert set(paths["user"]["/countries"]) == {"get", "post", "patch", "delete"}
    assert set(paths["anon"]["/column_granted"]) == {"get"}  # a column grant is enough to read
    assert "/column_granted" not in paths["user"]
    assert "/rpc/add" in paths["anon"]  # EXECUTE to PUBLIC, PostgreSQL's default
    overload = paths["anon"]["/rpc/overloaded"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert overload["properties"]["a"]["type"] == "integer"  # the text overload is not the anon's to call
    assert {"/staff_only", "/rpc/staff_secret"} <= set(paths["service"]) - set(paths["anon"])
    for table in ("/countries", "/cities", "/notes"):  # granted to both: anon may do less
        assert set(paths["anon"][table]) < set(paths["service"][table])
    for document in documents.values():
        validate(document)


def test_array_media_type_and_stripped_nulls_over_http(anon: Rest) -> None:
    """``application/vnd.pgrst.array+json`` is plain JSON rows; with ``;nulls=stripped`` the keys
    whose value is null go (``json_strip_nulls``). ``nulls=stripped`` on another media type is not
    PostgREST's and is not taken."""
    params = {"select": "name,nothing:meta->>no_such_key,meta", "id": "eq.2"}
    plain = anon.http.get("/countries", params=params, headers={"Accept": "application/vnd.pgrst.array+json"})
    assert plain.status_code == 200, plain.text
    assert plain.headers["content-type"].startswith("application/vnd.pgrst.array+json")
    assert plain.json()[0]["nothing"] is None
    stripped = anon.http.get("/countries", params=params,
                             headers={"Accept": "application/vnd.pgrst.array+json;nulls=stripped"})
    assert stripped.headers["content-type"].startswith("application/vnd.pgrst.array+json;nulls=stripped")
    assert "nothing" not in stripped.json()[0] and stripped.json()[0]["name"] == "Germany"
    one = anon.http.get("/countries", params=params,
                        headers={"Accept": "application/vnd.pgrst.object+json;nulls=stripped"})
    assert one.status_code == 200 and "nothing" not in one.json() and one.json()["name"] == "Germany"
    refused = anon.http.get("/countries", headers={"Accept": "text/csv;nulls=stripped"})
    assert refused.status_code == 406 and refused.json()["code"] == "PGRST107"


@pytest.mark.parametrize("prefer", [
    "handling=strict, foo=bar", "handling=strict, return=everything", "handling=strict, tx=rollback",
    "handling=strict,count=exact,params=multiple-objects",
])
def test_strict_handling_refuses_unknown_preferences(anon: Rest, prefer: str) -> None:
    refused = anon.http.get("/countries", headers={"Prefer": prefer})
    assert refused.status_code == 400, refused.text
    body = refused.json()
    assert body["code"] == "PGRST122" and body["message"] == "Invalid preferences given with handling=strict"
    assert body["details"].startswith("Invalid preferences: ")


def test_lenient_handling_ignores_unknown_preferences(anon: Rest) -> None:
    for prefer in ("foo=bar", "handling=lenient, foo=bar", "handling=strict, count=exact, return=minimal"):
        answered = anon.http.get("/countries", params={"limit": "1"}, headers={"Prefer": prefer})
        assert answered.status_code in (200, 206), (prefer, answered.text)


def test_filtering_on_an_embeds_presence(anon: Rest) -> None:
    """``cities=not.is.null`` keeps the countries that have a city (with the embed's own filters),
    ``cities=is.null`` those that have none; also inside ``or``; and on a to-one embed."""
    def countries(**params: str) -> list[str]:
        answer = anon.http.get("/countries", params={"select": "name,cities(name)", "order": "id", **params})
        assert answer.status_code == 200, answer.text
        return names(answer)

    assert countries(cities="not.is.null") == ["France", "Germany", "Japan"]
    assert countries(cities="is.null") == ["Iceland", 'Nowhere, "Land"']
    assert countries(cities="not.is.null", **{"cities.name": "eq.Lyon"}) == ["France"]
    assert countries(**{"or": "(cities.not.is.null,code.eq.IS)"}) == ["France", "Germany", "Japan", "Iceland"]
    to_one = anon.http.get("/cities", params={"select": "name,countries(name)", "countries": "is.null"})
    assert [row["name"] for row in to_one.json()] == ["Atlantis"]
    wrong = anon.http.get("/countries", params={"select": "name,cities(name)", "cities": "eq.1"})
    assert wrong.status_code == 400 and wrong.json()["code"] == "PGRST100"


def test_embed_presence_through_supabase_py(rest_server: RunningServer) -> None:
    """postgrest-py's ``not_.is_("cities", "null")`` and ``is_("cities", "null")``, unmodified."""
    from supabase import create_client

    supabase = create_client(rest_server.url, rest_server.keys.publishable_key)
    try:
        having = (supabase.from_("countries").select("name, cities(name)").not_.is_("cities", "null")
                  .order("id").execute())
        assert [row["name"] for row in having.data] == ["France", "Germany", "Japan"]
        lacking = supabase.from_("countries").select("name, cities(name)").is_("cities", "null").order("id").execute()
        assert [row["name"] for row in lacking.data] == ["Iceland", 'Nowhere, "Land"']
    finally:
        supabase.postgrest.session.close()
        supabase.auth.close()


def test_ordering_by_a_to_one_embeds_column(anon: Rest) -> None:
    """``order=countries(name).desc`` on cities: the related country's name decides; a to-many
    embed cannot order its parent (PGRST118), and the embed must be selected (PGRST108)."""
    answer = anon.http.get("/cities", params={"select": "name,countries(name)", "order": "countries(name).desc,name",
                                              "country_id": "not.is.null"})
    assert answer.status_code == 200, answer.text
    assert names(answer) == ["Tokyo", "Berlin", "Lyon", "Marseille", "Paris"]
    nulls = anon.http.get("/cities", params={"select": "name,countries(name)",
                                             "order": "countries(name).asc.nullsfirst,name"})
    assert names(nulls)[0] == "Atlantis"
    many = anon.http.get("/countries", params={"select": "name,cities(name)", "order": "cities(name)"})
    assert many.status_code == 400 and many.json()["code"] == "PGRST118"
    missing = anon.http.get("/cities", params={"select": "name", "order": "countries(name)"})
    assert missing.status_code == 400 and missing.json()["code"] == "PGRST108"
