"""Logs: one JSON object per line for machines, or one line of text per event for people.

``auto`` (the default) picks text when standard error is a terminal and JSON otherwise
(``resolve``); ``gatehouse serve`` resolves it once and hands the result to its workers, so every
process of one server writes the same format.

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
from typing import IO, Any, Literal

import orjson

_FIELDS = ("request_id", "method", "path", "status", "duration_ms", "user_id")
#: Fields an access line's text already says ("GET /path 200 0.7 ms"); other records show theirs as name=value.
_ACCESS_FIELDS = frozenset({"method", "path", "status", "duration_ms", "request_id"})
ACCESS = "gatehouse.access"

access_log = logging.getLogger(ACCESS)

Format = Literal["json", "text"]


def resolve(fmt: str, stream: IO[str] | None = None) -> Format:
    """``json`` or ``text`` for a setting of ``auto``, ``json`` or ``text``: ``auto`` is text when
    ``stream`` (standard error) is a terminal, JSON otherwise (a file, a pipe, a journal)."""
    if fmt in ("json", "text"):
        return "text" if fmt == "text" else "json"
    stream = sys.stderr if stream is None else stream
    try:
        return "text" if stream.isatty() else "json"
    except (AttributeError, ValueError, OSError):  # no stream, or a closed one
        return "json"


def _iso(created: float) -> str:
    return datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")


def _clock(created: float) -> str:
    """Local time to the millisecond, as a person reading a terminal expects it."""
    return datetime.fromtimestamp(created).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _access_text(method: str, path: str, status: int, duration_ms: float, user_id: str | None) -> str:
    line = f"{method} {path} {status} {duration_ms:.1f} ms"
    return f"{line} user={user_id}" if user_id else line


def _text_line(created: float, level: str, logger: str, message: str) -> str:
    return f"{_clock(created)} {level:<7} {logger}  {message}"


class TextFormatter(logging.Formatter):
    """One line per event: local time, level, logger, message, then the record's fields as
    ``name=value`` (an access record reads ``GET /path 200 0.7 ms``); a traceback follows on its own lines."""

    def format(self, record: logging.LogRecord) -> str:
        status = getattr(record, "status", None)
        if record.name == ACCESS and isinstance(status, int):
            message = _access_text(str(getattr(record, "method", "")), str(getattr(record, "path", "")), status,
                                   float(getattr(record, "duration_ms", 0.0)), getattr(record, "user_id", None))
        else:
            message = record.getMessage()
            fields = [f"{name}={value}" for name in _FIELDS
                      if (value := getattr(record, name, None)) is not None and name != "user_id"]
            user_id = getattr(record, "user_id", None)
            if user_id is not None:
                fields.append(f"user={user_id}")
            if fields:
                message = f"{message} " + " ".join(fields)
        line = _text_line(record.created, record.levelname, record.name, message)
        if record.exc_info:
            line = f"{line}\n{self.formatException(record.exc_info)}"
        if record.stack_info:
            line = f"{line}\n{self.formatStack(record.stack_info)}"
        return line


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
        self._lines: list[str] = []

    def write(self, method: str, path: str, status: int, duration_ms: float, request_id: str,
              user_id: str | None) -> None:
        created = time.time()
        if self._text:
            line = _text_line(created, "INFO", ACCESS, _access_text(method, path, status, duration_ms, user_id))
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


def configure(level: str = "info", fmt: str = "auto") -> Format:
    """Send every record to standard error in ``fmt`` (``auto`` resolved by ``resolve``); returns the format used."""
    global _access
    chosen = resolve(fmt)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter() if chosen == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("uvicorn.access", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    flush()
    _access = AccessLog(sys.stderr, chosen) if access_log.isEnabledFor(logging.INFO) else None
    return chosen
