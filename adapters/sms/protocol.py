"""Twilio Messaging, pure: read its webhooks, count segments, write its API requests.
No I/O, no web server, no Redis (the sender and the routes do those).

Webhooks (https://www.twilio.com/docs/messaging/guides/webhook-request) are form-encoded
and signed with X-Twilio-Signature (`omni.twilio`, shared with voice). An inbound message
carries MessageSid (SM…, MM… for MMS), From, To, Body, NumMedia with MediaUrl{N} and
MediaContentType{N}, NumSegments, and OptOutType when Twilio recognised a keyword. A
status callback carries MessageSid, MessageStatus and, on failure, ErrorCode.

Segments (https://www.twilio.com/docs/glossary/what-sms-character-limit): a text of only
GSM-7 characters is 160 characters in one segment, 153 per segment when longer (the rest
of each is the concatenation header); `^ { } \\ [ ~ ] | €` and form feed take two (an
escape and the character), and a pair is never split across segments. One character
outside GSM-7 makes the whole text UCS-2: 70 UTF-16 code units in one segment, 67 per
segment when longer, a surrogate pair (an emoji) never split.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal
from urllib.parse import parse_qsl

import msgspec

from omni.channel import ChannelEvent, Delivery, InboundRequest, Received, Skipped
from omni.errors import BadRequest, ConfigError
from omni.model import (
    ATTACHMENTS_MAX,
    TEXT_MAX,
    Attachment,
    AttachmentType,
    DeliveryState,
    InboundMessage,
    Message,
    MetaValue,
)
from omni.phones import canonical_external_id
from omni.twilio import FORM, TwilioSignature, first_values, form_params, media_type

CHANNEL: Final = "sms"
INBOUND_PATH: Final = "/channels/sms/twilio"
STATUS_PATH: Final = "/channels/sms/status"
TWIML_CONTENT_TYPE: Final = "text/xml"
BODY_MAX: Final = 1600  # Twilio's limit on one message's Body, in characters
MEDIA_MAX: Final = 10  # MediaUrl per message, in and out

# Keywords Twilio's Advanced Opt-Out knows by default (long codes), matched on the whole
# body, case-insensitively (CHANNELS.md 7.5); YES and INFO are handled as well.
STOP_WORDS: Final = frozenset(
    {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"}
)
START_WORDS: Final = frozenset({"START", "YES", "UNSTOP"})
HELP_WORDS: Final = frozenset({"HELP", "INFO"})
Keyword = Literal["stop", "start", "help"]

# Delivery.reason is exactly REASON_OPTED_OUT for an opted-out customer; other failures
# are "<slug>: <detail>".
REASON_OPTED_OUT: Final = "opted_out"
REASON_TOO_LONG: Final = "too_long"
REASON_UNSENDABLE: Final = "unsendable"
OPTED_OUT_CODE: Final = 21610

# Twilio error codes (https://www.twilio.com/docs/api/errors) a reply can fail with.
_ERRORS: Mapping[int, tuple[str, str]] = {
    21610: (REASON_OPTED_OUT, "the recipient has opted out (texted STOP)"),
    21211: ("invalid_number", "the To number is not a valid phone number"),
    21408: ("region_disabled", "sending to this region is not enabled on the account"),
    21614: ("not_mobile", "the To number cannot receive text messages"),
    30003: ("unreachable", "the handset is unreachable (off or out of coverage)"),
    30004: ("blocked", "the recipient blocked messages from this sender"),
    30005: ("unknown_number", "the number is unknown or no longer in service"),
    30006: ("landline", "a landline or a carrier that cannot take the message"),
    30007: ("carrier_filtered", "the carrier filtered the message"),
    30008: ("undelivered", "the carrier did not say why"),
}
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
# Characters XML 1.0 cannot carry; dropped rather than breaking the document.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")

_GSM_BASIC: Final = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM_EXTENDED: Final = frozenset("^{}\\[~]|€\f")


@dataclass(frozen=True)
class Segments:
    encoding: Literal["GSM-7", "UCS-2"]
    units: int  # septets (GSM-7) or UTF-16 code units (UCS-2)
    count: int  # segments the text is sent as


def segments(text: str) -> Segments:
    """How many segments `text` is sent as, in which encoding (see the module doc)."""
    if all(ch in _GSM_BASIC or ch in _GSM_EXTENDED for ch in text):
        sizes = [2 if ch in _GSM_EXTENDED else 1 for ch in text]
        return Segments("GSM-7", sum(sizes), _count(sizes, single=160, part=153))
    sizes = [2 if ord(ch) > 0xFFFF else 1 for ch in text]
    return Segments("UCS-2", sum(sizes), _count(sizes, single=70, part=67))


def _count(sizes: Sequence[int], *, single: int, part: int) -> int:
    """Segments for characters of these sizes: greedy, a character never split."""
    if sum(sizes) <= single:
        return 1
    count, used = 1, 0
    for size in sizes:
        if used + size > part:
            count, used = count + 1, 0
        used += size
    return count


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


def failure_reason(code: int | None, status: str = "failed") -> str:
    """The reason a failed send shows: exactly `opted_out` for 21610, else "<slug>: …"."""
    if code is None:
        return f"{status}: Twilio gave no error code"
    slug, text = _ERRORS.get(code, (status, "see https://www.twilio.com/docs/api/errors"))
    if slug == REASON_OPTED_OUT:
        return REASON_OPTED_OUT
    return f"{slug}: Twilio error {code}, {text}"


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


def render_send(
    message: Message,
    to: str,
    *,
    sender: str,
    status_callback: str | None,
    max_segments: int,
) -> list[tuple[str, str]]:
    """The Messaging API's form fields for one reply, in the order Twilio's own examples
    write them. `ValueError` with a `REASON_*` slug first when it cannot be sent."""
    text = message.text or ""
    if message.quick_replies:  # SMS has no buttons: the options are written out
        options = [q.title or q.payload for q in message.quick_replies]
        text = "\n".join([text, *(f"- {option}" for option in options)]).strip()
    media = []
    for attachment in message.attachments:
        if not (attachment.url or "").startswith(("https://", "http://")):
            raise ValueError(f"{REASON_UNSENDABLE}: an MMS attachment needs an http(s) url")
        media.append(attachment.url or "")
    if len(media) > MEDIA_MAX:
        raise ValueError(f"{REASON_UNSENDABLE}: at most {MEDIA_MAX} media in one message")
    if not text and not media:
        raise ValueError(f"{REASON_UNSENDABLE}: nothing to send, no text and no media")
    counted = segments(text)
    if counted.count > max_segments or len(text) > BODY_MAX:
        raise ValueError(
            f"{REASON_TOO_LONG}: {len(text)} characters are {counted.count} segments in "
            f"{counted.encoding}; [sms] max_segments is {max_segments} (and Twilio takes at "
            f"most {BODY_MAX} characters): shorten the reply"
        )
    fields = [("To", to)]
    fields.append(("MessagingServiceSid" if sender.startswith("MG") else "From", sender))
    if text:
        fields.append(("Body", text))
    fields += [("MediaUrl", url) for url in media]
    if status_callback:
        fields.append(("StatusCallback", status_callback))
    return fields


def send_outcome(status: int, body: bytes) -> Delivery:
    """What the Messaging API's answer to a send means for the reply."""
    try:
        data = json.loads(body) if body else {}
    except ValueError:
        data = {}
    data = data if isinstance(data, dict) else {}
    if 200 <= status < 300:
        sid = data.get("sid")
        if not isinstance(sid, str) or not sid:
            return Delivery("failed", reason="upstream_error: Twilio answered without a sid")
        if data.get("status") == "failed":
            return Delivery("failed", sid, failure_reason(_code(data.get("error_code"))))
        return Delivery("sent", channel_message_id=sid)
    code = _code(data.get("code"))
    message = str(data.get("message") or "")[:200]
    if status == 429 or code == 20429:
        return Delivery("failed", reason=f"rate_limited: {message or 'too many requests'}",
                        retry=True)  # fmt: skip
    if status >= 500:
        return Delivery("failed", reason=f"upstream_error: Twilio answered {status}", retry=True)
    if status in (401, 403) or code == 20003:
        return Delivery(
            "failed", reason=f"unauthorized: check [sms] account_sid and [twilio] auth_token "
            f"({message or status})",
        )  # fmt: skip
    if code in _ERRORS:
        return Delivery("failed", reason=failure_reason(code))
    return Delivery("failed", reason=f"rejected: Twilio error {code or status}, {message}")


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


def _code(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


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


# -- TwiML ------------------------------------------------------------------------------


def twiml(reply: str | None = None) -> str:
    """What omni answers an inbound message: nothing (`<Response/>`; replies go out
    through the API), or one `<Message>` (the answer to HELP)."""
    root = ET.Element("Response")
    if reply:
        ET.SubElement(root, "Message").text = _NOT_XML.sub("", reply)
    return '<?xml version="1.0" encoding="UTF-8"?>' + ET.tostring(
        root, encoding="unicode", short_empty_elements=True
    ).replace("<Response />", "<Response/>")
