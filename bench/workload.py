"""What wrk sends for one step: requests written as a Lua data file for ``bench/lua/tutorial.lua``.

A step is a list of requests sent round robin (one per user, say), with ``{n}`` for a value
unique to each request and ``{rt}`` for a rotating token (see the Lua script). Big bodies (the
avatar) are files read once by each wrk thread, named in ``blobs`` and referred to by number in
a body's parts, so the data file stays small.
"""

from __future__ import annotations

import re
import resource
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from bench.harness import Figures, wrk_script

SCRIPT = Path(__file__).parent / "lua" / "tutorial.lua"


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    #: Text, or parts: text and 1-based indexes into the workload's blobs.
    body: str | list[str | int] = ""


@dataclass
class Workload:
    requests: list[Request]
    blobs: list[Path] = field(default_factory=list)
    #: Tokens for ``{rt}``; with ``capture``, each answer's token (a Lua pattern) is used next.
    tokens: list[str] = field(default_factory=list)
    capture: str | None = None
    #: Count answers by status (and keep error samples); off for big downloads, to spare wrk.
    want_response: bool = True

    def lua(self) -> str:
        lines = ["return {"]
        lines.append(f"  want_response = {'true' if self.want_response or self.capture else 'false'},")
        if self.capture:
            lines.append(f"  capture = {lua_string(self.capture)},")
        lines.append("  blobs = {" + ", ".join(lua_string(str(p)) for p in self.blobs) + "},")
        lines.append("  tokens = {" + ", ".join(lua_string(t) for t in self.tokens) + "},")
        lines.append("  requests = {")
        for r in self.requests:
            headers = ", ".join(f"[{lua_string(k)}] = {lua_string(v)}" for k, v in r.headers.items())
            parts = [r.body] if isinstance(r.body, str) else r.body
            body = ", ".join(str(p) if isinstance(p, int) else lua_string(p) for p in parts if p != "")
            lines.append(f"    {{method = {lua_string(r.method)}, path = {lua_string(r.path)}, "
                         f"headers = {{{headers}}}, body = {{{body}}}}},")
        lines.append("  },")
        lines.append("}")
        return "\n".join(lines) + "\n"


def lua_string(value: str | bytes) -> str:
    """A Lua string literal for any bytes: printable ASCII as is, the rest as decimal escapes."""
    data = value.encode() if isinstance(value, str) else value
    out = []
    for byte in data:
        if 0x20 <= byte < 0x7F and byte not in (0x22, 0x5C):
            out.append(chr(byte))
        else:
            out.append(f"\\{byte:03d}")
    return '"' + "".join(out) + '"'


@dataclass
class Outcome:
    figures: Figures
    statuses: dict[int, int]
    samples: dict[int, str]
    #: CPU seconds wrk itself used (user + system): the load generator's share of the machine.
    wrk_cpu_seconds: float


def run(base_url: str, workload: Workload, folder: Path, *, connections: int, seconds: int,
        threads: int = 2) -> Outcome:
    """One wrk run of ``workload`` against ``base_url``."""
    spec = folder / f"spec-{secrets.token_hex(4)}.lua"
    spec.write_text(workload.lua())
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        figures, report = wrk_script(base_url, SCRIPT, [str(spec), str(threads), secrets.token_hex(4)],
                                     connections=connections, seconds=seconds, threads=threads)
    finally:
        spec.unlink(missing_ok=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    statuses = {int(s): int(n) for s, n in re.findall(r"^STATUS (\d+) (\d+)$", report, re.MULTILINE)}
    samples = {int(s): body for s, body in re.findall(r"^SAMPLE (\d+) (.*)$", report, re.MULTILINE)}
    return Outcome(figures, statuses, samples, cpu)


__all__ = ["Outcome", "Request", "Workload", "lua_string", "run"]
