"""A schema cache built by hand, for the planner and SQL generator unit tests: no database.

``public``: countries <- cities <- people (twice: ``born_in`` and ``lives_in``, so embedding
``cities`` from ``people`` is ambiguous), documents (json, tsvector, arrays, a range), a table whose
names need quoting, a read-only view, and a few functions. ``private`` holds a table that is not exposed through ``public``.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from gatehouse.rest import grammar
from gatehouse.rest import query as q
from gatehouse.rest.plan import Planner
from gatehouse.rest.schema import (
    UNNAMED_TYPES,
    ColumnInfo,
    FunctionArg,
    FunctionInfo,
    Relationship,
    SchemaCache,
    TableInfo,
)


def column(name: str, type_: str, position: int, *, nullable: bool = True, default: bool = False,
           generated: bool = False) -> ColumnInfo:
    return ColumnInfo(name, type_, nullable, default or generated, generated, position)


def table(name: str, *columns: ColumnInfo, pk: tuple[str, ...] = ("id",), schema: str = "public",
          writable: bool = True) -> TableInfo:
    return TableInfo(schema, name, "table" if writable else "view", {c.name: c for c in columns}, pk, writable, writable, writable)


def fk(constraint: str, table: str, columns: tuple[str, ...], foreign_table: str,
       foreign_columns: tuple[str, ...] = ("id",), *, foreign_schema: str = "public") -> Relationship:
    return Relationship(constraint, "public", table, columns, foreign_schema, foreign_table, foreign_columns)


def arg(name: str, type_: str, *, default: bool = False, mode: str = "in") -> FunctionArg:
    return FunctionArg(name, type_, default, mode)  # type: ignore[arg-type]


def function(name: str, *args: FunctionArg, returns: str = "integer", returns_set: bool = False,
             table: str | None = None, volatility: str = "stable") -> FunctionInfo:
    return FunctionInfo(
        "public", name, args, returns, returns_set, ("public", table) if table else None,
        volatility,  # type: ignore[arg-type]
        single_unnamed_arg=len(args) == 1 and args[0].name == "" and args[0].type in UNNAMED_TYPES,
    )


COUNTRIES = table(
    "countries",
    column("id", "integer", 1, nullable=False, default=True),
    column("code", "character(2)", 2, nullable=False),
    column("name", "text", 3, nullable=False),
    column("population", "bigint", 4),
)
CITIES = table(
    "cities",
    column("id", "integer", 1, nullable=False, default=True),
    column("name", "text", 2, nullable=False),
    column("country_id", "integer", 3, nullable=False),
    column("founded", "date", 4),
)
PEOPLE = table(
    "people",
    column("id", "uuid", 1, nullable=False, default=True),
    column("name", "text", 2, nullable=False),
    column("born_in", "integer", 3),
    column("lives_in", "integer", 4),
    column("age", "integer", 5),
)
DOCUMENTS = table(
    "documents",
    column("id", "bigint", 1, nullable=False, default=True),
    column("data", "jsonb", 2),
    column("body", "text", 3),
    column("search", "tsvector", 4, generated=True),
    column("tags", "text[]", 5),
    column("created_at", "timestamp with time zone", 6, default=True),
    column("during", "tstzrange", 7),
)
ODD = table("odd \"names\"", column('we"ird', "text", 1), pk=('we"ird',))
BIG_CITIES = table("big_cities", column("id", "integer", 1), column("name", "text", 2), pk=(), writable=False)
SECRETS = table("secrets", column("id", "integer", 1), column("city_id", "integer", 2), schema="private")

CACHE = SchemaCache(
    ("public", "private"),
    [COUNTRIES, CITIES, PEOPLE, DOCUMENTS, ODD, BIG_CITIES, SECRETS],
    [
        fk("cities_country_id_fkey", "cities", ("country_id",), "countries"),
        fk("people_born_in_fkey", "people", ("born_in",), "cities"),
        fk("people_lives_in_fkey", "people", ("lives_in",), "cities"),
        Relationship("secrets_city_id_fkey", "private", "secrets", ("city_id",), "public", "cities", ("id",)),
    ],
    [
        function("add", arg("a", "integer"), arg("b", "integer", default=True)),
        function("add", arg("x", "text")),
        function("echo", arg("", "jsonb"), returns="jsonb"),
        function("big", arg("min", "bigint"), returns="countries", returns_set=True, table="countries"),
        function("touch", returns="void", volatility="volatile"),
        function("numbers", returns="integer", returns_set=True),
    ],
)


def parse(query_string: str = "", *, rpc_args: frozenset[str] = frozenset()) -> q.Query:
    """A query string as the API parses it (decoded pairs, in order)."""
    return grammar.parse_query(parse_qsl(query_string, keep_blank_values=True), rpc_args=rpc_args)


def planner(*, max_rows: int | None = None, schema: str = "public", aggregates: bool = False) -> Planner:
    return Planner(CACHE, schema, max_rows=max_rows, aggregates=aggregates)
