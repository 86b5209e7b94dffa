"""The schema cache: what the data API knows about tables, columns, keys and functions.

The catalog is read once (four queries in one read-only snapshot) and kept in memory; requests
only ever look things up here. Keeping it fresh is ``watcher.SchemaWatcher``'s job.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

import asyncpg

from gatehouse.core.db import Conn

TableKind = Literal["table", "view", "materialized_view", "foreign_table", "partitioned_table"]
ArgMode = Literal["in", "inout", "variadic"]
Volatility = Literal["immutable", "stable", "volatile"]

_KINDS: dict[str, TableKind] = {
    "r": "table", "v": "view", "m": "materialized_view", "f": "foreign_table", "p": "partitioned_table",
}
_ARG_MODES: dict[str, ArgMode] = {"i": "in", "b": "inout", "v": "variadic"}
_VOLATILITY: dict[str, Volatility] = {"i": "immutable", "s": "stable", "v": "volatile"}
# pg_relation_is_updatable() answers with a bit per command: 1 << CMD_UPDATE/INSERT/DELETE.
_UPDATE, _INSERT, _DELETE = 4, 8, 16

# Never read, whatever is configured: exposing them would publish the catalog itself.
_SYSTEM_SCHEMAS = "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_(toast|temp_)'"

_TABLES = f"""
SELECT n.nspname AS schema, c.relname AS name, c.relkind::text AS kind,
       d.description,
       CASE c.relkind WHEN 'r' THEN 28 WHEN 'p' THEN 28 WHEN 'm' THEN 0
                      ELSE pg_relation_is_updatable(c.oid::regclass, true) END AS updatable,
       ARRAY(SELECT a.attname
             FROM pg_constraint k
             CROSS JOIN LATERAL unnest(k.conkey) WITH ORDINALITY AS u(attnum, ord)
             JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.attnum
             WHERE k.conrelid = c.oid AND k.contype = 'p'
             ORDER BY u.ord) AS primary_key
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_description d ON d.objoid = c.oid AND d.classoid = 'pg_class'::regclass AND d.objsubid = 0
WHERE c.relkind IN ('r', 'v', 'm', 'f', 'p') AND n.nspname = ANY($1::text[]) AND {_SYSTEM_SCHEMAS}
"""

_COLUMNS = f"""
WITH enums AS (
    SELECT enumtypid, array_agg(enumlabel::text ORDER BY enumsortorder) AS labels FROM pg_enum GROUP BY enumtypid
)
SELECT n.nspname AS schema, c.relname AS table, a.attname AS name, a.attnum AS position,
       format_type(a.atttypid, a.atttypmod) AS type,
       NOT a.attnotnull AS nullable,
       a.atthasdef OR a.attidentity <> '' AS has_default,
       a.attgenerated <> '' AS generated,
       d.description,
       e.labels AS enum_values,
       a.atttypid AS type_oid, a.attidentity = 'a' AS identity_always,
       c.relkind IN ('r', 'p') OR pg_column_is_updatable(c.oid, a.attnum, false) AS updatable
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_description d ON d.objoid = c.oid AND d.classoid = 'pg_class'::regclass AND d.objsubid = a.attnum
-- enum[] and domains over enums carry the labels too
LEFT JOIN enums e ON e.enumtypid = CASE WHEN t.typcategory = 'A' THEN t.typelem
                                        WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
WHERE c.relkind IN ('r', 'v', 'm', 'f', 'p') AND n.nspname = ANY($1::text[]) AND {_SYSTEM_SCHEMAS}
  AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""

# Both ends: a key from an exposed table to auth.users is kept (the planner decides what to embed).
# conparentid = 0 skips the copies PostgreSQL makes of a partitioned table's keys for each partition.
_FOREIGN_KEYS = """
SELECT k.conname AS constraint, n.nspname AS schema, c.relname AS table,
       fn.nspname AS foreign_schema, fc.relname AS foreign_table,
       ARRAY(SELECT a.attname FROM unnest(k.conkey) WITH ORDINALITY AS u(attnum, ord)
             JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.attnum ORDER BY u.ord) AS columns,
       ARRAY(SELECT a.attname FROM unnest(k.confkey) WITH ORDINALITY AS u(attnum, ord)
             JOIN pg_attribute a ON a.attrelid = k.confrelid AND a.attnum = u.attnum ORDER BY u.ord)
           AS foreign_columns,
       EXISTS (SELECT FROM pg_constraint u WHERE u.conrelid = k.conrelid AND u.contype IN ('p', 'u')
                                             AND u.conkey @> k.conkey AND u.conkey <@ k.conkey) AS one_to_one
FROM pg_constraint k
JOIN pg_class c ON c.oid = k.conrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_class fc ON fc.oid = k.confrelid
JOIN pg_namespace fn ON fn.oid = fc.relnamespace
WHERE k.contype = 'f' AND k.conparentid = 0 AND (n.nspname = ANY($1::text[]) OR fn.nspname = ANY($1::text[]))
ORDER BY n.nspname, c.relname, k.conname
"""

# prokind 'f' only: no procedures, aggregates or window functions. Functions that SQL cannot call
# with plain values (trigger functions, handlers, anything taking `internal`) are left out.
_FUNCTIONS = f"""
SELECT n.nspname AS schema, p.proname AS name,
       format_type(p.prorettype, NULL) AS return_type, p.proretset AS returns_set,
       CASE WHEN rc.relkind IN ('r', 'v', 'm', 'f', 'p') THEN rn.nspname END AS return_schema,
       CASE WHEN rc.relkind IN ('r', 'v', 'm', 'f', 'p') THEN rc.relname END AS return_table,
       p.provolatile::text AS volatility, d.description,
       p.proargnames AS arg_names, p.proargmodes::text[] AS arg_modes, p.pronargdefaults AS defaults,
       ARRAY(SELECT format_type(u.type, NULL)
             FROM unnest(coalesce(p.proallargtypes, p.proargtypes::oid[])) WITH ORDINALITY AS u(type, ord)
             ORDER BY u.ord) AS arg_types,
       coalesce(p.proallargtypes, p.proargtypes::oid[]) AS arg_type_oids, p.prorettype AS return_type_oid
FROM pg_proc p
JOIN pg_namespace n ON n.oid = p.pronamespace
JOIN pg_type rt ON rt.oid = p.prorettype
LEFT JOIN pg_class rc ON rc.oid = rt.typrelid
LEFT JOIN pg_namespace rn ON rn.oid = rc.relnamespace
LEFT JOIN pg_description d ON d.objoid = p.oid AND d.classoid = 'pg_proc'::regclass AND d.objsubid = 0
WHERE p.prokind = 'f' AND n.nspname = ANY($1::text[]) AND {_SYSTEM_SCHEMAS}
  AND rt.typname NOT IN ('trigger', 'event_trigger', 'internal', 'language_handler', 'fdw_handler',
                         'index_am_handler', 'tsm_handler', 'table_am_handler')
  AND NOT 'internal'::regtype = ANY(p.proargtypes::oid[])
ORDER BY n.nspname, p.proname, p.oid
"""


@dataclass(frozen=True)
class ColumnInfo:
    name: str
    type: str  # format_type() text: "uuid", "text", "timestamp with time zone", "integer[]", "character varying(64)"
    nullable: bool
    has_default: bool  # a DEFAULT, an identity or a generated column: may be left out of an insert
    generated: bool  # GENERATED ALWAYS AS (...) STORED: may not be written at all
    position: int  # attnum: ordered, with gaps where columns were dropped
    enum_values: tuple[str, ...] = ()  # labels of an enum (or enum[] / domain over an enum) column
    description: str | None = None
    # pg_type oid, for the type generators (gatehouse.gen); differs between databases, so not compared
    type_oid: int = field(default=0, compare=False)
    identity_always: bool = False  # GENERATED ALWAYS AS IDENTITY: PostgreSQL refuses a value for it
    updatable: bool = True  # False for a view's computed column (pg_column_is_updatable)


@dataclass(frozen=True)
class TableInfo:
    schema: str
    name: str
    kind: TableKind
    columns: dict[str, ColumnInfo]  # in position order
    primary_key: tuple[str, ...]
    insertable: bool
    updatable: bool
    deletable: bool
    description: str | None = None


@dataclass(frozen=True)
class Relationship:
    """One foreign key: many rows of ``table`` to one row of ``foreign_table``."""

    constraint: str
    schema: str
    table: str
    columns: tuple[str, ...]
    foreign_schema: str
    foreign_table: str
    foreign_columns: tuple[str, ...]
    # the key's columns are also the table's primary key or a unique key (derived: not compared)
    one_to_one: bool = field(default=False, compare=False)


#: The types of a function's one unnamed parameter, which takes the whole request body (PostgREST's
#: "functions with a single unnamed parameter"): JSON, or raw text or bytes.
UNNAMED_TYPES = frozenset({"json", "jsonb", "text", "bytea"})


@dataclass(frozen=True)
class FunctionArg:
    name: str  # "" only for the single unnamed argument (UNNAMED_TYPES)
    type: str
    has_default: bool
    mode: ArgMode
    type_oid: int = field(default=0, compare=False)


@dataclass(frozen=True)
class FunctionInfo:
    schema: str
    name: str
    args: tuple[FunctionArg, ...]  # input arguments only, in order
    return_type: str
    returns_set: bool
    return_table: tuple[str, str] | None  # (schema, table) for `RETURNS [SETOF] some_table`
    volatility: Volatility
    description: str | None = None
    single_unnamed_arg: bool = False  # f(json), f(text), f(bytea), ...: the whole request body is the argument
    return_type_oid: int = field(default=0, compare=False)
    #: ``RETURNS TABLE (name type, ...)``: the columns, as (name, pg_type oid)
    table_columns: tuple[tuple[str, int], ...] = field(default=(), compare=False)


#: The request roles' own settings (``ALTER ROLE ... SET statement_timeout``), database-specific
#: ones over those for every database, as PostgreSQL itself ranks them.
_ROLE_SETTINGS = """
SELECT r.rolname AS role, cfg.item AS setting
FROM pg_db_role_setting s
JOIN pg_roles r ON r.oid = s.setrole
CROSS JOIN LATERAL unnest(s.setconfig) AS cfg(item)
WHERE r.rolname = ANY($1::text[])
  AND s.setdatabase IN (0, (SELECT oid FROM pg_database WHERE datname = current_database()))
ORDER BY s.setdatabase
"""
REQUEST_ROLES = ("anon", "authenticated", "service_role")
_UNITS_MS = {"us": 0.001, "ms": 1, "s": 1000, "min": 60_000, "h": 3_600_000, "d": 86_400_000}


def duration_ms(value: str) -> int | None:
    """A PostgreSQL duration setting (``3s``, ``8000``, ``1min``) in milliseconds; None if unreadable."""
    text = value.strip().strip("'\"").lower()
    number = text.rstrip("abcdefghijklmnopqrstuvwxyz").strip()
    unit = text[len(number):].strip() or "ms"
    try:
        return int(float(number) * _UNITS_MS[unit])
    except (ValueError, KeyError):
        return None


def role_timeouts(rows: Iterable[asyncpg.Record | dict[str, str]]) -> dict[str, int]:
    """Each request role's ``statement_timeout`` in milliseconds (0: none), from ``_ROLE_SETTINGS``."""
    found: dict[str, int] = {}
    for row in rows:
        name, _, value = str(row["setting"]).partition("=")
        if name.strip().lower() == "statement_timeout":
            ms = duration_ms(value)
            if ms is not None:
                found[str(row["role"])] = ms
    return found


class SchemaCache:
    """An immutable snapshot of the exposed schemas. Build it with ``load``, or by hand in tests."""

    def __init__(
        self,
        schemas: Iterable[str],
        tables: Iterable[TableInfo] = (),
        relationships: Iterable[Relationship] = (),
        functions: Iterable[FunctionInfo] = (),
        *,
        load_seconds: float = 0.0,
        statement_timeouts: dict[str, int] | None = None,
    ) -> None:
        self.schemas: tuple[str, ...] = tuple(schemas)
        self.load_seconds = load_seconds
        #: role -> milliseconds, for the request roles that have their own (``ALTER ROLE ... SET``).
        self.statement_timeouts: dict[str, int] = dict(statement_timeouts or {})
        self._tables = {(t.schema, t.name): t for t in sorted(tables, key=lambda t: (t.schema, t.name))}
        self._relationships: dict[tuple[str, str], list[Relationship]] = {}
        for rel in relationships:
            ends = {(rel.schema, rel.table), (rel.foreign_schema, rel.foreign_table)}
            for end in sorted(ends):
                self._relationships.setdefault(end, []).append(rel)
        self._functions: dict[tuple[str, str], list[FunctionInfo]] = {}
        for fn in sorted(functions, key=lambda f: (f.schema, f.name)):
            self._functions.setdefault((fn.schema, fn.name), []).append(fn)

    @classmethod
    async def load(cls, conn: Conn, schemas: tuple[str, ...]) -> SchemaCache:
        """Read the catalog for ``schemas``: one query per kind, in one consistent snapshot."""
        started = time.perf_counter()
        names = list(schemas)
        if conn.is_in_transaction():
            rows = [await conn.fetch(sql, names) for sql in (_TABLES, _COLUMNS, _FOREIGN_KEYS, _FUNCTIONS)]
            settings = await conn.fetch(_ROLE_SETTINGS, list(REQUEST_ROLES))
        else:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                rows = [await conn.fetch(sql, names) for sql in (_TABLES, _COLUMNS, _FOREIGN_KEYS, _FUNCTIONS)]
                settings = await conn.fetch(_ROLE_SETTINGS, list(REQUEST_ROLES))
        table_rows, column_rows, key_rows, function_rows = rows
        columns: dict[tuple[str, str], dict[str, ColumnInfo]] = {}
        for row in column_rows:
            columns.setdefault((row["schema"], row["table"]), {})[row["name"]] = ColumnInfo(
                name=row["name"],
                type=row["type"],
                nullable=row["nullable"],
                has_default=row["has_default"],
                generated=row["generated"],
                position=row["position"],
                enum_values=tuple(row["enum_values"] or ()),
                description=row["description"],
                type_oid=row["type_oid"],
                identity_always=row["identity_always"],
                updatable=row["updatable"],
            )
        tables = [
            TableInfo(
                schema=row["schema"],
                name=row["name"],
                kind=_KINDS[row["kind"]],
                columns=columns.get((row["schema"], row["name"]), {}),
                primary_key=tuple(row["primary_key"]),
                insertable=bool(row["updatable"] & _INSERT),
                updatable=bool(row["updatable"] & _UPDATE),
                deletable=bool(row["updatable"] & _DELETE),
                description=row["description"],
            )
            for row in table_rows
        ]
        relationships = [
            Relationship(
                constraint=row["constraint"],
                schema=row["schema"],
                table=row["table"],
                columns=tuple(row["columns"]),
                foreign_schema=row["foreign_schema"],
                foreign_table=row["foreign_table"],
                foreign_columns=tuple(row["foreign_columns"]),
                one_to_one=row["one_to_one"],
            )
            for row in key_rows
        ]
        functions = [fn for fn in map(_function, function_rows) if fn is not None]
        return cls(schemas, tables, relationships, functions, load_seconds=time.perf_counter() - started,
                   statement_timeouts=role_timeouts(settings))

    def table(self, schema: str, name: str) -> TableInfo | None:
        return self._tables.get((schema, name))

    def tables(self, schema: str) -> list[TableInfo]:
        """The schema's tables, views and the like, by name."""
        return [t for (s, _), t in self._tables.items() if s == schema]

    def relationships(self, schema: str, table: str) -> list[Relationship]:
        """Foreign keys with ``schema.table`` at either end; a self-reference is listed once."""
        return list(self._relationships.get((schema, table), ()))

    def functions(self, schema: str, name: str | None = None) -> list[FunctionInfo]:
        """The overloads of ``schema.name``, or every function of the schema when ``name`` is None."""
        if name is not None:
            return list(self._functions.get((schema, name), ()))
        return [fn for (s, _), overloads in self._functions.items() if s == schema for fn in overloads]

    def __repr__(self) -> str:
        return f"<SchemaCache schemas={self.schemas} tables={len(self._tables)} functions={len(self._functions)}>"


def _function(row: asyncpg.Record) -> FunctionInfo | None:
    """A callable function, or None when it cannot be called with named arguments."""
    types: list[str] = row["arg_types"]
    names: list[str] = row["arg_names"] or [""] * len(types)
    modes: list[str] = row["arg_modes"] or ["i"] * len(types)
    oids: list[int] = row["arg_type_oids"]
    params = list(zip(names, types, modes, oids, strict=True))
    inputs = [(name, type_, _ARG_MODES[mode], oid) for name, type_, mode, oid in params if mode in _ARG_MODES]
    first_default = len(inputs) - row["defaults"]
    args = tuple(
        FunctionArg(name=name, type=type_, has_default=i >= first_default, mode=mode, type_oid=oid)
        for i, (name, type_, mode, oid) in enumerate(inputs)
    )
    single_unnamed = len(args) == 1 and args[0].name == "" and args[0].type in UNNAMED_TYPES
    if not single_unnamed and any(arg.name == "" for arg in args):
        return None
    return FunctionInfo(
        schema=row["schema"],
        name=row["name"],
        args=args,
        return_type=row["return_type"],
        returns_set=row["returns_set"],
        return_table=(row["return_schema"], row["return_table"]) if row["return_table"] else None,
        volatility=_VOLATILITY[row["volatility"]],
        description=row["description"],
        single_unnamed_arg=single_unnamed,
        return_type_oid=row["return_type_oid"],
        table_columns=tuple((name, oid) for name, _, mode, oid in params if mode == "t"),
    )
