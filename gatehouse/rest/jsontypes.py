"""The JSON schema of a PostgreSQL value, as PostgREST renders it, for the OpenAPI document."""

from __future__ import annotations

import re
from typing import Any

JSON = dict[str, Any]

_TYPMOD = re.compile(r"\((\d+)(?:,\d+)?\)")

_INTEGERS = {"smallint": "int32", "integer": "int32", "bigint": "int64"}
_NUMBERS = {"real": "float", "double precision": "double", "numeric": None}
_STRINGS = {"text", "character varying", "character", '"char"', "name", "citext", "bpchar"}
_FORMATS = {
    "uuid": "uuid",
    "date": "date",
    "timestamp with time zone": "date-time",
    "timestamp without time zone": "date-time",
    "time with time zone": "time",
    "time without time zone": "time",
}


def json_schema(pg_type: str, enum_values: tuple[str, ...] = (), *, nullable: bool = False) -> JSON:
    """The JSON schema of a value of ``pg_type`` (``format_type()`` text) as PostgREST renders it."""
    if pg_type.endswith("[]"):
        result: JSON = {"type": "array", "items": json_schema(pg_type[:-2], enum_values)}
    else:
        match = _TYPMOD.search(pg_type)
        base = _TYPMOD.sub("", pg_type)
        if enum_values:
            result = {"type": "string", "enum": list(enum_values)}
        elif base in _INTEGERS:
            result = {"type": "integer", "format": _INTEGERS[base]}
        elif base in _NUMBERS:
            number_format = _NUMBERS[base]
            result = {"type": "number", **({"format": number_format} if number_format else {})}
        elif base == "boolean":
            result = {"type": "boolean"}
        elif base in ("json", "jsonb"):
            return {}  # any JSON value, null included
        elif base in _STRINGS:
            result = {"type": "string"}
            if match and base != "text":
                result["maxLength"] = int(match.group(1))
        elif base in _FORMATS:
            result = {"type": "string", "format": _FORMATS[base]}
        else:  # interval, inet, tsvector, ranges, domains, composite types: PostgREST sends strings
            result = {"type": "string", "format": base}
    if nullable:
        result["nullable"] = True
    return result
