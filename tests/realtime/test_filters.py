"""postgres_changes filters: the upstream syntax, typed comparisons, and the errors for bad ones."""

from __future__ import annotations

from typing import Any

import pytest

from gatehouse.realtime.filters import Filter, FilterError, parse_filter
from gatehouse.realtime.models import Change, ChangeType, Column

COLUMNS = (Column("id", "int8"), Column("price", "numeric"), Column("name", "text"), Column("done", "bool"),
           Column("owner", "uuid"), Column("due", "timestamptz"), Column("day", "date"), Column("code", "bpchar"))
ROW = {"id": 10, "price": 2.5, "name": "Oslo, Norway", "done": True, "owner": "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11",
       "due": "2030-01-02T03:04:05+00:00", "day": "2030-01-02", "code": "ab  "}


def change(row: dict[str, Any], kind: ChangeType = "INSERT", old: dict[str, Any] | None = None) -> Change:
    return Change(id=1, schema="public", table="t", type=kind, commit_timestamp="2030-01-01T00:00:00.000Z",
                  columns=COLUMNS, record=row if kind != "DELETE" else {}, old_record=old or {}, old_full=False,
                  primary_key={"id": row.get("id")})


@pytest.mark.parametrize(("text", "column", "op", "values"), [
    ("id=eq.1", "id", "eq", ("1",)),
    ("name=neq.Oslo, Norway", "name", "neq", ("Oslo, Norway",)),
    ("price=lt.2.75", "price", "lt", ("2.75",)),
    ("id=in.(1,2,3)", "id", "in", ("1", "2", "3")),
    ('name=in.("a,b", c ,"say \\"hi\\"")', "name", "in", ("a,b", "c", 'say "hi"')),
    ("id=in.()", "id", "in", ()),
    ("name=eq.", "name", "eq", ("",)),
])
def test_parse(text: str, column: str, op: str, values: tuple[str, ...]) -> None:
    assert parse_filter(text) == Filter(column, op, values)


@pytest.mark.parametrize("text", [None, "", "   "])
def test_no_filter(text: str | None) -> None:
    assert parse_filter(text) is None


@pytest.mark.parametrize(("text", "message"), [
    ("id", "expected column=operator.value"),
    ("id=1", "expected column=operator.value"),
    ("=eq.1", "expected column=operator.value"),
    ("id=like.1", "unknown operator 'like'"),
    ("id=in.1,2", "must be in parentheses"),
    ('name=in.("a)', "unterminated quote"),
    ('name=in.("a"b)', "text after a quoted value"),
    ('name=in.(a"b)', "a quote inside an unquoted value"),
    ("id=in.(" + ",".join(["1"] * 101) + ")", "too many values for `in` filter. Maximum 100"),
])
def test_malformed_filters_are_refused(text: str, message: str) -> None:
    with pytest.raises(FilterError, match="invalid filter") as caught:
        parse_filter(text)
    assert message in caught.value.message


@pytest.mark.parametrize(("text", "passes"), [
    ("id=eq.10", True), ("id=eq.9", False), ("id=neq.9", True), ("id=neq.10", False),
    ("id=lt.9", False), ("id=lt.11", True), ("id=lte.10", True), ("id=lte.9", False),
    ("id=gt.9", True), ("id=gt.10", False), ("id=gte.10", True), ("id=gte.11", False),
    ("id=lt.100", True),  # numbers compare as numbers: 10 < 100, whereas "10" > "100" as text
    ("price=gt.10", False), ("price=lt.10", True),
    ("price=eq.2.50", True), ("price=gt.2.49", True),
    ("name=eq.Oslo, Norway", True), ("name=lt.P", True), ("name=gt.oslo", False),  # text as text
    ("done=eq.true", True), ("done=eq.t", True), ("done=neq.false", True),
    ("owner=eq.a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", True),  # uuids by value, not spelling
    ("due=eq.2030-01-02 04:04:05+01", True),  # the same instant, written in another zone
    ("due=lt.2030-01-02T03:04:06Z", True), ("due=gt.2030-01-02T03:04:06Z", False),
    ("day=gte.2030-01-02", True), ("day=lt.2030-01-02", False),
    ("code=eq.ab", True),  # character(n) ignores trailing blanks
    ("id=in.(1,10,100)", True), ("id=in.(1,2)", False), ("id=in.()", False),
    ("name=in.(\"Oslo, Norway\",Bergen)", True),
    ("owner=in.(a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11)", True),
])
def test_typed_comparisons(text: str, passes: bool) -> None:
    parsed = parse_filter(text)
    assert parsed is not None
    assert parsed.matches(change(ROW)) is passes


def test_null_never_matches() -> None:
    for text in ("name=eq.x", "name=neq.x", "name=in.(x)", "name=gt.a"):
        parsed = parse_filter(text)
        assert parsed is not None and not parsed.matches(change(ROW | {"name": None}))


def test_a_delete_is_filtered_on_its_old_record() -> None:
    parsed = parse_filter("id=eq.10")
    assert parsed is not None
    assert parsed.matches(change({"id": 10}, "DELETE", old={"id": 10}))
    assert not parsed.matches(change({"id": 10}, "DELETE", old={"id": 11}))
    # The old record has the key only (no REPLICA IDENTITY FULL): a filter on another column lets it pass.
    by_name = parse_filter("name=eq.nobody")
    assert by_name is not None and by_name.matches(change({"id": 10}, "DELETE", old={"id": 10}))


def test_check_refuses_unknown_columns_and_values_of_the_wrong_type() -> None:
    for text in ("id=eq.1", "due=lt.2030-01-01", "owner=in.(a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11)", "name=eq.x"):
        parsed = parse_filter(text)
        assert parsed is not None
        parsed.check(COLUMNS)
    for text, message in [("nope=eq.1", "invalid column for filter nope"),
                          ("id=eq.ten", "invalid value for filter id: not a int8"),
                          ("owner=eq.42", "not a uuid"),
                          ("done=eq.maybe", "not a bool"),
                          ("id=eq.1.5", "not a int8"),
                          ("id=in.(1,x)", "not a int8")]:
        parsed = parse_filter(text)
        assert parsed is not None
        with pytest.raises(FilterError) as caught:
            parsed.check(COLUMNS)
        assert message in caught.value.message
