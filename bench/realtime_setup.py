"""Set-up for the realtime bench: the same table, rules and signed-in users on Gatehouse and PocketBase.

Gatehouse: ``public.messages`` (``seq``, ``sent_at``, ``body``) with RLS on and two policies (a
signed-in user may read every row and insert), granted to ``authenticated`` and added to the
``supabase_realtime`` publication, as the README's set-up says. Subscribers are bulk users
(``bench.scale_fill``: rows written by SQL, one password hash for all) each given a fresh session
and an access token signed with the server's keys, as a log-in would issue them; the writer is
one more of them.

PocketBase: a base collection ``messages`` with the same fields, its list, view and create rules
``@request.auth.id != ""`` (any signed-in user). Users are made through its records API (one
bcrypt hash each, in parallel) and get their tokens from the superuser's impersonate API.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from bench import scale_fill
from bench.harness import PASSWORD, Server
from bench.pocketbase import PocketBase
from gatehouse.auth.passwords import PasswordHasher
from gatehouse.auth.tokens import AccessTokens
from gatehouse.core.config import load_settings
from gatehouse.core.embedded import running_url
from gatehouse.core.keys import load_keys

SCHEMA = """
CREATE TABLE public.messages (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    seq bigint NOT NULL,
    sent_at double precision NOT NULL,
    body text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
ALTER TABLE public.messages ENABLE ROW LEVEL SECURITY;
CREATE POLICY "signed-in users read messages" ON public.messages FOR SELECT TO authenticated USING (true);
CREATE POLICY "signed-in users post messages" ON public.messages FOR INSERT TO authenticated WITH CHECK (true);
GRANT SELECT, INSERT ON public.messages TO authenticated;
ALTER PUBLICATION supabase_realtime ADD TABLE public.messages;
"""
SIGNED_IN = '@request.auth.id != ""'


def gatehouse_setup(server: Server, subscribers: int, avatar: Path, say: Callable[[str], None]) -> dict[str, Any]:
    """The table, ``subscribers + 1`` signed-in users; returns what the bench needs to drive it."""
    admin_url = running_url(server.data_dir)
    settings = load_settings(data_dir=server.data_dir)
    issuer = AccessTokens(load_keys(settings), settings)

    async def prepare() -> list[tuple[Any, Any]]:
        conn = await asyncpg.connect(admin_url)
        try:
            await conn.execute(SCHEMA)
        finally:
            await conn.close()
        await scale_fill.fill(admin_url, subscribers + 1, PasswordHasher(settings).hash(PASSWORD), avatar,
                              say=lambda _: None)
        users = await scale_fill.pick(admin_url, subscribers + 1, subscribers + 1, seed=1)
        return list(zip(users, await scale_fill.mint_sessions(admin_url, users), strict=True))

    began = time.monotonic()
    tokens = []
    now = int(time.time())
    for user, (session_id, _) in asyncio.run(prepare()):
        claimed = {"id": user.id, "email": user.email, "role": "authenticated",
                   "app_metadata": {"provider": "email", "providers": ["email"]}, "user_metadata": {}}
        tokens.append(issuer.issue(claimed, session_id, amr=[{"method": "password", "timestamp": now}]).token)
    writer = tokens.pop()
    create_url = f"{server.url}/rest/v1/messages"
    headers = {"apikey": server.publishable_key, "Authorization": f"Bearer {writer}",
               "Content-Type": "application/json", "Prefer": "return=minimal"}
    deadline = time.monotonic() + 30  # the data API reloads its schema on the NOTIFY after the DDL
    while True:
        probe = httpx.post(create_url, headers=headers, json={"seq": 0, "sent_at": time.time(), "body": "probe"})
        if probe.status_code == 201 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    if probe.status_code != 201:
        raise RuntimeError(f"gatehouse: creating a message answered {probe.status_code}: {probe.text}")
    say(f"gatehouse: table, policies and {subscribers + 1} signed-in users in {time.monotonic() - began:.1f} s")
    return {"url": server.url, "apikey": server.publishable_key, "tokens": tokens, "create_url": create_url,
            "create_headers": headers}


def pocketbase_setup(pb: PocketBase, subscribers: int, say: Callable[[str], None]) -> dict[str, Any]:
    """The collection, ``subscribers + 1`` users and their tokens."""
    admin = {"Authorization": pb.admin_token}
    began = time.monotonic()
    httpx.post(f"{pb.url}/api/collections", headers=admin, json={
        "name": "messages", "type": "base",
        "fields": [{"name": "seq", "type": "number", "required": True, "onlyInt": True},
                   {"name": "sent_at", "type": "number", "required": True},
                   {"name": "body", "type": "text", "required": True}],
        "listRule": SIGNED_IN, "viewRule": SIGNED_IN, "createRule": SIGNED_IN,
    }).raise_for_status()

    async def users() -> list[str]:
        gate = asyncio.Semaphore(8)
        async with httpx.AsyncClient(base_url=pb.url, headers=admin, timeout=60) as client:
            async def one(i: int) -> str:
                async with gate:
                    made = await client.post("/api/collections/users/records", json={
                        "email": f"rt-{i}@example.com", "password": PASSWORD, "passwordConfirm": PASSWORD,
                        "verified": True})
                    made.raise_for_status()
                    token = await client.post(f"/api/collections/users/impersonate/{made.json()['id']}",
                                              json={"duration": 7200})
                    token.raise_for_status()
                    return str(token.json()["token"])
            return list(await asyncio.gather(*(one(i) for i in range(subscribers + 1))))

    tokens = asyncio.run(users())
    writer = tokens.pop()
    say(f"pocketbase: collection and {subscribers + 1} users in {time.monotonic() - began:.1f} s")
    return {"url": pb.url, "tokens": tokens, "create_url": f"{pb.url}/api/collections/messages/records",
            "create_headers": {"Authorization": writer}}


__all__ = ["gatehouse_setup", "pocketbase_setup"]
