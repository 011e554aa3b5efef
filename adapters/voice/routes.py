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
and the query; see `adapters.voice.protocol`): a bad one is 401 and nothing is stored.

The voice bot (`[bots.voice]`) is called synchronously with the signed webhook of
`omni.bots`, limited to its timeout_ms, and never also through the outbox. A bot that
fails or is too slow gets the caller an apology and another turn; what they said is
stored either way. The caller reaches a person by keying 0 or saying "agent", or when the
bot answers `"handoff": true`: <Dial> to `[twilio] agent_number`.

A reply queued to a voice customer through the outbox fails with a reason: Twilio only
speaks what omni answers to one of its webhooks, so nothing can be pushed into the line.
That is also why a survey on voice is asked in the call's next <Gather> after the
conversation is resolved, and only while the call is live (`adapters.voice.surveys`).

Just over 400 lines: the call flow, each webhook's answer, reads top to bottom here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import msgspec
import structlog
from aiohttp import web

from adapters.voice.config import NAME
from adapters.voice.protocol import (
    CallWebhook,
    VoiceAdapter,
    empty,
    status_supersedes,
)
from adapters.voice.speech import (
    AGENT_MISSED,
    AGENT_MISSED_BYE,
    BOT_FAILED,
    CONNECTING,
    GOODBYE,
    HELD,
    HELD_NO_NUMBER,
    LINKED,
    LISTENING,
    NO_AGENT,
    NO_BOT,
    REPEAT,
    REPROMPT,
    call_ended,
    greeting,
)
from adapters.voice.surveys import after_answer, note_status, survey_question
from omni import channel_http
from omni.bots import KIND as BOT_KIND
from omni.bots import BotAnswer, BotDispatcher, bot_event
from omni.calls import record_status
from omni.channel import Received
from omni.clock import iso, now_ms
from omni.errors import Gone, NotFound, Unauthenticated, ValidationFailed
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
from omni.state import SERVICES, SETTINGS, STORE
from omni.store import Store
from omni.surveys import is_survey_answer
from omni.twilio import TWIML_CONTENT_TYPE

log = structlog.get_logger("adapters.voice")

LINK_CODE = re.compile(r"\d{6}")

BOT_AUTHOR = Author(kind="bot", name=f"{NAME} bot")
SYSTEM_AUTHOR = Author(kind="system", name="Twilio")


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
    stored, _ = await _store_inbound(request, hook)
    await note_status(request, stored.customer_id, hook)
    if cid is not None and voice.agent_number and await holder(request.app[STORE], cid):
        # An agent holds the conversation (or it waits for one): the caller goes to them.
        return _twiml(voice.transfer(HELD, turn=hook.turn))
    return _twiml(voice.greet(greeting(context)))


async def voice_gather(request: web.Request) -> web.Response:
    voice, hook = await _webhook(request)
    if hook.empty:
        return _twiml(voice.on_empty(hook, reprompt=REPROMPT, goodbye=GOODBYE))
    message, created = await _store_inbound(request, hook)
    await note_status(request, message.customer_id, hook)
    if is_survey_answer(message):
        # The caller keyed their answer to the survey asked at the end of the call.
        return _twiml(await after_answer(request, voice, hook, message.customer_id))
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
    # Resolved while the caller is on the line (by the bot during its turn, or by an
    # agent): the survey is asked now, keypad digits into the same <Gather>.
    says += await survey_question(request, message.customer_id)
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
        await record_status(
            request.app[STORE], cid, hook.call_id, hook.status, hook.sequence, status_supersedes
        )
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
    voice = channel_http.adapter(request, NAME, VoiceAdapter)
    inbound = await channel_http.inbound(request)
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
    stored, _, created, *_ = await store.timeline.append(cid, message, identity=identity)
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
    stored, _, created, *_ = await request.app[STORE].timeline.append(
        heard.customer_id, message, identity=identity, status=status
    )
    if created:
        services = request.app[SERVICES]
        await services.live.publish(heard.customer_id, "message", msgspec.to_builtins(stored))
        await services.handoffs.on_reply(stored)  # first-response time, per channel


def _said_id(heard: Message, index: int) -> str:
    return f"{heard.channel_message_id}:reply:{index}"


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
