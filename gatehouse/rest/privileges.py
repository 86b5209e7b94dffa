"""What the calling role may see and do in one schema, asked of the catalog as that role.

The OpenAPI document follows the caller's privileges, as PostgREST's ``openapi-mode =
follow-privileges`` does: a table or view appears if the caller's role may SELECT, INSERT, UPDATE
or DELETE it (column grants count), with only the operations it holds the privilege for; a
function appears if the role may EXECUTE it. ``PRIVILEGES_SQL`` asks the catalog as the caller,
in the request's round trip; what rows the policies then let through is for RLS to say at
request time.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from gatehouse.rest.schema import FunctionInfo, TableInfo

#: What the calling role may do in schema ``$1->>0``, for ``Database.run_as`` (run as the caller, so
#: the privilege functions answer for its role): ``{"usage", "tables": {name: [select, insert,
#: update, delete]}, "functions": [[name, [input arg types]]]}``.
PRIVILEGES_SQL = """
SELECT jsonb_build_object(
    'usage', coalesce((SELECT has_schema_privilege(n.oid, 'USAGE') FROM pg_namespace n WHERE n.nspname = $1->>0), false),
    'tables', coalesce((
        SELECT jsonb_object_agg(c.relname, jsonb_build_array(
            has_any_column_privilege(c.oid, 'SELECT'), has_any_column_privilege(c.oid, 'INSERT'),
            has_any_column_privilege(c.oid, 'UPDATE'), has_table_privilege(c.oid, 'DELETE')))
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = $1->>0 AND c.relkind IN ('r', 'v', 'm', 'f', 'p')), '{}'::jsonb),
    'functions', coalesce((
        SELECT jsonb_agg(jsonb_build_array(p.proname, ARRAY(
            SELECT format_type(u.type, NULL) FROM unnest(p.proargtypes::oid[]) WITH ORDINALITY AS u(type, ord)
            ORDER BY u.ord)))
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = $1->>0 AND p.prokind = 'f' AND has_function_privilege(p.oid, 'EXECUTE')), '[]'::jsonb)
)::text, 1::bigint, NULL::bigint
"""

#: The table privileges, in the order ``PRIVILEGES_SQL`` lists them.
OPERATIONS = ("select", "insert", "update", "delete")


@dataclass(frozen=True)
class Privileges:
    """What one role may do in one schema: operations per table, and the callable overloads."""

    tables: dict[str, frozenset[str]]
    functions: frozenset[tuple[str, tuple[str, ...]]]  # (name, input argument types)

    @classmethod
    def from_json(cls, body: str | None) -> Privileges:
        """From ``PRIVILEGES_SQL``'s answer; no USAGE on the schema means nothing at all."""
        data = orjson.loads(body or "{}")
        if not data.get("usage"):
            return cls({}, frozenset())
        tables = {
            name: frozenset(op for op, allowed in zip(OPERATIONS, flags, strict=True) if allowed)
            for name, flags in data.get("tables", {}).items()
        }
        functions = frozenset((name, tuple(types)) for name, types in data.get("functions", []))
        return cls({name: ops for name, ops in tables.items() if ops}, functions)

    def table(self, table: TableInfo) -> frozenset[str]:
        return self.tables.get(table.name, frozenset())

    def may_call(self, fn: FunctionInfo) -> bool:
        return (fn.name, tuple(arg.type for arg in fn.args)) in self.functions
