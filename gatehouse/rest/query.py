"""The typed tree a PostgREST request is parsed into (by ``grammar``), before any database look-up.

Names here are unchecked user input: ``plan`` checks them against the schema cache and
``sqlgen`` quotes them; values are only ever bound as parameters.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

#: Filter operators PostgREST accepts (``col=<op>.<value>``).
OPERATORS = frozenset({
    "eq", "neq", "gt", "gte", "lt", "lte", "like", "ilike", "match", "imatch", "is", "isdistinct", "in",
    "cs", "cd", "ov", "sl", "sr", "nxl", "nxr", "adj", "fts", "plfts", "phfts", "wfts",
})
#: Operators that take ``(any)`` / ``(all)`` with a ``{a,b}`` list: ``like(any).{a*,b*}``.
QUANTIFIABLE = frozenset({"eq", "neq", "gt", "gte", "lt", "lte", "like", "ilike", "match", "imatch"})
#: Full-text operators that take a language: ``fts(english).cat``.
FTS_OPERATORS = frozenset({"fts", "plfts", "phfts", "wfts"})
#: Aggregate functions a ``select`` item may end with (``amount.sum()``), as PostgREST 12.
AGGREGATES = frozenset({"count", "sum", "avg", "max", "min"})


@dataclass(frozen=True)
class JsonStep:
    """One arrow of a JSON path: ``->`` keeps JSON, ``->>`` yields text. Integer keys index arrays."""

    arrow: Literal["->", "->>"]
    key: str | int


@dataclass(frozen=True)
class Field:
    """A column, possibly followed by a JSON path: ``data->a->>b``."""

    name: str
    json_path: tuple[JsonStep, ...] = ()


@dataclass(frozen=True)
class Star:
    """``*``: every column."""


@dataclass(frozen=True)
class Column:
    """``alias:name->path::cast``."""

    field: Field
    alias: str | None = None
    cast: str | None = None


@dataclass(frozen=True)
class Embed:
    """``alias:relation!hint!inner(select...)`` or ``...relation(select...)`` (spread).

    ``hint`` disambiguates the foreign key: a constraint name, a column, or a table.
    """

    relation: str
    select: tuple[SelectItem, ...]
    alias: str | None = None
    hint: str | None = None
    inner: bool = False
    spread: bool = False


@dataclass(frozen=True)
class Aggregate:
    """``alias:field::input_cast.function()::cast``, or ``alias:count()::cast`` (``field`` None:
    the rows are counted)."""

    function: str
    field: Field | None = None
    alias: str | None = None
    input_cast: str | None = None
    cast: str | None = None


SelectItem = Star | Column | Embed | Aggregate


@dataclass(frozen=True)
class Filter:
    """``[not.]op[(any|all)|(language)].value`` on a field.

    ``value`` is the raw text after the operator; for ``in`` and quantified operators it is a
    tuple of the list's items, unquoted and unescaped.
    """

    field: Field
    operator: str
    value: str | tuple[str, ...]
    negated: bool = False
    quantifier: Literal["any", "all"] | None = None
    language: str | None = None


@dataclass(frozen=True)
class Logic:
    """``or=(...)`` / ``and=(...)``, possibly negated (``not.or``) and nested."""

    operator: Literal["and", "or"]
    conditions: tuple[Condition, ...]
    negated: bool = False


Condition = Filter | Logic


@dataclass(frozen=True)
class OrderTerm:
    field: Field
    direction: Literal["asc", "desc"] | None = None
    nulls: Literal["first", "last"] | None = None
    #: ``rel(col)``: a column of a to-one embedded resource (``field`` is then that column).
    relation: str | None = None


@dataclass(frozen=True)
class Shaping:
    """Filters, order and paging for one level: the top level or one embedded resource."""

    conditions: tuple[Condition, ...] = ()
    order: tuple[OrderTerm, ...] = ()
    limit: int | None = None
    offset: int | None = None


@dataclass(frozen=True)
class Query:
    """Everything the query string says.

    ``embedded`` holds shaping for embedded resources, keyed by their path of aliases/names
    (``("clients",)`` for ``clients.id=eq.1``). ``params`` keeps every query item that is not a
    reserved key, unparsed, in order: an RPC takes its arguments from there (the keys it names
    in ``rpc_args`` are not parsed as filters).
    """

    select: tuple[SelectItem, ...] = (Star(),)
    top: Shaping = field(default_factory=Shaping)
    embedded: dict[tuple[str, ...], Shaping] = field(default_factory=dict)
    columns: tuple[str, ...] | None = None
    on_conflict: tuple[str, ...] | None = None
    params: tuple[tuple[str, str], ...] = ()
