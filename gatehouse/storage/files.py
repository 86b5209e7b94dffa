"""Sending a blob from the local disk: a file descriptor straight to the ASGI server.

``LocalFileResponse`` takes a blob the local backend opened (``Backend.open_local``: a few
syscalls, no thread) and sends the bytes ``start``-``end`` of it, then closes the descriptor:

* A server offering ASGI's ``http.response.pathsend`` extension (Granian, for one) gets the
  path of a whole-file response and sends the file itself, no byte passing through Python.
* Up to ``INLINE_LIMIT`` bytes are read in the event loop, in one ``pread``, and go out in one
  body message with the headers. From the page cache a read of that size takes microseconds,
  less than handing it to a worker thread and back.
* Anything larger is read ``CHUNK`` bytes at a time in a worker thread and sent chunk by chunk,
  waiting whenever the client reads slower than the disk: memory stays flat whatever the size
  (bench/big_file.py measures it for 1 GiB). A client that goes away stops the reading.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Coroutine, Mapping
from typing import Any

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from gatehouse.storage.backends.base import BackendError, LocalFile

#: The most bytes read in the event loop (and the largest upload checked there) rather than in a worker thread.
INLINE_LIMIT = 256 * 1024
#: Bytes per read and per body message above ``INLINE_LIMIT``.
CHUNK = 1024 * 1024


class LocalFileResponse(Response):
    def __init__(
        self, file: LocalFile, *, start: int, end: int, status_code: int, headers: Mapping[str, str],
        media_type: str, head: bool = False,
    ) -> None:
        super().__init__(status_code=status_code, headers=headers, media_type=media_type)
        self.file = file
        self.start, self.end = start, end
        self.head = head
        self.headers["content-length"] = str(max(0, end - start + 1))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self._send(scope, receive, send)
        finally:
            os.close(self.file.fd)

    async def _send(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        length = self.end - self.start + 1
        if self.head or length <= 0:
            await send(start)
            await send({"type": "http.response.body", "body": b""})
        elif length == self.file.size and "http.response.pathsend" in scope.get("extensions", {}):
            await send(start)
            await send({"type": "http.response.pathsend", "path": self.file.path})
        elif length <= INLINE_LIMIT:
            data = _read(self.file.fd, length, self.start)
            await send(start)
            await send({"type": "http.response.body", "body": data})
        else:
            await send(start)
            await _until_disconnect(self._stream(send), receive)

    async def _stream(self, send: Send) -> None:
        position, last = self.start, self.end
        while position <= last:
            wanted = min(CHUNK, last + 1 - position)
            data = await asyncio.to_thread(_read, self.file.fd, wanted, position)
            position += len(data)
            await send({"type": "http.response.body", "body": data, "more_body": position <= last})


def _read(fd: int, length: int, offset: int) -> bytes:
    try:
        data = os.pread(fd, length, offset)
    except OSError as exc:
        raise BackendError(f"cannot read an object from the storage folder: {exc.strerror or exc}") from exc
    if len(data) != length:
        raise BackendError("a stored object is shorter than its recorded size")
    return data


async def _until_disconnect(sending: Coroutine[Any, Any, None], receive: Receive) -> None:
    """Run the ``sending`` coroutine; stop it if the client disconnects first."""
    send_task = asyncio.ensure_future(sending)

    async def watch() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    watch_task = asyncio.ensure_future(watch())
    try:
        await asyncio.wait({send_task, watch_task}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (send_task, watch_task):
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    if not send_task.cancelled():
        send_task.result()  # a read error surfaces; a disconnect ends quietly


__all__ = ["CHUNK", "INLINE_LIMIT", "LocalFileResponse"]
