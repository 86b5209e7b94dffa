"""The planner checks every name a request uses against the schema cache and resolves it into a plan.

No database: the cache is built by hand (``tests/rest/catalog.py``). Unknown names become
PostgREST's errors with their codes and statuses, never SQL.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from gatehouse.core.errors import GatehouseError
from gatehouse.rest import plan as p
from tests.rest.catalog import CACHE, parse, planner

# -- helpers -----------------------------------------------------------------------------------------


def read(query_string: str = "", table: str = "countries", *, max_rows: int | None = None,
         aggregates: bool = False) -> p.ReadNode:
    pl = planner(max_rows=max_rows, aggregates=aggregates)
    return pl.read(pl.table(table), parse(query_string))


def refused(call: Any, code: str, status: int) -> GatehouseError:
    """Run ``call``; it must raise the PostgREST error ``code`` with ``status``."""
    with pytest.raises(GatehouseError) as caught:
        call()
    assert (caught.value.code, caught.value.status) == (code, status), caught.value
    return caught.value


def filters(node: p.ReadNode) -> list[p.PFilter]:
    assert all(isinstance(c, p.PFilter) for c in node.conditions)
    return list(node.conditions)  # type: ignore[arg-type]


def embed(node: p.ReadNode, name: str) -> p.OutEmbed:
    found = [o for o in node.select if isinstance(o, p.OutEmbed) and o.name == name]
    assert len(found) == 1, node.select
    return found[0]


# -- tables --------------------------------------------------------------------------------------------


def test_a_known_table() -> None:
    assert planner().table("countries") is CACHE.table("public", "countries")


@pytest.mark.parametrize(("schema", "name"), [("public", "nope"), ("public", "secrets"), ("private", "countries")])
def test_an_unknown_table_is_pgrst205(schema: str, name: str) -> None:
    error = refused(lambda: planner(schema=schema).table(name), "PGRST205", 404)
    assert error.message == f"Could not find the table '{schema}.{name}' in the schema cache"
    assert error.extra["hint"]


# -- select ---------------------------------------------------------------------------------------------


def test_star_is_every_column_in_order() -> None:
    node = read()
    assert node.alias == "_t0" and node.table.name == "countries"
    (star,) = node.select
    assert isinstance(star, p.OutStar) and star.alias == "_t0"
    assert [c.name for c in star.columns] == ["id", "code", "name", "population"]
    assert (node.conditions, node.order, node.limit, node.offset) == ((), (), None, None)


def test_columns_aliases_and_casts() -> None:
    node = read("select=id,nom:name,pop:population::TEXT,code::varchar[]")
    outs = [(o.name, o.ref.column.name, o.ref.alias, o.cast) for o in node.select if isinstance(o, p.OutColumn)]
    assert outs == [
        ("id", "id", "_t0", None),
        ("nom", "name", "_t0", None),
        ("pop", "population", "_t0", "text"),  # cast names are lower-cased
        ("code", "code", "_t0", "varchar[]"),
    ]


def test_json_paths_name_the_output_by_their_last_key() -> None:
    node = read("select=data->a->>b,data->list->0,whole:data->a", "documents")
    outs = [o for o in node.select if isinstance(o, p.OutColumn)]
    assert [o.name for o in outs] == ["b", "0", "whole"]
    assert [o.ref.type for o in outs] == ["text", "jsonb", "jsonb"]  # ->> yields text, -> keeps JSON
    assert outs[0].ref.json_path[0].key == "a" and outs[1].ref.json_path[-1].key == 0
    assert read("select=data", "documents").select[0].ref.type == "jsonb"  # type: ignore[union-attr]


@pytest.mark.parametrize("cast", ["1abc", "te$t", "tèxt"])
def test_a_cast_must_be_a_type_name(cast: str) -> None:
    """What the grammar lets through as a cast is checked again: only plain type names reach SQL."""
    error = refused(lambda: read(f"select=id::{cast}"), "PGRST100", 400)
    assert cast.lower() in error.message


@pytest.mark.parametrize(
    "query_string",
    ["select=id,nope", "select=nope->a", "nope=eq.1", "order=nope", "or=(id.eq.1,nope.eq.2)", "select=id::text,NAME"],
)
def test_an_unknown_column_is_42703(query_string: str) -> None:
    error = refused(lambda: read(query_string), "42703", 400)
    assert error.message.startswith("column countries.") and error.message.endswith(" does not exist")


# -- filters ---------------------------------------------------------------------------------------------

FILTERS = [
    # (query string, operator, value, negated, quantifier, language)
    ("name=eq.France", "eq", "France", False, None, None),
    ("name=neq.France", "neq", "France", False, None, None),
    ("population=gt.1", "gt", "1", False, None, None),
    ("population=gte.1", "gte", "1", False, None, None),
    ("population=lt.1", "lt", "1", False, None, None),
    ("population=lte.1", "lte", "1", False, None, None),
    ("name=like.Fr*", "like", "Fr*", False, None, None),
    ("name=ilike.fr*", "ilike", "fr*", False, None, None),
    ("name=match.^F", "match", "^F", False, None, None),
    ("name=imatch.^f", "imatch", "^f", False, None, None),
    ("population=is.null", "is", "null", False, None, None),
    ("population=not.is.null", "is", "null", True, None, None),
    ("name=isdistinct.x", "isdistinct", "x", False, None, None),
    ("id=in.(1,2,3)", "in", ("1", "2", "3"), False, None, None),
    ("id=not.in.(1,2)", "in", ("1", "2"), True, None, None),
    ("name=like(any).{a*,b*}", "like", ("a*", "b*"), False, "any", None),
    ("population=gt(all).{1,2}", "gt", ("1", "2"), False, "all", None),
    ("name=not.eq.France", "eq", "France", True, None, None),
]


@pytest.mark.parametrize(("query_string", "operator", "value", "negated", "quantifier", "language"), FILTERS)
def test_filters_resolve_their_column(
    query_string: str, operator: str, value: object, negated: bool, quantifier: str | None, language: str | None
) -> None:
    (f,) = filters(read(query_string))
    column = query_string.split("=", 1)[0]
    assert f.ref.column is CACHE.table("public", "countries").columns[column]  # type: ignore[union-attr]
    assert f.ref.alias == "_t0"
    assert (f.operator, f.value, f.negated, f.quantifier, f.language) == (operator, value, negated, quantifier, language)


@pytest.mark.parametrize(
    ("query_string", "operator", "language"),
    [("search=fts.cat", "fts", None), ("search=plfts(english).fat cat", "plfts", "english"),
     ("search=phfts.fat cat", "phfts", None), ("search=not.wfts(simple).cat -dog", "wfts", "simple"),
     ("tags=cs.{a,b}", "cs", None), ("tags=cd.{a,b}", "cd", None), ("tags=ov.{a,b}", "ov", None),
     ("during=sl.[1,2)", "sl", None), ("during=sr.[1,2)", "sr", None), ("during=nxl.[1,2)", "nxl", None),
     ("during=nxr.[1,2)", "nxr", None), ("during=adj.[1,2)", "adj", None)],
)
def test_full_text_array_and_range_filters(query_string: str, operator: str, language: str | None) -> None:
    (f,) = filters(read(query_string, "documents"))
    assert (f.operator, f.language, f.ref.column.name) == (operator, language, query_string.split("=")[0])


def test_filters_on_json_paths_keep_the_path_and_its_type() -> None:
    (text, json) = filters(read("data->a->>b=eq.x&data->list->0=eq.1", "documents"))
    assert [s.key for s in text.ref.json_path] == ["a", "b"] and text.ref.type == "text"
    assert [s.key for s in json.ref.json_path] == ["list", 0] and json.ref.type == "jsonb"


def test_logic_trees_nest_and_negate() -> None:
    node = read("or=(name.eq.a,not.and(population.gt.1,code.eq.FR))&not.and=(id.eq.1,id.eq.2)&id=gt.0")
    first, second, third = node.conditions
    assert isinstance(first, p.PLogic) and first.operator == "or" and not first.negated
    left, right = first.conditions
    assert isinstance(left, p.PFilter) and left.ref.column.name == "name"
    assert isinstance(right, p.PLogic) and right.operator == "and" and right.negated
    assert [c.ref.column.name for c in right.conditions] == ["population", "code"]  # type: ignore[union-attr]
    assert {c.ref.alias for c in right.conditions} == {"_t0"}  # type: ignore[union-attr]
    assert isinstance(second, p.PLogic) and second.operator == "and" and second.negated
    assert isinstance(third, p.PFilter) and third.operator == "gt"


# -- order and paging ------------------------------------------------------------------------------------


def test_order_terms() -> None:
    node = read("order=name.desc.nullslast,id,population.asc.nullsfirst")
    assert [(o.ref.column.name, o.direction, o.nulls) for o in node.order] == [
        ("name", "desc", "last"), ("id", None, None), ("population", "asc", "first"),
    ]


def test_limit_and_offset() -> None:
    node = read("limit=5&offset=10")
    assert (node.limit, node.offset) == (5, 10)


@pytest.mark.parametrize(("query_string", "limit"), [("", 100), ("limit=5", 5), ("limit=500", 100)])
def test_max_rows_caps_the_top_level(query_string: str, limit: int) -> None:
    assert read(query_string, max_rows=100).limit == limit


def test_max_rows_leaves_embeds_alone() -> None:
    node = read("select=cities(name)&cities.limit=500", max_rows=100)
    assert node.limit == 100 and embed(node, "cities").node.limit == 500


# -- embedding -------------------------------------------------------------------------------------------


def test_one_to_many_embed() -> None:
    node = read("select=name,cities(name,founded)")
    cities = embed(node, "cities")
    assert not cities.to_one and not cities.inner
    assert cities.node.table.name == "cities" and cities.node.alias == "_t1"
    assert cities.join.pairs == (("id", "country_id"),)  # (parent column, child column)
    assert [o.name for o in cities.node.select] == ["name", "founded"]  # type: ignore[union-attr]


def test_many_to_one_embed_by_table_column_or_constraint() -> None:
    for select in ("countries(name)", "country_id(name)", "cities_country_id_fkey(name)"):
        country = read(f"select=name,{select}", "cities").select[1]
        assert isinstance(country, p.OutEmbed) and country.to_one, select
        assert country.node.table.name == "countries"
        assert country.join.pairs == (("country_id", "id"),)


def test_embed_alias_and_inner() -> None:
    node = read("select=name,land:countries!inner(name)", "cities")
    land = embed(node, "land")
    assert land.inner and land.to_one and land.node.table.name == "countries"


def test_two_foreign_keys_to_one_table_are_ambiguous_pgrst201() -> None:
    error = refused(lambda: read("select=name,cities(name)", "people"), "PGRST201", 300)
    assert "more than one relationship" in error.message
    assert error.extra["hint"] == "Pick one with a hint: cities!people_born_in_fkey, cities!people_lives_in_fkey"


@pytest.mark.parametrize("hint", ["people_born_in_fkey", "born_in"])
def test_a_hint_picks_the_foreign_key(hint: str) -> None:
    born = embed(read(f"select=name,born:cities!{hint}(name)", "people"), "born")
    assert born.to_one and born.join.pairs == (("born_in", "id"),)


def test_embedding_back_through_the_ambiguous_pair_needs_a_hint_too() -> None:
    refused(lambda: read("select=name,people(name)", "cities"), "PGRST201", 300)
    residents = embed(read("select=name,people!lives_in(name)", "cities"), "people")
    assert not residents.to_one and residents.join.pairs == (("id", "lives_in"),)


@pytest.mark.parametrize(
    ("table", "select", "has_hint"),
    [
        ("countries", "people(name)", True),  # both tables exist, no key between them
        ("countries", "nope(name)", False),  # no such table: nothing to hint at
        ("cities", "secrets(id)", False),  # a key from a schema that is not the request's
        ("people", "cities!nope(name)", True),  # a hint that matches no key
    ],
)
def test_no_relationship_is_pgrst200(table: str, select: str, has_hint: bool) -> None:
    error = refused(lambda: read(f"select=id,{select}", table), "PGRST200", 400)
    assert error.message.startswith(f"Could not find a relationship between '{table}' and ")
    assert (error.extra["hint"] is not None) == has_hint


def test_spread_embeds_are_planned_as_embeds_marked_spread() -> None:
    node = read("select=name,...countries(name)", "cities")
    spread = embed(node, "countries")
    assert spread.spread and spread.to_one


@pytest.mark.parametrize("select", ["count()", "id.sum()", "name,countries(id.max())", "...countries(count())",
                                    "cities(count)"])
def test_aggregates_are_pgrst123_unless_allowed(select: str) -> None:
    table = "countries" if select.startswith("cities") else "cities"
    error = refused(lambda: read(f"select={select}", table), "PGRST123", 400)
    assert error.message == "Use of aggregate functions is not allowed"
    assert read(f"select={select}", table, aggregates=True)


def test_aggregates_name_their_output_and_check_their_columns() -> None:
    node = read("select=total:id.sum()::text,n:count(),id.max(),name", "cities", aggregates=True)
    names = [(o.name, o.function, o.cast) for o in node.select if isinstance(o, p.OutAggregate)]
    assert names == [("total", "sum", "text"), ("n", "count", None), ("max", "max", None)]
    refused(lambda: read("select=nope.sum()", "cities", aggregates=True), "42703", 400)
    refused(lambda: read("select=id::te$xt.sum()", "cities", aggregates=True), "PGRST100", 400)


def test_embedded_filters_order_and_paging_go_to_their_level() -> None:
    node = read(
        "select=name,born:cities!born_in(name,countries(name))&born.name=eq.Paris&born.countries.code=eq.FR"
        "&born.order=name.desc&born.limit=2&born.offset=1&name=like.A*",
        "people",
    )
    (top,) = filters(node)
    assert top.ref.column.name == "name" and top.ref.alias == node.alias
    born = embed(node, "born").node
    (city_filter,) = filters(born)
    assert city_filter.value == "Paris" and city_filter.ref.alias == born.alias
    assert [(o.ref.column.name, o.direction) for o in born.order] == [("name", "desc")]
    assert (born.limit, born.offset) == (2, 1)
    country = embed(born, "countries").node
    (country_filter,) = filters(country)
    assert country_filter.value == "FR" and country_filter.ref.alias == country.alias
    assert len({node.alias, born.alias, country.alias}) == 3  # every level has an alias of its own


def test_shaping_an_embed_that_is_not_selected_is_pgrst108() -> None:
    error = refused(lambda: read("select=name&cities.name=eq.Paris"), "PGRST108", 400)
    assert "'cities'" in error.message


def test_unknown_column_inside_an_embed() -> None:
    error = refused(lambda: read("select=name,cities(nope)"), "42703", 400)
    assert error.message == "column cities.nope does not exist"


# -- writes ----------------------------------------------------------------------------------------------

ROWS: list[dict[str, Any]] = [{"code": "FR", "name": "France"}, {"name": "Peru", "population": 1, "code": "PE"}]


def test_insert_columns_are_every_key_in_first_seen_order() -> None:
    pl = planner()
    plan = pl.insert(pl.table("countries"), parse(), ROWS, resolution=None, missing_default=False, returning=False)
    assert plan.kind == "insert" and plan.rows == ROWS
    assert [c.name for c in plan.columns] == ["code", "name", "population"]
    assert (plan.on_conflict, plan.resolution, plan.returning, plan.missing_default) == ((), None, None, False)


def test_insert_columns_parameter_picks_the_keys() -> None:
    pl = planner()
    plan = pl.insert(pl.table("countries"), parse("columns=name,code"), ROWS, resolution=None,
                     missing_default=True, returning=False)
    assert [c.name for c in plan.columns] == ["name", "code"] and plan.missing_default


def test_an_unknown_key_is_pgrst204() -> None:
    pl = planner()
    error = refused(lambda: pl.insert(pl.table("countries"), parse(), [{"nope": 1}], resolution=None,
                                      missing_default=False, returning=False), "PGRST204", 400)
    assert error.message == "Could not find the 'nope' column of 'countries' in the schema cache"
    refused(lambda: pl.update(pl.table("countries"), parse("id=eq.1"), {"nope": 1}, returning=False), "PGRST204", 400)


def test_upsert_conflicts_on_the_primary_key_unless_told() -> None:
    pl = planner()
    table = pl.table("countries")
    merge = pl.insert(table, parse(), ROWS, resolution="merge-duplicates", missing_default=False, returning=False)
    assert (merge.on_conflict, merge.resolution) == (("id",), "merge-duplicates")
    on_code = pl.insert(table, parse("on_conflict=code"), ROWS, resolution="ignore-duplicates",
                        missing_default=False, returning=False)
    assert (on_code.on_conflict, on_code.resolution) == (("code",), "ignore-duplicates")
    # on_conflict without a resolution is checked, and means nothing
    plain = pl.insert(table, parse("on_conflict=code"), ROWS, resolution=None, missing_default=False, returning=False)
    assert plain.on_conflict == ()


def test_upsert_errors() -> None:
    pl = planner()
    refused(lambda: pl.insert(pl.table("countries"), parse("on_conflict=nope"), ROWS, resolution=None,
                              missing_default=False, returning=False), "42703", 400)
    keyless = dataclasses.replace(pl.table('odd "names"'), primary_key=())
    error = refused(lambda: pl.insert(keyless, parse(), [{'we"ird': "x"}], resolution="merge-duplicates",
                                      missing_default=False, returning=False), "PGRST100", 400)
    assert "needs on_conflict" in error.message


def test_returning_plans_a_read_of_the_written_rows() -> None:
    pl = planner()
    plan = pl.insert(pl.table("countries"), parse("select=id,cities(name)&order=id.desc"), ROWS,
                     resolution=None, missing_default=False, returning=True)
    assert plan.returning is not None
    assert [o.name for o in plan.returning.select if not isinstance(o, p.OutStar)] == ["id", "cities"]
    assert [o.direction for o in plan.returning.order] == ["desc"]
    assert plan.returning.limit is None  # the written rows, all of them


def test_update_and_delete_carry_their_filters() -> None:
    pl = planner()
    table = pl.table("countries")
    update = pl.update(table, parse("code=eq.FR&or=(id.eq.1,id.eq.2)"), {"name": "France"}, returning=False)
    assert update.kind == "update" and update.rows == [{"name": "France"}]
    assert [c.name for c in update.columns] == ["name"]
    assert len(update.conditions) == 2 and update.conditions[0].ref.alias == update.alias  # type: ignore[union-attr]
    delete = pl.delete(table, parse("id=in.(1,2)"), returning=True)
    assert delete.kind == "delete" and delete.columns == () and delete.rows == []
    (f,) = delete.conditions
    assert isinstance(f, p.PFilter) and f.value == ("1", "2") and f.ref.alias == delete.alias
    assert delete.returning is not None and delete.returning.alias != delete.alias
    refused(lambda: pl.delete(table, parse("nope=eq.1"), returning=False), "42703", 400)


def test_a_read_only_view_refuses_writes_with_405() -> None:
    pl = planner()
    view = pl.table("big_cities")
    assert refused(lambda: pl.insert(view, parse(), [{"name": "x"}], resolution=None, missing_default=False,
                                     returning=False), "PGRST205", 405).message == "'big_cities' does not accept inserts"
    refused(lambda: pl.update(view, parse("id=eq.1"), {"name": "x"}, returning=False), "PGRST205", 405)
    refused(lambda: pl.delete(view, parse("id=eq.1"), returning=False), "PGRST205", 405)


# -- functions -------------------------------------------------------------------------------------------


def test_overloads_are_chosen_by_argument_names() -> None:
    pl = planner()
    assert pl.function_arg_names("add") == {"a", "b", "x"}
    assert pl.function_arg_names("nope") == frozenset()
    one = pl.call("add", {"a": "1"}, parse())  # b has a default
    both = pl.call("add", {"a": "1", "b": "2"}, parse())
    text = pl.call("add", {"x": "y"}, parse())
    assert [a.name for a in one.function.args] == ["a", "b"] and one.args == {"a": "1"}
    assert both.function is one.function and not both.whole_body and both.result is None
    assert [a.name for a in text.function.args] == ["x"]


def test_no_matching_function_is_pgrst202() -> None:
    pl = planner()
    missing = refused(lambda: pl.call("nope", {}, parse()), "PGRST202", 404)
    assert missing.message == "Could not find the function public.nope in the schema cache"
    wrong = refused(lambda: pl.call("add", {"b": "1", "c": "2"}, parse()), "PGRST202", 404)
    assert wrong.message == "Could not find the function public.add(b, c) in the schema cache"
    none = refused(lambda: pl.call("add", {}, parse()), "PGRST202", 404)  # a is required
    assert "add(no arguments)" in none.message


def test_a_single_unnamed_json_argument_takes_the_whole_body() -> None:
    body = {"any": ["thing"]}
    plan = planner().call("echo", body, parse(), whole_body=body)
    assert plan.whole_body and plan.args == {"": body}
    refused(lambda: planner().call("echo", body, parse()), "PGRST202", 404)  # a GET has no body


def test_a_function_returning_rows_of_a_table_plans_a_read() -> None:
    plan = planner(max_rows=50).call("big", {"min": "1"}, parse("select=name&name=like.A*&order=name&limit=5"))
    assert plan.result is not None and plan.result.table.name == "countries"
    assert [o.name for o in plan.result.select] == ["name"]  # type: ignore[union-attr]
    assert len(plan.result.conditions) == 1 and plan.result.limit == 5


def test_a_scalar_function_cannot_be_filtered_or_ordered() -> None:
    assert planner().call("numbers", {}, parse("limit=3")).result is None  # paging is harmless
    refused(lambda: planner().call("numbers", {}, parse("numbers=eq.1")), "PGRST100", 400)
    refused(lambda: planner().call("numbers", {}, parse("order=numbers")), "PGRST100", 400)
