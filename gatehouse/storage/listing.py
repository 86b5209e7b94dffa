"""``POST /object/list-v2/{bucket}``: keyset-paged listing, as the current Storage server answers it.

Unlike the first list (folders relative to a folder prefix, offset paging), list-v2 takes a raw
prefix, returns full names, and pages with an opaque cursor: the last key of the page (and, when
sorting by a date, that key's date), so a page never repeats or skips a row that was there
before and after. With ``with_delimiter`` the names under the prefix that go on past a ``/``
fold into one folder entry (``prefix + segment + '/'``), as S3's common prefixes do; the cursor
then compares folded keys, so the next page starts after the whole folder. Everything is read
as the caller, so RLS on ``storage.objects`` decides what is listed.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from gatehouse.core.db import Database
from gatehouse.storage import names
from gatehouse.storage.errors import invalid, translate
from gatehouse.storage.models import ListEntry

MAX_KEYS = 1000
DATE_COLUMNS = ("created_at", "updated_at")

#: The folded key: the name itself, or its first folder under the prefix when delimiting ($5).
_KEY = """CASE WHEN $5 AND strpos(substr(name, char_length($2) + 1), '/') > 0
               THEN left(name, char_length($2) + strpos(substr(name, char_length($2) + 1), '/'))
               ELSE name END"""


def _by_name(descending: bool) -> str:
    """$1 bucket, $2 prefix, $3 the cursor's key, $4 rows, $5 delimit."""
    direction, compare = ("DESC", "<") if descending else ("ASC", ">")
    return f"""
SELECT k AS key, k <> name AS is_folder, id, metadata, created_at, updated_at, last_accessed_at
FROM (
    SELECT DISTINCT ON (k COLLATE "C") *
    FROM (SELECT {_KEY} AS k, * FROM storage.objects WHERE bucket_id = $1 AND starts_with(name, $2)) AS o
    WHERE $3::text IS NULL OR k COLLATE "C" {compare} $3
    ORDER BY k COLLATE "C", name COLLATE "C"
) AS keyed
ORDER BY k COLLATE "C" {direction}
LIMIT $4
"""


def _by_date(column: str, descending: bool) -> str:
    """$1 bucket, $2 prefix, $3 the cursor's key, $4 rows, $5 the cursor's date."""
    direction, compare = ("DESC", "<") if descending else ("ASC", ">")
    return f"""
SELECT name AS key, false AS is_folder, id, metadata, created_at, updated_at, last_accessed_at
FROM storage.objects
WHERE bucket_id = $1 AND starts_with(name, $2)
  AND ($3::text IS NULL OR ({column}, name COLLATE "C") {compare} ($5::timestamptz, $3))
ORDER BY {column} {direction}, name COLLATE "C" {direction}
LIMIT $4
"""


@dataclass(frozen=True)
class Cursor:
    """Where the next page starts: after ``key`` (and its date, when sorting by one)."""

    key: str
    column: str
    descending: bool
    date: datetime | None = None

    def encode(self) -> str:
        value = {"k": self.key, "c": self.column, "d": self.descending}
        if self.date is not None:
            value["t"] = self.date.isoformat()
        return base64.urlsafe_b64encode(orjson.dumps(value)).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str) -> Cursor:
        try:
            value = orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
            column, descending, key = value["c"], value["d"], value["k"]
            date = datetime.fromisoformat(value["t"]) if "t" in value else None
        except (binascii.Error, ValueError, KeyError, TypeError, orjson.JSONDecodeError):
            raise invalid("cursor is not one this server gave out; start again without it") from None
        if not isinstance(key, str) or column not in ("name", *DATE_COLUMNS) or not isinstance(descending, bool):
            raise invalid("cursor is not one this server gave out; start again without it")
        if (column == "name") != (date is None):
            raise invalid("cursor is not one this server gave out; start again without it")
        return cls(key, column, descending, date)


@dataclass(frozen=True)
class ListRequest:
    prefix: str
    limit: int
    delimit: bool
    column: str
    descending: bool
    cursor: Cursor | None

    @classmethod
    def parse(cls, body: dict[str, Any]) -> ListRequest:
        prefix = body.get("prefix") or ""
        if not isinstance(prefix, str) or len(prefix.encode()) > names.MAX_NAME_BYTES or "\x00" in prefix:
            raise invalid(f"prefix must be a string of at most {names.MAX_NAME_BYTES} bytes")
        limit = body.get("limit", MAX_KEYS)
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise invalid("limit must be a whole number of at least 1")
        delimit = body.get("with_delimiter", False)
        if not isinstance(delimit, bool):
            raise invalid("with_delimiter must be true or false")
        sort = body.get("sortBy") or {}
        if not isinstance(sort, dict):
            raise invalid("sortBy must be an object with column and order")
        column, order = sort.get("column", "name"), sort.get("order", "asc")
        if column not in ("name", *DATE_COLUMNS) or order not in ("asc", "desc"):
            raise invalid("sortBy.column must be name, created_at or updated_at; sortBy.order asc or desc")
        token = body.get("cursor")
        if token is not None and not isinstance(token, str):
            raise invalid("cursor must be the nextCursor of an earlier page")
        cursor = Cursor.decode(token) if token else None
        if cursor is not None:  # a cursor carries the order its pages were made in
            column, order = cursor.column, "desc" if cursor.descending else "asc"
        if delimit and column != "name":
            raise invalid("with_delimiter lists in name order only: leave sortBy.column out or set it to name")
        return cls(prefix, min(limit, MAX_KEYS), delimit, column, order == "desc", cursor)


@dataclass(frozen=True)
class Page:
    """One page: objects and folders (full names) in the order asked for, and where the next starts."""

    entries: list[ListEntry]
    next_cursor: Cursor | None


async def list_v2(db: Database, claims: dict[str, Any], bucket_id: str, request: ListRequest) -> Page:
    """One page of the bucket's objects (and folders) that the caller may see."""
    names.bucket_id(bucket_id)
    cursor = request.cursor
    values: list[Any] = [bucket_id, request.prefix, cursor.key if cursor else None, request.limit + 1]
    if request.column == "name":
        sql = _by_name(request.descending)
        values.append(request.delimit)
    else:
        sql = _by_date(request.column, request.descending)
        values.append(cursor.date if cursor else None)
    try:
        async with db.as_user(claims, readonly=True, replica=True) as conn:
            rows = await conn.fetch(sql, *values)
    except asyncpg.PostgresError as exc:
        raise translate(exc) from None
    has_next = len(rows) > request.limit
    rows = rows[: request.limit]
    entries = [
        ListEntry(row["key"], None, None, None, None, None) if row["is_folder"] else
        ListEntry(row["key"], row["id"], row["created_at"], row["updated_at"], row["last_accessed_at"], row["metadata"])
        for row in rows
    ]
    next_cursor = None
    if has_next:
        last = rows[-1]
        date = last[request.column] if request.column != "name" else None
        next_cursor = Cursor(last["key"], request.column, request.descending, date)
    return Page(entries, next_cursor)
