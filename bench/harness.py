"""Shared bench plumbing: a Gatehouse on a fresh embedded PostgreSQL, wrk runs, medians.

Benchmarks print ratios against a baseline measured in the same script, on the same machine, in
the same run: absolute numbers move with the machine, ratios much less.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import httpx

from bench.baseline import package_path
from gatehouse.core.embedded import free_port

PASSWORD = "bench passphrase 4 speed"


@dataclass
class Server:
    url: str
    data_dir: Path
    publishable_key: str
    secret_key: str
    process: subprocess.Popen[bytes]
    #: The gatehouse/__init__.py the server imports (the current tree's, or a baseline's).
    package: str = ""


def wait_healthy(health_url: str, process: subprocess.Popen[bytes], log: Path, *, timeout: float) -> None:
    """Poll ``health_url`` until it answers 200; raise with the server's log if it dies or times out."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(health_url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(log.read_text(errors="replace"))
        time.sleep(0.1)


@contextmanager
def gatehouse(workers: int = 1, source: Path | None = None, **env: str) -> Iterator[Server]:
    """``gatehouse serve`` on a new data folder (embedded PostgreSQL), rate limits off; every other
    setting at its default (the access log included) unless ``env`` sets it.

    ``source``: a folder holding another ``gatehouse`` package (``bench.baseline.source_tree``);
    the server then runs in that folder with it as ``PYTHONPATH``, so it imports that package.
    """
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("GATEHOUSE_")} | {
        "GATEHOUSE_RATE_LIMITS_ENABLED": "false",
        "GATEHOUSE_EMBEDDED_DB_PORT": "0",
        **env,
    }
    if source is not None:
        full_env["PYTHONPATH"] = str(source)
    package = package_path(full_env, source)
    folder = Path(tempfile.mkdtemp(prefix="gatehouse-bench-"))
    port = free_port()
    log = open(folder / "server.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [sys.executable, "-m", "gatehouse", "serve", "--port", str(port), "--data-dir", str(folder / "data"),
         "--workers", str(workers)],
        env=full_env, stdout=log, stderr=subprocess.STDOUT, cwd=source,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(f"{url}/auth/v1/health", process, folder / "server.log", timeout=60)
        keys = subprocess.run(
            [sys.executable, "-m", "gatehouse", "keys", "--data-dir", str(folder / "data")],
            capture_output=True, text=True, check=True, env=full_env, cwd=source,
        ).stdout.split()
        yield Server(url, folder / "data", keys[0], keys[1], process, package)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
        shutil.rmtree(folder, ignore_errors=True)


def confirmed_user(server: Server, email: str) -> dict[str, object]:
    """Create a confirmed user through the admin API and log in: the session."""
    admin = {"apikey": server.secret_key}
    created = httpx.post(f"{server.url}/auth/v1/admin/users", headers=admin,
                         json={"email": email, "password": PASSWORD, "email_confirm": True})
    created.raise_for_status()
    session = httpx.post(f"{server.url}/auth/v1/token?grant_type=password", headers={"apikey": server.publishable_key},
                         json={"email": email, "password": PASSWORD})
    session.raise_for_status()
    return session.json()  # type: ignore[no-any-return]


@dataclass
class Figures:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


def _ms(text: str) -> float:
    found = re.match(r"([\d.]+)(us|ms|s|m)$", text)
    if found is None:
        raise ValueError(f"cannot read a wrk duration from {text!r}")
    number, unit = found.groups()
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def require_wrk() -> None:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk (make bench does this)")


def stop_on_sigterm() -> None:
    """SIGTERM raises KeyboardInterrupt, so the context managers stop every server a bench started."""

    def interrupted(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupted)


def wrk(url: str, headers: dict[str, str], *, connections: int = 16, seconds: int = 10, threads: int = 2,
        script: Path | None = None) -> Figures:
    require_wrk()
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency"]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    if script is not None:
        command += ["-s", str(script)]
    out = subprocess.run([*command, url], capture_output=True, text=True, check=True).stdout
    return parse_wrk(out)


def parse_wrk(out: str) -> Figures:
    """The figures of one ``wrk --latency`` report (errors: non-2xx/3xx answers plus socket errors)."""
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)\s*$", out, re.MULTILINE).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)\s*$", out, re.MULTILINE).group(1))  # type: ignore[union-attr]
    errors = 0
    for pattern in (r"Non-2xx or 3xx responses:\s+(\d+)", r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)"):
        found = re.search(pattern, out)
        if found:
            errors += sum(int(g) for g in found.groups())
    return Figures(rps, p50, p99, errors)


def wrk_script(url: str, script: Path, args: list[str], *, connections: int = 16, seconds: int = 10,
               threads: int = 2) -> tuple[Figures, str]:
    """wrk with a Lua script and arguments for its ``init(args)``: the figures and the whole report."""
    require_wrk()
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "30s",
               "-s", str(script), url, "--", *args]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0 or "Requests/sec" not in done.stdout:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout[-2000:]}{done.stderr[-2000:]}")
    return parse_wrk(done.stdout), done.stdout


def median_of(runs: list[Figures]) -> tuple[Figures, tuple[float, float]]:
    """The run with the median req/s (its latencies with it), and the min-max of req/s."""
    ordered = sorted(runs, key=lambda f: f.rps)
    middle = ordered[len(ordered) // 2]
    return middle, (ordered[0].rps, ordered[-1].rps)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)) for row in rows)


__all__ = ["Figures", "Server", "confirmed_user", "gatehouse", "median_of", "parse_wrk", "percentile", "require_wrk",
           "statistics", "stop_on_sigterm", "table", "wrk", "wrk_script"]
