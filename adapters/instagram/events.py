"""Inbound: what each Instagram webhook event becomes (the table in
`adapters.instagram.protocol`), read defensively: every field bounded and validated, an
unknown event kind skipped, nothing raised but `BadRequest`."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

import msgspec

from adapters.instagram.config import NAME as CHANNEL
from omni.channel import (
    ChannelEvent,
    Marked,
    MarkKind,
    Received,
    Skipped,
)
from omni.clock import iso
from omni.meta import nested, payload_id
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
from omni.text import clean as clean_text
from omni.text import safe_cut

_DETAIL_STR_MAX = 1024
_URL_MAX = 2048
_ID_MAX = 256
_MID_MAX = 512
_ENVELOPE = frozenset({"sender", "recipient", "timestamp"})
_MESSAGE_KEYS = frozenset(
    {"mid", "text", "attachments", "is_echo", "is_deleted", "is_unsupported", "quick_reply",
     "reply_to", "referral", "app_id", "metadata"}
)  # fmt: skip
_ATTACHMENT_TYPES: Mapping[str, AttachmentType] = {
    "image": "image",
    "video": "video",
    "audio": "audio",
    "file": "file",
    "story_mention": "story_mention",
    "reel": "reel",
    "ig_reel": "reel",
}


def entry_events(entry: Any) -> list[ChannelEvent]:
    if not isinstance(entry, dict):
        return [Skipped("instagram: entry is not an object")]
    account = payload_id(entry.get("id")) or ""
    events: list[ChannelEvent] = []
    for key in ("messaging", "standby"):
        items = entry.get(key)
        if items is None:
            continue
        if not isinstance(items, list):
            events.append(Skipped(f"instagram: entry {key} is not a list"))
            continue
        events.extend(_event(item, account, standby=key == "standby") for item in items)
    changes = entry.get("changes")
    if changes is not None:
        for change in changes if isinstance(changes, list) else [changes]:
            field = change.get("field") if isinstance(change, dict) else None
            why = "a dashboard test" if account == "0" else "not handled"
            events.append(Skipped(f"instagram: changes field {_name(field)} ({why})"))
    if not events:
        events.append(Skipped("instagram: entry without messaging, standby or changes"))
    return events


def _event(item: Any, account: str, *, standby: bool) -> ChannelEvent:
    if not isinstance(item, dict):
        return Skipped("instagram: event is not an object")
    try:
        return _dispatch(item, account, standby)
    except (msgspec.ValidationError, ValueError, TypeError, KeyError, AttributeError) as exc:
        # A shape this module did not foresee must not fail the whole batch: Meta would
        # redeliver it for 36 hours and then unsubscribe the app. The core logs the reason.
        return Skipped(f"instagram: unreadable event ({type(exc).__name__})")


def _dispatch(item: dict[str, Any], account: str, standby: bool) -> ChannelEvent:
    sender = payload_id(nested(item, "sender", "id"))
    recipient = payload_id(nested(item, "recipient", "id"))
    at_ms = _ms(item.get("timestamp"))
    message = item.get("message")
    by_page = bool(account) and sender == account
    echo = isinstance(message, dict) and (message.get("is_echo") is True or by_page)
    by_page = by_page or echo
    customer = recipient if by_page else sender
    if not customer or len(customer) > _ID_MAX:
        return Skipped("instagram: event without a usable customer id")
    context = _Context(account, sender or "", customer, at_ms, standby, by_page)
    if isinstance(message, dict):
        return _message(message, context, echo=echo)
    for kind, handler in _HANDLERS.items():
        value = item.get(kind)
        if isinstance(value, dict):
            return handler(value, context)
    kinds = sorted(_name(key) for key in item if key not in _ENVELOPE)[:5]
    return Skipped(f"instagram: unhandled event kind {', '.join(kinds) or '(none)'}")


class _Context:
    __slots__ = ("account", "at_ms", "by_page", "customer", "sender", "standby")

    def __init__(
        self, account: str, sender: str, customer: str, at_ms: int | None, standby: bool,
        by_page: bool,
    ) -> None:  # fmt: skip
        self.account, self.sender, self.customer = account, sender, customer
        self.at_ms, self.standby, self.by_page = at_ms, standby, by_page

    def bag(self) -> MetadataBag:
        bag = MetadataBag()
        bag.put("ig_account_id", self.account or None)
        if self.standby:
            bag.put("standby", True)
        return bag

    def mark(self, kind: MarkKind, mid: str | None, detail: dict[str, Any], *key: Any) -> Marked:
        detail = {k: _bounded(v) for k, v in detail.items() if v is not None}
        detail["by"] = "page" if self.by_page else "customer"
        detail["event_id"] = _digest(kind, self.account, self.sender, mid, *key)
        if self.account:
            detail["ig_account_id"] = self.account
        if self.standby:
            detail["standby"] = True
        return Marked(CHANNEL, self.customer, kind, mid, self.at_ms, detail)


def _message(message: dict[str, Any], ctx: _Context, *, echo: bool) -> ChannelEvent:
    mid = payload_id(message.get("mid"))
    if not mid or len(mid) > _MID_MAX:
        return Skipped("instagram: message without a usable mid")
    if message.get("is_deleted") is True:
        return ctx.mark("deleted", mid, {})
    bag = ctx.bag()
    if echo:
        bag.put("echo", True)
        bag.put("author_id", ctx.sender or None)
        bag.put("app_id", payload_id(message.get("app_id")))
    text = clean_text(message["text"]) if isinstance(message.get("text"), str) else None
    text = text or None
    if text is not None and len(text) > TEXT_MAX:
        bag.put("truncated", True)
        bag.put("text_length", len(text))
        text = text[: safe_cut(text, TEXT_MAX) or TEXT_MAX]
    attachments: list[Attachment] = []
    reply_to: str | None = None
    replied = message.get("reply_to")
    if isinstance(replied, dict):
        reply_to = payload_id(replied.get("mid"))
        story = replied.get("story")
        if isinstance(story, dict):
            attachments.append(Attachment(type="story_reply", url=_url(story.get("url"))))
            bag.put("story_id", payload_id(story.get("id")))
    raw = message.get("attachments")
    for item in raw if isinstance(raw, list) else []:
        if isinstance(item, dict):
            attachments.append(_attachment(item, bag))
    if len(attachments) > ATTACHMENTS_MAX:
        bag.put("attachments_dropped", len(attachments) - ATTACHMENTS_MAX)
        attachments = attachments[:ATTACHMENTS_MAX]
    quick = message.get("quick_reply")
    quick_reply = None
    if isinstance(quick, dict) and isinstance(quick.get("payload"), str):
        quick_reply = Payload(
            clean_text(quick["payload"])[:1024], title=text[:256] if text else None
        )
    if message.get("is_unsupported") is True or not (text or attachments or quick_reply):
        attachments.append(Attachment(type="other"))
        bag.put("unsupported", True)
    referral = message.get("referral")
    if isinstance(referral, dict):
        for key in ("ref", "source", "type"):
            bag.put(f"referral_{key}", scalar(referral.get(key)))
        bag.put("ad_id", payload_id(referral.get("ad_id")))
        bag.put("ad_title", scalar(nested(referral, "ads_context_data", "ad_title")))
    for key, value in message.items():
        if key not in _MESSAGE_KEYS:
            bag.put(f"ig.{key}", scalar(value))
    inbound = InboundMessage(
        channel=CHANNEL,
        external_id=ctx.customer,
        channel_message_id=mid,
        text=text,
        sent_at=iso(ctx.at_ms),
        attachments=attachments,
        quick_reply=quick_reply,
        reply_to=reply_to if reply_to and len(reply_to) <= _MID_MAX else None,
        metadata=bag.data,
    )
    return Received(_validated(inbound), direction="outbound" if echo else "inbound")


def _attachment(item: dict[str, Any], bag: MetadataBag) -> Attachment:
    kind = item.get("type")
    raw = item.get("payload")
    payload: dict[str, Any] = raw if isinstance(raw, dict) else {}
    mapped: AttachmentType = (
        _ATTACHMENT_TYPES.get(kind, "other") if isinstance(kind, str) else "other"
    )
    if mapped == "image" and payload.get("sticker_id") is not None:
        mapped = "sticker"
    if mapped == "other":
        bag.put("attachment_kind", _name(kind))  # share, fallback, template, a new one
    if mapped == "reel":
        bag.put("reel_video_id", payload_id(payload.get("reel_video_id")))
    title = payload.get("title")
    name = clean_text(title)[:512] if isinstance(title, str) and title else None
    return Attachment(type=mapped, url=_url(payload.get("url")), name=name)


def _postback(postback: dict[str, Any], ctx: _Context) -> ChannelEvent:
    payload, title = postback.get("payload"), postback.get("title")
    bag = ctx.bag()
    if not isinstance(payload, str):
        bag.put("payload_missing", True)  # delivered through standby: Meta withholds it
        payload = ""
    mid = payload_id(postback.get("mid"))
    if not mid or len(mid) > _MID_MAX:
        mid = "pb_" + _digest(ctx.account, ctx.sender, ctx.at_ms, payload, title)
    product = _product(payload, title)
    inbound = InboundMessage(
        channel=CHANNEL,
        external_id=ctx.customer,
        channel_message_id=mid,
        sent_at=iso(ctx.at_ms),
        attachments=[product] if product else [],
        postback=Payload(
            clean_text(payload)[:1024],
            title=clean_text(title)[:256] if isinstance(title, str) else None,
        ),
        metadata=bag.data,
    )
    return Received(_validated(inbound))


def _product(payload: str, title: object) -> Attachment | None:
    """A shop's "buy" button: a postback whose payload is `PRODUCT:<id>` or
    `{"product": {"id", "name"?, "price"? (minor units), "currency"?, "url"?}}` (the
    payloads the brand's own templates put there) becomes a product attachment, so a bot
    can put it in the cart without parsing payloads itself. Anything else is not one."""
    found: Any = None
    if payload.upper().startswith("PRODUCT:"):
        found = {"id": payload.split(":", 1)[1].strip()}
    elif payload.startswith("{"):
        try:
            found = msgspec.json.decode(payload).get("product")
        except (msgspec.DecodeError, AttributeError):
            return None
    if not isinstance(found, dict):
        return None
    if not found.get("name") and isinstance(title, str) and title:
        found = {**found, "name": clean_text(title)[:512]}
    try:
        product = msgspec.convert(found, Product)
    except msgspec.ValidationError:
        return None
    return Attachment(type="product", name=product.name, product=product)


def _reaction(reaction: dict[str, Any], ctx: _Context) -> ChannelEvent:
    mid, action = payload_id(reaction.get("mid")), reaction.get("action")
    if not mid or action not in ("react", "unreact"):
        return Skipped("instagram: reaction without a mid or a known action")
    name, emoji = scalar(reaction.get("reaction")), scalar(reaction.get("emoji"))
    kind: MarkKind = "reaction" if action == "react" else "unreaction"
    detail = {"action": action, "reaction": name, "emoji": emoji}
    return ctx.mark(kind, mid, detail, action, name, emoji, ctx.at_ms)


def _read(read: dict[str, Any], ctx: _Context) -> ChannelEvent:
    mid, watermark = payload_id(read.get("mid")), _ms(read.get("watermark"))
    if mid is None and watermark is None:
        return Skipped("instagram: read without a mid or watermark")
    return ctx.mark("read", mid, {"watermark": watermark}, watermark)


def _referral(referral: dict[str, Any], ctx: _Context) -> ChannelEvent:
    bag = ctx.bag()
    bag.put("event", "referral")
    values = [scalar(referral.get(key)) for key in ("ref", "source", "type")]
    for key, value in zip(("ref", "source", "type"), values, strict=True):
        bag.put(f"referral_{key}", value)
    bag.put("ad_id", payload_id(referral.get("ad_id")))
    mid = "ref_" + _digest(ctx.account, ctx.sender, ctx.at_ms, *values)
    inbound = InboundMessage(
        channel=CHANNEL,
        external_id=ctx.customer,
        channel_message_id=mid,
        sent_at=iso(ctx.at_ms),
        metadata=bag.data,
    )
    return Received(_validated(inbound))


_HANDLERS = {"postback": _postback, "reaction": _reaction, "read": _read, "referral": _referral}


# -- small helpers -----------------------------------------------------------------------


def _validated(message: InboundMessage) -> InboundMessage:
    """Check the model's constraints (plain construction does not): an id over its limit
    becomes a Skipped event via ValidationError instead of a record the API would refuse."""
    return msgspec.convert(msgspec.to_builtins(message), InboundMessage)


def _ms(value: Any) -> int | None:
    """Epoch milliseconds from an int or digit string; a 10-digit value is seconds (the
    dashboard Test payload). Anything outside years 1970..9999 is dropped."""
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 20:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        return None
    if value < 10**11:
        value *= 1000
    return value if value < 253_402_300_800_000 else None


def _url(value: Any) -> str | None:
    if (
        isinstance(value, str)
        and len(value) <= _URL_MAX
        and value.startswith(("https://", "http://"))
    ):
        return clean_text(value)
    return None


def _bounded(value: Any) -> Any:
    return clean_text(value)[:_DETAIL_STR_MAX] if isinstance(value, str) else value


def _name(value: Any) -> str:
    """A key or type name safe for a log line: short, printable."""
    text = value if isinstance(value, str) else type(value).__name__
    return re.sub(r"[^A-Za-z0-9_.-]", "?", text[:40]) or "?"


def _digest(*parts: Any) -> str:
    joined = "\x1f".join("" if part is None else str(part) for part in parts)
    return hashlib.sha256(clean_text(joined).encode()).hexdigest()[:32]
