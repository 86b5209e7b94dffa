"""``Privileges.from_json`` reads PRIVILEGES_SQL's answer: what one role may do in one schema."""

from __future__ import annotations

import orjson

from gatehouse.rest.privileges import Privileges
from gatehouse.rest.schema import ColumnInfo, FunctionArg, FunctionInfo, TableInfo


def table(name: str) -> TableInfo:
    column = ColumnInfo("id", "integer", nullable=False, has_default=True, generated=False, position=1)
    return TableInfo("public", name, "table", {"id": column}, ("id",), True, True, True)


def function(name: str, *types: str) -> FunctionInfo:
    args = tuple(FunctionArg(f"a{i}", t, has_default=False, mode="in") for i, t in enumerate(types))
    return FunctionInfo("public", name, args, "integer", False, None, "stable")


def test_operations_per_table_and_callable_overloads() -> None:
    body = orjson.dumps({
        "usage": True,
        "tables": {"notes": [True, True, False, False], "secrets": [False, False, False, False]},
        "functions": [["add", ["integer", "integer"]]],
    }).decode()
    privileges = Privileges.from_json(body)
    assert privileges.table(table("notes")) == {"select", "insert"}
    assert privileges.table(table("secrets")) == frozenset() and "secrets" not in privileges.tables
    assert privileges.table(table("unknown")) == frozenset()
    assert privileges.may_call(function("add", "integer", "integer"))
    assert not privileges.may_call(function("add", "text", "text"))  # another overload
    assert not privileges.may_call(function("sub", "integer", "integer"))


def test_no_usage_on_the_schema_means_nothing() -> None:
    body = orjson.dumps({"usage": False, "tables": {"notes": [True] * 4}, "functions": [["f", []]]}).decode()
    privileges = Privileges.from_json(body)
    assert privileges.tables == {} and privileges.functions == frozenset()
    assert Privileges.from_json(None) == Privileges({}, frozenset())
