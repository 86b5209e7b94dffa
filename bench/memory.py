"""Memory: does each Gatehouse worker's RSS stay flat over a million requests?

Starts Gatehouse as shipped (``gatehouse serve --workers 2``, default settings and log level; rate
limits off and sign-up answering with a session, as in bench/tutorial.py), makes a pool of users
(bench/steps.py) and drives a mix of the tutorial's calls with wrk (bench/lua/tutorial.lua):

* read own profile, upsert it, download the avatar through the authenticated route, the
  /account page (each pool user in turn), and a refresh with rotation (a second wrk, which
  sends each answer's refresh token next);
* calls that give the server something new to remember every time: profile reads with
  ``--distinct-tokens`` access tokens (each user's own claims, each token a new string, so
  the verified-token cache fills and cycles), reads of random table names and downloads of
  random object names (new paths: 404s), and new sign-ups.

wrk runs in chunks; after each, the RSS (and USS: pages no other process shares) of every
uvicorn worker is read from psutil. The first chunk ends near ``--first`` requests (10k), then
about every ``--every``, until ``--requests`` (1M) have been answered. A worker that restarts
(a new pid) voids the run. The goal: each worker's RSS at the end within 10% of its RSS at 10k.

    python -m bench.memory [--requests 1000000] [--users 200] [--connections 16]

Prints a table; writes bench/results/memory.json and bench/results/memory.png (RSS against
requests). Exits 1 if a worker grew by more than 10%, restarted, or answers went wrong (5xx, or
a status that the call does not give when probed once before the run).
"""

from __future__ import annotations

import argparse
import os
import platform
import secrets
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import jwt
import orjson
import psutil  # type: ignore[import-untyped]

from bench import workload
from bench.harness import PASSWORD, Server, gatehouse, require_wrk, stop_on_sigterm, table
from bench.machine import Meter
from bench.steps import CSRF, OBJECT, PROFILE_SELECT, GatehouseSteps, User, avatar_png
from bench.workload import Request, Workload
from gatehouse import __version__ as gatehouse_version
from gatehouse.core.config import load_settings
from gatehouse.core.keys import load_keys

RESULTS = Path(__file__).parent / "results"
MIB = 1024 * 1024
#: The goal: a worker's RSS at the end at most this much above its RSS after ``--first`` requests.
GOAL = 0.10
#: One new sign-up (an argon2id hash) per this many requests: hashing would otherwise take the run.
SIGNUP_EVERY = 500
#: Refresh tokens each chunk's refresh wrk starts from (it rotates them), and its connections.
REFRESH_TOKENS, REFRESH_CONNECTIONS = 8, 4


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class Call:
    """One kind of request in the mix and the status a single probe of it answered."""

    name: str
    request: Request
    status: int = 0


@dataclass
class Sample:
    requests: int
    seconds: float
    rss: dict[int, int]
    uss: dict[int, int]


@dataclass
class Run:
    samples: list[Sample] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    error_samples: dict[int, str] = field(default_factory=dict)
    other_cpu: list[float] = field(default_factory=list)
    restarted: list[str] = field(default_factory=list)


def workers(server: Server) -> list[psutil.Process]:
    """The uvicorn workers: the server process's children that multiprocessing spawned."""
    found = []
    for child in psutil.Process(server.process.pid).children():
        try:
            command = " ".join(child.cmdline())
        except psutil.Error:
            continue
        if "spawn_main" in command and "resource_tracker" not in command:
            found.append(child)
    return sorted(found, key=lambda p: p.pid)


def distinct_tokens(server: Server, users: list[User], count: int) -> list[tuple[User, str]]:
    """``count`` access tokens spread over the users: each user's own claims, each a new string.

    The claims are the user's token's (session included), with ``iat`` moved back a second per
    token: what a client holding an older, still valid token of the same session sends.
    """
    keys = load_keys(load_settings(data_dir=server.data_dir))
    made = []
    for i in range(count):
        user = users[i % len(users)]
        claims = jwt.decode(user.token, options={"verify_signature": False})
        claims["iat"] = int(claims["iat"]) - 1 - i // len(users)
        made.append((user, keys.sign(claims)))
    return made


def calls(steps: GatehouseSteps, tokens: list[tuple[User, str]]) -> tuple[list[Call], list[Request]]:
    """One probe call of each kind, and the mix wrk cycles through (each user's calls in turn)."""
    api = steps.api

    def bearer(token: str, **more: str) -> dict[str, str]:
        return {**api, "Authorization": f"Bearer {token}", **more}

    def read(user: User, token: str) -> Request:
        return Request("GET", f"/rest/v1/profiles?select={PROFILE_SELECT}&id=eq.{user.id}",
                       bearer(token, Accept=OBJECT))

    prefer = {"Prefer": "resolution=merge-duplicates,return=minimal", "Content-Type": "application/json"}

    def own(user: User) -> list[tuple[str, Request]]:
        body = {"id": user.id, "full_name": "Memory {n}", "username": "user_" + user.id.replace("-", "")[:12],
                "website": "https://example.com/{n}", "updated_at": "2026-01-01T00:00:00Z"}
        return [
            ("read own profile", read(user, user.token)),
            ("upsert own profile", Request("POST", "/rest/v1/profiles?on_conflict=id", bearer(user.token, **prefer),
                                           orjson.dumps(body).decode())),
            ("download avatar (authenticated)", Request("GET", f"/storage/v1/object/avatars/{user.id}-avatar.png",
                                                        bearer(user.token))),
            ("/account page", Request("GET", "/account", {
                "Cookie": f"gh-access-token={user.token}; gh-refresh-token={user.refresh_token}; gh-csrf={CSRF}",
                "Accept": "text/html"})),
            ("unknown table (new path)", Request("GET", "/rest/v1/missing_{n}?select=*", bearer(user.token))),
            ("unknown object (new path)", Request("GET", "/storage/v1/object/avatars/missing-{n}.png",
                                                  bearer(user.token))),
        ]

    signup = Request("POST", "/auth/v1/signup", {**api, "Content-Type": "application/json"},
                     orjson.dumps({"email": "memory-{n}@example.com", "password": PASSWORD,
                                   "data": {"full_name": "Memory {n}"}}).decode())
    mix: list[Request] = []
    users = steps.users
    for i, (user, token) in enumerate(tokens):
        # wrk's threads take alternate requests: pairs alternate their order, so each gets both.
        pair = [read(user, token), own(users[i % len(users)])[(i // 2) % 6][1]]
        mix += pair if i % 2 == 0 else pair[::-1]
        if i % SIGNUP_EVERY == 0:
            mix += [signup, signup]
    probes = [Call(name, request) for name, request in own(users[0])]
    probes += [Call("read with another token", read(*tokens[-1])), Call("sign up", signup)]
    return probes, mix


def probe(server: Server, probes: list[Call]) -> None:
    """Send each kind of call once, keeping its status: the run's answers are judged against these."""
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for call in probes:
            r = call.request
            n = secrets.token_hex(4)
            path = r.path.replace("{n}", n)
            body = r.body.replace("{n}", n) if isinstance(r.body, str) else ""
            answer = client.request(r.method, path, headers=r.headers, content=body.encode() or None)
            call.status = answer.status_code
            if answer.status_code >= 500:
                raise RuntimeError(f"{call.name}: {answer.status_code} {answer.text[:300]}")


class Refreshes:
    """Unused refresh tokens, a few per chunk; more log-ins when they run out."""

    def __init__(self, steps: GatehouseSteps) -> None:
        self.steps = steps
        self.tokens: list[str] = []

    def take(self) -> list[str]:
        if len(self.tokens) < REFRESH_TOKENS:
            self.tokens += self.steps.sessions()
        taken, self.tokens = self.tokens[:REFRESH_TOKENS], self.tokens[REFRESH_TOKENS:]
        return taken


def chunk(server: Server, mix: Workload, tokens: list[str], folder: Path, connections: int, seconds: int,
          run: Run) -> int:
    """The mix and the refresh rotation (from ``tokens``) side by side for ``seconds``: the answers counted."""
    rotation = Workload([Request("POST", "/auth/v1/token?grant_type=refresh_token",
                                 {"apikey": server.publishable_key, "Content-Type": "application/json"},
                                 '{"refresh_token":"{rt}"}')],
                        tokens=tokens, capture='"refresh_token":"([^"]+)"')
    meter = Meter()
    meter.start()
    with ThreadPoolExecutor(2) as pool:
        jobs = [pool.submit(workload.run, server.url, spec, folder, connections=c, seconds=seconds)
                for spec, c in ((mix, connections), (rotation, REFRESH_CONNECTIONS))]
        outcomes = [job.result() for job in jobs]
    run.other_cpu.append(meter.other_share())
    answered = 0
    for outcome in outcomes:
        for status, count in outcome.statuses.items():
            run.statuses[status] = run.statuses.get(status, 0) + count
            answered += count
        for status, body in outcome.samples.items():
            run.error_samples.setdefault(status, body)
    return answered


def sample(found: list[psutil.Process], requests: int, began: float) -> Sample:
    rss, uss = {}, {}
    for process in found:
        info = process.memory_full_info()
        rss[process.pid], uss[process.pid] = info.rss, info.uss
    return Sample(requests, round(time.monotonic() - began, 1), rss, uss)


def measure(args: argparse.Namespace, folder: Path) -> tuple[Run, list[Call], dict[str, Any]]:
    run = Run()
    with gatehouse(workers=2, GATEHOUSE_MAILER_AUTOCONFIRM="true", GATEHOUSE_LOG_LEVEL="info") as server:
        log(f"Gatehouse: {server.url}, imports {server.package}")
        steps = GatehouseSteps(server, avatar_png(folder / "avatar.png"), users=args.users)
        steps.setup()
        tokens = distinct_tokens(server, steps.users, args.distinct_tokens)
        probes, requests = calls(steps, tokens)
        probe(server, probes)
        log("probes: " + ", ".join(f"{c.name} {c.status}" for c in probes))
        mix = Workload(requests)
        refreshes = Refreshes(steps)
        found = workers(server)
        pids = [p.pid for p in found]
        log(f"workers: {pids}; {len(requests)} requests in the mix, {args.distinct_tokens} distinct tokens")
        began = time.monotonic()
        run.samples.append(sample(found, 0, began))
        done, rate, seconds = 0, 0.0, 1
        while done < args.requests:
            answered = chunk(server, mix, refreshes.take(), folder, args.connections, seconds, run)
            rate = answered / seconds
            done += answered
            time.sleep(1)  # requests in flight finish
            now = workers(server)
            if [p.pid for p in now] != pids:
                run.restarted.append(f"after {done} requests the workers were {[p.pid for p in now]}, not {pids}")
                break
            if done >= args.first:
                run.samples.append(sample(found, done, began))
                s = run.samples[-1]
                log(f"  {done:>9,} requests ({rate:,.0f}/s)  RSS MiB "
                    + "  ".join(f"{s.rss[p] / MIB:6.1f}" for p in pids))
            target = args.first if done < args.first else min(done + args.every, args.requests)
            seconds = max(1, min(120, round((target - done) / max(rate, 1.0))))
        meta = {"gatehouse_package": server.package, "workers": pids, "mix_requests": len(requests)}
    return run, probes, meta


def figures(run: Run, pids: list[int]) -> dict[str, Any]:
    first = next(s for s in run.samples if s.requests > 0)
    last = run.samples[-1]
    per_worker = {}
    for pid in pids:
        ratio = last.rss[pid] / first.rss[pid]
        per_worker[str(pid)] = {
            "rss_first_mib": round(first.rss[pid] / MIB, 1), "rss_end_mib": round(last.rss[pid] / MIB, 1),
            "ratio": round(ratio, 3), "uss_first_mib": round(first.uss[pid] / MIB, 1),
            "uss_end_mib": round(last.uss[pid] / MIB, 1), "peak_rss_mib": round(max(s.rss[pid] for s in run.samples) / MIB, 1),
        }
    return {"first_requests": first.requests, "end_requests": last.requests, "workers": per_worker}


def unexpected(run: Run, probes: list[Call]) -> dict[int, int]:
    allowed = {c.status for c in probes} | {200}
    return {s: n for s, n in run.statuses.items() if s >= 500 or s not in allowed}


def chart(path: Path, run: Run, pids: list[int], subtitle: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = next(s for s in run.samples if s.requests > 0)
    fig, ax = plt.subplots(figsize=(9, 5))
    for i, pid in enumerate(pids):
        points = [s for s in run.samples if s.requests > 0]
        line = ax.plot([s.requests for s in points], [s.rss[pid] / MIB for s in points], marker="o", markersize=3,
                       label=f"worker {i + 1} RSS")[0]
        ax.axhline(first.rss[pid] * (1 + GOAL) / MIB, color=line.get_color(), linestyle=":", linewidth=1,
                   label=f"worker {i + 1}: +10% of its RSS at {first.requests:,}")
    ax.set_xscale("log")
    ax.set_xlabel("requests answered (log scale)")
    ax.set_ylabel("RSS, MiB")
    ax.set_ylim(bottom=0)
    ax.set_title(f"Gatehouse worker memory over a run of the tutorial's calls\n{subtitle}", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1_000_000, help="answers to wait for (default 1,000,000)")
    parser.add_argument("--first", type=int, default=10_000, help="the reference sample (default 10,000)")
    parser.add_argument("--every", type=int, default=50_000, help="requests between samples (default 50,000)")
    parser.add_argument("--users", type=int, default=200, help="pool users (default 200)")
    parser.add_argument("--distinct-tokens", type=int, default=8192,
                        help="access tokens the profile reads cycle through (default 8,192: twice the verified-token cache)")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections for the mix (default 16)")
    parser.add_argument("--out", default="memory", help="results file name under bench/results (default memory)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    stop_on_sigterm()
    require_wrk()
    started = datetime.now(UTC)
    folder = Path(tempfile.mkdtemp(prefix="memory-bench-"))
    try:
        run, probes, meta = measure(args, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    pids = meta["workers"]
    result = figures(run, pids)
    wrong = unexpected(run, probes)
    rows = [["worker", f"RSS MiB at {result['first_requests']:,}", f"RSS MiB at {result['end_requests']:,}",
             "end / first", "USS MiB first", "USS MiB end", "peak RSS MiB"]]
    for i, (pid, w) in enumerate(result["workers"].items()):
        rows.append([f"{i + 1} (pid {pid})", str(w["rss_first_mib"]), str(w["rss_end_mib"]), f"{w['ratio']:.3f}",
                     str(w["uss_first_mib"]), str(w["uss_end_mib"]), str(w["peak_rss_mib"])])
    grew = [pid for pid, w in result["workers"].items() if w["ratio"] > 1 + GOAL]
    print(table(rows))
    print(f"answers by status: {dict(sorted(run.statuses.items()))}; probes: "
          + ", ".join(f"{c.name} {c.status}" for c in probes))
    print(f"other processes' CPU share, most in a chunk: {100 * max(run.other_cpu, default=0):.0f}%")
    verdict = "met" if not grew and not run.restarted and not wrong else "NOT met"
    print(f"goal (each worker's RSS at the end within {GOAL:.0%} of its RSS at {result['first_requests']:,}): {verdict}"
          + (f"; unexpected answers {wrong}" if wrong else "") + "".join(f"; {r}" for r in run.restarted))
    machine = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
               "memory_gib": round(psutil.virtual_memory().total / 2**30, 1)}
    document = {
        "benchmark": "memory", "date": started.isoformat(timespec="seconds"), "machine": machine,
        "gatehouse": gatehouse_version, "settings": "defaults (2 workers, log level info); rate limits off, "
                                                    "sign-up answers with a session",
        "requests": args.requests, "users": args.users, "distinct_tokens": args.distinct_tokens,
        "connections": {"mix": args.connections, "refresh": REFRESH_CONNECTIONS}, "signup_every": SIGNUP_EVERY,
        **meta, **result, "goal": f"end RSS <= {1 + GOAL:.2f} x RSS at {args.first:,}", "verdict": verdict,
        "statuses": {str(k): v for k, v in sorted(run.statuses.items())},
        "error_samples": {str(k): v for k, v in sorted(run.error_samples.items())},
        "probes": {c.name: c.status for c in probes}, "restarted": run.restarted,
        "other_processes_cpu_share": [round(x, 3) for x in run.other_cpu],
        "samples": [{"requests": s.requests, "seconds": s.seconds,
                     "rss_mib": {str(p): round(v / MIB, 2) for p, v in s.rss.items()},
                     "uss_mib": {str(p): round(v / MIB, 2) for p, v in s.uss.items()}} for s in run.samples],
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n")
    subtitle = (f"{started:%Y-%m-%d}, {machine['cpus']} cores, 2 workers, {args.users} users, "
                f"{args.distinct_tokens:,} distinct tokens, {result['end_requests']:,} requests")
    chart(RESULTS / f"{args.out}.png", run, pids, subtitle)
    print(f"wrote bench/results/{args.out}.json and {args.out}.png")
    sys.exit(0 if verdict == "met" else 1)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        log("interrupted: the server this run started has been stopped")
        sys.exit(130)
