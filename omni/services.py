"""The long-lived pieces `omni serve` and `omni worker` share, opened and closed together:
the outbound HTTP session, the outbox, live events, the inbox, replies, the configured
channel adapters and the worker's handlers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
from redis.asyncio import Redis

from adapters.base import Delivery
from omni import channels
from omni.bots import BotDispatcher
from omni.delivery import Sender, handlers
from omni.handoff import Handoffs
from omni.inbox import Inbox
from omni.links import LinkTokens
from omni.live import Live
from omni.outbox import Job, Outbox
from omni.replies import Replies
from omni.settings import Settings
from omni.store import Store


@dataclass(frozen=True)
class Services:
    session: aiohttp.ClientSession
    outbox: Outbox
    live: Live
    inbox: Inbox
    replies: Replies
    handoffs: Handoffs
    links: LinkTokens
    adapters: dict[str, Any]
    handlers: dict[str, Callable[[Job], Awaitable[Delivery]]]


@asynccontextmanager
async def open_services(settings: Settings, redis: Redis, store: Store) -> AsyncIterator[Services]:
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
    try:
        outbox = Outbox(redis, settings.outbox)
        live = Live(redis, settings.redis.shards)
        adapters: dict[str, Any] = {}
        senders: dict[str, Sender] = {}
        for module in channels.MODULES:
            adapter, sender = module.setup(settings, session, store)
            if adapter is not None:
                adapters[module.NAME] = adapter
            if sender is not None:
                senders[module.NAME] = sender
        handoffs = Handoffs(redis, live, settings.handoff)
        replies = Replies(store, outbox, live, settings.channels.enabled, handoffs=handoffs)
        yield Services(
            session=session,
            outbox=outbox,
            live=live,
            inbox=Inbox(store, outbox, live, settings.bots, handoffs=handoffs),
            replies=replies,
            handoffs=handoffs,
            links=LinkTokens(redis, store, live, settings.server.public_url),
            adapters=adapters,
            handlers=handlers(
                store,
                live,
                replies,
                lambda on_replies: BotDispatcher(
                    session, settings.bots, on_replies, on_answer=handoffs.on_bot_answer
                ),
                senders,
                frozenset(m.NAME for m in channels.MODULES if getattr(m, "ECHOES", False)),
                settings.channels.enabled,
                settings.outbox.max_attempts,
            ),
        )
    finally:
        await session.close()
