"""The realtime bench's clients: cheap asyncio subscribers, the writer, and what they count.

Subscribers run as tasks of one process. A Gatehouse subscriber is a WebSocket (the
``websockets`` library, offering permessage-deflate as realtime-py does) speaking Phoenix
channels with vsn 1.0.0 frames: it joins ``realtime:bench`` with its own access token and one
``postgres_changes`` subscription (INSERT on ``public.messages``) and heartbeats every 25 s, as
the clients do. A PocketBase subscriber is an SSE stream (aiohttp): ``GET /api/realtime`` gives
its client id, then ``POST /api/realtime`` with its user's token subscribes it to ``messages/*``
(what the JS SDK sends for ``collection('messages').subscribe('*')``).

Each row the writer creates carries ``seq`` (its number in the run) and ``sent_at``: the
writer's ``time.time()`` just before it sends the create request. A subscriber takes
``time.time()`` when its message has been read and decoded; both clocks are this process's, so
latency = receipt - sent_at is on one clock, and includes the create request's own path
(HTTP, the insert, its commit) as a user's write does.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from array import array
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

TOPIC = "realtime:bench"
HEARTBEAT = 25.0


#: Each run's seqs start at a multiple of this, so a message names its run.
RUN_STRIDE = 1_000_000


@dataclass
class Tally:
    """What the subscribers received of one run's rows: seq ``base`` to ``base + count - 1``.

    It keeps counting after the run's drain ended (``drained`` set): those receipts are late,
    not lost; they are kept apart so the run's delivered/s counts only what came in time.
    """

    subscribers: int
    base: int
    count: int
    latencies_ms: array = field(default_factory=lambda: array("d"))  # type: ignore[type-arg]
    first_receipt: float = 0.0
    last_receipt: float = 0.0
    duplicates: int = 0
    drained: bool = False
    late: int = 0

    def __post_init__(self) -> None:
        self.seen = [bytearray(self.count) for _ in range(self.subscribers)]

    def record(self, subscriber: int, seq: int, sent_at: float, now: float) -> None:
        slot = seq - self.base
        seen = self.seen[subscriber]
        if seen[slot]:
            self.duplicates += 1
            return
        seen[slot] = 1
        self.latencies_ms.append(1000.0 * (now - sent_at))
        if self.drained:
            self.late += 1
            return
        if not self.first_receipt:
            self.first_receipt = now
        self.last_receipt = now

    def delivered(self) -> int:
        return len(self.latencies_ms) - self.late

    def received_by(self, subscriber: int, created: list[int]) -> int:
        seen = self.seen[subscriber]
        return sum(seen[seq - self.base] for seq in created)


@dataclass
class Sink:
    """Where subscribers report: every run's tally, found by the message's seq."""

    tallies: dict[int, Tally] = field(default_factory=dict)
    closed: set[int] = field(default_factory=set)
    unknown: int = 0  # messages of no run (the set-up's probe row)

    def record(self, subscriber: int, record: dict[str, Any], now: float) -> None:
        seq = int(record["seq"])
        tally = self.tallies.get(seq - seq % RUN_STRIDE)
        if tally is None or not 0 <= seq - tally.base < tally.count:
            self.unknown += 1
        else:
            tally.record(subscriber, seq, float(record["sent_at"]), now)


class PhoenixSubscribers:
    """N Gatehouse subscribers, one WebSocket and one channel each."""

    def __init__(self, url: str, apikey: str, tokens: list[str], sink: Sink, *, deflate: bool = True) -> None:
        self.compression = "deflate" if deflate else None
        self.url = url.replace("http://", "ws://") + f"/realtime/v1/websocket?apikey={apikey}&vsn=1.0.0"
        self.tokens = tokens
        self.sink = sink
        self.sockets: list[ClientConnection] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.refs = itertools.count(1)

    def frame(self, topic: str, event: str, payload: dict[str, Any]) -> bytes:
        ref = str(next(self.refs))
        return orjson.dumps({"topic": topic, "event": event, "payload": payload, "ref": ref, "join_ref": "1"})

    async def _open(self, index: int) -> None:
        ws = await connect(self.url, open_timeout=60, max_size=None, ping_interval=None,
                           compression=self.compression)
        config = {"broadcast": {"self": False, "ack": False}, "presence": {"key": ""}, "private": False,
                  "postgres_changes": [{"event": "INSERT", "schema": "public", "table": "messages"}]}
        await ws.send(self.frame(TOPIC, "phx_join", {"config": config, "access_token": self.tokens[index]}).decode())
        while True:
            reply = orjson.loads(await asyncio.wait_for(ws.recv(), 60))
            if reply["event"] == "phx_reply" and reply["topic"] == TOPIC:
                break
        if reply["payload"].get("status") != "ok":
            raise RuntimeError(f"subscriber {index}: join refused: {reply['payload']}")
        self.sockets.append(ws)
        self.tasks.append(asyncio.create_task(self._read(index, ws)))

    async def _read(self, index: int, ws: ClientConnection) -> None:
        record = self.sink.record
        try:
            async for raw in ws:
                frame = orjson.loads(raw)
                if frame["event"] == "postgres_changes":
                    record(index, frame["payload"]["data"]["record"], time.time())
        except ConnectionClosed:
            pass
        self.sink.closed.add(index)

    async def open(self, concurrency: int = 50) -> None:
        await _bounded([lambda i=i: self._open(i) for i in range(len(self.tokens))], concurrency)
        self.tasks.append(asyncio.create_task(self._heartbeat()))

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT)
            for ws in self.sockets:
                try:
                    await ws.send(self.frame("phoenix", "heartbeat", {}).decode())
                except ConnectionClosed:
                    pass

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*(ws.close() for ws in self.sockets), return_exceptions=True)


class SSESubscribers:
    """N PocketBase subscribers, one SSE stream each, subscribed as their user to ``messages/*``."""

    def __init__(self, url: str, tokens: list[str], sink: Sink, session: aiohttp.ClientSession) -> None:
        self.url = url
        self.tokens = tokens
        self.sink = sink
        self.session = session
        self.tasks: list[asyncio.Task[None]] = []

    async def _open(self, index: int) -> None:
        response = await self.session.get(f"{self.url}/api/realtime", timeout=aiohttp.ClientTimeout(total=None))
        response.raise_for_status()
        buffer = b""
        while b"\n\n" not in buffer:
            chunk = await asyncio.wait_for(response.content.readany(), 60)
            if not chunk:
                raise RuntimeError(f"subscriber {index}: the stream ended before PB_CONNECT")
            buffer += chunk
        event, buffer = buffer.split(b"\n\n", 1)
        client_id = orjson.loads(_data(event))["clientId"]
        answer = await self.session.post(f"{self.url}/api/realtime", headers={"Authorization": self.tokens[index]},
                                         json={"clientId": client_id, "subscriptions": ["messages/*"]})
        if answer.status != 204:
            raise RuntimeError(f"subscriber {index}: subscribe answered {answer.status}: {await answer.text()}")
        self.tasks.append(asyncio.create_task(self._read(index, response, buffer)))

    async def _read(self, index: int, response: aiohttp.ClientResponse, buffer: bytes) -> None:
        record = self.sink.record
        try:
            while True:
                chunk = await response.content.readany()
                if not chunk:
                    break
                buffer += chunk
                if b"\n\n" not in buffer:
                    continue
                *events, buffer = buffer.split(b"\n\n")
                now = time.time()
                for event in events:
                    if b"event:messages/*" in event:
                        record(index, orjson.loads(_data(event))["record"], now)
        except (TimeoutError, aiohttp.ClientError):
            pass
        finally:
            response.release()
        self.sink.closed.add(index)

    async def open(self, concurrency: int = 50) -> None:
        await _bounded([lambda i=i: self._open(i) for i in range(len(self.tokens))], concurrency)

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


def _data(event: bytes) -> bytes:
    """The ``data:`` of one SSE event (PocketBase sends it on one line)."""
    for line in event.split(b"\n"):
        if line.startswith(b"data:"):
            return line[5:]
    raise ValueError(f"no data in SSE event {event[:200]!r}")


async def _bounded(calls: list[Callable[[], Awaitable[None]]], concurrency: int) -> None:
    gate = asyncio.Semaphore(concurrency)

    async def one(call: Callable[[], Awaitable[None]]) -> None:
        async with gate:
            await call()

    await asyncio.gather(*(one(call) for call in calls))


@dataclass
class Written:
    """The writer's side of a run: which seqs were created, and each create's round trip."""

    created: list[int] = field(default_factory=list)
    failed: dict[int, int] = field(default_factory=dict)  # status -> count
    round_trips_ms: list[float] = field(default_factory=list)
    started: float = 0.0
    started_wall: float = 0.0
    finished: float = 0.0
    late_ms: float = 0.0  # the largest delay of a create behind its schedule


async def write(session: aiohttp.ClientSession, url: str, headers: dict[str, str], *, base: int, count: int,
                interval: float) -> Written:
    """Create ``count`` rows, one every ``interval`` seconds on a fixed schedule (not waiting for answers)."""
    written = Written()
    written.started_wall = time.time()
    written.started = start = time.monotonic()

    async def create(seq: int) -> None:
        sent_at = time.time()
        began = time.monotonic()
        body = {"seq": seq, "sent_at": sent_at, "body": f"bench message {seq}: the quick brown fox"}
        try:
            async with session.post(url, headers=headers, json=body) as answer:
                await answer.read()
                status = answer.status
        except aiohttp.ClientError:
            status = 0
        if 200 <= status < 300:
            written.created.append(seq)
            written.round_trips_ms.append(1000 * (time.monotonic() - began))
        else:
            written.failed[status] = written.failed.get(status, 0) + 1

    tasks = []
    for i in range(count):
        delay = start + i * interval - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            written.late_ms = max(written.late_ms, -1000 * delay)
        tasks.append(asyncio.create_task(create(base + i)))
    await asyncio.gather(*tasks)
    written.finished = time.monotonic()
    written.created.sort()
    return written


__all__ = ["RUN_STRIDE", "PhoenixSubscribers", "SSESubscribers", "Sink", "Tally", "Written", "write"]
