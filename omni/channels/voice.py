"""The phone channel: Twilio Programmable Voice webhooks, each answered with TwiML.

    POST /channels/voice/twilio          an incoming call: the caller (From, E.164) is the
                                         voice identity; the greeting uses what omni knows
                                         of them, then omni listens (<Gather> turn 1)
    POST /channels/voice/twilio/gather   what the caller said or keyed: stored once, the voice
                                         bot asked while the caller waits, its replies spoken
                                         inside the next <Gather>
    POST /channels/voice/twilio/status   call progress, in any order: the latest status per
                                         call, and the call's end once on the timeline
    POST /channels/voice/twilio/dial     how the transfer to an agent ended, on the timeline

Every request is checked first (X-Twilio-Signature over `[server] public_url`, the path
and the query; see `adapters.voice`): a bad one is 401 and nothing is stored.

The voice bot (`[bots.voice]`) is called synchronously with the signed webhook of
`omni.bots`, limited to its timeout_ms, and never also through the outbox. A bot that
fails or is too slow gets the caller an apology and another turn; what they said is
stored either way. The caller reaches a person by keying 0 or saying "agent", or when the
bot answers `"handoff": true`: <Dial> to `[twilio] agent_number`.

A reply queued to a voice customer through the outbox fails with a reason: Twilio only
speaks what omni answers to one of its webhooks, so nothing can be pushed into the line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import aiohttp
import msgspec
import structlog
from aiohttp import web
from redis.asyncio import Redis
from redis.exceptions import WatchError

from adapters.base import Received
from adapters.voice import (
    TWIML_CONTENT_TYPE,
    CallWebhook,
    VoiceAdapter,
    empty,
    status_supersedes,
)
from omni import keys
from omni.bots import KIND as BOT_KIND
from omni.bots import BotAnswer, BotDispatcher, bot_event
from omni.channels import http
from omni.clock import iso, now_ms
from omni.delivery import Sender
from omni.errors import ConfigError, Gone, NotFound, Unauthenticated, ValidationFailed
from omni.handoff import holder
from omni.identity import claim_verified_phone
from omni.ids import new_message_id
from omni.links import Redeem
from omni.model import (
    Author,
    Context,
    Identity,
    Message,
    MessageStatus,
    MetaValue,
    Voice,
)
from omni.outbox import Job
from omni.route import Param, Route
from omni.settings import Settings
from omni.state import REDIS, SERVICES, SETTINGS, STORE
from omni.store import Store

NAME = "voice"
log = structlog.get_logger("omni.channels.voice")

# What omni says on its own. Short: every word is read aloud to someone waiting.
HELLO = "Hello, thanks for calling. How can I help you today?"
NO_BOT = "Thank you, I have noted that for our team. Is there anything else I can help with?"
BOT_FAILED = "Sorry, I could not get you an answer just now. Could you say that again?"
LISTENING = "Is there anything else I can help you with?"
REPEAT = "Sorry, could you say that again?"
REPROMPT = "Sorry, I did not catch that. How can I help you?"
GOODBYE = "Thank you for calling. Goodbye."
CONNECTING = "Connecting you to an agent. Please hold."
NO_AGENT = "Sorry, no one is available to take your call right now. I can keep helping you."
AGENT_MISSED = "Sorry, no one could take your call. I can keep helping you. What do you need?"
HELD = "Connecting you to the agent looking after your conversation. Please hold."
HELD_NO_NUMBER = "An agent is looking after your conversation and will get back to you shortly."
LINKED = "Thank you, this number is now linked to your account. How can I help you?"
LINK_CODE = re.compile(r"\d{6}")
AGENT_MISSED_BYE = "Sorry, no one could take your call. Please call again later. Goodbye."

BOT_AUTHOR = Author(kind="bot", name=f"{NAME} bot")
SYSTEM_AUTHOR = Author(kind="system", name="Twilio")
_CHANNEL_NAMES = {
    "web": "our website chat",
    "mobile": "our app",
    "instagram": "Instagram",
    "voice": "the phone",
    "whatsapp": "WhatsApp",
    "sms": "text message",
    "email": "email",
}
_QUOTE_MAX = 120


@dataclass(frozen=True)
class Turn:
    """What omni says back to one thing the caller said, and whether a person should
    take the call after it."""

    says: tuple[str, ...]
    handoff: bool = False


# -- routes ---------------------------------------------------------------------------


async def voice_call(request: web.Request) -> web.Response:
    voice, hook = await _webhook(request)
    cid = await _caller(request, hook)
    # Read before the call itself is stored, so "last time" is the time before this call.
    context = await _context(request.app[STORE], cid) if cid else None
    await _store_inbound(request, hook)
    if cid is not None and voice.agent_number and await holder(request.app[STORE], cid):
        # An agent holds the conversation (or it waits for one): the caller goes to them.
        return _twiml(voice.transfer(HELD, turn=hook.turn))
    return _twiml(voice.greet(greeting(context)))


async def voice_gather(request: web.Request) -> web.Response:
    voice, hook = await _webhook(request)
    if hook.empty:
        return _twiml(voice.on_empty(hook, reprompt=REPROMPT, goodbye=GOODBYE))
    message, created = await _store_inbound(request, hook)
    linked = await _link_code(request, hook) if created else None
    if linked is not None:
        return _twiml(voice.speak((linked,), turn=hook.next_turn))
    held = await holder(request.app[STORE], message.customer_id)
    if held is not None and not held.waiting:
        # While an agent holds the conversation the bot does not answer; one merely
        # waiting in the queue keeps the bot talking (a missed transfer must not loop).
        if voice.agent_number:
            return _twiml(voice.transfer(HELD, turn=hook.turn))
        return _twiml(voice.speak((HELD_NO_NUMBER,), turn=hook.next_turn))
    first: tuple[str, ...] = ()
    if hook.wants_agent:
        if voice.agent_number:
            await _to_queue(request, message.customer_id, "the caller asked for a person")
            return _twiml(voice.transfer(CONNECTING, turn=hook.turn))
        first = (NO_AGENT,)
    # A retried callback (Twilio lost our answer) hears the same turn again; the bot is
    # not asked twice.
    turn = await _ask_bot(request, hook, message) if created else await _replay(request, message)
    if turn.handoff and voice.agent_number:
        # Without a number to transfer to, the bot carries on (it says no one is free).
        await _to_queue(request, message.customer_id, "the voice bot asked for an agent")
        return _twiml(voice.transfer(" ".join(first + turn.says), turn=hook.turn))
    says = first + turn.says
    if turn.handoff and NO_AGENT not in says:
        says += (NO_AGENT,)
    return _twiml(voice.speak(says, turn=hook.next_turn))


async def _to_queue(request: web.Request, cid: str, reason: str) -> None:
    """The conversation waits for an agent, so the console shows the call waiting."""
    if await holder(request.app[STORE], cid) is None:
        await request.app[SERVICES].handoffs.assign(
            cid, "queue", agent_id=None, reason=reason, by=BOT_AUTHOR
        )


async def _link_code(request: web.Request, hook: CallWebhook) -> str | None:
    """Six digits, keyed or said, that are a waiting link code: the caller's number joins
    the customer the code was made for (omni.links). None: not a code; a refused code
    is the bot's to handle like any other answer."""
    said = hook.digits or "".join(ch for ch in (hook.transcript or "") if ch.isdigit())
    if not LINK_CODE.fullmatch(said):
        return None
    try:
        await request.app[SERVICES].links.redeem(
            Redeem(channel="voice", external_id=hook.customer, code=said)
        )
    except (NotFound, Gone, ValidationFailed, Unauthenticated):
        return None
    return LINKED


async def voice_status(request: web.Request) -> web.Response:
    _, hook = await _webhook(request)
    assert hook.status is not None  # the adapter refuses a status callback without one
    if hook.terminal:
        meta: dict[str, MetaValue] = {"call_sid": hook.call_id, "status": hook.status}
        if hook.duration_s is not None:
            meta["duration_s"] = hook.duration_s
        ended = await _store_event(request, hook, "end", call_ended(hook), "call_ended", meta)
        cid: str | None = ended.customer_id
    else:
        cid = await request.app[STORE].customers.find(NAME, hook.customer)
    if cid is not None:
        await record_status(request.app[REDIS], cid, hook)
    return _twiml(empty())


async def voice_dial(request: web.Request) -> web.Response:
    voice, hook = await _webhook(request)
    assert hook.dial_status is not None  # the adapter refuses a dial action without one
    meta: dict[str, MetaValue] = {
        "call_sid": hook.call_id,
        "dial_status": hook.dial_status,
        "dial_call_sid": hook.dial_call_id,
        "dial_duration_s": hook.dial_duration_s,
        "turn": hook.turn,
    }
    text = f"Transfer to an agent: {hook.dial_status}"
    suffix = f"dial:{hook.dial_call_id or f'turn{hook.turn}'}"
    meta = {k: v for k, v in meta.items() if v is not None}
    await _store_event(request, hook, suffix, text, "agent_transfer", meta)
    if hook.agent_answered:
        return _twiml(voice.goodbye(GOODBYE))
    if hook.turn is None:
        # No turn to carry on from: a new gather could reuse an id and be dropped as a repeat.
        return _twiml(voice.goodbye(AGENT_MISSED_BYE))
    return _twiml(voice.speak(AGENT_MISSED, turn=hook.next_turn))


_SIGNATURE = Param(
    "X-Twilio-Signature",
    "header",
    "base64 HMAC-SHA1 with [twilio] auth_token of the public URL (query included) followed "
    "by every POST parameter, sorted by name, name and value concatenated",
    required=True,
)
_ERRORS = (400, 401, 404, 413)

ROUTES: tuple[Route, ...] = (
    Route("POST", "/channels/voice/twilio", voice_call,
          "Twilio incoming call (the number's Voice URL): greets the caller with what omni "
          "knows of them and listens; answers TwiML (text/xml)",
          "channels", errors=_ERRORS, params=(_SIGNATURE,)),
    Route("POST", "/channels/voice/twilio/gather", voice_gather,
          "Twilio <Gather> action: stores what the caller said or keyed, asks the voice bot "
          "and speaks its replies, or transfers to an agent; answers TwiML",
          "channels", errors=_ERRORS,
          params=(_SIGNATURE, Param("turn", "query", "set by omni in the action URL"),
                  Param("reprompt", "query", "1 on the one re-prompt after silence"))),
    Route("POST", "/channels/voice/twilio/status", voice_status,
          "Twilio status callback: keeps the latest status per call and puts the call's end "
          "(status, duration) on the timeline once; answers an empty TwiML document",
          "channels", errors=_ERRORS, params=(_SIGNATURE,)),
    Route("POST", "/channels/voice/twilio/dial", voice_dial,
          "Twilio <Dial> action: puts the outcome of the transfer to an agent on the "
          "timeline; answers TwiML (goodbye, or back to the bot)",
          "channels", errors=_ERRORS,
          params=(_SIGNATURE, Param("turn", "query", "set by omni in the action URL"))),
)  # fmt: skip


# -- reading and storing --------------------------------------------------------------


async def _webhook(request: web.Request) -> tuple[VoiceAdapter, CallWebhook]:
    structlog.contextvars.bind_contextvars(channel=NAME)
    voice: VoiceAdapter = http.adapter(request, NAME)
    inbound = await http.inbound(request)
    voice.verify(inbound)
    return voice, voice.read(inbound)


def _twiml(document: str) -> web.Response:
    return web.Response(text=document, content_type=TWIML_CONTENT_TYPE, charset="utf-8")


async def _caller(request: web.Request, hook: CallWebhook) -> str | None:
    """The caller's customer: by their voice identity, else the one customer whose
    verified profile phone is the calling number (see omni.identity)."""
    return await claim_verified_phone(request.app[STORE], NAME, hook.customer)


async def _context(store: Store, cid: str) -> Context | None:
    try:
        return await store.contexts.read(cid)
    except NotFound:  # an identity whose first message never got stored
        return None


async def _store_inbound(request: web.Request, hook: CallWebhook) -> tuple[Message, bool]:
    received = hook.events[0]
    assert isinstance(received, Received)  # the call and a non-empty gather are messages
    inbox = request.app[SERVICES].inbox
    return await inbox.ingest(received.message, notify_bot=False)


async def _store_event(
    request: web.Request,
    hook: CallWebhook,
    suffix: str,
    text: str,
    event: str,
    meta: dict[str, MetaValue],
) -> Message:
    """Something that happened to the call, on the timeline once (its id is the call's)."""
    store = request.app[STORE]
    cid, _ = await store.customers.resolve(NAME, hook.customer)
    message = Message(
        id=new_message_id(),
        customer_id=cid,
        conversation_id="",
        channel=NAME,
        direction="inbound",
        author=SYSTEM_AUTHOR,
        received_at="",
        channel_message_id=f"{hook.call_id}:{suffix}",
        text=text,
        voice=Voice(call_id=hook.call_id),
        metadata={"voice_event": event, **meta},
    )
    identity = Identity(channel=NAME, external_id=hook.customer, linked_at=iso(now_ms()))
    stored, _, created, _ = await store.timeline.append(cid, message, identity=identity)
    if created:
        await request.app[SERVICES].live.publish(cid, "message", msgspec.to_builtins(stored))
    return stored


async def _store_said(
    request: web.Request, heard: Message, index: int, text: str, handoff: bool
) -> None:
    """One reply of the bot, as spoken: outbound, delivered, id derived from what it answers."""
    assert heard.voice is not None and heard.author.id is not None
    meta: dict[str, MetaValue] = {"voice_event": "said"}
    if handoff:
        meta["handoff"] = True
    message = Message(
        id=new_message_id(),
        customer_id=heard.customer_id,
        conversation_id="",
        channel=NAME,
        direction="outbound",
        author=BOT_AUTHOR,
        received_at="",
        channel_message_id=_said_id(heard, index),
        text=text,
        voice=Voice(call_id=heard.voice.call_id),
        reply_to=heard.id,
        metadata=meta,
    )
    status = MessageStatus(state="delivered", at=iso(now_ms()) or "")
    identity = Identity(channel=NAME, external_id=heard.author.id)
    stored, _, created, _ = await request.app[STORE].timeline.append(
        heard.customer_id, message, identity=identity, status=status
    )
    if created:
        services = request.app[SERVICES]
        await services.live.publish(heard.customer_id, "message", msgspec.to_builtins(stored))
        await services.handoffs.on_reply(stored)  # first-response time, per channel


def _said_id(heard: Message, index: int) -> str:
    return f"{heard.channel_message_id}:reply:{index}"


async def record_status(redis: Redis, cid: str, hook: CallWebhook) -> bool:
    """Keep the call's latest status; False when `hook` is older news than what is held."""
    assert hook.status is not None
    key = keys.calls(cid)
    async with redis.pipeline(transaction=True) as pipe:
        while True:
            try:
                await pipe.watch(key)
                held = await pipe.hget(key, hook.call_id)
                old_status, old_sequence = _parse_status(held)
                if not status_supersedes(hook.status, hook.sequence, old_status, old_sequence):
                    return False  # leaving the block unwatches
                pipe.multi()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
                pipe.hset(key, hook.call_id, f"{hook.status} {_seq(hook.sequence)}")
                await pipe.execute()
                return True
            except WatchError:  # another callback of the same customer wrote first
                continue


def _seq(sequence: int | None) -> str:
    return "-" if sequence is None else str(sequence)


def _parse_status(held: bytes | str | None) -> tuple[str | None, int | None]:
    if not held:
        return None, None
    text = held.decode() if isinstance(held, bytes) else held
    status, _, sequence = text.partition(" ")
    return status, int(sequence) if sequence.isdigit() else None


# -- the bot --------------------------------------------------------------------------


async def _ask_bot(request: web.Request, hook: CallWebhook, heard: Message) -> Turn:
    """Call the voice bot while the caller waits; its replies are stored as spoken."""
    target = request.app[SETTINGS].bots.get(NAME)
    if target is None:
        return Turn((NO_BOT,))
    context = await request.app[STORE].contexts.read(heard.customer_id)
    job = Job(
        # Derived from the message, so a bot de-duplicating by delivery id sees one.
        delivery_id="dlv_" + heard.id.removeprefix("msg_"),
        customer_id=heard.customer_id,
        kind=BOT_KIND,
        payload=bot_event(NAME, heard, context),
        attempt=1,
    )
    answers: list[BotAnswer] = []

    async def on_answer(_: Job, answer: BotAnswer) -> None:
        for index, reply in enumerate(answer.replies):
            await _store_said(request, heard, index, reply.text, answer.handoff)
        answers.append(answer)

    session = request.app[SERVICES].session
    outcome = await BotDispatcher(session, {NAME: target}, on_answer=on_answer)(job)
    if outcome.status != "delivered" or not answers:
        log.warning("voice bot gave no answer", reason=outcome.reason, call=hook.call_id)
        return Turn((BOT_FAILED,))
    said = tuple(reply.text for reply in answers[0].replies)
    return Turn(said or (LISTENING,), handoff=answers[0].handoff)


async def _replay(request: web.Request, heard: Message) -> Turn:
    """The turn already answered for this message: its stored replies, said again."""
    store = request.app[STORE]
    said: list[Message] = []
    while True:
        entry = await store.timeline.entry_of(heard.customer_id, NAME, _said_id(heard, len(said)))
        found = await store.timeline.message_at(heard.customer_id, entry) if entry else None
        if found is None:
            break
        said.append(found)
    if not said:  # no bot, or it failed, or the first request is still waiting on it
        return Turn((NO_BOT,) if NAME not in request.app[SETTINGS].bots else (REPEAT,))
    handoff = any(m.metadata.get("handoff") for m in said)
    return Turn(tuple(m.text or "" for m in said), handoff=handoff)


# -- what omni says -------------------------------------------------------------------


def greeting(context: Context | None) -> str:
    """The first thing a caller hears: by name when omni knows them, then what they were
    last about (an order, the topic, or their last message and where they wrote it)."""
    if context is None:
        return HELLO
    name = (context.customer.profile.name or "").split()
    hello = f"Hi {name[0]}, welcome back." if name else "Welcome back."
    about = _last_about(context)
    return f"{hello} {about or 'How can I help you today?'}"


def _last_about(context: Context) -> str | None:
    order = context.cart.order_id or _fact(context, "order_id")
    if order:
        return f"Are you calling about order {order}?"
    if context.conversation.topic:
        return f"Are you calling about {context.conversation.topic}?"
    for message in reversed(context.recent_messages):
        if message.direction == "inbound" and message.author.kind == "customer" and message.text:
            where = _CHANNEL_NAMES.get(message.channel, message.channel)
            verb = "said" if message.channel == NAME else "wrote"
            quote = _clip(message.text)
            return f"Last time, on {where}, you {verb}: {quote}. Is that why you are calling?"
    last = context.customer.last_channel
    if last and last != NAME:
        where = _CHANNEL_NAMES.get(last, last)
        return f"I see you were with us on {where}. How can I help you today?"
    return None


def _fact(context: Context, name: str) -> str | None:
    fact = context.facts.get(name)
    return str(fact.value) if fact is not None and fact.value not in (None, "") else None


def _clip(text: str) -> str:
    text = " ".join(text.split()).rstrip(".!?;:, ")
    if len(text) <= _QUOTE_MAX:
        return text
    return text[:_QUOTE_MAX].rsplit(" ", 1)[0] + "…"


def call_ended(hook: CallWebhook) -> str:
    """The call's end as an agent reads it in the history."""
    if hook.duration_s is None:
        return f"Call ended: {hook.status}"
    minutes, seconds = divmod(hook.duration_s, 60)
    took = f"{minutes} min {seconds} s" if minutes else f"{seconds} s"
    return f"Call ended: {hook.status}, {took}"


# -- setup ----------------------------------------------------------------------------

_SETTING_NAMES = {
    "voice: auth_token": "twilio.auth_token:",
    "voice: agent_number": "twilio.agent_number:",
    "voice: public_url": "server.public_url:",
}


def setup(
    settings: Settings, session: aiohttp.ClientSession, store: Store
) -> tuple[VoiceAdapter | None, Sender | None]:
    """Configured by `[twilio] auth_token`; the sender fails every reply with a reason."""
    config = settings.twilio
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
    return adapter, adapter.deliver
