"""Structured logs: one JSON object per line (or plain text), with request fields when present.

Every record goes through :mod:`logging`, except the access log's one line per answered
request, which is on every request's path: :class:`AccessLog` writes those lines itself, in the
same format and to the same stream as the other records, without a ``LogRecord`` each and with
one write for all the lines a turn of the event loop made. ``configure`` sets it up for
``gatehouse serve``; where it was not set up (an app run in-process, as the tests do), access
lines go through :mod:`logging` like any record.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import sys
import time
from datetime import UTC, datetime
from typing import IO, Any

import orjson

_FIELDS = ("request_id", "method", "path", "status", "duration_ms", "user_id")
TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
ACCESS = "gatehouse.access"

access_log = logging.getLogger(ACCESS)


def _iso(created: float) -> str:
    return datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": _iso(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for name in _FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class AccessLog:
    """The access log's lines, formatted like the other records and written in batches.

    ``write`` appends a line to a buffer; the first line of a turn of the event loop schedules one
    flush at the end of that turn (``call_soon``), so a busy worker makes one write system call
    for many requests, and no line waits longer than the turn that made it. Outside an event loop,
    and at exit, the buffer is written at once. A failed write drops its lines, as
    ``logging.Handler`` does, rather than fail a request.
    """

    def __init__(self, stream: IO[str], fmt: str) -> None:
        self._stream = stream
        self._text = fmt == "text"
        self._text_formatter = logging.Formatter(TEXT_FORMAT)
        self._lines: list[str] = []

    def write(self, method: str, path: str, status: int, duration_ms: float, request_id: str,
              user_id: str | None) -> None:
        created = time.time()
        if self._text:
            record = logging.LogRecord(ACCESS, logging.INFO, __file__, 0, "%s %s %d", (method, path, status), None)
            record.created = created
            line = self._text_formatter.format(record)
        else:
            entry: dict[str, Any] = {
                "time": _iso(created), "level": "info", "logger": ACCESS, "msg": f"{method} {path} {status}",
                "request_id": request_id, "method": method, "path": path, "status": status,
                "duration_ms": duration_ms,
            }
            if user_id is not None:
                entry["user_id"] = user_id
            line = orjson.dumps(entry, default=str).decode()
        first = not self._lines
        self._lines.append(line)
        if first:
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:  # no event loop: nothing would flush later
                self.flush()

    def flush(self) -> None:
        if not self._lines:
            return
        text = "\n".join(self._lines) + "\n"
        self._lines.clear()
        try:
            self._stream.write(text)
            self._stream.flush()
        except (OSError, ValueError):  # a closed or broken stream: the lines are lost, the request is not
            pass


_access: AccessLog | None = None


def flush() -> None:
    """Write the access lines still buffered (at exit, and before the log is set up again)."""
    if _access is not None:
        _access.flush()


atexit.register(flush)


def access(method: str, path: str, status: int, duration_ms: float, request_id: str, user_id: str | None) -> None:
    """Log one answered request at ``info`` (on the ``gatehouse.access`` logger)."""
    if _access is not None:
        _access.write(method, path, status, duration_ms, request_id, user_id)
    elif access_log.isEnabledFor(logging.INFO):  # the record is built only when it is written
        access_log.info("%s %s %d", method, path, status, extra={
            "request_id": request_id, "method": method, "path": path, "status": status,
            "duration_ms": duration_ms, "user_id": user_id,
        })


def configure(level: str = "info", fmt: str = "json") -> None:
    global _access
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("uvicorn.access", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    flush()
    _access = AccessLog(sys.stderr, fmt) if access_log.isEnabledFor(logging.INFO) else None
