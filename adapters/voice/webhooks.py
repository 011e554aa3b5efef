"""What each Twilio voice webhook becomes: a `CallWebhook` (the call facts the routes need)
with its timeline events (the table in `adapters.voice.protocol`), every parameter read
defensively and bounded."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Final, Literal

import msgspec

from adapters.voice.config import NAME as CHANNEL
from adapters.voice.twiml import E164
from omni.channel import ChannelEvent, Received, Skipped
from omni.errors import BadRequest
from omni.model import InboundMessage
from omni.phones import canonical_external_id

TERMINAL_STATUSES: Final = frozenset({"completed", "busy", "failed", "no-answer", "canceled"})
WebhookKind = Literal["call", "gather", "status", "dial"]
Meta = Mapping[str, str | int | None]
_INT = re.compile(r"[0-9]{1,12}")
_FLOAT = re.compile(r"[0-9]{1,3}(\.[0-9]{1,20})?")
AGENT_DIGIT: Final = "0"
_AGENT_WORDS = re.compile(r"\b(agent|human|representative|operator)\b", re.IGNORECASE)


def read_webhook(
    kind: WebhookKind, params: Mapping[str, str], ours: Mapping[str, str]
) -> CallWebhook:
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
        return self.customer if E164.fullmatch(self.customer) else None


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
