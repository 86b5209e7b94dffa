"""Helpers shared by the tests: a real Gatehouse server in a subprocess, free ports, waiting, SQL as the owner, a PNG."""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from PIL import Image

from gatehouse.core.embedded import free_port
from gatehouse.core.keys import KeySet


async def eventually(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait until ``predicate()`` holds; fail after ``timeout`` seconds (a deadline, not a measurement)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


@dataclass
class RunningServer:
    url: str
    process: subprocess.Popen[bytes]
    data_dir: Path
    log_path: Path
    keys: KeySet
    env: dict[str, str] = field(default_factory=dict)

    def client(self, *, apikey: str | None = None, **kwargs: object) -> httpx.Client:
        headers = {"apikey": apikey or self.keys.publishable_key}
        return httpx.Client(base_url=self.url, headers=headers, timeout=10, **kwargs)  # type: ignore[arg-type]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


#: The ``confirmed_session`` fixture: ``confirmed_session(server) -> (email, session)``.
ConfirmedSession = Callable[[RunningServer], tuple[str, dict[str, Any]]]


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def require_tool(tool: str, needed_for: str) -> str:
    """The path of ``tool``. Missing, the test is skipped on a developer's machine and fails under
    CI, where a skip would hide a missing install step."""
    path = shutil.which(tool)
    if path is None:
        reason = f"{tool} is not on PATH: {needed_for}"
        if in_ci():
            pytest.fail(f"{reason}; CI is set, so this test must run, not skip", pytrace=False)
        pytest.skip(reason)
    return path


#: Seconds ``npm ci`` may take (a first install downloads the packages).
NPM_TIMEOUT = 300


def npm_ci(folder: Path, installed: Path) -> None:
    """``npm ci`` in ``folder`` when ``installed`` (a file or folder that install creates) is
    missing or older than package-lock.json. Under a file lock: test workers running side by side
    (pytest-xdist) install once, and none reads a half-made node_modules."""
    import fcntl

    npm = require_tool("npm", f"the tests in {folder.name} need Node.js (node and npm)")
    with (folder / ".npm-ci.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        stamp = folder / "node_modules" / ".package-lock.json"
        fresh = [path.stat().st_mtime for path in (installed, stamp) if path.exists()]
        if installed.exists() and fresh and max(fresh) >= (folder / "package-lock.json").stat().st_mtime:
            return
        command = [npm, "ci", "--no-audit", "--no-fund"]
        try:
            result = subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=NPM_TIMEOUT,
                                    check=False)
        except subprocess.TimeoutExpired as exc:
            pytest.fail(f"`{' '.join(command)}` in {folder} timed out after {NPM_TIMEOUT}s\n{exc.stdout!r}\n"
                        f"{exc.stderr!r}", pytrace=False)
        if result.returncode != 0:
            pytest.fail(f"`{' '.join(command)}` in {folder} exited with {result.returncode}\n{result.stdout}\n"
                        f"{result.stderr}", pytrace=False)


def gatehouse_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "gatehouse", *args]


def wait_until_healthy(url: str, process: subprocess.Popen[bytes], log_path: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gatehouse exited with {process.returncode}:\n{log_path.read_text(errors='replace')}")
        try:
            if httpx.get(f"{url}/auth/v1/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"gatehouse did not become healthy in {timeout}s:\n{log_path.read_text(errors='replace')}")


def start_server(
    data_dir: Path,
    keys: KeySet,
    *,
    database_url: str | None,
    env: dict[str, str] | None = None,
    keys_file: Path | None = None,
    workers: int = 1,
    port: int | None = None,
) -> RunningServer:
    """Start ``gatehouse serve`` on a loopback port (a free one unless given) and wait until it answers."""
    data_dir.mkdir(parents=True, exist_ok=True)
    if keys_file is not None and not (data_dir / "keys.json").exists():
        shutil.copy(keys_file, data_dir / "keys.json")
    port = port or free_port()
    full_env = {
        key: value for key, value in os.environ.items() if not key.startswith("GATEHOUSE_")
    } | {"GATEHOUSE_LOG_FORMAT": "json", "GATEHOUSE_LOG_LEVEL": "info", **(env or {})}
    if database_url:
        full_env["GATEHOUSE_DATABASE_URL"] = database_url
    log_path = data_dir / f"server-{port}.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            gatehouse_command(
                "serve", "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(data_dir),
                "--workers", str(workers),
            ),
            env=full_env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    wait_until_healthy(url, process, log_path)
    return RunningServer(url, process, data_dir, log_path, keys, full_env)


def run_sql(database_url: str, statement: str, *args: Any) -> Any:
    """Rows of one statement (or, without arguments, a script's status) on the test's database, as its owner."""
    async def run() -> Any:
        conn = await asyncpg.connect(database_url)
        try:
            return await conn.fetch(statement, *args) if args else await conn.execute(statement)
        finally:
            await conn.close()

    return asyncio.run(run())


def fetch_rows(database_url: str, statement: str, *args: Any) -> list[Any]:
    """The rows of one query on the test's database, as its owner (with or without arguments)."""
    async def run() -> list[Any]:
        conn = await asyncpg.connect(database_url)
        try:
            return list(await conn.fetch(statement, *args))
        finally:
            await conn.close()

    return asyncio.run(run())


def once_served(call: Callable[[], httpx.Response], seconds: float = 10) -> httpx.Response:
    """``call``'s first answer that is not a 404. The data API reloads its schema cache on the NOTIFY that
    follows new DDL, a moment after it commits: until then a new table or function is not found."""
    deadline = time.monotonic() + seconds
    while (answer := call()).status_code == 404:
        assert time.monotonic() < deadline, f"the data API never saw it: {answer.text}"
        time.sleep(0.05)
    return answer


def png(size: int = 24, color: str = "orange") -> bytes:
    """A real PNG of ``size`` x ``size`` pixels in one colour (different colours, different bytes)."""
    out = io.BytesIO()
    Image.new("RGB", (size, size), color).save(out, format="PNG")
    return out.getvalue()
