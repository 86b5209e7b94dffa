"""A streaming replica (``GATEHOUSE_DATABASE_READ_URL``) on Debian's PostgreSQL 15, made with
``pg_basebackup``, behind processes A and B (and C, whose lag bound is short).

The replica's replay is paused to make it lag: a row written on the primary meanwhile is then
invisible to a reader served by the replica and visible to one served by the primary, which shows
where each read went. The caller who just wrote reads through the other process at once, auth
never reads there, and a stopped replica costs nothing but its reads.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from gatehouse.core.keys import KeySet
from tests.auth.helpers import PASSWORD
from tests.deploy.components import Postgres, Standby, wait_for
from tests.support import RunningServer, fetch_rows, png, run_sql, start_server


@dataclass
class Topology:
    primary: Postgres
    replica: Standby
    database_url: str
    a: RunningServer
    b: RunningServer
    c: RunningServer  # a lag bound of 2 s
    clients: list[Client] = field(default_factory=list)

    def client(self, server: RunningServer, token: str | None = None) -> Client:
        made = Client(server, token)
        self.clients.append(made)
        return made


@pytest.fixture(scope="module")
def topology(tmp_path_factory: pytest.TempPathFactory, keys: KeySet, keys_dir: Path) -> Iterator[Topology]:
    root = tmp_path_factory.mktemp("replica")
    primary = Postgres(root / "primary").start()
    replica: Standby | None = None
    started: list[RunningServer] = []
    try:
        database_url = primary.bootstrap()
        replica = Standby(root / "standby", primary=primary)
        replica.start()
        env = {
            "GATEHOUSE_DATABASE_READ_URL": replica.url("gatehouse"),
            "GATEHOUSE_STORAGE_DIR": str(root / "storage"),  # one folder for every process's bytes
            "GATEHOUSE_MAILER_AUTOCONFIRM": "true", "GATEHOUSE_RATE_LIMITS_ENABLED": "false",
            "GATEHOUSE_WORKERS": "1",
        }
        for name, max_lag in (("a", "120"), ("b", "120"), ("c", "2")):
            started.append(start_server(root / name, keys, database_url=database_url, keys_file=keys_dir / "keys.json",
                                        env={**env, "GATEHOUSE_DATABASE_READ_MAX_LAG": max_lag}))
        for server in started:
            wait_for(lambda server=server: _ready(server).get("replica") == "ok", "the replica in use")
        topology = Topology(primary, replica, database_url, started[0], started[1], started[2])
        yield topology
        for client in topology.clients:
            client.http.close()
    finally:
        for server in started:
            server.stop()
        if replica is not None:
            replica.stop()
        primary.stop()


def _ready(server: RunningServer) -> dict[str, Any]:
    return httpx.get(f"{server.url}/health/ready", timeout=10).json()  # type: ignore[no-any-return]


class Client:
    """One caller's requests to one process: the publishable key, and a user's token if signed in."""

    def __init__(self, server: RunningServer, token: str | None = None) -> None:
        headers = {"apikey": server.keys.publishable_key}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.http = httpx.Client(base_url=server.url, headers=headers, timeout=30)

    def profile(self, uid: str) -> dict[str, Any] | None:
        answer = self.http.get("/rest/v1/profiles", params={"id": f"eq.{uid}", "select": "full_name,website"})
        assert answer.status_code == 200, answer.text
        rows = answer.json()
        return rows[0] if rows else None


def sign_up(server: RunningServer) -> tuple[str, str]:
    """A new user signed in (sign-ups confirm themselves here): (user id, access token)."""
    email = f"replica-{uuid.uuid4().hex[:10]}@example.com"
    answer = httpx.post(f"{server.url}/auth/v1/signup", json={"email": email, "password": PASSWORD},
                        headers={"apikey": server.keys.publishable_key}, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()["user"]["id"], answer.json()["access_token"]


@contextmanager
def lagging(topology: Topology) -> Iterator[Standby]:
    """The replica with its replay paused, once it had replayed everything: it lags from now on."""
    wait_for(lambda: topology.replica.replayed_to(topology.primary), "the replica catching up")
    topology.replica.pause_replay()
    try:
        yield topology.replica
    finally:
        topology.replica.resume_replay()
        wait_for(lambda: topology.replica.replayed_to(topology.primary), "the replica catching up")


@pytest.fixture
def paused(topology: Topology) -> Iterator[Standby]:
    with lagging(topology) as replica:
        yield replica


def test_reads_go_to_the_replica_and_the_writer_reads_its_write_through_the_other_process(
    topology: Topology, paused: Standby,
) -> None:
    uid, token = sign_up(topology.a)  # while paused: auth works on the primary alone
    writer_a, writer_b = topology.client(topology.a, token), topology.client(topology.b, token)
    anon_b = topology.client(topology.b)

    # the new user's profile (made by the sign-up trigger) is read through B at once: their
    # session is checked on the primary, not on the replica that has not replayed it
    assert writer_b.profile(uid) == {"full_name": None, "website": None}
    upsert = writer_a.http.post("/rest/v1/profiles", json={"id": uid, "full_name": "Written through A"},
                                headers={"Prefer": "resolution=merge-duplicates,return=minimal"})
    assert upsert.status_code == 201, upsert.text
    assert writer_b.profile(uid) == {"full_name": "Written through A", "website": None}  # at once, through B
    # ... though the replica has none of it
    assert fetch_rows(paused.url("gatehouse"), "SELECT count(*) FROM auth.users WHERE id = $1", uid)[0][0] == 0

    # an anonymous reader, who wrote nothing, is served by the replica: the user is not there yet
    wait_for(lambda: anon_b.profile(uid) is None, "B serving the anonymous reader from the replica")
    # C lets the replica lag 2 s: past that, C reads from the primary and says so
    wait_for(lambda: _ready(topology.c) == {"status": "ready", "database": "ok", "migrations": "current",
                                            "replica": "lagging"}, "C noticing the lag")
    assert topology.client(topology.c).profile(uid) == {"full_name": "Written through A", "website": None}
    assert _ready(topology.b)["replica"] == "ok"

    paused.resume_replay()
    wait_for(lambda: anon_b.profile(uid) == {"full_name": "Written through A", "website": None},
             "the replica replaying the write")
    wait_for(lambda: _ready(topology.c)["replica"] == "ok", "C using the replica again")


def test_a_row_written_on_the_primary_reaches_readers_when_the_replica_replays_it(topology: Topology) -> None:
    uid, token = sign_up(topology.a)
    reader = topology.client(topology.b)
    with lagging(topology) as replica:
        run_sql(topology.database_url, "UPDATE public.profiles SET website = 'https://primary.example' WHERE id = $1",
                uid)
        wait_for(lambda: reader.profile(uid) == {"full_name": None, "website": None},
                 "B serving the reader from the replica")
        # a change the user did not make through Gatehouse is no write of theirs: their reads
        # are served by the replica too, like every reader's without a recent write
        mine = topology.client(topology.b, token)
        wait_for(lambda: mine.profile(uid) == {"full_name": None, "website": None}, "B serving the user from the replica")
        replica.resume_replay()
    wait_for(lambda: reader.profile(uid) == {"full_name": None, "website": "https://primary.example"},
             "the replica replaying the row")


def test_storage_downloads_and_listings_follow_the_same_rule(topology: Topology) -> None:
    uploader_id, uploader = sign_up(topology.a)
    _, other = sign_up(topology.a)  # replayed before the pause: served by the replica
    with lagging(topology) as paused:
        _storage_while_lagging(topology, paused, uploader_id, uploader, other)


def _storage_while_lagging(topology: Topology, paused: Standby, uploader_id: str, uploader: str, other: str) -> None:
    image = png(30, "navy")
    name = f"{uploader_id}/face.png"
    upload = topology.client(topology.a, uploader).http.post(f"/storage/v1/object/avatars/{name}", content=image,
                                                    headers={"Content-Type": "image/png"})
    assert upload.status_code == 200, upload.text
    # the uploader downloads and lists it through B at once
    own_b = topology.client(topology.b, uploader)
    download = own_b.http.get(f"/storage/v1/object/authenticated/avatars/{name}")
    assert download.status_code == 200 and download.content == image
    listed = own_b.http.post("/storage/v1/object/list/avatars", json={"prefix": uploader_id})
    assert [entry["name"] for entry in listed.json()] == ["face.png"]
    # the other user, who wrote nothing since, is served by the replica: no such object yet
    other_b = topology.client(topology.b, other)
    wait_for(lambda: other_b.http.get(f"/storage/v1/object/authenticated/avatars/{name}").status_code in (400, 404),
             "B serving the other user's download from the replica")
    assert other_b.http.post("/storage/v1/object/list/avatars", json={"prefix": uploader_id}).json() == []

    paused.resume_replay()
    wait_for(lambda: other_b.http.get(f"/storage/v1/object/authenticated/avatars/{name}").content == image,
             "the replica replaying the upload")


def test_auth_never_reads_from_the_replica(topology: Topology, paused: Standby) -> None:
    """Sign-up, sign-in and refresh through B while the replica lags, and the new user's own reads."""
    email = f"replica-{uuid.uuid4().hex[:10]}@example.com"
    auth_b = topology.client(topology.b).http
    assert auth_b.post("/auth/v1/signup", json={"email": email, "password": PASSWORD}).status_code == 200
    signed_in = auth_b.post("/auth/v1/token?grant_type=password", json={"email": email, "password": PASSWORD})
    assert signed_in.status_code == 200, signed_in.text
    refreshed = auth_b.post("/auth/v1/token?grant_type=refresh_token", json={"refresh_token": signed_in.json()["refresh_token"]})
    assert refreshed.status_code == 200, refreshed.text
    session = refreshed.json()
    uid = session["user"]["id"]
    assert auth_b.get("/auth/v1/user", headers={"Authorization": f"Bearer {session['access_token']}"}).status_code == 200
    assert topology.client(topology.b, session["access_token"]).profile(uid) == {"full_name": None, "website": None}
    # signed out through A: refused through B at once, though the replica still has the session
    out = httpx.post(f"{topology.a.url}/auth/v1/logout", headers={
        "apikey": topology.a.keys.publishable_key, "Authorization": f"Bearer {session['access_token']}"})
    assert out.status_code == 204, out.text
    refused = topology.client(topology.b, session["access_token"]).http.get("/rest/v1/profiles", params={"id": f"eq.{uid}"})
    assert refused.status_code == 401, refused.text
    # only the request role ever logs in there
    roles = fetch_rows(paused.url("gatehouse"), "SELECT DISTINCT usename FROM pg_stat_activity "
                       "WHERE datname = 'gatehouse' AND pid <> pg_backend_pid()")
    assert {row[0] for row in roles} == {"authenticator"}


def test_a_stopped_replica_costs_only_its_reads(topology: Topology) -> None:
    uid, token = sign_up(topology.a)
    topology.replica.stop()
    reader = topology.client(topology.b)
    assert reader.profile(uid) == {"full_name": None, "website": None}  # from the primary, not a 500
    listed = topology.client(topology.b, token).http.post("/storage/v1/object/list/avatars", json={"prefix": uid})
    assert listed.status_code == 200 and listed.json() == []
    wait_for(lambda: _ready(topology.b)["replica"] == "unavailable", "B noticing the replica is gone")
    answer = httpx.get(f"{topology.b.url}/health/ready", timeout=10)
    assert answer.status_code == 200 and answer.json()["status"] == "ready"
    write = topology.client(topology.a, token).http.post(
        "/rest/v1/profiles", json={"id": uid, "full_name": "After the replica"},
        headers={"Prefer": "resolution=merge-duplicates,return=minimal"})
    assert write.status_code == 201, write.text
    assert reader.profile(uid) == {"full_name": "After the replica", "website": None}
