"""The long-lived pieces `omni serve` and `omni worker` share, opened and closed together:
the outbound HTTP session, the outbox, live events, the inbox, replies, the configured
channel adapters and the worker's handlers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiohttp
from redis.asyncio import Redis

from omni.bots import BotDispatcher
from omni.channel import Adapter, Channel, Delivery, Sender
from omni.delivery import handlers
from omni.handoff import Handoffs
from omni.inbox import Inbox
from omni.links import LinkTokens
from omni.live import Live
from omni.outbox import Job, Outbox
from omni.replies import Replies
from omni.reports import Reports
from omni.reports import read_settings as report_settings
from omni.settings import Settings
from omni.store import Store
from omni.survey_settings import read_settings as survey_settings
from omni.surveys import Surveys


@dataclass(frozen=True)
class Services:
    session: aiohttp.ClientSession
    outbox: Outbox
    live: Live
    inbox: Inbox
    replies: Replies
    handoffs: Handoffs
    links: LinkTokens
    reports: Reports
    surveys: Surveys
    adapters: dict[str, Adapter]
    handlers: dict[str, Callable[[Job], Awaitable[Delivery]]]


@asynccontextmanager
async def open_services(
    settings: Settings, redis: Redis, store: Store, channels: Sequence[Channel]
) -> AsyncIterator[Services]:
    """`channels` is the registry the caller loaded (`omni.channel.load`): the services
    build each channel's adapter and sender and never import a channel themselves."""
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
    try:
        outbox = Outbox(redis, settings.outbox)
        live = Live(redis, settings.redis.shards, settings.redis.parts)
        adapters: dict[str, Adapter] = {}
        senders: dict[str, Sender] = {}
        for channel in channels:
            adapter, sender = channel.setup(settings, session, store)
            if adapter is not None:
                adapters[channel.name] = adapter
            if sender is not None:
                senders[channel.name] = sender
        reports = Reports(redis, report_settings(settings))
        handoffs = Handoffs(redis, live, settings.handoff, store.inbox, reports)
        replies = Replies(store, outbox, live, settings.channels.enabled, handoffs=handoffs)
        enabled = set(settings.channels.enabled)
        shown = [c for c in channels if c.name in enabled]
        styles = {c.name: c.survey for c in shown}
        choices = {c.name: c.survey_choices for c in shown if c.survey_choices is not None}
        surveys = Surveys(store, replies, live, reports, survey_settings(settings), styles, choices)
        handoffs.on_resolved = surveys.on_resolved
        yield Services(
            session=session,
            outbox=outbox,
            live=live,
            inbox=Inbox(
                store,
                outbox,
                live,
                settings.bots,
                handoffs=handoffs,
                phone_region=settings.identity.default_region or None,
                reports=reports,
                surveys=surveys,
            ),
            replies=replies,
            handoffs=handoffs,
            links=LinkTokens(redis, store, live, settings.server.public_url),
            reports=reports,
            surveys=surveys,
            adapters=adapters,
            handlers=handlers(
                store,
                live,
                replies,
                lambda on_replies: BotDispatcher(
                    session, settings.bots, on_replies, on_answer=handoffs.on_bot_answer
                ),
                senders,
                frozenset(c.name for c in channels if c.echoes),
                settings.channels.enabled,
                settings.outbox.max_attempts,
            ),
        )
    finally:
        await session.close()
