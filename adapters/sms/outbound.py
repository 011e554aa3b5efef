"""Replies by SMS, pure: the Messaging API's form fields for a reply, what its answers
mean, the reasons a reply fails with, and the TwiML omni answers a webhook with.

A reply is refused, not cut, past `max_segments` segments (adapters.sms.segments) or
Twilio's 1600 characters: `too_long: …`. Delivery.reason is exactly `opted_out` for an
opted-out customer (Twilio's 21610 too); other failures are "<slug>: <detail>".
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from typing import Final

from adapters.sms.segments import segments
from omni.channel import Delivery, answer_json
from omni.model import Message

BODY_MAX: Final = 1600  # Twilio's limit on one message's Body, in characters
MEDIA_MAX: Final = 10  # MediaUrl per message, in and out
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
# Characters XML 1.0 cannot carry; dropped rather than breaking the document.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def failure_reason(code: int | None, status: str = "failed") -> str:
    """The reason a failed send shows: exactly `opted_out` for 21610, else "<slug>: …"."""
    if code is None:
        return f"{status}: Twilio gave no error code"
    slug, text = _ERRORS.get(code, (status, "see https://www.twilio.com/docs/api/errors"))
    if slug == REASON_OPTED_OUT:
        return REASON_OPTED_OUT
    return f"{slug}: Twilio error {code}, {text}"


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
    data = answer_json(body)
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


def _code(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


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
