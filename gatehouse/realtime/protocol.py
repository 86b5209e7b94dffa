"""Phoenix channel frames, as Supabase's clients speak them over ``/realtime/v1/websocket``.

Two serializers, chosen by the socket's ``vsn`` query parameter:

- ``1.0.0`` (realtime-py): each frame is a JSON object ``{topic, event, payload, ref, join_ref}``.
- ``2.0.0`` (supabase-js): each frame is a JSON array ``[join_ref, ref, topic, event, payload]``;
  a client's broadcast may instead come as a binary frame (kind 3, "user broadcast push": lengths,
  then join_ref, ref, topic, the user's event, allowed metadata and the payload, JSON or raw
  bytes), and the server may send a broadcast with a binary payload as kind 4.

Pure functions: no I/O. Anything malformed is a :class:`ProtocolError` with a sentence to reply.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import orjson

VSN_1 = "1.0.0"
VSN_2 = "2.0.0"
VERSIONS = (VSN_1, VSN_2)

_PUSH = 3  # client -> server: user broadcast push
_BROADCAST = 4  # server -> client: user broadcast
_JSON_ENCODING = 1
_BINARY_ENCODING = 0
#: The metadata keys a binary push may carry (what realtime-js sends; the rest is dropped).
_METADATA_KEYS = frozenset({"persist"})


class ProtocolError(Exception):
    """A frame that cannot be read; the message says why."""


@dataclass(frozen=True, slots=True)
class Frame:
    topic: str
    event: str
    payload: Any
    ref: str | None = None
    join_ref: str | None = None


@dataclass(frozen=True, slots=True)
class BinaryPayload:
    """A broadcast whose user payload is raw bytes (sent on as a kind 4 frame to vsn 2.0.0 clients)."""

    event: str
    data: bytes


def _ref(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str | int) and not isinstance(value, bool):
        return str(value)
    raise ProtocolError("ref and join_ref must be strings")


def _frame(topic: Any, event: Any, payload: Any, ref: Any, join_ref: Any) -> Frame:
    if not isinstance(topic, str) or not topic:
        raise ProtocolError("a frame needs a topic (a string)")
    if not isinstance(event, str) or not event:
        raise ProtocolError("a frame needs an event (a string)")
    if payload is None:
        payload = {}
    if not isinstance(payload, dict):
        raise ProtocolError("a frame's payload must be a JSON object")
    return Frame(topic, event, payload, _ref(ref), _ref(join_ref))


def decode(message: str | bytes, vsn: str) -> Frame:
    """One frame from the client; raises :class:`ProtocolError`."""
    if isinstance(message, bytes):
        if vsn != VSN_2:
            raise ProtocolError("binary frames need vsn 2.0.0")
        return _decode_push(message)
    try:
        data = orjson.loads(message)
    except orjson.JSONDecodeError:
        raise ProtocolError("the frame is not JSON") from None
    if vsn == VSN_2:
        if not isinstance(data, list) or len(data) != 5:
            raise ProtocolError("a vsn 2.0.0 frame is a JSON array [join_ref, ref, topic, event, payload]")
        join_ref, ref, topic, event, payload = data
        return _frame(topic, event, payload, ref, join_ref)
    if not isinstance(data, dict):
        raise ProtocolError("a vsn 1.0.0 frame is a JSON object {topic, event, payload, ref}")
    return _frame(data.get("topic"), data.get("event"), data.get("payload"), data.get("ref"), data.get("join_ref"))


def _decode_push(data: bytes) -> Frame:
    if len(data) < 7 or data[0] != _PUSH:
        raise ProtocolError("unknown binary frame")
    join_ref_len, ref_len, topic_len, event_len, meta_len, encoding = struct.unpack_from("6B", data, 1)
    offset = 7
    parts: list[str] = []
    try:
        for length in (join_ref_len, ref_len, topic_len, event_len, meta_len):
            if offset + length > len(data):
                raise ProtocolError("binary frame shorter than its header says")
            parts.append(data[offset : offset + length].decode())
            offset += length
    except UnicodeDecodeError:
        raise ProtocolError("binary frame header is not UTF-8") from None
    join_ref, ref, topic, event, metadata = parts
    body = data[offset:]
    payload: dict[str, Any] = {"type": "broadcast", "event": event}
    if metadata:
        try:
            meta = orjson.loads(metadata)
        except orjson.JSONDecodeError:
            raise ProtocolError("binary frame metadata is not JSON") from None
        if isinstance(meta, dict):
            payload.update({key: value for key, value in meta.items() if key in _METADATA_KEYS})
    if encoding == _JSON_ENCODING:
        try:
            payload["payload"] = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise ProtocolError("binary frame payload is not JSON") from None
    elif encoding == _BINARY_ENCODING:
        payload["payload"] = BinaryPayload(event, bytes(body))
    else:
        raise ProtocolError("unknown binary payload encoding")
    return _frame(topic, "broadcast", payload, ref or None, join_ref or None)


def encode(frame: Frame, vsn: str) -> str | bytes | None:
    """A frame for the client, or None when its serializer cannot carry it (binary for vsn 1.0.0)."""
    payload = frame.payload
    if isinstance(payload, dict) and isinstance(payload.get("payload"), BinaryPayload):
        if vsn != VSN_2:
            return None
        return _encode_binary(frame.topic, payload["payload"])
    if vsn == VSN_2:
        return orjson.dumps([frame.join_ref, frame.ref, frame.topic, frame.event, payload]).decode()
    return orjson.dumps(
        {"topic": frame.topic, "event": frame.event, "payload": payload, "ref": frame.ref, "join_ref": frame.join_ref}
    ).decode()


def _encode_binary(topic: str, binary: BinaryPayload) -> bytes:
    topic_bytes, event_bytes = topic.encode(), binary.event.encode()
    if len(topic_bytes) > 255 or len(event_bytes) > 255:
        raise ProtocolError("topic and event must be at most 255 bytes in a binary frame")
    header = struct.pack("5B", _BROADCAST, len(topic_bytes), len(event_bytes), 0, _BINARY_ENCODING)
    return header + topic_bytes + event_bytes + binary.data


def reply(frame: Frame, status: str, response: dict[str, Any] | None = None) -> Frame:
    """``phx_reply`` to ``frame``: ``{status, response}`` with its ref and join_ref."""
    return Frame(frame.topic, "phx_reply", {"status": status, "response": response or {}}, frame.ref,
                 frame.join_ref)
