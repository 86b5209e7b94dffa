"""``GET /rest/v1/``: an OpenAPI 3.0.3 description of one exposed schema, built from the cache.

PostgREST serves Swagger 2.0; this is the same information in OpenAPI 3.0.3, which current
tooling reads. Descriptions keep PostgREST's ``<pk/>`` and ``<fk table=… column=…/>`` notes, which
some client generators look for.

The document follows the caller's privileges (``privileges.Privileges``); the JSON schema of each
column and argument comes from ``jsontypes``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import quote

from gatehouse import __version__
from gatehouse.rest.jsontypes import JSON, json_schema
from gatehouse.rest.privileges import OPERATIONS, PRIVILEGES_SQL, Privileges
from gatehouse.rest.schema import FunctionArg, FunctionInfo, Relationship, SchemaCache, TableInfo

#: ``rest/api.py`` imports the privilege look-up from here, beside the document it shapes.
__all__ = ["PRIVILEGES_SQL", "Privileges", "json_schema", "openapi"]

#: Query parameters with a meaning of their own: a column of that name gets no filter parameter.
_RESERVED_QUERY = frozenset({"select", "order", "limit", "offset", "or", "and", "not", "on_conflict", "columns"})
#: Component keys must match ^[a-zA-Z0-9.\-_]+$ (OpenAPI 3.0.3, Components Object).
_UNSAFE = re.compile(r"[^a-zA-Z0-9.\-_]")

_ERROR: JSON = {
    "type": "object",
    "description": "PostgREST's error body.",
    "required": ["code", "message"],
    "properties": {
        "code": {"type": "string", "description": "A SQLSTATE (23505) or a PostgREST code (PGRST116)."},
        "message": {"type": "string"},
        "details": {"type": "string", "nullable": True},
        "hint": {"type": "string", "nullable": True},
    },
}
_ERRORS = {
    "400": ("BadRequest", "Bad request: a malformed parameter or body, or a constraint the data broke."),
    "401": ("Unauthorized", "No valid token, or the anonymous role may not do this."),
    "403": ("Forbidden", "The role may not do this (grants or row-level security)."),
    "404": ("NotFound", "No such table, view or function."),
    "406": ("NotAcceptable", "A single object was asked for and there were 0 or several rows."),
    "409": ("Conflict", "A unique or foreign key constraint was violated."),
    "416": ("RangeNotSatisfiable", "The requested range is outside the result."),
}
_PREFER = {
    "preferRead": "`count=exact|planned|estimated`: report the total in `Content-Range`.",
    "preferInsert": "`return=minimal|headers-only|representation`, `resolution=merge-duplicates|ignore-duplicates`"
    " (upsert), `missing=default`, `count=exact|planned|estimated`, `tx=commit|rollback`.",
    "preferWrite": "`return=minimal|headers-only|representation`, `count=exact|planned|estimated`,"
    " `max-affected=n`, `handling=strict|lenient`, `tx=commit|rollback`.",
    "preferRpc": "`params=single-object`, `count=exact|planned|estimated`, `tx=commit|rollback`.",
}


def openapi(
    cache: SchemaCache, schema: str, *, server_url: str, title: str = "Gatehouse data API",
    privileges: Privileges | None = None,
) -> JSON:
    """The OpenAPI 3.0.3 document for ``schema``, which must be one of ``cache.schemas``.

    With ``privileges``, only what they allow is described; without, everything in the schema.
    """
    if schema not in cache.schemas:
        raise ValueError(f"schema {schema!r} is not exposed")
    return _Document(cache, schema, privileges).build(server_url, title)


class _Keys:
    """Unique component keys made of the characters OpenAPI allows."""

    def __init__(self, reserved: Iterable[str]) -> None:
        self._used = set(reserved)

    def __call__(self, *parts: str) -> str:
        base = ".".join(_UNSAFE.sub("_", part) or "_" for part in parts)
        key, n = base, 1
        while key in self._used:
            n += 1
            key = f"{base}_{n}"
        self._used.add(key)
        return key


def _ref(kind: str, key: str) -> JSON:
    return {"$ref": f"#/components/{kind}/{key}"}


def _common_parameters() -> JSON:
    def query(name: str, description: str, schema: JSON | None = None) -> JSON:
        return {"name": name, "in": "query", "required": False, "description": description,
                "schema": schema or {"type": "string"}}

    def header(name: str, description: str) -> JSON:
        return {"name": name, "in": "header", "required": False, "description": description,
                "schema": {"type": "string"}}

    params = {
        "select": query("select", "Columns and embedded relations to return: `id,name,cities(name)`."),
        "order": query("order", "Ordering: `name.desc.nullslast,id`."),
        "limit": query("limit", "At most this many rows.", {"type": "integer", "minimum": 0}),
        "offset": query("offset", "Skip this many rows.", {"type": "integer", "minimum": 0}),
        "on_conflict": query("on_conflict", "Upsert on this unique key: `col1,col2`."),
        "columns": query("columns", "Only these keys of the body are inserted: `a,b`."),
        "range": header("Range", "Rows to return, `0-9` (with `Range-Unit: items`)."),
        "rangeUnit": header("Range-Unit", "`items`."),
        "acceptProfile": header("Accept-Profile", "The schema to read from."),
        "contentProfile": header("Content-Profile", "The schema to write to."),
    }
    for key, description in _PREFER.items():
        params[key] = header("Prefer", description)
    return params


_EVERYTHING = frozenset(OPERATIONS)


def _supported(table: TableInfo) -> frozenset[str]:
    """The operations the relation itself allows (a view may be read-only)."""
    return frozenset(
        op for op, ok in zip(OPERATIONS, (True, table.insertable, table.updatable, table.deletable), strict=True) if ok
    )


class _Document:
    def __init__(self, cache: SchemaCache, schema: str, privileges: Privileges | None = None) -> None:
        self.cache = cache
        self.schema = schema
        self.privileges = privileges
        self.operations = {
            t.name: (privileges.table(t) if privileges is not None else _EVERYTHING) & _supported(t)
            for t in cache.tables(schema)
        }
        self.tables = [t for t in cache.tables(schema) if self.operations[t.name]]
        self.schema_keys = _Keys(["Error"])
        self.param_keys = _Keys(_common_parameters())
        self.table_keys = {t.name: self.schema_keys(t.name) for t in self.tables}
        self.schemas: JSON = {"Error": _ERROR}
        self.parameters: JSON = _common_parameters()

    def build(self, server_url: str, title: str) -> JSON:
        paths: JSON = {"/": self._root()}
        for table in self.tables:
            self.schemas[self.table_keys[table.name]] = self._row_schema(table, for_update=False)
            paths["/" + quote(table.name, safe="")] = self._table_path(table)
        functions: dict[str, list[FunctionInfo]] = {}
        for fn in self.cache.functions(self.schema):
            if self.privileges is None or self.privileges.may_call(fn):
                functions.setdefault(fn.name, []).append(fn)
        for name, overloads in functions.items():
            paths["/rpc/" + quote(name, safe="")] = self._rpc_path(overloads)
        tags = [{"name": t.name, **({"description": t.description} if t.description else {})} for t in self.tables]
        if functions:
            tags.append({"name": "rpc", "description": "Functions, called with named arguments."})
        return {
            "openapi": "3.0.3",
            "info": {
                "title": title,
                "version": __version__,
                "description": f"PostgREST-compatible data API for the `{self.schema}` schema.",
            },
            "servers": [{"url": server_url}],
            "security": [{"apikey": []}, {"apikey": [], "bearer": []}],
            "tags": tags,
            "paths": paths,
            "components": {
                "schemas": self.schemas,
                "parameters": self.parameters,
                "responses": {
                    key: {"description": text, "content": {"application/json": {"schema": _ref("schemas", "Error")}}}
                    for key, text in _ERRORS.values()
                },
                "securitySchemes": {
                    "apikey": {
                        "type": "apiKey",
                        "in": "header",
                        "name": "apikey",
                        "description": "The publishable (anon) or secret (service_role) key.",
                    },
                    "bearer": {
                        "type": "http",
                        "scheme": "bearer",
                        "bearerFormat": "JWT",
                        "description": "A user's access token; its `role` claim picks the database role.",
                    },
                },
            },
        }

    # -- tables ---------------------------------------------------------------------------------

    def _root(self) -> JSON:
        return {"get": {
            "summary": "This OpenAPI description",
            "responses": {"200": {"description": "OK", "content": {
                "application/openapi+json": {"schema": {"type": "object"}},
                "application/json": {"schema": {"type": "object"}},
            }}},
        }}

    def _row_schema(self, table: TableInfo, *, for_update: bool) -> JSON:
        notes = self._column_notes(table)
        properties: JSON = {}
        required: list[str] = []
        for column in table.columns.values():
            prop = json_schema(column.type, column.enum_values, nullable=column.nullable)
            text = "\n\n".join(part for part in (column.description, notes.get(column.name)) if part)
            if text:
                prop["description"] = text
            if column.generated:
                prop["readOnly"] = True
            properties[column.name] = prop
            if not (column.nullable or column.has_default or column.generated):
                required.append(column.name)
        result: JSON = {"type": "object", "properties": properties}
        if required and not for_update:
            result["required"] = required
        if table.description and not for_update:
            result["description"] = table.description
        return result

    def _column_notes(self, table: TableInfo) -> dict[str, str]:
        notes: dict[str, list[str]] = {}
        for name in table.primary_key:
            notes.setdefault(name, []).append("This is a Primary Key.<pk/>")
        keys: list[Relationship] = self.cache.relationships(table.schema, table.name)
        for rel in keys:
            if (rel.schema, rel.table) != (table.schema, table.name):
                continue
            for column, target in zip(rel.columns, rel.foreign_columns, strict=True):
                notes.setdefault(column, []).append(
                    f"This is a Foreign Key to `{rel.foreign_table}.{target}`."
                    f"<fk table='{rel.foreign_table}' column='{target}'/>"
                )
        return {name: "Note:\n" + "\n".join(lines) for name, lines in notes.items()}

    def _filters(self, table: TableInfo) -> list[JSON]:
        refs = []
        for column in table.columns.values():
            if column.name in _RESERVED_QUERY:
                continue
            key = self.param_keys("rowFilter", self.table_keys[table.name], column.name)
            self.parameters[key] = {
                "name": column.name,
                "in": "query",
                "required": False,
                "description": f"Filter on `{column.name}` ({column.type}): `operator.value`, e.g. `eq.1`, "
                "`in.(1,2)`, `is.null`, `not.eq.1`.",
                "schema": {"type": "string"},
            }
            refs.append(_ref("parameters", key))
        return refs

    def _table_path(self, table: TableInfo) -> JSON:
        row = _ref("schemas", self.table_keys[table.name])
        rows_content = {
            "application/json": {"schema": {"type": "array", "items": row}},
            "application/vnd.pgrst.object+json": {"schema": row},
        }
        filters = self._filters(table)
        common = [_ref("parameters", "select")]
        tags = [table.name]
        rows_header = {
            "Content-Range": {"description": "`0-24/3573458`, `*/0`, `0-24/*`.", "schema": {"type": "string"}},
        }
        allowed = self.operations[table.name]
        read: JSON = {
            "summary": f"Read rows of {table.name}",
            "tags": tags,
            "parameters": [
                *filters, *common, _ref("parameters", "order"), _ref("parameters", "limit"),
                _ref("parameters", "offset"), _ref("parameters", "range"), _ref("parameters", "rangeUnit"),
                _ref("parameters", "preferRead"), _ref("parameters", "acceptProfile"),
            ],
            "responses": {
                "200": {"description": "OK", "headers": rows_header, "content": rows_content},
                "206": {"description": "Partial Content", "headers": rows_header, "content": rows_content},
                **_error_refs("400", "401", "403", "404", "406", "416"),
            },
        }
        item: JSON = {"get": read} if "select" in allowed else {}
        if "insert" in allowed:
            item["post"] = {
                "summary": f"Insert (or upsert) rows into {table.name}",
                "tags": tags,
                "parameters": [
                    *common, _ref("parameters", "columns"), _ref("parameters", "on_conflict"),
                    _ref("parameters", "preferInsert"), _ref("parameters", "contentProfile"),
                ],
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": {"oneOf": [row, {"type": "array", "items": row}]}},
                }},
                "responses": {
                    "201": {"description": "Created (rows in the body with `return=representation`)",
                            "content": rows_content},
                    **_error_refs("400", "401", "403", "404", "406", "409"),
                },
            }
        written = {
            "200": {"description": "OK (with `return=representation`)", "content": rows_content},
            "204": {"description": "No Content"},
            **_error_refs("400", "401", "403", "404", "406", "409"),
        }
        write_params = [*filters, *common, _ref("parameters", "order"), _ref("parameters", "limit"),
                        _ref("parameters", "preferWrite"), _ref("parameters", "contentProfile")]
        if "update" in allowed:
            item["patch"] = {
                "summary": f"Update the rows of {table.name} that match the filters",
                "tags": tags,
                "parameters": write_params,
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": self._row_schema(table, for_update=True)},
                }},
                "responses": written,
            }
        if "delete" in allowed:
            item["delete"] = {
                "summary": f"Delete the rows of {table.name} that match the filters",
                "tags": tags,
                "parameters": write_params,
                "responses": written,
            }
        return item

    # -- functions ------------------------------------------------------------------------------

    def _rpc_path(self, overloads: list[FunctionInfo]) -> JSON:
        name = overloads[0].name
        first = overloads[0]
        description = next((fn.description for fn in overloads if fn.description), None)
        returns = self._returns(first)
        set_params = [_ref("parameters", p) for p in ("select", "order", "limit", "offset")]
        if not first.returns_set:
            set_params = []
        base: JSON = {"tags": ["rpc"], **({"description": description} if description else {})}

        bodies = [self._args_schema(fn) for fn in overloads]
        body_schema = bodies[0] if len(bodies) == 1 else {"oneOf": bodies}
        needs_body = any(_arg_required(a) for fn in overloads for a in fn.args) or first.single_unnamed_arg
        item: JSON = {"post": {
            **base,
            "summary": f"Call {name}",
            "parameters": [*set_params, _ref("parameters", "preferRpc"), _ref("parameters", "contentProfile")],
            "requestBody": {"required": needs_body, "content": {"application/json": {"schema": body_schema}}},
            "responses": {**returns, **_error_refs("400", "401", "403", "404", "406")},
        }}
        readable = [fn for fn in overloads if fn.volatility != "volatile" and not fn.single_unnamed_arg]
        if readable:
            params: dict[str, JSON] = {}
            for fn in readable:
                for arg in fn.args:
                    if arg.name in _RESERVED_QUERY or arg.name in params:
                        continue
                    schema = json_schema(arg.type)
                    params[arg.name] = {
                        "name": arg.name,
                        "in": "query",
                        "required": len(readable) == 1 and _arg_required(arg),
                        "description": f"Argument `{arg.name}` ({arg.type}).",
                        "schema": schema if schema.get("type") == "array" else {"type": "string"},
                    }
            item["get"] = {
                **base,
                "summary": f"Call {name} (read-only)",
                "parameters": [*params.values(), *set_params, _ref("parameters", "acceptProfile")],
                "responses": {**returns, **_error_refs("400", "401", "403", "404", "406")},
            }
        return item

    def _args_schema(self, fn: FunctionInfo) -> JSON:
        if fn.single_unnamed_arg:
            kind = {"text": "text/plain", "bytea": "application/octet-stream"}.get(fn.args[0].type)
            if kind is not None:
                return {"description": f"The whole body, sent as {kind}, is the function's argument."}
            return {"description": "Any JSON: the whole body is the function's argument."}
        properties = {arg.name: json_schema(arg.type) for arg in fn.args}
        result: JSON = {"type": "object", "properties": properties}
        required = [arg.name for arg in fn.args if _arg_required(arg)]
        if required:
            result["required"] = required
        return result

    def _returns(self, fn: FunctionInfo) -> JSON:
        if fn.return_type == "void":
            return {"200": {"description": "OK (no result)"}, "204": {"description": "No Content"}}
        item: JSON
        if fn.return_table is not None and fn.return_table[0] == self.schema and fn.return_table[1] in self.table_keys:
            item = _ref("schemas", self.table_keys[fn.return_table[1]])
        elif fn.return_table is not None or fn.return_type == "record":
            item = {"type": "object"}
        else:
            item = json_schema(fn.return_type)
        schema = {"type": "array", "items": item} if fn.returns_set else item
        return {"200": {"description": "OK", "content": {"application/json": {"schema": schema}}}}


def _arg_required(arg: FunctionArg) -> bool:
    return not arg.has_default


def _error_refs(*codes: str) -> JSON:
    return {code: _ref("responses", _ERRORS[code][0]) for code in codes}
