"""Phone calls through Twilio Programmable Voice.

What Twilio sends, and what omni does with each kind (every answer is TwiML):

    an incoming call    the caller resolved by number, the call put on the timeline, and a
                        greeting that remembers the customer's last conversation
    what the caller said or keyed (gather)
                        stored as a message, the bot asked, its answer spoken; "agent"
                        transfers the call; a six-digit code links the number to a customer
    nothing heard       re-prompted once, then the call ends
    a status callback   the call's latest status kept (late ones never roll it back); the
                        end of the call is recorded on the timeline
    the end of a transfer (dial)
                        back to the bot when no agent answered

Replies on voice are not sent (a call is live or over): the sender fails each with a
reason (`sender`). Files: `protocol` (verify, read the webhooks: `webhooks`, render
TwiML: `twiml`), `routes` (the webhooks and the call flow), `speech` (what omni says),
`config` (the `[twilio]` section).
"""

from __future__ import annotations

import aiohttp
import structlog

from adapters.voice.config import NAME, read
from adapters.voice.protocol import VoiceAdapter
from adapters.voice.routes import ROUTES
from adapters.voice.sender import send
from omni.channel import Channel, Sender
from omni.errors import ConfigError
from omni.settings import Settings
from omni.store import Store

log = structlog.get_logger("adapters.voice")

_SETTING_NAMES = {
    "voice: auth_token": "twilio.auth_token:",
    "voice: agent_number": "twilio.agent_number:",
    "voice: public_url": "server.public_url:",
}


def setup(
    settings: Settings, session: aiohttp.ClientSession, store: Store
) -> tuple[VoiceAdapter | None, Sender | None]:
    """Configured by `[twilio] auth_token`; the sender fails every reply with a reason."""
    config = read(settings)
    if not config.auth_token:
        return None, None
    try:
        adapter = VoiceAdapter(
            config.auth_token,
            config.agent_number or None,
            settings.server.public_url,
            language=config.language,
            say_voice=config.voice or None,
        )
    except ConfigError as exc:
        message = str(exc)
        for prefix, setting in _SETTING_NAMES.items():
            message = message.replace(prefix, setting, 1)
        raise ConfigError(message) from None
    if not config.agent_number:
        log.info("voice calls cannot be transferred: [twilio] agent_number is not set")
    return adapter, send


CHANNEL = Channel(NAME, ROUTES, setup, config=read, survey="digits")

__all__ = ["CHANNEL", "NAME", "setup"]
