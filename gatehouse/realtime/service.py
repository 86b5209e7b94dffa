"""The realtime service of one process: its channels by topic, and how messages reach them.

A broadcast is delivered to this process's channels of the topic at once, and sent on the bus to
the other processes (:mod:`gatehouse.realtime.bus`), which deliver it to theirs. Public and
private channels of one name are different topics, as upstream keeps them. A private channel's
members receive broadcasts only if its policies let them read, and presence only likewise.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from typing import Any

import asyncpg
import orjson

from gatehouse.core.caller import Callers
from gatehouse.core.config import Settings
from gatehouse.core.db import Database, SessionEnded
from gatehouse.realtime.bus import Bus, Note
from gatehouse.realtime.changes import ChangeRouter, subscriptions
from gatehouse.realtime.channel import Channel, Permissions, Refused
from gatehouse.realtime.feed import ChangeFeed
from gatehouse.realtime.presence import Diff, Presence
from gatehouse.realtime.protocol import BinaryPayload, Frame
from gatehouse.realtime.publication import sync_publication

log = logging.getLogger("gatehouse.realtime")


class Realtime:
    def __init__(self, database: Database, callers: Callers, settings: Settings) -> None:
        self.database = database
        self.callers = callers
        self.settings = settings
        self.topics: dict[tuple[str, bool], set[Channel]] = {}
        self.bus = Bus(database, self._heard)
        self.presence = Presence(database, self.bus.node, self._deliver_presence, self.bus.publish,
                                 node_timeout=settings.realtime_node_timeout)
        self.feed: ChangeFeed | None = None  # made at start: it needs the open pool
        self.router = ChangeRouter(self)
        #: Channels with postgres_changes subscriptions: the ones a change may be for.
        self.change_channels: set[Channel] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        await self._sync_publication()
        await self.router.start()
        self.feed = ChangeFeed(self.database.listen_pool, retention=self.settings.realtime_retention,
                               poll_interval=self.settings.realtime_poll_interval, hub=self.database.listener,
                               wanted=lambda: bool(self.change_channels))
        self.feed.subscribe(self.router.on_changes)
        await self.feed.start()
        await self.bus.start()
        await self.presence.start()
        self._sweeper = asyncio.create_task(self._sweep())

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        for members in list(self.topics.values()):
            for channel in list(members):
                channel.conn.close(1001)
        if self.feed is not None:
            await self.feed.stop()
        await self.router.stop()
        await self.presence.stop()
        await self.bus.stop()

    # -- channels ------------------------------------------------------------------------------

    def attach(self, channel: Channel) -> None:
        self.topics.setdefault(channel.key, set()).add(channel)
        if channel.changes:
            self.change_channels.add(channel)

    async def follow_changes(self) -> None:
        """Before a postgres_changes subscription is confirmed: the change feed reads again, if
        it was skipping reads while no channel here wanted changes."""
        if self.feed is not None:
            await self.feed.resume()

    def detach(self, channel: Channel) -> None:
        self.change_channels.discard(channel)
        members = self.topics.get(channel.key)
        if members is not None:
            members.discard(channel)
            if not members:
                del self.topics[channel.key]

    async def check_session(self, claims: dict[str, Any]) -> None:
        """Refuse claims whose signed-in session has ended (signed out, expired, banned, deleted)."""
        try:
            await self.database.confirm_session(claims)
        except SessionEnded as ended:
            raise Refused(f"Unauthorized: {ended.message}") from None

    async def permissions(self, claims: dict[str, Any], topic: str) -> Permissions:
        """What ``claims`` may do on the private ``topic``, by the policies on realtime.messages."""
        role = str(claims.get("role", "anon"))
        async with self.database.checking() as conn:
            try:
                row = await conn.fetchrow("SELECT * FROM realtime.channel_permissions($1, $2, $3)", role,
                                          orjson.dumps(claims).decode(), topic)
            except asyncpg.PostgresError as exc:  # a policy that fails is a refusal, as upstream's RlsPolicyError
                if exc.sqlstate == "GH401":  # the session check (gatehouse.become)
                    raise Refused(f"Unauthorized: {exc}") from None
                log.warning("realtime: checking the policies of %r failed (%s)", topic, exc)
                raise Refused(f"Unauthorized: You do not have permissions to read from this Channel topic: {topic}") from None
        assert row is not None
        return Permissions(row["broadcast_read"], row["presence_read"], row["broadcast_write"], row["presence_write"])

    async def changes_for(self, requested: Any, claims: dict[str, Any]) -> list[dict[str, Any]]:
        """The join's postgres_changes subscriptions, checked (see :mod:`gatehouse.realtime.changes`)."""
        return await subscriptions(self, requested, claims)

    def schema_changed(self) -> None:
        """After DDL (the schema cache reloaded): put the capture trigger on newly published tables."""
        task = asyncio.create_task(self._sync_publication())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _sync_publication(self) -> None:
        try:
            await sync_publication(self.database.admin, self.settings.exposed_schemas)
        except Exception as exc:  # noqa: BLE001 - retried at the next reload
            log.warning("realtime: could not sync the capture triggers with the publication (%s)", exc)

    # -- broadcast -----------------------------------------------------------------------------

    async def broadcast(self, topic: str, private: bool, message: dict[str, Any], *, sender: Channel | None) -> None:
        self._deliver_broadcast(topic, private, message, sender)
        payload = message.get("payload")
        wire = dict(message)
        if isinstance(payload, BinaryPayload):
            wire["payload"] = {"$binary": base64.b64encode(payload.data).decode()}
        await self.bus.publish({"b": {"topic": topic, "private": private, **wire}})

    def _deliver_broadcast(self, topic: str, private: bool, message: dict[str, Any], sender: Channel | None) -> None:
        for channel in list(self.topics.get((topic, private), ())):
            if channel is sender and not channel.self_broadcast:
                continue
            if channel.private and not channel.permissions.broadcast_read:
                continue
            channel.conn.push(Frame(channel.topic, "broadcast", message, None, None))

    def _deliver_presence(self, topic: str, private: bool, diff: Diff) -> None:
        for channel in list(self.topics.get((topic, private), ())):
            if channel.presence_enabled and (not channel.private or channel.permissions.presence_read):
                channel.push("presence_diff", diff)

    async def _heard(self, note: Note) -> None:
        if "b" in note:
            body = note["b"]
            message = {"type": "broadcast", "event": str(body.get("event", "")), "payload": body.get("payload", {})}
            payload = message["payload"]
            if isinstance(payload, dict) and set(payload) == {"$binary"}:
                message["payload"] = BinaryPayload(message["event"], base64.b64decode(payload["$binary"]))
            self._deliver_broadcast(str(body["topic"]), bool(body.get("private")), message, None)
        elif "p" in note:
            self.presence.heard(note["p"])

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(60)
            with contextlib.suppress(Exception):
                await self.bus.sweep()
                async with self.database.admin.acquire() as conn:
                    await conn.execute("DELETE FROM realtime.messages WHERE inserted_at < now() - interval '1 hour'")
