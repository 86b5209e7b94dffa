"""Which tables send their changes: the members of the publication ``supabase_realtime``.

Tables opt in as on Supabase (``ALTER PUBLICATION supabase_realtime ADD TABLE public.todos``).
A publication only names tables; what captures their changes is Gatehouse's trigger
``gatehouse_realtime`` (0027_realtime_changes.sql), which ``sync_publication`` puts on every
published table and takes off every other one. Run it at start and after each schema reload
(ALTER PUBLICATION is DDL). When the migrations ran as a superuser, an event trigger already
does the same inside the ALTER PUBLICATION's own transaction; this call then finds nothing to do.
"""

from __future__ import annotations

import logging

import orjson

from gatehouse.core.db import Queryable
from gatehouse.realtime.models import Column

log = logging.getLogger("gatehouse.realtime.publication")

PUBLICATION = "supabase_realtime"

_PUBLISHED = """
SELECT schemaname, tablename FROM pg_publication_tables
WHERE pubname = $1 AND schemaname <> 'realtime'
  AND (NOT (SELECT puballtables FROM pg_publication WHERE pubname = $1) OR schemaname = ANY($2::text[]))
ORDER BY 1, 2
"""

_COLUMNS = """
SELECT json_agg(json_build_object('name', a.attname, 'type', t.typname) ORDER BY a.attnum)::text
FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
WHERE a.attrelid = to_regclass(format('%I.%I', $1::text, $2::text)) AND a.attnum > 0 AND NOT a.attisdropped
  AND ($3::text IS NULL OR has_column_privilege($3::text, a.attrelid, a.attnum, 'SELECT'))
"""


async def sync_publication(admin: Queryable, schemas: tuple[str, ...] = ("public",)) -> list[str]:
    """Put the trigger on each published table and take it off the others; returns what changed.

    Each entry is ``+schema.table`` (trigger added) or ``-schema.table`` (removed). ``admin``
    is the admin pool or one of its connections (the migrations' owner, who owns the trigger
    function). A publication ``FOR ALL TABLES`` covers the tables of ``schemas`` (the data
    API's exposed schemas).
    """
    rows = await admin.fetch("SELECT realtime.sync_capture($1::text[]) AS changed", list(schemas))
    changed = [row["changed"] for row in rows]
    for entry in changed:
        log.info("realtime: %s %s", "capturing changes of" if entry[0] == "+" else "no longer capturing", entry[1:])
    return changed


async def published_tables(conn: Queryable, schemas: tuple[str, ...] = ("public",)) -> set[tuple[str, str]]:
    """The (schema, table) pairs whose changes are sent (the same rule as ``sync_publication``)."""
    rows = await conn.fetch(_PUBLISHED, PUBLICATION, list(schemas))
    return {(row["schemaname"], row["tablename"]) for row in rows}


async def table_columns(conn: Queryable, schema: str, table: str, role: str | None = None) -> list[Column] | None:
    """The columns of ``schema.table`` (those ``role`` may read, when given); None if there is no such table.

    For checking a subscription's filter against the table before accepting it.
    """
    text = await conn.fetchval(_COLUMNS, schema, table, role)
    if text is None:
        exists = await conn.fetchval("SELECT to_regclass(format('%I.%I', $1::text, $2::text)) IS NOT NULL",
                                     schema, table)
        return [] if exists else None
    return [Column(column["name"], column["type"]) for column in orjson.loads(text)]
