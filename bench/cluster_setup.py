"""The production recipe on this machine, for ``bench.cluster``: Debian's PostgreSQL 15 (set up by
``deploy/postgres/bootstrap.sql``), SeaweedFS's S3 gateway, N Gatehouse processes in production
mode (one worker each, JSON access log at info, as the recipe runs them), HAProxy running
``deploy/haproxy/haproxy.cfg`` with TLS, and an SMTP sink that catches the confirmation mail.

The components are the tests' (``tests/deploy/components.py``), so the benchmark and
``tests/deploy`` run the very same things. Rate limits are off: every virtual user comes from
127.0.0.1, one address, which the per-address limits would stop within seconds.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import tempfile
import threading
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]
from aiosmtpd.controller import Controller

from bench.machine import OURS_MARKER
from gatehouse.core.config import load_settings
from gatehouse.core.embedded import free_port
from gatehouse.core.keys import KeySet, load_keys
from tests.deploy.components import HAProxy, Postgres, SeaweedS3, Standby
from tests.smtp import smtp_env
from tests.support import RunningServer, start_server

#: The confirmation link in the mail: ``token_hash`` and its type.
LINK = re.compile(r"token_hash=([\w-]+)&(?:amp;)?type=(\w+)")
#: deploy/haproxy/haproxy.cfg names exactly this many servers.
PROXY_SLOTS = 3


class Mailbox:
    """An SMTP server on a free loopback port (aiosmtpd) that keeps, per recipient, the token of
    the last confirmation link sent to them. It runs in its own thread of this process."""

    def __init__(self) -> None:
        self.port = free_port()
        self.tokens: dict[str, str] = {}
        self.received = 0
        self._lock = threading.Lock()
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port, server_hostname="mail.bench")
        self._controller.start()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = BytesParser(policy=policy.default).parsebytes(envelope.original_content)
        assert isinstance(parsed, EmailMessage)
        body = parsed.get_body(("plain",))
        found = LINK.search(body.get_content() if body is not None else "")
        with self._lock:
            self.received += 1
            if found:
                for recipient in envelope.rcpt_tos:
                    self.tokens[recipient] = found[1]
        return "250 2.0.0 Ok: queued"

    def token(self, email: str) -> str | None:
        with self._lock:
            return self.tokens.get(email)

    def stop(self) -> None:
        self._controller.stop()


@dataclass
class Cluster:
    """Everything, in one temporary folder; ``stop`` (also after a failed start) removes it."""

    #: The prefix is bench.machine's mark of "ours": the detached PostgreSQL's command line names the folder.
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix=f"{OURS_MARKER}cluster-")))
    keep: bool = False
    postgres: Postgres | None = None
    #: A streaming replica the processes read from (``start_backends(replica=True)``).
    replica: Standby | None = None
    seaweed: SeaweedS3 | None = None
    mailbox: Mailbox | None = None
    database_url: str = ""
    bucket: str = ""
    keys: KeySet | None = None
    env: dict[str, str] = field(default_factory=dict)
    servers: list[RunningServer] = field(default_factory=list)
    ports: list[int] = field(default_factory=list)
    proxy: HAProxy | None = None

    # -- the shared back ends: database, object store, mail ----------------------------------------
    def start_backends(self, *, replica: bool = False) -> Cluster:
        self.postgres = Postgres(self.root / "postgres").start()
        self.database_url = self.postgres.bootstrap()
        if replica:
            self.replica = Standby(self.root / "replica", primary=self.postgres)
            self.replica.start()
        self.seaweed = SeaweedS3(self.root / "seaweedfs").start()
        self.bucket = f"bench-{secrets.token_hex(4)}"
        admin = self.seaweed.client()
        admin.create_bucket(Bucket=self.bucket)
        admin.close()
        self.mailbox = Mailbox()
        keys_dir = self.root / "keys"
        self.keys = load_keys(load_settings(data_dir=keys_dir))  # writes keys.json, shared by every process
        return self

    # -- Gatehouse processes behind HAProxy -----------------------------------------------------------
    def start_gatehouse(self, processes: int) -> Cluster:
        """``processes`` production processes and HAProxy in front of them. The recipe's
        haproxy.cfg has three server lines: with fewer processes, the lines name them in turn
        (two lines for one process), so the config runs unchanged."""
        assert self.seaweed is not None and self.mailbox is not None and self.keys is not None
        self.ports = [free_port() for _ in range(processes)]
        self.proxy = HAProxy(self.root / f"haproxy-{processes}",
                             [f"127.0.0.1:{self.ports[i % processes]}" for i in range(PROXY_SLOTS)])
        self.env = {
            # what a production process behind the recipe's HAProxy is given (as tests/deploy/test_cluster.py)
            "GATEHOUSE_SITE_URL": self.proxy.url, "GATEHOUSE_API_EXTERNAL_URL": self.proxy.url,
            "GATEHOUSE_TRUSTED_PROXIES": "127.0.0.1", "GATEHOUSE_WORKERS": "1",
            "GATEHOUSE_RATE_LIMITS_ENABLED": "false",
            **self.seaweed.env(self.bucket), **smtp_env(self.mailbox.port),
        }
        if self.replica is not None:
            self.env["GATEHOUSE_DATABASE_READ_URL"] = self.replica.url("gatehouse")
        for index in range(processes):
            self.servers.append(self._start_server(index))
        self.proxy.start()
        return self

    def _start_server(self, index: int) -> RunningServer:
        assert self.keys is not None
        return start_server(self.root / f"gatehouse{index}", self.keys, database_url=self.database_url, env=self.env,
                            keys_file=self.root / "keys" / "keys.json", port=self.ports[index])

    def kill(self, index: int) -> None:
        """``kill -9`` one Gatehouse process."""
        process = self.servers[index].process
        process.send_signal(signal.SIGKILL)
        process.wait()

    def restart(self, index: int) -> None:
        """Start a process again on its port and data folder (returns once it answers its health check)."""
        self.servers[index] = self._start_server(index)

    def stop_gatehouse(self) -> None:
        if self.proxy is not None:
            self.proxy.stop()
            self.proxy = None
        for server in self.servers:
            server.stop()
        self.servers = []

    def stop(self) -> None:
        self.stop_gatehouse()
        for component in (self.mailbox, self.seaweed, self.replica, self.postgres):
            if component is not None:
                component.stop()
        if not self.keep:
            shutil.rmtree(self.root, ignore_errors=True)

    # -- who used the CPU ------------------------------------------------------------------------------
    def cpu_groups(self) -> dict[str, set[int]]:
        """Each component's root pids, for ``bench.machine.CPUSplit`` (trees, reaped children included).
        The load generator (this process) is measured apart: its tree holds everything it started."""
        assert self.postgres is not None and self.seaweed is not None and self.proxy is not None
        postmasters = {int((server.pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
                       for server in (self.postgres, self.replica) if server is not None}
        return {
            "gatehouse": {server.process.pid for server in self.servers},
            "postgresql": postmasters,
            "haproxy": {self.proxy.process.process.pid} if self.proxy.process else set(),
            "seaweedfs": {self.seaweed.process.process.pid} if self.seaweed.process else set(),
        }


def own_cpu_seconds() -> float:
    """CPU seconds of this process alone (the virtual users, the SMTP sink, the fault timeline)."""
    times = psutil.Process(os.getpid()).cpu_times()
    return float(times.user + times.system)


__all__ = ["LINK", "Cluster", "Mailbox", "own_cpu_seconds"]
