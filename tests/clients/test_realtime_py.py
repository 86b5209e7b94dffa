"""Realtime through the unmodified realtime-py client (vsn 1.0.0): broadcast, presence, private channels."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from realtime import AsyncRealtimeChannel, AsyncRealtimeClient, RealtimeSubscribeStates

from tests.support import RunningServer, run_sql

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


CHANGES_SCHEMA = """
CREATE TABLE public.rt_notes (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    owner uuid NOT NULL DEFAULT auth.uid(),
    title text NOT NULL,
    shared boolean NOT NULL DEFAULT false,
    secret text
);
ALTER TABLE public.rt_notes ENABLE ROW LEVEL SECURITY;
CREATE POLICY "see own or shared" ON public.rt_notes FOR SELECT TO authenticated USING (owner = auth.uid() OR shared);
CREATE POLICY "write own" ON public.rt_notes FOR ALL TO authenticated USING (owner = auth.uid()) WITH CHECK (owner = auth.uid());
GRANT SELECT (id, owner, title, shared), INSERT, UPDATE, DELETE ON public.rt_notes TO authenticated;
ALTER PUBLICATION supabase_realtime ADD TABLE public.rt_notes;
"""


async def test_postgres_changes_follow_rls_and_filters(
    live: RunningServer, database_url: str, confirmed_session: Any,
) -> None:
    async def sql(statement: str, *args: Any) -> Any:  # run_sql starts its own loop: off this one
        return await asyncio.to_thread(run_sql, database_url, statement, *args)

    await sql(CHANGES_SCHEMA)
    _, alice_session = confirmed_session(live)
    _, bob_session = confirmed_session(live)
    alice_id = alice_session["user"]["id"]
    alice, bob = await client(live), await client(live)
    try:
        await alice.set_auth(alice_session["access_token"])
        await bob.set_auth(bob_session["access_token"])
        to_alice: asyncio.Queue[Any] = asyncio.Queue()
        to_bob: asyncio.Queue[Any] = asyncio.Queue()
        filtered: asyncio.Queue[Any] = asyncio.Queue()
        a = alice.channel("notes-a").on_postgres_changes("*", to_alice.put_nowait, table="rt_notes", schema="public")
        b = bob.channel("notes-b").on_postgres_changes("INSERT", to_bob.put_nowait, table="rt_notes", schema="public")
        f = bob.channel("notes-f").on_postgres_changes("*", filtered.put_nowait, table="rt_notes", schema="public",
                                                      filter="title=eq.match me")
        for channel in (a, b, f):
            state = await subscribed(channel)
            assert state[0] == RealtimeSubscribeStates.SUBSCRIBED, state
        await sql("INSERT INTO public.rt_notes (owner, title, secret) VALUES ($1::uuid, 'private', 's1') RETURNING id",
                  alice_id)
        await sql("INSERT INTO public.rt_notes (owner, title, shared, secret) VALUES ($1::uuid, 'match me', true, 's2') "
                  "RETURNING id", alice_id)
        first = await asyncio.wait_for(to_alice.get(), 10)
        assert first["data"]["type"] == "INSERT" and first["data"]["record"]["title"] == "private"
        assert "secret" not in first["data"]["record"]  # a column alice's role may not read
        assert {c["name"] for c in first["data"]["columns"]} == {"id", "owner", "title", "shared"}
        second = await asyncio.wait_for(to_alice.get(), 10)
        assert second["data"]["record"]["title"] == "match me"
        shared = await asyncio.wait_for(to_bob.get(), 10)  # bob never gets alice's private note
        assert shared["data"]["record"]["title"] == "match me"
        assert (await asyncio.wait_for(filtered.get(), 10))["data"]["record"]["title"] == "match me"
        await sql("UPDATE public.rt_notes SET title = 'renamed' WHERE title = 'private'")
        updated = await asyncio.wait_for(to_alice.get(), 10)
        assert updated["data"]["type"] == "UPDATE" and updated["data"]["record"]["title"] == "renamed"
        await sql("DELETE FROM public.rt_notes WHERE title = 'renamed'")
        deleted = await asyncio.wait_for(to_alice.get(), 10)
        assert deleted["data"]["type"] == "DELETE" and set(deleted["data"]["old_record"]) == {"id"}
        # A deleted row cannot be checked against the policies: as upstream, every role that may
        # SELECT from the table hears of it, with only its primary key (a filter on another column passes).
        gone = await asyncio.wait_for(filtered.get(), 10)
        assert gone["data"]["type"] == "DELETE" and gone["data"]["old_record"] == {"id": deleted["data"]["old_record"]["id"]}
        await asyncio.sleep(0.5)
        assert to_bob.empty() and filtered.empty()  # bob's INSERT channel heard nothing of alice's private note
    finally:
        await alice.close()
        await bob.close()
