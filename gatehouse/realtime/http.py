"""Broadcast over HTTP, as realtime-js sends it when a channel is not joined, or with ``httpSend()``.

- ``POST /realtime/v1/api/broadcast`` with ``{"messages": [{"topic", "event", "payload", "private"}]}``
- ``POST /realtime/v1/api/broadcast/{topic}/events/{event}[?private=true]`` with the payload as the
  body (JSON, or raw bytes as ``application/octet-stream``)

Both answer 202 once the messages are on their way. The caller is the request's (API key and
bearer token, checked at the edge); a private topic needs the caller's write permission by the
policies on ``realtime.messages``, else 403 and nothing is sent.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.types import Scope

from gatehouse.core.caller import caller
from gatehouse.core.errors import GatehouseError
from gatehouse.core.http import ApiMount, InvalidBody, JSONResponse, read_json
from gatehouse.realtime.channel import Refused
from gatehouse.realtime.protocol import BinaryPayload
from gatehouse.services import services

_MAX_MESSAGES = 100


def _bad(message: str, status: int = 400) -> GatehouseError:
    return GatehouseError("realtime", message, status=status)


async def _send(request: Request, messages: list[tuple[str, str, Any, bool]]) -> Response:
    realtime = services(request).realtime
    claims = caller(request).checked().db_claims()
    try:
        await realtime.check_session(claims)
        for topic in {topic for topic, _, _, private in messages if private}:
            if not (await realtime.permissions(claims, topic)).broadcast_write:
                raise _bad(f"You do not have permissions to broadcast on this topic: {topic}", 403)
    except Refused as refusal:
        raise _bad(str(refusal), 403) from None
    for topic, event, payload, private in messages:
        await realtime.broadcast(topic, private, {"type": "broadcast", "event": event, "payload": payload}, sender=None)
    return Response(status_code=202)


async def _capped(request: Request) -> None:
    if len(await request.body()) > services(request).settings.realtime_max_payload_bytes:
        raise _bad("The message is too large (GATEHOUSE_REALTIME_MAX_PAYLOAD_BYTES)", 413)


async def batch(request: Request) -> Response:
    await _capped(request)
    body = await read_json(request)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or len(messages) > _MAX_MESSAGES:
        raise _bad(f"messages must be a list of 1 to {_MAX_MESSAGES} messages")
    found: list[tuple[str, str, Any, bool]] = []
    for message in messages:
        if not isinstance(message, dict) or not isinstance(message.get("topic"), str) or not message["topic"] \
                or not isinstance(message.get("event"), str):
            raise _bad("each message needs a topic and an event (strings)")
        found.append((message["topic"], message["event"], message.get("payload", {}), message.get("private") is True))
    return await _send(request, found)


async def one(request: Request) -> Response:
    topic, event = request.path_params["topic"], request.path_params["event"]
    private = request.query_params.get("private") == "true"
    await _capped(request)
    payload: Any
    if request.headers.get("content-type", "").split(";")[0].strip().lower() == "application/octet-stream":
        payload = BinaryPayload(event, await request.body())
    else:
        payload = await read_json(request, object_only=False)
    return await _send(request, [(topic, event, payload, private)])


def render_realtime_error(scope: Scope, error: GatehouseError) -> Response:
    """Errors as realtime-js reads them: ``error`` (or ``message``) is the sentence it shows."""
    message = "The request body is not valid JSON" if isinstance(error, InvalidBody) else error.message
    return JSONResponse({"error": message, "message": message}, status_code=error.status or 400)


routes = [
    Route("/broadcast", batch, methods=["POST"]),
    Route("/broadcast/{topic}/events/{event}", one, methods=["POST"]),
]

MOUNT = ApiMount(Mount("/realtime/v1/api", routes=routes), render_realtime_error, key_required=True, token_at_edge=True)
