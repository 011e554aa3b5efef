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

Modules: `protocol` (the normalised mail, the canonical message, the outbound mail),
`mailgun` and `postmark` (each provider's authentication and fields), `text` (HTML to
text, quote and signature stripping), `adapter` (which provider posted), `config`
(`[email]`), `routes` (the route, who a mail is from), `sender` (SMTP).
"""

from __future__ import annotations

from adapters.email.protocol import NAME
from adapters.email.routes import ROUTES, setup

__all__ = ["NAME", "ROUTES", "setup"]
