"""The tutorial benchmark's results: one table, the ratios, a JSON file and a bar chart.

The ratios are Gatehouse's req/s over each other system's, run by run: run i of a step went
round every system back to back, so each run's ratio saw the same machine; the median and min-max
are of those ratios. With a baseline (``--baseline REV``: Gatehouse at an earlier revision, under
the system "baseline") that is the current code over the baseline; with "quiet" (the same code
without the access log), what logging costs.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.harness import Figures, median_of, table

SYSTEM_LABELS = {
    "gatehouse": "Gatehouse",
    "baseline": "Gatehouse (baseline)",
    "quiet": "Gatehouse, no access log",
    "pocketbase": "PocketBase",
    "ceiling": "ceiling (Starlette)",
    "floor": "floor (asyncpg)",
}
#: The process groups CPU is counted for, in the CPU table's order.
CPU_GROUPS = ("server", "database", "load generator")
COLORS = {"gatehouse": "#2f6fdf", "baseline": "#9dbbef", "quiet": "#6fa0f0", "pocketbase": "#e0922f", "ceiling": "#7a7a7a", "floor": "#3aa35b"}


@dataclass
class Cell:
    """One system on one step: every counted run, and the answers by status over all of them."""

    runs: list[Figures] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    samples: dict[int, str] = field(default_factory=dict)
    #: Per run, the share of the machine's CPU time wrk used (None: no wrk, the floor).
    load_generator: list[float] = field(default_factory=list)
    #: Per run, the share of the machine's CPU time that went to processes not of this benchmark.
    other_work: list[float] = field(default_factory=list)
    #: Per run, microseconds of CPU per answered request by process group: the server, its database
    #: (where it runs apart), the load generator.
    cpu: list[dict[str, float]] = field(default_factory=list)

    def add(self, figures: Figures, statuses: dict[int, int] | None = None, samples: dict[int, str] | None = None,
            load_generator: float | None = None, other_work: float | None = None,
            cpu: dict[str, float] | None = None) -> None:
        self.runs.append(figures)
        if cpu:
            self.cpu.append(cpu)
        if other_work is not None:
            self.other_work.append(other_work)
        if load_generator is not None:
            self.load_generator.append(load_generator)
        for status, count in (statuses or {}).items():
            self.statuses[status] = self.statuses.get(status, 0) + count
        for status, body in (samples or {}).items():
            self.samples.setdefault(status, body)

    @property
    def median(self) -> Figures:
        return median_of(self.runs)[0]

    @property
    def span(self) -> tuple[float, float]:
        return median_of(self.runs)[1]

    @property
    def errors(self) -> int:
        return sum(run.errors for run in self.runs)

    def as_json(self) -> dict[str, Any]:
        middle = self.median
        return {
            "rps": round(middle.rps, 1), "rps_min": round(self.span[0], 1), "rps_max": round(self.span[1], 1),
            "p50_ms": round(middle.p50_ms, 2), "p99_ms": round(middle.p99_ms, 2), "errors": self.errors,
            "runs": [asdict(run) for run in self.runs],
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "error_samples": {str(k): v for k, v in sorted(self.samples.items())},
            "wrk_cpu_share": [round(x, 3) for x in self.load_generator],
            "other_processes_cpu_share": [round(x, 3) for x in self.other_work],
            "cpu_us_per_request": self.cpu_per_request(),
            "cpu_us_per_request_runs": [{k: round(v, 1) for k, v in run.items()} for run in self.cpu],
        }

    def cpu_per_request(self) -> dict[str, float]:
        """Median microseconds of CPU per request by process group, and their total, over the runs."""
        if not self.cpu:
            return {}
        groups = {group for run in self.cpu for group in run}
        found = {group: round(statistics.median(run.get(group, 0.0) for run in self.cpu), 1) for group in CPU_GROUPS
                 if group in groups}
        found["total"] = round(statistics.median(sum(run.values()) for run in self.cpu), 1)
        return found


Results = dict[str, dict[str, Cell]]  # system -> step -> cell


def labels(baseline: str | None = None) -> dict[str, str]:
    """Each system's name in the table and chart; ``baseline`` names the baseline, e.g. gatehouse@main~5."""
    return SYSTEM_LABELS | ({"baseline": baseline} if baseline else {})


#: The systems Gatehouse is compared with, in the order of the ratio table's columns.
COMPARED = ("pocketbase", "ceiling", "floor", "quiet", "baseline")


def paired(ours: Cell, theirs: Cell) -> dict[str, Any] | None:
    """Our req/s over theirs, run by run: the median, min, max and every run's ratio."""
    runs = [a.rps / b.rps for a, b in zip(ours.runs, theirs.runs, strict=False) if b.rps > 0]
    if not runs:
        return None
    return {"median": round(statistics.median(runs), 3), "min": round(min(runs), 3),
            "max": round(max(runs), 3), "runs": [round(r, 3) for r in runs]}


def ratios(results: Results, steps: dict[str, str]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per step and per other system that ran it, Gatehouse's run-by-run ratios (``paired``)."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    ours = results.get("gatehouse", {})
    for step in steps:
        if step not in ours:
            continue
        for other in COMPARED:
            theirs = results.get(other, {}).get(step)
            found = paired(ours[step], theirs) if theirs is not None else None
            if found is not None:
                out.setdefault(step, {})[other] = found
    return out


def render(results: Results, steps: dict[str, str], baseline: str | None = None) -> str:
    rows = [["step", "system", "req/s", "min-max", "p50 ms", "p99 ms", "wrk cpu", "other cpu", "errors"]]
    for step, name in steps.items():
        for system, label in labels(baseline).items():
            cell = results.get(system, {}).get(step)
            if cell is None:
                continue
            m, (low, high) = cell.median, cell.span
            errors = str(cell.errors)
            failing = {s: n for s, n in cell.statuses.items() if s >= 400}
            if failing:
                errors += " (" + ", ".join(f"{n}x{s}" for s, n in sorted(failing.items())) + ")"
            wrk = f"{100 * max(cell.load_generator):.0f}%" if cell.load_generator else "-"
            other = f"{100 * max(cell.other_work):.0f}%" if cell.other_work else "-"
            rows.append([f"({step}) {name}", label, f"{m.rps:,.0f}", f"{low:,.0f}-{high:,.0f}",
                         f"{m.p50_ms:.1f}", f"{m.p99_ms:.1f}", wrk, other, errors])
    text = table(rows) + (
        "\nwrk cpu: the most CPU time the load generator took in a run; other cpu: the most that processes outside"
        "\nthe benchmark took (other work on the machine); both as a share of all cores' time.")
    found = ratios(results, steps)
    columns = [o for o in COMPARED if any(o in by for by in found.values())]
    if found:
        names = labels(baseline)
        ratio_rows = [["step", *(f"Gatehouse / {names[o]}" for o in columns)]]
        for step, by in found.items():
            ratio_rows.append([f"({step}) {steps[step]}"] + [
                f"{by[o]['median']:.2f} ({by[o]['min']:.2f}-{by[o]['max']:.2f})" if o in by else "-" for o in columns])
        text += ("\n\nGatehouse's req/s over each system's, run by run (the runs of a pair back to back; below 1:"
                 "\nGatehouse is slower), median (min-max):\n" + table(ratio_rows))
    cpu_rows = [["step", "system", *(f"{group} µs" for group in CPU_GROUPS), "total µs"]]
    for step, name in steps.items():
        for system, label in labels(baseline).items():
            cell = results.get(system, {}).get(step)
            found = cell.cpu_per_request() if cell is not None else {}
            if found:
                cpu_rows.append([f"({step}) {name}", label, *(f"{found[g]:,.0f}" if g in found else "-" for g in CPU_GROUPS),
                                 f"{found['total']:,.0f}"])
    if len(cpu_rows) > 1:
        text += ("\n\nCPU time per answered request (median of the runs): the server's processes, its database's"
                 "\n(PocketBase's SQLite runs inside its server) and wrk's. With the cores busy, the total bounds"
                 "\nthe rate: 2 cores / total.\n" + table(cpu_rows))
    return text


def write_json(path: Path, results: Results, steps: dict[str, str], meta: dict[str, Any]) -> None:
    document = {
        **meta,
        "steps": steps,
        "results": {system: {step: cell.as_json() for step, cell in by_step.items()}
                    for system, by_step in results.items()},
        "ratios": {step: {f"gatehouse/{other}": pair for other, pair in by.items()}
                   for step, by in ratios(results, steps).items()},
    }
    path.write_text(json.dumps(document, indent=2) + "\n")


def write_chart(path: Path, results: Results, steps: dict[str, str], subtitle: str,
                baseline: str | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = labels(baseline)
    systems = [s for s in names if s in results]
    shown = [step for step in steps if any(step in results[s] for s in systems)]
    width = 0.8 / max(len(systems), 1)
    fig, ax = plt.subplots(figsize=(max(8, 1.6 * len(shown)), 5.5))
    for i, system in enumerate(systems):
        xs, heights, low, high = [], [], [], []
        for x, step in enumerate(shown):
            cell = results[system].get(step)
            if cell is None:
                continue
            m, (a, b) = cell.median.rps, cell.span
            xs.append(x - 0.4 + width * (i + 0.5))
            heights.append(m)
            low.append(m - a)
            high.append(b - m)
        bars = ax.bar(xs, heights, width, yerr=[low, high], capsize=2, label=names[system],
                      color=COLORS[system])
        for bar, value, above in zip(bars, heights, high, strict=True):
            ax.annotate(f"{value:,.0f}", (bar.get_x() + bar.get_width() / 2, value + above), ha="center",
                        va="bottom", fontsize=7, xytext=(0, 2), textcoords="offset points")
    ax.set_yscale("log")
    ax.set_xticks(range(len(shown)), [f"({s}) {steps[s]}" for s in shown], rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("requests per second (median, bars: min-max; log scale)")
    ax.set_title(f"User-management tutorial workload\n{subtitle}", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def load_json(path: Path) -> tuple[Results, dict[str, str], dict[str, Any]]:
    """Results, steps and metadata back from a file ``write_json`` wrote."""
    document = json.loads(path.read_text())
    results: Results = {}
    for system, by_step in document.pop("results").items():
        for step, cell in by_step.items():
            results.setdefault(system, {})[step] = Cell(
                [Figures(**run) for run in cell["runs"]],
                {int(k): v for k, v in cell["statuses"].items()},
                {int(k): v for k, v in cell["error_samples"].items()},
                cell.get("wrk_cpu_share", []), cell.get("other_processes_cpu_share", []),
                cell.get("cpu_us_per_request_runs", []),
            )
    steps = document.pop("steps")
    document.pop("ratios", None)
    document.pop("ratios_to_baseline", None)
    return results, steps, document


def subtitle(meta: dict[str, Any]) -> str:
    return (f"{meta['date'][:10]}, {meta['cpus']} cores shared with wrk, {meta['connections']} connections, "
            f"median of {meta['runs']} runs of {meta['seconds']} s (sign-up, log-in: {2 * meta['seconds']} s)")


def main() -> None:
    """Print the table again and redraw the chart from a results file: python -m bench.report FILE.json"""
    import sys

    path = Path(sys.argv[1])
    results, steps, meta = load_json(path)
    baseline = meta.get("baseline", {}).get("label")
    print(render(results, steps, baseline))
    write_chart(path.with_suffix(".png"), results, steps, subtitle(meta), baseline)


__all__ = ["COMPARED", "Cell", "Results", "labels", "load_json", "paired", "ratios", "render", "subtitle", "write_chart", "write_json"]


if __name__ == "__main__":
    main()
