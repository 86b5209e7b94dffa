"""The PostgREST query grammar: query string -> typed tree, no database."""

from __future__ import annotations

import string
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from postgrest import SyncPostgrestClient
from postgrest.utils import sanitize_array_param, sanitize_param

from gatehouse.rest.grammar import (
    MAX_DEPTH,
    GrammarError,
    parse_filter,
    parse_logic,
    parse_order,
    parse_query,
    parse_select,
)
from gatehouse.rest.query import (
    Aggregate,
    Column,
    Condition,
    Embed,
    Field,
    Filter,
    JsonStep,
    Logic,
    OrderTerm,
    Query,
    SelectItem,
    Shaping,
    Star,
)


def fld(name: str, *path: str | int) -> Field:
    """``fld("data", "->", "a", "->>", 0)`` is ``data->a->>0``."""
    steps = tuple(JsonStep(path[i], path[i + 1]) for i in range(0, len(path), 2))  # type: ignore[arg-type]
    return Field(name, steps)


def col(name: str, **kw: Any) -> Column:
    return Column(fld(name), **kw)


def flt(name: str, op: str, value: str | tuple[str, ...], **kw: Any) -> Filter:
    return Filter(fld(name), op, value, **kw)


# -- filters -------------------------------------------------------------------------------------

FILTERS: list[tuple[str, str, Filter]] = [
    *[("a", f"{op}.5", flt("a", op, "5")) for op in ("eq", "neq", "gt", "gte", "lt", "lte", "isdistinct")],
    ("name", "like.*john*", flt("name", "like", "*john*")),
    ("name", "ilike.%JOHN%", flt("name", "ilike", "%JOHN%")),
    ("name", "match.^j.*n$", flt("name", "match", "^j.*n$")),
    ("name", "imatch.^J", flt("name", "imatch", "^J")),
    ("a", "eq.", flt("a", "eq", "")),
    ("a", "eq.1.5.x", flt("a", "eq", "1.5.x")),  # only the first dot delimits
    ("a", 'eq."quoted"', flt("a", "eq", '"quoted"')),  # top-level values are raw
    ("a", "eq.a,b)(", flt("a", "eq", "a,b)(")),
    ("a", "eq.not.x", flt("a", "eq", "not.x")),
    ("a", "not.eq.5", flt("a", "eq", "5", negated=True)),
    ("a", "not.in.(1,2)", flt("a", "in", ("1", "2"), negated=True)),
    ("a", "not.is.null", flt("a", "is", "null", negated=True)),
    # is: case-insensitive, normalised
    ("a", "is.null", flt("a", "is", "null")),
    ("a", "is.NULL", flt("a", "is", "null")),
    ("a", "is.True", flt("a", "is", "true")),
    ("a", "is.false", flt("a", "is", "false")),
    ("a", "is.unknown", flt("a", "is", "unknown")),
    # in lists
    ("id", "in.(1,2,3)", flt("id", "in", ("1", "2", "3"))),
    ("id", "in.()", flt("id", "in", ())),
    ("id", 'in.("")', flt("id", "in", ("",))),
    ("id", "in.(a,)", flt("id", "in", ("a", ""))),
    ("id", 'in.(a,"b,c",d)', flt("id", "in", ("a", "b,c", "d"))),
    ("id", 'in.("a)b","(c)")', flt("id", "in", ("a)b", "(c)"))),
    ("id", r'in.("say \"hi\"","back\\slash","x\y")', flt("id", "in", ('say "hi"', "back\\slash", "xy"))),
    ("id", 'in.( "a" , b )', flt("id", "in", ("a", " b "))),  # quoted trimmed, unquoted verbatim
    ("id", "in.(a(b)", flt("id", "in", ("a(b",))),
    ("id", 'in.(x"y)', flt("id", "in", ('x"y',))),
    ("id", "in.(1.5,2.5)", flt("id", "in", ("1.5", "2.5"))),
    # quantifiers
    ("name", "like(any).{a*,b*}", flt("name", "like", ("a*", "b*"), quantifier="any")),
    ("name", "ilike(all).{%a%,%b%}", flt("name", "ilike", ("%a%", "%b%"), quantifier="all")),
    ("n", "eq(any).{}", flt("n", "eq", (), quantifier="any")),
    ("n", "gt(all).{ 1 , 2 }", flt("n", "gt", ("1", "2"), quantifier="all")),
    ("n", 'eq(any).{"a,b","x}y","null",c\\,d}', flt("n", "eq", ("a,b", "x}y", "null", "c,d"), quantifier="any")),
    ("n", r"eq(any).{a\ }", flt("n", "eq", ("a ",), quantifier="any")),
    ("n", "not.match(any).{^a,^b}", flt("n", "match", ("^a", "^b"), quantifier="any", negated=True)),
    # arrays, json and ranges stay raw for PostgreSQL to read
    ("tags", "cs.{a,b}", flt("tags", "cs", "{a,b}")),
    ("tags", 'cs.["a","b"]', flt("tags", "cs", '["a","b"]')),
    ("data", 'cd.{"a":1}', flt("data", "cd", '{"a":1}')),
    ("tags", "ov.{a,b}", flt("tags", "ov", "{a,b}")),
    *[("r", f"{op}.(1,10)", flt("r", op, "(1,10)")) for op in ("sl", "sr", "nxl", "nxr", "adj")],
    # full-text search
    ("doc", "fts.cat", flt("doc", "fts", "cat")),
    ("doc", "fts(english).cat & dog", flt("doc", "fts", "cat & dog", language="english")),
    ("doc", "plfts(simple).fat cats", flt("doc", "plfts", "fat cats", language="simple")),
    ("doc", "phfts.the cat", flt("doc", "phfts", "the cat")),
    ("doc", "not.wfts(english).\"cat\" or dog", flt("doc", "wfts", '"cat" or dog', language="english", negated=True)),
    # fields
    ("data->a->>b", "eq.1", Filter(fld("data", "->", "a", "->>", "b"), "eq", "1")),
    ("data->0", "eq.1", Filter(fld("data", "->", 0), "eq", "1")),
    ("data->>-1", "eq.1", Filter(fld("data", "->>", -1), "eq", "1")),
    ('data->"0"', "eq.1", Filter(fld("data", "->", "0"), "eq", "1")),
    ("data->a.b", "eq.1", Filter(fld("data", "->", "a.b"), "eq", "1")),
    ('data->"x,y"', "eq.1", Filter(fld("data", "->", "x,y"), "eq", "1")),
    ('"my col"', "eq.1", flt("my col", "eq", "1")),
    ('"a.b:c"', "eq.1", flt("a.b:c", "eq", "1")),
    ("first name", "eq.1", flt("first name", "eq", "1")),
    ("kebab-case", "eq.1", flt("kebab-case", "eq", "1")),
    ("é_$1", "eq.1", flt("é_$1", "eq", "1")),
]


@pytest.mark.parametrize(("key", "value", "expected"), FILTERS, ids=[f"{k}={v}" for k, v, _ in FILTERS])
def test_filter(key: str, value: str, expected: Filter) -> None:
    assert parse_filter(key, value) == expected


# -- select --------------------------------------------------------------------------------------

SELECTS: list[tuple[str, tuple[SelectItem, ...]]] = [
    ("*", (Star(),)),
    ("", (Star(),)),
    ("  ", (Star(),)),
    ("a,b", (col("a"), col("b"))),
    (" a , b ", (col("a"), col("b"))),
    ("alias:col", (col("col", alias="alias"),)),
    ("col::text", (col("col", cast="text"),)),
    ("alias:col::int", (col("col", alias="alias", cast="int"),)),
    ("ids::int[]", (col("ids", cast="int[]"),)),
    ("data->a->>b", (Column(fld("data", "->", "a", "->>", "b")),)),
    ("data->0", (Column(fld("data", "->", 0)),)),
    ("x:data->>a::int", (Column(fld("data", "->>", "a"), alias="x", cast="int"),)),
    ('"my col"', (col("my col"),)),
    ('"a,b":"c(d)"', (col("c(d)", alias="a,b"),)),
    ('"with \\"quote\\""', (col('with "quote"'),)),
    ("rel(*)", (Embed("rel", (Star(),)),)),
    ("rel(a,b)", (Embed("rel", (col("a"), col("b"))),)),
    ("rel()", (Embed("rel", ()),)),
    ("alias:rel(*)", (Embed("rel", (Star(),), alias="alias"),)),
    ("rel!hint(*)", (Embed("rel", (Star(),), hint="hint"),)),
    ("rel!inner(*)", (Embed("rel", (Star(),), inner=True),)),
    ("rel!left(*)", (Embed("rel", (Star(),)),)),
    ("rel!hint!inner(*)", (Embed("rel", (Star(),), hint="hint", inner=True),)),
    ("a:rel!inner!hint(*)", (Embed("rel", (Star(),), alias="a", hint="hint", inner=True),)),
    ('rel!"inner"(*)', (Embed("rel", (Star(),), hint="inner"),)),
    ("...rel(col)", (Embed("rel", (col("col"),), spread=True),)),
    ("...rel!fk!inner(a)", (Embed("rel", (col("a"),), hint="fk", inner=True, spread=True),)),
    (
        "id, clients ( name, projects!inner ( id, tasks(*) ) )",
        (col("id"), Embed("clients", (col("name"), Embed("projects", (col("id"), Embed("tasks", (Star(),))), inner=True)))),
    ),
    ("*,rel(*),...other(x)", (Star(), Embed("rel", (Star(),)), Embed("other", (col("x"),), spread=True))),
    ("count()", (Aggregate("count"),)),
    ("n:count()::text", (Aggregate("count", alias="n", cast="text"),)),
    ("amount.sum(),day", (Aggregate("sum", fld("amount")), col("day"))),
    ("t:data->>k::int.avg()::text", (Aggregate("avg", fld("data", "->>", "k"), "t", "int", "text"),)),
    ("...rel(x.max(),y)", (Embed("rel", (Aggregate("max", fld("x")), col("y")), spread=True),)),
    ("cities(count)", (Embed("cities", (col("count"),)),)),
    ("count!hint()", (Embed("count", (), hint="hint"),)),
]


@pytest.mark.parametrize(("text", "expected"), SELECTS, ids=[t or "<empty>" for t, _ in SELECTS])
def test_select(text: str, expected: tuple[SelectItem, ...]) -> None:
    assert parse_select(text) == expected


# -- logic trees ---------------------------------------------------------------------------------

LOGIC: list[tuple[str, str, Logic]] = [
    ("or", "(a.eq.1,b.gt.2)", Logic("or", (flt("a", "eq", "1"), flt("b", "gt", "2")))),
    ("and", "(a.eq.1)", Logic("and", (flt("a", "eq", "1"),))),
    ("not.or", "(a.eq.1,b.eq.2)", Logic("or", (flt("a", "eq", "1"), flt("b", "eq", "2")), negated=True)),
    ("not.and", "(a.eq.1)", Logic("and", (flt("a", "eq", "1"),), negated=True)),
    ("or", "( a.eq.1 , b.eq.2 )", Logic("or", (flt("a", "eq", "1 "), flt("b", "eq", "2 ")))),
    ("or", '(name.eq."a,b)",x.eq.y)', Logic("or", (flt("name", "eq", "a,b)"), flt("x", "eq", "y")))),
    ("or", r'(name.eq."say \"hi\"")', Logic("or", (flt("name", "eq", 'say "hi"'),))),
    ("or", "(a.in.(1,2),b.in.())", Logic("or", (flt("a", "in", ("1", "2")), flt("b", "in", ())))),
    ("or", '(a.in.("x,y",z))', Logic("or", (flt("a", "in", ("x,y", "z")),))),
    ("or", "(a.not.eq.1,b.is.NULL)", Logic("or", (flt("a", "eq", "1", negated=True), flt("b", "is", "null")))),
    ("or", "(tags.cs.{a,b},tags.cd.{})", Logic("or", (flt("tags", "cs", "{a,b}"), flt("tags", "cd", "{}")))),
    ("or", '(data.cs.{"a":{"b":1}})', Logic("or", (flt("data", "cs", '{"a":{"b":1}}'),))),
    ("or", "(n.like(any).{a*,b*})", Logic("or", (flt("n", "like", ("a*", "b*"), quantifier="any"),))),
    ("or", "(doc.fts(english).cat)", Logic("or", (flt("doc", "fts", "cat", language="english"),))),
    ("or", "(data->>a.eq.1,data->0.gt.2)", Logic("or", (Filter(fld("data", "->>", "a"), "eq", "1"),
                                                        Filter(fld("data", "->", 0), "gt", "2")))),
    ("or", '("my col".eq.1)', Logic("or", (flt("my col", "eq", "1"),))),
    ("or", "(a.eq.1.5)", Logic("or", (flt("a", "eq", "1.5"),))),
    ("or", "(a.eq.)", Logic("or", (flt("a", "eq", ""),))),
    (
        "or",
        "(a.eq.1,and(b.eq.2,not.or(c.eq.3,d.eq.4)),not.and(e.eq.5))",
        Logic("or", (
            flt("a", "eq", "1"),
            Logic("and", (flt("b", "eq", "2"), Logic("or", (flt("c", "eq", "3"), flt("d", "eq", "4")), negated=True))),
            Logic("and", (flt("e", "eq", "5"),), negated=True),
        )),
    ),
    ("or", "(or.eq.1,and.eq.2,not.eq.3)", Logic("or", (flt("or", "eq", "1"), flt("and", "eq", "2"),
                                                        flt("not", "eq", "3")))),
    ("and", "(or (a.eq.1))", Logic("and", (Logic("or", (flt("a", "eq", "1"),)),))),
]


@pytest.mark.parametrize(("key", "value", "expected"), LOGIC, ids=[f"{k}={v}" for k, v, _ in LOGIC])
def test_logic(key: str, value: str, expected: Logic) -> None:
    assert parse_logic(key, value) == expected


# -- order ---------------------------------------------------------------------------------------

ORDERS: list[tuple[str, tuple[OrderTerm, ...]]] = [
    ("a", (OrderTerm(fld("a")),)),
    ("a.asc", (OrderTerm(fld("a"), "asc"),)),
    ("a.desc", (OrderTerm(fld("a"), "desc"),)),
    ("a.nullsfirst", (OrderTerm(fld("a"), nulls="first"),)),
    ("a.desc.nullslast", (OrderTerm(fld("a"), "desc", "last"),)),
    (
        "c1.desc.nullslast,c2.asc,c3,c4.nullsfirst",
        (OrderTerm(fld("c1"), "desc", "last"), OrderTerm(fld("c2"), "asc"), OrderTerm(fld("c3")),
         OrderTerm(fld("c4"), nulls="first")),
    ),
    ("data->>x.desc", (OrderTerm(fld("data", "->>", "x"), "desc"),)),
    ("data->0", (OrderTerm(fld("data", "->", 0)),)),
    ('"my col".asc, b', (OrderTerm(fld("my col"), "asc"), OrderTerm(fld("b")))),
    ('"a.desc"', (OrderTerm(fld("a.desc")),)),
    ("clients(name).desc", (OrderTerm(fld("name"), "desc", relation="clients"),)),
    ("clients(name),id.asc.nullsfirst", (OrderTerm(fld("name"), relation="clients"), OrderTerm(fld("id"), "asc", "first"))),
]


@pytest.mark.parametrize(("text", "expected"), ORDERS, ids=[t for t, _ in ORDERS])
def test_order(text: str, expected: tuple[OrderTerm, ...]) -> None:
    assert parse_order(text) == expected


# -- whole query strings -------------------------------------------------------------------------


def test_query_defaults() -> None:
    assert parse_query([]) == Query()


def test_query_levels_and_params() -> None:
    query = parse_query([
        ("select", "id,clients(id,projects(*))"),
        ("id", "gt.1"),
        ("or", "(a.eq.1,b.eq.2)"),
        ("not.and", "(c.eq.3)"),
        ("order", "id.desc"),
        ("limit", "10"),
        ("offset", "20"),
        ("clients.id", "eq.5"),
        ("clients.order", "name.asc"),
        ("clients.limit", "3"),
        ("clients.offset", "1"),
        ("clients.or", "(x.eq.1)"),
        ("clients.not.or", "(y.eq.2)"),
        ("clients.projects.name", "like.a*"),
        ("clients.projects.and", "(z.eq.1)"),
        ("data->a.b", "eq.1"),
        ('"order"', "eq.1"),
        ("id", "lt.9"),
    ])
    assert query.select == (col("id"), Embed("clients", (col("id"), Embed("projects", (Star(),)))))
    assert query.top == Shaping(
        conditions=(
            flt("id", "gt", "1"),
            Logic("or", (flt("a", "eq", "1"), flt("b", "eq", "2"))),
            Logic("and", (flt("c", "eq", "3"),), negated=True),
            Filter(fld("data", "->", "a.b"), "eq", "1"),
            flt("order", "eq", "1"),
            flt("id", "lt", "9"),
        ),
        order=(OrderTerm(fld("id"), "desc"),),
        limit=10,
        offset=20,
    )
    assert query.embedded == {
        ("clients",): Shaping(
            conditions=(flt("id", "eq", "5"), Logic("or", (flt("x", "eq", "1"),)),
                        Logic("or", (flt("y", "eq", "2"),), negated=True)),
            order=(OrderTerm(fld("name"), "asc"),),
            limit=3,
            offset=1,
        ),
        ("clients", "projects"): Shaping(conditions=(flt("name", "like", "a*"), Logic("and", (flt("z", "eq", "1"),)))),
    }
    assert query.params == (
        ("id", "gt.1"), ("clients.id", "eq.5"), ("clients.projects.name", "like.a*"), ("data->a.b", "eq.1"),
        ('"order"', "eq.1"), ("id", "lt.9"),
    )


def test_query_columns_and_on_conflict() -> None:
    query = parse_query([("columns", '"b","a"'), ("on_conflict", "a, b")])
    assert query.columns == ("b", "a")
    assert query.on_conflict == ("a", "b")
    assert parse_query([("columns", "x,y")]).columns == ("x", "y")
    assert parse_query([("columns", '"a,b","c"')]).columns == ("a,b", "c")


def test_query_repeats_follow_postgrest() -> None:
    query = parse_query([
        ("select", "a"), ("select", "b"), ("order", "a"), ("order", "b"), ("limit", "1"), ("limit", "2"),
        ("offset", "3"), ("offset", "4"), ("columns", "a"), ("columns", "b"), ("on_conflict", "a"), ("on_conflict", "b"),
    ])
    assert query.select == (col("a"),)
    assert query.top.order == (OrderTerm(fld("a")),)
    assert (query.top.limit, query.top.offset) == (2, 4)
    assert (query.columns, query.on_conflict) == (("a",), ("a",))
    with pytest.raises(GrammarError):
        parse_query([("select", "a"), ("select", "b(")])  # later copies are still checked


def test_query_rpc_args() -> None:
    items = [("name", "bob"), ("age", "eq.5"), ("tags", "{a,b}"), ("select", "x"), ("n", "gt.1"), ("limit", "5")]
    query = parse_query(items, rpc_args=frozenset({"name", "age", "tags", "limit"}))
    assert query.params == (("name", "bob"), ("age", "eq.5"), ("tags", "{a,b}"), ("n", "gt.1"))
    assert query.top.conditions == (flt("n", "gt", "1"),)
    assert query.top.limit == 5  # reserved words stay reserved
    assert query.select == (col("x"),)
    with pytest.raises(GrammarError):
        parse_query([("name", "bob")])  # not an argument: must be a filter


def test_postgrest_py_requests_parse() -> None:
    """What the real supabase-py client sends, parsed back."""
    with SyncPostgrestClient("http://localhost/rest/v1") as client:
        builder = (
            client.from_("t").select("id, name", "clients(*)")
            .in_("id", ["a,b", 'c"d', 1, "e\\f"]).or_("a.eq.1,b.gt.2", reference_table="clients")
            .order("name", desc=True, nullsfirst=False).range(10, 19).like_any_of("n", "a*,b*")
            .is_("x", None).cs("tags", ["a b", "c"]).fts("doc", "cat").not_.eq("z", 5).eq("my:col", "v")
        )
        upsert = client.from_("t").upsert([{"a": 1, "b": 2}], on_conflict="a,b")
        query = parse_query(list(builder.request.params.multi_items()))
        written = parse_query(list(upsert.request.params.multi_items()))
    assert query.select == (col("id"), col("name"), Embed("clients", (Star(),)))
    assert query.top == Shaping(
        conditions=(
            flt("id", "in", ("a,b", 'c"d', "1", "e\\f")), flt("n", "like", ("a*", "b*"), quantifier="any"),
            flt("x", "is", "null"), flt("tags", "cs", '{"a b",c}'), flt("doc", "fts", "cat"),
            flt("z", "eq", "5", negated=True), flt("my:col", "eq", "v"),
        ),
        order=(OrderTerm(fld("name"), "desc", "last"),), limit=10, offset=10,
    )
    assert query.embedded == {("clients",): Shaping((Logic("or", (flt("a", "eq", "1"), flt("b", "gt", "2"))),))}
    assert set(written.columns or ()) == {"a", "b"}
    assert written.on_conflict == ("a", "b")


# -- errors --------------------------------------------------------------------------------------

MALFORMED: list[tuple[str, Callable[[], object]]] = [
    *[(f"select={s}", lambda s=s: parse_select(s)) for s in [
        ",", "a,", ",a", "a,,b", "a(", "a(*", "a)", "a(*))", "*::int", "x:*", "a:", ":a", "a::", "a->", "a->>",
        "a->>>b", "rel->x(*)", "rel!hint", "rel!(*)", "rel!a!b(*)", "rel!inner!left(*)", "x:...rel(*)", "...rel",
        "...(*)", "a!b", '"a', '"a"b', 'a"b"', "a.b", "a.sum", "a.total()", "count(", "a@b", "rel(a)(b)", "(a)", "a;drop", "\x00",
        "data->99999999999", "data->" + "9" * 5000,
    ]],
    *[(f"filter a={v}", lambda v=v: parse_filter("a", v)) for v in [
        "", "5", "eq", "eq5", "eqq.5", "EQ.5", "not.5", "not.not.eq.5", "not.eq", ".eq.5", "eq(any).5", "eq(any).{",
        "eq(any).{a", "eq(any).{{a}}", "eq(any).{NULL}", "eq(any).{a,}", 'eq(any).{"a}', "eq(any).{a}x",
        "eq(some).{a}", "eq(any.{a}", "in(any).{a}", "is(any).null", "fts().cat", "fts(english.cat", "cs(x).{a}",
        "in.1,2", "in.(1,2", "in.(1,2)x", 'in.("a"b)', 'in.("a', "in.", "is.nil", "is.nullx", 'is."null"', "is.",
        "fts(eng-lish).x", "eq.\x00",
    ]],
    *[(f"filter {k}", lambda k=k: parse_filter(k, "eq.1")) for k in [
        "", " ", "a.b", "a,b", "a:b", "a(b)", '"a', '""', "a->", "a->>", "a->>>b", "a::int", "*", "a!b", "a\x00",
    ]],
    *[(f"or={v}", lambda v=v: parse_logic("or", v)) for v in [
        "", "()", "a.eq.1", "(a.eq.1", "(a.eq.1))", "(a.eq.1)x", "(a.eq.1,)", "(,a.eq.1)", "(a)", "(a.eqq.1)",
        "(a.eq)", "(a.in.(1,2)", "(a.in.1,2)", '(a.eq."x)', '(a.eq."x"y)', "(a.eq.{x)", "(xor(a.eq.1))",
        "(not.xor(a.eq.1))", "(and())", "(and(a.eq.1)", "(a.is.nul)", "(ord(id.eq.1,id.eq.1),id.eq.2)",
        "(a.eq.1) (b.eq.2)",
    ]],
    ("logic key", lambda: parse_logic("xor", "(a.eq.1)")),
    ("logic key not.not", lambda: parse_logic("not.not.or", "(a.eq.1)")),
    *[(f"order={v}", lambda v=v: parse_order(v)) for v in [
        "", ",", "a,", "a.ac", "a.descc", "a.nulsfist", "a.asc.desc", "a.nullslast.asc", "a.asc.nullslasttt",
        "clients(name", "clients->x(name)", "clients()", "a b.", "a..asc", '"a', "a->",
    ]],
    *[(f"query {k}={v}", lambda k=k, v=v: parse_query([(k, v)])) for k, v in [
        ("limit", "-1"), ("limit", "x"), ("limit", ""), ("limit", "1.5"), ("limit", " 1"), ("offset", "+1"),
        ("limit", "9" * 20), ("limit", "9" * 5000), ("clients.limit", "x"), ("order", ""), ("clients.order", "a.up"),
        ("name", "bob"), ("a", ""), ("", "eq.1"), ("a..b", "eq.1"), ("a.", "eq.1"), (".a", "eq.1"),
        ("columns", ""), ("columns", "a,"), ("on_conflict", "a b,"), ("on_conflict", '"a'), ("select", "a("),
        ("or", "x"), ("not.or", "(a)"), ("clients.and", "()"), ("a b!c", "eq.1"), ("a", "eq.\x00"),
    ]],
]


@pytest.mark.parametrize("parse", [m[1] for m in MALFORMED], ids=[m[0].encode("unicode_escape").decode()[:60]
                                                                  for m in MALFORMED])
def test_malformed(parse: Callable[[], object]) -> None:
    with pytest.raises(GrammarError) as info:
        parse()
    assert info.value.message.startswith("failed to parse ")
    assert info.value.details


def test_error_says_what_and_where() -> None:
    with pytest.raises(GrammarError) as info:
        parse_filter("a", "eqq.5")
    assert (info.value.message, info.value.details) == ("failed to parse filter (eqq.5)", 'unknown operator "eqq" at column 1')
    with pytest.raises(GrammarError) as info:
        parse_select("id,name!x")
    assert info.value.details == 'unexpected end of input, expecting "(" at column 10'
    with pytest.raises(GrammarError) as info:
        parse_order("x" * 1000 + ".up")
    assert len(info.value.message) < 300  # long input is not echoed in full


def test_nesting_is_bounded() -> None:
    ok = "a(" * (MAX_DEPTH - 1) + "*" + ")" * (MAX_DEPTH - 1)
    assert parse_select(ok)
    for depth in (MAX_DEPTH, 100_000):
        with pytest.raises(GrammarError, match="select"):
            parse_select("a(" * depth + "*" + ")" * depth)
        with pytest.raises(GrammarError, match="logic"):
            parse_logic("or", "(" + "or(" * depth + "a.eq.1" + ")" * (depth + 1))
    logic_ok = "(" + "or(" * (MAX_DEPTH - 1) + "a.eq.1" + ")" * MAX_DEPTH
    assert parse_logic("or", logic_ok)


def test_long_input() -> None:
    items = tuple(str(i) for i in range(50_000))
    assert parse_filter("a", "in.(" + ",".join(items) + ")").value == items
    assert len(parse_select(",".join(f"c{i}" for i in range(20_000)))) == 20_000
    assert len(parse_logic("or", "(" + ",".join(f"a.eq.{i}" for i in range(20_000)) + ")").conditions) == 20_000
    assert parse_filter("a", "eq." + "x" * 1_000_000).value == "x" * 1_000_000
    with pytest.raises(GrammarError):
        parse_filter("a", 'in.("' + "x" * 1_000_000)


# -- properties ----------------------------------------------------------------------------------

GRAMMAR = st.text(alphabet='abnotriseqlkcdfy()*,.:!"\\{}[]->$_ 019é\t\x00', max_size=60)
ANY_TEXT = st.one_of(st.text(), GRAMMAR)
NO_NUL = st.text(st.characters(exclude_characters="\x00"))


@given(ANY_TEXT)
def test_parse_select_fails_only_with_grammar_error(text: str) -> None:
    try:
        parse_select(text)
    except GrammarError:
        pass


@given(ANY_TEXT, ANY_TEXT)
def test_parse_filter_fails_only_with_grammar_error(key: str, value: str) -> None:
    try:
        parse_filter(key, value)
    except GrammarError:
        pass


@given(st.sampled_from(["or", "and", "not.or", "not.and", "xor", ""]), ANY_TEXT)
def test_parse_logic_fails_only_with_grammar_error(key: str, value: str) -> None:
    try:
        parse_logic(key, value)
    except GrammarError:
        pass


@given(ANY_TEXT)
def test_parse_order_fails_only_with_grammar_error(text: str) -> None:
    try:
        parse_order(text)
    except GrammarError:
        pass


KEYS = st.one_of(st.sampled_from(["select", "order", "limit", "offset", "columns", "on_conflict", "or", "and",
                                  "not.or", "a.or", "a.limit", "a.b"]), ANY_TEXT)


@given(st.lists(st.tuples(KEYS, ANY_TEXT), max_size=6), st.frozensets(GRAMMAR, max_size=3))
def test_parse_query_fails_only_with_grammar_error(items: list[tuple[str, str]], rpc_args: frozenset[str]) -> None:
    try:
        parse_query(items, rpc_args=rpc_args)
    except GrammarError:
        pass


ITEMS = st.lists(NO_NUL, max_size=8).filter(lambda items: items != [""])  # in.() means the empty list


@given(ITEMS)
def test_in_list_round_trip(items: list[str]) -> None:
    """``in_()`` values, quoted as postgrest-py quotes them, parse back to themselves."""
    value = "in.(" + ",".join(sanitize_param(item) for item in items) + ")"
    assert parse_filter("c", value).value == tuple(items)
    assert parse_logic("or", f"(c.{value},d.eq.1)").conditions[0] == flt("c", "in", tuple(items))


@given(st.lists(NO_NUL, max_size=8))
def test_quantified_round_trip(items: list[str]) -> None:
    """A PostgreSQL array literal as postgrest-py renders one reads back to its elements."""
    value = "like(any)." + sanitize_array_param(items)
    assert parse_filter("c", value).value == tuple(items)
    assert parse_logic("and", f"(c.{value})").conditions[0] == flt("c", "like", tuple(items), quantifier="any")


@given(NO_NUL)
def test_quoted_logic_value_round_trip(value: str) -> None:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    tree = parse_logic("or", f'(c.eq."{escaped}",d.not.ilike."{escaped}")')
    assert tree.conditions == (flt("c", "eq", value), flt("d", "ilike", value, negated=True))


@given(NO_NUL)
def test_top_level_value_is_verbatim(value: str) -> None:
    assert parse_filter("c", "eq." + value).value == value


NAMES = st.one_of(
    st.text(string.ascii_letters + "_", min_size=1, max_size=8),
    st.text(st.characters(exclude_characters="\x00"), min_size=1, max_size=8).filter(lambda s: s.strip() == s),
)


def quote(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_field(f: Field) -> str:
    return quote(f.name) + "".join(s.arrow + (str(s.key) if isinstance(s.key, int) else quote(s.key))
                                   for s in f.json_path)


def render_select(items: tuple[SelectItem, ...]) -> str:
    out = []
    for item in items:
        if isinstance(item, Star):
            out.append("*")
        elif isinstance(item, Column):
            out.append((quote(item.alias) + ":" if item.alias else "") + render_field(item.field)
                       + (f"::{item.cast}" if item.cast else ""))
        else:
            head = "..." if item.spread else (quote(item.alias) + ":" if item.alias else "")
            out.append(head + quote(item.relation) + (f"!{quote(item.hint)}" if item.hint else "")
                       + ("!inner" if item.inner else "") + "(" + render_select(item.select) + ")")
    return ",".join(out)


FIELDS = st.builds(
    Field, NAMES,
    st.lists(st.builds(JsonStep, st.sampled_from(["->", "->>"]), st.one_of(NAMES, st.integers(-99, 99))),
             max_size=2).map(tuple),
)
COLUMNS = st.builds(Column, FIELDS, st.none() | NAMES, st.none() | st.sampled_from(["int", "text", "int[]"]))


def embeds(children: st.SearchStrategy[tuple[SelectItem, ...]]) -> st.SearchStrategy[SelectItem]:
    plain = st.builds(Embed, NAMES, children, st.none() | NAMES, st.none() | NAMES, st.booleans())
    spread = st.builds(Embed, NAMES, children, st.none(), st.none() | NAMES, st.booleans(), st.just(True))
    return plain | spread


SELECT_TREES = st.recursive(
    st.lists(st.just(Star()) | COLUMNS, min_size=1, max_size=3).map(tuple),
    lambda children: st.lists(st.just(Star()) | COLUMNS | embeds(children | st.just(())), min_size=1,
                              max_size=3).map(tuple),
    max_leaves=10,
)


@given(SELECT_TREES)
def test_select_round_trip(tree: tuple[SelectItem, ...]) -> None:
    assert parse_select(render_select(tree)) == tree


@given(st.lists(st.builds(OrderTerm, FIELDS, st.none() | st.sampled_from(["asc", "desc"]),
                          st.none() | st.sampled_from(["first", "last"])), min_size=1, max_size=4))
def test_order_round_trip(terms: list[OrderTerm]) -> None:
    text = ",".join(render_field(t.field) + (f".{t.direction}" if t.direction else "")
                    + (f".nulls{t.nulls}" if t.nulls else "") for t in terms)
    assert parse_order(text) == tuple(terms)


CONDITIONS: st.SearchStrategy[Condition] = st.recursive(
    st.builds(Filter, FIELDS, st.sampled_from(["eq", "neq", "like", "cs"]), NO_NUL, st.booleans()),
    lambda children: st.builds(Logic, st.sampled_from(["and", "or"]), st.lists(children, min_size=1, max_size=3)
                               .map(tuple), st.booleans()),
    max_leaves=8,
)


def render_condition(c: Condition) -> str:
    if isinstance(c, Logic):
        return ("not." if c.negated else "") + c.operator + "(" + ",".join(map(render_condition, c.conditions)) + ")"
    assert isinstance(c.value, str)
    return f"{render_field(c.field)}.{'not.' if c.negated else ''}{c.operator}.{quote(c.value)}"


@given(st.lists(CONDITIONS, min_size=1, max_size=3), st.booleans())
@settings(max_examples=200)
def test_logic_round_trip(conditions: list[Condition], negated: bool) -> None:
    value = "(" + ",".join(map(render_condition, conditions)) + ")"
    assert parse_logic("not.or" if negated else "or", value) == Logic("or", tuple(conditions), negated)
