"""Presence: who is tracked on a topic, across every Gatehouse process, in upstream's shapes.

A ``track`` stores ``(node, ref, topic, private, key, meta)`` in ``realtime.presences`` and sends a
``presence_diff`` (``{"joins": {key: {"metas": [{"phx_ref": ref, ...meta}]}}, "leaves": {}}``) to
the topic's members here and, through the bus, on the other processes; ``untrack``, leaving the
channel and a closed socket send the matching ``leaves``. A client joining a topic gets
``presence_state`` (``{key: {"metas": [...]}}``) read from the table, so it sees members tracked on
any process. Each process refreshes its row in ``realtime.nodes``; the presences of a process that
has gone silent (killed) are removed by whichever process notices first, which sends their leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from gatehouse.core.background import Background
from gatehouse.core.db import Database

log = logging.getLogger("gatehouse.realtime")

Diff = dict[str, dict[str, dict[str, list[dict[str, Any]]]]]
#: Delivers a diff to this process's members of (topic, private).
Deliver = Callable[[str, bool, Diff], None]


@dataclass(frozen=True, slots=True)
class Tracked:
    ref: str
    topic: str
    private: bool
    key: str
    meta: dict[str, Any]

    def entry(self) -> dict[str, Any]:
        return {**self.meta, "phx_ref": self.ref}


def diff(joins: Sequence[Tracked] = (), leaves: Sequence[Tracked] = ()) -> Diff:
    def group(items: Sequence[Tracked]) -> dict[str, dict[str, list[dict[str, Any]]]]:
        grouped: dict[str, dict[str, list[dict[str, Any]]]] = {}
        for item in items:
            grouped.setdefault(item.key, {"metas": []})["metas"].append(item.entry())
        return grouped

    return {"joins": group(joins), "leaves": group(leaves)}


class Presence(Background):
    task_name = "gatehouse-realtime-presence"

    def __init__(self, database: Database, node: str, deliver: Deliver,
                 publish: Callable[[dict[str, Any]], Awaitable[None]], *, node_timeout: float = 30.0) -> None:
        self._database = database
        self._node = node
        self._deliver = deliver
        self._publish = publish
        self._node_timeout = node_timeout

    @property
    def _pool(self) -> asyncpg.Pool:
        return self._database.admin  # opened by the app before realtime starts

    async def start(self) -> None:
        async with self._pool.acquire() as conn:
            await conn.execute("INSERT INTO realtime.nodes (node) VALUES ($1::uuid) ON CONFLICT (node) DO UPDATE "
                               "SET seen_at = now()", self._node)
        await super().start()

    async def stop(self) -> None:
        await super().stop()
        with contextlib.suppress(Exception):
            async with self._pool.acquire() as conn:
                gone = await conn.fetch("DELETE FROM realtime.presences WHERE node = $1::uuid "
                                        "RETURNING ref, topic, private, key, meta", self._node)
                await conn.execute("DELETE FROM realtime.nodes WHERE node = $1::uuid", self._node)
            await self._announce_leaves([_row(r) for r in gone])

    async def state(self, topic: str, private: bool) -> dict[str, dict[str, list[dict[str, Any]]]]:
        async with self._pool.acquire() as conn:
            rows = await conn.fetch("SELECT ref, topic, private, key, meta FROM realtime.presences "
                                    "WHERE topic = $1 AND private = $2 ORDER BY node, ref", topic, private)
        return diff([_row(r) for r in rows])["joins"]

    async def track(self, topic: str, private: bool, key: str, meta: dict[str, Any],
                    previous: Tracked | None) -> Tracked:
        """Track (or re-track, replacing ``previous``) one member; returns what is now tracked."""
        tracked = Tracked(secrets.token_urlsafe(12), topic, private, key, meta)
        async with self._pool.acquire() as conn, conn.transaction():
            if previous is not None:
                await conn.execute("DELETE FROM realtime.presences WHERE node = $1::uuid AND ref = $2",
                                   self._node, previous.ref)
            await conn.execute(
                "INSERT INTO realtime.presences (node, ref, topic, private, key, meta) VALUES ($1::uuid, $2, $3, $4, $5, $6::jsonb)",
                self._node, tracked.ref, topic, private, key, meta,
            )
        await self._announce(topic, private, diff([tracked], [previous] if previous else []))
        return tracked

    async def untrack(self, tracked: Tracked) -> None:
        async with self._pool.acquire() as conn:
            await conn.execute("DELETE FROM realtime.presences WHERE node = $1::uuid AND ref = $2",
                               self._node, tracked.ref)
        await self._announce(tracked.topic, tracked.private, diff(leaves=[tracked]))

    def heard(self, note: dict[str, Any]) -> None:
        """A diff from another process: deliver it to this process's members of the topic."""
        self._deliver(str(note["topic"]), bool(note["private"]), note["diff"])

    async def _announce(self, topic: str, private: bool, change: Diff) -> None:
        self._deliver(topic, private, change)
        await self._publish({"p": {"topic": topic, "private": private, "diff": change}})

    async def _announce_leaves(self, gone: list[Tracked]) -> None:
        by_topic: dict[tuple[str, bool], list[Tracked]] = {}
        for item in gone:
            by_topic.setdefault((item.topic, item.private), []).append(item)
        for (topic, private), items in by_topic.items():
            await self._announce(topic, private, diff(leaves=items))

    async def _run(self) -> None:
        """Refresh this node's row; remove the presences of nodes gone silent, and say they left."""
        while True:
            await asyncio.sleep(self._node_timeout / 3)
            try:
                async with self._pool.acquire() as conn, conn.transaction():
                    await conn.execute("INSERT INTO realtime.nodes (node) VALUES ($1::uuid) ON CONFLICT (node) "
                                       "DO UPDATE SET seen_at = now()", self._node)
                    gone = await conn.fetch(
                        "WITH dead AS (DELETE FROM realtime.nodes WHERE seen_at < now() - make_interval(secs => $1) "
                        "RETURNING node) DELETE FROM realtime.presences p USING dead WHERE p.node = dead.node "
                        "RETURNING p.ref, p.topic, p.private, p.key, p.meta", self._node_timeout,
                    )
                await self._announce_leaves([_row(r) for r in gone])
            except Exception as exc:  # noqa: BLE001 - presence keeps going through database hiccups
                log.warning("realtime: presence upkeep failed (%s)", exc)


def _row(row: asyncpg.Record) -> Tracked:
    return Tracked(row["ref"], row["topic"], row["private"], row["key"], row["meta"])  # jsonb: decoded by the pool
