"""One joined channel of one socket: its caller, what it may do, and the frames it handles.

A join (``phx_join`` on ``realtime:<topic>``) is checked as upstream checks it: a topic name, the
socket's channel limit, the token (``access_token`` in the payload, else the socket's API key;
``role`` must be a request role, an expired token is refused with upstream's words, a signed-out
session too) and, for a private channel, the policies on ``realtime.messages`` (read to join,
write to broadcast or track). Then ``broadcast``, ``presence`` (track/untrack), ``access_token``
(a new token, checked the same way; a bad one ends the channel) and ``phx_leave``. A channel ends
with a ``system`` error message and ``phx_close``, as upstream's ``shutdown_response``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from gatehouse.core.caller import Unauthenticated
from gatehouse.realtime.presence import Tracked
from gatehouse.realtime.protocol import Frame, reply

if TYPE_CHECKING:
    from gatehouse.realtime.socket import Connection

REQUEST_ROLES = frozenset({"anon", "authenticated", "service_role"})
_LONGEST_TIMER = 24 * 3600.0


class Refused(Exception):
    """A join or a new token refused; the message is what the client is told."""


@dataclass
class Permissions:
    broadcast_read: bool = True
    presence_read: bool = True
    broadcast_write: bool = True
    presence_write: bool = True


@dataclass(eq=False)  # one object per join: compared and hashed by identity
class Channel:
    conn: Connection
    topic: str  # "realtime:<sub_topic>"
    join_ref: str | None
    claims: dict[str, Any]
    private: bool
    self_broadcast: bool = False
    ack: bool = False
    presence_key: str = ""
    presence_enabled: bool = False
    permissions: Permissions = field(default_factory=Permissions)
    tracked: Tracked | None = None
    #: postgres_changes subscriptions: their ids as the join reply gave them, with their params.
    changes: list[dict[str, Any]] = field(default_factory=list)
    expiry: asyncio.TimerHandle | None = None
    closed: bool = False

    @property
    def sub_topic(self) -> str:
        return self.topic.removeprefix("realtime:")

    @property
    def key(self) -> tuple[str, bool]:
        return self.sub_topic, self.private

    def push(self, event: str, payload: Any) -> None:
        self.conn.push(Frame(self.topic, event, payload, None, self.join_ref))

    def system(self, extension: str, status: str, message: str) -> None:
        self.push("system", {"extension": extension, "status": status, "message": message, "channel": self.sub_topic})


# -- the caller of a channel ---------------------------------------------------------------------


def token_claims(conn: Connection, token: str | None) -> dict[str, Any]:
    """The claims a join (or an ``access_token`` message) acts with; raises :class:`Refused`.

    ``sb_`` keys and no token mean the socket's API key role, as upstream's tenant token does.
    """
    if not token or token.startswith("sb_"):
        return dict(conn.base_claims)
    try:
        found = conn.realtime.callers.token(token)
    except Unauthenticated as refusal:
        if refusal.reason == "expired_token":
            raise Refused(f"InvalidJWTToken: Token has expired {_seconds_since_expiry(token)} seconds ago") from None
        raise Refused("InvalidJWTToken: " + (refusal.detail or "The token provided is not a valid JWT")) from None
    claims = dict(found.claims)
    if claims.get("role") not in REQUEST_ROLES:
        raise Refused(f"Unauthorized: role {claims.get('role')!r} may not use realtime")
    return claims


def _seconds_since_expiry(token: str) -> int:
    """For the message only (the token was already refused): how long ago its ``exp`` passed."""
    try:
        body = token.split(".")[1]
        claims = orjson.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        return max(0, int(time.time()) - int(claims["exp"]))
    except (IndexError, ValueError, KeyError, TypeError, binascii.Error, orjson.JSONDecodeError):
        return 0


def _token_in(payload: Mapping[str, Any]) -> str | None:
    token = payload.get("access_token") or payload.get("user_token")
    return token if isinstance(token, str) else None


def _config(payload: Mapping[str, Any]) -> dict[str, Any]:
    config = payload.get("config")
    return config if isinstance(config, dict) else {}


def _section(config: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = config.get(name)
    return value if isinstance(value, dict) else {}


async def join(conn: Connection, frame: Frame) -> None:
    """Handle ``phx_join``: reply ok with the postgres_changes ids, or an error with a reason."""
    realtime = conn.realtime
    sub_topic = frame.topic.removeprefix("realtime:")
    if not frame.topic.startswith("realtime:") or not sub_topic:
        conn.push(reply(frame, "error", {"reason": "TopicNameRequired: You must provide a topic name"}))
        return
    if len(conn.channels) >= realtime.settings.realtime_max_channels_per_client and frame.topic not in conn.channels:
        conn.push(reply(frame, "error", {"reason": "ChannelRateLimitReached: Too many channels"}))
        return
    config = _config(frame.payload)
    broadcast, presence = _section(config, "broadcast"), _section(config, "presence")
    old = conn.channels.pop(frame.topic, None)
    if old is not None:  # a rejoin replaces the channel, as Phoenix does
        await leave(old, notify=False)
    try:
        claims = token_claims(conn, _token_in(frame.payload))
        await realtime.check_session(claims)
        channel = Channel(conn, frame.topic, frame.join_ref, claims, config.get("private") is True,
                          self_broadcast=broadcast.get("self") is True, ack=broadcast.get("ack") is True,
                          presence_key=str(presence.get("key") or "") or str(uuid.uuid4()),
                          presence_enabled=presence.get("enabled") is True)
        if channel.private:
            channel.permissions = await realtime.permissions(claims, sub_topic)
            if not (channel.permissions.broadcast_read or channel.permissions.presence_read):
                raise Refused(f"Unauthorized: You do not have permissions to read from this Channel topic: {sub_topic}")
        channel.changes = await realtime.changes_for(config.get("postgres_changes"), claims)
    except Refused as refusal:
        conn.push(reply(frame, "error", {"reason": str(refusal)}))
        return
    conn.channels[frame.topic] = channel
    realtime.attach(channel)
    _schedule_expiry(channel)
    conn.push(reply(frame, "ok", {"postgres_changes": [{k: v for k, v in sub.items() if k != "parsed"}
                                                       for sub in channel.changes]}))
    if channel.changes:
        await realtime.follow_changes()
        channel.system("postgres_changes", "ok", "Subscribed to PostgreSQL")
    if channel.presence_enabled and channel.permissions.presence_read:
        channel.push("presence_state", await realtime.presence.state(sub_topic, channel.private))


async def handle(channel: Channel, frame: Frame) -> None:
    """A frame for a joined channel."""
    if frame.event == "phx_leave":
        channel.conn.push(reply(frame, "ok"))
        await leave(channel)
    elif frame.event == "broadcast":
        await _broadcast(channel, frame)
    elif frame.event == "presence":
        await _presence(channel, frame)
    elif frame.event == "access_token":
        await _access_token(channel, frame)
    else:
        channel.conn.push(reply(frame, "error", {"reason": f"Unexpected message of type `{frame.event[:64]}`"}))


async def _broadcast(channel: Channel, frame: Frame) -> None:
    payload = frame.payload
    event = payload.get("event")
    if not isinstance(event, str):
        channel.conn.push(reply(frame, "error", {"reason": "A broadcast needs an event (a string)"}))
        return
    if not channel.permissions.broadcast_write:
        if channel.ack:
            channel.conn.push(reply(frame, "error", {"reason": "You do not have permissions to broadcast on this topic"}))
        return
    message = {"type": "broadcast", "event": event, "payload": payload.get("payload", {})}
    await channel.conn.realtime.broadcast(channel.sub_topic, channel.private, message, sender=channel)
    if channel.ack:
        channel.conn.push(reply(frame, "ok"))


async def _presence(channel: Channel, frame: Frame) -> None:
    realtime = channel.conn.realtime
    event = frame.payload.get("event")
    if not channel.permissions.presence_write:
        channel.conn.push(reply(frame, "error", {"reason": "You do not have permissions to track presence on this topic"}))
        return
    if event == "track":
        meta = frame.payload.get("payload", {})
        if not isinstance(meta, dict):
            channel.conn.push(reply(frame, "error", {"reason": "Presence track payload must be a map"}))
            return
        if len(orjson.dumps(meta)) > realtime.settings.realtime_max_payload_bytes:
            await shutdown(channel, "Track message size exceeded")
            return
        first = not channel.presence_enabled
        channel.presence_enabled = True
        channel.tracked = await realtime.presence.track(channel.sub_topic, channel.private, channel.presence_key, meta,
                                                        channel.tracked)
        channel.conn.push(reply(frame, "ok"))
        if first and channel.permissions.presence_read:  # presence came on with this track: send the state
            channel.push("presence_state", await realtime.presence.state(channel.sub_topic, channel.private))
    elif event == "untrack":
        if channel.tracked is not None:
            tracked, channel.tracked = channel.tracked, None
            await realtime.presence.untrack(tracked)
        channel.conn.push(reply(frame, "ok"))
    else:
        channel.conn.push(reply(frame, "error", {"reason": "Presence event must be track or untrack"}))


async def _access_token(channel: Channel, frame: Frame) -> None:
    token = _token_in(frame.payload)
    if token is None or token.startswith("sb_"):
        return
    realtime = channel.conn.realtime
    try:
        claims = token_claims(channel.conn, token)
        await realtime.check_session(claims)
        if channel.private:
            permissions = await realtime.permissions(claims, channel.sub_topic)
            if (channel.permissions.broadcast_read and not permissions.broadcast_read) or (
                    channel.permissions.presence_read and not permissions.presence_read):
                raise Refused(f"You no longer have permission to read from this Channel topic: {channel.sub_topic}")
            channel.permissions = permissions
    except Refused as refusal:
        await shutdown(channel, str(refusal).removeprefix("InvalidJWTToken: "))
        return
    channel.claims = claims
    _schedule_expiry(channel)


def _schedule_expiry(channel: Channel) -> None:
    """End the channel when its token expires, with upstream's message."""
    if channel.expiry is not None:
        channel.expiry.cancel()
        channel.expiry = None
    exp = channel.claims.get("exp")
    if not isinstance(exp, int | float):
        return
    def expire() -> None:
        left = float(exp) - time.time()
        if left > 0:  # a timer is capped at a day: a longer-lived token waits again
            channel.expiry = asyncio.get_running_loop().call_later(min(left, _LONGEST_TIMER), expire)
            return
        channel.conn.spawn(shutdown(channel, f"Token has expired {int(-left)} seconds ago"))

    channel.expiry = asyncio.get_running_loop().call_later(min(max(0.0, float(exp) - time.time()), _LONGEST_TIMER),
                                                           expire)


async def shutdown(channel: Channel, message: str) -> None:
    """End a channel as upstream does: a ``system`` error, then ``phx_close``."""
    if channel.closed:
        return
    channel.system("system", "error", message)
    await leave(channel)


async def leave(channel: Channel, *, notify: bool = True) -> None:
    """The channel is gone: untrack, detach, and tell the client (``phx_close``)."""
    if channel.closed:
        return
    channel.closed = True
    if channel.expiry is not None:
        channel.expiry.cancel()
    conn = channel.conn
    if conn.channels.get(channel.topic) is channel:
        del conn.channels[channel.topic]
    conn.realtime.detach(channel)
    if channel.tracked is not None:
        tracked, channel.tracked = channel.tracked, None
        await conn.realtime.presence.untrack(tracked)
    if notify:
        channel.push("phx_close", {})


async def check_sessions(conn: Connection) -> None:
    """End the channels whose signed-in session has ended (checked at each heartbeat)."""
    for channel in list(conn.channels.values()):
        try:
            await conn.realtime.check_session(channel.claims)
        except Refused as refusal:
            await shutdown(channel, str(refusal))

