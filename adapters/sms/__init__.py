"""SMS and MMS through Twilio Messaging: texts in, replies out, in the same timeline.

    POST /channels/sms/twilio   inbound messages (the number's, or its Messaging
                                Service's, "A message comes in" webhook)
    POST /channels/sms/status   status callbacks for the replies omni sent

Every request is checked first: X-Twilio-Signature over `[server] public_url` + the path,
with `[twilio] auth_token` (omni.twilio, the same check as voice). A bad one is 401 and
nothing is stored; an unreadable body is 400 and nothing is stored. omni answers TwiML
(text/xml) as soon as the message is stored: an empty `<Response/>` (replies go out
later through the Messaging API, from the bot or an agent), or the HELP text.

What Twilio sends, and what omni does with it:

    a text             a message from identity sms + the sender's E.164 number (From),
                       channel message id MessageSid, so a redelivery is stored once;
                       the SMS bot ([bots.sms]) gets it with the customer's context.
                       The number joins another customer (a caller's, a WhatsApp
                       user's) only by the verified-phone rule (omni.identity).
    an MMS             the same, each MediaUrl{N} an attachment typed by its
                       MediaContentType{N} (image, video, audio, else file) with that
                       mime type; the URL is Twilio's (fetching it may need the account's
                       credentials when media authentication is on)
    STOP and synonyms  STOPALL, UNSUBSCRIBE, CANCEL, END, QUIT, REVOKE, OPTOUT (or Twilio's
                       OptOutType=STOP): the number's opt-out is recorded (omni.optouts)
                       and stored on the timeline without waking the bot; every reply
                       to it then fails with reason `opted_out`, Twilio is not called
    START, YES, UNSTOP the opt-out is cleared; stored, the bot not woken
    HELP, INFO         answered with `[sms] help_text` in the TwiML (and that answer is on
                       the timeline); stored, the bot not woken. Empty help_text: no answer
    status callback    queued/sent/delivered/undelivered/failed (+ ErrorCode) on the reply's
                       delivery status, the furthest state kept whatever the order;
                       ErrorCode 21610 also records the opt-out

Replies (adapters.sms.sender) go through the Messaging API with To, From (or
MessagingServiceSid), Body, MediaUrl and StatusCallback, and are refused, with a reason
starting `too_long`, past `[sms] max_segments` segments (GSM-7: 160 characters in one,
153 per segment when longer; UCS-2, once any character is not GSM-7: 70 and 67).
Configuration: adapters.sms.config.
"""

from __future__ import annotations

import aiohttp
import structlog

from adapters.sms.config import sms_config
from adapters.sms.protocol import CHANNEL as NAME
from adapters.sms.routes import ROUTES
from adapters.sms.sender import SmsAdapter
from omni.channel import Channel, Sender
from omni.settings import Settings
from omni.store import Store

__all__ = ["CHANNEL", "NAME", "setup"]
log = structlog.get_logger("adapters.sms")


def setup(
    settings: Settings, session: aiohttp.ClientSession, store: Store
) -> tuple[SmsAdapter | None, Sender | None]:
    """Inbound needs `[twilio] auth_token`; replies also `[sms] account_sid` and a sender
    (`from_number` or `messaging_service_sid`), else each fails saying so."""
    config = sms_config(settings)
    if not config.auth_token:
        return None, None
    adapter = SmsAdapter(config, session, store)
    if not config.can_send:
        log.warning("sms replies cannot be sent: set [sms] account_sid and from_number")
    return adapter, adapter.deliver


# Twilio does not send our own messages back to the webhook: no echoes.
CHANNEL = Channel(NAME, ROUTES, setup, echoes=False, config=sms_config, survey="numbered")
