"""Twilio Messaging, pure: read its webhooks, count segments, write its API requests.
No I/O, no web server, no Redis (the sender and the routes do those).

Webhooks (https://www.twilio.com/docs/messaging/guides/webhook-request) are form-encoded
and signed with X-Twilio-Signature (`omni.twilio`, shared with voice). An inbound message
carries MessageSid (SM…, MM… for MMS), From, To, Body, NumMedia with MediaUrl{N} and
MediaContentType{N}, NumSegments, and OptOutType when Twilio recognised a keyword. A
status callback carries MessageSid, MessageStatus and, on failure, ErrorCode.

Segments are counted in adapters.sms.segments; replies are written, and the Messaging
API's answers read, in adapters.sms.outbound.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal
from urllib.parse import parse_qsl

import msgspec

from adapters.sms.outbound import MEDIA_MAX, failure_reason
from omni.channel import ChannelEvent, InboundRequest, Received, Skipped
from omni.errors import BadRequest, ConfigError
from omni.model import (
    ATTACHMENTS_MAX,
    TEXT_MAX,
    Attachment,
    AttachmentType,
    DeliveryState,
    InboundMessage,
    MetaValue,
)
from omni.phones import canonical_external_id
from omni.twilio import FORM, TwilioSignature, first_values, form_params, media_type

CHANNEL: Final = "sms"
INBOUND_PATH: Final = "/channels/sms/twilio"
STATUS_PATH: Final = "/channels/sms/status"

# Keywords Twilio's Advanced Opt-Out knows by default (long codes), matched on the whole
# body, case-insensitively (CHANNELS.md 7.5); YES and INFO are handled as well.
STOP_WORDS: Final = frozenset(
    {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"}
)
START_WORDS: Final = frozenset({"START", "YES", "UNSTOP"})
HELP_WORDS: Final = frozenset({"HELP", "INFO"})
Keyword = Literal["stop", "start", "help"]

_STATES: Mapping[str, DeliveryState] = {
    "accepted": "queued",
    "scheduled": "queued",
    "queued": "queued",
    "sending": "queued",
    "sent": "sent",
    "delivered": "delivered",
    "read": "delivered",
    "undelivered": "failed",
    "failed": "failed",
    "canceled": "failed",
}
_GEO = ("FromCity", "FromState", "FromZip", "FromCountry")
_ID_MAX = 64


def keyword(body: str, opt_out_type: str | None) -> Keyword | None:
    """The opt-out keyword a message is: Twilio's OptOutType when it sent one, else the
    whole body (trimmed, any case, a final . or ! allowed) when it is one."""
    if opt_out_type:
        kind = opt_out_type.strip().lower()
        if kind in ("stop", "start", "help"):
            return kind  # type: ignore[return-value]  # narrowed by the test above
    word = body.strip().rstrip(".!").strip().upper()
    if word in STOP_WORDS:
        return "stop"
    if word in START_WORDS:
        return "start"
    if word in HELP_WORDS:
        return "help"
    return None


@dataclass(frozen=True)
class InboundSms:
    """One inbound message webhook, read."""

    sid: str
    customer: str  # the sender's number, canonical (omni.phones); the sms identity
    message: InboundMessage
    keyword: Keyword | None


@dataclass(frozen=True)
class Receipt:
    """One status callback, read: what became of a message omni sent."""

    sid: str
    customer: str  # the recipient (To), canonical
    status: str  # Twilio's MessageStatus
    state: DeliveryState | None  # ours; None for statuses of inbound messages
    error_code: int | None
    reason: str | None


class SmsProtocol:
    """Twilio Messaging's webhooks for one account (its Auth Token) at omni's public URL."""

    channel = CHANNEL

    def __init__(self, auth_token: str, public_url: str) -> None:
        try:
            self._signature = TwilioSignature(auth_token, public_url)
        except ConfigError as exc:
            raise ConfigError(f"sms: {exc}") from None
        self.public_url = self._signature.public_url

    def __repr__(self) -> str:
        return f"SmsProtocol(public_url={self.public_url!r}, auth_token='****')"

    def verify(self, request: InboundRequest) -> None:
        """Raise `Unauthenticated` unless X-Twilio-Signature matches (omni.twilio)."""
        self._signature.verify(
            method=request.method, url=request.url, headers=request.headers, body=request.body
        )

    def parse(self, request: InboundRequest) -> list[ChannelEvent]:
        """The seam's view: an inbound message, or Skipped for a status callback."""
        if self._signature.path_query(request.url).partition("?")[0] == STATUS_PATH:
            receipt = self.read_receipt(request)
            return [Skipped(f"sms: status {receipt.status} of {receipt.sid}")]
        inbound = self.read_message(request)
        return [Received(inbound.message)]

    def read_message(self, request: InboundRequest) -> InboundSms:
        """An inbound message webhook. `BadRequest` for one that cannot be read."""
        params = _params(request)
        sid = _sid(params)
        sender = _required(params, "From")
        customer = canonical_external_id(CHANNEL, sender)
        body = params.get("Body", "")
        if len(body) > TEXT_MAX:
            raise BadRequest(f"Body is longer than {TEXT_MAX} characters", field="Body")
        attachments = _media(params)
        meta: dict[str, MetaValue] = {
            "to": params.get("To") or None,
            "messaging_service_sid": params.get("MessagingServiceSid") or None,
            "num_segments": _int(params, "NumSegments", 0, 100),
            "num_media": len(attachments) or None,
        }
        meta |= {name.lower().replace("from", "from_"): params.get(name) or None for name in _GEO}
        found = keyword(body, params.get("OptOutType"))
        if found:
            meta["sms_keyword"] = found
        if not body and not attachments:
            attachments = [Attachment(type="other")]  # Twilio sent nothing readable: noted
            meta["empty"] = True
        fields = {
            "channel": CHANNEL,
            "external_id": customer,
            "channel_message_id": sid,
            "text": body or None,
            "attachments": msgspec.to_builtins(attachments),
            "metadata": {k: v[:256] if isinstance(v, str) else v
                         for k, v in meta.items() if v is not None},
        }  # fmt: skip
        try:  # convert, not the constructor: it checks the model's limits and patterns
            message = msgspec.convert(
                {k: v for k, v in fields.items() if v is not None}, InboundMessage
            )
        except msgspec.ValidationError as exc:
            raise BadRequest(f"the webhook breaks a message limit: {exc}") from None
        return InboundSms(sid=sid, customer=customer, message=message, keyword=found)

    def read_receipt(self, request: InboundRequest) -> Receipt:
        """A status callback. `BadRequest` for one that cannot be read."""
        params = _params(request)
        sid = _sid(params)
        status = _required(params, "MessageStatus").strip().lower()
        customer = canonical_external_id(CHANNEL, _required(params, "To"))
        code = _int(params, "ErrorCode", 0, 999_999)
        state = _STATES.get(status)
        reason = failure_reason(code, status) if state == "failed" else None
        return Receipt(sid, customer, status, state, code, reason)


# -- reading webhooks -----------------------------------------------------------------


def _params(request: InboundRequest) -> dict[str, str]:
    try:
        if request.method.upper() == "GET":  # a number's webhook may be set to GET
            query = request.url.partition("?")[2].partition("#")[0]
            return first_values(parse_qsl(query, keep_blank_values=True, errors="strict"))
        if media_type(request.headers) != FORM:
            raise BadRequest("Twilio messaging webhooks are form-encoded")
        return first_values(form_params(request.body))
    except (ValueError, UnicodeError):
        raise BadRequest("the webhook cannot be decoded") from None


def _required(params: Mapping[str, str], name: str) -> str:
    value = params.get(name, "").strip()
    if not value:
        raise BadRequest(f"a Twilio messaging webhook needs {name}", field=name)
    if len(value) > 256:
        raise BadRequest(f"{name} is too long", field=name)
    return value


def _sid(params: Mapping[str, str]) -> str:
    sid = params.get("MessageSid") or params.get("SmsMessageSid") or params.get("SmsSid") or ""
    if not (sid.isascii() and sid.isalnum() and 2 < len(sid) <= _ID_MAX):
        raise BadRequest("a Twilio messaging webhook needs a MessageSid", field="MessageSid")
    return sid


def _int(params: Mapping[str, str], name: str, low: int, high: int) -> int | None:
    value = params.get(name, "").strip()
    if not value:
        return None
    if not (value.isascii() and value.isdigit() and low <= int(value) <= high):
        raise BadRequest(f"{name} must be a whole number from {low} to {high}", field=name)
    return int(value)


def _media(params: Mapping[str, str]) -> list[Attachment]:
    """MediaUrl{N} / MediaContentType{N} for N below NumMedia, each one an attachment
    typed by its content type."""
    count = _int(params, "NumMedia", 0, MEDIA_MAX) or 0
    attachments = []
    for index in range(min(count, ATTACHMENTS_MAX)):
        url = params.get(f"MediaUrl{index}", "")
        if not url.startswith(("https://", "http://")) or len(url) > 2048:
            raise BadRequest(
                f"NumMedia is {count} but MediaUrl{index} is not an http(s) URL",
                field=f"MediaUrl{index}",
            )
        mime = params.get(f"MediaContentType{index}", "").strip().lower()[:128] or None
        attachments.append(Attachment(type=_kind(mime), url=url, mime=mime))
    return attachments


def _kind(mime: str | None) -> AttachmentType:
    major = (mime or "").partition("/")[0]
    if major in ("image", "video", "audio"):
        return major  # type: ignore[return-value]  # the three are attachment types
    return "file"  # a vCard, a PDF, or a type Twilio did not name
