"""Where Gatehouse's CPU goes on one tutorial step: py-spy on every worker while wrk drives it.

Starts Gatehouse (2 workers, fresh embedded PostgreSQL, as bench/tutorial.py does), makes the
step's users, then runs wrk on the step while ``py-spy record`` samples the server and its
workers. Prints the functions with the most samples on CPU, by own time (the frame itself) and by
total time (the frame and what it called); writes the raw stacks under bench/results/ for
flame-graph tools (``profile-<step>.txt``, one ``stack count`` line each).

    python -m bench.profile --step c [--seconds 10] [--connections 32] [--rate 250] [--top 25]
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import workload
from bench.harness import gatehouse, table
from bench.steps import STEPS, GatehouseSteps, avatar_png

RESULTS = Path(__file__).parent / "results"


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(found).exists():
        raise SystemExit("py-spy is not installed: pip install -e '.[bench]'")
    return found


def summarize(stacks: dict[str, int], top: int) -> tuple[list[list[str]], list[list[str]], int]:
    """Own-time and total-time tables (share of all samples) from collapsed stacks."""
    total = sum(stacks.values())
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    for stack, count in stacks.items():
        frames = stack.split(";")
        own[_short(frames[-1])] += count
        for frame in {_short(f) for f in frames}:
            inclusive[frame] += count

    def rows(counter: collections.Counter[str]) -> list[list[str]]:
        return [[f"{100 * n / total:5.1f}%", frame] for frame, n in counter.most_common(top)]

    return rows(own), rows(inclusive), total


def _short(frame: str) -> str:
    """``func (path/to/site-packages/pkg/mod.py:12)`` -> ``func (pkg/mod.py)``: lines merged."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "/lib/python3", "/work/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{name} ({path})" if path else name


def read_collapsed(path: Path) -> dict[str, int]:
    stacks: dict[str, int] = {}
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks[stack] = stacks.get(stack, 0) + int(count)
    return stacks


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--step", default="c", choices=[s for s in STEPS if s in "abcdefgh"])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second (default 250)")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--native", action="store_true", help="sample C frames too (extensions, the interpreter)")
    parser.add_argument("--gil", action="store_true",
                        help="only threads holding the GIL: Python's own CPU, without threads waiting for it")
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="profile-bench-"))
    RESULTS.mkdir(exist_ok=True)
    raw = RESULTS / f"profile-{args.step}.txt"
    try:
        avatar = avatar_png(folder / "avatar.png")
        with gatehouse(workers=2, GATEHOUSE_MAILER_AUTOCONFIRM="true") as server:
            steps = GatehouseSteps(server, avatar, users=2 * args.connections)
            steps.setup()
            spec = steps.workload(args.step)
            workload.run(server.url, spec, folder, connections=args.connections, seconds=1)  # warm-up
            spec = steps.workload(args.step)
            spy = subprocess.Popen(
                [py_spy(), "record", "--pid", str(server.process.pid), "--subprocesses", *([] if args.native else ["--nonblocking"]),
                 "--rate", str(args.rate), "--duration", str(args.seconds + 1), "--format", "raw",
                 "--output", str(raw), *(["--native"] if args.native else []), *(["--gil"] if args.gil else [])],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            )
            time.sleep(1)  # py-spy attaches
            outcome = workload.run(server.url, spec, folder, connections=args.connections, seconds=args.seconds)
            _, err = spy.communicate(timeout=60)
            if spy.returncode != 0 or not raw.exists():
                raise SystemExit(f"py-spy failed: {err.decode(errors='replace')[-2000:]}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    f = outcome.figures
    print(f"({args.step}) {STEPS[args.step]}: {f.rps:,.0f} req/s, p50 {f.p50_ms:.1f} ms, p99 {f.p99_ms:.1f} ms, "
          f"errors {f.errors} (under py-spy at {args.rate} Hz: slower than unprofiled)")
    own, inclusive, total = summarize(read_collapsed(raw), args.top)
    print(f"\n{total:,} samples on CPU in the server's processes\n\nown time")
    print(table([["share", "function"], *own]))
    print("\ntotal time (the function and what it called)")
    print(table([["share", "function"], *inclusive]))
    print(f"\nraw stacks: {raw}")


if __name__ == "__main__":
    main()
