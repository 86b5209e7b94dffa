"""The ``Database`` type that supabase-js's generics take: ``createClient<Database>(url, key)``.

The shape is the one the Supabase CLI's ``supabase gen types typescript`` writes (its generator
lives in supabase/postgres-meta), so code written against those types compiles against these:
per schema ``Tables`` (Row / Insert / Update / Relationships), ``Views``, ``Functions`` (Args /
Returns / SetofOptions), ``Enums`` and ``CompositeTypes``; the ``Tables<…>``, ``TablesInsert<…>``,
``TablesUpdate<…>``, ``Enums<…>`` and ``CompositeTypes<…>`` helpers; and a ``Constants`` object
with each enum's labels. Where Gatehouse knows better it says so: a generated column is ``never``
in Insert and Update (PostgreSQL refuses a value for it), as an always-identity column is.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

from gatehouse.gen.catalog import Catalog, PgType
from gatehouse.rest.schema import ColumnInfo, FunctionInfo, TableInfo

#: The PostgREST version whose protocol ``/rest/v1`` speaks (spread to-many embeds, max-affected:
#: PostgREST 13). supabase-js reads it from ``__InternalSupabase`` to type those features.
POSTGREST_VERSION = "13"

_SCALARS = {
    "bool": "boolean",
    **dict.fromkeys(("int2", "int4", "int8", "float4", "float8", "numeric"), "number"),
    **dict.fromkeys(
        ("bytea", "bpchar", "varchar", "date", "text", "citext", "time", "timetz", "timestamp", "timestamptz",
         "uuid", "vector", "interval"),
        "string",
    ),
    "json": "Json",
    "jsonb": "Json",
    "void": "undefined",
    "record": "Record<string, unknown>",
}
_IDENTIFIER = re.compile(r"^[A-Za-z_$][A-Za-z0-9_$]*$")
_INDENT = "  "


def _str(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


def _key(name: str) -> str:
    """A property name: bare where TypeScript allows it, quoted otherwise."""
    return name if _IDENTIFIER.match(name) else _str(name)


def _by_name(names: Iterable[str]) -> list[str]:
    return sorted(names, key=lambda name: (name.casefold(), name))


def _columns(table: TableInfo) -> list[ColumnInfo]:
    return [table.columns[name] for name in _by_name(table.columns)]


def _nullable(ts_type: str, nullable: bool) -> str:
    # unknown already takes null
    return f"{ts_type} | null" if nullable and ts_type != "unknown" else ts_type


def _block(head: str, lines: list[str], close: str = "}", empty: str = "{}", open_: str = "{") -> list[str]:
    """``head {`` + the lines indented + ``}``; ``head {}`` when there are none."""
    if not lines:
        return [f"{head}{empty}"]
    return [f"{head}{open_}", *(_INDENT + line for line in lines), close]


class _Writer:
    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.exposed = set(catalog.schemas)
        self.composite_names = {(c.schema, c.name) for c in catalog.composites}

    # --- types -----------------------------------------------------------------------------------

    def ts_type(self, oid: int) -> str:
        found = self.catalog.resolve(oid)
        if found is None:
            return "unknown"
        if found.element:
            inner = self.ts_type(found.element)
            return f"({inner})[]" if "|" in inner else f"{inner}[]"
        if found.kind == "e":
            if found.schema in self.exposed:
                return f'Database[{_str(found.schema)}]["Enums"][{_str(found.name)}]'
            return " | ".join(map(_str, found.labels)) or "never"
        if found.relation_kind:
            return self._row_type(found)
        return _SCALARS.get(found.name, "unknown")

    def _row_type(self, found: PgType) -> str:
        """A composite or a table's row type: a reference into ``Database`` where it is generated."""
        schema, name = _str(found.schema), _str(found.name)
        if found.relation_kind == "c" and (found.schema, found.name) in self.composite_names:
            return f'Database[{schema}]["CompositeTypes"][{name}]'
        table = self.catalog.cache.table(found.schema, found.name) if found.schema in self.exposed else None
        if table is None:
            return "unknown"
        group = "Views" if table.kind in ("view", "materialized_view") else "Tables"
        return f'Database[{schema}][{_str(group)}][{name}]["Row"]'

    def _field(self, column: ColumnInfo, *, optional: bool, nullable: bool) -> str:
        mark = "?" if optional else ""
        return f"{_key(column.name)}{mark}: {_nullable(self.ts_type(column.type_oid), nullable)}"

    def _row(self, table: TableInfo) -> list[str]:
        return [self._field(c, optional=False, nullable=c.nullable) for c in _columns(table)]

    # --- tables and views ------------------------------------------------------------------------

    def table(self, table: TableInfo) -> list[str]:
        insert, update = [], []
        for column in _columns(table):
            if column.identity_always or column.generated:
                insert.append(f"{_key(column.name)}?: never")
                update.append(f"{_key(column.name)}?: never")
                continue
            insert.append(self._field(column, optional=column.nullable or column.has_default, nullable=column.nullable))
            update.append(self._field(column, optional=True, nullable=column.nullable))
        return _block(f"{_key(table.name)}: ", [
            *_block("Row: ", self._row(table)),
            *_block("Insert: ", insert),
            *_block("Update: ", update),
            *self.relationships(table),
        ])

    def view(self, view: TableInfo) -> list[str]:
        lines = _block("Row: ", self._row(view))
        if view.kind == "view" and view.updatable and view.deletable:
            writable = [
                self._field(c, optional=True, nullable=True) if c.updatable else f"{_key(c.name)}?: never"
                for c in _columns(view)
            ]
            lines += _block("Insert: ", writable) + _block("Update: ", writable)
        return _block(f"{_key(view.name)}: ", lines + self.relationships(view))

    def relationships(self, table: TableInfo) -> list[str]:
        """The foreign keys from ``table`` to relations of its own schema (as the Supabase CLI lists them)."""
        keys = sorted(
            (rel for rel in self.catalog.cache.relationships(table.schema, table.name)
             if (rel.schema, rel.table) == (table.schema, table.name) and rel.foreign_schema == table.schema),
            key=lambda rel: (rel.constraint, rel.foreign_table, rel.foreign_columns),
        )
        entries: list[str] = []
        for rel in keys:
            entries += _block("", [
                f"foreignKeyName: {_str(rel.constraint)}",
                f"columns: {json.dumps(list(rel.columns), ensure_ascii=False)}",
                f"isOneToOne: {'true' if rel.one_to_one else 'false'}",
                f"referencedRelation: {_str(rel.foreign_table)}",
                f"referencedColumns: {json.dumps(list(rel.foreign_columns), ensure_ascii=False)}",
            ], close="},")
        return _block("Relationships: ", entries, open_="[", close="]", empty="[]")

    # --- functions -------------------------------------------------------------------------------

    def function(self, name: str, overloads: list[FunctionInfo]) -> list[str]:
        signatures = sorted((self._signature(fn) for fn in overloads), key=lambda lines: "\n".join(lines))
        if len(signatures) == 1:
            return _block(f"{_key(name)}: ", signatures[0])
        lines = [f"{_key(name)}:"]
        for signature in signatures:
            lines += [f"{_INDENT}| {{", *(_INDENT * 3 + line for line in signature), f"{_INDENT * 2}}}"]
        return lines

    def _signature(self, fn: FunctionInfo) -> list[str]:
        """The lines inside one overload's ``{ Args; Returns; SetofOptions }``."""
        args = sorted(fn.args, key=lambda arg: (arg.name.casefold(), arg.name))
        if args:
            fields = "; ".join(
                f"{_key(arg.name) if arg.name else _str('')}{'?' if arg.has_default else ''}: "
                f"{self.ts_type(arg.type_oid)}"
                for arg in args
            )
            args_type = f"{{ {fields} }}"
        else:
            args_type = "never"
        lines = [f"Args: {args_type}"]
        returns = self._returns(fn)
        suffix = "[]" if fn.returns_set else ""
        if len(returns) == 1:
            lines.append(f"Returns: {returns[0]}{suffix}")
        else:
            lines += [f"Returns: {returns[0]}", *returns[1:-1], f"{returns[-1]}{suffix}"]
        return lines + self._setof_options(fn)

    def _returns(self, fn: FunctionInfo) -> list[str]:
        """The type of one returned row or value, as lines."""
        if fn.table_columns:  # RETURNS TABLE (...)
            fields = [f"{_key(name)}: {self.ts_type(oid)}" for name, oid in
                      sorted(fn.table_columns, key=lambda c: (c[0].casefold(), c[0]))]
            return _block("", fields)
        if fn.return_table is not None and fn.return_table[0] == fn.schema:
            table = self.catalog.cache.table(*fn.return_table)
            if table is not None:
                return _block("", self._row(table))
        return [self.ts_type(fn.return_type_oid)]

    def _setof_options(self, fn: FunctionInfo) -> list[str]:
        """What postgrest-js needs to type ``.rpc(...).select(...)`` on a function returning rows."""
        returned = self.catalog.resolve(fn.return_type_oid)
        if returned is None or not returned.relation_kind:
            return []
        source = "*"
        if len(fn.args) == 1:
            argument = self.catalog.resolve(fn.args[0].type_oid)
            if argument is not None and argument.relation_kind in ("r", "p", "f", "v", "m"):
                source = argument.name
        return _block("SetofOptions: ", [
            f"from: {_str(source)}",
            f"to: {_str(returned.name)}",
            f"isOneToOne: {'false' if fn.returns_set else 'true'}",
            f"isSetofReturn: {'true' if fn.returns_set else 'false'}",
        ])

    # --- schemas ---------------------------------------------------------------------------------

    def schema(self, schema: str) -> list[str]:
        catalog = self.catalog
        tables = [line for table in catalog.tables(schema) for line in self.table(table)]
        views = [line for view in catalog.views(schema) for line in self.view(view)]
        overloads: dict[str, list[FunctionInfo]] = {}
        for fn in catalog.cache.functions(schema):
            overloads.setdefault(fn.name, []).append(fn)
        functions = [line for name in _by_name(overloads) for line in self.function(name, overloads[name])]
        enums = [f"{_key(e.name)}: {' | '.join(map(_str, e.labels)) or 'never'}" for e in catalog.enums(schema)]
        composites: list[str] = []
        for composite in catalog.composite_types(schema):
            composites += _block(f"{_key(composite.name)}: ", [
                f"{_key(name)}: {_nullable(self.ts_type(oid), True)}" for name, oid in composite.attributes
            ])
        never = ["[_ in never]: never"]
        return _block(f"{_key(schema)}: ", [
            *_block("Tables: ", tables or never),
            *_block("Views: ", views or never),
            *_block("Functions: ", functions or never),
            *_block("Enums: ", enums or never),
            *_block("CompositeTypes: ", composites or never),
        ])

    def constants(self) -> list[str]:
        lines: list[str] = []
        for schema in self.catalog.schemas:
            enums = [f"{_key(e.name)}: [{', '.join(map(_str, e.labels))}]," for e in self.catalog.enums(schema)]
            lines += _block(f"{_key(schema)}: ", _block("Enums: ", enums, close="},", empty="{},"), close="},")
        return lines


_HELPERS = """\
type Schemas = Omit<Database, "__InternalSupabase">

type DefaultSchema = Schemas[{default}]

type RowsOf<S extends keyof Schemas> = Schemas[S]["Tables"] & Schemas[S]["Views"]

/** A table's or view's row: `Tables<"profiles">`, or `Tables<{{ schema: "other" }}, "things">`. */
export type Tables<
  NameOrSchema extends keyof (DefaultSchema["Tables"] & DefaultSchema["Views"]) | {{ schema: keyof Schemas }},
  Name extends NameOrSchema extends {{ schema: keyof Schemas }} ? keyof RowsOf<NameOrSchema["schema"]> : never = never,
> = NameOrSchema extends {{ schema: keyof Schemas }}
  ? RowsOf<NameOrSchema["schema"]>[Name] extends {{ Row: infer R }} ? R : never
  : NameOrSchema extends keyof (DefaultSchema["Tables"] & DefaultSchema["Views"])
    ? (DefaultSchema["Tables"] & DefaultSchema["Views"])[NameOrSchema] extends {{ Row: infer R }} ? R : never
    : never

/** What `.insert()` takes for a table: `TablesInsert<"profiles">`. */
export type TablesInsert<
  NameOrSchema extends keyof DefaultSchema["Tables"] | {{ schema: keyof Schemas }},
  Name extends NameOrSchema extends {{ schema: keyof Schemas }} ? keyof Schemas[NameOrSchema["schema"]]["Tables"] : never = never,
> = NameOrSchema extends {{ schema: keyof Schemas }}
  ? Schemas[NameOrSchema["schema"]]["Tables"][Name] extends {{ Insert: infer I }} ? I : never
  : NameOrSchema extends keyof DefaultSchema["Tables"]
    ? DefaultSchema["Tables"][NameOrSchema] extends {{ Insert: infer I }} ? I : never
    : never

/** What `.update()` takes for a table: `TablesUpdate<"profiles">`. */
export type TablesUpdate<
  NameOrSchema extends keyof DefaultSchema["Tables"] | {{ schema: keyof Schemas }},
  Name extends NameOrSchema extends {{ schema: keyof Schemas }} ? keyof Schemas[NameOrSchema["schema"]]["Tables"] : never = never,
> = NameOrSchema extends {{ schema: keyof Schemas }}
  ? Schemas[NameOrSchema["schema"]]["Tables"][Name] extends {{ Update: infer U }} ? U : never
  : NameOrSchema extends keyof DefaultSchema["Tables"]
    ? DefaultSchema["Tables"][NameOrSchema] extends {{ Update: infer U }} ? U : never
    : never

/** An enum's labels as a union: `Enums<"mood">`. */
export type Enums<
  NameOrSchema extends keyof DefaultSchema["Enums"] | {{ schema: keyof Schemas }},
  Name extends NameOrSchema extends {{ schema: keyof Schemas }} ? keyof Schemas[NameOrSchema["schema"]]["Enums"] : never = never,
> = NameOrSchema extends {{ schema: keyof Schemas }}
  ? Schemas[NameOrSchema["schema"]]["Enums"][Name]
  : NameOrSchema extends keyof DefaultSchema["Enums"]
    ? DefaultSchema["Enums"][NameOrSchema]
    : never

/** A composite type: `CompositeTypes<"address">`. */
export type CompositeTypes<
  NameOrSchema extends keyof DefaultSchema["CompositeTypes"] | {{ schema: keyof Schemas }},
  Name extends NameOrSchema extends {{ schema: keyof Schemas }}
    ? keyof Schemas[NameOrSchema["schema"]]["CompositeTypes"]
    : never = never,
> = NameOrSchema extends {{ schema: keyof Schemas }}
  ? Schemas[NameOrSchema["schema"]]["CompositeTypes"][Name]
  : NameOrSchema extends keyof DefaultSchema["CompositeTypes"]
    ? DefaultSchema["CompositeTypes"][NameOrSchema]
    : never
"""


def render(catalog: Catalog) -> str:
    """The whole ``database.types.ts`` module for the catalog's schemas."""
    writer = _Writer(catalog)
    default = "public" if "public" in catalog.schemas else catalog.schemas[0]
    database = _block("export type Database = ", [
        "// supabase-js reads the PostgREST version from here: createClient<Database>(url, key)",
        *_block("__InternalSupabase: ", [f"PostgrestVersion: {_str(POSTGREST_VERSION)}"]),
        *(line for schema in catalog.schemas for line in writer.schema(schema)),
    ])
    parts = [
        f"// Generated by `gatehouse gen types --lang typescript` from the schemas {', '.join(map(_str, catalog.schemas))}.",
        "// Regenerate it after changing the schema rather than editing it.",
        "",
        "export type Json = string | number | boolean | null | { [key: string]: Json | undefined } | Json[]",
        "",
        *database,
        "",
        _HELPERS.format(default=_str(default)),
        *_block("export const Constants = ", writer.constants(), close="} as const"),
    ]
    return "\n".join(parts) + "\n"
