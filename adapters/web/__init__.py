"""The website chat widget: omni's own client protocol (shared with the app, `adapters.chat`).

What the widget sends, and what omni does with each kind:

    a session request (start, renew, identify)
                        a signed session; a verified login links the visitor to the user's
                        customer (merging the anonymous one in)
    a message           stored on the timeline once per client_msg_id, the bot told
    a link token or code
                        the visitor's identity joins the token's customer
    catch-up            the messages after the last one the widget holds
    socket frames (message, typing, read, ping, resume)
                        stored, relayed to agents, or answered; replies arrive on the socket
    a CORS preflight    answered for the allowed origins

Replies need no sending: the widget takes them over its socket or in catch-up.
Files: `protocol` (sessions and origins), `routes`, `sender`, `config` (`[web]`), and
`widget.js`, the widget itself (`GET /widget.js`: one tag on the brand's page).
"""

from __future__ import annotations

import aiohttp

from adapters.web.config import NAME, read
from adapters.web.protocol import WebAdapter, origin_entry_ok
from adapters.web.routes import ROUTES
from adapters.web.sender import send
from omni.channel import Channel, Sender
from omni.errors import ConfigError
from omni.settings import Settings
from omni.store import Store


def setup(
    settings: Settings, session: aiohttp.ClientSession, store: Store
) -> tuple[WebAdapter | None, Sender | None]:
    config = read(settings)
    if not (config.session_secret or config.identity_secret):
        return None, None
    if not (config.session_secret and config.identity_secret):
        raise ConfigError("web: set both session_secret and identity_secret, or neither")
    for entry in config.allowed_origins:
        if not origin_entry_ok(entry):
            raise ConfigError(
                f"web.allowed_origins: {entry!r} is not an origin (https://host[:port], "
                "https://*.domain or *)"
            )
    try:
        adapter = WebAdapter(
            session_secret=config.session_secret.reveal(),
            identity_secret=config.identity_secret.reveal(),
        )
    except ConfigError as exc:
        raise ConfigError(f"web.{exc}") from None
    return adapter, send


CHANNEL = Channel(NAME, ROUTES, setup, config=read, survey="buttons")

__all__ = ["CHANNEL", "NAME", "setup"]
