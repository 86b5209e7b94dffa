"""The production recipe on real components: Debian's PostgreSQL 15 (Gatehouse as an ordinary
role made by ``deploy/postgres/bootstrap.sql``), SeaweedFS's S3 gateway for the bytes, and
HAProxy running ``deploy/haproxy/haproxy.cfg`` (TLS, health checks) in front of three Gatehouse
processes, each with a data folder of its own: nothing a request needs lives in one process.

The tutorial's flow runs through supabase-py over https; then one process is killed with
``kill -9`` under load and started again, and afterwards every acknowledged write is there.
"""

from __future__ import annotations

import re
import signal
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from supabase import create_client

from gatehouse.core.embedded import free_port
from gatehouse.core.keys import KeySet
from tests.auth.helpers import PASSWORD
from tests.deploy.components import HAProxy, Postgres, SeaweedS3, wait_for
from tests.smtp import SMTPServer, smtp_env
from tests.support import RunningServer, fetch_rows, png, run_sql, start_server

LINK = re.compile(r"token_hash=([\w-]+)&(?:amp;)?type=(\w+)")


@dataclass
class Cluster:
    postgres: Postgres
    database_url: str
    bucket: str
    proxy: HAProxy
    servers: list[RunningServer]
    ports: list[int]
    env: dict[str, str]
    root: Path
    keys: KeySet
    keys_file: Path

    def restart(self, index: int) -> None:
        self.servers[index] = start_server(self.root / f"gatehouse{index}", self.keys, database_url=self.database_url,
                                           env=self.env, keys_file=self.keys_file, port=self.ports[index])

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.proxy.url, verify=self.proxy.context(), timeout=30,
                            headers={"apikey": self.keys.publishable_key})


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, keys: KeySet, keys_dir: Path, seaweedfs: SeaweedS3,
            module_smtp: SMTPServer) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("cluster")
    postgres = Postgres(root / "postgres").start()
    started: list[RunningServer] = []
    proxy: HAProxy | None = None
    try:
        database_url = postgres.bootstrap()
        bucket = f"cluster-{uuid.uuid4().hex[:8]}"
        admin = seaweedfs.client()
        admin.create_bucket(Bucket=bucket)
        admin.close()
        ports = [free_port() for _ in range(3)]
        proxy = HAProxy(root / "haproxy", [f"127.0.0.1:{port}" for port in ports])
        env = {
            # what a production process behind the recipe's HAProxy is given
            "GATEHOUSE_SITE_URL": proxy.url, "GATEHOUSE_API_EXTERNAL_URL": proxy.url,
            "GATEHOUSE_TRUSTED_PROXIES": "127.0.0.1", "GATEHOUSE_WORKERS": "1",
            # every client of this test connects from 127.0.0.1: one address, so no per-address limits
            "GATEHOUSE_RATE_LIMITS_ENABLED": "false",
            **seaweedfs.env(bucket), **smtp_env(module_smtp.port),
        }
        for index, port in enumerate(ports):
            started.append(start_server(root / f"gatehouse{index}", keys, database_url=database_url, env=env,
                                        keys_file=keys_dir / "keys.json", port=port))
        proxy.start()
        yield Cluster(postgres, database_url, bucket, proxy, started, ports, env, root, keys, keys_dir / "keys.json")
    finally:
        if proxy is not None:
            proxy.stop()
        for server in started:
            server.stop()
        postgres.stop()


def test_they_run_in_production_mode_as_an_ordinary_role(cluster: Cluster) -> None:
    for server in cluster.servers:
        assert "Mode             production:" in server.log()
        assert "Database         external PostgreSQL at postgresql://" in server.log()
    owner = fetch_rows(cluster.database_url, "SELECT rolsuper, rolcreaterole FROM pg_roles WHERE rolname = current_user")
    assert (owner[0]["rolsuper"], owner[0]["rolcreaterole"]) == (False, True)
    version = fetch_rows(cluster.database_url, "SELECT current_setting('server_version_num')::int AS v")
    assert version[0]["v"] // 10000 == 15
    with cluster.http() as http:
        plain = httpx.get(f"http://127.0.0.1:{cluster.proxy.http_port}/login", follow_redirects=False)
        assert plain.status_code == 308 and plain.headers["location"].startswith("https://")
        assert http.get("/health/ready").status_code == 200


def test_the_tutorial_flow_through_the_load_balancer(cluster: Cluster, module_smtp: SMTPServer,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     seaweedfs: SeaweedS3) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(cluster.proxy.ca))  # supabase-py's httpx trusts the test's CA
    supabase = create_client(cluster.proxy.url, cluster.keys.publishable_key)
    try:
        email = f"cluster-{uuid.uuid4().hex[:8]}@example.com"
        before = len(module_smtp.received)
        signed_up = supabase.auth.sign_up({"email": email, "password": PASSWORD})
        assert signed_up.user is not None and signed_up.session is None
        mail = module_smtp.wait_for_sync(before + 1)[-1]
        body = mail.email.get_body(("plain",))
        assert body is not None
        found = LINK.search(body.get_content())
        assert found, "no confirmation link in the mail"
        assert cluster.proxy.url in body.get_content()  # links name the public https address
        verified = supabase.auth.verify_otp({"token_hash": found[1], "type": "email"})
        assert verified.user is not None
        uid = verified.user.id

        supabase.table("profiles").upsert({"id": uid, "full_name": "Ada", "website": "https://ada.example"}).execute()
        image = png(40, "teal")
        supabase.storage.from_("avatars").upload(f"{uid}/face.png", image, {"content-type": "image/png"})
        assert supabase.storage.from_("avatars").download(f"{uid}/face.png") == image
        row = supabase.table("profiles").select("full_name").eq("id", uid).single().execute()
        assert row.data == {"full_name": "Ada"}
    finally:
        supabase.storage.session.close()
        supabase.postgrest.session.close()
        supabase.auth.close()

    # the bytes are in SeaweedFS, under the row's version, and every process took a share
    admin = seaweedfs.client()
    try:
        keys = {item["Key"] for item in admin.list_objects_v2(Bucket=cluster.bucket).get("Contents", [])}
    finally:
        admin.close()
    (version,) = fetch_rows(cluster.database_url, "SELECT version FROM storage.objects WHERE name = $1", f"{uid}/face.png")
    assert f"avatars/{version['version']}" in keys
    for server in cluster.servers:
        assert '"path":"/rest/v1/profiles"' in server.log() or '"path":"/auth/v1/' in server.log()


def test_a_killed_process_costs_only_the_requests_it_held(cluster: Cluster) -> None:
    """Readers and writers keep going while one process dies with SIGKILL and comes back: only
    requests in flight on it may fail (HAProxy sends a read that got no answer elsewhere; one cut
    off mid-answer fails), and every write that was acknowledged is in the database afterwards."""
    with cluster.http() as http:
        admin = {"apikey": cluster.keys.secret_key, "Authorization": f"Bearer {cluster.keys.secret_key}"}
        stop = threading.Event()
        acknowledged: list[str] = []
        failed: list[str] = []
        lock = threading.Lock()

        def writer(worker: int) -> None:
            counter = 0
            while not stop.is_set():
                counter += 1
                name = f"kill-{worker}-{counter}"
                try:
                    answer = http.post("/rest/v1/notes_cluster", json={"name": name}, headers=admin)
                    ok = answer.status_code == 201
                except httpx.TransportError:
                    ok = False
                with lock:
                    (acknowledged if ok else failed).append(name)

        def reader() -> None:
            while not stop.is_set():
                try:
                    answer = http.get("/rest/v1/profiles?select=id&limit=5")
                except httpx.TransportError as exc:  # cut off: the process died after its answer began
                    with lock:
                        failed.append(f"read cut off: {exc!r}")
                    continue
                if answer.status_code != 200:  # HAProxy answered for a read it should have sent elsewhere
                    with lock:
                        failed.append(f"read answered {answer.status_code}: {answer.text[:200]}")

        run_sql(cluster.database_url, "CREATE TABLE public.notes_cluster (name text PRIMARY KEY); "
                "GRANT ALL ON public.notes_cluster TO service_role; NOTIFY gatehouse_schema, 'reload'")
        wait_for(lambda: all(http.get("/rest/v1/notes_cluster?limit=0", headers=admin).status_code == 200
                             for _ in range(6)), "every process seeing the new table")
        threads = [threading.Thread(target=writer, args=(n,)) for n in range(3)] + [threading.Thread(target=reader)]
        for thread in threads:
            thread.start()
        try:
            wait_for(lambda: len(acknowledged) >= 30, "writes before the kill")
            victim = cluster.servers[1]
            victim.process.send_signal(signal.SIGKILL)
            victim.process.wait()
            at_kill = len(acknowledged)
            wait_for(lambda: len(acknowledged) >= at_kill + 60, "writes going on without the killed process")
            cluster.restart(1)
            wait_for(lambda: '"path":"/rest/v1/notes_cluster"' in cluster.servers[1].log(),
                     "HAProxy sending requests to the restarted process")
        finally:
            stop.set()
            for thread in threads:
                thread.join()

    # HAProxy sends a read that got no answer to another process; only one whose answer had begun
    # (its status line sent, then the process killed) reaches the client as an error, in flight.
    assert len(failed) <= 3, f"more failures than requests in flight on the killed process: {failed}"
    assert not [f for f in failed if f.startswith("read answered")], failed
    stored = {row["name"] for row in fetch_rows(cluster.database_url, "SELECT name FROM public.notes_cluster")}
    assert set(acknowledged) <= stored, f"acknowledged but lost: {set(acknowledged) - stored}"
