"""The embedded PostgreSQL: a real server from the wheel, in the data folder, as root or not."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from gatehouse.core.embedded import EmbeddedPostgres, EmbeddedPostgresError, bin_dir, free_port


def psql(url: str, sql: str) -> str:
    return subprocess.run(
        [str(bin_dir() / "psql"), url, "-XtAc", sql], capture_output=True, text=True, check=True
    ).stdout.strip()


def test_start_stop_start_keeps_the_data(tmp_path: Path) -> None:
    server = EmbeddedPostgres(tmp_path / "data", port=0)
    url = server.start()
    psql(url, "CREATE TABLE kept (v text); INSERT INTO kept VALUES ('still here')")
    assert server.stop()
    assert not (tmp_path / "data" / "postgres" / "postmaster.pid").exists()

    again = EmbeddedPostgres(tmp_path / "data", port=0)
    url = again.start()
    try:
        assert psql(url, "SELECT v FROM kept") == "still here"
        assert psql(url, "SHOW listen_addresses") == "127.0.0.1"
        assert psql(url, "SHOW jit") == "off"  # gatehouse.conf, written for this machine, is in force
        assert psql(url, "SHOW password_encryption") == "scram-sha-256"
    finally:
        again.stop()


async def test_password_is_required(tmp_path: Path) -> None:
    server = EmbeddedPostgres(tmp_path / "data", port=0)
    url = server.start()
    try:
        port = int((tmp_path / "data" / "postgres.port").read_text())
        socket_dir = (tmp_path / "data" / "run").resolve()
        assert f"host={socket_dir}&port={port}" in url  # Gatehouse uses the socket
        assert socket_dir.stat().st_mode & 0o777 == 0o700
        for host in ("127.0.0.1", str(socket_dir)):
            with pytest.raises(asyncpg.InvalidPasswordError):
                await asyncpg.connect(host=host, port=port, user="postgres", password="wrong", database="gatehouse")
        conn = await asyncpg.connect(url)
        assert await conn.fetchval("SELECT inet_server_addr()") is None  # a Unix socket has no address
        await conn.close()
        secret = (tmp_path / "data" / "postgres.json").stat().st_mode & 0o777
        assert secret == 0o600
    finally:
        server.stop()


def test_a_second_process_on_the_folder_shares_the_server(tmp_path: Path) -> None:
    first = EmbeddedPostgres(tmp_path / "data", port=0)
    url = first.start()
    other_process = (
        "import sys; from pathlib import Path; from gatehouse.core.embedded import EmbeddedPostgres\n"
        "e = EmbeddedPostgres(Path(sys.argv[1]), port=0); print(e.start()); print(e.stop())"
    )
    out = subprocess.run(
        [sys.executable, "-c", other_process, str(tmp_path / "data")], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    assert out == [url, "False"]  # adopted the running server and left it running for us
    assert psql(url, "SELECT 1") == "1"
    assert first.stop()  # the last one out stops it


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    port = free_port()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", port))
        busy.listen()
        with pytest.raises(EmbeddedPostgresError, match=f"port {port} on 127.0.0.1 is already in use"):
            EmbeddedPostgres(tmp_path / "data", port=port).start()


def test_folder_that_is_a_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "data").write_text("oops")
    with pytest.raises(EmbeddedPostgresError, match="is not usable"):
        EmbeddedPostgres(tmp_path / "data", port=0).start()


def test_pgdata_that_is_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "data" / "postgres").mkdir(parents=True)
    (tmp_path / "data" / "postgres" / "stray.txt").write_text("x")
    with pytest.raises(EmbeddedPostgresError, match="not empty but holds no database"):
        EmbeddedPostgres(tmp_path / "data", port=0).start()


def test_database_of_another_major_version_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "data" / "postgres").mkdir(parents=True)
    (tmp_path / "data" / "postgres" / "PG_VERSION").write_text("9\n")
    with pytest.raises(EmbeddedPostgresError, match="holds a PostgreSQL 9 database"):
        EmbeddedPostgres(tmp_path / "data", port=0).start()


def test_settings_follow_the_machine() -> None:
    from gatehouse.core.embedded import tuning

    small, large = tuning(1024**3, 1), tuning(64 * 1024**3, 16)
    assert "shared_buffers = 128MB" in small and "effective_cache_size = 512MB" in small
    assert "shared_buffers = 2048MB" in large and "effective_cache_size = 32768MB" in large
    assert "jit = off" in small and "unix_socket_directories = ''" in small  # the socket comes from -k
