"""The SQL generator renders a plan as one statement: names quoted, every value bound in ``$1``.

No database: plans come from the planner over the hand-built cache in ``tests/rest/catalog.py``,
and the assertions are on the statement's text and its bound values. ``$1`` is a JSON array;
``($1::jsonb->>n)`` reads its n-th item back as text.
"""

from __future__ import annotations

from typing import Any

import pytest

from gatehouse.rest import plan as p
from gatehouse.rest import sqlgen
from gatehouse.rest.api import Prefer
from tests.rest.catalog import CACHE, parse, planner

# -- helpers -----------------------------------------------------------------------------------------


def read(query_string: str = "", table: str = "countries", **options: Any) -> tuple[str, list[Any]]:
    pl = planner()
    node = pl.read(pl.table(table), parse(query_string))
    params = sqlgen.Params()
    return sqlgen.read_sql(node, params, **options), params.values


def where(query_string: str, table: str = "countries") -> tuple[str, list[Any]]:
    """The top level's WHERE clause (the planner's first alias is ``_t0``) and the values it binds."""
    sql, values = read(query_string, table)
    rows = sql.split(f' FROM "public"."{table}" AS "_t0" WHERE ', 1)[1]
    return rows.removesuffix(") AS _r"), values


def write(kind: str, query_string: str = "", body: Any = None, *, table: str = "countries", resolution: str | None = None,
          missing_default: bool = False, returning: bool = False, **options: Any) -> tuple[str, list[Any]]:
    pl = planner()
    info, query = pl.table(table), parse(query_string)
    if kind == "insert":
        plan = pl.insert(info, query, body, resolution=resolution, missing_default=missing_default, returning=returning)
    elif kind == "update":
        plan = pl.update(info, query, body, returning=returning)
    else:
        plan = pl.delete(info, query, returning=returning)
    params = sqlgen.Params()
    return sqlgen.write_sql(plan, params, **options), params.values


def call(name: str, args: dict[str, Any], query_string: str = "", *, whole_body: Any = None,
         **options: Any) -> tuple[str, list[Any]]:
    plan = planner().call(name, args, parse(query_string), whole_body=whole_body)
    params = sqlgen.Params()
    return sqlgen.call_sql(plan, params, **options), params.values


def v(n: int) -> str:
    """Bound value ``n`` as text."""
    return f"($1::jsonb->>{n})"


# -- names and values ------------------------------------------------------------------------------------


def test_identifiers_are_double_quoted_with_quotes_doubled() -> None:
    assert sqlgen.ident("name") == '"name"'
    assert sqlgen.ident('we"ird') == '"we""ird"'
    assert sqlgen.qualified("public", 'odd "names"') == '"public"."odd ""names"""'
    sql, _ = read(r'select="we\"ird"&order="we\"ird"', 'odd "names"')
    assert sql.count('"_t0"."we""ird"') == 2 and 'AS "we""ird"' in sql and 'FROM "public"."odd ""names""" AS "_t0"' in sql


def test_params_bind_each_value_and_read_it_back() -> None:
    params = sqlgen.Params()
    assert params.text("a") == v(0)
    assert params.typed("1", "integer") == f"({v(1)})::integer"
    assert params.typed(None, "date") == "NULL::date"  # no value bound for NULL
    assert params.array(["x", "y"], "text") == "(ARRAY(SELECT jsonb_array_elements_text($1::jsonb->2)))::text[]"
    assert params.json({"k": 1}) == "($1::jsonb->3)"
    assert params.integer(7) == f"({v(4)})::bigint"
    assert params.values == ["a", "1", ["x", "y"], {"k": 1}, "7"]


def test_values_never_reach_the_statement_text() -> None:
    evil = "x'; DROP TABLE countries; --"
    sql, values = read(f"select=name&name=eq.{evil}&or=(code.like.{evil}*,name.in.(\"{evil}\"))")
    assert "DROP" not in sql
    assert values == [evil, evil.replace("*", "%") + "%", [evil]]


# -- filters -----------------------------------------------------------------------------------------------

FILTERS = [
    # (query string, table, WHERE clause, bound values)
    ("name=eq.France", "countries", f'("_t0"."name" = ({v(0)})::text)', ["France"]),
    ("name=neq.France", "countries", f'("_t0"."name" <> ({v(0)})::text)', ["France"]),
    ("population=gt.5", "countries", f'("_t0"."population" > ({v(0)})::bigint)', ["5"]),
    ("population=gte.5", "countries", f'("_t0"."population" >= ({v(0)})::bigint)', ["5"]),
    ("population=lt.5", "countries", f'("_t0"."population" < ({v(0)})::bigint)', ["5"]),
    ("population=lte.5", "countries", f'("_t0"."population" <= ({v(0)})::bigint)', ["5"]),
    ("name=not.eq.France", "countries", f'NOT ("_t0"."name" = ({v(0)})::text)', ["France"]),
    ("name=isdistinct.x", "countries", f'("_t0"."name" IS DISTINCT FROM ({v(0)})::text)', ["x"]),
    # like/ilike: * is the wildcard, compared as text; match/imatch: a regular expression
    ("name=like.*an*", "countries", f'("_t0"."name" LIKE {v(0)})', ["%an%"]),
    ("name=ilike.FR*", "countries", f'("_t0"."name" ILIKE {v(0)})', ["FR%"]),
    ("name=not.like.A*", "countries", f'NOT ("_t0"."name" LIKE {v(0)})', ["A%"]),
    ("name=match.^F", "countries", f'("_t0"."name" ~ {v(0)})', ["^F"]),
    ("name=imatch.^f", "countries", f'("_t0"."name" ~* {v(0)})', ["^f"]),
    # is: a keyword, nothing bound
    ("population=is.null", "countries", '("_t0"."population" IS NULL)', []),
    ("population=not.is.null", "countries", 'NOT ("_t0"."population" IS NULL)', []),
    ("name=is.unknown", "countries", '("_t0"."name" IS UNKNOWN)', []),
    ("name=is.true", "countries", '("_t0"."name" IS TRUE)', []),
    ("name=is.false", "countries", '("_t0"."name" IS FALSE)', []),
    # in and quantified operators: one JSON array, cast to the column's array type
    ("id=in.(1,2)", "countries",
     '("_t0"."id" = ANY((ARRAY(SELECT jsonb_array_elements_text($1::jsonb->0)))::integer[]))', [["1", "2"]]),
    ("id=not.in.(1)", "countries",
     'NOT ("_t0"."id" = ANY((ARRAY(SELECT jsonb_array_elements_text($1::jsonb->0)))::integer[]))', [["1"]]),
    ("name=like(any).{a*,*b}", "countries",
     '("_t0"."name" LIKE ANY((ARRAY(SELECT jsonb_array_elements_text($1::jsonb->0)))::text[]))', [["a%", "%b"]]),
    ("population=gt(all).{1,2}", "countries",
     '("_t0"."population" > ALL((ARRAY(SELECT jsonb_array_elements_text($1::jsonb->0)))::bigint[]))', [["1", "2"]]),
    # full text search, with and without a language
    ("search=fts.cat", "documents", f'("_t0"."search" @@ to_tsquery({v(0)}))', ["cat"]),
    ("search=plfts(english).fat cats", "documents",
     f'("_t0"."search" @@ plainto_tsquery({v(0)}::regconfig, {v(1)}))', ["english", "fat cats"]),
    ("search=phfts.fat cats", "documents", f'("_t0"."search" @@ phraseto_tsquery({v(0)}))', ["fat cats"]),
    ("search=not.wfts(simple).cat -dog", "documents",
     f'NOT ("_t0"."search" @@ websearch_to_tsquery({v(0)}::regconfig, {v(1)}))', ["simple", "cat -dog"]),
    # arrays and ranges: the value is a literal of the column's type
    ("tags=cs.{a,b}", "documents", f'("_t0"."tags" @> ({v(0)})::text[])', ["{a,b}"]),
    ("tags=cd.{a,b}", "documents", f'("_t0"."tags" <@ ({v(0)})::text[])', ["{a,b}"]),
    ("tags=ov.{a,b}", "documents", f'("_t0"."tags" && ({v(0)})::text[])', ["{a,b}"]),
    ("during=sl.[1,2)", "documents", f'("_t0"."during" << ({v(0)})::tstzrange)', ["[1,2)"]),
    ("during=sr.[1,2)", "documents", f'("_t0"."during" >> ({v(0)})::tstzrange)', ["[1,2)"]),
    ("during=nxl.[1,2)", "documents", f'("_t0"."during" &> ({v(0)})::tstzrange)', ["[1,2)"]),
    ("during=nxr.[1,2)", "documents", f'("_t0"."during" &< ({v(0)})::tstzrange)', ["[1,2)"]),
    ("during=adj.[1,2)", "documents", f'("_t0"."during" -|- ({v(0)})::tstzrange)', ["[1,2)"]),
    # JSON paths: keys are bound too, array indexes are literal integers; ->> compares as text
    ("data->a->>b=eq.x", "documents", f'((("_t0"."data"->{v(0)})->>{v(1)}) = ({v(2)})::text)', ["a", "b", "x"]),
    ("data->list->0=eq.1", "documents", f'((("_t0"."data"->{v(0)})->0) = ({v(1)})::jsonb)', ["list", "1"]),
    ("data->>n=gt.2", "documents", f'(("_t0"."data"->>{v(0)}) > ({v(1)})::text)', ["n", "2"]),
]


@pytest.mark.parametrize(("query_string", "table", "sql", "values"), FILTERS)
def test_filters(query_string: str, table: str, sql: str, values: list[Any]) -> None:
    assert where(query_string, table) == (sql, values)


def test_filters_on_one_level_are_joined_by_and() -> None:
    assert where("id=gt.1&id=lt.9") == (f'("_t0"."id" > ({v(0)})::integer) AND ("_t0"."id" < ({v(1)})::integer)',
                                        ["1", "9"])


def test_logic_trees() -> None:
    sql, values = where("or=(name.eq.a,not.and(population.gt.1,code.is.null))&not.or=(id.eq.1,id.eq.2)")
    assert sql == (
        f'(("_t0"."name" = ({v(0)})::text) OR NOT (("_t0"."population" > ({v(1)})::bigint) AND ("_t0"."code" IS NULL)))'
        f' AND NOT (("_t0"."id" = ({v(2)})::integer) OR ("_t0"."id" = ({v(3)})::integer))'
    )
    assert values == ["a", "1", "1", "2"]


def test_empty_logic_groups_are_their_identity() -> None:
    params = sqlgen.Params()
    assert sqlgen.condition_sql(p.PLogic("and", ()), params) == "(TRUE)"
    assert sqlgen.condition_sql(p.PLogic("or", ()), params) == "(FALSE)"
    assert sqlgen.condition_sql(p.PLogic("or", (), negated=True), params) == "NOT (FALSE)"


# -- reads ---------------------------------------------------------------------------------------------------


def test_the_simplest_read() -> None:
    sql, values = read()
    assert sql == (
        "SELECT coalesce(json_agg(_r), '[]')::text AS body, count(*) AS page_count, NULL::bigint AS total"
        ' FROM (SELECT "_t0".* FROM "public"."countries" AS "_t0") AS _r'
    )
    assert values == []


def test_select_aliases_and_casts() -> None:
    sql, values = read("select=nom:body,id::text,b:data->a->>b", "documents")
    assert sql == (
        "SELECT coalesce(json_agg(_r), '[]')::text AS body, count(*) AS page_count, NULL::bigint AS total FROM (SELECT "
        f'"_t0"."body" AS "nom", ("_t0"."id")::text AS "id", (("_t0"."data"->{v(0)})->>{v(1)}) AS "b"'
        ' FROM "public"."documents" AS "_t0") AS _r'
    )
    assert values == ["a", "b"]


def test_order_limit_and_offset() -> None:
    sql, values = read("order=name.desc.nullslast,id,population.asc.nullsfirst&limit=5&offset=10")
    assert sql.endswith(
        ' ORDER BY "_t0"."name" DESC NULLS LAST, "_t0"."id", "_t0"."population" ASC NULLS FIRST'
        f" LIMIT ({v(0)})::bigint OFFSET ({v(1)})::bigint) AS _r"
    )
    assert values == ["5", "10"]
    assert "OFFSET" not in read("offset=0")[0] and "LIMIT" not in read("offset=0")[0]


def test_single_object_and_count() -> None:
    single, _ = read("id=eq.1", single=True)
    assert single.startswith("SELECT (json_agg(_r)->>0) AS body, count(*) AS page_count, NULL::bigint AS total FROM")
    counted, values = read("id=gt.1&limit=2", count=True)
    # the total counts the same filters, without the page: the WHERE is rendered once and reused
    assert f'(SELECT count(*) FROM "public"."countries" AS "_t0" WHERE ("_t0"."id" > ({v(0)})::integer)) AS total' \
        in counted
    assert values == ["1", "2"]


@pytest.mark.parametrize(("prefer", "counted"), [("exact", True), ("planned", True), ("estimated", True),
                                                 ("none", False), (None, False)])
def test_count_modes(prefer: str | None, counted: bool) -> None:
    """Every count PostgREST knows is answered with an exact count; anything else with none."""
    count = Prefer({} if prefer is None else {"count": prefer}).count
    sql, _ = read(count=count)
    assert ("(SELECT count(*) FROM" in sql) == counted and ("NULL::bigint AS total" in sql) != counted


def test_to_many_embed_with_its_own_filters_order_and_page() -> None:
    sql, values = read("select=name,cities(name)&cities.founded=lt.1900-01-01&cities.order=name&cities.limit=3")
    assert (
        '(SELECT coalesce(json_agg(_e), \'[]\') FROM (SELECT "_t1"."name" AS "name" FROM "public"."cities" AS "_t1"'
        f' WHERE ("_t1"."founded" < ({v(0)})::date) AND "_t1"."country_id" = "_t0"."id"'
        f' ORDER BY "_t1"."name" LIMIT ({v(1)})::bigint) AS _e) AS "cities"'
    ) in sql
    assert values == ["1900-01-01", "3"]


def test_to_one_embed_is_one_object() -> None:
    sql, _ = read("select=name,land:countries(name)", "cities")
    assert (
        '(SELECT row_to_json(_e) FROM (SELECT "_t1"."name" AS "name" FROM "public"."countries" AS "_t1"'
        ' WHERE "_t1"."id" = "_t0"."country_id" LIMIT 1) AS _e) AS "land"'
    ) in sql


def test_inner_embeds_filter_the_parent() -> None:
    sql, values = read("select=name,cities!inner(name)&cities.name=eq.Lima")
    assert sql.endswith(
        f' WHERE EXISTS (SELECT 1 FROM "public"."cities" AS "_t1" WHERE ("_t1"."name" = ({v(1)})::text)'
        ' AND "_t1"."country_id" = "_t0"."id")) AS _r'
    )
    assert values == ["Lima", "Lima"]  # bound once in the embed, once in the EXISTS


def test_nested_embeds() -> None:
    sql, _ = read("select=name,born:cities!born_in(name,countries(code))", "people")
    assert '"_t2"."id" = "_t1"."country_id" LIMIT 1) AS _e) AS "countries"' in sql
    assert '"_t1"."id" = "_t0"."born_in" LIMIT 1) AS _e) AS "born"' in sql


# -- writes ----------------------------------------------------------------------------------------------------

NO_BODY = "SELECT NULL::text AS body, count(*) AS page_count, NULL::bigint AS total FROM _m"


def test_insert() -> None:
    rows = [{"code": "FR", "name": "France"}, {"name": "Peru"}]
    sql, values = write("insert", body=rows)
    assert sql == (
        'WITH _m0 AS (INSERT INTO "public"."countries" AS "_w" ("code", "name") SELECT "code", "name"'
        ' FROM jsonb_to_recordset(($1::jsonb->0)) AS _b("code" character(2), "name" text) RETURNING 1),'
        f" _m AS (SELECT * FROM _m0) {NO_BODY}"
    )
    assert values == [rows]  # absent keys are NULL: one statement for every row


def test_insert_missing_default_groups_rows_by_their_keys() -> None:
    rows = [{"code": "FR", "name": "France"}, {"code": "PE"}, {"name": "Chile", "code": "CL"}, {}]
    sql, values = write("insert", body=rows, missing_default=True)
    assert values == [[rows[0], rows[2]], [rows[1]]]
    assert '_m0 AS (INSERT INTO "public"."countries" AS "_w" ("code", "name") SELECT "code", "name"' in sql
    assert '_m1 AS (INSERT INTO "public"."countries" AS "_w" ("code") SELECT "code" FROM jsonb_to_recordset(($1::jsonb->1))' \
        in sql
    assert '_m2 AS (INSERT INTO "public"."countries" AS "_w" DEFAULT VALUES RETURNING 1)' in sql  # {}: all defaults
    assert "_m AS (SELECT * FROM _m0 UNION ALL SELECT * FROM _m1 UNION ALL SELECT * FROM _m2)" in sql


def test_upserts() -> None:
    rows = [{"id": 1, "code": "FR", "name": "France"}]
    merge, _ = write("insert", body=rows, resolution="merge-duplicates")
    assert ' ON CONFLICT ("id") DO UPDATE SET "code" = EXCLUDED."code", "name" = EXCLUDED."name" RETURNING 1' in merge
    ignore, _ = write("insert", body=rows, resolution="ignore-duplicates")
    assert ' ON CONFLICT ("id") DO NOTHING RETURNING 1' in ignore
    on_code, _ = write("insert", "on_conflict=code", [{"code": "FR"}], resolution="merge-duplicates")
    assert ' ON CONFLICT ("code") DO NOTHING RETURNING 1' in on_code  # nothing left to update
    plain, _ = write("insert", "on_conflict=code", rows)
    assert "ON CONFLICT" not in plain


def test_insert_returning_reads_the_written_rows() -> None:
    sql, _ = write("insert", "select=id,name", [{"name": "x"}], returning=True, single=True)
    assert 'RETURNING "_w".*), _m AS (SELECT * FROM _m0) SELECT (json_agg(_r)->>0) AS body' in sql
    assert sql.endswith('FROM (SELECT "_t0"."id" AS "id", "_t0"."name" AS "name" FROM _m AS "_t0") AS _r')


def test_update() -> None:
    sql, values = write("update", "code=eq.FR", {"name": "France", "population": 1})
    assert sql == (
        'WITH _m AS (UPDATE "public"."countries" AS "_t0" SET "name" = _b."name", "population" = _b."population"'
        ' FROM jsonb_to_record(($1::jsonb->0)) AS _b("name" text, "population" bigint)'
        f' WHERE ("_t0"."code" = ({v(1)})::character(2)) RETURNING 1) {NO_BODY}'
    )
    assert values == [{"name": "France", "population": 1}, "FR"]  # the body first, then the filters


def test_delete() -> None:
    sql, values = write("delete", "or=(id.eq.1,name.is.null)")
    assert sql == (
        'WITH _m AS (DELETE FROM "public"."countries" AS "_t0"'
        f' WHERE (("_t0"."id" = ({v(0)})::integer) OR ("_t0"."name" IS NULL)) RETURNING 1) {NO_BODY}'
    )
    assert values == ["1"]
    unfiltered, _ = write("delete")
    assert unfiltered == f'WITH _m AS (DELETE FROM "public"."countries" AS "_t0" RETURNING 1) {NO_BODY}'


def test_delete_returning() -> None:
    sql, _ = write("delete", "id=eq.1", returning=True)
    assert 'RETURNING "_t0".*) SELECT coalesce(json_agg(_r), \'[]\')::text AS body' in sql
    assert sql.endswith('FROM (SELECT "_t1".* FROM _m AS "_t1") AS _r')


def test_max_affected_guards_the_whole_statement() -> None:
    sql, _ = write("delete", "id=gt.1", max_affected=3)
    assert sql.startswith('WITH _m AS (DELETE FROM "public"."countries" AS "_t0" WHERE')
    assert sql.endswith(
        f", _w AS ({NO_BODY}) SELECT body, page_count, total FROM _w"
        " WHERE gatehouse.max_affected((SELECT count(*) FROM _m), 3)"
    )


# -- functions -------------------------------------------------------------------------------------------------

SCALAR = "1::bigint AS page_count, NULL::bigint AS total"


def test_named_arguments_are_bound_as_text_and_cast() -> None:
    assert call("add", {"a": 1, "b": 2.5}) == (
        f'SELECT to_json("public"."add"("a" := ({v(0)})::integer, "b" := ({v(1)})::integer))::text AS body, {SCALAR}',
        ["1", "2.5"],
    )


@pytest.mark.parametrize(
    ("value", "bound"),
    [("text", "text"), (True, "true"), (False, "false"), (3, "3"), (0.5, "0.5"), ({"k": [1]}, '{"k":[1]}'),
     ([1, 2], "[1,2]")],
)
def test_json_arguments_become_the_text_postgresql_parses(value: Any, bound: str) -> None:
    assert call("add", {"x": value})[1] == [bound]


def test_a_null_argument_is_a_typed_null() -> None:
    assert call("add", {"x": None}) == (f'SELECT to_json("public"."add"("x" := NULL::text))::text AS body, {SCALAR}', [])


def test_the_whole_body_as_one_json_argument() -> None:
    body = {"k": [1]}
    assert call("echo", body, whole_body=body) == (
        f'SELECT to_json("public"."echo"((($1::jsonb->0))::jsonb))::text AS body, {SCALAR}', [body],
    )


def test_void_and_set_returning_functions() -> None:
    assert call("touch", {})[0] == (
        'SELECT NULL::text AS body, 0::bigint AS page_count, NULL::bigint AS total FROM (SELECT "public"."touch"()) AS _v'
    )
    assert call("numbers", {})[0] == (
        "SELECT coalesce(json_agg(_v), '[]')::text AS body, count(*) AS page_count, NULL::bigint AS total"
        ' FROM "public"."numbers"() AS _v'
    )


def test_a_function_returning_table_rows_is_read_like_a_table() -> None:
    sql, values = call("big", {"min": 10}, "select=name&name=like.A*&order=name&limit=2", count=True)
    source = f'"public"."big"("min" := ({v(0)})::bigint) AS "_t0"'
    assert sql == (
        "SELECT coalesce(json_agg(_r), '[]')::text AS body, count(*) AS page_count,"
        f' (SELECT count(*) FROM {source} WHERE ("_t0"."name" LIKE {v(1)})) AS total'
        f' FROM (SELECT "_t0"."name" AS "name" FROM {source} WHERE ("_t0"."name" LIKE {v(1)})'
        f' ORDER BY "_t0"."name" LIMIT ({v(2)})::bigint) AS _r'
    )
    assert values == ["10", "A%", "2"]


def test_every_table_in_the_cache_reads() -> None:
    """A read of ``*`` renders for every exposed table, whatever its names."""
    for table in CACHE.tables("public"):
        sql, values = read("", table.name)
        assert sqlgen.qualified("public", table.name) in sql and values == []
