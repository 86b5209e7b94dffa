"""kill -9 in the middle of uploads and sign-ups: after a restart nothing is half-done."""

from __future__ import annotations

import io
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from PIL import Image

from gatehouse.core.db import Database
from tests.auth.helpers import PASSWORD, new_email
from tests.support import RunningServer


def noise_png(size: int = 200) -> bytes:
    out = io.BytesIO()
    Image.effect_noise((size, size), 64).convert("RGB").save(out, format="PNG")
    return out.getvalue()


async def test_kill_9_leaves_nothing_half_done(server_factory: Callable[..., RunningServer], db: Database,
                                               tmp_path_factory: pytest.TempPathFactory) -> None:
    storage: Path = tmp_path_factory.mktemp("killed-storage")
    env = {"GATEHOUSE_STORAGE_DIR": str(storage), "GATEHOUSE_RATE_LIMITS_ENABLED": "false",
           "GATEHOUSE_STORAGE_SWEEP_AFTER": "1"}
    victim = server_factory(env=env)
    admin = {"apikey": victim.keys.secret_key}
    httpx.post(f"{victim.url}/storage/v1/bucket", headers=admin, json={"id": "crash", "public": True}).raise_for_status()
    image = noise_png()
    stop = threading.Event()

    def uploads(worker: int) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            try:
                httpx.post(f"{victim.url}/storage/v1/object/crash/w{worker}-{n}.png", content=image,
                           headers=admin | {"Content-Type": "image/png"}, timeout=5)
            except httpx.HTTPError:
                return

    def signups() -> None:
        while not stop.is_set():
            try:
                httpx.post(f"{victim.url}/auth/v1/signup", headers={"apikey": victim.keys.publishable_key},
                           json={"email": new_email("killed"), "password": PASSWORD}, timeout=5)
            except httpx.HTTPError:
                return

    key = {"apikey": victim.keys.publishable_key}
    email = new_email("refresher")
    httpx.post(f"{victim.url}/auth/v1/admin/users", headers=admin,
               json={"email": email, "password": PASSWORD, "email_confirm": True}).raise_for_status()

    def refreshes() -> None:
        session = httpx.post(f"{victim.url}/auth/v1/token?grant_type=password", headers=key,
                             json={"email": email, "password": PASSWORD}).json()
        token = session["refresh_token"]
        while not stop.is_set():
            try:
                token = httpx.post(f"{victim.url}/auth/v1/token?grant_type=refresh_token", headers=key,
                                   json={"refresh_token": token}, timeout=5).json()["refresh_token"]
            except (httpx.HTTPError, KeyError, ValueError):
                return

    threads = [threading.Thread(target=uploads, args=(i,)) for i in range(4)]
    threads += [threading.Thread(target=signups) for _ in range(2)] + [threading.Thread(target=refreshes) for _ in range(2)]
    for thread in threads:
        thread.start()
    time.sleep(1.5)
    victim.process.send_signal(signal.SIGKILL)
    victim.process.wait()
    stop.set()
    for thread in threads:
        thread.join()
    assert await db.admin.fetchval("SELECT count(*) FROM storage.objects WHERE bucket_id = 'crash'") > 0

    time.sleep(1.1)  # leftovers are now older than GATEHOUSE_STORAGE_SWEEP_AFTER
    server_factory(env=env)  # the restart sweeps
    deadline = time.monotonic() + 15
    while True:
        rows = {r["key"] for r in await db.admin.fetch(
            "SELECT bucket_id || '/' || version AS key FROM storage.objects WHERE bucket_id = 'crash'")}
        blobs = {str(p.relative_to(storage / "blobs")) for p in (storage / "blobs" / "crash").rglob("*") if p.is_file()}
        spool = list((storage / ".spool").iterdir())
        if blobs == rows and not spool:
            break
        assert rows <= blobs, f"rows without bytes: {rows - blobs}"
        assert time.monotonic() < deadline, f"bytes without rows: {blobs - rows}; spool: {spool}"
        time.sleep(0.2)

    users_without_mail = await db.admin.fetchval(
        "SELECT count(*) FROM auth.users u WHERE u.email LIKE 'killed-%' AND u.email_confirmed_at IS NULL "
        "AND NOT EXISTS (SELECT 1 FROM gatehouse.mail_outbox m WHERE m.to_address = u.email)"
    )
    assert users_without_mail == 0
    half_rotated = await db.admin.fetchval(
        "SELECT count(*) FROM auth.sessions s WHERE (SELECT count(*) FROM auth.refresh_tokens t "
        "WHERE t.session_id = s.id AND NOT t.revoked) <> 1"
    )
    assert half_rotated == 0
    assert await db.admin.fetchval("SELECT count(*) FROM auth.sessions") >= 2
