"""How much of the machine other work took while a run was measured.

Every figure here depends on having the cores to ourselves. ``Meter`` tells how much CPU time
went to processes that are not this benchmark's: the machine's busy time (``/proc/stat``) less
the time of this process's tree (the servers, wrk once reaped, the floor's tasks) and of the
embedded PostgreSQL the benchmark started (found by its data folder), children reaped included.
A run with a large share of other work is worth repeating on a quiet machine.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

#: Our embedded PostgreSQL runs detached from this tree; its command line names the bench folder.
OURS_MARKER = "gatehouse-bench-"


def _busy_ticks() -> int:
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system = (int(x) for x in fields[:3])
    return user + nice + system


def _processes() -> dict[int, tuple[int, int, str]]:
    """pid -> (ppid, CPU ticks including reaped children, command line)."""
    found: dict[int, tuple[int, int, str]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
            cmdline = Path(entry.path, "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        rest = stat[stat.rindex(")") + 2:].split()
        ticks = sum(int(x) for x in rest[11:15])  # utime stime cutime cstime
        found[int(entry.name)] = (int(rest[1]), ticks, cmdline)
    return found


def _our_ticks() -> int:
    processes = _processes()
    roots = {os.getpid()} | {pid for pid, (_, _, cmd) in processes.items() if OURS_MARKER in cmd}
    return _tree_ticks(processes, roots)


def _tree_ticks(processes: dict[int, tuple[int, int, str]], roots: set[int]) -> int:
    """CPU ticks of ``roots`` and all their descendants (reaped children included)."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in processes.items():
        children.setdefault(ppid, []).append(pid)
    seen: set[int] = set()
    stack = list(roots)
    while stack:
        pid = stack.pop()
        if pid in seen or pid not in processes:
            continue
        seen.add(pid)
        stack += children.get(pid, [])
    return sum(processes[pid][1] for pid in seen)


@dataclass
class Meter:
    started: float = 0.0
    busy: int = 0
    ours: int = 0

    def start(self) -> None:
        self.started, self.busy, self.ours = time.monotonic(), _busy_ticks(), _our_ticks()

    def other_share(self) -> float:
        """Since ``start``: other processes' CPU time as a share of all cores' time (0 to 1)."""
        elapsed = time.monotonic() - self.started
        other = (_busy_ticks() - self.busy) - (_our_ticks() - self.ours)
        share = other / os.sysconf("SC_CLK_TCK") / (elapsed * (os.cpu_count() or 1))
        return min(max(share, 0.0), 1.0)


def postmaster_pid(data_dir: Path) -> int | None:
    """The embedded PostgreSQL's postmaster under a Gatehouse data folder, if it runs."""
    pid_file = data_dir / "postgres" / "postmaster.pid"
    try:
        return int(pid_file.read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None


@dataclass
class CPUSplit:
    """CPU seconds of named process trees between ``start`` and ``seconds``: who paid for a run.

    ``groups`` maps a name (``server``, ``database``) to the root pids of its trees (the trees do
    not overlap: the embedded PostgreSQL runs detached from the server that started it).
    """

    groups: dict[str, set[int]]
    before: dict[str, int] = field(default_factory=dict)

    def _now(self) -> dict[str, int]:
        processes = _processes()
        return {name: _tree_ticks(processes, roots) for name, roots in self.groups.items()}

    def start(self) -> None:
        self.before = self._now()

    def seconds(self) -> dict[str, float]:
        tick = os.sysconf("SC_CLK_TCK")
        return {name: (ticks - self.before.get(name, 0)) / tick for name, ticks in self._now().items()}


__all__ = ["CPUSplit", "Meter", "postmaster_pid"]
