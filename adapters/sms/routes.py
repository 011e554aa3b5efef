"""The SMS channel's routes: Twilio Messaging's webhooks, each checked first (a bad
X-Twilio-Signature is 401 and nothing is stored), answered with TwiML once stored."""

from __future__ import annotations

import msgspec
import structlog
from aiohttp import web

from adapters.sms.outbound import OPTED_OUT_CODE, twiml
from adapters.sms.protocol import CHANNEL, INBOUND_PATH, STATUS_PATH, InboundSms
from adapters.sms.sender import SmsAdapter
from omni import channel_http
from omni.channel import InboundRequest, Received
from omni.clock import iso, now_ms
from omni.ids import new_message_id
from omni.model import Author, Identity, Message, MessageStatus
from omni.optouts import opt_in, opt_out
from omni.receipts import record_receipt
from omni.route import Param, Route
from omni.state import SERVICES, STORE
from omni.twilio import TWIML_CONTENT_TYPE

log = structlog.get_logger("adapters.sms")
HELP_AUTHOR = Author(kind="system", name="SMS help")


async def sms_inbound(request: web.Request) -> web.Response:
    """A text or MMS: stored once (MessageSid), the SMS bot told; keywords handled."""
    sms, inbound = await _verified(request)
    read = sms.read_message(inbound)
    services, store = request.app[SERVICES], request.app[STORE]
    if read.keyword is None:
        await services.inbox.receive(CHANNEL, [Received(read.message)])
        return _answer(twiml())
    if read.keyword == "stop":
        # Before anything else, and on every delivery of it: a STOP is never lost.
        await opt_out(store, CHANNEL, read.customer, (read.message.text or "STOP").strip()[:32])
    # Keywords are for Twilio and omni, not a question for the bot.
    message, created = await services.inbox.ingest(read.message, notify_bot=False)
    if read.keyword == "start" and created:  # a redelivered START must not undo a later STOP
        await opt_in(store, CHANNEL, read.customer)
    help_text = sms.config.help_text
    if read.keyword == "help" and help_text:
        if created:
            await _store_help(request, read, message, help_text)
        return _answer(twiml(help_text))
    return _answer(twiml())


async def sms_status(request: web.Request) -> web.Response:
    """A status callback: the reply's delivery status moves on (never back)."""
    sms, inbound = await _verified(request)
    receipt = sms.read_receipt(inbound)
    store = request.app[STORE]
    if receipt.error_code == OPTED_OUT_CODE:
        await opt_out(store, CHANNEL, receipt.customer, f"twilio:{OPTED_OUT_CODE}")
    if receipt.state is not None:
        await record_receipt(
            store,
            request.app[SERVICES].live,
            channel=CHANNEL,
            external_id=receipt.customer,
            channel_message_id=receipt.sid,
            state=receipt.state,
            reason=receipt.reason,
        )
    return _answer(twiml())


async def _verified(request: web.Request) -> tuple[SmsAdapter, InboundRequest]:
    structlog.contextvars.bind_contextvars(channel=CHANNEL)
    sms = channel_http.adapter(request, CHANNEL, SmsAdapter)
    inbound = await channel_http.inbound(request)
    sms.verify(inbound)
    return sms, inbound


def _answer(document: str) -> web.Response:
    return web.Response(text=document, content_type=TWIML_CONTENT_TYPE, charset="utf-8")


async def _store_help(request: web.Request, read: InboundSms, heard: Message, text: str) -> None:
    """The answer to HELP, on the timeline as sent (Twilio sends what the TwiML says)."""
    message = Message(
        id=new_message_id(),
        customer_id=heard.customer_id,
        conversation_id="",
        channel=CHANNEL,
        direction="outbound",
        author=HELP_AUTHOR,
        received_at="",
        channel_message_id=f"{read.sid}:help",
        text=text,
        reply_to=heard.id,
        metadata={"sms_keyword": "help"},
    )
    status = MessageStatus(state="sent", at=iso(now_ms()) or "")
    identity = Identity(channel=CHANNEL, external_id=read.customer)
    stored, _, created, *_ = await request.app[STORE].timeline.append(
        heard.customer_id, message, identity=identity, status=status
    )
    if created:
        await request.app[SERVICES].live.publish(
            heard.customer_id, "message", msgspec.to_builtins(stored)
        )


_SIGNATURE = Param(
    "X-Twilio-Signature",
    "header",
    "base64 HMAC-SHA1 with [twilio] auth_token of [server] public_url + the path (query "
    "included), followed by every POST parameter sorted by name, name and value concatenated",
    required=True,
)
_ERRORS = (400, 401, 404, 413)

ROUTES: tuple[Route, ...] = (
    Route("POST", INBOUND_PATH, sms_inbound,
          "Twilio Messaging inbound SMS/MMS (the number's or Messaging Service's webhook): "
          "stored once by MessageSid, media as attachments, STOP/START/HELP handled; answers "
          "TwiML (text/xml), an empty <Response/> or the HELP text",
          "channels", errors=_ERRORS, params=(_SIGNATURE,)),
    Route("POST", STATUS_PATH, sms_status,
          "Twilio Messaging status callback: MessageStatus (and ErrorCode) on the reply's "
          "delivery status, the furthest state kept; answers an empty TwiML document",
          "channels", errors=_ERRORS, params=(_SIGNATURE,)),
)  # fmt: skip
