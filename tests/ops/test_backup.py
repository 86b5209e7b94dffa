"""Backup and restore: one archive of the database, the keys and the stored files, brought back
into a new data folder, with real servers and real embedded PostgreSQL clusters.

The module signs a user up on a server of its own (its own embedded PostgreSQL in a temporary
data folder), uploads an avatar, stops the server and backs up once (``origin``); the tests
restore that archive in different ways. The origin uses the session's keys, so that restoring
into the session's shared cluster (whose ``authenticator`` password those keys set) is safe.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import subprocess
import tarfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import httpx
import pytest
from PIL import Image

from gatehouse.core.config import Settings, load_settings
from gatehouse.core.db import database_server
from gatehouse.core.keys import KeySet
from gatehouse.ops.backup import BackupError, BackupSummary, backup, read_manifest, restore
from tests.support import RunningServer, gatehouse_command, start_server

T = TypeVar("T")

ENV = {
    "GATEHOUSE_EMBEDDED_DB_PORT": "0",
    "GATEHOUSE_RATE_LIMITS_ENABLED": "false",
    "GATEHOUSE_MAILER_AUTOCONFIRM": "true",
}
PASSWORD = "a long passphrase 4 backups"
EMAIL = "ada.backup@example.com"


def in_thread(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """backup() and restore() run an event loop of their own: keep it off pytest-asyncio's thread."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(function, *args, **kwargs).result()


def settings_for(data_dir: Path, **extra: Any) -> Settings:
    return load_settings(data_dir=data_dir, embedded_db_port=0, **extra)


def take_backup(data_dir: Path, archive: Path, **options: Any) -> BackupSummary:
    """What `gatehouse backup` does: start the folder's database if needed, back up, stop it."""
    settings = settings_for(data_dir)
    with database_server(settings) as server:
        return backup(settings, server.url, archive, **options)


def noise_png(size: int = 48) -> bytes:
    """A PNG whose bytes no other test makes."""
    out = io.BytesIO()
    Image.frombytes("RGB", (size, size), os.urandom(size * size * 3)).save(out, format="PNG")
    return out.getvalue()


@dataclass
class Origin:
    data_dir: Path
    archive: Path
    summary: BackupSummary
    uid: str
    access_token: str
    avatar: bytes

    @property
    def avatar_path(self) -> str:
        return f"avatars/{self.uid}-x.png"


def api(server: RunningServer, token: str | None = None) -> httpx.Client:
    headers = {"apikey": server.keys.publishable_key}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.Client(base_url=server.url, headers=headers, timeout=15)


@pytest.fixture(scope="module")
def origin(tmp_path_factory: pytest.TempPathFactory, keys: KeySet, keys_dir: Path) -> Origin:
    data_dir = tmp_path_factory.mktemp("origin")
    avatar = noise_png()
    server = start_server(data_dir, keys, database_url=None, env=ENV, keys_file=keys_dir / "keys.json")
    try:
        with api(server) as client:
            signed_up = client.post(
                "/auth/v1/signup", json={"email": EMAIL, "password": PASSWORD, "data": {"full_name": "Ada Backup"}}
            )
            assert signed_up.status_code == 200, signed_up.text
            session = signed_up.json()
            uid, token = session["user"]["id"], session["access_token"]
        with api(server, token) as client:
            uploaded = client.post(
                f"/storage/v1/object/avatars/{uid}-x.png", content=avatar, headers={"Content-Type": "image/png"}
            )
            assert uploaded.status_code == 200, uploaded.text
    finally:
        assert server.stop() == 0, server.log()
    archive = tmp_path_factory.mktemp("archives") / "gatehouse.tar.gz"
    summary = in_thread(take_backup, data_dir, archive)
    return Origin(data_dir, archive, summary, uid, token, avatar)


def test_round_trip_brings_back_users_rows_and_files(
    origin: Origin, tmp_path_factory: pytest.TempPathFactory, keys: KeySet
) -> None:
    assert (origin.summary.users, origin.summary.objects, origin.summary.files) == (1, 1, 1)
    target = tmp_path_factory.mktemp("restored") / "data"  # restore makes the folder

    summary = in_thread(restore, settings_for(target), origin.archive)

    assert (summary.users, summary.objects, summary.files) == (1, 1, 1)
    assert summary.database == "embedded" and summary.migrations_applied == []
    assert (target / "keys.json").stat().st_mode & 0o777 == 0o600
    assert (target / "keys.json").read_bytes() == (origin.data_dir / "keys.json").read_bytes()
    assert not list(target.glob(".restore-*")) and not list((target / "storage").glob(".restore-*"))

    server = start_server(target, keys, database_url=None, env=ENV)
    try:
        with api(server) as client:
            logged_in = client.post("/auth/v1/token?grant_type=password", json={"email": EMAIL, "password": PASSWORD})
            assert logged_in.status_code == 200, logged_in.text
            token = logged_in.json()["access_token"]
            assert logged_in.json()["user"]["id"] == origin.uid
        with api(server, token) as client:
            download = client.get(f"/storage/v1/object/authenticated/{origin.avatar_path}")
            assert download.status_code == 200, download.text
            assert download.content == origin.avatar
            profile = client.get("/rest/v1/profiles", params={"id": f"eq.{origin.uid}", "select": "id,full_name"})
            assert profile.json() == [{"id": origin.uid, "full_name": "Ada Backup"}]
            # Grants and policies came back with the rows: own names only, as before.
            other = client.post(
                "/storage/v1/object/avatars/someone-else.png",
                content=noise_png(),
                headers={"Content-Type": "image/png"},
            )
            assert other.status_code == 400 and other.json()["statusCode"] == "403", other.text
            mine = client.post(
                f"/storage/v1/object/avatars/{origin.uid}-y.png",
                content=noise_png(),
                headers={"Content-Type": "image/png"},
            )
            assert mine.status_code == 200, mine.text
        with api(server, origin.access_token) as client:
            # The signing key and the session survived: a token issued before the backup still works.
            me = client.get("/auth/v1/user")
            assert me.status_code == 200 and me.json()["id"] == origin.uid, me.text
    finally:
        assert server.stop() == 0, server.log()


def test_archive_layout_and_secrets(origin: Origin) -> None:
    assert origin.archive.stat().st_mode & 0o777 == 0o600
    with tarfile.open(origin.archive, "r:gz") as tar:
        members = tar.getmembers()
    names = [member.name for member in members]
    assert names[0] == "database.dump" and names[-1] == "manifest.json"
    by_name = {member.name: member for member in members}
    assert by_name["keys.json"].mode == 0o600
    assert by_name["database.dump"].mode == 0o600

    manifest = read_manifest(origin.archive)
    assert manifest["format"] == 1 and manifest["files_included"] is True
    assert manifest["counts"] == {"users": 1, "objects": 1, "files": 1, "file_bytes": len(origin.avatar)}
    [blob] = manifest["blobs"]
    assert blob["sha256"] == hashlib.sha256(origin.avatar).hexdigest() and blob["size"] == len(origin.avatar)
    assert by_name[f"blobs/{blob['key']}"].size == len(origin.avatar)
    assert blob["key"].startswith("avatars/")
    roles = {role["name"]: role for role in manifest["roles"]}
    assert {"anon", "authenticated", "service_role", "authenticator"} <= set(roles)
    assert roles["service_role"]["bypassrls"] and not roles["anon"]["login"]
    assert roles["authenticator"]["login"] and not roles["authenticator"]["inherit"]
    assert set(roles["authenticator"]["member_of"]) == {"anon", "authenticated", "service_role"}
    assert "postgres" not in roles  # the owner: whoever restores owns the objects


def test_restore_refuses_a_folder_that_is_in_use(origin: Origin) -> None:
    keys_before = (origin.data_dir / "keys.json").read_bytes()
    with pytest.raises(BackupError, match="already holds keys.json and a database"):
        restore(settings_for(origin.data_dir), origin.archive)
    assert (origin.data_dir / "keys.json").read_bytes() == keys_before


def _rewrite(source: Path, target: Path, change: Callable[[str, bytes], bytes | None]) -> None:
    """Copy an archive member by member (uncompressed), passing each through ``change``."""
    with tarfile.open(source, "r:*") as old, tarfile.open(target, "w", format=tarfile.PAX_FORMAT) as new:
        for member in old.getmembers():
            handle = old.extractfile(member)
            assert handle is not None
            body = change(member.name, handle.read())
            if body is None:
                continue
            member.size = len(body)
            new.addfile(member, io.BytesIO(body))


def _assert_untouched(folder: Path) -> None:
    assert not folder.exists() or not any(folder.iterdir()), list(folder.rglob("*"))


@pytest.mark.parametrize("compressed", [True, False], ids=["tar.gz", "tar"])
def test_a_truncated_archive_is_refused_cleanly(origin: Origin, tmp_path: Path, compressed: bool) -> None:
    whole = origin.archive.read_bytes() if compressed else gzip.decompress(origin.archive.read_bytes())
    cut = tmp_path / ("cut.tar.gz" if compressed else "cut.tar")
    cut.write_bytes(whole[: len(whole) * 2 // 3])
    target = tmp_path / "data"
    with pytest.raises(BackupError, match="damaged|cut short"):
        restore(settings_for(target), cut)
    _assert_untouched(target)


def test_not_an_archive(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"this is not a tar file" * 100)
    with pytest.raises(BackupError, match="not a Gatehouse backup"):
        restore(settings_for(tmp_path / "data"), junk)
    with pytest.raises(BackupError, match="does not exist"):
        restore(settings_for(tmp_path / "data"), tmp_path / "missing.tar")
    _assert_untouched(tmp_path / "data")


def test_a_changed_file_is_caught_by_its_checksum(origin: Origin, tmp_path: Path) -> None:
    def flip(name: str, body: bytes) -> bytes:
        return body[:-1] + bytes([body[-1] ^ 1]) if name.startswith("blobs/") else body

    altered = tmp_path / "altered.tar"
    _rewrite(origin.archive, altered, flip)
    with pytest.raises(BackupError, match="does not match its checksum"):
        restore(settings_for(tmp_path / "data"), altered)
    _assert_untouched(tmp_path / "data")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m.update(format=2), "format 2"),
        (lambda m: m["postgresql"].update(major=99), "PostgreSQL 99"),
        (
            lambda m: m["migrations"].append({"source": "builtin", "version": "9999_future", "checksum": "x"}),
            "does not know",
        ),
    ],
    ids=["format", "postgresql", "gatehouse"],
)
def test_other_versions_are_refused(
    origin: Origin, tmp_path: Path, edit: Callable[[dict[str, Any]], None], message: str
) -> None:
    def change(name: str, body: bytes) -> bytes:
        if name != "manifest.json":
            return body
        manifest = json.loads(body)
        edit(manifest)
        return json.dumps(manifest).encode()

    other = tmp_path / "other.tar"
    _rewrite(origin.archive, other, change)
    with pytest.raises(BackupError, match=message):
        restore(settings_for(tmp_path / "data"), other)
    _assert_untouched(tmp_path / "data")


def test_s3_storage_needs_database_only(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, storage_backend="s3", s3_bucket="files")
    with pytest.raises(BackupError, match="S3's own tools.*--database-only"):
        backup(settings, "postgresql://nobody@127.0.0.1:1/gatehouse", tmp_path / "b.tar")


async def test_restore_into_an_external_database(
    origin: Origin, tmp_path: Path, database_url: str, empty_database_url: str
) -> None:
    # A database that holds anything is refused before a file is written.
    with pytest.raises(BackupError, match="is not empty"):
        await _restore_in_thread(settings_for(tmp_path / "busy", database_url=database_url), origin.archive)
    _assert_untouched(tmp_path / "busy")

    # An empty one on a cluster whose roles exist already (shared with other databases).
    target = tmp_path / "external"
    summary = await _restore_in_thread(settings_for(target, database_url=empty_database_url), origin.archive)
    assert summary.database == "external" and (summary.users, summary.objects) == (1, 1)
    conn = await asyncpg.connect(empty_database_url)
    try:
        assert str(await conn.fetchval("SELECT id FROM auth.users WHERE email = $1", EMAIL)) == origin.uid
        key = await conn.fetchval("SELECT bucket_id || '/' || version FROM storage.objects")
        policies = await conn.fetchval("SELECT count(*) FROM pg_policies WHERE schemaname = 'storage'")
        assert policies >= 4
        grants = await conn.fetchval(
            "SELECT has_table_privilege('authenticated', 'storage.objects', 'INSERT')"
            " AND NOT has_table_privilege('anon', 'public.profiles', 'INSERT')"
        )
        assert grants
    finally:
        await conn.close()
    assert (target / "storage" / "blobs" / key).read_bytes() == origin.avatar
    assert not (target / "postgres").exists()


async def _restore_in_thread(settings: Settings, archive: Path) -> Any:
    import asyncio

    return await asyncio.to_thread(restore, settings, archive)


def test_a_file_missing_from_storage_is_an_error_not_a_retry(origin: Origin, tmp_path: Path) -> None:
    [blob] = read_manifest(origin.archive)["blobs"]
    stored = origin.data_dir / "storage" / "blobs" / blob["key"]
    aside = tmp_path / "aside"
    stored.rename(aside)
    try:
        with pytest.raises(BackupError, match=f"missing from the storage folder: {origin.avatar_path}"):
            in_thread(take_backup, origin.data_dir, tmp_path / "again.tar")
    finally:
        aside.rename(stored)
    assert not (tmp_path / "again.tar").exists()
    assert [p.name for p in tmp_path.iterdir()] == []
    assert not list((origin.data_dir / "storage").glob(".backup-*"))


def test_database_only_leaves_the_files_out(origin: Origin, tmp_path: Path) -> None:
    summary = in_thread(take_backup, origin.data_dir, tmp_path / "db.tar", include_files=False)
    assert not summary.files_included and summary.files == 0 and summary.objects == 1
    assert "NOT in this archive" in summary.describe()
    with tarfile.open(tmp_path / "db.tar") as tar:
        assert sorted(tar.getnames()) == ["database.dump", "keys.json", "manifest.json"]
    manifest = read_manifest(tmp_path / "db.tar")
    assert manifest["files_included"] is False and manifest["blobs"] == []


def test_a_file_deleted_right_after_the_snapshot_means_another_attempt(
    origin: Origin, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race that remains: an object deleted (and its bytes removed by the janitor) between the
    snapshot and the hard links. The backup is taken again with a new snapshot that has no such row."""
    from gatehouse.core.embedded import bin_dir
    from gatehouse.storage.backends import LocalBackend

    version = "0b5e1ab0-0000-4000-8000-000000000001"
    blob = origin.data_dir / "storage" / "blobs" / "avatars" / version
    calls: list[Any] = []
    real_stage = LocalBackend.stage

    def run_sql(url: str, sql: str) -> None:
        subprocess.run([str(bin_dir() / "psql"), url, "-XqAc", sql], check=True, capture_output=True)

    def work() -> BackupSummary:
        settings = settings_for(origin.data_dir)
        with database_server(settings) as server:
            run_sql(
                server.url,
                f"INSERT INTO storage.objects (bucket_id, name, version) VALUES ('avatars', 'race.png', '{version}')",
            )
            blob.write_bytes(b"gone soon")

            async def racing_stage(store: LocalBackend, keys: Any) -> Any:
                if not calls:  # the first attempt: the object goes after the snapshot was taken
                    run_sql(server.url, "DELETE FROM storage.objects WHERE name = 'race.png'")
                    blob.unlink()  # what the janitor does with the queued bytes
                calls.append(keys)
                return await real_stage(store, keys)

            monkeypatch.setattr(LocalBackend, "stage", racing_stage)
            return backup(settings, server.url, tmp_path / "raced.tar")

    summary = in_thread(work)
    assert summary.attempts == 2 and len(calls) == 2
    assert (summary.objects, summary.files) == (1, 1)
    assert [b["key"] for b in read_manifest(tmp_path / "raced.tar")["blobs"]] == [
        b["key"] for b in read_manifest(origin.archive)["blobs"]
    ]


@pytest.fixture
def cli_env() -> Iterator[dict[str, str]]:
    yield {k: v for k, v in os.environ.items() if not k.startswith("GATEHOUSE_")} | {"GATEHOUSE_EMBEDDED_DB_PORT": "0"}


def test_the_commands(origin: Origin, tmp_path: Path, cli_env: dict[str, str]) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            gatehouse_command(*args), capture_output=True, text=True, env=cli_env, timeout=120, check=False
        )

    archive = tmp_path / "cli.tar"
    made = run("backup", str(archive), "--data-dir", str(origin.data_dir))
    assert made.returncode == 0, made.stderr
    assert "1 users" in made.stdout and "keep it as safe" in made.stdout
    assert read_manifest(archive)["counts"]["users"] == 1

    restored = run("restore", str(archive), "--data-dir", str(tmp_path / "new"))
    assert restored.returncode == 0, restored.stderr
    assert "1 users" in restored.stdout and (tmp_path / "new" / "keys.json").exists()

    again = run("restore", str(archive), "--data-dir", str(tmp_path / "new"))
    assert again.returncode == 1 and "already holds" in again.stderr and "Traceback" not in again.stderr
    (tmp_path / "junk.tar").write_bytes(b"junk" * 1000)
    junk = run("restore", str(tmp_path / "junk.tar"), "--data-dir", str(tmp_path / "other"))
    assert junk.returncode == 1 and "not a Gatehouse backup" in junk.stderr and "Traceback" not in junk.stderr
