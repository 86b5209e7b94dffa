"""The access log's own writer: same fields and format as a logged record, one write per loop turn."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import pty
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import httpx
import orjson
import pytest

from gatehouse.core import logs
from gatehouse.core.embedded import free_port
from tests.support import gatehouse_command

#: A text line: local time to the millisecond, the level padded to 7, the logger, two spaces, the message.
TEXT_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} [A-Z]+ +[\w.]+  \S.*")

class CountingStream(io.StringIO):
    """A text stream that counts its writes (each would be one system call on a real file)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logs._access = None


def test_a_line_has_the_fields_a_logged_record_has() -> None:
    stream = CountingStream()
    writer = logs.AccessLog(stream, "json")
    writer.write("GET", "/rest/v1/profiles", 200, 1.25, "req-1", "5f0c6a6e-1111-2222-3333-444455556666")
    writer.write("POST", "/auth/v1/token", 400, 3.5, "req-2", None)  # outside a loop: written at once

    first, second = (orjson.loads(line) for line in stream.getvalue().splitlines())
    record = logging.LogRecord(logs.ACCESS, logging.INFO, __file__, 0, "%s %s %d", ("GET", "/rest/v1/profiles", 200),
                               None)
    for name, value in {"request_id": "req-1", "method": "GET", "path": "/rest/v1/profiles", "status": 200,
                        "duration_ms": 1.25, "user_id": "5f0c6a6e-1111-2222-3333-444455556666"}.items():
        setattr(record, name, value)
    record.created = datetime.fromisoformat(first["time"]).timestamp()
    assert first == orjson.loads(logs.JSONFormatter().format(record))
    assert list(first) == ["time", "level", "logger", "msg", "request_id", "method", "path", "status",
                           "duration_ms", "user_id"]
    assert second["msg"] == "POST /auth/v1/token 400"
    assert "user_id" not in second


def test_the_lines_of_one_loop_turn_are_one_write() -> None:
    stream = CountingStream()
    writer = logs.AccessLog(stream, "json")

    async def requests() -> int:
        for n in range(50):
            writer.write("GET", f"/rest/v1/t{n}", 200, 0.5, f"req-{n}", None)
        written_meanwhile = stream.writes
        await asyncio.sleep(0)  # the turn ends: the flush runs
        return written_meanwhile

    assert asyncio.run(requests()) == 0
    assert stream.writes == 1
    assert [orjson.loads(line)["request_id"] for line in stream.getvalue().splitlines()] == [f"req-{n}"
                                                                                           for n in range(50)]


def test_text_format_matches_the_other_records() -> None:
    stream = CountingStream()
    logs.AccessLog(stream, "text").write("GET", "/account", 303, 2.04, "req-1", "5f0c6a6e-1111-2222-3333-444455556666")
    line = stream.getvalue().rstrip("\n")
    assert TEXT_LINE.fullmatch(line), line
    assert line.endswith("INFO    gatehouse.access  GET /account 303 2.0 ms user=5f0c6a6e-1111-2222-3333-444455556666")
    record = logging.LogRecord(logs.ACCESS, logging.INFO, __file__, 0, "%s %s %d", ("GET", "/account", 303), None)
    for name, value in {"request_id": "req-1", "method": "GET", "path": "/account", "status": 303,
                        "duration_ms": 2.04, "user_id": "5f0c6a6e-1111-2222-3333-444455556666"}.items():
        setattr(record, name, value)
    assert logs.TextFormatter().format(record)[23:] == line[23:]  # the same line, but for the time


def test_a_text_line_has_time_level_logger_message_and_fields() -> None:
    record = logging.LogRecord("gatehouse.mail", logging.WARNING, __file__, 0, "refused by %s", ("smtp",), None)
    record.request_id = "req-7"
    record.user_id = "u-1"
    line = logs.TextFormatter().format(record)
    assert TEXT_LINE.fullmatch(line), line
    assert line[23:] == " WARNING gatehouse.mail  refused by smtp request_id=req-7 user=u-1"
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record.exc_info = sys.exc_info()
    first, *rest = logs.TextFormatter().format(record).splitlines()
    assert first == line and rest[0] == "Traceback (most recent call last):" and rest[-1] == "ValueError: boom"


def test_auto_is_text_on_a_terminal_and_json_elsewhere() -> None:
    primary, secondary = pty.openpty()
    with os.fdopen(secondary, "w") as terminal:
        assert logs.resolve("auto", terminal) == "text"
        assert logs.resolve("json", terminal) == "json"  # GATEHOUSE_LOG_FORMAT wins
    os.close(primary)
    assert logs.resolve("auto", io.StringIO()) == "json"
    assert logs.resolve("text", io.StringIO()) == "text"
    closed = io.StringIO()
    closed.close()
    assert logs.resolve("auto", closed) == "json"


def test_a_broken_stream_loses_lines_not_requests() -> None:
    stream = CountingStream()
    stream.close()
    logs.AccessLog(stream, "json").write("GET", "/", 200, 1.0, "req-1", None)  # no exception


def test_configure_uses_the_writer_only_when_access_lines_are_wanted(restore_logging: None) -> None:
    assert logs.configure("info", "json") == "json"
    assert isinstance(logs._access, logs.AccessLog)
    logs.configure("warning", "json")
    assert logs._access is None


def test_without_configure_the_line_goes_through_logging(
    restore_logging: None, caplog: pytest.LogCaptureFixture
) -> None:
    logs._access = None
    with caplog.at_level(logging.INFO, logger=logs.ACCESS):
        logs.access("GET", "/auth/v1/health", 200, 0.7, "req-9", None)
    (record,) = caplog.records
    assert record.getMessage() == "GET /auth/v1/health 200"
    assert record.request_id == "req-9"  # type: ignore[attr-defined]


# -- gatehouse serve, as a person at a terminal and as a service manager see it ------------------------------------


def _serve(data_dir: Path, keys_dir: Path, database_url: str, port: int, *, out: int, err: int,
           workers: int) -> subprocess.Popen[bytes]:
    """``gatehouse serve`` with GATEHOUSE_LOG_FORMAT unset (so ``auto``), its output where asked."""
    data_dir.mkdir()
    shutil.copy(keys_dir / "keys.json", data_dir / "keys.json")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEHOUSE_")} | {
        "GATEHOUSE_DATABASE_URL": database_url, "GATEHOUSE_LOG_LEVEL": "info"}
    command = gatehouse_command("serve", "--port", str(port), "--data-dir", str(data_dir), "--workers", str(workers))
    return subprocess.Popen(command, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL)


def _served(url: str, process: subprocess.Popen[bytes], output: Callable[[], str]) -> None:
    """Wait until the server answers, then make two requests that the access log must show."""
    deadline = time.monotonic() + 60
    while True:
        assert process.poll() is None and time.monotonic() < deadline, output()
        try:
            if httpx.get(f"{url}/auth/v1/health", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.1)
    httpx.get(f"{url}/rest/v1/no_such_table", timeout=5)  # no apikey: a 401, logged like any answer
    while "/rest/v1/no_such_table" not in output():  # lines are flushed at the end of the loop's turn
        assert time.monotonic() < deadline, output()
        time.sleep(0.05)


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def test_on_a_terminal_every_process_writes_one_line_of_text_per_event(
    tmp_path: Path, keys_dir: Path, database_url: str
) -> None:
    primary, secondary = pty.openpty()
    chunks: list[bytes] = []

    def read() -> None:
        while True:
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # EIO: every process holding the terminal has exited
                return
            if not chunk:
                return
            chunks.append(chunk)

    port = free_port()
    process = _serve(tmp_path / "data", keys_dir, database_url, port, out=secondary, err=secondary, workers=2)
    os.close(secondary)
    reader = threading.Thread(target=read, daemon=True)
    reader.start()

    def output() -> str:
        return b"".join(chunks).decode(errors="replace").replace("\r\n", "\n")

    try:
        _served(f"http://127.0.0.1:{port}", process, output)
    finally:
        _stop(process)
        reader.join(10)
        os.close(primary)
    text = output()
    banner_end = text.index("  Storage ")
    log_lines = [line for line in text[banner_end:].splitlines()[1:] if line.strip()]
    assert log_lines, text
    for line in log_lines:
        assert not line.startswith("{"), line
        assert TEXT_LINE.fullmatch(line), line
    starts = [line for line in log_lines if "uvicorn.error  Started server process" in line]
    assert len(starts) == 2  # both workers chose text, as the parent did
    access = [line for line in log_lines if " gatehouse.access  " in line]
    assert any(re.search(r" INFO    gatehouse\.access  GET /auth/v1/health 200 \d+\.\d ms$", line) for line in access)
    assert any(re.search(r"  GET /rest/v1/no_such_table 401 \d+\.\d ms$", line) for line in access), access


def test_elsewhere_every_line_is_json(tmp_path: Path, keys_dir: Path, database_url: str) -> None:
    port = free_port()
    (tmp_path / "logs").mkdir()
    out_path, err_path = tmp_path / "logs" / "out", tmp_path / "logs" / "err"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        process = _serve(tmp_path / "data", keys_dir, database_url, port, out=out.fileno(), err=err.fileno(),
                         workers=1)
        try:
            _served(f"http://127.0.0.1:{port}", process, lambda: err_path.read_text(errors="replace"))
        finally:
            _stop(process)
    records = [orjson.loads(line) for line in err_path.read_text().splitlines()]
    assert any(r["logger"] == logs.ACCESS and r["path"] == "/auth/v1/health" and r["status"] == 200 for r in records)
    assert "  Database         external PostgreSQL at " in out_path.read_text()  # the banner goes to stdout
