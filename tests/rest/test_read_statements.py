"""Read statements are remembered per process, in bounded memory: a long query is planned each time."""

from __future__ import annotations

from gatehouse.rest.api import LONGEST_REMEMBERED, _read_statement, read_statement
from tests.rest.catalog import CACHE


def statement(query: str) -> tuple[str, int]:
    before = _read_statement.cache_info().currsize
    found = read_statement(CACHE, "public", "countries", query.encode(), None, False, False, None)
    return found.sql, _read_statement.cache_info().currsize - before


def test_a_short_read_is_remembered_and_a_long_one_is_not() -> None:
    _read_statement.cache_clear()
    sql, added = statement("select=id,name&id=eq.1")
    assert added == 1 and "countries" in sql
    assert statement("select=id,name&id=eq.1") == (sql, 0)  # a hit
    ids = ",".join(str(i) for i in range(LONGEST_REMEMBERED))
    long_sql, added = statement(f"select=id,name&id=in.({ids})")
    assert added == 0 and "countries" in long_sql
