"""WhatsApp Cloud API webhooks, read: the signature, the handshake, and what each
notification becomes. Pure: no I/O (the routes fetch media, the sender talks to Graph).

    {"object": "whatsapp_business_account",
     "entry": [{"id": <WABA id>, "changes": [{"field": "messages", "value": {
         "metadata": {"display_phone_number", "phone_number_id"},
         "contacts": [{"profile": {"name"}, "wa_id"}],
         "messages": [{"from", "id": "wamid...", "timestamp": "<unix seconds>", "type",
                       "<type>": {...}, "context"?: {"from", "id"}}],
         "statuses": [{"id": <our wamid>, "status", "timestamp", "recipient_id",
                       "errors"?: [{"code", "title", "message", "error_data": {"details"}}]}]
     }}]}]}

A body that is not such a notification (not JSON, another `object`; `entry`, `changes`,
or a messages change's `contacts`, `messages`, `statuses` not lists of objects) is
refused whole (400), before anything is stored. Inside a notification, an item this
module cannot read becomes `Skipped` with its reason, so one odd item never makes Meta
redeliver (and omni store twice) the rest of the batch.

Over 400 lines for a reason: one reader per kind of message, each a few lines, kept in
one place so what WhatsApp sends and what omni makes of it can be read side by side.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import msgspec

from adapters.whatsapp.errors import status_reason
from omni.channel import ChannelEvent, InboundRequest, Marked, MarkKind, Received, Skipped
from omni.clock import iso
from omni.errors import BadRequest
from omni.meta import hub_challenge, nested, notification, payload_id, verify_hub_signature
from omni.metadata import MetadataBag, scalar
from omni.model import (
    ATTACHMENTS_MAX,
    TEXT_MAX,
    Attachment,
    AttachmentType,
    InboundMessage,
    Payload,
    Product,
)
from omni.text import clean, safe_cut

CHANNEL = "whatsapp"
OBJECT = "whatsapp_business_account"
MEDIA_KINDS: Mapping[str, AttachmentType] = {
    "image": "image",
    "audio": "audio",
    "video": "video",
    "document": "file",
    "sticker": "sticker",
}
STATUS_MARKS: Mapping[str, MarkKind] = {
    "sent": "sent",
    "delivered": "delivered",
    "read": "read",
    "failed": "failed",
}
_ID_MAX = 256
_WAMID_MAX = 512


def handshake(query: Mapping[str, str], verify_token: str) -> str:
    """Meta's GET subscription handshake: the challenge to echo, or Forbidden."""
    return hub_challenge(query, verify_token.encode(), CHANNEL)


def verify(request: InboundRequest, app_secrets: tuple[str, ...]) -> None:
    """Unauthenticated unless X-Hub-Signature-256 signs the raw body."""
    verify_hub_signature(tuple(s.encode() for s in app_secrets), request.headers, request.body)


def parse(body: bytes, media_base: str) -> list[ChannelEvent]:
    """Every message and status of every change, in order. `media_base` is where omni
    serves a media id (`{media_base}/{id}`): what an attachment's url becomes."""
    data = notification(body, OBJECT, CHANNEL)
    entries = _objects(data.get("entry"), "entry")
    events: list[ChannelEvent] = []
    for entry in entries:
        for change in _objects(entry.get("changes"), "entry[].changes"):
            events.extend(_change(change, media_base))
    return events


def _objects(value: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise BadRequest(f"whatsapp webhook: {where} must be a list of objects", field=where)
    return value


def _change(change: dict[str, Any], media_base: str) -> list[ChannelEvent]:
    field = change.get("field")
    value = change.get("value")
    if field != "messages":
        return [Skipped(f"whatsapp: change field {_name(field)} is not handled")]
    if not isinstance(value, dict):
        raise BadRequest("whatsapp webhook: a messages change's value must be an object")
    for key in ("contacts", "messages", "statuses", "errors"):
        if key in value:
            _objects(value[key], f"value.{key}")
    number = payload_id(nested(value, "metadata", "phone_number_id")) or ""
    names: dict[str, str] = {}
    for contact in _list(value.get("contacts")):
        wa_id, name = payload_id(contact.get("wa_id")), nested(contact, "profile", "name")
        if wa_id and isinstance(name, str) and name.strip():
            names[wa_id] = clean(name.strip())[:256]
    events: list[ChannelEvent] = []
    for message in _list(value.get("messages")):
        events.append(_guarded(_message, message, number, names, media_base))
    for status in _list(value.get("statuses")):
        events.append(_guarded(_status, status, number))
    for error in _list(value.get("errors")):
        events.append(Skipped(f"whatsapp: notification error {status_reason([error])}"))
    if not events:
        events.append(Skipped("whatsapp: change without messages or statuses"))
    return events


def _guarded(handler: Any, item: dict[str, Any], *args: Any) -> ChannelEvent:
    try:
        event: ChannelEvent = handler(item, *args)
    except (msgspec.ValidationError, ValueError, TypeError, KeyError, AttributeError) as exc:
        # A shape this module did not foresee must not fail the batch: Meta would
        # redeliver the whole notification. The core logs the reason.
        return Skipped(f"whatsapp: unreadable item ({type(exc).__name__})")
    return event


# -- messages ---------------------------------------------------------------------------


def _message(
    item: dict[str, Any], number: str, names: dict[str, str], media_base: str
) -> ChannelEvent:
    wa_id, wamid, kind = payload_id(item.get("from")), payload_id(item.get("id")), item.get("type")
    if not wa_id or len(wa_id) > _ID_MAX or not wamid or len(wamid) > _WAMID_MAX:
        return Skipped("whatsapp: message without a usable from or id")
    at_ms = _seconds_ms(item.get("timestamp"))
    if kind == "reaction":
        return _reaction(item.get("reaction"), wa_id, wamid, number, at_ms)
    bag = MetadataBag()
    bag.put("phone_number_id", number or None)
    content = item.get(kind) if isinstance(kind, str) else None
    fields = _content(kind, content, bag, media_base)
    if isinstance(fields, Skipped):  # WhatsApp names why in errors[] (131051: unsupported)
        codes = ",".join(str(e.get("code")) for e in _list(item.get("errors")))
        return Skipped(f"{fields.reason} (error {codes})") if codes else fields
    context = item.get("context")
    reply_to = None
    if isinstance(context, dict):
        reply_to = payload_id(context.get("id"))
        if context.get("forwarded") is True or context.get("frequently_forwarded") is True:
            bag.put("forwarded", True)
        product = context.get("referred_product")
        if isinstance(product, dict) and payload_id(product.get("product_retailer_id")):
            fields.setdefault("attachments", []).append(_product(product))
    referral = item.get("referral")
    if isinstance(referral, dict):  # the customer came from a click-to-WhatsApp ad
        for key in ("source_url", "source_id", "source_type", "headline", "ctwa_clid"):
            bag.put(f"referral_{key}", scalar(referral.get(key)))
    attachments = fields.pop("attachments", [])
    if len(attachments) > ATTACHMENTS_MAX:
        bag.put("attachments_dropped", len(attachments) - ATTACHMENTS_MAX)
        attachments = attachments[:ATTACHMENTS_MAX]
    inbound = InboundMessage(
        channel=CHANNEL,
        external_id=wa_id,
        channel_message_id=wamid,
        sent_at=iso(at_ms),
        author_name=names.get(wa_id),
        attachments=attachments,
        reply_to=reply_to if reply_to and len(reply_to) <= _WAMID_MAX else None,
        metadata=bag.data,
        **fields,
    )
    return Received(msgspec.convert(msgspec.to_builtins(inbound), InboundMessage))


def _content(
    kind: Any, content: Any, bag: MetadataBag, media_base: str
) -> dict[str, Any] | Skipped:
    """The canonical fields of one kind of message (text, attachments, quick_reply)."""
    fields: dict[str, Any] = {}
    if kind == "text" and isinstance(content, dict):
        fields["text"] = _text(content.get("body"), bag)
        if not fields["text"]:
            return Skipped("whatsapp: text message without a body")
    elif isinstance(kind, str) and kind in MEDIA_KINDS and isinstance(content, dict):
        media_id = payload_id(content.get("id"))
        if not media_id:
            return Skipped(f"whatsapp: {kind} message without a media id")
        fields["text"] = _text(content.get("caption"), bag)
        fields["attachments"] = [_media(kind, content, media_id, media_base, bag)]
    elif kind == "location" and isinstance(content, dict):
        fields["attachments"] = [_location(content, bag)]
    elif kind == "contacts" and isinstance(content, list):
        fields["attachments"] = _contacts(content, bag)
    elif kind == "interactive" and isinstance(content, dict):
        answer = _interactive(content, bag)
        if answer is None:
            return Skipped(f"whatsapp: interactive {_name(content.get('type'))} is not handled")
        fields["quick_reply"] = answer
        fields["text"] = answer.title
    elif kind == "button" and isinstance(content, dict):
        payload, label = content.get("payload"), content.get("text")
        if not isinstance(payload, str) and not isinstance(label, str):
            return Skipped("whatsapp: button reply without payload or text")
        title = clean(label)[:256] if isinstance(label, str) and label else None
        fields["quick_reply"] = Payload(clean(payload or label or "")[:1024], title=title)
        fields["text"] = title
        bag.put("template_button", True)
    elif kind == "order" and isinstance(content, dict):
        fields["attachments"] = _order(content, bag)
        fields["text"] = _text(content.get("text"), bag)
    else:
        return Skipped(f"whatsapp: message type {_name(kind)} is not handled")
    return fields


def _text(value: Any, bag: MetadataBag) -> str | None:
    if not isinstance(value, str) or not value:
        return None
    text = clean(value)
    if len(text) > TEXT_MAX:
        bag.put("truncated", True)
        bag.put("text_length", len(text))
        text = text[: safe_cut(text, TEXT_MAX) or TEXT_MAX]
    return text


def _media(
    kind: str, content: dict[str, Any], media_id: str, media_base: str, bag: MetadataBag
) -> Attachment:
    """The attachment points at omni's media route for the id: Meta's own URL for it
    lasts minutes and needs the access token, omni's asks Graph afresh each time."""
    bag.put("media_id", media_id)
    bag.put("media_sha256", scalar(content.get("sha256")))
    if content.get("voice") is True:
        bag.put("voice_note", True)
    if kind == "sticker" and content.get("animated") is True:
        bag.put("animated", True)
    mime = content.get("mime_type")
    name = content.get("filename")
    return Attachment(
        type=MEDIA_KINDS[kind],
        url=f"{media_base}/{media_id}",
        mime=clean(mime)[:128] if isinstance(mime, str) and mime else None,
        name=clean(name)[:512] if isinstance(name, str) and name else None,
    )


def _location(content: dict[str, Any], bag: MetadataBag) -> Attachment:
    latitude, longitude = _number(content.get("latitude")), _number(content.get("longitude"))
    if latitude is None or longitude is None:
        raise ValueError("location without latitude and longitude")
    name, address = content.get("name"), content.get("address")
    bag.put("location_address", scalar(address))
    label = name if isinstance(name, str) and name else address
    url = content.get("url")
    return Attachment(
        type="location",
        latitude=latitude,
        longitude=longitude,
        name=clean(label)[:512] if isinstance(label, str) and label else None,
        url=url if isinstance(url, str) and url.startswith(("https://", "http://")) else None,
    )


def _contacts(cards: list[Any], bag: MetadataBag) -> list[Attachment]:
    """Shared contact cards. Their numbers are someone's address book, never the
    sender's identity: they stay in the message and are not taken as facts."""
    attachments: list[Attachment] = []
    for card in cards:
        if not isinstance(card, dict):
            continue
        name = nested(card, "name", "formatted_name")
        phones = [p for p in _list(card.get("phones")) if isinstance(p.get("phone"), str)]
        if len(attachments) == 0 and phones:
            bag.put("contact_phone", scalar(phones[0]["phone"]))
            bag.put("contact_wa_id", payload_id(phones[0].get("wa_id")))
        attachments.append(
            Attachment(type="other", name=clean(name)[:512] if isinstance(name, str) else None)
        )
    if not attachments:
        raise ValueError("contacts message without a card")
    bag.put("contacts", len(attachments))
    return attachments


def _interactive(content: dict[str, Any], bag: MetadataBag) -> Payload | None:
    kind = content.get("type")
    if kind in ("button_reply", "list_reply"):
        answer = content.get(kind)
        if not isinstance(answer, dict) or not isinstance(answer.get("id"), str):
            return None
        title = answer.get("title")
        bag.put("interactive", kind)
        bag.put("list_description", scalar(answer.get("description")))
        return Payload(
            clean(answer["id"])[:1024],
            title=clean(title)[:256] if isinstance(title, str) and title else None,
        )
    if kind == "nfm_reply":  # a WhatsApp Flow's answer: its JSON is the payload
        answer = content.get("nfm_reply")
        raw = answer.get("response_json") if isinstance(answer, dict) else None
        if not isinstance(raw, str):
            return None
        bag.put("interactive", "nfm_reply")
        name = answer.get("name") if isinstance(answer, dict) else None
        return Payload(
            clean(raw)[:1024], title=clean(name)[:256] if isinstance(name, str) else None
        )
    return None


def _order(content: dict[str, Any], bag: MetadataBag) -> list[Attachment]:
    bag.put("order_catalog_id", payload_id(content.get("catalog_id")))
    items = []
    for item in _list(content.get("product_items")):
        items.append(_product(item))
        bag.put(f"quantity.{_name(item.get('product_retailer_id'))}", scalar(item.get("quantity")))
    if not items:
        raise ValueError("order without product items")
    return items


def _product(item: dict[str, Any]) -> Attachment:
    currency = item.get("currency")
    product = Product(
        id=clean(str(item["product_retailer_id"]))[:256],
        currency=currency if isinstance(currency, str) and len(currency) == 3 else None,
    )
    return Attachment(type="product", product=product)


def _reaction(
    reaction: Any, wa_id: str, wamid: str, number: str, at_ms: int | None
) -> ChannelEvent:
    if not isinstance(reaction, dict) or not payload_id(reaction.get("message_id")):
        return Skipped("whatsapp: reaction without a message_id")
    emoji = reaction.get("emoji")
    emoji = clean(emoji)[:64] if isinstance(emoji, str) and emoji else None
    kind: MarkKind = "reaction" if emoji else "unreaction"
    detail = {"emoji": emoji,
              "event_id": wamid, "phone_number_id": number or None}  # fmt: skip
    return Marked(CHANNEL, wa_id, kind, payload_id(reaction.get("message_id")), at_ms,
                  {k: v for k, v in detail.items() if v is not None})  # fmt: skip


# -- statuses ---------------------------------------------------------------------------


def _status(item: dict[str, Any], number: str) -> ChannelEvent:
    wamid, state = payload_id(item.get("id")), item.get("status")
    recipient = payload_id(item.get("recipient_id"))
    if not wamid or not recipient:
        return Skipped("whatsapp: status without an id or recipient_id")
    kind = STATUS_MARKS.get(state) if isinstance(state, str) else None
    if kind is None:
        return Skipped(f"whatsapp: status {_name(state)} is not handled")
    detail: dict[str, Any] = {"event_id": f"{wamid}:{state}", "status": state}
    if number:
        detail["phone_number_id"] = number
    errors = _list(item.get("errors"))
    if errors:
        detail["reason"] = status_reason(errors)
        code = errors[0].get("code")
        if isinstance(code, int) and not isinstance(code, bool):
            detail["error_code"] = code
    elif kind == "failed":
        detail["reason"] = "failed: WhatsApp gave no reason"
    pricing = item.get("pricing")
    if isinstance(pricing, dict):
        detail["pricing_category"] = scalar(pricing.get("category"))
    return Marked(CHANNEL, recipient, kind, wamid, _seconds_ms(item.get("timestamp")), detail)


# -- small helpers ----------------------------------------------------------------------


def _list(value: Any) -> list[dict[str, Any]]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _seconds_ms(value: Any) -> int | None:
    """WhatsApp's timestamps are unix seconds, as a string; anything else is dropped."""
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 12:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 253_402_300_800:
        return None
    return value * 1000


def _name(value: Any) -> str:
    """A key or type name safe for a log line: short, printable."""
    text = value if isinstance(value, str) else type(value).__name__
    return "".join(c if c.isascii() and (c.isalnum() or c in "_.-") else "?" for c in text[:40])
