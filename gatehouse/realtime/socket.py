"""``/realtime/v1/websocket``: one client's socket, its frames in and out, and its limits.

The socket needs the project's API key (``?apikey=``, as the clients send it) and a serializer
version (``vsn``: 1.0.0 or 2.0.0). Frames are read one at a time; each is answered or routed to
its channel (:mod:`gatehouse.realtime.channel`). What goes out waits in a bounded queue that one
writer drains: a client that does not read is disconnected when the queue is full, so it can
neither grow memory nor hold up anyone else. A socket that sends nothing (not even the heartbeat
the clients send every 25 s) for ``GATEHOUSE_REALTIME_HEARTBEAT_TIMEOUT`` seconds is closed, and
its channels leave (presence included). Malformed frames get an error reply, never a crash; a
socket that keeps sending them, or more than ``GATEHOUSE_REALTIME_MAX_EVENTS_PER_SECOND``, is
told why and closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from starlette.websockets import WebSocket, WebSocketDisconnect

from gatehouse.core.caller import Unauthenticated, is_browser
from gatehouse.realtime import channel as channels
from gatehouse.realtime.protocol import VERSIONS, VSN_1, Frame, ProtocolError, decode, encode, reply
from gatehouse.services import services
from gatehouse.web.session import ACCESS

if TYPE_CHECKING:
    from gatehouse.realtime.service import Realtime

log = logging.getLogger("gatehouse.realtime")

_STOP = object()
#: WebSocket close codes: policy violation (limits, bad key), and "try again later" (overflow).
_POLICY = 1008
_OVERLOADED = 1013
_MAX_MALFORMED = 20


class Connection:
    def __init__(self, websocket: WebSocket, realtime: Realtime, vsn: str, base_claims: dict[str, Any]) -> None:
        self.websocket = websocket
        self.realtime = realtime
        self.vsn = vsn
        self.base_claims = base_claims
        self.channels: dict[str, channels.Channel] = {}
        settings = realtime.settings
        self._out: asyncio.Queue[object] = asyncio.Queue(maxsize=settings.realtime_max_queued_messages)
        self._rate = float(settings.realtime_max_events_per_second)
        self._allowance = self._rate
        self._checked = time.monotonic()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._close_code: int | None = None
        self.closed = False

    # -- out -------------------------------------------------------------------------------------

    def push(self, frame: Frame) -> None:
        """Queue a frame for the client; a client too slow to take them is disconnected."""
        if self.closed:
            return
        message = encode(frame, self.vsn)
        if message is None:  # a binary broadcast cannot reach a vsn 1.0.0 client
            return
        try:
            self._out.put_nowait(message)
        except asyncio.QueueFull:
            log.warning("realtime: a client is not reading its messages; disconnecting it")
            self.close(_OVERLOADED)

    def close(self, code: int = 1000) -> None:
        if self._close_code is None:
            self._close_code = code
        self.closed = True
        with contextlib.suppress(asyncio.QueueFull):
            self._out.put_nowait(_STOP)
        if self._out.full():  # make room for the stop: what is queued will not be read anyway
            with contextlib.suppress(asyncio.QueueEmpty):
                self._out.get_nowait()
            self._out.put_nowait(_STOP)

    def spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _write(self) -> None:
        while True:
            message = await self._out.get()
            if message is _STOP:
                break
            if isinstance(message, bytes):
                await self.websocket.send_bytes(message)
            else:
                await self.websocket.send_text(str(message))
        with contextlib.suppress(Exception):
            await self.websocket.close(self._close_code or 1000)

    # -- in --------------------------------------------------------------------------------------

    async def run(self) -> None:
        writer = asyncio.create_task(self._write())
        malformed = 0
        timeout = self.realtime.settings.realtime_heartbeat_timeout
        try:
            while not self.closed:
                try:
                    message = await asyncio.wait_for(self.websocket.receive(), timeout)
                except TimeoutError:
                    log.info("realtime: no heartbeat for %s s; closing the socket", timeout)
                    break
                if message["type"] == "websocket.disconnect":
                    break
                raw = message.get("text") if message.get("text") is not None else message.get("bytes")
                if raw is None:
                    continue
                if len(raw) > self.realtime.settings.realtime_max_payload_bytes:
                    self.push(Frame("phoenix", "phx_error", {"reason": "Message too large"}))
                    self.close(_POLICY)
                    break
                try:
                    frame = decode(raw, self.vsn)
                except ProtocolError as error:
                    malformed += 1
                    self.push(Frame("phoenix", "phx_reply", {"status": "error", "response": {"reason": str(error)}}))
                    if malformed > _MAX_MALFORMED:
                        self.close(_POLICY)
                    continue
                if not self._allowed():
                    await self._over_limit(frame)
                    continue
                try:
                    await self._route(frame)
                except Exception:  # a fault of ours: the client is told, the socket goes on
                    log.exception("realtime: handling a %s frame failed", frame.event[:64])
                    self.push(reply(frame, "error", {"reason": "UnknownErrorOnChannel: Unknown Error on Channel"}))
        except WebSocketDisconnect:
            pass
        finally:
            self.closed = True
            for channel in list(self.channels.values()):
                with contextlib.suppress(Exception):
                    await channels.leave(channel, notify=False)
            self.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer, 5)
            writer.cancel()
            for task in list(self._tasks):
                task.cancel()

    def _allowed(self) -> bool:
        """A token bucket: ``realtime_max_events_per_second`` frames a second, bursts as large."""
        now = time.monotonic()
        self._allowance = min(self._rate, self._allowance + (now - self._checked) * self._rate)
        self._checked = now
        if self._allowance < 1:
            return False
        self._allowance -= 1
        return True

    async def _over_limit(self, frame: Frame) -> None:
        """Upstream ends the channel that sent too much; a join over the limit is refused with
        upstream's reason; anything else is answered with an error."""
        channel = self.channels.get(frame.topic)
        if frame.event == "phx_join":
            self.push(reply(frame, "error", {"reason": "ClientJoinRateLimitReached: Too many joins per second"}))
        elif channel is not None:
            await channels.shutdown(channel, "Too many messages per second")
        elif frame.ref is not None:
            self.push(reply(frame, "error", {"reason": "Too many messages per second"}))

    async def _route(self, frame: Frame) -> None:
        if frame.topic == "phoenix":
            if frame.event == "heartbeat":
                self.push(reply(frame, "ok"))
                await channels.check_sessions(self)
            else:
                self.push(reply(frame, "error", {"reason": f"Unexpected message on the phoenix topic: {frame.event[:64]}"}))
            return
        if frame.event == "phx_join":
            await channels.join(self, frame)
            return
        channel = self.channels.get(frame.topic)
        if channel is None:
            if frame.event != "phx_leave":
                self.push(Frame(frame.topic, "phx_error", {"reason": "unmatched topic"}, frame.ref, frame.join_ref))
            else:
                self.push(reply(frame, "ok"))
            return
        await channels.handle(channel, frame)


async def endpoint(websocket: WebSocket) -> None:
    """The WebSocket route. The API key (``?apikey=``) decides the socket's base role, as the
    clients send it; the web app's own pages may instead connect with their session cookie, from
    the site's origin only (a page elsewhere cannot ride the cookie: the browser sends ``Origin``)."""
    realtime = services(websocket).realtime
    params = websocket.query_params
    vsn = params.get("vsn") or VSN_1
    key = params.get("apikey") or websocket.headers.get("apikey")
    base: dict[str, Any] | None = None
    if key:
        granted = realtime.callers.key(key)
        base = {"role": granted[0]} if granted is not None else None
        if granted is not None and granted[1] == "secret" and is_browser(websocket.headers):
            base = None  # a secret key in a web page is readable by anyone using it: refused, as on the APIs
    else:
        base = _page_claims(websocket, realtime)
    if base is None or vsn not in VERSIONS:
        await websocket.close(_POLICY)  # before accept: the upgrade is refused (403)
        return
    await websocket.accept()
    connection = Connection(websocket, realtime, vsn, base)
    await connection.run()


def _page_claims(websocket: WebSocket, realtime: Realtime) -> dict[str, Any] | None:
    """The signed-in claims of one of the web app's pages (its HttpOnly access-token cookie), or None."""
    site = urlsplit(realtime.settings.public_site_url)
    if websocket.headers.get("origin") != f"{site.scheme}://{site.netloc}":
        return None
    token = websocket.cookies.get(ACCESS)
    if not token:
        return None
    try:
        return realtime.callers.token(token).db_claims()
    except Unauthenticated:
        return None  # expired: the page loads /account again (the cookies are refreshed) and reconnects
