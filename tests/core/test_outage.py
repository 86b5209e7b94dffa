"""PostgreSQL goes away and comes back: fast 503s in each client's shape, then service resumes."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from gatehouse.core.embedded import Account, EmbeddedPostgres
from gatehouse.core.keys import KeySet
from tests.support import RunningServer, start_server


@pytest.fixture
def own_database_server(tmp_path: Path, keys: KeySet, keys_dir: Path) -> RunningServer:
    server = start_server(tmp_path / "data", keys, database_url=None, keys_file=keys_dir / "keys.json",
                          env={"GATEHOUSE_EMBEDDED_DB_PORT": "0", "GATEHOUSE_DB_CONNECT_TIMEOUT": "2"})
    yield server  # type: ignore[misc]
    server.stop()


def pg_ctl(data: Path, *args: str) -> None:
    embedded = EmbeddedPostgres(data)
    port = (data / "postgres.port").read_text().strip()
    options = f"-p {port} -k {data.resolve() / 'run'}"  # as Gatehouse started it: TCP and the socket
    extra = ["-o", options, "-l", str(embedded.pgdata / "server.log")] if args[0] == "start" else []
    result = Account.for_current_process().run(embedded._pg_ctl(*args, *extra))
    assert result.returncode == 0, result.stderr


def test_health_endpoints(own_database_server: RunningServer) -> None:
    assert httpx.get(f"{own_database_server.url}/health/live").json() == {"status": "ok"}
    ready = httpx.get(f"{own_database_server.url}/health/ready")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "database": "ok", "migrations": "current"}


def test_outage_gives_fast_503s_then_recovers(own_database_server: RunningServer) -> None:
    server = own_database_server
    key = {"apikey": server.keys.publishable_key}
    anon = httpx.Client(base_url=server.url, headers=key, timeout=20)
    # a session from before the outage, whose token survives it
    email = "outage@example.com"
    admin = {"apikey": server.keys.secret_key}
    httpx.post(f"{server.url}/auth/v1/admin/users", headers=admin,
               json={"email": email, "password": "a long passphrase", "email_confirm": True}).raise_for_status()
    assert anon.get("/rest/v1/profiles").status_code == 200

    pg_ctl(server.data_dir, "stop", "-m", "immediate", "-w")
    try:
        checks = {
            "rest": ("GET", "/rest/v1/profiles", None),
            "auth": ("POST", "/auth/v1/token?grant_type=password", {"email": email, "password": "a long passphrase"}),
            "storage": ("GET", "/storage/v1/object/public/avatars/none.png", None),
        }
        for name, (method, path, body) in checks.items():
            started = time.monotonic()
            response = anon.request(method, path, json=body, headers={"X-Supabase-Api-Version": "2024-01-01"})
            elapsed = time.monotonic() - started
            assert response.status_code == 503, (name, response.status_code, response.text)
            assert elapsed < 10, (name, elapsed)
            body_json = response.json()
            if name == "rest":
                assert body_json["code"] == "database_unavailable" and "message" in body_json
            elif name == "auth":
                assert body_json["code"] == "database_unavailable"
            else:
                assert body_json["statusCode"] == "503"
        assert httpx.get(f"{server.url}/health/ready", timeout=20).status_code == 503
        assert httpx.get(f"{server.url}/health/live").status_code == 200
    finally:
        pg_ctl(server.data_dir, "start", "-w")

    deadline = time.monotonic() + 15
    while True:
        response = anon.get("/rest/v1/profiles")
        if response.status_code == 200:
            break
        assert time.monotonic() < deadline, response.text
        time.sleep(0.2)
    assert httpx.get(f"{server.url}/health/ready").status_code == 200
    login = anon.post("/auth/v1/token?grant_type=password", json={"email": email, "password": "a long passphrase"})
    assert login.status_code == 200
    anon.close()


def test_no_write_answered_2xx_is_lost(own_database_server: RunningServer) -> None:
    """Writers keep writing while PostgreSQL stops and starts: every 2xx write is there afterwards."""
    import threading

    server = own_database_server
    key = {"apikey": server.keys.secret_key}
    httpx.post(f"{server.url}/storage/v1/bucket", headers=key, json={"id": "outage"}).raise_for_status()
    confirmed: list[str] = []
    stop = threading.Event()

    def writer(worker: int) -> None:
        with httpx.Client(base_url=server.url, headers=key, timeout=20) as client:
            n = 0
            while not stop.is_set():
                n += 1
                name = f"w{worker}-{n}.txt"
                try:
                    response = client.post(f"/storage/v1/object/outage/{name}", content=name.encode(),
                                           headers={"Content-Type": "text/plain"})
                except httpx.HTTPError:
                    continue
                if response.status_code == 200:
                    confirmed.append(name)
                else:
                    assert response.status_code in (400, 503), response.text  # 400: storage's shape for 503
                    time.sleep(0.05)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    time.sleep(0.7)
    pg_ctl(server.data_dir, "stop", "-m", "immediate", "-w")
    time.sleep(1.0)
    pg_ctl(server.data_dir, "start", "-w")
    time.sleep(2.5)
    stop.set()
    for thread in threads:
        thread.join()
    assert len(confirmed) > 3
    with httpx.Client(base_url=server.url, headers=key, timeout=20) as client:
        for name in confirmed:
            response = client.get(f"/storage/v1/object/outage/{name}")
            assert response.status_code == 200 and response.content == name.encode(), name


def test_sigterm_finishes_requests_in_flight(own_database_server: RunningServer) -> None:
    """A slow upload under way when SIGTERM arrives completes; then the process and PostgreSQL stop."""
    import signal
    import threading

    server = own_database_server
    key = {"apikey": server.keys.secret_key}
    httpx.post(f"{server.url}/storage/v1/bucket", headers=key, json={"id": "slow"}).raise_for_status()
    result: dict[str, object] = {}

    def slow_body():  # type: ignore[no-untyped-def]
        for _ in range(10):
            yield b"x" * 1000
            time.sleep(0.15)

    def upload() -> None:
        result["response"] = httpx.post(f"{server.url}/storage/v1/object/slow/late.txt", content=slow_body(),
                                        headers=key | {"Content-Type": "text/plain"}, timeout=30)

    thread = threading.Thread(target=upload)
    thread.start()
    time.sleep(0.5)  # the upload is streaming now
    server.process.send_signal(signal.SIGTERM)
    thread.join()
    response = result["response"]
    assert isinstance(response, httpx.Response) and response.status_code == 200, response
    assert server.process.wait(30) == 0
    assert not (server.data_dir / "postgres" / "postmaster.pid").exists()
