"""The mobile app: omni's own client protocol (shared with the web, `adapters.chat`) plus push.

What the app sends, and what omni does with each kind:

    a session request (start, renew, identify)
                        a signed session; a verified login links the install to the user's
                        customer
    a message           stored on the timeline once per client_msg_id, the bot told
    a device registration
                        the push token kept under the customer (moved from anyone who held it)
    a link token or code
                        the app's identity joins the token's customer
    catch-up            the messages after the last one the app holds
    socket frames (message, typing, read, ping, resume)
                        as on the web, while the app is in the foreground

Replies go over the live socket when there is one, otherwise as a push (APNs, FCM) to
each active device (`sender`). Files: `protocol` (sessions, devices, push requests),
`routes`, `sender`, `config` (`[mobile]`).
"""

from __future__ import annotations

import aiohttp

from adapters.mobile.config import NAME, read
from adapters.mobile.protocol import MobileAdapter
from adapters.mobile.routes import ROUTES
from adapters.mobile.sender import MobileSender, Pusher
from omni.channel import Channel, Sender
from omni.errors import ConfigError
from omni.settings import Settings
from omni.store import Store


def setup(
    settings: Settings, session: aiohttp.ClientSession, store: Store
) -> tuple[MobileAdapter | None, Sender | None]:
    config = read(settings)
    if not (config.session_secret or config.identity_secret):
        return None, None
    if not (config.session_secret and config.identity_secret):
        raise ConfigError("mobile: set both session_secret and identity_secret, or neither")
    try:
        adapter = MobileAdapter(
            session_secret=config.session_secret.reveal(),
            identity_secret=config.identity_secret.reveal(),
            push_url=config.push_url or None,
            push_auth=config.push_auth.reveal() or None,
            fcm_project=config.fcm_project or None,
            apns_topic=config.apns_topic or None,
            apns_sandbox_url=config.apns_sandbox_url or None,
        )
    except ConfigError as exc:
        raise ConfigError(f"mobile.{exc}") from None
    return adapter, MobileSender(Pusher(adapter, session), store)


CHANNEL = Channel(NAME, ROUTES, setup, config=read, survey="buttons")

__all__ = ["CHANNEL", "NAME", "setup"]
