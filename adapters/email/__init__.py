"""The e-mail channel: mail in through Mailgun's or Postmark's inbound webhook, replies
out over SMTP.

What the providers send, and what omni does with each kind:

    a mail from a person      a message on the timeline from the customer (identity
                              `email` + the normalised From address): the stripped text
                              for bots, the full body for agents (`metadata.body`), the
                              subject and threading headers in metadata, attachments by
                              name, type and size; the [bots.email] bot is told
    a reply to omni's mail    the same, in the conversation of the customer it was sent
                              to (In-Reply-To / References name a Message-ID omni sent)
    an auto-reply, a bounce,  an event on the customer's timeline: no bot is woken, no
    list mail                 conversation reopened; a bounce marks omni's mail failed
    a redelivery              stored once (by its Message-ID)

A survey (omni.surveys) is mailed in the customer's thread as a numbered question ("Reply
with a number from 1 to 5."); their reply's text, quotes and signature stripped, is the
answer when it is that number.

Modules: `protocol` (the normalised mail, the canonical message, the outbound mail),
`mailgun` and `postmark` (each provider's authentication and fields), `text` (HTML to
text, quote and signature stripping), `adapter` (which provider posted), `config`
(`[email]`), `routes` (the route, who a mail is from), `sender` (SMTP).
"""

from __future__ import annotations

import aiohttp
import structlog

from adapters.email.adapter import EmailAdapter
from adapters.email.config import read
from adapters.email.protocol import NAME
from adapters.email.routes import ROUTES
from adapters.email.sender import SmtpSender, not_configured
from omni.channel import Channel, Sender
from omni.settings import Settings
from omni.store import Store
from omni.threads import Threads

log = structlog.get_logger("adapters.email")


def setup(
    settings: Settings, session: aiohttp.ClientSession, store: Store
) -> tuple[EmailAdapter | None, Sender | None]:
    """Inbound needs Mailgun's signing key or Postmark's credentials; sending needs
    from_address and smtp_url (SMTP has its own connections: the session is not used)."""
    config = read(settings)
    adapter = EmailAdapter(config) if config.inbound else None
    if adapter is None:
        return None, None
    if not (config.smtp and config.from_address):
        log.warning("email replies cannot be sent: from_address or smtp_url is not set")
        return adapter, not_configured
    return adapter, SmtpSender(config, config.smtp, Threads(store))


CHANNEL = Channel(NAME, ROUTES, setup, config=read, survey="numbered")

__all__ = ["CHANNEL", "NAME", "setup"]
