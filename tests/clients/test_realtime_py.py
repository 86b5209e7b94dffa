"""Realtime through the unmodified realtime-py client (vsn 1.0.0): broadcast, presence, private channels."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from realtime import AsyncRealtimeChannel, AsyncRealtimeClient, RealtimeSubscribeStates

from tests.support import RunningServer

pytestmark = pytest.mark.asyncio


@pytest.fixture(scope="module")
def live(server_factory: Callable[..., RunningServer]) -> RunningServer:
    return server_factory(env={"GATEHOUSE_RATE_LIMITS_ENABLED": "false"})


async def client(live: RunningServer) -> AsyncRealtimeClient:
    found = AsyncRealtimeClient(f"{live.url}/realtime/v1", live.keys.publishable_key, auto_reconnect=False)
    await found.connect()
    return found


async def subscribed(channel: AsyncRealtimeChannel) -> tuple[RealtimeSubscribeStates, Any]:
    done: asyncio.Future[tuple[RealtimeSubscribeStates, Any]] = asyncio.get_running_loop().create_future()

    def on_state(state: RealtimeSubscribeStates, error: Any = None) -> None:
        if not done.done():
            done.set_result((state, error))

    await channel.subscribe(on_state)
    return await asyncio.wait_for(done, 10)


async def test_broadcast_reaches_the_other_client_and_self_only_when_asked(live: RunningServer) -> None:
    alice, bob = await client(live), await client(live)
    try:
        got_bob: asyncio.Queue[Any] = asyncio.Queue()
        got_alice: asyncio.Queue[Any] = asyncio.Queue()
        a = alice.channel("room-1", {"config": {"broadcast": {"self": False, "ack": True}}})
        a.on_broadcast("msg", got_alice.put_nowait)
        b = bob.channel("room-1")
        b.on_broadcast("msg", got_bob.put_nowait)
        state = await subscribed(a)
        assert state[0] == RealtimeSubscribeStates.SUBSCRIBED, state
        assert (await subscribed(b))[0] == RealtimeSubscribeStates.SUBSCRIBED
        await a.send_broadcast("msg", {"text": "hello"})
        received = await asyncio.wait_for(got_bob.get(), 10)
        assert received["event"] == "msg" and received["payload"] == {"text": "hello"}
        await asyncio.sleep(0.3)
        assert got_alice.empty()  # self: false
    finally:
        await alice.close()
        await bob.close()


async def test_presence_joins_and_leaves(live: RunningServer) -> None:
    alice, bob = await client(live), await client(live)
    try:
        joined: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        left: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        watcher = bob.channel("lobby", {"config": {"presence": {"key": "bob"}}})
        watcher.on_presence_join(lambda key, current, new: joined.put_nowait((key, new)))
        watcher.on_presence_leave(lambda key, current, gone: left.put_nowait((key, gone)))
        assert (await subscribed(watcher))[0] == RealtimeSubscribeStates.SUBSCRIBED
        tracked = alice.channel("lobby", {"config": {"presence": {"key": "alice"}}})
        assert (await subscribed(tracked))[0] == RealtimeSubscribeStates.SUBSCRIBED
        await tracked.track({"status": "online"})
        key, new = await asyncio.wait_for(joined.get(), 10)
        assert key == "alice" and new[0]["status"] == "online"
        assert "alice" in watcher.presence_state()
        await tracked.untrack()
        key, gone = await asyncio.wait_for(left.get(), 10)
        assert key == "alice" and gone[0]["status"] == "online"
    finally:
        await alice.close()
        await bob.close()
