"""A raw realtime socket for the wire tests: frames in and out, as the clients send them (vsn 1.0.0 objects)."""

from __future__ import annotations

import itertools
import time
from typing import Any

import orjson
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.support import RunningServer


class Socket:
    def __init__(self, server: RunningServer, *, key: str | None = None, vsn: str = "1.0.0") -> None:
        url = server.url.replace("http://", "ws://") + "/realtime/v1/websocket"
        self.ws: ClientConnection = connect(f"{url}?apikey={key or server.keys.publishable_key}&vsn={vsn}",
                                            open_timeout=10, max_size=None)
        self._refs = itertools.count(1)
        self.seen: list[dict[str, Any]] = []

    def send(self, topic: str, event: str, payload: dict[str, Any] | None = None, *, join_ref: str | None = None) -> str:
        ref = str(next(self._refs))
        self.ws.send(orjson.dumps({"topic": topic, "event": event, "payload": payload or {}, "ref": ref,
                                   "join_ref": join_ref}).decode())
        return ref

    def raw(self, data: str | bytes) -> None:
        self.ws.send(data)

    def next(self, timeout: float = 10) -> dict[str, Any]:
        frame = orjson.loads(self.ws.recv(timeout=timeout))
        self.seen.append(frame)
        return dict(frame)

    def expect(self, event: str, *, topic: str | None = None, ref: str | None = None, timeout: float = 10) -> dict[str, Any]:
        """The next frame with this event (and topic/ref), skipping others."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"no {event} frame within {timeout} s; saw {self.seen[-5:]}"
            frame = self.next(left)
            if frame["event"] == event and topic in (None, frame["topic"]) and ref in (None, frame["ref"]):
                return frame

    def join(self, topic: str, config: dict[str, Any] | None = None, token: str | None = None) -> dict[str, Any]:
        payload: dict[str, Any] = {"config": {"broadcast": {"self": False, "ack": False}, "presence": {"key": ""},
                                              "private": False, **(config or {})}}
        if token:
            payload["access_token"] = token
        ref = self.send(f"realtime:{topic}", "phx_join", payload, join_ref="j" + topic)
        return self.expect("phx_reply", ref=ref)["payload"]

    def closed(self, timeout: float = 10) -> bool:
        """Whether the server closes the socket within ``timeout`` (frames before that are skipped)."""
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                self.ws.recv(timeout=deadline - time.monotonic())
        except ConnectionClosed:
            return True
        except TimeoutError:
            return False
        return False

    def close(self) -> None:
        self.ws.close()
