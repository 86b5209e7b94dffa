"""The Data section's rows: browse, filter, sort and page, edit, insert and delete, through the
data API's own planner, SQL generator and ``Database.run_as``.

Nothing here writes SQL for rows. A page of the grid is a ``rest.query.Query`` (filters, order,
``limit``/``offset``) planned by ``rest.plan.Planner`` against the schema cache and rendered by
``rest.sqlgen``, exactly as ``GET /rest/v1/{table}`` would plan it; an edit is the data API's
``PATCH`` by primary key, an insert its ``POST``, a delete its ``DELETE``. Each runs as one
statement through ``run_as`` as the chosen role and claims: ``service_role`` for the
administrator (row-level security bypassed, as with the secret key), or, for "view as", the
claims the auth service puts in a user's access token (``authenticated``) or plain ``anon``, so
the database's own policies decide what is shown. A statement is all or nothing; a PostgreSQL
error comes back as the data API's ``GatehouseError`` with its 4xx status.
"""

from __future__ import annotations

import json
import logging
import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import asyncpg
import orjson

from gatehouse.auth import users
from gatehouse.auth.admin import AdminService
from gatehouse.auth.forms import normalize_email
from gatehouse.auth.models import User
from gatehouse.core.db import Database, Result, StatementTimedOut
from gatehouse.core.errors import GatehouseError
from gatehouse.rest import query as q
from gatehouse.rest import sqlgen
from gatehouse.rest.errors import from_postgres
from gatehouse.rest.plan import Planner
from gatehouse.rest.schema import ColumnInfo, SchemaCache, TableInfo

PAGE_SIZE = 50
MAX_OFFSET = 10_000_000
MAX_FILTERS = 5
MAX_VALUE = 100_000
#: The longest value of the grid's query string a page takes (a filter's value, a column name).
MAX_PARAM = 10_000
#: Characters of a cell shown in the grid; the whole value is one click away.
SHOWN = 120

#: The grid's filter operators: the data API's, plus ``null``/``notnull`` for ``is.null`` and ``not.is.null``.
OPERATORS: dict[str, str] = {
    "eq": "equals", "neq": "is not", "lt": "less than", "lte": "at most", "gt": "greater than",
    "gte": "at least", "like": "like (% any text)", "ilike": "like, any case", "null": "is null",
    "notnull": "is not null",
}
_JSON_TYPES = ("json", "jsonb")
log = logging.getLogger("gatehouse.dashboard.data")


def bad(message: str, status: int = 400) -> GatehouseError:
    return GatehouseError("validation_failed", message, status=status)


@dataclass(frozen=True)
class Viewer:
    """Whose view the grid is: the administrator (``service_role``), ``anon``, or a user."""

    kind: Literal["admin", "anon", "user"]
    claims: Mapping[str, Any]
    label: str
    #: What the page's ``as`` parameter says to choose this viewer again.
    param: str = ""

    @property
    def read_only(self) -> bool:
        """Only the administrator's own view offers changes: nobody edits "as" a user by accident."""
        return self.kind != "admin"


ADMIN = Viewer("admin", {"role": "service_role"}, "you, as service_role (row-level security does not apply)")
ANON = Viewer("anon", {"role": "anon"}, "anon, a visitor who is not signed in", "anon")


async def find_viewer(admin: AdminService, text: str) -> Viewer:
    """The viewer the page's ``as`` names: blank for the administrator, ``anon``, or a user by
    id or email, whose claims are those the auth service signs into their access tokens (with no
    session: nothing is signed, and no session check applies)."""
    text = text.strip()
    if not text:
        return ADMIN
    if text.lower() == "anon":
        return ANON
    user: User | None = None
    try:
        user_id = uuid.UUID(text)
    except ValueError:
        row = await users.by_email(admin.db.admin, normalize_email(text) or "")
        user = User.from_row(row) if row is not None else None
    else:
        try:
            user = await admin.get_user(user_id)
        except GatehouseError:
            user = None
    if user is None:
        raise bad("No user has that email address or id (view as takes a user's email or id, or anon).", 404)
    claims = admin.deps.sessions.claims_without_session(user)
    label = f"{user.email or 'an anonymous user'} ({user.id}), as {claims['role']} with their access token's claims"
    return Viewer("user", claims, label, text)


@dataclass(frozen=True)
class FilterSpec:
    column: str
    operator: str
    value: str = ""


@dataclass(frozen=True)
class GridQuery:
    """What the grid shows: filters, one sort column, and where the page starts."""

    filters: tuple[FilterSpec, ...] = ()
    sort: str = ""
    descending: bool = False
    offset: int = 0

    @classmethod
    def parse(cls, params: Sequence[tuple[str, str]]) -> GridQuery:
        """From the page's query string: ``f``/``op``/``v`` in triples, ``sort``, ``dir``, ``offset``."""
        found: dict[str, list[str]] = {"f": [], "op": [], "v": []}
        single: dict[str, str] = {}
        for key, value in params:
            if len(value) > MAX_PARAM or "\x00" in value:
                raise bad(f"The value of {key[:20]!r} is too long or holds a NUL character")
            if key in found:
                found[key].append(value)
            else:
                single[key] = value
        if not len(found["f"]) == len(found["op"]) == len(found["v"]):
            raise bad("Each filter needs a column, an operator and a value (which may be empty)")
        filters = []
        for column, operator, value in zip(found["f"], found["op"], found["v"], strict=True):
            if not column or (not value and operator not in ("null", "notnull")):
                continue  # an empty filter row on the form
            if operator not in OPERATORS:
                raise bad(f"Unknown operator {operator[:20]!r}")
            filters.append(FilterSpec(column, operator, value))
        if len(filters) > MAX_FILTERS:
            raise bad(f"At most {MAX_FILTERS} filters")
        offset_text = single.get("offset", "0") or "0"
        if not offset_text.isdigit() or int(offset_text) > MAX_OFFSET:
            raise bad(f"offset must be a whole number up to {MAX_OFFSET}")
        direction = single.get("dir", "asc") or "asc"
        if direction not in ("asc", "desc"):
            raise bad("dir must be asc or desc")
        return cls(tuple(filters), single.get("sort", ""), direction == "desc", int(offset_text))

    def items(self, offset: int | None = None) -> list[tuple[str, str]]:
        """This query as query-string items (``offset`` replaced when given)."""
        out: list[tuple[str, str]] = []
        for spec in self.filters:
            out += [("f", spec.column), ("op", spec.operator), ("v", spec.value)]
        if self.sort:
            out += [("sort", self.sort), ("dir", "desc" if self.descending else "asc")]
        start = self.offset if offset is None else offset
        if start:
            out.append(("offset", str(start)))
        return out


def _condition(spec: FilterSpec) -> q.Filter:
    field = q.Field(spec.column)
    if spec.operator == "null":
        return q.Filter(field, "is", "null")
    if spec.operator == "notnull":
        return q.Filter(field, "is", "null", negated=True)
    return q.Filter(field, spec.operator, spec.value)


def key_conditions(table: TableInfo, key: Sequence[str]) -> tuple[q.Filter, ...]:
    """``pk=eq.value`` for each primary-key column: one row, as the data API addresses it."""
    if not table.primary_key:
        raise bad("This table has no primary key, so a row cannot be named: it is read-only here.", 409)
    if len(key) != len(table.primary_key):
        raise bad("No such row.", 404)
    return tuple(q.Filter(q.Field(name), "eq", value) for name, value in zip(table.primary_key, key, strict=True))


@dataclass(frozen=True)
class Page:
    """A page of rows (as the data API's JSON), whether more follow, and the exact total if counted."""

    rows: list[dict[str, Any]]
    more: bool
    total: int | None


class Rows:
    """The rows of one exposed table, read and changed as one role through the data API's planner."""

    def __init__(self, db: Database, cache: SchemaCache, table: TableInfo) -> None:
        self.db = db
        self.cache = cache
        self.table = table

    def _planner(self) -> Planner:
        return Planner(self.cache, self.table.schema, max_rows=None)

    async def _run(self, claims: Mapping[str, Any], sql: str, values: list[Any], *, readonly: bool) -> Result:
        """As ``/rest/v1`` runs a statement: the role's own statement_timeout, the data API's errors."""
        role = str(claims.get("role", "anon"))
        timeout_ms = self.cache.statement_timeouts.get(role)
        try:
            return await self.db.run_as(claims, sql, values, readonly=readonly,
                                        timeout=timeout_ms / 1000 if timeout_ms else None)
        except asyncpg.PostgresError as exc:
            error = from_postgres(exc, role)
            if error.status >= 500:
                log.error("a Data page's statement failed: %s", exc, exc_info=exc)
            raise error from None
        except StatementTimedOut:
            raise GatehouseError("57014", "canceling statement due to statement timeout", status=504) from None

    async def page(self, grid: GridQuery, viewer: Viewer, *, count: bool) -> Page:
        """One page of rows as ``viewer`` sees them; ``count``: the exact number matching too."""
        order: list[q.OrderTerm] = []
        if grid.sort:
            order.append(q.OrderTerm(q.Field(grid.sort), "desc" if grid.descending else "asc"))
        # Offset paging is stable only in a total order: the primary key breaks ties (a table
        # without one comes in no guaranteed order unless sorted).
        order += [q.OrderTerm(q.Field(name)) for name in self.table.primary_key if name != grid.sort]
        shaping = q.Shaping(tuple(_condition(f) for f in grid.filters), tuple(order), PAGE_SIZE + 1, grid.offset)
        node = self._planner().read(self.table, q.Query(top=shaping))
        params = sqlgen.Params()
        sql = sqlgen.read_sql(node, params, count=count)
        result = await self._run(viewer.claims, sql, params.values, readonly=True)
        rows = orjson.loads(result.body or "[]")
        return Page(rows[:PAGE_SIZE], len(rows) > PAGE_SIZE, result.total)

    async def row(self, key: Sequence[str], viewer: Viewer = ADMIN) -> dict[str, Any] | None:
        """The row with this primary key, or None."""
        shaping = q.Shaping(key_conditions(self.table, key), (), 2)
        node = self._planner().read(self.table, q.Query(top=shaping))
        params = sqlgen.Params()
        result = await self._run(viewer.claims, sqlgen.read_sql(node, params), params.values, readonly=True)
        rows = orjson.loads(result.body or "[]")
        return rows[0] if len(rows) == 1 else None

    def _returning_key(self) -> q.Query:
        return q.Query(select=tuple(q.Column(q.Field(name)) for name in self.table.primary_key) or (q.Star(),))

    async def update(self, key: Sequence[str], values: dict[str, Any]) -> int:
        """``PATCH`` the row with this primary key (as service_role); the rows changed, 0 or 1."""
        query = q.Query(select=self._returning_key().select, top=q.Shaping(key_conditions(self.table, key)))
        plan = self._planner().update(self.table, query, values, returning=False)
        params = sqlgen.Params()
        result = await self._run(ADMIN.claims, sqlgen.write_sql(plan, params), params.values, readonly=False)
        return result.page_count

    async def insert(self, values: dict[str, Any]) -> dict[str, Any]:
        """``POST`` one row (as service_role); the columns left out take their defaults. Its key."""
        plan = self._planner().insert(self.table, self._returning_key(), [values], resolution=None,
                                      missing_default=True, returning=True)
        params = sqlgen.Params()
        result = await self._run(ADMIN.claims, sqlgen.write_sql(plan, params), params.values, readonly=False)
        rows = orjson.loads(result.body or "[]")
        return {name: rows[0].get(name) for name in self.table.primary_key} if rows else {}

    async def delete(self, key: Sequence[str]) -> int:
        """``DELETE`` the row with this primary key (as service_role); the rows removed, 0 or 1."""
        query = q.Query(top=q.Shaping(key_conditions(self.table, key)))
        plan = self._planner().delete(self.table, query, returning=False)
        params = sqlgen.Params()
        result = await self._run(ADMIN.claims, sqlgen.write_sql(plan, params), params.values, readonly=False)
        return result.page_count


# -- values between the data API's JSON and the page's text ----------------------------------------


def as_text(value: Any) -> str:
    """A JSON value as the text a form shows and PostgreSQL would read back for its column."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)


@dataclass(frozen=True)
class Cell:
    """One value of the grid: its text (shortened to ``SHOWN`` characters), the whole of it when
    shortened, and whether it is NULL."""

    text: str
    full: str | None = None
    null: bool = False


def cell(value: Any) -> Cell:
    if value is None:
        return Cell("NULL", null=True)
    text = as_text(value)
    if len(text) > SHOWN:
        return Cell(text[:SHOWN] + "…", text)
    return Cell(text)


def key_of(table: TableInfo, row: Mapping[str, Any]) -> list[str]:
    """The row's primary-key values as text, in key order (for links and the audit trail)."""
    return [as_text(row.get(name)) for name in table.primary_key]


def is_json(column: ColumnInfo) -> bool:
    return column.type in _JSON_TYPES


def _finite(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(text)
    return number


def parse_value(column: ColumnInfo, text: str) -> Any:
    """What a form's text means for a column: JSON for json and jsonb columns, the text itself
    otherwise (PostgreSQL reads it with the column type's own input function)."""
    if len(text) > MAX_VALUE:
        raise bad(f"The value for {column.name} is longer than {MAX_VALUE} characters", 413)
    if "\x00" in text:
        raise bad(f"The value for {column.name} holds a NUL character, which PostgreSQL cannot store")
    if not is_json(column):
        return text
    try:
        return json.loads(text, parse_float=_finite, parse_constant=_finite)
    except (ValueError, RecursionError):
        raise bad(f"The value for {column.name} is not valid JSON") from None


def editable(table: TableInfo) -> list[ColumnInfo]:
    """The columns a form may set: all but generated ones."""
    return [column for column in table.columns.values() if not column.generated]

