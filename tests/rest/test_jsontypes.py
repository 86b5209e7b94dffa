"""PostgreSQL types map to the JSON schemas PostgREST gives them."""

from __future__ import annotations

from typing import Any

import pytest

from gatehouse.rest.jsontypes import json_schema


@pytest.mark.parametrize(
    ("pg_type", "expected"),
    [
        ("smallint", {"type": "integer", "format": "int32"}),
        ("bigint", {"type": "integer", "format": "int64"}),
        ("numeric(10,2)", {"type": "number"}),
        ("double precision", {"type": "number", "format": "double"}),
        ("real", {"type": "number", "format": "float"}),
        ("boolean", {"type": "boolean"}),
        ("text", {"type": "string"}),
        ("character varying", {"type": "string"}),
        ("character varying(64)", {"type": "string", "maxLength": 64}),
        ("uuid", {"type": "string", "format": "uuid"}),
        ("timestamp(3) with time zone", {"type": "string", "format": "date-time"}),
        ("timestamp without time zone", {"type": "string", "format": "date-time"}),
        ("date", {"type": "string", "format": "date"}),
        ("json", {}),
        ("jsonb[]", {"type": "array", "items": {}}),
        ("integer[]", {"type": "array", "items": {"type": "integer", "format": "int32"}}),
        ("inet", {"type": "string", "format": "inet"}),
    ],
)
def test_type_mapping(pg_type: str, expected: dict[str, Any]) -> None:
    assert json_schema(pg_type) == expected


def test_enums_and_nullable() -> None:
    assert json_schema("continent", ("asia", "europe"), nullable=True) == {
        "type": "string", "enum": ["asia", "europe"], "nullable": True,
    }
    assert json_schema("continent[]", ("asia",)) == {"type": "array", "items": {"type": "string", "enum": ["asia"]}}
    assert json_schema("jsonb", nullable=True) == {}  # any JSON value already includes null
