"""Render a plan as one SQL statement with every value bound.

Names come only from the plan (checked against the catalog) and are double-quoted; types come
from the catalog; every value the client sent travels in a single JSON array parameter (``$1``)
and is read back with ``$1::jsonb->>n`` and a cast. The statement always yields one row
``(body text, page_count bigint, total bigint)``: the JSON body built by PostgreSQL, the rows in
this page, and the total when a count was asked for.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from gatehouse.rest import plan as p
from gatehouse.rest.errors import rest_error
from gatehouse.rest.query import JsonStep
from gatehouse.rest.schema import FunctionArg

_COMPARE = {
    "eq": "=", "neq": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<=", "like": "LIKE", "ilike": "ILIKE",
    "match": "~", "imatch": "~*", "cs": "@>", "cd": "<@", "ov": "&&", "sl": "<<", "sr": ">>", "nxl": "&>",
    "nxr": "&<", "adj": "-|-", "isdistinct": "IS DISTINCT FROM",
}
_FTS = {"fts": "to_tsquery", "plfts": "plainto_tsquery", "phfts": "phraseto_tsquery", "wfts": "websearch_to_tsquery"}
_IS = {"null": "NULL", "true": "TRUE", "false": "FALSE", "unknown": "UNKNOWN"}


def ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def qualified(schema: str, name: str) -> str:
    return f"{ident(schema)}.{ident(name)}"


class Params:
    """Collects bound values; each method returns the SQL expression that reads one back."""

    def __init__(self) -> None:
        self.values: list[Any] = []

    def _add(self, value: Any) -> int:
        self.values.append(value)
        return len(self.values) - 1

    def text(self, value: str) -> str:
        return f"($1::jsonb->>{self._add(value)})"

    def typed(self, value: str | None, type_name: str) -> str:
        if value is None:
            return f"NULL::{type_name}"
        return f"({self.text(value)})::{type_name}"

    def array(self, values: Sequence[str], type_name: str) -> str:
        return f"(ARRAY(SELECT jsonb_array_elements_text($1::jsonb->{self._add(list(values))})))::{type_name}[]"

    def json(self, value: Any) -> str:
        return f"($1::jsonb->{self._add(value)})"

    def integer(self, value: int) -> str:
        return f"({self.text(str(int(value)))})::bigint"


def field_sql(ref: p.FieldRef, params: Params) -> str:
    sql = f"{ident(ref.alias)}.{ident(ref.column.name)}"
    for step in ref.json_path:
        sql = f"({sql}{_step(step, params)})"
    return sql


def _step(step: JsonStep, params: Params) -> str:
    key = str(int(step.key)) if isinstance(step.key, int) else params.text(step.key)
    return f"{step.arrow}{key}"


def condition_sql(condition: p.PCondition, params: Params) -> str:
    if isinstance(condition, p.PPresence):
        exists = _exists(condition.parent_alias, condition.embed, params)
        return exists if condition.negated else f"NOT {exists}"
    if isinstance(condition, p.PLogic):
        joiner = " AND " if condition.operator == "and" else " OR "
        inner = joiner.join(condition_sql(c, params) for c in condition.conditions) or (
            "TRUE" if condition.operator == "and" else "FALSE"
        )
        sql = f"({inner})"
    else:
        sql = _filter_sql(condition, params)
    return f"NOT {sql}" if condition.negated else sql


def _filter_sql(f: p.PFilter, params: Params) -> str:
    column = field_sql(f.ref, params)
    type_name = f.ref.type
    op = f.operator
    if op == "is":
        return f"({column} IS {_IS[str(f.value)]})"
    if op in _FTS:
        function = _FTS[op]
        language = f"{params.text(f.language)}::regconfig, " if f.language else ""
        return f"({column} @@ {function}({language}{params.text(str(f.value))}))"
    if op == "in":
        values = f.value if isinstance(f.value, tuple) else (f.value,)
        return f"({column} = ANY({params.array(values, type_name)}))"
    sql_op = _COMPARE[op]
    if f.quantifier:
        values = f.value if isinstance(f.value, tuple) else (f.value,)
        if op in ("like", "ilike"):
            values = tuple(v.replace("*", "%") for v in values)
            return f"({column} {sql_op} {f.quantifier.upper()}({params.array(values, 'text')}))"
        return f"({column} {sql_op} {f.quantifier.upper()}({params.array(values, type_name)}))"
    value = str(f.value)
    if op in ("like", "ilike"):
        return f"({column} {sql_op} {params.text(value.replace('*', '%'))})"
    if op in ("match", "imatch"):
        return f"({column} {sql_op} {params.text(value)})"
    return f"({column} {sql_op} {params.typed(value, type_name)})"


def _where(conditions: Sequence[p.PCondition], params: Params, extra: Sequence[str] = ()) -> str:
    parts = [condition_sql(c, params) for c in conditions] + list(extra)
    return " WHERE " + " AND ".join(parts) if parts else ""


def _order(order: Sequence[p.POrder], params: Params, spread: dict[tuple[str, str], str] | None = None) -> str:
    if not order:
        return ""
    terms = []
    for term in order:
        sql = field_sql(term.ref, params)
        if term.embed is not None:  # a to-one embed's column: the one related row's value
            child = term.embed.node
            known = (spread or {}).get((child.alias, term.ref.column.name)) if not term.ref.json_path else None
            if known is not None:  # a spread's column, already joined
                sql = known
            else:
                source = f"{qualified(child.table.schema, child.table.name)} AS {ident(child.alias)}"
                where = _where((), params, _join_sql(term.parent_alias, term.embed))
                sql = f"(SELECT {sql} FROM {source}{where} LIMIT 1)"
        if term.direction:
            sql += f" {term.direction.upper()}"
        if term.nulls:
            sql += f" NULLS {term.nulls.upper()}"
        terms.append(sql)
    return " ORDER BY " + ", ".join(terms)


def _page(node: p.ReadNode, params: Params) -> str:
    sql = ""
    if node.limit is not None:
        sql += f" LIMIT {params.integer(node.limit)}"
    if node.offset:
        sql += f" OFFSET {params.integer(node.offset)}"
    return sql


# -- what a node selects: columns, aggregates, embeds and spreads ----------------------------------

#: How a to-many spread's per-parent aggregate combines when the parent is grouped too.
_COMBINE = {"count": "sum", "sum": "sum", "max": "max", "min": "min"}


@dataclass
class _Item:
    """One value a node outputs, before it is rendered: ``expr AS name``.

    ``aggregate``: the function still to apply where the node is rendered (``expr`` is then its
    input, ``*`` for ``count(*)``); ``combine``: a value already aggregated per parent row (a
    to-many spread's), combined with this function when the rendering level is grouped; ``json``:
    a JSON value (grouped by its text); ``keys``: what to group by instead of the value (an
    embed's join columns). ``name`` None is ``alias.*``.
    """

    name: str | None
    expr: str
    aggregate: p.OutAggregate | None = None
    combine: str | None = None
    json: bool = False
    keys: tuple[str, ...] | None = None


@dataclass
class _Flat:
    items: list[_Item] = field(default_factory=list)
    joins: list[str] = field(default_factory=list)
    #: A to-one spread's plain columns, by (child alias, column): ``order=rel(col)`` reads them there.
    columns: dict[tuple[str, str], str] = field(default_factory=dict)
    #: The node's own plain columns: name -> index in ``items``.
    plain: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class _Selected:
    items: str
    joins: str
    group: str  # " GROUP BY ..." or ""
    grouped: bool
    columns: dict[tuple[str, str], str]


def _grouped(node: p.ReadNode) -> bool:
    """Whether ``node`` aggregates: an aggregate of its own or in a to-one spread it holds."""
    return any(
        isinstance(o, p.OutAggregate) or (isinstance(o, p.OutEmbed) and o.spread and o.to_one and _grouped(o.node))
        for o in node.select
    )


def _flatten(node: p.ReadNode, params: Params, *, expand_star: bool) -> _Flat:
    flat = _Flat()
    for out in node.select:
        if isinstance(out, p.OutStar):
            if expand_star:
                for c in out.columns:
                    flat.plain.setdefault(c.name, len(flat.items))
                    flat.items.append(_Item(c.name, f"{ident(out.alias)}.{ident(c.name)}"))
            else:
                flat.items.append(_Item(None, f"{ident(out.alias)}.*"))
        elif isinstance(out, p.OutColumn):
            sql = field_sql(out.ref, params)
            if not out.ref.json_path and not out.cast:
                flat.plain.setdefault(out.ref.column.name, len(flat.items))
            flat.items.append(_Item(out.name, f"({sql})::{out.cast}" if out.cast else sql))
        elif isinstance(out, p.OutAggregate):
            sql = "*" if out.ref is None else field_sql(out.ref, params)
            if out.ref is not None and out.input_cast:
                sql = f"({sql})::{out.input_cast}"
            flat.items.append(_Item(out.name, sql, out))
        elif not out.spread:
            keys = tuple(f"{ident(node.alias)}.{ident(parent)}" for parent, _ in out.join.pairs)
            flat.items.append(_Item(out.name, _embed_sql(node, out, params), json=True, keys=keys))
        elif out.to_one:
            _spread_one(node, out, params, flat)
        else:
            _spread_many(node, out, params, flat)
    return flat


def _spread_source(parent: p.ReadNode, embed: p.OutEmbed, child: _Flat, params: Params) -> str:
    node = embed.node
    source = f"{qualified(node.table.schema, node.table.name)} AS {ident(node.alias)}{''.join(child.joins)}"
    return f"{source}{_where(node.conditions, params, _join_sql(parent.alias, embed) + _inner_exists(node, params))}"


def _spread_one(parent: p.ReadNode, embed: p.OutEmbed, params: Params, flat: _Flat) -> None:
    """``...rel(cols)`` to one row: a lateral join of that row; its values join the parent's own,
    aggregates still to apply (``count()`` counts the rows that have one)."""
    child = _flatten(embed.node, params, expand_star=True)
    if not child.items:
        return
    lateral = ident(f"_s{embed.node.alias}")
    values = ", ".join(f"{'1' if item.expr == '*' else item.expr} AS c{i}" for i, item in enumerate(child.items))
    flat.joins.append(f" LEFT JOIN LATERAL (SELECT {values} FROM {_spread_source(parent, embed, child, params)} "
                      f"LIMIT 1) AS {lateral} ON TRUE")
    for i, item in enumerate(child.items):
        flat.items.append(_Item(item.name, f"{lateral}.c{i}", item.aggregate, item.combine, item.json))
    for name, i in child.plain.items():
        flat.columns[(embed.node.alias, name)] = f"{lateral}.c{i}"


def _spread_many(parent: p.ReadNode, embed: p.OutEmbed, params: Params, flat: _Flat) -> None:
    """``...rel(cols)`` to many rows (PostgREST 13): each column becomes the array of the children's
    values (in the embed's order); an aggregate is the children's, one value per parent row."""
    node = embed.node
    if node.limit is not None or node.offset:
        raise rest_error("PGRST100", f"'{embed.name}' is spread: it takes no limit or offset", 400,
                         hint="Embed it without ... to page through its rows.")
    child = _flatten(node, params, expand_star=True)
    if not child.items:
        return
    lateral = ident(f"_s{node.alias}")
    order = _order(node.order, params, child.columns)
    values = []
    for i, item in enumerate(child.items):
        if item.aggregate is not None:
            values.append(f"{_aggregate_sql(item)} AS c{i}")
            combine = None if item.aggregate.cast else _COMBINE.get(item.aggregate.function)
            flat.items.append(_Item(item.name, f"{lateral}.c{i}", combine=combine))
        else:
            values.append(f"coalesce(json_agg({item.expr}{order}), '[]') AS c{i}")
            flat.items.append(_Item(item.name, f"{lateral}.c{i}", json=True))
    flat.joins.append(f" LEFT JOIN LATERAL (SELECT {', '.join(values)} FROM "
                      f"{_spread_source(parent, embed, child, params)}) AS {lateral} ON TRUE")


def _aggregate_sql(item: _Item) -> str:
    assert item.aggregate is not None
    sql = f"{item.aggregate.function}({item.expr})"
    return f"({sql})::{item.aggregate.cast}" if item.aggregate.cast else sql


def _select(node: p.ReadNode, params: Params) -> _Selected:
    """The node's select list, the joins its spreads need, and its GROUP BY: with an aggregate,
    every other value groups (an embed by its join columns, a JSON value by its text)."""
    grouped = _grouped(node)
    flat = _flatten(node, params, expand_star=grouped)
    items: list[str] = []
    group: list[str] = []
    for item in flat.items:
        sql = item.expr
        if item.aggregate is not None:
            sql = _aggregate_sql(item)
        elif grouped and item.combine:
            sql = f"{item.combine}({item.expr})"
        elif grouped and item.keys is not None:
            group += [key for key in item.keys if key not in group]
        elif grouped and item.json:
            group.append(f"({item.expr})::text")
            sql = f"(({item.expr})::text)::json"
        elif grouped:
            group.append(item.expr)
        items.append(sql if item.name is None else f"{sql} AS {ident(item.name)}")
    return _Selected(
        ", ".join(items) or "NULL AS _nothing", "".join(flat.joins),
        " GROUP BY " + ", ".join(group) if group else "", grouped, flat.columns,
    )


def _join_sql(parent_alias: str, embed: p.OutEmbed) -> list[str]:
    child = embed.node.alias
    return [f"{ident(child)}.{ident(c)} = {ident(parent_alias)}.{ident(par)}" for par, c in embed.join.pairs]


def _embed_sql(parent: p.ReadNode, embed: p.OutEmbed, params: Params) -> str:
    node = embed.node
    selected = _select(node, params)
    source = f"{qualified(node.table.schema, node.table.name)} AS {ident(node.alias)}{selected.joins}"
    inner = (
        f"SELECT {selected.items} FROM {source}"
        f"{_where(node.conditions, params, _join_sql(parent.alias, embed) + _inner_exists(node, params))}"
        f"{selected.group}"
    )
    if embed.to_one:
        return f"(SELECT row_to_json(_e) FROM ({inner} LIMIT 1) AS _e)"
    inner += _order(node.order, params, selected.columns) + _page(node, params)
    return f"(SELECT coalesce(json_agg(_e), '[]') FROM ({inner}) AS _e)"


def _inner_exists(node: p.ReadNode, params: Params) -> list[str]:
    """``!inner`` embeds keep only parent rows that have a matching child."""
    return [_exists(node.alias, out, params) for out in node.select if isinstance(out, p.OutEmbed) and out.inner]


def _exists(parent_alias: str, out: p.OutEmbed, params: Params) -> str:
    """Whether the parent row has a child of the embed that passes the child's own filters."""
    child = out.node
    source = f"{qualified(child.table.schema, child.table.name)} AS {ident(child.alias)}"
    where = _where(child.conditions, params, _join_sql(parent_alias, out) + _inner_exists(child, params))
    return f"EXISTS (SELECT 1 FROM {source}{where})"


def _body(single: bool) -> str:
    return "(json_agg(_r)->>0)" if single else "coalesce(json_agg(_r), '[]')::text"


def read_sql(node: p.ReadNode, params: Params, *, source: str | None = None, single: bool = False,
             count: bool = False) -> str:
    """SELECT over ``node`` (from its table, or from ``source``, e.g. a mutation's CTE)."""
    table = source or qualified(node.table.schema, node.table.name)
    selected = _select(node, params)
    from_ = f"{table} AS {ident(node.alias)}{selected.joins}"
    where = _where(node.conditions, params, _inner_exists(node, params))
    rows = (f"SELECT {selected.items} FROM {from_}{where}{selected.group}{_order(node.order, params, selected.columns)}"
            f"{_page(node, params)}")
    if not count:
        total = "NULL::bigint"
    elif selected.grouped:  # the groups, not the rows
        total = f"(SELECT count(*) FROM (SELECT 1 FROM {from_}{where}{selected.group or ' GROUP BY ()'}) AS _c)"
    else:
        total = f"(SELECT count(*) FROM {table} AS {ident(node.alias)}{where})"
    return f"SELECT {_body(single)} AS body, count(*) AS page_count, {total} AS total FROM ({rows}) AS _r"


def _record_type(columns: Sequence[Any]) -> str:
    return ", ".join(f"{ident(c.name)} {c.type}" for c in columns)


def write_sql(plan: p.WritePlan, params: Params, *, single: bool = False, max_affected: int | None = None) -> str:
    """The mutation and its answer in one statement.

    ``max_affected`` (``Prefer: max-affected=N, handling=strict``) adds a guard that raises once
    the mutation has changed more rows than that: the error aborts the statement, so nothing
    it changed is kept (PostgREST rolls its transaction back for the same reason).
    """
    mutation, answer = _write_parts(plan, params, single)
    if max_affected is None:
        return f"{mutation} {answer}"
    return (
        f"{mutation}, _w AS ({answer}) SELECT body, page_count, total FROM _w "
        f"WHERE gatehouse.max_affected((SELECT count(*) FROM _m), {int(max_affected)})"
    )


def _write_parts(plan: p.WritePlan, params: Params, single: bool) -> tuple[str, str]:
    """``WITH _m AS (the mutation)`` and the SELECT that answers from ``_m``."""
    table = qualified(plan.table.schema, plan.table.name)
    alias = ident(plan.alias)
    returning = f"RETURNING {alias}.*" if plan.returning is not None else "RETURNING 1"
    if plan.kind == "insert":
        mutation = _insert_sql(plan, params, f"{table} AS {alias}", returning)
    elif plan.kind == "update":
        assignments = ", ".join(f"{ident(c.name)} = _b.{ident(c.name)}" for c in plan.columns)
        mutation = (
            f"WITH _m AS (UPDATE {table} AS {alias} SET {assignments} "
            f"FROM jsonb_to_record({params.json(plan.rows[0])}) AS _b({_record_type(plan.columns)})"
            f"{_where(plan.conditions, params)} {returning})"
        )
    else:
        mutation = f"WITH _m AS (DELETE FROM {table} AS {alias}{_where(plan.conditions, params)} {returning})"
    if plan.returning is None:
        return mutation, "SELECT NULL::text AS body, count(*) AS page_count, NULL::bigint AS total FROM _m"
    return mutation, read_sql(plan.returning, params, source="_m", single=single)


def _insert_sql(plan: p.WritePlan, params: Params, target: str, returning: str) -> str:
    """One INSERT for all rows; with ``missing=default`` one per set of keys, so absent keys take defaults."""
    groups: list[tuple[tuple[Any, ...], list[dict[str, Any]]]]
    if plan.missing_default:
        named = {c.name: c for c in plan.columns}
        by_keys: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for row in plan.rows:
            by_keys.setdefault(tuple(name for name in named if name in row), []).append(row)
        groups = [(tuple(named[k] for k in keys), rows) for keys, rows in by_keys.items()]
    else:
        groups = [(plan.columns, plan.rows)]
    inserts = []
    for columns, rows in groups:
        if not columns:  # {}: every column takes its default, one row at a time
            inserts += [f"INSERT INTO {target} DEFAULT VALUES{_conflict_sql(plan, columns)} {returning}"] * len(rows)
            continue
        names = ", ".join(ident(c.name) for c in columns)
        source = f"SELECT {names} FROM jsonb_to_recordset({params.json(rows)}) AS _b({_record_type(columns)})"
        inserts.append(f"INSERT INTO {target} ({names}) {source}{_conflict_sql(plan, columns)} {returning}")
    ctes = [f"_m{index} AS ({insert})" for index, insert in enumerate(inserts)]
    union = " UNION ALL ".join(f"SELECT * FROM _m{i}" for i in range(len(ctes)))
    return f"WITH {', '.join(ctes)}, _m AS ({union})"


def _conflict_sql(plan: p.WritePlan, columns: Sequence[Any]) -> str:
    if plan.resolution is None:
        return ""
    target = ", ".join(ident(name) for name in plan.on_conflict)
    updates = [c for c in columns if c.name not in plan.on_conflict]
    if plan.resolution == "ignore-duplicates" or not updates:
        return f" ON CONFLICT ({target}) DO NOTHING"
    sets = ", ".join(f"{ident(c.name)} = EXCLUDED.{ident(c.name)}" for c in updates)
    return f" ON CONFLICT ({target}) DO UPDATE SET {sets}"


def call_sql(plan: p.CallPlan, params: Params, *, single: bool = False, count: bool = False) -> str:
    fn = plan.function
    if plan.whole_body:
        args = _whole_body(fn.args[0].type, plan.args[""], params)
    else:
        declared = {arg.name: arg for arg in fn.args}
        ordered = sorted(plan.args.items(), key=lambda item: declared[item[0]].mode == "variadic")  # VARIADIC last
        args = ", ".join(_named_arg(declared[name], value, params) for name, value in ordered)
    call = f"{qualified(fn.schema, fn.name)}({args})"
    if plan.result is not None:
        return read_sql(plan.result, params, source=call, single=single or not fn.returns_set, count=count)
    if fn.return_type == "void":
        return f"SELECT NULL::text AS body, 0::bigint AS page_count, NULL::bigint AS total FROM (SELECT {call}) AS _v"
    if fn.returns_set:
        return f"SELECT coalesce(json_agg(_v), '[]')::text AS body, count(*) AS page_count, NULL::bigint AS total FROM {call} AS _v"
    return f"SELECT to_json({call})::text AS body, 1::bigint AS page_count, NULL::bigint AS total"


def _whole_body(type_name: str, body: Any, params: Params) -> str:
    if type_name in ("json", "jsonb"):
        return f"({params.json(body)})::{type_name}"
    if type_name == "bytea":  # bytes travel base64-encoded in the JSON array of values
        return f"decode({params.text(base64.b64encode(body).decode())}, 'base64')"
    return f"({params.text(body)})::{type_name}"


def _named_arg(arg: FunctionArg, value: Any, params: Params) -> str:
    """``name := value``; a JSON array for an array parameter is converted as PostgreSQL converts
    JSON to a record (nested arrays too), and a variadic parameter takes its array (a single value
    is an array of one: ``?v=a``)."""
    variadic = arg.mode == "variadic"
    if variadic and not isinstance(value, list | dict):
        value = [value]
    if arg.type.endswith("[]") and isinstance(value, list):
        sql = f"(SELECT _v FROM jsonb_to_record({params.json({'_v': value})}) AS _a(_v {arg.type}))"
    else:
        sql = params.typed(_arg_text(value), arg.type)
    return f"{'VARIADIC ' if variadic else ''}{ident(arg.name)} := {sql}"


def _arg_text(value: Any) -> str | None:
    """A JSON argument as the text PostgreSQL parses for the parameter's type."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return repr(value) if isinstance(value, float) else str(value)
    return orjson.dumps(value).decode()
