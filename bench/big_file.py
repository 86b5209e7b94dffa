"""Big files: a 1 GiB upload and download through /storage/v1 stream, so Gatehouse's memory stays flat.

One Gatehouse (``gatehouse serve --workers 1`` on a fresh embedded PostgreSQL, its file size cap
raised above the file's size) gets a private bucket ``big`` (made through the bucket API with the
secret key, no size limit, any type) and, through a user migration, one policy: a signed-in user
reads and writes objects under ``<their id>/`` in it. One confirmed user then, with httpx and the
user's access token, as a Supabase client would:

    upload raw      POST /storage/v1/object/big/UID/big.bin        the file as the body, streamed from
                    disk (application/octet-stream, x-upsert: true, Content-Length set)
    upload form     POST /storage/v1/object/big/UID/big-form.bin   the same bytes as multipart/form-data
                    (httpx ``files=`` with the open file, as supabase-py sends it; with --multipart)
    download        GET  /storage/v1/object/big/UID/big.bin        streamed, every byte hashed (SHA-256)
    download range  GET  the same with Range: bytes=500000000-500999999 (a middle MiB for small files)

Each upload's answer is checked against the object's info (size, and ETag = the MD5 of the bytes),
the download against the file's SHA-256, the range against those bytes of the file. The file is
random bytes (``--size-mb`` MiB, default 1024), written in 1 MiB chunks to a temporary folder.
Before measuring, a 1 MiB file goes through every step once, so first-request costs (imports,
connections) are in the baseline rather than counted as growth.

Memory: bench/load.py's sampler, 0.1 s after each sample (a sample itself takes some 0.1 s on a
busy machine), sums the RSS of Gatehouse's processes (the ``gatehouse serve`` process and its
children, PostgreSQL's excluded) and, separately, PostgreSQL's; this process's own RSS is sampled
with them, and every phase ends with one more sample. The baseline is the peak over 1 s idle
before the first big upload; each phase reports its peak and its growth over that baseline. The
verdict is "flat" if no phase grows Gatehouse's RSS by ``--flat-mib`` (default 64) MiB or more:
a server that held the body in memory would grow by the file's size. Speeds (MiB/s) are noisy on a
shared machine; the memory figures are the point.

    python -m bench.big_file [--size-mb 1024] [--multipart] [--flat-mib 64]

Prints a table and writes bench/results/big_file.json; the exit status is 1 if a check failed or
the memory was not flat.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil  # type: ignore[import-untyped]

from bench.harness import Server, confirmed_user, gatehouse, stop_on_sigterm, table
from bench.load import MemorySampler, log_tail

MIB = 1024 * 1024
CHUNK = MIB
BUCKET = "big"
RESULTS = Path(__file__).parent / "results" / "big_file.json"
#: The range the brief of this benchmark names: 1,000,000 bytes from byte 500,000,000.
RANGE_START, RANGE_LENGTH = 500_000_000, 1_000_000
#: A new bucket has no policy, so users could do nothing in it: this one lets a signed-in user
#: read and write objects in their own folder (``<user id>/...``), as Supabase's examples do.
POLICY = f"""
CREATE POLICY "bench: users own their folder in {BUCKET}" ON storage.objects
    FOR ALL TO authenticated
    USING (bucket_id = '{BUCKET}' AND (storage.foldername(name))[1] = (SELECT auth.uid())::text)
    WITH CHECK (bucket_id = '{BUCKET}' AND (storage.foldername(name))[1] = (SELECT auth.uid())::text);
"""
WARNING = re.compile(r'"level":\s*"(warning|error|critical)"')  # server log lines worth keeping
TIMEOUT = httpx.Timeout(60.0, read=900.0)  # an upload's answer waits for the server's fsync of the whole file


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class CheckFailed(Exception):
    """An answer that is not what it should be (the message has the request, status and body)."""


def failed(response: httpx.Response, problem: str) -> CheckFailed:
    request = response.request
    try:
        body = response.text[:500]
    except httpx.ResponseNotRead:
        body = "(streamed, not kept)"
    return CheckFailed(f"{request.method} {request.url.path} (Range: {request.headers.get('range', '-')}) -> "
                       f"{response.status_code}: {problem}; body: {body!r}")


class PhaseSampler(MemorySampler):
    """bench/load.py's sampler (Gatehouse's and PostgreSQL's processes), plus this client's own RSS."""

    def __init__(self, server: psutil.Process, data_dir: Path, interval: float = 0.1) -> None:
        super().__init__(server, data_dir, interval)
        self.client = psutil.Process()
        self.client_peak = 0

    def sample(self) -> None:
        super().sample()
        self.client_peak = max(self.client_peak, self.client.memory_info().rss)


@dataclass
class Phase:
    name: str
    seconds: float
    bytes: int
    gatehouse_rss_mib: float  # peaks over the phase
    gatehouse_pss_mib: float
    postgres_rss_mib: float
    client_rss_mib: float
    samples: int
    growth_mib: float = 0.0  # Gatehouse's peak RSS over the baseline

    @property
    def mib_per_s(self) -> float:
        return self.bytes / MIB / self.seconds if self.seconds else 0.0


@dataclass
class Bytes:
    """A file on disk and what its bytes should hash to."""

    path: Path
    size: int
    sha256: str
    md5: str


def make_file(path: Path, size: int) -> Bytes:
    """``size`` random bytes written in 1 MiB chunks (never all in memory), hashed on the way."""
    sha, md5 = hashlib.sha256(), hashlib.md5()
    with path.open("wb") as out:
        left = size
        while left:
            chunk = os.urandom(min(CHUNK, left))
            sha.update(chunk)
            md5.update(chunk)
            out.write(chunk)
            left -= len(chunk)
    return Bytes(path, size, sha.hexdigest(), md5.hexdigest())


def read_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as source:
        while chunk := source.read(CHUNK):
            yield chunk


class Storage:
    """The user's calls to /storage/v1, each checked; every body streams in both directions."""

    def __init__(self, client: httpx.Client, server: Server, session: dict[str, Any]) -> None:
        self.client = client
        self.uid = str(session["user"]["id"])
        self.auth = {"apikey": server.publishable_key, "Authorization": f"Bearer {session['access_token']}"}

    def path(self, name: str) -> str:
        return f"/storage/v1/object/{BUCKET}/{self.uid}/{name}"

    def upload_raw(self, name: str, file: Bytes) -> None:
        answer = self.client.post(self.path(name), content=read_chunks(file.path), headers={
            **self.auth, "Content-Type": "application/octet-stream", "Content-Length": str(file.size),
            "x-upsert": "true"})
        self._check_stored(answer, name, file)

    def upload_form(self, name: str, file: Bytes) -> None:
        with file.path.open("rb") as source:  # httpx reads an open file in chunks as it sends the form
            answer = self.client.post(self.path(name), data={"cacheControl": "3600"},
                                      files={"file": (name, source, "application/octet-stream")},
                                      headers={**self.auth, "x-upsert": "true"})
        self._check_stored(answer, name, file)

    def _check_stored(self, answer: httpx.Response, name: str, file: Bytes) -> None:
        if answer.status_code != 200:
            raise failed(answer, "the upload was refused")
        if answer.json().get("Key") != f"{BUCKET}/{self.uid}/{name}":
            raise failed(answer, "the answer does not name the object")
        info = self.client.get(f"/storage/v1/object/info/{BUCKET}/{self.uid}/{name}", headers=self.auth)
        if info.status_code != 200:
            raise failed(info, "no info for the uploaded object")
        stored = info.json()
        if stored.get("size") != file.size or stored.get("etag") != f'"{file.md5}"':
            raise failed(info, f"stored {stored.get('size')} bytes with ETag {stored.get('etag')}, "
                               f"sent {file.size} bytes with MD5 {file.md5}")

    def download(self, name: str, file: Bytes) -> None:
        sha, size = hashlib.sha256(), 0
        with self.client.stream("GET", self.path(name), headers=self.auth) as answer:
            if answer.status_code != 200:
                answer.read()
                raise failed(answer, "the download was refused")
            for chunk in answer.iter_bytes():
                sha.update(chunk)
                size += len(chunk)
        if size != file.size or sha.hexdigest() != file.sha256:
            raise failed(answer, f"got {size} bytes with SHA-256 {sha.hexdigest()}, "
                                 f"uploaded {file.size} bytes with SHA-256 {file.sha256}")

    def download_range(self, name: str, file: Bytes, start: int, length: int) -> None:
        end = start + length - 1
        with self.client.stream("GET", self.path(name), headers={**self.auth, "Range": f"bytes={start}-{end}"}) as answer:
            got = answer.read()
        if answer.status_code != 206 or answer.headers.get("content-range") != f"bytes {start}-{end}/{file.size}":
            raise failed(answer, f"expected 206 with Content-Range bytes {start}-{end}/{file.size}, "
                                 f"got Content-Range {answer.headers.get('content-range')}")
        with file.path.open("rb") as source:
            source.seek(start)
            expected = source.read(length)
        if got != expected:
            raise failed(answer, f"{len(got)} bytes that differ from bytes {start}-{end} of the file")


def range_for(size: int) -> tuple[int, int]:
    """The benchmark's range if the file holds it, else a range as long (at most) in its middle."""
    if size >= RANGE_START + RANGE_LENGTH:
        return RANGE_START, RANGE_LENGTH
    length = min(RANGE_LENGTH, size)
    return (size - length) // 2, length


@contextmanager
def measured(phases: list[Phase], name: str, size: int, server: psutil.Process, data_dir: Path) -> Iterator[None]:
    """Sample memory while the block runs; append the phase (time, bytes moved, peaks) to ``phases``."""
    sampler = PhaseSampler(server, data_dir)
    sampler.start()
    started = time.perf_counter()
    try:
        yield
    finally:
        elapsed = time.perf_counter() - started
        sampler.stop()
        sampler.sample()  # and once at the end: a short phase may fall between two samples
    peak = sampler.peak
    phases.append(Phase(name, round(elapsed, 3), size, round(peak["gatehouse_rss"] / MIB, 1),
                        round(peak["gatehouse_pss"] / MIB, 1), round(peak["postgres_rss"] / MIB, 1),
                        round(sampler.client_peak / MIB, 1), sampler.samples))
    log(f"{name}: {elapsed:.1f} s, Gatehouse peak RSS {peak['gatehouse_rss'] / MIB:.1f} MiB")


def run(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    size = args.size_mb * MIB
    migrations = folder / "migrations"
    migrations.mkdir()
    (migrations / "0001_big_file_bench.sql").write_text(POLICY)
    limit = str(max(size, MIB) + MIB)  # multipart bodies carry a little more than the file
    phases: list[Phase] = []
    result: dict[str, Any] = {
        "benchmark": "big_file", "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "size_bytes": size, "multipart": args.multipart, "flat_mib": args.flat_mib, "sample_interval_s": 0.1,
        "load_average_1min_before": round(os.getloadavg()[0], 2),
    }
    with gatehouse(workers=1, GATEHOUSE_MAILER_AUTOCONFIRM="true", GATEHOUSE_STORAGE_MAX_FILE_SIZE=limit,
                   GATEHOUSE_MIGRATIONS_DIR=str(migrations)) as server:
        process, log_file = psutil.Process(server.process.pid), server.data_dir.parent / "server.log"
        try:
            secret = {"apikey": server.secret_key, "Authorization": f"Bearer {server.secret_key}"}
            made = httpx.post(f"{server.url}/storage/v1/bucket", headers=secret, json={
                "id": BUCKET, "name": BUCKET, "public": False, "file_size_limit": None})
            if made.status_code != 200:
                raise failed(made, "cannot create the bucket")
            session = confirmed_user(server, "big-file@example.com")
            with httpx.Client(base_url=server.url, timeout=TIMEOUT) as client:
                storage = Storage(client, server, session)

                log("warm-up: a 1 MiB file through every step")
                small = make_file(folder / "small.bin", MIB)
                storage.upload_raw("small.bin", small)
                storage.upload_form("small-form.bin", small)
                storage.download("small.bin", small)
                storage.download_range("small.bin", small, *range_for(small.size))

                log(f"writing {args.size_mb} MiB of random bytes to {folder}")
                big = make_file(folder / "big.bin", size)
                result["sha256"] = big.sha256
                start, length = range_for(size)
                result["range"] = f"bytes={start}-{start + length - 1}"

                with measured(phases, "idle (baseline)", 0, process, server.data_dir):
                    time.sleep(1)
                with measured(phases, "upload raw body", size, process, server.data_dir):
                    storage.upload_raw("big.bin", big)
                if args.multipart:
                    with measured(phases, "upload multipart", size, process, server.data_dir):
                        storage.upload_form("big-form.bin", big)
                with measured(phases, "download", size, process, server.data_dir):
                    storage.download("big.bin", big)
                with measured(phases, f"download range ({length:,} B)", length, process, server.data_dir):
                    storage.download_range("big.bin", big, start, length)
        except (CheckFailed, httpx.HTTPError) as error:
            result["error"] = f"{type(error).__name__}: {error}"
            result["server_log_tail"] = log_tail(log_file).splitlines()
        result["server_log"] = [line for line in log_file.read_text(errors="replace").splitlines()
                                if WARNING.search(line)][:50]

    baseline = phases[0].gatehouse_rss_mib if phases else 0.0
    for phase in phases:
        phase.growth_mib = round(phase.gatehouse_rss_mib - baseline, 1)
    growth = max((p.growth_mib for p in phases), default=0.0)
    result |= {
        "phases": [asdict(p) | {"mib_per_s": round(p.mib_per_s, 1)} for p in phases],
        "baseline_gatehouse_rss_mib": baseline, "max_growth_mib": growth,
        "verdict": "flat" if phases and "error" not in result and growth < args.flat_mib else "not flat",
        "load_average_1min_after": round(os.getloadavg()[0], 2),
    }
    return result


def report(result: dict[str, Any]) -> str:
    rows = [["phase", "seconds", "MiB/s", "Gatehouse peak RSS MiB", "growth MiB", "client peak RSS MiB", "samples"]]
    for phase in result["phases"]:
        moved = phase["bytes"] > 0
        rows.append([phase["name"], f"{phase['seconds']:.2f}", f"{phase['mib_per_s']:.0f}" if moved else "-",
                     f"{phase['gatehouse_rss_mib']:.1f}", f"{phase['growth_mib']:+.1f}", f"{phase['client_rss_mib']:.1f}",
                     str(phase["samples"])])
    title = (f"Big file: {result['size_bytes'] / MIB:.0f} MiB through /storage/v1 (Gatehouse, 1 worker; "
             f"memory sampled 0.1 s apart; 1-min load average {result['load_average_1min_before']} before, "
             f"{result['load_average_1min_after']} after)")
    lines = [title, "", table(rows), ""]
    if "error" in result:
        lines += [f"FAILED: {result['error']}", "", *result["server_log_tail"], ""]
    lines.append(f"verdict: {result['verdict']} (Gatehouse's RSS grew at most {result['max_growth_mib']:+.1f} MiB "
                 f"over its {result['baseline_gatehouse_rss_mib']:.1f} MiB baseline for a "
                 f"{result['size_bytes'] / MIB:.0f} MiB file; flat means under {result['flat_mib']} MiB)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=1024, help="file size in MiB (default 1024)")
    parser.add_argument("--multipart", action="store_true", help="also upload the file as a multipart form")
    parser.add_argument("--flat-mib", type=float, default=64, help="growth that is not flat any more (default 64 MiB)")
    parser.add_argument("--output", type=Path, default=RESULTS, help=f"JSON results (default {RESULTS})")
    args = parser.parse_args(argv)
    if args.size_mb < 1:
        parser.error("--size-mb must be at least 1")
    stop_on_sigterm()
    folder = Path(tempfile.mkdtemp(prefix="big-file-bench-"))
    try:
        result = run(args, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(report(result))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.output}")
    sys.exit(0 if result["verdict"] == "flat" else 1)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        log("interrupted: the server this run started has been stopped and its files removed")
        sys.exit(130)
