"""Check a parsed request against the schema cache and resolve it into a plan.

Every table, column, function and relationship named by the client is looked up here; what
comes out refers only to catalog objects, so ``sqlgen`` can quote names it knows exist. Unknown
names become PostgREST's errors (42703, PGRST200, PGRST204, PGRST205, ...), never SQL errors.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from gatehouse.core.errors import GatehouseError
from gatehouse.rest import query as q
from gatehouse.rest.errors import rest_error
from gatehouse.rest.schema import ColumnInfo, FunctionInfo, Relationship, SchemaCache, TableInfo

#: Cast targets are type names only: letters, digits, underscores, spaces, an optional [].
_CAST = re.compile(r"^[a-z_][a-z0-9_]*( [a-z_][a-z0-9_]*)*(\[\])?$")


@dataclass(frozen=True)
class FieldRef:
    alias: str
    column: ColumnInfo
    json_path: tuple[q.JsonStep, ...] = ()

    @property
    def type(self) -> str:
        if not self.json_path:
            return self.column.type
        return "text" if self.json_path[-1].arrow == "->>" else "jsonb"


@dataclass(frozen=True)
class OutColumn:
    ref: FieldRef
    name: str
    cast: str | None = None


@dataclass(frozen=True)
class OutAggregate:
    """``function(ref::input_cast)::cast AS name``; ``ref`` None: ``count(*)`` of the rows."""

    name: str
    function: str
    ref: FieldRef | None
    input_cast: str | None = None
    cast: str | None = None


@dataclass(frozen=True)
class OutStar:
    alias: str
    columns: tuple[ColumnInfo, ...]


@dataclass(frozen=True)
class Join:
    """``child.child_col = parent.parent_col`` for each pair."""

    pairs: tuple[tuple[str, str], ...]  # (parent column, child column)


@dataclass(frozen=True)
class OutEmbed:
    name: str
    node: ReadNode
    join: Join
    to_one: bool
    inner: bool
    #: ``...relation(...)``: its columns join the parent's object (to-one), or become arrays of the
    #: children's values (to-many), as PostgREST 13.
    spread: bool = False


Out = OutColumn | OutStar | OutEmbed | OutAggregate


@dataclass(frozen=True)
class PFilter:
    ref: FieldRef
    operator: str
    value: str | tuple[str, ...]
    negated: bool = False
    quantifier: str | None = None
    language: str | None = None


@dataclass(frozen=True)
class PLogic:
    operator: Literal["and", "or"]
    conditions: tuple[PCondition, ...]
    negated: bool = False


@dataclass(frozen=True)
class PPresence:
    """``rel=not.is.null`` / ``rel=is.null`` on an embedded resource: the parent row has (or has
    no) matching child, the child's own filters included."""

    parent_alias: str
    embed: OutEmbed
    negated: bool = False  # True: the child must exist (``not.is.null``)


PCondition = PFilter | PLogic | PPresence


@dataclass(frozen=True)
class POrder:
    ref: FieldRef
    direction: str | None
    nulls: str | None
    #: Ordering by a to-one embedded resource's column (``rel(col)``): that embed (``ref`` is the
    #: child's column, under the child's alias).
    embed: OutEmbed | None = None
    parent_alias: str = ""


@dataclass(frozen=True)
class ReadNode:
    table: TableInfo
    alias: str
    select: tuple[Out, ...]
    conditions: tuple[PCondition, ...] = ()
    order: tuple[POrder, ...] = ()
    limit: int | None = None
    offset: int | None = None


@dataclass(frozen=True)
class WritePlan:
    kind: Literal["insert", "update", "delete"]
    table: TableInfo
    columns: tuple[ColumnInfo, ...] = ()
    rows: list[dict[str, Any]] = field(default_factory=list)
    conditions: tuple[PCondition, ...] = ()
    on_conflict: tuple[str, ...] = ()
    resolution: str | None = None
    returning: ReadNode | None = None
    missing_default: bool = False
    alias: str = "_w"


@dataclass(frozen=True)
class CallPlan:
    function: FunctionInfo
    args: dict[str, Any]
    whole_body: bool
    result: ReadNode | None  # for functions returning a table's rows


class _Aliases:
    def __init__(self) -> None:
        self.count = 0

    def next(self) -> str:
        alias = f"_t{self.count}"
        self.count += 1
        return alias


def table_not_found(schema: str, name: str) -> GatehouseError:
    return rest_error(
        "PGRST205", f"Could not find the table '{schema}.{name}' in the schema cache", 404,
        hint="Check the table name, or reload the schema cache after creating it.",
    )


def column_not_found(table: TableInfo, name: str) -> GatehouseError:
    return rest_error("42703", f"column {table.name}.{name} does not exist", 400)


def _column(table: TableInfo, name: str) -> ColumnInfo:
    column = table.columns.get(name)
    if column is None:
        raise column_not_found(table, name)
    return column


def _field(table: TableInfo, alias: str, source: q.Field) -> FieldRef:
    return FieldRef(alias, _column(table, source.name), source.json_path)


def _cast(cast: str | None) -> str | None:
    if cast is None:
        return None
    if not _CAST.match(cast.lower()):
        raise rest_error("PGRST100", f"'{cast}' is not a type name that can be cast to", 400)
    return cast.lower()


def _condition(table: TableInfo, alias: str, condition: q.Condition,
               embeds: dict[str, OutEmbed] | None = None) -> PCondition:
    if isinstance(condition, q.Logic):
        return PLogic(
            condition.operator, tuple(_condition(table, alias, c, embeds) for c in condition.conditions),
            condition.negated,
        )
    embed = (embeds or {}).get(condition.field.name)
    if embed is not None and not condition.field.json_path and condition.field.name not in table.columns:
        if condition.operator != "is" or condition.value != "null" or condition.quantifier:
            raise rest_error("PGRST100", f"'{condition.field.name}' is an embedded resource: it can only be "
                             "filtered by its presence, with is.null or not.is.null", 400)
        return PPresence(alias, embed, condition.negated)
    return PFilter(
        _field(table, alias, condition.field), condition.operator, condition.value, condition.negated,
        condition.quantifier, condition.language,
    )


def _counts_rows(table: TableInfo, item: q.SelectItem) -> bool:
    """A bare ``count`` on a table without such a column means ``count()`` (PostgREST's
    ``cities(count)``)."""
    return (isinstance(item, q.Column) and item.field.name == "count" and not item.field.json_path
            and "count" not in table.columns)


def _output_name(item: q.Column) -> str:
    if item.alias:
        return item.alias
    if item.field.json_path:
        return str(item.field.json_path[-1].key)
    return item.field.name


class Planner:
    def __init__(self, cache: SchemaCache, schema: str, *, max_rows: int | None, aggregates: bool = False) -> None:
        self.cache = cache
        self.schema = schema
        self.max_rows = max_rows
        self.aggregates = aggregates
        self.aliases = _Aliases()

    def table(self, name: str) -> TableInfo:
        table = self.cache.table(self.schema, name)
        if table is None:
            raise table_not_found(self.schema, name)
        return table

    # -- reads ----------------------------------------------------------------------------------

    def read(self, table: TableInfo, query: q.Query, *, alias: str | None = None) -> ReadNode:
        return self._node(table, query.select, query.top, query.embedded, (), alias or self.aliases.next(), top=True)

    def _node(
        self,
        table: TableInfo,
        select: tuple[q.SelectItem, ...],
        shaping: q.Shaping,
        embedded: dict[tuple[str, ...], q.Shaping],
        path: tuple[str, ...],
        alias: str,
        *,
        top: bool = False,
    ) -> ReadNode:
        outputs: list[Out] = []
        for item in select:
            if isinstance(item, q.Star):
                outputs.append(OutStar(alias, tuple(table.columns.values())))
            elif isinstance(item, q.Aggregate) or _counts_rows(table, item):
                outputs.append(self._aggregate(table, alias, item))
            elif isinstance(item, q.Column):
                outputs.append(OutColumn(_field(table, alias, item.field), _output_name(item), _cast(item.cast)))
            else:
                outputs.append(self._embed(table, alias, item, embedded, path))
        known = {path + (o.name,) for o in outputs if isinstance(o, OutEmbed)}
        for key in embedded:
            if key[: len(path)] == path and len(key) == len(path) + 1 and key not in known:
                raise rest_error(
                    "PGRST108",
                    f"'{'.'.join(key)}' is not an embedded resource in this request",
                    400,
                    hint="Add it to select= to filter, order or limit it.",
                )
        limit = shaping.limit
        if top and self.max_rows is not None:
            limit = self.max_rows if limit is None else min(limit, self.max_rows)
        embeds = {o.name: o for o in outputs if isinstance(o, OutEmbed)}
        return ReadNode(
            table,
            alias,
            tuple(outputs),
            tuple(_condition(table, alias, c, embeds) for c in shaping.conditions),
            tuple(self._order_term(table, alias, o, embeds) for o in shaping.order),
            limit,
            shaping.offset,
        )

    def _aggregate(self, table: TableInfo, alias: str, item: q.Aggregate | q.SelectItem) -> OutAggregate:
        if not self.aggregates:
            raise rest_error("PGRST123", "Use of aggregate functions is not allowed", 400,
                             hint="Set GATEHOUSE_REST_AGGREGATES=true to allow count(), sum(), avg(), max() and min().")
        if isinstance(item, q.Column):  # a bare "count" on a table without such a column: count()
            return OutAggregate(item.alias or "count", "count", None, None, _cast(item.cast))
        assert isinstance(item, q.Aggregate)
        ref = None if item.field is None else _field(table, alias, item.field)
        return OutAggregate(item.alias or item.function, item.function, ref, _cast(item.input_cast), _cast(item.cast))

    @staticmethod
    def _order_term(table: TableInfo, alias: str, term: q.OrderTerm, embeds: dict[str, OutEmbed]) -> POrder:
        if term.relation is None:
            return POrder(_field(table, alias, term.field), term.direction, term.nulls)
        embed = embeds.get(term.relation)
        if embed is None:
            raise rest_error("PGRST108", f"'{term.relation}' is not an embedded resource in this request", 400,
                             hint="Add it to select= to order by one of its columns.")
        if not embed.to_one:
            raise rest_error("PGRST118", f"A related order on '{term.relation}' is not possible", 400,
                             details=f"'{table.name}' and '{term.relation}' do not form a many-to-one or "
                             "one-to-one relationship")
        child = embed.node
        return POrder(_field(child.table, child.alias, term.field), term.direction, term.nulls, embed, alias)

    def _embed(
        self, parent: TableInfo, parent_alias: str, item: q.Embed, embedded: dict[tuple[str, ...], q.Shaping],
        path: tuple[str, ...],
    ) -> OutEmbed:
        relationship, child, to_one = self._relationship(parent, item)
        name = item.alias or item.relation
        child_alias = self.aliases.next()
        key = path + (name,)
        node = self._node(child, item.select, embedded.get(key, q.Shaping()), embedded, key, child_alias)
        if to_one:
            pairs = tuple(zip(relationship.columns, relationship.foreign_columns, strict=True))
        else:
            pairs = tuple(zip(relationship.foreign_columns, relationship.columns, strict=True))
        return OutEmbed(name, node, Join(pairs), to_one, item.inner, item.spread)

    def _relationship(self, parent: TableInfo, item: q.Embed) -> tuple[Relationship, TableInfo, bool]:
        """Find the foreign key linking ``parent`` and the embedded relation (either direction)."""
        child = self.cache.table(self.schema, item.relation)
        candidates: list[tuple[Relationship, TableInfo, bool]] = []
        for rel in self.cache.relationships(parent.schema, parent.name):
            many_to_one = (rel.schema, rel.table) == (parent.schema, parent.name)
            other = (rel.foreign_schema, rel.foreign_table) if many_to_one else (rel.schema, rel.table)
            other_table = self.cache.table(*other)
            if other_table is None or other[0] != self.schema:
                continue
            names = {other[1], rel.constraint}
            if many_to_one and len(rel.columns) == 1:
                names.add(rel.columns[0])  # embed by the FK column's name: author_id(*)
            if item.relation not in names:
                continue
            if item.hint and item.hint not in {rel.constraint, *rel.columns, *rel.foreign_columns, other[1]}:
                continue
            candidates.append((rel, other_table, many_to_one))
        if not candidates:
            raise rest_error(
                "PGRST200",
                f"Could not find a relationship between '{parent.name}' and '{item.relation}' in the schema cache",
                400,
                hint=None if child is None else "Add a foreign key between them, or check the !hint.",
            )
        if len(candidates) > 1:
            options = ", ".join(f"{item.relation}!{c[0].constraint}" for c in candidates)
            raise rest_error(
                "PGRST201",
                f"Could not embed because more than one relationship was found for '{parent.name}' and '{item.relation}'",
                300,
                hint=f"Pick one with a hint: {options}",
            )
        return candidates[0]

    # -- writes ---------------------------------------------------------------------------------

    def insert(
        self, table: TableInfo, query: q.Query, rows: list[dict[str, Any]], *, resolution: str | None,
        missing_default: bool, returning: bool,
    ) -> WritePlan:
        if not table.insertable:
            raise rest_error("PGRST205", f"'{table.name}' does not accept inserts", 405)
        names = list(query.columns) if query.columns else _keys(rows)
        columns = tuple(self._writable(table, name) for name in names)
        conflict: tuple[str, ...] = ()
        for name in query.on_conflict or ():
            _column(table, name)
        if resolution is not None:
            conflict = query.on_conflict or table.primary_key
            if not conflict:
                raise rest_error("PGRST100", f"Upsert into '{table.name}' needs on_conflict: it has no primary key", 400)
            for name in conflict:
                _column(table, name)
        return WritePlan(
            "insert", table, columns, rows, (), conflict, resolution,
            self._returning(table, query) if returning else None, missing_default,
        )

    def update(self, table: TableInfo, query: q.Query, body: dict[str, Any], *, returning: bool) -> WritePlan:
        if not table.updatable:
            raise rest_error("PGRST205", f"'{table.name}' does not accept updates", 405)
        alias = self.aliases.next()
        columns = tuple(self._writable(table, name) for name in body)
        conditions = tuple(_condition(table, alias, c) for c in query.top.conditions)
        return WritePlan("update", table, columns, [body], conditions,
                         returning=self._returning(table, query) if returning else None, alias=alias)

    def delete(self, table: TableInfo, query: q.Query, *, returning: bool) -> WritePlan:
        if not table.deletable:
            raise rest_error("PGRST205", f"'{table.name}' does not accept deletes", 405)
        alias = self.aliases.next()
        conditions = tuple(_condition(table, alias, c) for c in query.top.conditions)
        return WritePlan("delete", table, (), [], conditions,
                         returning=self._returning(table, query) if returning else None, alias=alias)

    def _returning(self, table: TableInfo, query: q.Query) -> ReadNode:
        shaping = q.Shaping(order=query.top.order)
        return self._node(table, query.select, shaping, query.embedded, (), self.aliases.next())

    @staticmethod
    def _writable(table: TableInfo, name: str) -> ColumnInfo:
        column = table.columns.get(name)
        if column is None:
            raise rest_error("PGRST204", f"Could not find the '{name}' column of '{table.name}' in the schema cache", 400)
        return column

    # -- functions ------------------------------------------------------------------------------

    def function_arg_names(self, name: str) -> frozenset[str]:
        return frozenset(arg.name for fn in self.cache.functions(self.schema, name) for arg in fn.args)

    def call(self, name: str, args: dict[str, Any], query: q.Query, *, whole_body: Any = None,
             single_object: bool = False) -> CallPlan:
        """The function a call names, with its arguments. ``single_object`` (``Prefer:
        params=single-object``): the whole body is the one json or jsonb parameter, named or not."""
        overloads = self.cache.functions(self.schema, name)
        if not overloads:
            raise rest_error(
                "PGRST202", f"Could not find the function {self.schema}.{name} in the schema cache", 404,
                hint="Check the function name and its arguments, or reload the schema cache.",
            )
        if single_object:
            single = next((fn for fn in overloads if len(fn.args) == 1 and fn.args[0].type in ("json", "jsonb")), None)
            if single is None:
                raise rest_error(
                    "PGRST202", f"Could not find the function {self.schema}.{name} with a single json or jsonb "
                    "parameter in the schema cache", 404,
                    hint="Prefer: params=single-object passes the whole body as that one parameter.",
                )
            return self._called(single, {single.args[0].name or "": whole_body}, not single.args[0].name, query)
        given = set(args)
        chosen: FunctionInfo | None = None
        for fn in overloads:
            names = {arg.name for arg in fn.args}
            required = {arg.name for arg in fn.args if not arg.has_default and arg.mode != "variadic"}
            if given <= names and required <= given:
                chosen = fn
                break
        whole = False
        if chosen is None and whole_body is not None:
            for fn in overloads:  # a single unnamed json/jsonb argument takes the whole body
                if len(fn.args) == 1 and fn.args[0].name == "" and fn.args[0].type in ("json", "jsonb"):
                    chosen, whole = fn, True
                    break
        if chosen is None:
            listed = ", ".join(sorted(given)) or "no arguments"
            raise rest_error(
                "PGRST202",
                f"Could not find the function {self.schema}.{name}({listed}) in the schema cache", 404,
                hint="Check the argument names against the function's signature.",
            )
        return self._called(chosen, {"": whole_body} if whole else args, whole, query)

    def call_raw(self, name: str, type_name: str, body: str | bytes, query: q.Query) -> CallPlan:
        """A call whose raw body (``text/plain``, ``application/octet-stream``) is the
        function's one unnamed ``text`` or ``bytea`` parameter."""
        fn = next((fn for fn in self.cache.functions(self.schema, name)
                   if len(fn.args) == 1 and fn.args[0].name == "" and fn.args[0].type == type_name), None)
        if fn is None:
            raise rest_error(
                "PGRST202", f"Could not find the function {self.schema}.{name}({type_name}) in the schema cache", 404,
                hint=f"A body sent as this Content-Type goes to a function with one unnamed {type_name} parameter.",
            )
        return self._called(fn, {"": body}, True, query)

    def _called(self, chosen: FunctionInfo, args: dict[str, Any], whole: bool, query: q.Query) -> CallPlan:
        result = None
        if chosen.return_table is not None:
            table = self.cache.table(*chosen.return_table)
            if table is not None:
                result = self._node(table, query.select, query.top, query.embedded, (), self.aliases.next(), top=True)
        elif query.top.conditions or query.top.order:
            raise rest_error("PGRST100", f"{chosen.name} does not return rows of a table: it cannot be filtered or "
                             "ordered", 400)
        return CallPlan(chosen, args, whole, result)


def _keys(rows: list[dict[str, Any]]) -> list[str]:
    seen: dict[str, None] = {}
    for row in rows:
        for key in row:
            seen.setdefault(key, None)
    return list(seen)
