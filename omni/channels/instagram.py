"""The Instagram channel: Meta's webhook routes and the reply sender with its windows.

    GET  /channels/instagram/webhook   the subscription handshake: the challenge, or 403
    POST /channels/instagram/webhook   event notifications, X-Hub-Signature-256 checked over
                                       the raw body; 200 only once every event is stored

Replies go out through the Send API (`adapters.instagram`) only when Instagram would take
them, measured from the customer's last message on Instagram: anything inside 24 hours; an
agent's reply up to 7 days, tagged HUMAN_AGENT; nothing later. A reply outside its window
fails at once with an `outside_window` reason in the history, and Graph is not called.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeGuard

import aiohttp
import structlog
from aiohttp import web

from adapters.base import ChannelEvent, Delivery, Received
from adapters.instagram import (
    DAY_MS,
    REASON_OUTSIDE_WINDOW,
    InstagramAdapter,
    WindowState,
    window_state,
)
from omni.channels import http
from omni.clock import now_ms
from omni.delivery import Sender
from omni.errors import TooManyRequests
from omni.inbox import Inbox
from omni.model import Message
from omni.ratelimit import LIMITER
from omni.route import Param, Route
from omni.settings import Settings
from omni.state import SERVICES
from omni.store import Store
from omni.web_io import json_response

NAME = "instagram"
ECHOES = True  # every send comes back as an `is_echo` message, often before its answer
REASON_NOT_CONFIGURED = "not_configured"
log = structlog.get_logger("omni.channels.instagram")


async def instagram_handshake(request: web.Request) -> web.Response:
    adapter: InstagramAdapter = http.adapter(request, NAME)
    challenge = adapter.handshake(request.query)
    return web.Response(text=challenge, content_type="text/plain")


async def instagram_webhook(request: web.Request) -> web.Response:
    structlog.contextvars.bind_contextvars(channel=NAME)
    adapter: InstagramAdapter = http.adapter(request, NAME)
    inbound = await http.inbound(request)
    adapter.verify(inbound)
    events, over = await _within_limits(request, adapter.parse(inbound))
    stored = await store_events(request.app[SERVICES].inbox, events)
    if over is not None:
        # The other senders' events are stored; Meta redelivers the notification later,
        # and what is stored now is found stored then: the flood waits, nothing is lost.
        raise over
    return json_response({"events": len(events), "messages": stored})


async def _within_limits(
    request: web.Request, events: Sequence[ChannelEvent]
) -> tuple[list[ChannelEvent], TooManyRequests | None]:
    """The events of senders within `[limits] per_identity`, and the 429 for the rest."""
    within: list[ChannelEvent] = []
    over = None
    for event in events:
        if isinstance(event, Received) and event.direction == "inbound":
            try:
                await request.app[LIMITER].identity(NAME, event.message.external_id)
            except TooManyRequests as refused:
                over = refused
                continue
        within.append(event)
    return within, over


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


class WindowedSender:
    """The worker's sender for Instagram: checks the customer's window, then sends."""

    def __init__(
        self, adapter: InstagramAdapter, store: Store, clock: Callable[[], int] = now_ms
    ) -> None:
        self.adapter = adapter
        self.store = store
        self.clock = clock

    async def __call__(self, message: Message, recipient: str) -> Delivery:
        last = await self.store.last_inbound_ms(message.customer_id, NAME)
        now = self.clock()
        state = window_state(last, now)
        if state == "open":
            return await self.adapter.deliver(message, recipient)
        if state == "human_agent" and message.author.kind == "agent":
            return await self.adapter.deliver(message, recipient, human_agent=True)
        reason = closed_reason(state, None if last is None else now - last)
        return Delivery(status="failed", reason=f"{REASON_OUTSIDE_WINDOW}: {reason}")


def closed_reason(state: WindowState, age_ms: int | None) -> str:
    """Why a reply cannot go out, in words an agent can act on."""
    if age_ms is None:
        return "the customer has not written on Instagram; a business cannot start the chat"
    ago = f"{age_ms // DAY_MS} days" if age_ms >= 2 * DAY_MS else f"{age_ms // 3_600_000} h"
    if state == "human_agent":
        return (
            f"the customer last wrote {ago} ago; after 24 h only an agent may reply "
            "(sent with the HUMAN_AGENT tag) until 7 days"
        )
    return f"the customer last wrote {ago} ago; nothing can be sent after 7 days"


async def _not_configured(message: Message, recipient: str) -> Delivery:
    return Delivery(
        status="failed",
        reason=f"{REASON_NOT_CONFIGURED}: set [instagram] page_token and account_id to send",
    )


def setup(
    settings: Settings, session: aiohttp.ClientSession, store: Store
) -> tuple[InstagramAdapter | None, Sender | None]:
    """Inbound needs app_secret and verify_token; sending also page_token and account_id."""
    config = settings.instagram
    if not (config.app_secret and config.verify_token):
        return None, None
    adapter = InstagramAdapter(
        app_secret=config.app_secret.reveal(),
        verify_token=config.verify_token.reveal(),
        page_token=config.page_token.reveal(),
        # Only the sender uses the account; inbound events name their own.
        account_id=config.account_id or "me",
        graph_url=config.graph_url,
        session=session,
    )
    if not (config.page_token and config.account_id):
        log.warning("instagram replies cannot be sent: page_token or account_id is not set")
        return adapter, _not_configured
    return adapter, WindowedSender(adapter, store)
