"""Instagram direct messages: Meta's Instagram Messaging webhooks in, the Graph Send API out.

What Instagram sends, and what omni does with each kind:

    a message (text, media, quick reply, story reply, ad referral)
                        stored on the customer's timeline, the bot told
    a message in standby (another app owns the thread)
                        stored and shown to agents; the bot is not told
    an echo of our own send
                        stored as outbound (or matched to the reply it echoes)
    an unsend           the message keeps its place and loses its content
    a postback          stored as a message carrying the button's payload
    a reaction / unreaction, a read
                        marked on the message it is about
    a referral (ig.me link, ad)
                        stored as an empty message with the referral, so the bot hears of it
    a dashboard test, anything unknown
                        skipped (logged)

Replies go out through the Send API inside the customer's messaging window (`sender`).
Files: `protocol` (verify, parse, render Graph requests and read Graph's answers; what
each event becomes is `events`, Graph errors and quick replies `outbound`, text cuts
`text`), `routes` (the webhook), `sender` (sends the requests, inside the window),
`config` (`[instagram]`).
"""

from __future__ import annotations

import aiohttp
import structlog

from adapters.instagram.config import NAME, read
from adapters.instagram.protocol import InstagramAdapter
from adapters.instagram.routes import ROUTES
from adapters.instagram.sender import GraphSender, WindowedSender, not_configured
from omni.channel import Channel, Sender
from omni.settings import Settings
from omni.store import Store

log = structlog.get_logger("adapters.instagram")


def setup(
    settings: Settings, session: aiohttp.ClientSession, store: Store
) -> tuple[InstagramAdapter | None, Sender | None]:
    """Inbound needs app_secret and verify_token; sending also page_token and account_id."""
    config = read(settings)
    if not (config.app_secret and config.verify_token):
        return None, None
    adapter = InstagramAdapter(
        app_secret=config.app_secret.reveal(),
        verify_token=config.verify_token.reveal(),
        page_token=config.page_token.reveal(),
        # Only the sender uses the account; inbound events name their own.
        account_id=config.account_id or "me",
        graph_url=config.graph_url,
    )
    if not (config.page_token and config.account_id):
        log.warning("instagram replies cannot be sent: page_token or account_id is not set")
        return adapter, not_configured
    return adapter, WindowedSender(GraphSender(adapter, session), store)


CHANNEL = Channel(
    NAME,
    ROUTES,
    setup,
    # Every send comes back as an `is_echo` message, often before its answer.
    echoes=True,
    config=read,
    survey="quick_replies",  # a survey question's scores as quick replies
)

__all__ = ["CHANNEL", "NAME", "setup"]
