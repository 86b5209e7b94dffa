"""How cost grows: the tutorial's per-user requests at 10k, 100k and 1M users in one database.

Starts Gatehouse with its default settings (rate limits off; ``bench.harness.gatehouse``, 2
workers), then grows its database to each size in turn with bulk rows (``bench.scale_fill``:
users, identities, profiles, sessions, refresh tokens, avatar objects and one folder of 10,000
objects, as the API would have written them), runs VACUUM ANALYZE, checkpoints, and measures each step with
wrk (``bench/lua/tutorial.lua``). Requests go round ``--users`` users drawn at random from the
whole table, each with a fresh session written as a log-in writes one:

* read       GET /rest/v1/profiles?select=...&id=eq.UID (Accept: one object), as the user
* login      POST /auth/v1/token?grant_type=password (an argon2id check each)
* refresh    POST /auth/v1/token?grant_type=refresh_token, each answer's token used next
* download   GET /storage/v1/object/avatars/UID-avatar.png with the user's bearer (RLS decides)
* list       POST /storage/v1/object/list/avatars: 100 names of the 10,000 in album/, by name
* profiles   GET /rest/v1/profiles?select=*&order=updated_at.desc&limit=50, as the user
* admin      GET /auth/v1/admin/users?page=1&per_page=50 with the secret key
* admin-deep the same at the middle page (an OFFSET of half the users)

Each figure is the median of ``--runs`` runs of ``--seconds`` (log-in: twice as long) after an
uncounted 1 s warm-up. Prints the fill times and one table per step and size, with the largest
size's req/s over the smallest's ("flat" is near 1); writes bench/results/scale.json (and .png).

    python -m bench.scale [--sizes 10000,100000,1000000] [--seconds S] [--runs N] [--steps read,login,...]
                          [--connections C] [--users N] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from bench import scale_fill, workload
from bench.harness import PASSWORD, Server, gatehouse, require_wrk, stop_on_sigterm, table
from bench.machine import Meter
from bench.report import Cell
from bench.steps import GatehouseSteps, User, avatar_png
from bench.workload import Request, Workload
from gatehouse import __version__ as gatehouse_version
from gatehouse.auth.passwords import PasswordHasher
from gatehouse.auth.tokens import AccessTokens
from gatehouse.core.config import load_settings
from gatehouse.core.embedded import running_url
from gatehouse.core.keys import load_keys

STEPS = {
    "read": "read own profile",
    "login": "log in (password)",
    "refresh": "refresh session",
    "download": "download avatar (bearer)",
    "list": "storage list, 10k folder",
    "profiles": "50 profiles by updated_at",
    "admin": "admin users, page 1",
    "admin-deep": "admin users, middle page",
}
#: Steps that answer a few dozen requests a second (an argon2id hash each): twice as long.
SLOW = {"login"}
RESULTS = Path(__file__).parent / "results"
JSON = {"Content-Type": "application/json"}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Size:
    """One size's requests: ``users`` drawn from the whole table, each signed in."""

    def __init__(self, server: Server, admin_url: str, avatar: Path, total: int, users: list[scale_fill.BulkUser],
                 tokens: AccessTokens) -> None:
        self.server = server
        self.admin_url = admin_url
        self.total = total
        self.users = users
        self.tokens = tokens
        self.api = {"apikey": server.publishable_key}
        self.signed_in = self.sign_in()
        self.tutorial = GatehouseSteps(server, avatar, users=0)
        self.tutorial.users = self.signed_in

    def sign_in(self) -> list[User]:
        """A new session per user (as a log-in writes it) and its access token."""
        sessions = asyncio.run(scale_fill.mint_sessions(self.admin_url, self.users))
        now = int(time.time())
        signed = []
        for user, (session_id, refresh) in zip(self.users, sessions, strict=True):
            claimed = {"id": user.id, "email": user.email, "phone": "", "role": "authenticated", "is_anonymous": False,
                       "app_metadata": {"provider": "email", "providers": ["email"]},
                       "user_metadata": {"full_name": f"Scale {user.index}"}}
            access = self.tokens.issue(claimed, session_id, amr=[{"method": "password", "timestamp": now}])
            signed.append(User(user.email, user.id, access.token, refresh))
        return signed

    def bearer(self, user: User, **more: str) -> dict[str, str]:
        return {**self.api, "Authorization": f"Bearer {user.token}", **more}

    def workload(self, step: str) -> Workload:
        users = self.signed_in
        if step == "read":
            return self.tutorial.workload("c")
        if step == "login":
            return self.tutorial.workload("b")
        if step == "refresh":
            fresh = asyncio.run(scale_fill.mint_sessions(self.admin_url, self.users))
            return Workload([Request("POST", "/auth/v1/token?grant_type=refresh_token", {**self.api, **JSON},
                                     '{"refresh_token":"{rt}"}')],
                            tokens=[token for _, token in fresh], capture='"refresh_token":"([^"]+)"')
        if step == "download":
            return Workload([Request("GET", f"/storage/v1/object/avatars/{u.id}-avatar.png", self.bearer(u))
                             for u in users], want_response=False)
        if step == "list":
            body = orjson.dumps({"limit": 100, "offset": 0, "sortBy": {"column": "name", "order": "asc"},
                                 "prefix": scale_fill.FOLDER}).decode()
            return Workload([Request("POST", "/storage/v1/object/list/avatars", self.bearer(u, **JSON), body)
                             for u in users])
        if step == "profiles":
            return Workload([Request("GET", "/rest/v1/profiles?select=*&order=updated_at.desc&limit=50",
                                     self.bearer(u)) for u in users])
        if step in ("admin", "admin-deep"):
            secret = self.server.secret_key
            page = 1 if step == "admin" else max(1, -(-self.total // 50) // 2)
            return Workload([Request("GET", f"/auth/v1/admin/users?page={page}&per_page=50",
                                     {"apikey": secret, "Authorization": f"Bearer {secret}"})])
        raise ValueError(step)


def measure(size: Size, step: str, args: argparse.Namespace, folder: Path) -> Cell:
    cell = Cell()
    for run in range(-1 if args.warmup else 0, args.runs):
        seconds = args.warmup if run < 0 else args.seconds * (2 if step in SLOW else 1)
        meter = Meter()
        meter.start()
        outcome = workload.run(size.server.url, size.workload(step), folder, connections=args.connections,
                               seconds=seconds)
        other = meter.other_share()
        f = outcome.figures
        label = "warm-up" if run < 0 else f"run {run + 1}/{args.runs}"
        log(f"  {size.total:>9,} {step:10} {label:9} {f.rps:9,.0f} req/s  p50 {f.p50_ms:7.1f} ms"
            f"  p99 {f.p99_ms:7.1f} ms  errors {f.errors}  other cpu {100 * other:3.0f}%"
            + (f"  statuses {dict(sorted(outcome.statuses.items()))}" if f.errors else ""))
        if run >= 0:
            share = outcome.wrk_cpu_seconds / (seconds * (os.cpu_count() or 1))
            cell.add(f, outcome.statuses, outcome.samples, share, other)
        time.sleep(2.0 if step in SLOW else 0.5)
    return cell


def render(results: dict[int, dict[str, Cell]], steps: list[str]) -> str:
    sizes = sorted(results)
    head = ["step"] + [f"{n:,}: req/s  p50  p99 ms" for n in sizes]
    if len(sizes) > 1:
        head += [f"req/s {sizes[-1]:,} / {sizes[0]:,}"]
    rows = [head]
    for step in steps:
        row = [STEPS[step]]
        for n in sizes:
            cell = results[n].get(step)
            if cell is None:
                row.append("-")
                continue
            m = cell.median
            row.append(f"{m.rps:8,.0f} {m.p50_ms:6.1f} {m.p99_ms:6.1f}" + (f" ({cell.errors} errors)" if cell.errors else ""))
        if len(sizes) > 1:
            first, last = results[sizes[0]].get(step), results[sizes[-1]].get(step)
            row.append(f"{last.median.rps / first.median.rps:.2f}" if first and last and first.median.rps else "-")
        rows.append(row)
    return table(rows)


def chart(path: Path, results: dict[int, dict[str, Cell]], steps: list[str], subtitle: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted(results)
    fig, (rps_ax, p50_ax) = plt.subplots(1, 2, figsize=(13, 5.5))
    for step in steps:
        shown = [n for n in sizes if step in results[n] and results[n][step].median.rps > 0]  # none: off a log scale
        if not shown:
            continue
        rps_ax.plot(shown, [results[n][step].median.rps for n in shown], marker="o", label=STEPS[step])
        p50_ax.plot(shown, [results[n][step].median.p50_ms for n in shown], marker="o", label=STEPS[step])
    for ax, label in ((rps_ax, "requests per second (median run)"), (p50_ax, "p50 latency, ms (median run)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(sizes, [f"{n:,}" for n in sizes])
        ax.set_xlabel("users in the database")
        ax.set_ylabel(label)
        ax.grid(which="both", alpha=0.3)
    rps_ax.legend(fontsize=8)
    fig.suptitle(f"How cost grows with the number of users\n{subtitle}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000,1000000", help="users, in growing order")
    parser.add_argument("--seconds", type=int, default=10, help="length of each counted run (log-in: twice)")
    parser.add_argument("--runs", type=int, default=3, help="counted runs per step and size (default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="seconds of an uncounted first run (0: none)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    parser.add_argument("--users", type=int, default=256, help="users drawn at random per size (default 256)")
    parser.add_argument("--steps", default=",".join(STEPS), help="steps to run (default all)")
    parser.add_argument("--quick", action="store_true", help="smoke test: sizes 1000,10000, 1 run of 3 s")
    parser.add_argument("--out", help="results file name under bench/results/ without extension")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.runs, args.seconds = "1000,10000", 1, 3
    args.sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    args.steps = [s for s in STEPS if s in args.steps.split(",")]
    if not args.steps or args.sizes != sorted(set(args.sizes)) or args.sizes[0] < 1:
        parser.error(f"steps are {', '.join(STEPS)}; sizes grow: 10000,100000")
    args.out = args.out or ("scale-quick" if args.quick else "scale")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    stop_on_sigterm()
    require_wrk()
    started = datetime.now(UTC)
    folder = Path(tempfile.mkdtemp(prefix="scale-bench-"))
    results: dict[int, dict[str, Cell]] = {}
    fills: dict[int, dict[str, Any]] = {}
    try:
        avatar = avatar_png(folder / "avatar.png")
        log("Gatehouse: starting (2 workers, embedded PostgreSQL, default settings, rate limits off)")
        with gatehouse(workers=2) as server:
            admin_url = running_url(server.data_dir)
            settings = load_settings(data_dir=server.data_dir)
            tokens = AccessTokens(load_keys(settings), settings)
            password_hash = PasswordHasher(settings).hash(PASSWORD)
            for total in args.sizes:
                log(f"filling to {total:,} users")
                filled = asyncio.run(scale_fill.fill(admin_url, total, password_hash, avatar, say=log))
                fills[total] = {"added": filled.added, "fill_seconds": round(filled.seconds, 1),
                                "vacuum_analyze_seconds": round(filled.analyze_seconds, 1), "rows": filled.rows}
                log(f"filled {filled.added:,} users in {filled.seconds:.1f} s "
                    f"({filled.added / max(filled.seconds, 1e-9):,.0f} users/s), VACUUM ANALYZE {filled.analyze_seconds:.1f} s")
                users = asyncio.run(scale_fill.pick(admin_url, total, args.users, seed=total))
                scale_fill.place_avatars(server.data_dir, avatar, users)
                size = Size(server, admin_url, avatar, total, users, tokens)
                results[total] = {step: measure(size, step, args, folder) for step in args.steps}
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    print("\nFill (bulk INSERT ... SELECT, then VACUUM ANALYZE):")
    print(table([["users", "added", "fill s", "users/s", "vacuum analyze s"]] + [
        [f"{n:,}", f"{f['added']:,}", f"{f['fill_seconds']:.1f}", f"{f['added'] / max(f['fill_seconds'], 0.1):,.0f}",
         f"{f['vacuum_analyze_seconds']:.1f}"] for n, f in fills.items()]))
    print("\nMedian run per step and size (req/s, p50 ms, p99 ms):")
    print(render(results, args.steps))
    RESULTS.mkdir(exist_ok=True)
    meta = {
        "benchmark": "scale", "date": started.isoformat(timespec="seconds"), "cpus": os.cpu_count(),
        "platform": platform.platform(), "python": platform.python_version(), "gatehouse": gatehouse_version,
        "gatehouse_workers": 2, "connections": args.connections, "seconds": args.seconds,
        "seconds_log_in": 2 * args.seconds, "runs": args.runs, "warmup_seconds": args.warmup,
        "users_drawn_per_size": args.users, "load_average_at_end": os.getloadavg(),
    }
    document = {**meta, "steps": {s: STEPS[s] for s in args.steps}, "fills": {str(n): f for n, f in fills.items()},
                "results": {str(n): {s: c.as_json() for s, c in by.items()} for n, by in results.items()}}
    json_path = RESULTS / f"{args.out}.json"
    json_path.write_text(json.dumps(document, indent=2) + "\n")
    subtitle = (f"{meta['date'][:10]}, {meta['cpus']} cores shared with wrk, {args.connections} connections, "
                f"median of {args.runs} runs of {args.seconds} s, {args.users} users drawn per size")
    chart(json_path.with_suffix(".png"), results, args.steps, subtitle)
    print(f"\nwrote {json_path} and {json_path.with_suffix('.png').name}")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        log("interrupted: the server this run started has been stopped")
        sys.exit(130)
