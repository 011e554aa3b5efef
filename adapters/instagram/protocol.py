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

Outbound (`requests`, sent by `adapters.instagram.sender`): attachments (image, video,
audio, file with an http(s) URL) are sent first, one request each, then the text, split
into parts of at most 1000 UTF-8 bytes at cluster boundaries. Quick replies come from
`message.quick_replies` (the title, or the payload when there is no title, is the
button's label) and ride on the last text part.
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
from collections.abc import Mapping, Sequence
from typing import Any, Literal
from urllib.parse import quote

from adapters.instagram.events import entry_events
from adapters.instagram.outbound import (
    REASON_NETWORK,
    REASON_OUTSIDE_WINDOW,
    REASON_TIMEOUT,
    REASON_TOKEN_INVALID,
    REAUTH_REASONS,
    graph_failure,
    render_quick_replies,
)
from adapters.instagram.text import SEND_TEXT_MAX_BYTES, split_text
from omni.channel import (
    ChannelEvent,
    Delivery,
    InboundRequest,
    OutboundRequest,
    ProviderAnswer,
    Skipped,
)
from omni.errors import ConfigError
from omni.meta import hub_challenge, notification, verify_hub_signature
from omni.model import Message
from omni.text import clean as clean_text
from omni.text import safe_cut

__all__ = [
    "REASON_OUTSIDE_WINDOW",
    "REAUTH_REASONS",
    "SEND_TEXT_MAX_BYTES",
    "InstagramAdapter",
    "reason_code",
    "safe_cut",
    "split_text",
    "window_state",
]

CHANNEL = "instagram"
DAY_MS = 24 * 60 * 60 * 1000
WINDOW_MS = DAY_MS  # standard messaging window after the customer's last message
HUMAN_AGENT_MS = 7 * DAY_MS  # the HUMAN_AGENT tag's window


WindowState = Literal["open", "human_agent", "closed"]
SenderAction = Literal["typing_on", "typing_off", "mark_seen"]

_SENDABLE = frozenset({"image", "video", "audio", "file"})


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
    any account (each event names its own in `ig_account_id`); the requests it renders
    send as `account_id` with `page_token` (`adapters.instagram.sender` sends them)."""

    channel = CHANNEL

    def __init__(
        self,
        *,
        app_secret: str,
        verify_token: str,
        page_token: str,
        account_id: str,
        graph_url: str,
        extra_app_secrets: Sequence[str] = (),
        auth_style: Literal["bearer", "query"] = "bearer",
        appsecret_proof: bool = False,
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

    def __repr__(self) -> str:
        return f"InstagramAdapter(url={self._url!r}, secrets=****)"

    # -- inbound ----------------------------------------------------------------------

    def handshake(self, query: Mapping[str, str]) -> str:
        """Meta's GET subscription handshake: the challenge to echo as text/plain."""
        return hub_challenge(query, self._verify_token, "instagram")

    def verify(self, request: InboundRequest) -> None:
        """Raise Unauthenticated unless X-Hub-Signature-256 signs the raw body."""
        verify_hub_signature(self._secrets, request.headers, request.body)

    def parse(self, request: InboundRequest) -> list[ChannelEvent]:
        """Every event of every entry, in order. Call `verify` first."""
        body = notification(request.body, "instagram", "instagram")
        entries = body.get("entry")
        if not isinstance(entries, list):
            return [Skipped("instagram: notification without an entry list")]
        events: list[ChannelEvent] = []
        for entry in entries:
            events.extend(entry_events(entry))
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
        quick_replies = render_quick_replies(message.quick_replies)
        parts = split_text(clean_text(message.text)) if message.text else []
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

    def requests(
        self, message: Message, recipient: str, *, human_agent: bool = False
    ) -> list[OutboundRequest]:
        """The Send API requests for one message, in sending order (`render`'s bodies).
        Raises ValueError when the message cannot be sent on Instagram."""
        return [
            self._request(body) for body in self.render(message, recipient, human_agent=human_agent)
        ]

    def action_request(self, recipient: str, action: SenderAction) -> OutboundRequest:
        """A sender action: typing_on, typing_off or mark_seen."""
        return self._request({"recipient": {"id": recipient}, "sender_action": action})

    @property
    def can_send(self) -> bool:
        """Whether a page token is configured (without one, Graph refuses every send)."""
        return bool(self._token)

    def answer(self, answer: ProviderAnswer) -> Delivery:
        """What Graph's answer to one Send API request means."""
        data = answer.json()
        if 200 <= answer.status < 300 and not (isinstance(data, dict) and "error" in data):
            mid = data.get("message_id") if isinstance(data, dict) else None
            return Delivery("sent", channel_message_id=mid if isinstance(mid, str) else None)
        return graph_failure(answer.status, data)

    def _request(self, body: dict[str, Any]) -> OutboundRequest:
        # json.dumps as aiohttp's `json=` encodes it: the bytes Graph saw before.
        headers = {**self._headers, "Content-Type": "application/json"}
        encoded = json.dumps(body).encode()
        return OutboundRequest("POST", self._url, headers, encoded, self._params)


def sent_parts(outcomes: Sequence[Delivery], parts: int) -> Delivery:
    """One message's Delivery from its parts' (sent in order, stopping at the first
    failure): the first part's mid; a failure after some parts names how many were sent."""
    first = next((o.channel_message_id for o in outcomes if o.channel_message_id), None)
    failed = outcomes[-1] if outcomes and outcomes[-1].status == "failed" else None
    if failed is None:
        return Delivery(status="sent", channel_message_id=first)
    if len(outcomes) > 1:
        reason = f"{failed.reason} (after {len(outcomes) - 1} of {parts} parts were sent)"
        return Delivery("failed", first, reason, failed.retry)
    return failed


NO_TOKEN = Delivery("failed", reason=f"{REASON_TOKEN_INVALID}: no page token configured")
UNANSWERED_TIMEOUT = Delivery(
    "failed", reason=f"{REASON_TIMEOUT}: no answer from Graph", retry=True
)


def unreachable(exc: BaseException) -> Delivery:
    """A Send API request that got no answer (refused, reset…): worth a retry."""
    return Delivery("failed", reason=f"{REASON_NETWORK}: {type(exc).__name__}", retry=True)
