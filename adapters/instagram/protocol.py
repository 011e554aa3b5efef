"""Instagram direct messages: Meta's Instagram Messaging webhooks in, the Graph Send API out.

Upstream API
    Inbound is the Messenger Platform for Instagram webhook (`object: "instagram"`): a GET
    subscription handshake (`hub.mode`, `hub.verify_token`, `hub.challenge`), then POSTed
    event notifications batched as `entry[].messaging[]` and `entry[].standby[]` (the
    Handover Protocol's copy for a secondary app). Outbound is the Graph API Send API,
    `POST {graph_url}/{account_id}/messages` (`account_id` may be `me`).

Signature scheme
    `X-Hub-Signature-256: sha256=<hex>`, the lowercase hex HMAC-SHA256 of the raw request
    body bytes keyed with the app secret. Meta signs its own compact, `\\uXXXX`-escaped
    bytes, so the bytes are hashed exactly as received and never re-serialized; digests
    are compared with `hmac.compare_digest`. The legacy `X-Hub-Signature` (SHA-1) header is
    ignored. Outbound calls carry the page token (`Authorization: Bearer`, or the
    `access_token` query parameter) and, when enabled, `appsecret_proof`.

What each webhook event becomes (`parse`):

    message                      Received: text, attachments, quick reply, reply_to,
                                 story reply (attachment story_reply + metadata story_id),
                                 ads referral (metadata referral_*, ad_id, ad_title)
    message.is_echo              Received(direction="outbound"): external_id is the
                                 recipient (the customer), metadata author_id = our account
    message.is_deleted           Marked deleted (the same mid, an update, not a new message)
    message.is_unsupported       Received with one attachment of type "other" and metadata
                                 unsupported=true: the customer did write, which reopens
                                 the 24 h window, and an agent should see that they did
    postback                     Received with `postback` (payload "" when Meta withheld it)
    reaction react / unreact     Marked reaction / unreaction, detail {action, reaction, emoji}
    read                         Marked read (channel_message_id = the mid that was seen)
    referral                     Received with no text and metadata event="referral",
                                 referral_{ref,source,type}, ad_id: the customer opened the
                                 thread from an ig.me link or an ad, which the bot should
                                 hear of (and which Meta answers with an open window); its
                                 id is derived from the event, so a redelivery stores once
    changes[] (dashboard Test)   Skipped; so is any event kind this module does not know

Every Marked carries detail `event_id`, a stable id for de-duplication (reactions and
reads have no id of their own), and `ig_account_id`. Messages carry metadata
`ig_account_id` (so the core can key de-duplication on (account, mid)) and `standby=true`
when they came through `standby[]`. Unknown scalar fields of a message land in metadata as
`ig.<name>` after the known keys, never past `METADATA_MAX`; nested unknown values are
ignored. Text longer than `TEXT_MAX` is cut at a character-cluster boundary with
metadata `truncated=true` and `text_length`.

Outbound (`deliver`): attachments (image, video, audio, file with an http(s) URL) are sent
first, one request each, then the text, split into parts of at most 1000 UTF-8 bytes
at cluster boundaries. Quick replies come from `message.quick_replies` (the title, or the
payload when there is no title, is the button's label) and ride on the last text part.
Text parts carry `messaging_type: RESPONSE`; media parts carry no messaging type, as in
Meta's examples; `human_agent=True` tags every part `MESSAGE_TAG`/`HUMAN_AGENT`. A Graph
error becomes `Delivery(status="failed")` whose `reason` starts with one of the
`REASON_*` slugs below, with `retry` set for rate limits, 5xx, timeouts and network
errors.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any, Literal
from urllib.parse import quote

import aiohttp
import msgspec

from omni.channel import (
    ChannelEvent,
    Delivery,
    InboundRequest,
    Marked,
    MarkKind,
    Received,
    Skipped,
)
from omni.clock import iso
from omni.errors import BadRequest, ConfigError, Forbidden, Unauthenticated
from omni.model import (
    ATTACHMENTS_MAX,
    METADATA_MAX,
    TEXT_MAX,
    Attachment,
    AttachmentType,
    InboundMessage,
    Message,
    MetaValue,
    Payload,
    Product,
)

CHANNEL = "instagram"
DAY_MS = 24 * 60 * 60 * 1000
WINDOW_MS = DAY_MS  # standard messaging window after the customer's last message
HUMAN_AGENT_MS = 7 * DAY_MS  # the HUMAN_AGENT tag's window
SEND_TEXT_MAX_BYTES = 1000
QUICK_REPLIES_MAX = 13
QUICK_REPLY_TITLE_MAX = 20
QUICK_REPLY_PAYLOAD_MAX = 1000

# Delivery.reason starts with one of these; the rest is a human detail.
REASON_OUTSIDE_WINDOW = "outside_window"  # the 24 h / 7 day window is closed: do not retry
REASON_RATE_LIMITED = "rate_limited"
REASON_TOKEN_EXPIRED = "token_expired"  # noqa: S105 - a reason slug; re-authorize the channel
REASON_TOKEN_INVALID = "token_invalid"  # noqa: S105 - a reason slug, as above
REASON_PERMISSION = "permission_denied"
REASON_RECIPIENT_UNAVAILABLE = "recipient_unavailable"
REASON_NO_MATCHING_USER = "no_matching_user"
REASON_BAD_REQUEST = "bad_request"
REASON_UPSTREAM = "upstream_error"  # Graph 5xx or a transient Graph error
REASON_TIMEOUT = "timeout"
REASON_NETWORK = "network_error"
REASON_UNSENDABLE = "unsendable"  # the message cannot be expressed on Instagram
REAUTH_REASONS = frozenset({REASON_TOKEN_EXPIRED, REASON_TOKEN_INVALID})

WindowState = Literal["open", "human_agent", "closed"]
SenderAction = Literal["typing_on", "typing_off", "mark_seen"]

_SIGNATURE_HEADER = "X-Hub-Signature-256"
_HEX64 = re.compile(r"[0-9a-f]{64}")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
_META_STR_MAX = 512
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
_SENDABLE = frozenset({"image", "video", "audio", "file"})
_RATE_LIMIT_CODES = frozenset({4, 17, 32, 613, 80002, 80006})  # app, user, page, call, BUC
_WINDOW_SUBCODES = frozenset({2018278, 2534022})


def window_state(last_inbound_ms: int | None, now_ms: int) -> WindowState:
    """Where a reply stands against Instagram's windows, measured from the customer's last
    message (echoes and our own sends do not count): inside 24 h anything may be sent;
    inside 7 days only a human agent, with the HUMAN_AGENT tag; after that nothing."""
    if last_inbound_ms is None:
        return "closed"
    age = now_ms - last_inbound_ms
    if age < WINDOW_MS:
        return "open"
    if age < HUMAN_AGENT_MS:
        return "human_agent"
    return "closed"


def reason_code(delivery: Delivery) -> str | None:
    """The `REASON_*` slug a failed delivery starts with."""
    return delivery.reason.split(":", 1)[0] if delivery.reason else None


class InstagramAdapter:
    """One connected Instagram professional account. Inbound parsing accepts events for
    any account (each event names its own in `ig_account_id`); `deliver` sends as
    `account_id` with `page_token`."""

    channel = CHANNEL

    def __init__(
        self,
        *,
        app_secret: str,
        verify_token: str,
        page_token: str,
        account_id: str,
        graph_url: str,
        session: aiohttp.ClientSession | None = None,
        extra_app_secrets: Sequence[str] = (),
        auth_style: Literal["bearer", "query"] = "bearer",
        appsecret_proof: bool = False,
        timeout: float = 10.0,
    ) -> None:
        for name, value in (("app_secret", app_secret), ("verify_token", verify_token),
                            ("account_id", account_id), ("graph_url", graph_url)):  # fmt: skip
            if not value:
                raise ConfigError(f"instagram {name}: must not be empty")
        self._secrets = tuple(s.encode() for s in (app_secret, *extra_app_secrets) if s)
        self._verify_token = verify_token.encode()
        self._token = page_token
        self._url = f"{graph_url.rstrip('/')}/{quote(account_id, safe='')}/messages"
        self._params: dict[str, str] = {}
        self._headers: dict[str, str] = {}
        if auth_style == "query":
            self._params["access_token"] = page_token
        else:
            self._headers["Authorization"] = f"Bearer {page_token}"
        if appsecret_proof:
            proof = hmac.new(app_secret.encode(), page_token.encode(), hashlib.sha256)
            self._params["appsecret_proof"] = proof.hexdigest()
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    def __repr__(self) -> str:
        return f"InstagramAdapter(url={self._url!r}, secrets=****)"

    # -- inbound ----------------------------------------------------------------------

    def handshake(self, query: Mapping[str, str]) -> str:
        """Meta's GET subscription handshake: the challenge to echo as text/plain."""
        token = query.get("hub.verify_token", "")
        challenge = query.get("hub.challenge", "")
        if (
            query.get("hub.mode") != "subscribe"
            or not hmac.compare_digest(token.encode(), self._verify_token)
            or not 0 < len(challenge) <= 256
        ):
            raise Forbidden("instagram subscription handshake refused")
        return challenge

    def verify(self, request: InboundRequest) -> None:
        """Raise Unauthenticated unless X-Hub-Signature-256 signs the raw body."""
        value = _header(request.headers, _SIGNATURE_HEADER)
        if value is None:
            raise Unauthenticated(f"missing {_SIGNATURE_HEADER}")
        scheme, _, digest = value.partition("=")
        if scheme != "sha256" or not _HEX64.fullmatch(digest):
            raise Unauthenticated(f"malformed {_SIGNATURE_HEADER}")
        if not request.body:
            raise Unauthenticated("empty body")
        matches = [
            hmac.compare_digest(hmac.new(s, request.body, hashlib.sha256).hexdigest(), digest)
            for s in self._secrets
        ]
        if not any(matches):
            raise Unauthenticated(f"{_SIGNATURE_HEADER} does not match the body")

    def parse(self, request: InboundRequest) -> list[ChannelEvent]:
        """Every event of every entry, in order. Call `verify` first."""
        try:
            body = json.loads(request.body, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as exc:
            raise BadRequest("instagram webhook body is not JSON") from exc
        if not isinstance(body, dict) or body.get("object") != "instagram":
            raise BadRequest('instagram webhook body is not an object with "object":"instagram"')
        entries = body.get("entry")
        if not isinstance(entries, list):
            return [Skipped("instagram: notification without an entry list")]
        events: list[ChannelEvent] = []
        for entry in entries:
            events.extend(_entry(entry))
        return events

    # -- outbound ---------------------------------------------------------------------

    def render(
        self, message: Message, recipient: str, *, human_agent: bool = False
    ) -> list[dict[str, Any]]:
        """The Send API request bodies for one message, in sending order.
        Raises ValueError when the message cannot be sent on Instagram."""
        base: dict[str, Any] = {"recipient": {"id": recipient}}
        tag = {"messaging_type": "MESSAGE_TAG", "tag": "HUMAN_AGENT"} if human_agent else {}
        bodies: list[dict[str, Any]] = []
        for attachment in message.attachments:
            url = attachment.url or ""
            if attachment.type not in _SENDABLE or not url.startswith(("https://", "http://")):
                raise ValueError(
                    f"cannot send a {attachment.type} attachment without an http(s) url"
                )
            payload = {"type": attachment.type, "payload": {"url": url}}
            bodies.append({**base, **tag, "message": {"attachment": payload}})
        quick_replies = _quick_replies(message.quick_replies)
        parts = split_text(_clean(message.text)) if message.text else []
        if quick_replies and not parts:
            raise ValueError("quick replies need text")
        for index, part in enumerate(parts):
            content: dict[str, Any] = {"text": part}
            if quick_replies and index == len(parts) - 1:
                content["quick_replies"] = quick_replies
            kind = tag or {"messaging_type": "RESPONSE"}
            bodies.append({**base, **kind, "message": content})
        if not bodies:
            raise ValueError("nothing to send: no text and no attachments")
        return bodies

    async def deliver(
        self, message: Message, recipient: str, *, human_agent: bool = False
    ) -> Delivery:
        """Send one message (one Send API call per part). On success, channel_message_id
        is the first part's mid; a failure after some parts names how many were sent."""
        try:
            bodies = self.render(message, recipient, human_agent=human_agent)
        except ValueError as exc:
            return Delivery(status="failed", reason=f"{REASON_UNSENDABLE}: {exc}")
        first: str | None = None
        for index, body in enumerate(bodies):
            outcome = await self._send(body)
            if outcome.status == "failed":
                if index:
                    reason = f"{outcome.reason} (after {index} of {len(bodies)} parts were sent)"
                    return Delivery("failed", first, reason, outcome.retry)
                return outcome
            first = first or outcome.channel_message_id
        return Delivery(status="sent", channel_message_id=first)

    async def send_action(self, recipient: str, action: SenderAction) -> Delivery:
        """A sender action: typing_on, typing_off or mark_seen."""
        return await self._send({"recipient": {"id": recipient}, "sender_action": action})

    async def _send(self, body: dict[str, Any]) -> Delivery:
        if self._session is None:
            raise RuntimeError("InstagramAdapter needs an aiohttp.ClientSession to deliver")
        if not self._token:
            return Delivery("failed", reason=f"{REASON_TOKEN_INVALID}: no page token configured")
        try:
            async with self._session.post(
                self._url, json=body, params=self._params, headers=self._headers,
                timeout=self._timeout,
            ) as response:  # fmt: skip
                status, raw = response.status, await response.read()
        except TimeoutError:
            return Delivery("failed", reason=f"{REASON_TIMEOUT}: no answer from Graph", retry=True)
        except aiohttp.ClientError as exc:
            return Delivery("failed", reason=f"{REASON_NETWORK}: {type(exc).__name__}", retry=True)
        try:
            data: Any = json.loads(raw)
        except ValueError:
            data = None
        if 200 <= status < 300 and not (isinstance(data, dict) and "error" in data):
            mid = data.get("message_id") if isinstance(data, dict) else None
            return Delivery("sent", channel_message_id=mid if isinstance(mid, str) else None)
        return graph_failure(status, data)


def graph_failure(status: int, data: Any) -> Delivery:
    """Map a Graph error answer (HTTP status and decoded body) to a failed Delivery."""
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict):
        if status == 429:
            return Delivery("failed", reason=f"{REASON_RATE_LIMITED}: HTTP 429", retry=True)
        if status >= 500 or status == 408:
            return Delivery("failed", reason=f"{REASON_UPSTREAM}: HTTP {status}", retry=True)
        return Delivery("failed", reason=f"{REASON_BAD_REQUEST}: HTTP {status}")
    code, sub = _int(error.get("code")), _int(error.get("error_subcode"))
    text = error.get("message")
    detail = f"graph error {code}/{sub}: {text if isinstance(text, str) else ''}"[:300]
    retry = False
    if code == 10 and sub in _WINDOW_SUBCODES:
        slug = REASON_OUTSIDE_WINDOW
    elif code in _RATE_LIMIT_CODES or status == 429:
        slug, retry = REASON_RATE_LIMITED, True
    elif code in (190, 102):
        slug = REASON_TOKEN_EXPIRED if sub == 463 else REASON_TOKEN_INVALID
    elif code == 551:
        slug = REASON_RECIPIENT_UNAVAILABLE
    elif code in (1, 2) or error.get("is_transient") is True or status >= 500:
        slug, retry = REASON_UPSTREAM, True
    elif code == 100 and sub == 2018001:
        slug = REASON_NO_MATCHING_USER
    elif code in (10, 200, 230) or (code is not None and 200 <= code < 300):
        slug = REASON_PERMISSION
    else:
        slug = REASON_BAD_REQUEST
    return Delivery("failed", reason=f"{slug}: {detail}", retry=retry)


def split_text(text: str, limit: int = SEND_TEXT_MAX_BYTES) -> list[str]:
    """Cut text into parts of at most `limit` UTF-8 bytes, never inside a character
    cluster (emoji with modifiers or ZWJ, combining marks, flags), preferring a
    whitespace break in the second half of a part; the break itself is dropped."""
    parts: list[str] = []
    rest = text
    while rest:
        if len(rest.encode()) <= limit:
            parts.append(rest)
            break
        fits = len(rest.encode()[:limit].decode(errors="ignore"))
        cut = safe_cut(rest, fits) or fits
        space = max(rest.rfind(" ", 0, cut), rest.rfind("\n", 0, cut))
        if space > cut // 2:
            part, rest = rest[:space], rest[space + 1 :]
        else:
            part, rest = rest[:cut], rest[cut:]
        if part:
            parts.append(part)
    return parts


def safe_cut(text: str, cut: int) -> int:
    """The largest index <= cut that does not split a character cluster (approximate
    UAX #29: extenders, joiners, variation selectors, skin tones, tags, flag pairs)."""
    while 0 < cut < len(text) and (_extends(text[cut]) or text[cut - 1] == "\u200d"):
        cut -= 1
    if 0 < cut < len(text) and _regional(text[cut]) and _regional(text[cut - 1]):
        run = 0
        while cut - run > 0 and _regional(text[cut - run - 1]):
            run += 1
        cut -= run % 2
    return cut


def _extends(char: str) -> bool:
    point = ord(char)
    return (
        unicodedata.category(char) in ("Mn", "Me", "Mc")
        or point in (0x200D, 0xFE0E, 0xFE0F)
        or 0x1F3FB <= point <= 0x1F3FF  # skin tone modifiers
        or 0xE0020 <= point <= 0xE007F  # tag characters (subdivision flags)
    )


def _regional(char: str) -> bool:
    return 0x1F1E6 <= ord(char) <= 0x1F1FF


# -- parsing -----------------------------------------------------------------------------


class _Bag:
    """Metadata under construction: scalars only, strings bounded, first value wins,
    never more than METADATA_MAX keys."""

    def __init__(self) -> None:
        self.data: dict[str, MetaValue] = {}

    def put(self, key: str, value: Any) -> None:
        if len(self.data) >= METADATA_MAX or key[:64] in self.data or value is None:
            return
        if isinstance(value, str):
            value = _clean(value)[:_META_STR_MAX]
        elif not isinstance(value, int | float | bool) or (
            isinstance(value, float) and not math.isfinite(value)
        ):
            return
        self.data[key[:64]] = value


def _entry(entry: Any) -> list[ChannelEvent]:
    if not isinstance(entry, dict):
        return [Skipped("instagram: entry is not an object")]
    account = _id(entry.get("id")) or ""
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
    sender, recipient = _id(_get(item, "sender", "id")), _id(_get(item, "recipient", "id"))
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

    def bag(self) -> _Bag:
        bag = _Bag()
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
    mid = _id(message.get("mid"))
    if not mid or len(mid) > _MID_MAX:
        return Skipped("instagram: message without a usable mid")
    if message.get("is_deleted") is True:
        return ctx.mark("deleted", mid, {})
    bag = ctx.bag()
    if echo:
        bag.put("echo", True)
        bag.put("author_id", ctx.sender or None)
        bag.put("app_id", _id(message.get("app_id")))
    text = _clean(message["text"]) if isinstance(message.get("text"), str) else None
    text = text or None
    if text is not None and len(text) > TEXT_MAX:
        bag.put("truncated", True)
        bag.put("text_length", len(text))
        text = text[: safe_cut(text, TEXT_MAX) or TEXT_MAX]
    attachments: list[Attachment] = []
    reply_to: str | None = None
    replied = message.get("reply_to")
    if isinstance(replied, dict):
        reply_to = _id(replied.get("mid"))
        story = replied.get("story")
        if isinstance(story, dict):
            attachments.append(Attachment(type="story_reply", url=_url(story.get("url"))))
            bag.put("story_id", _id(story.get("id")))
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
        quick_reply = Payload(_clean(quick["payload"])[:1024], title=text[:256] if text else None)
    if message.get("is_unsupported") is True or not (text or attachments or quick_reply):
        attachments.append(Attachment(type="other"))
        bag.put("unsupported", True)
    referral = message.get("referral")
    if isinstance(referral, dict):
        for key in ("ref", "source", "type"):
            bag.put(f"referral_{key}", _scalar(referral.get(key)))
        bag.put("ad_id", _id(referral.get("ad_id")))
        bag.put("ad_title", _scalar(_get(referral, "ads_context_data", "ad_title")))
    for key, value in message.items():
        if key not in _MESSAGE_KEYS:
            bag.put(f"ig.{key}", _scalar(value))
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


def _attachment(item: dict[str, Any], bag: _Bag) -> Attachment:
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
        bag.put("reel_video_id", _id(payload.get("reel_video_id")))
    title = payload.get("title")
    name = _clean(title)[:512] if isinstance(title, str) and title else None
    return Attachment(type=mapped, url=_url(payload.get("url")), name=name)


def _postback(postback: dict[str, Any], ctx: _Context) -> ChannelEvent:
    payload, title = postback.get("payload"), postback.get("title")
    bag = ctx.bag()
    if not isinstance(payload, str):
        bag.put("payload_missing", True)  # delivered through standby: Meta withholds it
        payload = ""
    mid = _id(postback.get("mid"))
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
            _clean(payload)[:1024], title=_clean(title)[:256] if isinstance(title, str) else None
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
        found = {**found, "name": _clean(title)[:512]}
    try:
        product = msgspec.convert(found, Product)
    except msgspec.ValidationError:
        return None
    return Attachment(type="product", name=product.name, product=product)


def _reaction(reaction: dict[str, Any], ctx: _Context) -> ChannelEvent:
    mid, action = _id(reaction.get("mid")), reaction.get("action")
    if not mid or action not in ("react", "unreact"):
        return Skipped("instagram: reaction without a mid or a known action")
    name, emoji = _scalar(reaction.get("reaction")), _scalar(reaction.get("emoji"))
    kind: MarkKind = "reaction" if action == "react" else "unreaction"
    detail = {"action": action, "reaction": name, "emoji": emoji}
    return ctx.mark(kind, mid, detail, action, name, emoji, ctx.at_ms)


def _read(read: dict[str, Any], ctx: _Context) -> ChannelEvent:
    mid, watermark = _id(read.get("mid")), _ms(read.get("watermark"))
    if mid is None and watermark is None:
        return Skipped("instagram: read without a mid or watermark")
    return ctx.mark("read", mid, {"watermark": watermark}, watermark)


def _referral(referral: dict[str, Any], ctx: _Context) -> ChannelEvent:
    bag = ctx.bag()
    bag.put("event", "referral")
    values = [_scalar(referral.get(key)) for key in ("ref", "source", "type")]
    for key, value in zip(("ref", "source", "type"), values, strict=True):
        bag.put(f"referral_{key}", value)
    bag.put("ad_id", _id(referral.get("ad_id")))
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


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        wanted = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == wanted), None)
    return value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _get(data: dict[str, Any], outer: str, inner: str) -> Any:
    value = data.get(outer)
    return value.get(inner) if isinstance(value, dict) else None


def _id(value: Any) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    return _clean(value) if isinstance(value, str) and value else None


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
        return _clean(value)
    return None


def _scalar(value: Any) -> str | int | float | bool | None:
    if isinstance(value, str):
        return _clean(value)[:_META_STR_MAX]
    return value if isinstance(value, int | float | bool) else None


def _bounded(value: Any) -> Any:
    return _clean(value)[:_DETAIL_STR_MAX] if isinstance(value, str) else value


def _name(value: Any) -> str:
    """A key or type name safe for a log line: short, printable."""
    text = value if isinstance(value, str) else type(value).__name__
    return re.sub(r"[^A-Za-z0-9_.-]", "?", text[:40]) or "?"


def _clean(text: str) -> str:
    """JSON can carry lone surrogates (`\\ud83d` alone); they cannot be stored as UTF-8."""
    return _SURROGATE.sub("\ufffd", text)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _digest(*parts: Any) -> str:
    joined = "\x1f".join("" if part is None else str(part) for part in parts)
    return hashlib.sha256(_clean(joined).encode()).hexdigest()[:32]


def _quick_replies(options: Sequence[Payload]) -> list[dict[str, str]]:
    """The Send API's quick replies; a button without a title shows its payload."""
    if len(options) > QUICK_REPLIES_MAX:
        raise ValueError(f"at most {QUICK_REPLIES_MAX} quick replies")
    replies = []
    for option in options:
        payload = _clean(option.payload)
        title = _clean(option.title or payload)
        if not payload:
            raise ValueError("each quick reply needs a payload")
        if len(payload) > QUICK_REPLY_PAYLOAD_MAX:
            raise ValueError(
                f"a quick reply payload is at most {QUICK_REPLY_PAYLOAD_MAX} characters"
            )
        title = title[: safe_cut(title, QUICK_REPLY_TITLE_MAX) or QUICK_REPLY_TITLE_MAX]
        replies.append({"content_type": "text", "title": title, "payload": payload})
    return replies
