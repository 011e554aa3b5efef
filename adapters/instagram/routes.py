"""Instagram's routes: Meta's webhook.

    GET  /channels/instagram/webhook   the subscription handshake: the challenge, or 403
    POST /channels/instagram/webhook   event notifications, X-Hub-Signature-256 checked over
                                       the raw body; 200 only once every event is stored

Replies go out through `adapters.instagram.sender`, inside the customer's window.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeGuard

import structlog
from aiohttp import web

from adapters.instagram.config import NAME
from adapters.instagram.protocol import InstagramAdapter
from omni import channel_http
from omni.channel import ChannelEvent, Received
from omni.inbox import Inbox
from omni.route import Param, Route
from omni.state import SERVICES
from omni.web_io import json_response

log = structlog.get_logger("adapters.instagram")


async def instagram_handshake(request: web.Request) -> web.Response:
    adapter = channel_http.adapter(request, NAME, InstagramAdapter)
    challenge = adapter.handshake(request.query)
    return web.Response(text=challenge, content_type="text/plain")


async def instagram_webhook(request: web.Request) -> web.Response:
    structlog.contextvars.bind_contextvars(channel=NAME)
    adapter = channel_http.adapter(request, NAME, InstagramAdapter)
    inbound = await channel_http.inbound(request)
    adapter.verify(inbound)
    events = adapter.parse(inbound)
    stored = await store_events(request.app[SERVICES].inbox, events)
    return json_response({"events": len(events), "messages": stored})


async def store_events(inbox: Inbox, events: Sequence[ChannelEvent]) -> int:
    """Every event, in order; returns how many messages they are. A standby message
    (another app, or a person in Meta's inbox, owns the thread) is stored and shown to
    agents, but the bot is not told: an answer from it would talk over the owner."""
    stored = 0
    for event in events:
        if _standby(event):
            await inbox.ingest(event.message, notify_bot=False)
            stored += 1
        else:
            stored += len(await inbox.receive(NAME, [event]))
    return stored


def _standby(event: ChannelEvent) -> TypeGuard[Received]:
    return (
        isinstance(event, Received)
        and event.direction == "inbound"
        and event.message.metadata.get("standby") is True
    )


ROUTES: tuple[Route, ...] = (
    Route("GET", "/channels/instagram/webhook", instagram_handshake,
          "Meta's webhook subscription handshake: echoes hub.challenge as text/plain when "
          "hub.mode is subscribe and hub.verify_token is [instagram] verify_token",
          "channels", errors=(403, 404),
          params=(Param("hub.mode", "query", "subscribe", required=True),
                  Param("hub.verify_token", "query", "the configured verify token",
                        required=True),
                  Param("hub.challenge", "query", "echoed back", required=True))),
    Route("POST", "/channels/instagram/webhook", instagram_webhook,
          "Instagram Messaging webhooks (messages, echoes, reactions, reads, postbacks, "
          "referrals, standby); answered 200 once every event is stored",
          "channels", errors=(400, 401, 404, 413),
          params=(Param("X-Hub-Signature-256", "header",
                        "sha256=<hex HMAC-SHA256 of the raw body with [instagram] app_secret>",
                        required=True),)),
)  # fmt: skip
