"""``postgres_changes`` filters: ``column=op.value`` parsed, checked against a table, and applied.

The syntax is upstream's: one filter per subscription, ``op`` one of eq, neq, lt, lte, gt, gte,
in, and for ``in`` a parenthesised list (``id=in.(1,2,3)``, at most 100 values; a value in
double quotes may hold commas). Everything after ``op.`` is the value, commas and dots included.

A filter is applied to the change's new record (INSERT, UPDATE) or old record (DELETE),
comparing by the column's type: numbers as numbers, booleans, uuids, dates and timestamps as
instants, text as text; other types by their text form. A NULL never matches. A column missing
from the record (a DELETE whose old record holds only the primary key) lets the change through,
as upstream does.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, time
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from gatehouse.realtime.models import Change, Column

OPERATORS = ("eq", "neq", "lt", "lte", "gt", "gte", "in")
MAX_IN_VALUES = 100

_SYNTAX = re.compile(r"^([^=]+)=([a-z]+)\.(.*)$", re.DOTALL)


class FilterError(ValueError):
    """A filter that cannot be used; ``message`` says why (sent back to the client)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _number(value: Any) -> Decimal:
    if isinstance(value, bool):
        raise TypeError(f"{value!r} is not a number")
    return Decimal(str(value).strip())


def _integer(value: Any) -> Decimal:
    number = _number(value)
    if not number.is_finite() or number != number.to_integral_value():
        raise ValueError(f"{value!r} is not an integer")
    return number


_TRUE = frozenset({"t", "true", "y", "yes", "on", "1"})
_FALSE = frozenset({"f", "false", "n", "no", "off", "0"})


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"{value!r} is not a boolean")


def _instant(value: Any) -> datetime:
    moment = datetime.fromisoformat(str(value).strip().replace(" ", "T", 1))
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _local(value: Any) -> datetime:
    return datetime.fromisoformat(str(value).strip().replace(" ", "T", 1)).replace(tzinfo=None)


def _uuid(value: Any) -> uuid.UUID:
    return uuid.UUID(str(value))


def _date(value: Any) -> date:
    return date.fromisoformat(str(value).strip())


def _time(value: Any) -> time:
    return time.fromisoformat(str(value).strip())


def _text(value: Any) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def _blank_padded(value: Any) -> str:
    return _text(value).rstrip(" ")


def _folded(value: Any) -> str:
    return _text(value).lower()


#: How values of a PostgreSQL type are compared; types not named here compare as text.
_COERCE: dict[str, Callable[[Any], Any]] = {
    **dict.fromkeys(("int2", "int4", "int8", "oid"), _integer),
    **dict.fromkeys(("numeric", "float4", "float8"), _number),
    "bool": _boolean,
    "uuid": _uuid,
    "timestamptz": _instant,
    "timestamp": _local,
    "date": _date,
    "time": _time,
    "bpchar": _blank_padded,
    "citext": _folded,
}


def coerce(type_name: str, value: Any) -> Any:
    """``value`` as Python compares values of ``type_name``; ValueError if it is not one."""
    convert: Callable[[Any], Any] = _COERCE.get(type_name, _text)
    try:
        return convert(value)
    except (InvalidOperation, TypeError) as exc:
        raise ValueError(f"{value!r} is not a {type_name}") from exc


class Filter:
    """One parsed filter: ``column``, ``op``, and its ``values`` (one, or the list of ``in``)."""

    __slots__ = ("_typed", "column", "op", "values")

    def __init__(self, column: str, op: str, values: tuple[str, ...]) -> None:
        self.column = column
        self.op = op
        self.values = values
        self._typed: dict[str, tuple[Any, ...]] = {}

    def __repr__(self) -> str:
        return f"Filter({self.column!r}, {self.op!r}, {self.values!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Filter):
            return NotImplemented
        return (self.column, self.op, self.values) == (other.column, other.op, other.values)

    def __hash__(self) -> int:
        return hash((self.column, self.op, self.values))

    def check(self, columns: Sequence[Column]) -> None:
        """Refuse a filter on a column the table lacks (or the role may not read), or with a value
        that is not of the column's type. Call it at subscription time."""
        column = next((c for c in columns if c.name == self.column), None)
        if column is None:
            raise FilterError(f"invalid column for filter {self.column}")
        try:
            self._values_as(column.type)
        except ValueError:
            raise FilterError(f"invalid value for filter {self.column}: not a {column.type}") from None

    def matches(self, change: Change) -> bool:
        """Whether ``change`` passes this filter (see the module docstring for the rules)."""
        row = change.row
        if self.column not in row:
            return True
        value = row[self.column]
        if value is None:
            return False
        type_name = next((c.type for c in change.columns if c.name == self.column), "text")
        try:
            mine = coerce(type_name, value)
            theirs = self._values_as(type_name)
            return _compare(self.op, mine, theirs)
        except (ValueError, TypeError, InvalidOperation):
            return False

    def _values_as(self, type_name: str) -> tuple[Any, ...]:
        typed = self._typed.get(type_name)
        if typed is None:
            typed = self._typed[type_name] = tuple(coerce(type_name, value) for value in self.values)
        return typed


def _compare(op: str, mine: Any, theirs: tuple[Any, ...]) -> bool:
    if op == "in":
        return mine in theirs
    other = theirs[0]
    if op == "eq":
        return bool(mine == other)
    if op == "neq":
        return bool(mine != other)
    if op == "lt":
        return bool(mine < other)
    if op == "lte":
        return bool(mine <= other)
    if op == "gt":
        return bool(mine > other)
    return bool(mine >= other)  # gte


def parse_filter(text: str | None) -> Filter | None:
    """Parse ``column=op.value``; None for no filter (absent or empty); FilterError if malformed."""
    if text is None or not text.strip():
        return None
    match = _SYNTAX.match(text.strip())
    if match is None:
        raise FilterError(f"invalid filter {text!r}: expected column=operator.value, such as id=eq.1")
    column, op, raw = match.group(1).strip(), match.group(2), match.group(3)
    if not column:
        raise FilterError(f"invalid filter {text!r}: no column")
    if op not in OPERATORS:
        raise FilterError(f"invalid filter {text!r}: unknown operator {op!r} (use one of {', '.join(OPERATORS)})")
    if op != "in":
        return Filter(column, op, (raw,))
    if not (raw.startswith("(") and raw.endswith(")")):
        raise FilterError(f"invalid filter {text!r}: the values of `in` must be in parentheses, as in id=in.(1,2,3)")
    values = _split_list(raw[1:-1], text)
    if len(values) > MAX_IN_VALUES:
        raise FilterError(f"invalid filter {text!r}: too many values for `in` filter. Maximum {MAX_IN_VALUES}")
    return Filter(column, op, values)


def _split_list(inner: str, text: str) -> tuple[str, ...]:
    """``a, "b,c", d`` → ('a', 'b,c', 'd'): commas separate, double quotes (with \\ escapes) protect."""
    if not inner.strip():
        return ()
    values: list[str] = []
    position = 0
    while True:
        while position < len(inner) and inner[position].isspace():
            position += 1
        if position < len(inner) and inner[position] == '"':
            value, position = _quoted(inner, position + 1, text)
            while position < len(inner) and inner[position].isspace():
                position += 1
            if position < len(inner) and inner[position] != ",":
                raise FilterError(f"invalid filter {text!r}: text after a quoted value")
        else:
            end = inner.find(",", position)
            end = len(inner) if end < 0 else end
            value, position = inner[position:end].strip(), end
            if '"' in value:
                raise FilterError(f"invalid filter {text!r}: a quote inside an unquoted value")
        values.append(value)
        if position >= len(inner):
            return tuple(values)
        position += 1  # the comma


def _quoted(inner: str, position: int, text: str) -> tuple[str, int]:
    """The quoted value starting at ``position`` (after its opening quote), and where it ends."""
    chars: list[str] = []
    while position < len(inner):
        char = inner[position]
        if char == "\\" and position + 1 < len(inner):
            chars.append(inner[position + 1])
            position += 2
        elif char == '"':
            return "".join(chars), position + 1
        else:
            chars.append(char)
            position += 1
    raise FilterError(f"invalid filter {text!r}: unterminated quote")
