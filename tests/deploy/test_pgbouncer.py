"""Gatehouse through pgbouncer in transaction mode (``deploy/pgbouncer/pgbouncer.ini``, Debian's
pgbouncer 1.18) in front of Debian's PostgreSQL 15.

``GATEHOUSE_DATABASE_URL`` names pgbouncer; ``GATEHOUSE_DATABASE_DIRECT_URL`` names the server,
for the migrations' session lock and every LISTEN. pgbouncer lends each of its two pools (the
owner role's and authenticator's) 3 server connections, fewer than Gatehouse's pools hold, so
requests share server connections transaction by transaction, and the caller's role and claims,
set for one transaction, must never be seen by the next one.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from gatehouse.core.keys import KeySet
from tests.auth.helpers import PASSWORD
from tests.deploy.components import PgBouncer, Postgres
from tests.realtime.wire import Socket
from tests.smtp import SMTPServer, smtp_env
from tests.support import RunningServer, fetch_rows, gatehouse_command, png, start_server

LINK = re.compile(r"token_hash=([\w-]+)&(?:amp;)?type=(\w+)")
POOL_SIZE = 3

#: A table only its rows' owners see, and a function answering who the database thinks is calling.
NOTES = """
CREATE TABLE public.notes (
    id bigserial PRIMARY KEY,
    owner uuid NOT NULL DEFAULT auth.uid(),
    body text NOT NULL
);
ALTER TABLE public.notes ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_notes ON public.notes USING (owner = auth.uid()) WITH CHECK (owner = auth.uid());
GRANT SELECT, INSERT ON public.notes TO authenticated;
GRANT USAGE ON SEQUENCE public.notes_id_seq TO authenticated;
CREATE FUNCTION public.whoami() RETURNS jsonb LANGUAGE sql STABLE
    AS $$ SELECT jsonb_build_object('uid', auth.uid(), 'role', current_user, 'pid', pg_backend_pid()) $$;
GRANT EXECUTE ON FUNCTION public.whoami() TO anon, authenticated;
"""


@dataclass
class Pooled:
    postgres: Postgres
    direct_url: str
    bouncer: PgBouncer
    server: RunningServer


@pytest.fixture(scope="module")
def pooled(tmp_path_factory: pytest.TempPathFactory, keys: KeySet, keys_dir: Path,
           module_smtp: SMTPServer) -> Iterator[Pooled]:
    root = tmp_path_factory.mktemp("pgbouncer")
    postgres = Postgres(root / "postgres").start()
    bouncer: PgBouncer | None = None
    server: RunningServer | None = None
    try:
        direct_url = postgres.bootstrap()
        bouncer = PgBouncer(root / "pgbouncer", postgres, pool_size=POOL_SIZE).start()
        owner = urlsplit(direct_url)
        migrations = root / "migrations"
        migrations.mkdir()
        (migrations / "0001_notes.sql").write_text(NOTES)
        server = start_server(root / "gatehouse", keys, database_url=bouncer.url(str(owner.username), str(owner.password)),
                              keys_file=keys_dir / "keys.json", env={
                                  "GATEHOUSE_DATABASE_DIRECT_URL": direct_url, "GATEHOUSE_MIGRATIONS_DIR": str(migrations),
                                  "GATEHOUSE_DB_POOL_MAX_SIZE": "10", "GATEHOUSE_RATE_LIMITS_ENABLED": "false",
                                  # the change feed reads every minute without a notification: a change
                                  # delivered sooner came through its LISTEN, on the direct connection
                                  "GATEHOUSE_REALTIME_POLL_INTERVAL": "60",
                                  **smtp_env(module_smtp.port)})
        yield Pooled(postgres, direct_url, bouncer, server)
    finally:
        if server is not None:
            server.stop()
        if bouncer is not None:
            bouncer.stop()
        postgres.stop()


def _client(server: RunningServer, token: str | None = None) -> httpx.Client:
    headers = {"apikey": server.keys.publishable_key}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.Client(base_url=server.url, headers=headers, timeout=30)


def _confirmed_user(pooled: Pooled, smtp: SMTPServer) -> dict[str, Any]:
    """Sign up, confirm through the mailed link (the outbox, woken by its LISTEN), sign in."""
    email = f"pooled-{uuid.uuid4().hex[:10]}@example.com"
    with _client(pooled.server) as http:
        before = len(smtp.received)
        assert http.post("/auth/v1/signup", json={"email": email, "password": PASSWORD}).status_code == 200
        mails = smtp.wait_for_sync(before + 1)
        body = next(mail for mail in mails[before:] if email in str(mail.email["To"])).email.get_body(("plain",))
        assert body is not None
        found = LINK.search(body.get_content())
        assert found, "no confirmation link in the mail"
        verified = http.post("/auth/v1/verify", json={"type": "email", "token_hash": found[1]})
        assert verified.status_code == 200, verified.text
        signed_in = http.post("/auth/v1/token?grant_type=password", json={"email": email, "password": PASSWORD})
        assert signed_in.status_code == 200, signed_in.text
        return signed_in.json()  # type: ignore[no-any-return]


def test_the_tutorial_flow_through_pgbouncer(pooled: Pooled, module_smtp: SMTPServer) -> None:
    session = _confirmed_user(pooled, module_smtp)
    uid = session["user"]["id"]
    with _client(pooled.server, session["access_token"]) as http:
        upsert = http.post("/rest/v1/profiles", json={"id": uid, "full_name": "Pooled"},
                           headers={"Prefer": "resolution=merge-duplicates,return=representation"})
        assert upsert.status_code == 201 and upsert.json()[0]["full_name"] == "Pooled", upsert.text
        note = http.post("/rest/v1/notes", json={"body": "mine"}, headers={"Prefer": "return=representation"})
        assert note.status_code == 201 and note.json()[0]["owner"] == uid, note.text
        assert [row["body"] for row in http.get("/rest/v1/notes", params={"select": "body"}).json()] == ["mine"]
        image = png(20, "olive")
        upload = http.post(f"/storage/v1/object/avatars/{uid}/face.png", content=image,
                           headers={"Content-Type": "image/png"})
        assert upload.status_code == 200, upload.text
        assert http.get(f"/storage/v1/object/authenticated/avatars/{uid}/face.png").content == image
    assert "cannot LISTEN" not in pooled.server.log()


def test_the_migrations_and_every_listen_use_the_direct_url(pooled: Pooled, module_smtp: SMTPServer) -> None:
    """Only the direct connections LISTEN: pgbouncer's server connections run no session of their own."""
    session = _confirmed_user(pooled, module_smtp)
    socket = Socket(pooled.server)
    try:
        joined = socket.join("notes", {"postgres_changes": [{"event": "UPDATE", "schema": "public",
                                                             "table": "profiles"}]}, session["access_token"])
        assert joined["status"] == "ok", joined
        socket.expect("system")
        with _client(pooled.server, session["access_token"]) as http:
            changed = http.patch("/rest/v1/profiles", params={"id": f"eq.{session['user']['id']}"},
                                 json={"full_name": "Seen live"})
            assert changed.status_code == 204, changed.text
        # well within the feed's 60 s poll: the notification reached its LISTEN
        change = socket.expect("postgres_changes", timeout=20)["payload"]
        assert change["data"]["record"]["full_name"] == "Seen live"
    finally:
        socket.close()
    listening = fetch_rows(pooled.direct_url, "SELECT count(*) FROM pg_stat_activity WHERE datname = 'gatehouse' "
                           "AND usename = 'gatehouse' AND query ILIKE 'LISTEN %'")
    assert listening[0][0] >= 1
    # the pooled side: the owner's and authenticator's server connections stay within pgbouncer's pools
    by_role = fetch_rows(pooled.direct_url, "SELECT usename, count(*) AS n FROM pg_stat_activity "
                         "WHERE datname = 'gatehouse' AND usename = 'authenticator' GROUP BY usename")
    assert all(row["n"] <= POOL_SIZE for row in by_role)


def test_callers_interleaved_on_shared_server_connections_each_see_only_themselves(
    pooled: Pooled, module_smtp: SMTPServer,
) -> None:
    first, second = _confirmed_user(pooled, module_smtp), _confirmed_user(pooled, module_smtp)
    clients = {session["user"]["id"]: _client(pooled.server, session["access_token"]) for session in (first, second)}
    anonymous = _client(pooled.server)
    try:
        for uid, http in clients.items():
            assert http.post("/rest/v1/notes", json={"body": f"note of {uid}"}).status_code == 201

        def ask(turn: int) -> tuple[str | None, dict[str, Any], list[Any]]:
            uid = list(clients)[turn % 3] if turn % 3 < 2 else None
            http = clients[uid] if uid is not None else anonymous
            who = http.post("/rest/v1/rpc/whoami", json={})
            assert who.status_code == 200, who.text
            notes = http.get("/rest/v1/notes", params={"select": "owner,body"}) if uid is not None else None
            return uid, who.json(), notes.json() if notes is not None else []

        with ThreadPoolExecutor(50) as workers:
            answers = list(workers.map(ask, range(150)))
    finally:
        for http in [*clients.values(), anonymous]:
            http.close()
    pids = set()
    for uid, who, notes in answers:
        pids.add(who["pid"])
        if uid is None:
            assert (who["uid"], who["role"]) == (None, "anon")
        else:
            assert (who["uid"], who["role"]) == (uid, "authenticated")
            assert notes == [{"owner": uid, "body": f"note of {uid}"}]
    # 50 requests at once from a pool of up to 10 connections, on at most 3 server connections
    assert 1 <= len(pids) <= POOL_SIZE
    metrics = httpx.get(f"{pooled.server.url}/metrics", timeout=10).text
    opened = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                 if line.startswith('gatehouse_db_pool_connections{pool="request"'))
    assert opened > POOL_SIZE, metrics


def test_without_the_direct_url_gatehouse_refuses_to_start_through_the_pooler(pooled: Pooled, tmp_path: Path,
                                                                              keys_dir: Path) -> None:
    owner = urlsplit(pooled.direct_url)
    env = {key: value for key, value in os.environ.items() if not key.startswith("GATEHOUSE_")}
    env["GATEHOUSE_DATABASE_URL"] = pooled.bouncer.url(str(owner.username), str(owner.password))
    shutil.copy(keys_dir / "keys.json", tmp_path / "keys.json")
    result = subprocess.run(gatehouse_command("migrate", "--data-dir", str(tmp_path)), env=env, capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "goes through a connection pooler" in result.stderr and "GATEHOUSE_DATABASE_DIRECT_URL" in result.stderr
