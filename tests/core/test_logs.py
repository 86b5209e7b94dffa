"""The access log's own writer: same fields and format as a logged record, one write per loop turn."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Iterator

import orjson
import pytest

from gatehouse.core import logs


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
    record.created = logs.datetime.fromisoformat(first["time"]).timestamp()
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
    logs.AccessLog(stream, "text").write("GET", "/account", 303, 2.0, "req-1", None)
    assert stream.getvalue().rstrip().endswith("INFO    gatehouse.access: GET /account 303")


def test_a_broken_stream_loses_lines_not_requests() -> None:
    stream = CountingStream()
    stream.close()
    logs.AccessLog(stream, "json").write("GET", "/", 200, 1.0, "req-1", None)  # no exception


def test_configure_uses_the_writer_only_when_access_lines_are_wanted(restore_logging: None) -> None:
    logs.configure("info", "json")
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
