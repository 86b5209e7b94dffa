"""Parse a PostgREST query string into the typed tree of :mod:`gatehouse.rest.query`.

Pure functions: no database, no HTTP. The grammar follows PostgREST's
``src/PostgREST/ApiRequest/QueryParams.hs``; where PostgREST silently ignores trailing garbage
(``is.nullx``, ``in.(1)x``, ``or=(a.eq.1)x``) we reject it. Every failure is a
:class:`GrammarError` (PostgREST's ``PGRST100``), whatever the input.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Literal, NoReturn, TypeVar

from gatehouse.rest.query import (
    AGGREGATES,
    FTS_OPERATORS,
    OPERATORS,
    QUANTIFIABLE,
    Aggregate,
    Column,
    Condition,
    Embed,
    Field,
    Filter,
    JsonStep,
    Logic,
    OrderTerm,
    Query,
    SelectItem,
    Shaping,
    Star,
)

__all__ = ["MAX_DEPTH", "GrammarError", "parse_filter", "parse_logic", "parse_order", "parse_query", "parse_select"]

#: Deepest nesting of embeds in ``select`` and of ``and(...)``/``or(...)`` groups.
MAX_DEPTH = 32
_MAX_INT = 2**63 - 1  # limit/offset are bigint
_MAX_INDEX = 2**31 - 1  # a JSON array index is an int4
_ECHO = 200  # how much of the input an error message repeats

_T = TypeVar("_T")

# An unquoted name: letters, digits, _ $ spaces, and dashes that do not start an arrow.
_NAME = re.compile(r"(?:[\w$ \t]|-(?!>))+")
_NAME_DOTS = re.compile(r"(?:[\w$ \t.]|-(?!>))+")  # a JSON key at the end of a query key may hold dots
_QUOTED = re.compile(r'"([^"\\]*(?:\\.[^"\\]*)*)"', re.DOTALL)
_ESCAPE = re.compile(r"\\(.)", re.DOTALL)
_INDEX = re.compile(r"-?[0-9]+")
_CAST = re.compile(r"[\w$ ]+(?:\[\])?")
_AGGREGATE = re.compile(r"\.(" + "|".join(sorted(AGGREGATES)) + r")\(\)")
_IDENT = re.compile(r"[\w$ ]+")
_OPERATOR = re.compile(r"[^.(),]*")
_RAW_ITEM = re.compile(r"[^,)]*")
_ARRAY_ITEM = re.compile(r'(?:[^,{}"\\]|\\.)*', re.DOTALL)
_LOGIC_START = re.compile(r"(not\.)?(and|or)[ \t]*\(")
_DIGITS = re.compile(r"[0-9]{1,19}")
_WS = re.compile(r"[ \t]*")
_SHAPING_KEYS = frozenset({"order", "limit", "offset", "or", "and"})
_TRILEAN = frozenset({"null", "true", "false", "unknown"})


class GrammarError(Exception):
    """A malformed query parameter: PostgREST's ``PGRST100`` (400).

    ``message`` names the parameter that failed (``failed to parse filter (eqq.5)``); ``details``
    says what was unexpected where (``unknown operator "eqq" at column 1``).
    """

    def __init__(self, message: str, details: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class _Fail(Exception):
    def __init__(self, detail: str) -> None:
        self.detail = detail


class _Scanner:
    """A cursor over one parameter's text."""

    __slots__ = ("pos", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def at(self, token: str) -> bool:
        return self.text.startswith(token, self.pos)

    def eat(self, token: str) -> bool:
        found = self.text.startswith(token, self.pos)
        self.pos += len(token) if found else 0
        return found

    def end(self) -> bool:
        return self.pos >= len(self.text)

    def ws(self) -> None:
        self.match(_WS)

    def match(self, pattern: re.Pattern[str]) -> str | None:
        found = pattern.match(self.text, self.pos)
        if found is None:
            return None
        self.pos = found.end()
        return found.group()

    def expect(self, token: str) -> None:
        if not self.eat(token):
            self.fail(f'"{token}"')

    def fail(self, expected: str) -> NoReturn:
        if self.end():
            found = "end of input"
        else:
            char = self.text[self.pos]
            found = f'"{char}"' if char.isprintable() else f"U+{ord(char):04X}"
        self.error(f"unexpected {found}, expecting {expected}")

    def error(self, detail: str, pos: int | None = None) -> NoReturn:
        raise _Fail(f"{detail} at column {(self.pos if pos is None else pos) + 1}")


def _run(what: str, text: str, parse: Callable[[_Scanner], _T]) -> _T:
    echo = text if len(text) <= _ECHO else text[:_ECHO] + "..."
    scanner = _Scanner(text)
    try:
        if "\x00" in text:
            scanner.error("NUL characters are not allowed", text.index("\x00"))
        return parse(scanner)
    except _Fail as failure:
        raise GrammarError(f"failed to parse {what} ({echo})", failure.detail) from None


# -- names and fields ----------------------------------------------------------------------------


def _quoted(sc: _Scanner) -> str:
    found = _QUOTED.match(sc.text, sc.pos)
    if found is None:
        sc.error("unterminated double quote")
    sc.pos = found.end()
    return _ESCAPE.sub(r"\1", found.group(1))


def _name(sc: _Scanner, *, dots: bool = False) -> tuple[str, bool]:
    """An identifier, double-quoted (``"my col"``, backslash escapes) or not; returns (name, quoted)."""
    sc.ws()
    start = sc.pos
    if sc.at('"'):
        name, quoted = _quoted(sc), True
    else:
        name, quoted = (sc.match(_NAME_DOTS if dots else _NAME) or "").strip(" \t"), False
    if not name:
        sc.pos = start
        sc.fail("a name")
    return name, quoted


def _json_path(sc: _Scanner, *, dots: bool = False) -> tuple[JsonStep, ...]:
    steps: list[JsonStep] = []
    while sc.at("->"):
        arrow: Literal["->", "->>"] = "->>" if sc.at("->>") else "->"
        sc.pos += len(arrow)
        start = sc.pos
        key: str | int
        if sc.at('"'):
            key = _quoted(sc)  # a quoted key is always a key, even "0"
        else:
            key = _name(sc, dots=dots)[0]
            if _INDEX.fullmatch(key):
                if len(key) > 12 or abs(int(key)) > _MAX_INDEX:
                    sc.error("JSON array index out of range", start)
                key = int(key)
        steps.append(JsonStep(arrow, key))
    return tuple(steps)


def _field(sc: _Scanner, *, dots: bool = False) -> Field:
    name = _name(sc)[0]
    return Field(name, _json_path(sc, dots=dots))


def _names(sc: _Scanner) -> tuple[str, ...]:
    names = [_name(sc)[0]]
    sc.ws()
    while sc.eat(","):
        names.append(_name(sc)[0])
        sc.ws()
    if not sc.end():
        sc.fail('"," or end of input')
    return tuple(names)


# -- select --------------------------------------------------------------------------------------


def _strip_ws(text: str) -> str:
    """Drop whitespace outside double quotes, as the clients do before sending ``select``."""
    out: list[str] = []
    quoted = escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char.isspace() and not quoted:
            continue
        out.append(char)
    return "".join(out)


def parse_select(text: str) -> tuple[SelectItem, ...]:
    """Parse ``select``; whitespace outside double quotes is ignored, and an empty value means ``*``.

    Examples (trees abridged)::

        "id, name:full_name"      -> Column(id), Column(full_name, alias="name")
        "data->a->>b::int"        -> Column(Field("data", (-> "a", ->> "b")), cast="int")
        "c:clients!fk!inner(id)"  -> Embed("clients", (Column(id),), alias="c", hint="fk", inner=True)
        "...owner(name),tags()"   -> Embed("owner", ..., spread=True), Embed("tags", ())
        "n:amount::int.sum()::text" -> Aggregate("sum", Field("amount"), "n", input_cast="int", cast="text")
        "count()"                 -> Aggregate("count")
        "" or "*"                 -> Star()
    """
    cleaned = _strip_ws(text)
    if not cleaned:
        return (Star(),)

    def top(sc: _Scanner) -> tuple[SelectItem, ...]:
        items = _select_list(sc, 1)
        if not sc.end():
            sc.fail('"," or end of input')
        return items

    return _run("select parameter", cleaned, top)


def _select_list(sc: _Scanner, depth: int) -> tuple[SelectItem, ...]:
    if depth > MAX_DEPTH:
        sc.error(f"embedding is nested deeper than {MAX_DEPTH} levels")
    items = [_select_item(sc, depth)]
    while sc.eat(","):
        items.append(_select_item(sc, depth))
    return tuple(items)


def _select_item(sc: _Scanner, depth: int) -> SelectItem:
    item: SelectItem
    if sc.eat("..."):
        relation = _name(sc)[0]
        hint, inner = _embed_params(sc)
        item = Embed(relation, _embed_body(sc, depth), hint=hint, inner=inner, spread=True)
    elif sc.eat("*"):
        item = Star()
    else:
        name = _name(sc)[0]
        alias = None
        if sc.at(":") and not sc.at("::"):
            sc.pos += 1
            alias, name = name, _name(sc)[0]
        if name == "count" and sc.eat("()"):  # count(): the rows, as PostgREST (a table named count: count!hint())
            item = Aggregate("count", None, alias, None, _cast(sc))
        elif sc.at("!") or sc.at("("):
            hint, inner = _embed_params(sc)
            item = Embed(name, _embed_body(sc, depth), alias=alias, hint=hint, inner=inner)
        else:
            path = _json_path(sc)
            cast = _cast(sc)
            function = sc.match(_AGGREGATE)
            if function is not None:
                item = Aggregate(function[1:-2], Field(name, path), alias, cast, _cast(sc))
            elif sc.at("."):
                sc.pos += 1
                sc.fail("an aggregate function (count(), sum(), avg(), max(), min())")
            else:
                item = Column(Field(name, path), alias, cast)
    if not (sc.end() or sc.at(",") or sc.at(")")):
        sc.fail('"," or ")" or end of input')
    return item


def _cast(sc: _Scanner) -> str | None:
    if not sc.eat("::"):
        return None
    cast = sc.match(_CAST)
    if cast is None:
        sc.fail("a type name")
    return cast


def _embed_params(sc: _Scanner) -> tuple[str | None, bool]:
    """``!hint``, ``!inner``, ``!left``, in either order, at most one of each kind."""
    hint: str | None = None
    join: str | None = None
    while sc.at("!"):
        start = sc.pos
        sc.pos += 1
        value, quoted = _name(sc)
        if not quoted and value in ("inner", "left"):
            if join is not None:
                sc.error("more than one join type (!inner, !left)", start)
            join = value
        else:
            if hint is not None:
                sc.error("more than one embedding hint", start)
            hint = value
    return hint, join == "inner"


def _embed_body(sc: _Scanner, depth: int) -> tuple[SelectItem, ...]:
    sc.expect("(")
    if sc.eat(")"):
        return ()  # rel() embeds only to filter, as PostgREST allows
    items = _select_list(sc, depth + 1)
    sc.expect(")")
    return items


# -- filters -------------------------------------------------------------------------------------


def parse_filter(key: str, value: str) -> Filter:
    """Parse one filter ``key=value``; ``key`` is a column with an optional JSON path.

    Examples (key, value -> tree, abridged)::

        age, not.gte.18         -> Filter(age, "gte", "18", negated=True)
        id, in.(1,"a,b")        -> Filter(id, "in", ("1", "a,b"))
        name, like(any).{a*,b*} -> Filter(name, "like", ("a*", "b*"), quantifier="any")
        doc, fts(english).cat   -> Filter(doc, "fts", "cat", language="english")
        data->a.b, eq.x.y       -> Filter(Field("data", (-> "a.b",)), "eq", "x.y")
    """

    def field_only(sc: _Scanner) -> Field:
        result = _field(sc, dots=True)
        sc.ws()
        if not sc.end():
            sc.fail('"->", "->>" or end of input')
        return result

    column = _run("filter field", key, field_only)
    return _filter(column, value)


def _filter(column: Field, value: str) -> Filter:
    return _run("filter", value, lambda sc: _op_expr(sc, column, in_logic=False))


def _op_expr(sc: _Scanner, column: Field, *, in_logic: bool) -> Filter:
    negated = sc.eat("not.")
    start = sc.pos
    operator = sc.match(_OPERATOR) or ""
    if operator not in OPERATORS:
        if not operator:
            sc.fail("an operator (eq, gt, in, ...)")
        sc.error(f'unknown operator "{operator[:40]}"', start)
    quantifier: Literal["any", "all"] | None = None
    language: str | None = None
    if sc.eat("("):
        if operator in QUANTIFIABLE:
            if sc.eat("any)"):
                quantifier = "any"
            elif sc.eat("all)"):
                quantifier = "all"
            else:
                sc.fail('"any)" or "all)"')
        elif operator in FTS_OPERATORS:
            language = (sc.match(_IDENT) or "").strip()
            if not language:
                sc.fail("a text search configuration")
            sc.expect(")")
        else:
            sc.error(f'operator "{operator}" takes no (...) modifier', sc.pos - 1)
    sc.expect(".")
    value: str | tuple[str, ...]
    if operator == "in":
        value = _in_list(sc)
    elif operator == "is":
        value = _trilean(sc, in_logic=in_logic)
    elif quantifier is not None:
        value = _pg_array(sc)
    elif in_logic:
        value = _logic_value(sc)
    else:
        value, sc.pos = sc.text[sc.pos :], len(sc.text)
    sc.ws()
    if in_logic and not (sc.at(",") or sc.at(")")):
        sc.fail('"," or ")"')
    if not in_logic and not sc.end():
        sc.fail("end of input")
    return Filter(column, operator, value, negated, quantifier, language)


def _in_list(sc: _Scanner) -> tuple[str, ...]:
    """``(a,"b,c",d)``: quoted items are unescaped; unquoted items are kept verbatim."""
    sc.ws()
    sc.expect("(")
    if sc.eat(")"):
        return ()
    items: list[str] = []
    while True:
        start = sc.pos
        sc.ws()
        if sc.at('"'):
            items.append(_quoted(sc))
            sc.ws()
        else:
            sc.pos = start
            items.append(sc.match(_RAW_ITEM) or "")
        if not sc.eat(","):
            sc.expect(")")
            return tuple(items)


def _trilean(sc: _Scanner, *, in_logic: bool) -> str:
    start = sc.pos
    raw = (sc.match(_RAW_ITEM) or "") if in_logic else sc.text[sc.pos :]
    value = raw.strip(" \t").lower()
    if value not in _TRILEAN:
        sc.error("expecting null, true, false or unknown after is.", start)
    sc.pos = start + len(raw)
    return value


def _pg_array(sc: _Scanner) -> tuple[str, ...]:
    """A one-dimensional PostgreSQL array literal ``{a,"b c"}`` for ``op(any|all)``."""
    sc.ws()
    sc.expect("{")
    sc.ws()
    if sc.eat("}"):
        return ()
    items: list[str] = []
    while True:
        sc.ws()
        start = sc.pos
        if sc.at('"'):
            items.append(_quoted(sc))
            sc.ws()
        elif sc.at("{"):
            sc.error("nested arrays are not supported")
        else:
            raw = sc.match(_ARRAY_ITEM) or ""
            stripped = raw.rstrip()
            if stripped.endswith("\\") and (len(stripped) - len(stripped.rstrip("\\"))) % 2:
                stripped = raw[: len(stripped) + 1]  # keep an escaped trailing space
            if not stripped:
                sc.fail("an array element")
            if stripped.upper() == "NULL":
                sc.error('NULL is not allowed in a quantified list (quote it, "NULL", to mean the text)', start)
            items.append(_ESCAPE.sub(r"\1", stripped))
        if not sc.eat(","):
            sc.expect("}")
            return tuple(items)


def _logic_value(sc: _Scanner) -> str:
    """A value inside ``or=(...)``: ``"quoted"`` (unescaped), ``{...}`` (kept), or text up to ``,``/``)``."""
    if sc.at('"'):
        return _quoted(sc)
    if not sc.at("{"):
        return sc.match(_RAW_ITEM) or ""
    start, depth, quoted, escaped = sc.pos, 0, False, False
    for index in range(sc.pos, len(sc.text)):
        char = sc.text[index]
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif not quoted and char in "{}":
            depth += 1 if char == "{" else -1
            if depth == 0:
                sc.pos = index + 1
                return sc.text[start : sc.pos]
    sc.error("unbalanced braces", start)


# -- logic trees ---------------------------------------------------------------------------------


def parse_logic(key: str, value: str) -> Logic:
    """Parse ``or``/``and``/``not.or``/``not.and`` with a value ``(cond,cond,...)``.

    Example (abridged)::

        or, (age.lt.18,and(name.eq."a,b",not.or(x.is.null,y.in.(1,2))))
        -> Logic("or", (Filter(age lt "18"),
                        Logic("and", (Filter(name eq "a,b"), Logic("or", (...), negated=True)))))
    """
    negated = key.startswith("not.")
    operator = key.removeprefix("not.")
    if operator not in ("and", "or"):
        raise GrammarError(f"failed to parse logic path ({key[:_ECHO]})", 'expecting "and", "or", "not.and" or "not.or"')
    return _logic(operator, negated, value)


def _logic(operator: str, negated: bool, value: str) -> Logic:
    def top(sc: _Scanner) -> Logic:
        conditions = _logic_group(sc, 1)
        sc.ws()
        if not sc.end():
            sc.fail("end of input")
        return Logic("and" if operator == "and" else "or", conditions, negated)

    return _run("logic tree", value, top)


def _logic_group(sc: _Scanner, depth: int) -> tuple[Condition, ...]:
    if depth > MAX_DEPTH:
        sc.error(f"and/or is nested deeper than {MAX_DEPTH} levels")
    sc.ws()
    sc.expect("(")
    conditions: list[Condition] = []
    while True:
        sc.ws()
        nested = _LOGIC_START.match(sc.text, sc.pos)
        if nested is not None:
            sc.pos = nested.end() - 1
            operator: Literal["and", "or"] = "and" if nested.group(2) == "and" else "or"
            conditions.append(Logic(operator, _logic_group(sc, depth + 1), nested.group(1) is not None))
        else:
            column = _field(sc)
            sc.ws()
            sc.expect(".")
            conditions.append(_op_expr(sc, column, in_logic=True))
        sc.ws()
        if not sc.eat(","):
            sc.expect(")")
            return tuple(conditions)


# -- order ---------------------------------------------------------------------------------------


def parse_order(text: str) -> tuple[OrderTerm, ...]:
    """Parse ``order``.

    Example (abridged)::

        c1.desc.nullslast, data->>x.asc, c3, c4.nullsfirst
        -> OrderTerm(c1, "desc", "last"), OrderTerm(data->>x, "asc"), OrderTerm(c3), OrderTerm(c4, None, "first")
    """

    def terms(sc: _Scanner) -> tuple[OrderTerm, ...]:
        result: list[OrderTerm] = []
        while True:
            column = _field(sc)
            sc.ws()
            relation: str | None = None
            if sc.eat("("):  # rel(col): a to-one embedded resource's column
                if column.json_path:
                    sc.error("an embedded resource's name takes no JSON path")
                relation, column = column.name, _field(sc)
                if not sc.eat(")"):
                    sc.fail('")"')
            direction: Literal["asc", "desc"] | None = None
            nulls: Literal["first", "last"] | None = None
            if sc.eat(".asc"):
                direction = "asc"
            elif sc.eat(".desc"):
                direction = "desc"
            if sc.eat(".nullsfirst"):
                nulls = "first"
            elif sc.eat(".nullslast"):
                nulls = "last"
            result.append(OrderTerm(column, direction, nulls, relation))
            sc.ws()
            if not sc.eat(","):
                if not sc.end():
                    sc.fail('".asc", ".desc", ".nullsfirst", ".nullslast", "," or end of input')
                return tuple(result)

    return _run("order", text, terms)


# -- the whole query string ----------------------------------------------------------------------


@dataclass
class _Level:
    conditions: list[Condition] = dc_field(default_factory=list)
    order: tuple[OrderTerm, ...] | None = None
    limit: int | None = None
    offset: int | None = None

    def freeze(self) -> Shaping:
        return Shaping(tuple(self.conditions), self.order or (), self.limit, self.offset)


def _nonnegative(what: str, value: str) -> int:
    if _DIGITS.fullmatch(value) is None or int(value) > _MAX_INT:
        raise GrammarError(f"failed to parse {what} parameter ({value[:_ECHO]})", "expecting a non-negative integer")
    return int(value)


def _key(sc: _Scanner) -> tuple[list[tuple[str, bool]], tuple[JsonStep, ...]]:
    names = [_name(sc)]
    while sc.eat("."):
        names.append(_name(sc))
    path = _json_path(sc, dots=True)
    sc.ws()
    if not sc.end():
        sc.fail('".", "->", "->>" or end of input')
    return names, path


def parse_query(items: Iterable[tuple[str, str]], *, rpc_args: frozenset[str] = frozenset()) -> Query:
    """Parse a whole query string, given as decoded ``(key, value)`` pairs in order.

    ``select``, ``columns``, ``on_conflict`` and ``order`` take their first occurrence, ``limit``
    and ``offset`` their last (as PostgREST does); every occurrence is still checked. ``[path.]or``,
    ``[path.]and`` and filters accumulate. Keys in ``rpc_args`` are function arguments: kept raw
    in ``params`` only. Every other key is a filter, ``[embed.path.]column[->json]=op.value``,
    kept in ``params`` too.

    Example (abridged)::

        [("select", "id,clients(*)"), ("id", "gt.1"), ("clients.order", "name"), ("limit", "5")]
        -> Query(select=..., top=Shaping((Filter(id gt "1"),), limit=5),
                 embedded={("clients",): Shaping(order=(OrderTerm(name),))}, params=(("id", "gt.1"),))
    """
    select: tuple[SelectItem, ...] | None = None
    columns: tuple[str, ...] | None = None
    on_conflict: tuple[str, ...] | None = None
    levels: dict[tuple[str, ...], _Level] = {(): _Level()}
    params: list[tuple[str, str]] = []
    for key, value in items:
        if key == "select":
            parsed_select = parse_select(value)
            select = parsed_select if select is None else select
        elif key in ("columns", "on_conflict"):
            names = _run(f"{key} parameter", value, _names)
            if key == "columns":
                columns = names if columns is None else columns
            else:
                on_conflict = names if on_conflict is None else on_conflict
        elif key in rpc_args and key not in _SHAPING_KEYS and key not in ("not.or", "not.and"):
            params.append((key, value))
        else:
            names_, json_path = _run("tree path", key, _key)
            last, quoted = names_[-1]
            if json_path or quoted or last not in _SHAPING_KEYS:
                column = Field(last, json_path)
                condition = _filter(column, value)
                levels.setdefault(tuple(n for n, _ in names_[:-1]), _Level()).conditions.append(condition)
                params.append((key, value))
                continue
            negated = last in ("or", "and") and len(names_) >= 2 and names_[-2] == ("not", False)
            level = levels.setdefault(tuple(n for n, _ in names_[: -2 if negated else -1]), _Level())
            if last == "order":
                order = parse_order(value)
                level.order = order if level.order is None else level.order
            elif last == "limit":
                level.limit = _nonnegative("limit", value)
            elif last == "offset":
                level.offset = _nonnegative("offset", value)
            else:
                level.conditions.append(_logic(last, negated, value))
    top = levels.pop(())
    return Query(
        select=select if select is not None else (Star(),),
        top=top.freeze(),
        embedded={path: level.freeze() for path, level in levels.items()},
        columns=columns,
        on_conflict=on_conflict,
        params=tuple(params),
    )
