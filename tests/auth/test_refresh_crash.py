"""Refresh rotations commit without waiting for the disk: what a kill -9 of PostgreSQL costs.

``REFRESH_SQL`` turns ``synchronous_commit`` off for a rotation's own transaction. A crash may then
lose the last rotations, each whole: the session's active token is the one before them, the
client holding a lost token is refused (and signs in again), and no token is accepted twice.
"""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from pathlib import Path

import asyncpg
import httpx
import jwt

from gatehouse.auth.sessions import REFRESH_SQL
from gatehouse.auth.tokens import sha256_hex
from gatehouse.core.embedded import EmbeddedPostgres, running_url
from gatehouse.core.keys import KeySet
from tests.auth.helpers import PASSWORD
from tests.support import RunningServer, start_server

ROTATIONS = 40


def kill_9(data_dir: Path) -> None:
    """SIGKILL the embedded PostgreSQL: the postmaster and every process it started."""
    pgdata = EmbeddedPostgres(data_dir).pgdata
    postmaster = int((pgdata / "postmaster.pid").read_text().split()[0])
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == postmaster:
            children.append(int(stat.parent.name))
    for pid in [postmaster, *children]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def refresh(server: RunningServer, token: str) -> httpx.Response:
    return httpx.post(f"{server.url}/auth/v1/token?grant_type=refresh_token",
                      headers={"apikey": server.keys.publishable_key}, json={"refresh_token": token}, timeout=10)


async def session_tokens(data_dir: Path, session_id: str) -> dict[str, bool]:
    """The session's refresh tokens as stored: hash -> revoked."""
    conn = await asyncpg.connect(running_url(data_dir))
    try:
        rows = await conn.fetch("SELECT token, revoked FROM auth.refresh_tokens WHERE session_id = $1",
                                uuid.UUID(session_id))
    finally:
        await conn.close()
    return {row["token"]: row["revoked"] for row in rows}


async def commit_mode_after(data_dir: Path, old: str, new: str) -> tuple[str, str]:
    """The rotation's outcome and the ``synchronous_commit`` its transaction commits with (rolled back)."""
    conn = await asyncpg.connect(running_url(data_dir))
    try:
        transaction = conn.transaction()
        await transaction.start()
        row = await conn.fetchrow(REFRESH_SQL, sha256_hex(old), sha256_hex(new), 10)
        mode = await conn.fetchval("SHOW synchronous_commit")
        await transaction.rollback()
    finally:
        await conn.close()
    assert row is not None
    return row["rotation_outcome"], mode


def test_a_crash_loses_whole_rotations_and_the_client_signs_in_again(tmp_path: Path, keys: KeySet,
                                                                       keys_dir: Path) -> None:
    env = {"GATEHOUSE_EMBEDDED_DB_PORT": "0", "GATEHOUSE_RATE_LIMITS_ENABLED": "false"}
    data = tmp_path / "data"
    server = start_server(data, keys, database_url=None, keys_file=keys_dir / "keys.json", env=env)
    try:
        admin = {"apikey": server.keys.secret_key}
        httpx.post(f"{server.url}/auth/v1/admin/users", headers=admin, json={
            "email": "crash@example.com", "password": PASSWORD, "email_confirm": True}).raise_for_status()
        signed_in = httpx.post(f"{server.url}/auth/v1/token?grant_type=password",
                               headers={"apikey": server.keys.publishable_key},
                               json={"email": "crash@example.com", "password": PASSWORD}).raise_for_status().json()
        session_id = jwt.decode(signed_in["access_token"], options={"verify_signature": False})["session_id"]
        first = signed_in["refresh_token"]

        # Only a rotation commits asynchronously; a refused refresh (and a reuse revocation) does not.
        assert asyncio.run(commit_mode_after(data, first, "next-token-never-stored")) == ("rotated", "off")
        assert asyncio.run(commit_mode_after(data, "no-such-token-anywhere", "x"))[1] == "on"

        # Keep the WAL writer asleep, so the last rotations are still in memory when PostgreSQL dies.
        async def slow_wal_writer() -> None:
            conn = await asyncpg.connect(running_url(data))
            await conn.execute("ALTER SYSTEM SET wal_writer_delay = '10s'")
            await conn.execute("SELECT pg_reload_conf()")
            await conn.close()

        asyncio.run(slow_wal_writer())
        chain = [first]
        for _ in range(ROTATIONS):
            answer = refresh(server, chain[-1])
            assert answer.status_code == 200, answer.text
            chain.append(answer.json()["refresh_token"])
        kill_9(data)
    finally:
        server.stop()

    server = start_server(data, keys, database_url=None, keys_file=keys_dir / "keys.json", env=env)
    try:
        stored = asyncio.run(session_tokens(data, session_id))
        hashes = [sha256_hex(token) for token in chain]
        active = [i for i, digest in enumerate(hashes) if stored.get(digest) is False]
        assert len(active) == 1, f"the session must have exactly one active token, has {len(active)}"
        kept = active[0]
        assert all(stored.get(digest) is True for digest in hashes[:kept]), "every earlier token stays revoked"
        assert not any(digest in stored for digest in hashes[kept + 1:]), "a lost rotation is lost whole"
        # With the WAL writer asleep, the crash lost the rotations after ``kept``; the client holds
        # the newest token, which the database never kept: refused, so it signs in again.
        assert kept < ROTATIONS, "the crash should have lost the last rotations (commits did not wait)"
        refused = refresh(server, chain[-1])
        assert refused.status_code == 400
        assert refused.json()["error_code"] == "refresh_token_not_found"
        # The active token rotates once, as any; the session goes on with its successor.
        answer = refresh(server, chain[kept])
        assert answer.status_code == 200, answer.text
        successor = answer.json()["refresh_token"]
        assert refresh(server, successor).status_code == 200
        again = httpx.post(f"{server.url}/auth/v1/token?grant_type=password",
                           headers={"apikey": server.keys.publishable_key},
                           json={"email": "crash@example.com", "password": PASSWORD})
        assert again.status_code == 200
    finally:
        server.stop()
