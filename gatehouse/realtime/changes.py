"""postgres_changes: a join's subscriptions checked, and each captured change sent to its subscribers.

At join, each requested subscription (event, schema, optional table, optional filter) is
checked: the table must exist and be published (``ALTER PUBLICATION supabase_realtime ADD TABLE
...``), and the filter must parse and name a column the subscriber's role may read, with a value
of its type; the join is refused otherwise, with a sentence saying which. Each subscription gets
the id the client matches messages by.

The feed (:mod:`gatehouse.realtime.feed`) hands this process every committed change once, in
order. One task routes them, in that order: the subscriptions that match a change (event,
table, filter) are gathered, and one query asks, as each of their subscribers, who may see the
row (:func:`gatehouse.realtime.visibility.visible_to`); each of those gets one ``postgres_changes``
message with the ids of its matching subscriptions, and only the columns its role may read.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from typing import TYPE_CHECKING, Any

import orjson

from gatehouse.core.background import Background
from gatehouse.realtime.channel import Channel, Refused
from gatehouse.realtime.filters import FilterError, parse_filter
from gatehouse.realtime.models import Change
from gatehouse.realtime.publication import published_tables, table_columns
from gatehouse.realtime.visibility import visible_to

if TYPE_CHECKING:
    from gatehouse.realtime.service import Realtime

log = logging.getLogger("gatehouse.realtime")

_EVENTS = frozenset({"*", "INSERT", "UPDATE", "DELETE"})
#: Batches of changes waiting to be routed; past this the oldest waiting batches are dropped (logged).
_BACKLOG = 10_000
#: Seconds between reading a change and routing it past which the log says routing is behind.
_LAG_WARNING = 5.0


async def subscriptions(realtime: Realtime, requested: Any, claims: dict[str, Any]) -> list[dict[str, Any]]:
    """The join's postgres_changes, checked; each keeps its parsed filter under ``parsed``."""
    if requested is None:
        return []
    if not isinstance(requested, list) or len(requested) > 100:
        raise Refused("InvalidJoinPayload: postgres_changes must be a list (of at most 100)")
    found: list[dict[str, Any]] = []
    for item in requested:
        if item is None:
            continue
        if not isinstance(item, dict):
            raise Refused("InvalidJoinPayload: each postgres_changes entry must be an object")
        event, schema, table, text = item.get("event"), item.get("schema"), item.get("table"), item.get("filter")
        if event not in _EVENTS:
            raise Refused("InvalidJoinPayload: postgres_changes event must be one of *, INSERT, UPDATE, DELETE")
        if not isinstance(schema, str) or not schema or not all(v is None or isinstance(v, str) for v in (table, text)):
            raise Refused("InvalidJoinPayload: postgres_changes needs a schema; table and filter are strings")
        params = {key: value for key, value in (("event", event), ("schema", schema), ("table", table),
                                                ("filter", text)) if value is not None}
        try:
            parsed = parse_filter(text)
        except FilterError as error:
            raise Refused(f"Unable to subscribe to changes with given parameters: {error.message}") from None
        if table not in (None, "*"):
            await _check_table(realtime, schema, table, parsed, str(claims.get("role", "anon")))
        elif parsed is not None:
            raise Refused("Unable to subscribe to changes with given parameters: a filter needs a table")
        subscription_id = zlib.crc32(orjson.dumps(params, option=orjson.OPT_SORT_KEYS)) & 0x7FFFFFFF
        found.append({**params, "id": subscription_id, "parsed": parsed})
    return found


async def _check_table(realtime: Realtime, schema: str, table: str, parsed: Any, role: str) -> None:
    async with realtime.database.admin.acquire() as conn:
        columns = await table_columns(conn, schema, table, role)
        published = (schema, table) in await published_tables(conn, realtime.settings.exposed_schemas)
    if columns is None:
        raise Refused(f"Unable to subscribe to changes with given parameters: there is no table {schema}.{table}")
    if not published:
        raise Refused(f"Unable to subscribe to changes with given parameters: {schema}.{table} is not in the "
                      f"supabase_realtime publication (ALTER PUBLICATION supabase_realtime ADD TABLE {schema}.{table})")
    if parsed is not None:
        try:
            parsed.check(columns)
        except FilterError as error:
            raise Refused(f"Unable to subscribe to changes with given parameters: {error.message}") from None


def _matches(subscription: dict[str, Any], change: Change) -> bool:
    if subscription["event"] not in ("*", change.type) or subscription["schema"] != change.schema:
        return False
    if subscription.get("table") not in (None, "*", change.table):
        return False
    parsed = subscription.get("parsed")
    return parsed is None or bool(parsed.matches(change))


class ChangeRouter(Background):
    task_name = "gatehouse-realtime-router"

    def __init__(self, realtime: Realtime) -> None:
        self._realtime = realtime
        self._waiting: asyncio.Queue[tuple[list[Change], float]] = asyncio.Queue(maxsize=_BACKLOG)

    async def on_changes(self, changes: list[Change]) -> None:
        """The feed's callback: queue and return at once (the feed waits for it)."""
        try:
            self._waiting.put_nowait((changes, time.monotonic()))
        except asyncio.QueueFull:
            log.error("realtime: %d changes dropped: routing has fallen %d batches behind", len(changes), _BACKLOG)

    async def _run(self) -> None:
        warned = 0.0
        while True:
            batch, queued_at = await self._waiting.get()
            lag = time.monotonic() - queued_at
            if lag > _LAG_WARNING and time.monotonic() - warned > 60:
                warned = time.monotonic()
                log.warning("realtime: changes are routed %.1f s after they were read: more subscribers or changes "
                            "than this process keeps up with (each change is checked as each subscriber)", lag)
            for change in batch:
                try:
                    await self.route(change)
                except Exception:  # one failed change must not stop the others
                    log.exception("realtime: sending change %d of %s.%s failed", change.id, change.schema, change.table)

    async def route(self, change: Change) -> None:
        targets: list[tuple[Channel, list[int]]] = []
        for channel in list(self._realtime.change_channels):
            ids = [sub["id"] for sub in channel.changes if _matches(sub, change)]
            if ids and not channel.closed:
                targets.append((channel, ids))
        if not targets:
            return
        # One check per distinct caller (a user with several tabs or channels is asked about once).
        distinct: dict[bytes, int] = {}
        asked: list[dict[str, Any]] = []
        for channel, _ in targets:
            key = orjson.dumps(channel.claims, option=orjson.OPT_SORT_KEYS)
            if key not in distinct:
                distinct[key] = len(asked)
                asked.append(channel.claims)
        async with self._realtime.database.checking() as conn:
            sights = await visible_to(conn, change, asked)
        shapes: dict[tuple[frozenset[str], bool], dict[str, Any]] = {}  # the data, once per way of seeing it
        for channel, ids in targets:
            sight = sights.get(distinct[orjson.dumps(channel.claims, option=orjson.OPT_SORT_KEYS)])
            if sight is None:
                continue
            shape = (sight.hidden_columns, sight.row_security)
            if shape not in shapes:
                shapes[shape] = change.data(hidden_columns=sight.hidden_columns, row_security=sight.row_security)
            channel.push("postgres_changes", {"ids": ids, "data": shapes[shape]})
