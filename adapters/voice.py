"""Twilio Programmable Voice: the phone channel.

Upstream API: Twilio Programmable Voice webhooks and TwiML
(https://www.twilio.com/docs/usage/webhooks/voice-webhooks, https://www.twilio.com/docs/voice/twiml).
Twilio calls omni synchronously, form-encoded, and every answer is a TwiML document:

    POST /channels/voice/twilio          incoming call (the number's Voice URL)
    POST /channels/voice/twilio/gather   <Gather action>: what the caller said or keyed
    POST /channels/voice/twilio/status   StatusCallback: call progress, in any order
    POST /channels/voice/twilio/dial     <Dial action>: how the transfer to an agent ended

Signature scheme: `X-Twilio-Signature`, checked by `omni.twilio.TwilioSignature`, the one
implementation every Twilio channel shares (public URL + sorted decoded params,
HMAC-SHA1 with the auth token, base64; with and without the port; `bodySHA256`).

What a webhook becomes (`VoiceAdapter.read`, or `parse` for the seam's event list):

    incoming call     Received: a message with no text and `voice.call_id`, metadata
                      voice_event="call_started", id "<CallSid>:call". It resolves the caller
                      (From, or To on an outbound call) and puts the call on the timeline.
    gather, input     Received: the transcript (or the digits) as text, `voice` filled in,
                      id "<CallSid>:gather:<turn>" so a retried callback is stored once.
    gather, empty     Skipped; `CallWebhook.empty` is true (re-prompt once, then hang up).
    status, dial      Skipped; the call facts (status, SequenceNumber, Timestamp, durations,
                      DialCallStatus) are on the `CallWebhook` for the core's call state.

Turns: every Gather action URL this module renders carries `turn=N` (and `reprompt=1` on the
one re-prompt), so the gather callback names its turn without any state in omni.
"""

from __future__ import annotations

import hashlib
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Final, Literal
from urllib.parse import parse_qsl, urlencode

import msgspec

from adapters.base import ChannelEvent, Delivery, InboundRequest, Received, Skipped
from omni.errors import BadRequest, ConfigError
from omni.model import InboundMessage, Message
from omni.phones import canonical_external_id
from omni.settings import Secret
from omni.twilio import (
    FORM,
    TwilioSignature,
    first_values,
    form_params,
    media_type,
)

CHANNEL: Final = "voice"
TWIML_CONTENT_TYPE: Final = "text/xml"
BASE_PATH: Final = "/channels/voice/twilio"
TERMINAL_STATUSES: Final = frozenset({"completed", "busy", "failed", "no-answer", "canceled"})
REASON_NOT_IN_CALL: Final = (
    "voice replies are spoken during a call, by the voice bot: a reply sent while the "
    "customer is not on the line cannot reach them; send it on another channel"
)

WebhookKind = Literal["call", "gather", "status", "dial"]
Meta = Mapping[str, str | int | None]

_KINDS: dict[str, WebhookKind] = {
    "": "call",
    "/gather": "gather",
    "/status": "status",
    "/dial": "dial",
}
_RANK = {"queued": 0, "initiated": 0, "ringing": 1, "in-progress": 2, "answered": 2}
_E164 = re.compile(r"\+[1-9][0-9]{1,14}")
_CLIENT = re.compile(r"client:[A-Za-z0-9_]+")
_INT = re.compile(r"[0-9]{1,12}")
_FLOAT = re.compile(r"[0-9]{1,3}(\.[0-9]{1,20})?")
# Characters XML 1.0 cannot carry; dropped from spoken text rather than breaking the document.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_MODES = frozenset({"speech", "dtmf", "speech dtmf", "dtmf speech"})
AGENT_DIGIT: Final = "0"
_AGENT_WORDS = re.compile(r"\b(agent|human|representative|operator)\b", re.IGNORECASE)


@dataclass(frozen=True)
class CallWebhook:
    """One voice webhook, read: the timeline events plus the call facts the routes need."""

    kind: WebhookKind
    call_id: str  # CallSid
    customer: str  # the customer's external_id: From, or To on an outbound call
    events: tuple[ChannelEvent, ...]
    account_id: str | None = None
    to: str | None = None
    direction: str | None = None
    status: str | None = None  # CallStatus
    turn: int | None = None  # from our own action URL (?turn=N)
    reprompted: bool = False  # this gather was the re-prompt (?reprompt=1)
    transcript: str | None = None
    confidence: float | None = None
    digits: str | None = None
    sequence: int | None = None  # SequenceNumber of a status callback, from 0
    at_ms: int | None = None  # Timestamp of a status callback
    duration_s: int | None = None  # CallDuration, on a completed call
    dial_status: str | None = None
    dial_call_id: str | None = None
    dial_duration_s: int | None = None

    @property
    def empty(self) -> bool:
        """A gather that ended with no speech and no digits."""
        return self.kind == "gather" and not self.transcript and not self.digits

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def next_turn(self) -> int:
        return (self.turn or 0) + 1

    @property
    def wants_agent(self) -> bool:
        """The caller asked for a person: keyed 0, or said agent, human or representative."""
        if self.digits:
            return self.digits == AGENT_DIGIT
        return bool(self.transcript and _AGENT_WORDS.search(self.transcript))

    @property
    def agent_answered(self) -> bool:
        return self.dial_status in ("answered", "completed")

    @property
    def customer_phone(self) -> str | None:
        """The customer's number when it is E.164 (not a Voice SDK client or SIP URI)."""
        return self.customer if _E164.fullmatch(self.customer) else None


def status_supersedes(
    new_status: str, new_sequence: int | None, old_status: str | None, old_sequence: int | None
) -> bool:
    """Whether a call status should replace the one held. Status callbacks are separate
    requests that arrive in any order: order by SequenceNumber when both have one, else by
    progress; a finished call never goes back to ringing."""
    if old_status is None:
        return True
    if old_status in TERMINAL_STATUSES and new_status not in TERMINAL_STATUSES:
        return False
    if new_sequence is not None and old_sequence is not None:
        return new_sequence > old_sequence
    return _rank(new_status) > _rank(old_status)


def _rank(status: str) -> int:
    return 3 if status in TERMINAL_STATUSES else _RANK.get(status, 0)


class VoiceAdapter:
    """The voice channel over Twilio. Pure: configuration in, no I/O, no Redis."""

    channel = CHANNEL

    def __init__(
        self,
        auth_token: str | Secret,
        agent_number: str | None,
        public_url: str,
        *,
        language: str = "en-US",
        say_voice: str | None = "Polly.Joanna",
        speech_model: str | None = None,
        dial_timeout: int = 20,
        base_path: str = BASE_PATH,
    ) -> None:
        token = auth_token.reveal() if isinstance(auth_token, Secret) else auth_token
        if agent_number and not _dial_target(agent_number):
            raise ConfigError(
                "voice: agent_number must be E.164 (+14155550142), client:<name> or sip:<uri>"
            )
        try:
            self._signature = TwilioSignature(token, public_url)
        except ConfigError as exc:
            raise ConfigError(f"voice: {exc}") from None
        self.public_url = self._signature.public_url
        self.agent_number = agent_number or None  # None: no one to transfer calls to
        self.language = language
        self.say_voice = say_voice
        self.speech_model = speech_model
        self.dial_timeout = dial_timeout
        self.base_path = "/" + base_path.strip("/")

    def __repr__(self) -> str:
        return f"VoiceAdapter(public_url={self.public_url!r}, auth_token='****')"

    # -- inbound ----------------------------------------------------------------------

    def signed_url(self, url: str) -> str:
        """The URL Twilio signed: the public URL, then the path and query as received."""
        return self._signature.signed_url(url)

    def verify(self, request: InboundRequest) -> None:
        """Raise `Unauthenticated` unless X-Twilio-Signature matches (omni.twilio)."""
        self._signature.verify(
            method=request.method, url=request.url, headers=request.headers, body=request.body
        )

    def parse(self, request: InboundRequest) -> list[ChannelEvent]:
        return list(self.read(request).events)

    def read(self, request: InboundRequest) -> CallWebhook:
        """Read one webhook (the route is taken from the path). Raise `BadRequest` for a
        body that cannot be read as one; never anything else."""
        path, _, query = self.signed_url(request.url)[len(self.public_url) :].partition("?")
        path = path.rstrip("/")
        kind = _KINDS.get(path[len(self.base_path) :]) if path.startswith(self.base_path) else None
        if kind is None:
            raise BadRequest("not a Twilio voice webhook path")
        try:
            ours = first_values(parse_qsl(query, keep_blank_values=True, errors="strict"))
            if request.method.upper() == "GET":  # Twilio's GET puts its parameters in the query
                params = ours
            elif media_type(request.headers) == FORM:
                params = first_values(form_params(request.body))
            else:
                raise BadRequest("Twilio voice webhooks are form-encoded")
        except (ValueError, UnicodeError):
            raise BadRequest("the webhook cannot be decoded") from None
        return _read(kind, params, ours)

    async def deliver(self, message: Message, recipient: str) -> Delivery:
        """Voice has no asynchronous send: Twilio only speaks what omni answers to one of
        its own webhooks, so a reply queued outside a call has no way into the line."""
        return Delivery(status="failed", reason=REASON_NOT_IN_CALL, retry=False)

    # -- TwiML for the routes -----------------------------------------------------------

    def url(self, sub: str = "", **query: str | int) -> str:
        """An absolute URL under the voice base path, e.g. url("/gather", turn=2)."""
        q = urlencode(query)
        return f"{self.public_url}{self.base_path}{sub}" + (f"?{q}" if q else "")

    def speak(self, text: str | Sequence[str], *, turn: int, reprompt: bool = False) -> str:
        """Say `text` and listen for the caller's answer, which arrives as gather `turn`."""
        query = {"turn": turn, "reprompt": 1} if reprompt else {"turn": turn}
        action = self.url("/gather", **query)
        return gather(
            text,
            action=action,
            language=self.language,
            voice=self.say_voice,
            speech_model=self.speech_model,
            fallthrough=action,
        )

    def greet(self, text: str) -> str:
        """The answer to an incoming call: the greeting, then listen (turn 1)."""
        return self.speak(text, turn=1)

    def on_empty(self, hook: CallWebhook, *, reprompt: str, goodbye: str) -> str:
        """After a gather with no input: re-prompt once, then say goodbye and hang up."""
        if hook.reprompted:
            return self.goodbye(goodbye)
        return self.speak(reprompt, turn=hook.next_turn, reprompt=True)

    def goodbye(self, text: str) -> str:
        return hangup(text, voice=self.say_voice, language=self.language)

    def transfer(self, say_first: str | None = None, *, turn: int | None = None) -> str:
        """Dial the agent number from the live call; Twilio then calls /dial."""
        if self.agent_number is None:
            raise ValueError("no agent_number is configured to transfer the call to")
        action = self.url("/dial") if turn is None else self.url("/dial", turn=turn)
        return dial(
            [self.agent_number],
            action=action,
            say_first=say_first,
            timeout=self.dial_timeout,
            voice=self.say_voice,
            language=self.language,
        )

    def redirect(self, sub: str = "", **query: str | int) -> str:
        return redirect(self.url(sub, **query))


def _read(kind: WebhookKind, params: Mapping[str, str], ours: Mapping[str, str]) -> CallWebhook:
    call_id = params.get("CallSid", "")
    if not call_id:
        raise BadRequest("a Twilio voice webhook needs CallSid", field="CallSid")
    direction = params.get("Direction") or None
    outbound = bool(direction and direction.startswith("outbound"))
    customer = params.get("To" if outbound else "From", "")
    if not customer:
        raise BadRequest("a Twilio voice webhook needs From and To", field="From")
    # The caller's number in the one form every phone channel stores (omni.phones).
    customer = canonical_external_id(CHANNEL, customer)
    hook = CallWebhook(
        kind=kind,
        call_id=call_id,
        customer=customer,
        events=(),
        account_id=params.get("AccountSid") or None,
        to=params.get("To") or None,
        direction=direction,
        status=params.get("CallStatus") or None,
        turn=_int(ours, "turn"),
        reprompted=ours.get("reprompt") == "1",
    )
    if kind == "call":
        started: Meta = {
            "voice_event": "call_started",
            "call_status": hook.status,
            "direction": direction,
        }
        return replace(hook, events=(_received(hook, f"{call_id}:call", None, started),))
    if kind == "gather":
        transcript = params.get("SpeechResult", "").strip() or None
        hook = replace(
            hook,
            transcript=transcript,
            digits=params.get("Digits") or None,
            confidence=_float(params, "Confidence") if transcript else None,
        )
        if hook.empty:
            return replace(hook, events=(Skipped("voice: gather with no speech and no digits"),))
        suffix = str(hook.turn) if hook.turn is not None else _digest(params)
        meta: Meta = {
            "voice_event": "gather",
            "input": "speech" if transcript else "dtmf",
            "turn": hook.turn,
        }
        text = hook.transcript or hook.digits
        event = _received(hook, f"{call_id}:gather:{suffix}", text, meta)
        return replace(hook, events=(event,))
    if kind == "status":
        if hook.status is None:
            raise BadRequest("a status callback needs CallStatus", field="CallStatus")
        return replace(
            hook,
            events=(Skipped(f"voice: call status {hook.status}"),),
            sequence=_int(params, "SequenceNumber"),
            at_ms=_timestamp(params.get("Timestamp")),
            duration_s=_int(params, "CallDuration"),
        )
    dial_status = params.get("DialCallStatus") or None
    if dial_status is None:
        raise BadRequest("a dial action needs DialCallStatus", field="DialCallStatus")
    return replace(
        hook,
        events=(Skipped(f"voice: agent transfer ended {dial_status}"),),
        dial_status=dial_status,
        dial_call_id=params.get("DialCallSid") or None,
        dial_duration_s=_int(params, "DialCallDuration"),
    )


def _dial_target(target: str) -> bool:
    return bool(
        _E164.fullmatch(target) or _CLIENT.fullmatch(target) or target.startswith(("sip:", "sips:"))
    )


def _received(hook: CallWebhook, message_id: str, text: str | None, meta: Meta) -> Received:
    voice: dict[str, str | float | None] = {"call_id": hook.call_id, "digits": hook.digits}
    voice |= {"transcript": hook.transcript, "confidence": hook.confidence}
    fields = {
        "channel": CHANNEL,
        "external_id": hook.customer,
        "channel_message_id": message_id,
        "text": text,
        "voice": {k: v for k, v in voice.items() if v is not None},
        "metadata": {k: v for k, v in meta.items() if v is not None},
    }
    try:  # convert, not the constructor: it checks the model's limits and patterns
        message = msgspec.convert(
            {k: v for k, v in fields.items() if v is not None}, InboundMessage
        )
    except msgspec.ValidationError as exc:
        raise BadRequest(f"the webhook breaks a message limit: {exc}") from None
    return Received(message)


def _int(params: Mapping[str, str], name: str) -> int | None:
    value = params.get(name) or None
    if value is None:
        return None
    if not _INT.fullmatch(value):
        raise BadRequest(f"{name} must be a whole number", field=name)
    return int(value)


def _float(params: Mapping[str, str], name: str) -> float | None:
    value = params.get(name) or None
    if value is None:
        return None
    if not _FLOAT.fullmatch(value):
        raise BadRequest(f"{name} must be a number", field=name)
    return float(value)


def _timestamp(value: str | None) -> int | None:
    if not value:
        return None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        raise BadRequest("Timestamp must be an RFC 2822 date", field="Timestamp") from None
    if when.tzinfo is None:  # "-0000": UTC, says RFC 2822
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


def _digest(params: Mapping[str, str]) -> str:
    """A stable id for a gather whose URL has no turn: the same callback hashes the same."""
    blob = "\n".join(f"{k}={params[k]}" for k in sorted(params))
    return "h" + hashlib.sha256(blob.encode()).hexdigest()[:16]


# -- TwiML: pure renderers; text and attributes are escaped by ElementTree ------------------


def gather(
    prompts: str | Sequence[str],
    *,
    action: str,
    modes: str = "speech dtmf",
    language: str | None = "en-US",
    voice: str | None = None,
    speech_timeout: str | None = "auto",
    speech_model: str | None = None,
    timeout: int | None = None,
    hints: Sequence[str] = (),
    action_on_empty_result: bool = True,
    fallthrough: str | None = None,
) -> str:
    """Say the prompts inside a `<Gather>` that posts the answer to `action`; `fallthrough`
    is a `<Redirect>` after it, reached only if Twilio falls through the Gather."""
    if modes not in _MODES:
        raise ValueError(f"Gather input must be speech, dtmf or both, not {modes!r}")
    speech = "speech" in modes
    root = ET.Element("Response")
    listen = _add(
        root,
        "Gather",
        input=modes,
        action=action,
        method="POST",
        speechTimeout=speech_timeout if speech else None,
        language=language if speech else None,
        actionOnEmptyResult="true" if action_on_empty_result else None,
        speechModel=speech_model if speech else None,
        timeout=None if timeout is None else str(timeout),
        hints=", ".join(hints) if hints and speech else None,
    )
    for prompt in [prompts] if isinstance(prompts, str) else prompts:
        _add(listen, "Say", prompt, voice=voice, language=language)
    if fallthrough is not None:
        _add(root, "Redirect", fallthrough, method="POST")
    return _document(root)


def hangup(
    goodbye: str | None = None, *, voice: str | None = None, language: str | None = None
) -> str:
    """Optionally say goodbye, then `<Hangup/>`."""
    root = ET.Element("Response")
    if goodbye:
        _add(root, "Say", goodbye, voice=voice, language=language)
    _add(root, "Hangup")
    return _document(root)


def dial(
    targets: Sequence[str],
    *,
    action: str,
    say_first: str | None = None,
    timeout: int = 20,
    answer_on_bridge: bool = True,
    caller_id: str | None = None,
    voice: str | None = None,
    language: str | None = None,
) -> str:
    """Transfer the live call: `<Dial>` one or more targets (E.164 numbers, up to 10;
    `client:<identity>`; `sip:` URIs), then Twilio posts DialCallStatus to `action`."""
    if not targets or sum(1 for t in targets if _E164.fullmatch(t)) > 10:
        raise ValueError("Dial needs 1 to 10 numbers or other targets")
    root = ET.Element("Response")
    if say_first:
        _add(root, "Say", say_first, voice=voice, language=language)
    connect = _add(
        root,
        "Dial",
        action=action,
        method="POST",
        timeout=str(timeout),
        answerOnBridge="true" if answer_on_bridge else None,
        callerId=caller_id,
    )
    for target in targets:
        if _E164.fullmatch(target):
            _add(connect, "Number", target)
        elif _CLIENT.fullmatch(target):
            _add(connect, "Client", target.removeprefix("client:"))
        elif target.startswith(("sip:", "sips:")):
            _add(connect, "Sip", target)
        else:
            raise ValueError("a Dial target is an E.164 number, client:<identity> or a sip: URI")
    return _document(root)


def redirect(url: str) -> str:
    """Hand the call to the TwiML at `url`."""
    root = ET.Element("Response")
    _add(root, "Redirect", url, method="POST")
    return _document(root)


def empty() -> str:
    """An empty document: the answer to a status callback."""
    return _document(ET.Element("Response"))


def _add(parent: ET.Element, tag: str, text: str | None = None, **attrs: str | None) -> ET.Element:
    element = ET.SubElement(
        parent, tag, {k: _NOT_XML.sub("", v) for k, v in attrs.items() if v is not None}
    )
    if text is not None:
        element.text = _NOT_XML.sub("", text)
    return element


def _document(root: ET.Element) -> str:
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode")
