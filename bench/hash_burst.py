"""Whether a burst of log-ins (an argon2id hash each) stalls other requests.

Gatehouse hashes passwords in a small thread pool per worker process, off the event loop (argon2
releases the GIL), so a burst of log-ins should cost CPU, not the latency of everything else.
This measures the tutorial's profile read, step (c) of bench/steps.py, with wrk (its own
connections) in two scenarios on the same server:

* reads alone                 the read for ``--seconds``, nothing else
* reads during log-in burst   the same, while a second wrk (its own connections) sends log-ins,
                              step (b): ``POST /auth/v1/token?grant_type=password``, each a
                              full argon2id verification. The burst starts a second before the
                              reads and ends a second after them, so it covers the whole window.

Gatehouse runs as in bench/tutorial.py (2 workers, fresh embedded PostgreSQL, rate limits off).
The two scenarios alternate, the first one rotating from run to run. Each figure is the median
of ``--runs`` runs (after an uncounted 1 s read warm-up), with the min-max of req/s; errors are
summed over the runs. As the baseline, it prints the argon2 costs the server uses (from
``load_settings``; ``GATEHOUSE_ARGON2_*`` in the environment are passed on to the server) and
what one hash with those costs takes in this process (median of 5).

How to read it: the reads share the cores with the hashing, so their req/s drops, and since wrk
keeps every connection busy their p50 grows with it (latency is about connections / req/s): that
is the price of sharing the CPU, not a stall. A stalled event loop shows in the tail instead:
reads stuck behind a hash, or a queue of them, would push the p99 up by a hash's time or more
(and the p99 / p50 spread with it) above what it is with the reads alone. "other cpu" is the
share of the machine that processes outside the benchmark took: on a shared machine, where the
p99 alone is already mostly scheduling noise, look at it first.

    python -m bench.hash_burst [--seconds S] [--runs N] [--connections C]

Prints one table and the ratios during / alone; writes bench/results/hash_burst.json.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import argon2
import orjson

from bench import workload
from bench.harness import Server, gatehouse, require_wrk, stop_on_sigterm, table
from bench.machine import Meter
from bench.report import Cell
from bench.steps import GatehouseSteps, avatar_png
from gatehouse import __version__ as gatehouse_version
from gatehouse.auth.passwords import ARGON2_HASH_LEN, ARGON2_SALT_LEN
from gatehouse.core.config import Settings, load_settings

RESULTS = Path(__file__).parent / "results" / "hash_burst.json"
WORKERS = 2
READS, READS_BURST, LOG_INS = "reads alone", "reads during log-in burst", "log-ins during burst"
SCENARIOS = (READS, READS_BURST, LOG_INS)
#: Seconds the log-in burst runs before the reads are measured, and after them.
LEAD = 1
#: Seconds of quiet after a run of reads, and after a burst (while the last hashes finish).
SETTLE, SETTLE_BURST = 0.5, 3.0
HASH_SAMPLES = 5


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def argon2_env() -> dict[str, str]:
    """``GATEHOUSE_ARGON2_*`` from this environment, for the server (the harness drops GATEHOUSE_*)."""
    return {k: v for k, v in os.environ.items() if k.startswith("GATEHOUSE_ARGON2_")}


def hash_settings(settings: Settings) -> dict[str, int]:
    return {
        "argon2_memory_kib": settings.argon2_memory_kib,
        "argon2_time_cost": settings.argon2_time_cost,
        "argon2_parallelism": settings.argon2_parallelism,
        # As gatehouse.auth.passwords.PasswordHasher sizes its pool: the cores shared among the workers.
        "hash_threads_per_worker": max(1, (os.cpu_count() or 1) // settings.worker_count),
    }


def hash_times(settings: Settings, samples: int = HASH_SAMPLES) -> list[float]:
    """Milliseconds of ``samples`` argon2id hashes with the server's costs, in this process."""
    hasher = argon2.PasswordHasher(time_cost=settings.argon2_time_cost, memory_cost=settings.argon2_memory_kib,
                                   parallelism=settings.argon2_parallelism, hash_len=ARGON2_HASH_LEN,
                                   salt_len=ARGON2_SALT_LEN, type=argon2.Type.ID)
    times = []
    for _ in range(samples):
        started = time.perf_counter()
        hasher.hash("bench passphrase 4 speed")
        times.append((time.perf_counter() - started) * 1000)
    return times


def stop_wrk() -> None:
    """Stop the wrk processes this process started: Ctrl-C reaches them, a SIGTERM sent to us does not."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name, rest = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
        if name == "wrk" and int(rest[1]) == os.getpid():
            try:
                os.kill(int(entry.name), signal.SIGTERM)
            except ProcessLookupError:
                pass


class Bench:
    def __init__(self, args: argparse.Namespace, server: Server, steps: GatehouseSteps, folder: Path) -> None:
        self.args = args
        self.server = server
        self.steps = steps
        self.folder = folder
        self.cells = {scenario: Cell() for scenario in SCENARIOS}

    def reads(self, seconds: int) -> workload.Outcome:
        return workload.run(self.server.url, self.steps.workload("c"), self.folder,
                            connections=self.args.connections, seconds=seconds)

    def log_ins(self, seconds: int) -> workload.Outcome:
        # One wrk thread is plenty for a few dozen log-ins a second, and leaves the cores to the server.
        return workload.run(self.server.url, self.steps.workload("b"), self.folder,
                            connections=self.args.connections, seconds=seconds, threads=1)

    def record(self, scenario: str, run: int, outcome: workload.Outcome, seconds: float, other: float,
               wrk_cpu: float) -> None:
        f = outcome.figures
        log(f"  {scenario:26} run {run + 1}/{self.args.runs} {f.rps:8,.0f} req/s  p50 {f.p50_ms:7.1f} ms"
            f"  p99 {f.p99_ms:7.1f} ms  errors {f.errors}  wrk cpu {wrk_cpu:4.1f} s  other cpu {100 * other:3.0f}%"
            + (f"  statuses {dict(sorted(outcome.statuses.items()))}" if f.errors else ""))
        share = wrk_cpu / (seconds * (os.cpu_count() or 1))
        self.cells[scenario].add(f, outcome.statuses, outcome.samples, share, other)

    def alone(self, run: int) -> None:
        meter = Meter()
        meter.start()
        outcome = self.reads(self.args.seconds)
        self.record(READS, run, outcome, self.args.seconds, meter.other_share(), outcome.wrk_cpu_seconds)
        time.sleep(SETTLE)

    def burst(self, run: int) -> None:
        seconds = self.args.seconds
        meter = Meter()
        meter.start()
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="wrk") as pool:
            try:
                burst = pool.submit(self.log_ins, seconds + 2 * LEAD)
                time.sleep(LEAD)
                reads = pool.submit(self.reads, seconds).result()
                log_ins = burst.result()
            except BaseException:
                pool.shutdown(wait=False, cancel_futures=True)
                stop_wrk()
                raise
        other = meter.other_share()
        # wrk's CPU is counted for reaped children of this process: the log-in run, which encloses the
        # read run, counts both wrk processes, so its own share is the difference.
        self.record(READS_BURST, run, reads, seconds, other, reads.wrk_cpu_seconds)
        self.record(LOG_INS, run, log_ins, seconds + 2 * LEAD, other,
                    max(0.0, log_ins.wrk_cpu_seconds - reads.wrk_cpu_seconds))
        time.sleep(SETTLE_BURST)

    def run(self) -> None:
        self.reads(1)  # warm-up, not counted
        time.sleep(SETTLE)
        for run in range(self.args.runs):
            order = (self.alone, self.burst) if run % 2 == 0 else (self.burst, self.alone)
            for scenario in order:
                scenario(run)


def ratios(cells: dict[str, Cell]) -> dict[str, float]:
    alone, during = cells[READS].median, cells[READS_BURST].median
    return {
        "reads_p99_during_over_alone": during.p99_ms / alone.p99_ms if alone.p99_ms else float("nan"),
        "reads_p50_during_over_alone": during.p50_ms / alone.p50_ms if alone.p50_ms else float("nan"),
        "reads_rps_during_over_alone": during.rps / alone.rps if alone.rps else float("nan"),
    }


def render(cells: dict[str, Cell]) -> str:
    rows = [["scenario", "req/s", "min-max", "p50 ms", "p99 ms", "wrk cpu", "other cpu", "errors"]]
    for scenario, cell in cells.items():
        m, (low, high) = cell.median, cell.span
        errors = str(cell.errors)
        failing = {s: n for s, n in cell.statuses.items() if s >= 400}
        if failing:
            errors += " (" + ", ".join(f"{n}x{s}" for s, n in sorted(failing.items())) + ")"
        rows.append([scenario, f"{m.rps:,.0f}", f"{low:,.0f}-{high:,.0f}", f"{m.p50_ms:.1f}", f"{m.p99_ms:.1f}",
                     f"{100 * max(cell.load_generator):.0f}%", f"{100 * max(cell.other_work):.0f}%", errors])
    found = ratios(cells)
    return (table(rows)
            + "\nwrk cpu: the most CPU time the load generator took in a run; other cpu: the most that processes"
            "\noutside the benchmark took (other work on the machine); both as a share of all cores' time."
            f"\n\nreads during burst / alone:  p99 {found['reads_p99_during_over_alone']:.2f}"
            f"  p50 {found['reads_p50_during_over_alone']:.2f}  req/s {found['reads_rps_during_over_alone']:.2f}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10, help="length of each counted run of reads (default 10)")
    parser.add_argument("--runs", type=int, default=3, help="counted runs per scenario (default 3)")
    parser.add_argument("--connections", type=int, default=16,
                        help="connections of each wrk, reads and log-ins (default 16)")
    args = parser.parse_args(argv)
    if args.seconds < 1 or args.runs < 1 or args.connections < 1:
        parser.error("--seconds, --runs and --connections must be at least 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    stop_on_sigterm()
    require_wrk()
    started = datetime.now(UTC)
    load_at_start = os.getloadavg()
    server_env = argon2_env()
    settings = load_settings(workers=WORKERS)
    costs = hash_settings(settings)
    times = hash_times(settings)
    hash_ms = statistics.median(times)
    log(f"argon2id: m={costs['argon2_memory_kib']} KiB, t={costs['argon2_time_cost']}, "
        f"p={costs['argon2_parallelism']}; one hash {hash_ms:.1f} ms here (median of {len(times)}); "
        f"{costs['hash_threads_per_worker']} hash thread(s) in each of {WORKERS} workers")
    folder = Path(tempfile.mkdtemp(prefix="hash-burst-bench-"))
    try:
        avatar = avatar_png(folder / "avatar.png")
        log(f"Gatehouse: starting ({WORKERS} workers, embedded PostgreSQL); {args.connections} connections per wrk, "
            f"{args.runs} x {args.seconds} s per scenario")
        with gatehouse(workers=WORKERS, GATEHOUSE_MAILER_AUTOCONFIRM="true", **server_env) as server:
            steps = GatehouseSteps(server, avatar, users=2 * args.connections)
            steps.setup()
            bench = Bench(args, server, steps, folder)
            bench.run()
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    cpus = os.cpu_count() or 1
    print(f"argon2id m={costs['argon2_memory_kib']} KiB t={costs['argon2_time_cost']} "
          f"p={costs['argon2_parallelism']}: one hash {hash_ms:.1f} ms in this process (median of {len(times)}, "
          f"{min(times):.1f}-{max(times):.1f}); {costs['hash_threads_per_worker']} hash thread(s) x {WORKERS} workers"
          f" on {cpus} cores: at most ~{min(cpus, WORKERS * costs['hash_threads_per_worker']) * 1000 / hash_ms:.0f}"
          " log-ins/s\n")
    print(render(bench.cells))
    found = ratios(bench.cells)
    RESULTS.parent.mkdir(exist_ok=True)
    document: dict[str, Any] = {
        "benchmark": "hash_burst", "date": started.isoformat(timespec="seconds"), "cpus": cpus,
        "platform": platform.platform(),
        "versions": {"gatehouse": gatehouse_version, "argon2-cffi": version("argon2-cffi"),
                     "wrk": subprocess.run(["wrk", "-v"], capture_output=True, text=True,
                                           check=False).stdout.split("\n")[0],
                     "python": platform.python_version()},
        "seconds": args.seconds, "log_in_seconds": args.seconds + 2 * LEAD, "runs": args.runs,
        "connections_each": args.connections, "gatehouse_workers": WORKERS, "users": 2 * args.connections,
        "settings": costs, "hash_ms": {"median": round(hash_ms, 2), "samples": [round(t, 2) for t in times]},
        "load_average_at_start": load_at_start, "load_average_at_end": os.getloadavg(),
        "results": {scenario: cell.as_json() for scenario, cell in bench.cells.items()},
        "ratios": {name: round(value, 3) for name, value in found.items()},
    }
    RESULTS.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n")
    print(f"\nwrote {RESULTS.relative_to(Path.cwd()) if RESULTS.is_relative_to(Path.cwd()) else RESULTS}")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        log("interrupted: every server this run started has been stopped")
        sys.exit(130)
