"""Load: N simulated tutorial users for a while, against one Gatehouse (a benchmark, not a test).

Each simulated user is an asyncio task with its own HTTP client (and so its own cookies) that
goes through the tutorial's flow again and again, each time as a new person:

    signup       POST /auth/v1/signup
    inbox        GET  /_inbox/messages?to=EMAIL        (the confirmation email, development inbox)
    verify       POST /auth/v1/verify                  (type=email, token_hash from the link)
    login        POST /auth/v1/token?grant_type=password
    profile      POST /rest/v1/profiles?on_conflict=id (upsert, as supabase-py sends it)
    read         GET  /rest/v1/profiles?select=...&id=eq.UID     (the account page's getProfile)
    avatar       POST /storage/v1/object/avatars/{uid}-{n}.png   (a ~30 KB PNG)
    download     GET  /storage/v1/object/avatars/{uid}-{n}.png   (the avatar widget, signed in; bytes checked)
    login_page   GET  /login                           (the web form: CSRF token and cookie)
    login_form   POST /login                           (303 to /account, session cookies)
    account      GET  /account                         (the account page, with those cookies)
    refresh      POST /auth/v1/token?grant_type=refresh_token

A step fails on an exception, a status other than 2xx/3xx, or an answer the next step cannot use
(no email, no token, a log-in form that does not go to /account, an account page that is not the
user's); the flow then stops and the user starts a new one. No new flow starts after the time is
up; flows under way are finished and counted (flows/s divides by the time until the last one ends).

Without ``--url`` it starts its own server like ``make run`` does (``gatehouse serve`` with one
worker per core, embedded PostgreSQL, info logs), but on a temporary data folder and with
GATEHOUSE_RATE_LIMITS_ENABLED=false: with rate limits on (the default), 30 sign-ups per 5 minutes
per IP address would stop a load run after its first seconds. With ``--url`` it aims at a running
server (``make run``'s is http://127.0.0.1:8000; its key comes from ``gatehouse keys`` on
``--data-dir``, or ``--key``); that server must run with rate limits off, or errors (429) follow.

Memory: every 0.5 s, the resident memory (RSS, and PSS, which shares shared pages out fairly) of the
Gatehouse processes (the server process and its children) and, separately, of the PostgreSQL
processes (the postmaster and its children) is summed; the peaks are reported. The load generator
runs on the same machine and takes CPU from the server: its CPU use is reported too.

    python -m bench.load [--users N=20] [--seconds 60] [--url URL [--key KEY] [--data-dir DIR]]

Writes bench/results/load.json; the exit status is 1 if any step failed.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import io
import json
import os
import platform
import random
import re
import secrets
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil  # type: ignore[import-untyped]

from bench.harness import PASSWORD, gatehouse, percentile, table

STEPS = ["signup", "inbox", "verify", "login", "profile", "read", "avatar", "download", "login_page", "login_form",
         "account", "refresh"]
RESULTS = Path(__file__).parent / "results" / "load.json"
KEEP_MESSAGES = 10
INBOX_WAIT = 10.0  # seconds to wait for the confirmation email before the step fails
TOKEN_HASH = re.compile(r"/auth/confirm\?token_hash=([^&\s\"'<>]+)&(?:amp;)?type=email")
CSRF_FIELD = re.compile(r'name="csrf" value="([^"]+)"')


class StepFailed(Exception):
    """An answer the flow cannot go on with (the message says why)."""


@dataclass
class Stats:
    latencies: dict[str, list[float]] = field(default_factory=lambda: {step: [] for step in STEPS})
    errors: dict[str, int] = field(default_factory=lambda: {step: 0 for step in STEPS})
    messages: list[str] = field(default_factory=list)
    flows: list[float] = field(default_factory=list)  # durations of completed flows
    failed_flows: int = 0
    inbox_polls: int = 0

    def error(self, step: str, message: str) -> None:
        self.errors[step] = self.errors.get(step, 0) + 1
        if len(self.messages) < KEEP_MESSAGES:
            self.messages.append(f"{time.strftime('%H:%M:%S')} {step}: {message}")


def avatar_png(size: int = 100) -> bytes:
    """A PNG of random pixels: 100x100 RGB noise does not compress, so it is about 30 KB."""
    from PIL import Image

    noise = random.Random(8).randbytes(size * size * 3)
    out = io.BytesIO()
    Image.frombytes("RGB", (size, size), noise).save(out, format="PNG")
    return out.getvalue()


class User:
    """One simulated person at a time, with one HTTP client (its cookies persist across flows)."""

    def __init__(self, number: int, url: str, key: str, run_id: str, png: bytes, stats: Stats,
                 verify: ssl.SSLContext | bool = True) -> None:
        self.number, self.url, self.key, self.run_id, self.png, self.stats = number, url, key, run_id, png, stats
        self.client = httpx.AsyncClient(base_url=url, timeout=30.0, follow_redirects=False, verify=verify)
        self.flow = 0

    async def step(self, name: str, call: Callable[[], Awaitable[httpx.Response]],
                   check: Callable[[httpx.Response], str | None] | None = None, *, record: bool = True) -> httpx.Response:
        """One request: its latency if it succeeded, else an error (and the flow stops)."""
        started = time.perf_counter()
        try:
            response = await call()
        except httpx.HTTPError as error:
            self.stats.error(name, f"{type(error).__name__}: {error!r}")
            raise StepFailed from None
        elapsed = time.perf_counter() - started
        problem = None if 200 <= response.status_code < 400 else "status"
        if problem is None and check is not None:
            try:
                problem = check(response)
            except ValueError as error:  # not JSON
                problem = f"unreadable answer ({error})"
        if problem is not None:
            self.stats.error(name, f"{response.request.method} {response.request.url.path} -> {response.status_code} "
                                   f"{response.headers.get('location', '')} {'' if problem == 'status' else problem + ': '}"
                                   f"{response.text[:300]!r}")
            raise StepFailed
        if record:
            self.stats.latencies[name].append(elapsed)
        return response

    async def run(self, deadline: float) -> None:
        try:
            while self.going_on(deadline):
                self.flow += 1
                started = time.perf_counter()
                try:
                    await self.one_flow()
                except StepFailed:
                    self.stats.failed_flows += 1
                    await asyncio.sleep(0.2)  # do not spin on a server that refuses everything
                except Exception as error:  # noqa: BLE001 - an answer of a shape nobody expected: count it, go on
                    self.stats.error("other", f"flow {self.flow}: {type(error).__name__}: {error!r}")
                    self.stats.failed_flows += 1
                    await asyncio.sleep(0.2)
                else:
                    self.stats.flows.append(time.perf_counter() - started)
        finally:
            await self.client.aclose()

    def going_on(self, deadline: float) -> bool:
        """Whether to start another flow."""
        return time.perf_counter() < deadline

    async def one_flow(self) -> None:
        c, n = self.client, f"{self.number}-{self.flow}"
        email = f"load-{self.run_id}-{n}@example.com"
        api = {"apikey": self.key}

        # 1. Sign up: with confirmation on, a user and no session.
        await self.step("signup", lambda: c.post("/auth/v1/signup", headers=api, json={
            "email": email, "password": PASSWORD, "data": {"full_name": f"Load User {n}"}}),
            lambda r: None if r.json().get("id") or r.json().get("user") else "no user")

        # 2. The confirmation email (written with the sign-up).
        token_hash = await self.confirmation(email)

        # 3. Confirm with the link's token_hash (what the web app's /auth/confirm POST does).
        await self.step("verify", lambda: c.post("/auth/v1/verify", headers=api,
                                                 json={"type": "email", "token_hash": token_hash}), no_session)

        # 4. Log in with the password.
        login = await self.step("login", lambda: c.post("/auth/v1/token", params={"grant_type": "password"},
                                                        headers=api, json={"email": email, "password": PASSWORD}),
                                no_session)
        session = login.json()
        uid = session["user"]["id"]
        bearer = {**api, "Authorization": f"Bearer {session['access_token']}"}

        # 5. Update the profile: supabase-py's upsert (the tutorial's updateProfile).
        profile = {"id": uid, "full_name": f"Load User {n}", "username": f"load_{self.run_id}_{n}",
                   "website": f"https://example.com/{n}", "updated_at": datetime.datetime.now(datetime.UTC).isoformat()}

        def upserted(r: httpx.Response) -> str | None:
            rows = r.json()
            ok = isinstance(rows, list) and len(rows) == 1 and rows[0].get("username") == profile["username"]
            return None if ok else "not the profile"

        await self.step("profile", lambda: c.post(
            "/rest/v1/profiles", params={"on_conflict": "id"}, json=profile,
            headers={**bearer, "Prefer": "return=representation,resolution=merge-duplicates"}), upserted)
        await self.step("read", lambda: c.get(
            "/rest/v1/profiles", params={"select": "full_name,username,website,avatar_url", "id": f"eq.{uid}"},
            headers={**bearer, "Accept": "application/vnd.pgrst.object+json"}),
            lambda r: None if r.json().get("username") == profile["username"] else "not the profile written")

        # 6. Upload the photo as the tutorial names it: {uid}-{random}.{ext}.
        avatar = f"/storage/v1/object/avatars/{uid}-{self.flow}.png"
        await self.step("avatar", lambda: c.post(avatar, content=self.png, headers={**bearer, "Content-Type": "image/png"}),
                        lambda r: None if r.json().get("Key") or r.json().get("Id") else "no Key")
        await self.step("download", lambda: c.get(avatar, headers=bearer),
                        lambda r: None if r.content == self.png else "not the bytes uploaded")

        # 7. The account page in a browser: log in through the form, then load /account with the cookies.
        form = await self.step("login_page", lambda: c.get("/login"),
                               lambda r: None if CSRF_FIELD.search(r.text) else "no CSRF field")
        csrf = CSRF_FIELD.search(form.text).group(1)  # type: ignore[union-attr]
        await self.step("login_form", lambda: c.post("/login", data={
            "csrf": csrf, "email": email, "password": PASSWORD, "action": "login"}),
            lambda r: None if r.status_code == 303 and r.headers.get("location") == "/account" else "not to /account")
        await self.step("account", lambda: c.get("/account"),
                        lambda r: None if r.status_code == 200 and email in r.text else f"not {email}'s account page")

        # 8. Refresh the API session.
        await self.step("refresh", lambda: c.post(
            "/auth/v1/token", params={"grant_type": "refresh_token"}, headers=api,
            json={"refresh_token": session["refresh_token"]}), no_session)

    async def confirmation(self, email: str) -> str:
        """The token_hash of ``email``'s confirmation link, from the development inbox; the step's
        latency is until the email is there."""
        c = self.client
        started = time.perf_counter()
        token_hash = None
        while token_hash is None:
            self.stats.inbox_polls += 1
            answer = await self.step("inbox", lambda: c.get("/_inbox/messages", params={"to": email}), record=False)
            for message in answer.json().get("messages", []):
                found = TOKEN_HASH.search(message.get("text") or "")
                if found:
                    token_hash = urllib.parse.unquote(found.group(1))
                    break
            else:
                if time.perf_counter() - started > INBOX_WAIT:
                    self.stats.error("inbox", f"no confirmation email for {email} after {INBOX_WAIT:.0f} s: "
                                              f"{answer.text[:300]!r}")
                    raise StepFailed
                await asyncio.sleep(0.05)
        self.stats.latencies["inbox"].append(time.perf_counter() - started)
        return token_hash


def no_session(response: httpx.Response) -> str | None:
    body = response.json()
    return None if "access_token" in body and "refresh_token" in body else "no session"


# -- memory -----------------------------------------------------------------------------------------


def _tree(root: psutil.Process) -> list[psutil.Process]:
    try:
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _is_postgres(process: psutil.Process) -> bool:
    try:
        return bool(process.name().startswith("postgres"))
    except psutil.Error:
        return False


def postmaster(data_dir: Path | None, server: list[psutil.Process]) -> psutil.Process | None:
    """The embedded PostgreSQL's postmaster (from its postmaster.pid), else the PostgreSQL the server talks to."""
    if data_dir is not None:
        try:
            return psutil.Process(int((data_dir / "postgres" / "postmaster.pid").read_text().split()[0]))
        except (OSError, ValueError, IndexError, psutil.Error):
            pass
    ports = set()
    for process in server:
        try:
            ports |= {c.raddr.port for c in process.net_connections("tcp") if c.raddr and c.raddr.ip in ("127.0.0.1", "::1")}
        except psutil.Error:
            pass
    for connection in psutil.net_connections("tcp"):
        if connection.status == psutil.CONN_LISTEN and connection.laddr.port in ports and connection.pid:
            process = psutil.Process(connection.pid)
            if _is_postgres(process):
                parent = process.parent()
                return parent if parent is not None and _is_postgres(parent) else process
    return None


def server_by_port(port: int) -> psutil.Process | None:
    """The top Gatehouse process of the server listening on ``port`` (uvicorn's workers share the socket)."""
    for connection in psutil.net_connections("tcp"):
        if connection.status == psutil.CONN_LISTEN and connection.laddr.port == port and connection.pid:
            process = psutil.Process(connection.pid)
            while (parent := process.parent()) is not None and "gatehouse" in " ".join(parent.cmdline()):
                process = parent
            return process
    return None


class MemorySampler(threading.Thread):
    """Sums the RSS and PSS of the Gatehouse and PostgreSQL processes every ``interval`` seconds."""

    def __init__(self, server: psutil.Process, data_dir: Path | None, interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.server, self.data_dir, self.interval = server, data_dir, interval
        self.peak = {"gatehouse_rss": 0, "gatehouse_pss": 0, "postgres_rss": 0, "postgres_pss": 0, "total_rss": 0,
                     "total_pss": 0}
        self.peak_processes = {"gatehouse": 0, "postgres": 0}
        self.samples = 0
        self.stopping = threading.Event()

    @staticmethod
    def _sum(processes: list[psutil.Process]) -> tuple[int, int]:
        rss = pss = 0
        for process in processes:
            try:
                info = process.memory_full_info()
            except psutil.Error:
                continue
            rss += info.rss
            pss += getattr(info, "pss", info.rss)
        return rss, pss

    def sample(self) -> None:
        try:
            self._sample()
        except psutil.Error:
            pass  # a process went away while we looked: the next sample will do

    def _sample(self) -> None:
        everything = _tree(self.server)
        ours = [p for p in everything if not _is_postgres(p)]
        master = postmaster(self.data_dir, ours)
        pg = {p.pid: p for p in [p for p in everything if _is_postgres(p)] + (_tree(master) if master else [])}
        (g_rss, g_pss), (p_rss, p_pss) = self._sum(ours), self._sum(list(pg.values()))
        now = {"gatehouse_rss": g_rss, "gatehouse_pss": g_pss, "postgres_rss": p_rss, "postgres_pss": p_pss,
               "total_rss": g_rss + p_rss, "total_pss": g_pss + p_pss}
        self.peak = {k: max(v, now[k]) for k, v in self.peak.items()}
        self.peak_processes = {"gatehouse": max(self.peak_processes["gatehouse"], len(ours)),
                               "postgres": max(self.peak_processes["postgres"], len(pg))}
        self.samples += 1

    def run(self) -> None:
        while not self.stopping.is_set():
            self.sample()
            self.stopping.wait(self.interval)

    def stop(self) -> None:
        self.stopping.set()
        self.join()


# -- the run ----------------------------------------------------------------------------------------


async def load(url: str, key: str, users: int, seconds: float, stats: Stats) -> float:
    """Run the users until ``seconds`` have passed and their flows are done: the elapsed time."""
    run_id = secrets.token_hex(3)
    png = avatar_png()
    began = time.perf_counter()
    deadline = began + seconds
    population = [User(i, url, key, run_id, png, stats) for i in range(users)]
    await asyncio.gather(*(user.run(deadline) for user in population))
    return time.perf_counter() - began


def measure(url: str, key: str, server: psutil.Process | None, data_dir: Path | None, args: argparse.Namespace) -> dict[str, Any]:
    stats = Stats()
    sampler = MemorySampler(server, data_dir) if server is not None else None
    if sampler:
        sampler.start()
    client_cpu = psutil.Process().cpu_times()
    load_before = os.getloadavg()[0]
    elapsed = asyncio.run(load(url, key, args.users, args.seconds, stats))
    cpu = psutil.Process().cpu_times()
    if sampler:
        sampler.stop()
    mib = 1024 * 1024
    steps = {}
    for step in [*STEPS, *(s for s in stats.errors if s not in STEPS)]:
        latencies = stats.latencies.get(step, [])
        steps[step] = {"count": len(latencies), "errors": stats.errors.get(step, 0),
                       "p50_ms": round(percentile(latencies, 0.5) * 1000, 1) if latencies else None,
                       "p99_ms": round(percentile(latencies, 0.99) * 1000, 1) if latencies else None}
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "target": url, "own_server": args.url is None, "workers": args.workers if args.url is None else None,
        "users": args.users, "seconds": args.seconds, "elapsed_s": round(elapsed, 2),
        "completed_flows": len(stats.flows), "failed_flows": stats.failed_flows,
        "flows_per_s": round(len(stats.flows) / elapsed, 2),
        "flow_p50_ms": round(percentile(stats.flows, 0.5) * 1000, 1) if stats.flows else None,
        "flow_p99_ms": round(percentile(stats.flows, 0.99) * 1000, 1) if stats.flows else None,
        "requests": sum(len(v) for v in stats.latencies.values()) + stats.inbox_polls - len(stats.latencies["inbox"]),
        "errors": sum(stats.errors.values()), "error_messages": stats.messages, "steps": steps,
        "memory_mib": {k: round(v / mib, 1) for k, v in sampler.peak.items()} if sampler else None,
        "memory_samples": sampler.samples if sampler else 0,
        "peak_processes": sampler.peak_processes if sampler else None,
        "load_average_1min": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
        "load_generator_cpu_s": round((cpu.user + cpu.system) - (client_cpu.user + client_cpu.system), 1),
    }


def report(result: dict[str, Any]) -> str:
    lines = [
        f"Load: {result['users']} users for {result['seconds']} s against {result['target']}"
        + (f" (own server, {result['workers']} workers, rate limits off)" if result["own_server"] else ""),
        (f"completed flows {result['completed_flows']} ({result['flows_per_s']}/s over {result['elapsed_s']} s), "
         f"failed flows {result['failed_flows']}, errors {result['errors']}, requests {result['requests']}"),
        "",
    ]
    rows = [["step", "count", "p50 ms", "p99 ms", "errors"]]
    for step, figures in result["steps"].items():
        rows.append([step, str(figures["count"]), str(figures["p50_ms"] or "-"), str(figures["p99_ms"] or "-"),
                     str(figures["errors"])])
    rows.append(["whole flow", str(result["completed_flows"]), str(result["flow_p50_ms"] or "-"),
                 str(result["flow_p99_ms"] or "-"), str(result["failed_flows"])])
    lines.append(table(rows))
    memory = result["memory_mib"]
    if memory:
        processes = result["peak_processes"]
        lines += ["", f"peak memory, MiB (sums over processes, sampled every 0.5 s, {result['memory_samples']} samples):",
                  table([["", "processes", "RSS", "PSS"],
                         ["Gatehouse", str(processes["gatehouse"]), str(memory["gatehouse_rss"]), str(memory["gatehouse_pss"])],
                         ["PostgreSQL", str(processes["postgres"]), str(memory["postgres_rss"]), str(memory["postgres_pss"])],
                         ["both (same sample)", "", str(memory["total_rss"]), str(memory["total_pss"])]])]
    else:
        lines += ["", "peak memory: not measured (no server process found for that URL on this machine)"]
    lines.append(f"load generator CPU: {result['load_generator_cpu_s']} s (same machine, {result['machine']['cpus']} cores); "
                 f"1-min load average {result['load_average_1min']['before']} before, {result['load_average_1min']['after']} after")
    if result["error_messages"]:
        lines += ["", "first errors:", *("  " + m for m in result["error_messages"])]
    return "\n".join(lines)


def log_tail(path: Path, lines: int = 40) -> str:
    """The server log's last lines, warnings, errors and non-2xx/3xx requests first."""
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"(no log at {path})"
    notable = [line for line in text if re.search(r'"level":\s*"(warning|error|critical)"|"status":\s*[45]\d\d', line)]
    return "\n".join(["notable lines (warnings, errors, 4xx/5xx):", *notable[-lines:], "last lines:", *text[-15:]])


def keys_for(data_dir: str | None) -> str:
    command = [sys.executable, "-m", "gatehouse", "keys"] + (["--data-dir", data_dir] if data_dir else [])
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout.split()[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=20, help="simulated users (default 20)")
    parser.add_argument("--seconds", type=float, default=60, help="how long new flows start (default 60)")
    parser.add_argument("--url", help="a running server (e.g. http://127.0.0.1:8000 for make run); default: start one")
    parser.add_argument("--key", help="with --url: the publishable key (default: from gatehouse keys)")
    parser.add_argument("--data-dir", help="with --url: the server's data folder, for its key and PostgreSQL "
                                           "(default: gatehouse's default, .gatehouse)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="without --url: worker processes (default: one per core, as make run)")
    parser.add_argument("--output", type=Path, default=RESULTS, help=f"JSON results (default {RESULTS})")
    args = parser.parse_args()

    tail = ""
    if args.url:
        url = args.url.rstrip("/")
        key = args.key or keys_for(args.data_dir)
        port = urllib.parse.urlsplit(url).port or 80
        server = server_by_port(port)
        data_dir = Path(args.data_dir or os.environ.get("GATEHOUSE_DATA_DIR", ".gatehouse")).resolve()
        result = measure(url, key, server, data_dir, args)
    else:
        with gatehouse(workers=args.workers, GATEHOUSE_LOG_LEVEL="info") as server:
            result = measure(server.url, server.publishable_key, psutil.Process(server.process.pid), server.data_dir, args)
            if result["errors"]:
                tail = log_tail(server.data_dir.parent / "server.log")
                result["server_log_tail"] = tail.splitlines()

    print(report(result))
    if tail:
        print("\nthe server's log (server.log in its temporary folder, now deleted; kept in the JSON):\n" + tail)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.output}")
    sys.exit(1 if result["errors"] else 0)


if __name__ == "__main__":
    main()
