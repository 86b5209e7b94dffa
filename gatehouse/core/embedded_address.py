"""Where the embedded server listens and how to reach it: free loopback ports, connection URLs
(through its Unix socket when it has one, else TCP), and the address of a server already running
on a data folder, read from its ``postmaster.pid``.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from urllib.parse import quote

DATABASE = "gatehouse"
SUPERUSER = "postgres"


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True if a server could listen on host:port now (SO_REUSEADDR, as servers bind)."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except socket.gaierror:
        return False
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def connection_url(password: str, port: int, socket_dir: str | None, user: str = SUPERUSER,
                   database: str = DATABASE) -> str:
    """A libpq/asyncpg URL: through the Unix socket in ``socket_dir`` if there is one, else TCP."""
    credentials = f"{quote(user)}:{quote(password, safe='')}"
    if socket_dir:
        return f"postgresql://{credentials}@/{database}?host={quote(socket_dir, safe='/')}&port={port}"
    return f"postgresql://{credentials}@127.0.0.1:{port}/{database}"


def running_url(data_dir: Path, user: str = SUPERUSER, database: str = DATABASE) -> str:
    """The URL of the embedded server running on ``data_dir`` (for tools and benchmarks)."""
    folder = data_dir.expanduser().resolve()
    port, socket_dir = listening(folder / "postgres" / "postmaster.pid")
    password = json.loads((folder / "postgres.json").read_text())["password"]
    return connection_url(password, port, socket_dir, user, database)


def listening(pid_file: Path) -> tuple[int, str | None]:
    """Port and first socket folder from ``postmaster.pid`` (lines 4 and 5)."""
    lines = pid_file.read_text().splitlines()
    return int(lines[3]), (lines[4].strip() or None) if len(lines) > 4 else None
