"""The production recipe under load, with faults, and with 1, 2, 3 processes (a benchmark, not a test).

    python -m bench.cluster [--users 8] [--phase-seconds 20]        faults on one timeline
    python -m bench.cluster --scale 1,2,3 [--users 16] [--seconds 30]  throughput against processes

Both start the real components (``bench/cluster_setup.py``: Debian's PostgreSQL 15 set up by
bootstrap.sql, SeaweedFS's S3 gateway, Gatehouse production processes, HAProxy with
``deploy/haproxy/haproxy.cfg`` and TLS, an SMTP sink for the confirmation mail) in a temporary
folder, and K virtual users (``bench/cluster_load.py``) who run ``bench.load``'s tutorial flow over
https through HAProxy, each flow as a new person: sign up, confirmation mail, confirm, log in,
profile upsert and read, avatar upload and download, the web log-in and /account, refresh. Their
retries are stated in ``bench/cluster_load.py``: failed attempts are counted apart from the errors
the users finally saw.

Faults (the default) run as phases on one timeline, each a ``Phase`` with an optional ``Fault``
(``start``, then ``hold`` seconds, then ``stop``): baseline, kill -9 of one Gatehouse process (and
its restart), SeaweedFS stopped for 10 s (and restarted on its ports and data folder), the read
replica's replay paused for 10 s (the processes read from a streaming replica in this mode, so
read-your-writes and the lag bound are under test: the ``read`` step checks it reads back the
profile just written), recovery.
Per phase: completed flows, requests, first-try errors and errors seen after retries (by step and
status or exception), p50/p99 per step. Then the after-check: every acknowledged sign-up has its
user, every acknowledged profile write its value, every acknowledged upload its row and its bytes
in SeaweedFS; every object row has its bytes (bytes without a row are garbage for the janitor,
reported apart, not loss). Any lost acknowledged write, or row without bytes, exits 1.

Scaling (``--scale``) runs the same fault-free load with each number of processes (a warm-up,
then ``--seconds`` measured) and reports flows/s, requests/s, p99 and the CPU seconds per request
of Gatehouse, PostgreSQL, HAProxy, SeaweedFS and the load generator (``bench.machine.CPUSplit``
over each component's process tree; the load generator is this process), and the machine's busy
share: near 100%, the cores are the ceiling.

Results: bench/results/cluster-faults.{json,md}, bench/results/cluster-scale.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import itertools
import json
import os
import platform
import secrets
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import psutil  # type: ignore[import-untyped]

from bench.cluster_load import RETRY, RETRY_STATUSES, Recorder, run_users
from bench.cluster_setup import Cluster, own_cpu_seconds
from bench.harness import percentile, stop_on_sigterm
from bench.load import STEPS, avatar_png
from bench.machine import CPUSplit, Meter
from tests.support import fetch_rows

RESULTS = Path(__file__).parent / "results"


# -- faults and phases --------------------------------------------------------------------------------


class Fault(Protocol):
    """Something that goes wrong at ``start`` and is put right at ``stop``, ``hold`` seconds later."""

    name: str
    hold: float

    def start(self) -> None: ...

    def stop(self) -> None: ...


@dataclass
class KillProcess:
    """``kill -9`` of one Gatehouse process; ``stop`` starts it again on its port (HAProxy's health
    check takes it back once it answers /health/ready twice)."""

    cluster: Cluster
    index: int = 1
    hold: float = 5.0
    name: str = "kill -9 one Gatehouse process"

    def start(self) -> None:
        self.cluster.kill(self.index)

    def stop(self) -> None:
        self.cluster.restart(self.index)


@dataclass
class StopSeaweed:
    """SeaweedFS stopped at once (SIGKILL) for ``hold`` seconds, then started on the same ports and data
    folder. (A SIGTERM would first keep its S3 gateway up for 10 s without a volume server: uploads then
    wait for it rather than fail.)"""

    cluster: Cluster
    hold: float = 10.0
    name: str = "SeaweedFS stopped"

    def start(self) -> None:
        assert self.cluster.seaweed is not None
        self.cluster.seaweed.kill()

    def stop(self) -> None:
        assert self.cluster.seaweed is not None
        self.cluster.seaweed.start()  # returns once its S3 gateway answers


@dataclass
class ReplicaLags:
    """The read replica stops replaying the primary's WAL for ``hold`` seconds (it still receives
    it): callers who wrote must read from the primary, the others from the replica until it lags
    past GATEHOUSE_DATABASE_READ_MAX_LAG (5 s), then from the primary too."""

    cluster: Cluster
    hold: float = 10.0
    name: str = "replica replay paused"

    def start(self) -> None:
        assert self.cluster.replica is not None
        self.cluster.replica.pause_replay()

    def stop(self) -> None:
        assert self.cluster.replica is not None
        self.cluster.replica.resume_replay()


@dataclass
class Phase:
    name: str
    seconds: float  # the phase lasts this long, or until its fault is put right if that takes longer
    fault: Fault | None = None


@dataclass
class PhaseRecord:
    name: str
    started: float
    ended: float
    fault: str | None = None
    fault_started: float | None = None
    fault_stopped: float | None = None  # when the fault's stop returned (the component answering again)
    other_cpu_share: float = 0.0  # CPU of processes not this benchmark's, as a share of the machine (bench.machine)


def fault_phases(cluster: Cluster, seconds: float, outage: float = 10.0) -> list[Phase]:
    """The default timeline; a new fault is one more ``Phase`` here."""
    return [
        Phase("baseline", seconds),
        Phase("kill -9", seconds, KillProcess(cluster, index=1, hold=5.0)),
        Phase("SeaweedFS stopped", seconds + outage, StopSeaweed(cluster, hold=outage)),
        Phase("replica lags", seconds, ReplicaLags(cluster, hold=outage)),
        Phase("recovery", seconds),
    ]


def run_timeline(phases: list[Phase], recorder: Recorder) -> list[PhaseRecord]:
    """Each phase in turn (in a thread beside the virtual users); stops the users at the end."""
    records: list[PhaseRecord] = []
    try:
        for phase in phases:
            record = PhaseRecord(phase.name, time.perf_counter(), 0.0)
            meter = Meter()
            meter.start()
            print(f"{time.strftime('%H:%M:%S')} phase: {phase.name}", flush=True)
            if phase.fault is not None:
                record.fault, record.fault_started = phase.fault.name, time.perf_counter()
                phase.fault.start()
                time.sleep(phase.fault.hold)
                phase.fault.stop()
                record.fault_stopped = time.perf_counter()
            time.sleep(max(0.0, record.started + phase.seconds - time.perf_counter()))
            record.ended = time.perf_counter()
            record.other_cpu_share = round(meter.other_share(), 3)
            records.append(record)
    finally:
        recorder.stopping = True
    return records


def drive(cluster: Cluster, users: int, recorder: Recorder, timeline: Callable[[], Any]) -> Any:
    """Run the virtual users against the cluster while ``timeline`` runs in a thread; its result."""
    assert cluster.proxy is not None and cluster.mailbox is not None and cluster.keys is not None
    url, key, mailbox, context = cluster.proxy.url, cluster.keys.publishable_key, cluster.mailbox, cluster.proxy.context()
    png = avatar_png()

    async def both() -> Any:
        load = asyncio.create_task(run_users(url, key, users, png, recorder, mailbox, context, secrets.token_hex(3)))
        try:
            return await asyncio.to_thread(timeline)
        finally:
            recorder.stopping = True
            await load

    return asyncio.run(both())


# -- figures -------------------------------------------------------------------------------------------


def ms(values: list[float], fraction: float) -> float | None:
    return round(percentile(values, fraction) * 1000, 1) if values else None


def window(recorder: Recorder, started: float, ended: float) -> dict[str, Any]:
    """What happened between ``started`` and ``ended``: attempts, steps and flows by when they ended
    (an error belongs to the moment it came back)."""
    seconds = ended - started
    attempts = [a for a in recorder.attempts if started <= a.started + a.seconds < ended]
    steps = [s for s in recorder.steps if started <= s.started + s.seconds < ended]
    flows = [f for f in recorder.flows if started <= f[1] < ended]
    completed = sum(1 for f in flows if f[2])
    first_try = Counter(f"{a.step} {a.outcome}" for a in attempts if a.number == 1 and a.outcome != "ok")
    seen = Counter(f"{s.step} {s.outcome}" for s in steps if s.outcome != "ok")
    per_step = {}
    for name in STEPS:
        ok = [s.seconds for s in steps if s.step == name and s.outcome == "ok"]
        if ok or any(s.step == name for s in steps):
            per_step[name] = {"ok": len(ok), "p50_ms": ms(ok, 0.5), "p99_ms": ms(ok, 0.99),
                              "seen_errors": sum(1 for s in steps if s.step == name and s.outcome != "ok")}
    return {
        "seconds": round(seconds, 1), "completed_flows": completed, "broken_flows": len(flows) - completed,
        "flows_per_s": round(completed / seconds, 2) if seconds else None,
        "requests": len(attempts), "requests_per_s": round(len(attempts) / seconds, 1) if seconds else None,
        "retries": sum(1 for a in attempts if a.number > 1),
        "first_try_errors": sum(first_try.values()), "first_try_errors_by_kind": dict(first_try.most_common()),
        "seen_errors": sum(seen.values()), "seen_errors_by_kind": dict(seen.most_common()),
        "steps": per_step,
    }


# -- the after-check -----------------------------------------------------------------------------------


def after_check(cluster: Cluster, recorder: Recorder) -> dict[str, Any]:
    """Every acknowledged write, looked for in PostgreSQL and SeaweedFS; every object row's bytes."""
    assert cluster.seaweed is not None
    db = cluster.database_url
    users = {r["email"]: r["id"] for r in fetch_rows(
        db, "SELECT id::text AS id, email FROM auth.users WHERE email = ANY($1::text[])", list(recorder.signups))}
    lost_signups = sorted(e for e, uid in recorder.signups.items() if users.get(e) != uid)
    profiles = {r["id"]: r["username"] for r in fetch_rows(
        db, "SELECT id::text AS id, username FROM public.profiles WHERE id = ANY($1::uuid[])", list(recorder.profiles))}
    lost_profiles = sorted(uid for uid, name in recorder.profiles.items() if profiles.get(uid) != name)

    rows = {f"{r['bucket_id']}/{r['name']}": f"{r['bucket_id']}/{r['version']}" for r in fetch_rows(
        db, "SELECT bucket_id, name, version::text AS version FROM storage.objects")}
    admin = cluster.seaweed.client()
    stored: dict[str, int] = {}
    try:
        for page in admin.get_paginator("list_objects_v2").paginate(Bucket=cluster.bucket):
            stored |= {item["Key"]: int(item["Size"]) for item in page.get("Contents", [])}
    finally:
        admin.close()
    lost_uploads = sorted(name for name, size in recorder.uploads.items()
                          if name not in rows or stored.get(rows[name]) != size)
    rows_without_bytes = sorted(name for name, key in rows.items() if key not in stored)
    referenced = set(rows.values())
    garbage = sorted(key for key in stored if key not in referenced)
    lost = len(lost_signups) + len(lost_profiles) + len(lost_uploads)
    return {
        "acknowledged": {"signups": len(recorder.signups), "profile_writes": len(recorder.profiles),
                         "uploads": len(recorder.uploads)},
        "object_rows": len(rows), "s3_objects": len(stored),
        "lost_signups": lost_signups[:20], "lost_profile_writes": lost_profiles[:20], "lost_uploads": lost_uploads[:20],
        "rows_without_bytes": rows_without_bytes[:20], "rows_without_bytes_count": len(rows_without_bytes),
        "garbage_bytes_without_row": len(garbage),
        "lost_acknowledged_writes": lost,
        "ok": lost == 0 and not rows_without_bytes,
    }


# -- the two runs --------------------------------------------------------------------------------------


def faults(args: argparse.Namespace) -> dict[str, Any]:
    cluster = Cluster(keep=args.keep)
    try:
        cluster.start_backends(replica=True).start_gatehouse(3)
        recorder = Recorder()
        phases = fault_phases(cluster, args.phase_seconds, args.outage)
        began = time.perf_counter()
        records: list[PhaseRecord] = drive(cluster, args.users, recorder, lambda: run_timeline(phases, recorder))
        check = after_check(cluster, recorder)
        logs = server_problems(cluster)
    finally:
        cluster.stop()
    result = {
        "date": now(), "machine": machine(), "processes": 3, "users": args.users,
        "retries": {"backoff_s": list(RETRY), "on": ["transport errors", *map(str, sorted(RETRY_STATUSES))]},
        "phases": [{
            "name": r.name, "from_s": round(r.started - began, 1), "to_s": round(r.ended - began, 1), "fault": r.fault,
            "fault_s": None if r.fault_started is None or r.fault_stopped is None
            else round(r.fault_stopped - r.fault_started, 1), "other_cpu_share": r.other_cpu_share,
            **window(recorder, r.started, r.ended)} for r in records],
        "error_samples": recorder.samples, "unexpected": recorder.stats.messages,
        "after_check": check, "server_5xx_and_errors": logs,
    }
    return result


def server_problems(cluster: Cluster) -> dict[str, int]:
    """How many log lines of each Gatehouse process were errors, or answers of 500."""
    found: dict[str, int] = {}
    for index, server in enumerate(cluster.servers):
        try:
            lines = server.log().splitlines()
        except OSError:
            continue
        found[f"gatehouse{index} status 500"] = sum(1 for line in lines if '"status":500' in line)
        found[f"gatehouse{index} level error"] = sum(1 for line in lines if '"level":"error"' in line)
    return found


def busy_seconds() -> float:
    times = psutil.cpu_times()
    return float(times.user + times.nice + times.system + getattr(times, "irq", 0) + getattr(times, "softirq", 0))


def scale(args: argparse.Namespace) -> dict[str, Any]:
    runs = []
    cluster = Cluster(keep=args.keep)
    try:
        cluster.start_backends()
        # Round 2 goes back down (1,2,3 then 3,2,1): a machine busier at one end weighs on every count alike.
        order = [n for r in range(args.rounds) for n in (args.scale if r % 2 == 0 else args.scale[::-1])]
        for processes in order:
            cluster.start_gatehouse(processes)
            recorder = Recorder()
            measured: dict[str, Any] = {}

            def timeline(measured: dict[str, Any] = measured, recorder: Recorder = recorder) -> None:
                try:
                    time.sleep(args.warmup)
                    split = CPUSplit(cluster.cpu_groups())
                    split.start()
                    own, busy = own_cpu_seconds(), busy_seconds()
                    measured["started"] = time.perf_counter()
                    time.sleep(args.seconds)
                    measured["ended"] = time.perf_counter()
                    measured["cpu"] = {**split.seconds(), "load generator": own_cpu_seconds() - own}
                    measured["busy"] = busy_seconds() - busy
                finally:
                    recorder.stopping = True

            print(f"{time.strftime('%H:%M:%S')} {processes} process(es): {args.warmup} s warm-up, {args.seconds} s measured",
                  flush=True)
            drive(cluster, args.users, recorder, timeline)
            figures = window(recorder, measured["started"], measured["ended"])
            elapsed = measured["ended"] - measured["started"]
            cpu = measured["cpu"]
            other = max(0.0, measured["busy"] - sum(cpu.values()))
            requests = max(1, figures["requests"])
            flows = max(1, figures["completed_flows"])
            runs.append({
                "processes": processes, **figures,
                "p99_ms_all_steps": ms([s.seconds for s in recorder.steps
                                        if s.outcome == "ok" and measured["started"] <= s.started + s.seconds < measured["ended"]
                                        and s.step != "inbox"], 0.99),
                "cpu_s": {k: round(v, 2) for k, v in cpu.items()} | {"other processes": round(other, 2)},
                "cpu_ms_per_request": {k: round(v / requests * 1000, 2) for k, v in cpu.items()},
                "cpu_ms_per_flow": {k: round(v / flows * 1000, 1) for k, v in cpu.items()},
                "machine_busy_share": round(measured["busy"] / (elapsed * (os.cpu_count() or 1)), 3),
                "other_cpu_share": round(other / (elapsed * (os.cpu_count() or 1)), 3),
            })
            cluster.stop_gatehouse()
    finally:
        cluster.stop()
    summary = summarise(runs, args.scale)
    return {"date": now(), "machine": machine(), "users": args.users, "warmup_s": args.warmup,
            "seconds": args.seconds, "rounds": args.rounds, "runs": runs, "summary": summary,
            "verdict": scaling_verdict(summary)}


def summarise(runs: list[dict[str, Any]], counts: list[int]) -> list[dict[str, Any]]:
    """Per number of processes, the mean over its rounds."""
    out = []
    for processes in counts:
        mine = [r for r in runs if r["processes"] == processes]
        components = list(mine[0]["cpu_ms_per_request"])

        def mean(get: Callable[[dict[str, Any]], float], runs: list[dict[str, Any]] = mine) -> float:
            return sum(get(r) for r in runs) / len(runs)

        out.append({
            "processes": processes, "rounds": len(mine),
            "flows_per_s": round(mean(lambda r: r["flows_per_s"]), 2),
            "flows_per_s_runs": [r["flows_per_s"] for r in mine],
            "requests_per_s": round(mean(lambda r: r["requests_per_s"]), 1),
            "p99_ms_all_steps": round(mean(lambda r: r["p99_ms_all_steps"] or 0.0), 1),
            "seen_errors": sum(r["seen_errors"] for r in mine),
            "machine_busy_share": round(mean(lambda r: r["machine_busy_share"]), 3),
            "other_cpu_share": round(mean(lambda r: r["other_cpu_share"]), 3),
            "cpu_ms_per_request": {c: round(sum(r["cpu_ms_per_request"][c] for r in mine) / len(mine), 2)
                                   for c in components},
            "cpu_ms_per_flow": {c: round(sum(r["cpu_ms_per_flow"][c] for r in mine) / len(mine), 1) for c in components},
        })
    return out


def scaling_verdict(summary: list[dict[str, Any]]) -> dict[str, Any]:
    """Whether more processes ever gave less throughput (beyond 5%, the noise of one run here)."""
    lower = [f"{b['processes']} < {a['processes']}" for a, b in itertools.pairwise(summary)
             if b["flows_per_s"] < a["flows_per_s"] * 0.95]
    return {"more_processes_never_lower": not lower, "lower": lower, "tolerance": 0.05}


def now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
            "load_average_1min": round(os.getloadavg()[0], 2)}


# -- reports -------------------------------------------------------------------------------------------


def md_table(rows: list[list[str]]) -> str:
    head, *body = rows
    return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head),
                      *("| " + " | ".join(row) + " |" for row in body)])


def kinds(found: dict[str, int]) -> str:
    return ", ".join(f"{k} ×{n}" for k, n in found.items()) or "-"


def faults_md(result: dict[str, Any]) -> str:
    phases = result["phases"]
    lines = [
        f"# Cluster under faults ({result['date']})", "",
        (f"`python -m bench.cluster --users {result['users']}`: 3 Gatehouse processes behind HAProxy (TLS), Debian "
        f"PostgreSQL 15, SeaweedFS; {result['users']} virtual users running the tutorial flow over https; "
        f"{result['machine']['cpus']} cores. Retries: transport errors and {', '.join(result['retries']['on'][1:])}, "
        f"after {' s, then '.join(map(str, result['retries']['backoff_s']))} s."), "",
        md_table([["phase", "seconds", "fault (s)", "other CPU", "flows done", "broken flows", "requests",
                   "first-try errors", "errors users saw"]] + [
            [p["name"], str(p["seconds"]), f"{p['fault']} ({p['fault_s']})" if p["fault"] else "-",
             f"{p['other_cpu_share']:.0%}",
             str(p["completed_flows"]), str(p["broken_flows"]), str(p["requests"]),
             f"{p['first_try_errors']}: {kinds(p['first_try_errors_by_kind'])}",
             f"{p['seen_errors']}: {kinds(p['seen_errors_by_kind'])}"] for p in phases]),
        "", "p50 / p99 per step, ms (successful steps, retries included):", "",
        md_table([["step", *(p["name"] for p in phases)]] + [
            [step, *(f"{p['steps'][step]['p50_ms']} / {p['steps'][step]['p99_ms']}" if step in p["steps"] else "-"
                     for p in phases)] for step in STEPS if any(step in p["steps"] for p in phases)]),
    ]
    check = result["after_check"]
    acked = check["acknowledged"]
    lines += ["", "## After-check", "",
              (f"- acknowledged: {acked['signups']} sign-ups, {acked['profile_writes']} profile writes, "
              f"{acked['uploads']} uploads; {check['object_rows']} object rows, {check['s3_objects']} objects in S3"),
              (f"- **lost acknowledged writes: {check['lost_acknowledged_writes']}** "
              f"(sign-ups {len(check['lost_signups'])}, profile writes {len(check['lost_profile_writes'])}, "
              f"uploads {len(check['lost_uploads'])})"),
              f"- object rows without their bytes: {check['rows_without_bytes_count']}",
              f"- bytes without a row (garbage awaiting the janitor, not loss): {check['garbage_bytes_without_row']}",
              f"- Gatehouse log: {kinds(result['server_5xx_and_errors'])}"]
    return "\n".join(lines) + "\n"


def scale_md(result: dict[str, Any]) -> str:
    runs = result["summary"]
    components = list(runs[0]["cpu_ms_per_request"]) if runs else []
    lines = [
        f"# Throughput against Gatehouse processes ({result['date']})", "",
        (f"`python -m bench.cluster --scale {','.join(str(r['processes']) for r in runs)} --users {result['users']} "
        f"--seconds {result['seconds']}`: the tutorial flow over https through HAProxy, no faults, "
        f"{result['machine']['cpus']} cores; {result['warmup_s']} s warm-up, then {result['seconds']} s measured; "
        f"{result['rounds']} rounds (up, then down), means."), "",
        md_table([["processes", "flows/s (each round)", "requests/s", "p99 ms (all steps)", "errors users saw",
                   "machine busy", "other processes", *(f"CPU ms/request {c}" for c in components)]] + [
            [str(r["processes"]), f"{r['flows_per_s']} ({', '.join(map(str, r['flows_per_s_runs']))})",
             str(r["requests_per_s"]), str(r["p99_ms_all_steps"]),
             str(r["seen_errors"]), f"{r['machine_busy_share']:.0%}", f"{r['other_cpu_share']:.0%}",
             *(str(r["cpu_ms_per_request"][c]) for c in components)] for r in runs]),
        "", "CPU ms per completed flow:", "",
        md_table([["processes", *components]] + [[str(r["processes"]), *(str(r["cpu_ms_per_flow"][c]) for c in components)]
                                                for r in runs]),
        "", f"More processes never lower throughput (5% tolerance): **{result['verdict']['more_processes_never_lower']}**"
            + (f" (lower: {', '.join(result['verdict']['lower'])})" if result["verdict"]["lower"] else ""),
    ]
    return "\n".join(lines) + "\n"


def write(name: str, result: dict[str, Any], text: str, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
    (folder / f"{name}.md").write_text(text)
    print(text)
    print(f"wrote {folder / name}.json and .md")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, help="virtual users (default 8 with faults, 16 with --scale)")
    parser.add_argument("--phase-seconds", type=float, default=20, help="length of each phase (default 20)")
    parser.add_argument("--outage", type=float, default=10, help="seconds SeaweedFS stays stopped (default 10)")
    parser.add_argument("--scale", type=lambda v: [int(n) for n in v.split(",")], help="e.g. 1,2,3: processes per run")
    parser.add_argument("--seconds", type=float, default=30, help="with --scale: seconds measured per run (default 30)")
    parser.add_argument("--warmup", type=float, default=5, help="with --scale: seconds before measuring (default 5)")
    parser.add_argument("--rounds", type=int, default=2, help="with --scale: rounds, alternately up and down (default 2)")
    parser.add_argument("--output", type=Path, default=RESULTS, help=f"results folder (default {RESULTS})")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, data)")
    args = parser.parse_args(argv)
    stop_on_sigterm()
    if args.scale:
        args.users = args.users or 16
        result = scale(args)
        write("cluster-scale", result, scale_md(result), args.output)
        return 0
    args.users = args.users or 8
    result = faults(args)
    write("cluster-faults", result, faults_md(result), args.output)
    if not result["after_check"]["ok"]:
        print("LOST acknowledged writes, or object rows without their bytes: see the after-check", file=sys.stderr)
        return 1
    return 0


__all__ = ["Fault", "KillProcess", "Phase", "PhaseRecord", "StopSeaweed", "after_check", "drive", "fault_phases",
           "run_timeline", "window"]

if __name__ == "__main__":
    sys.exit(main())
