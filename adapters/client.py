"""What omni's own clients (web widget, mobile app) share: the session routes, the
message a client sends, and the view of a message a client receives.

A client message (`POST /channels/<web|mobile>/messages` with `Authorization: Bearer
<session token>`, and the web socket's `message` frame) is JSON; unknown fields are
ignored so newer clients keep working against an older server:

    {"type": "message",                      optional; only "message"
     "client_msg_id": "c-7f3a-0001",          required, 1-128 printable ASCII, unique per
                                              visitor (a UUID); a retry sends the same one
     "text": "Hi 👋",                          up to 4096 characters
     "sent_at": "2026-01-01T00:00:00.120Z",   the client's clock, informational
     "attachments": [{"type": "image", "url": "https://…", "mime": "image/png",
                      "size": 1234, "name": "shoe.png"}],     up to 10, omni's Attachment
     "quick_reply": {"payload": "SIZE_42", "title": "42"},    a tapped quick reply
     "postback": {"payload": "ORDER_STATUS", "title": "Where is my order?"},
     "reply_to": "msg_…"}

At least one of text (not blank), attachments, quick_reply or postback is required. It
becomes a `Received` whose message has channel_message_id = client_msg_id, so a retried
send is stored once and the core acknowledges it with the same omni id (Chatwoot
`echoId`). external_id is the session's: the visitor id, or `user:<id>` once identified.

The message view (web socket `message` frame, mobile catch-up items) is
`{"type":"message","id","from"}` plus, only when known: `name` (author's display name),
`text`, `attachments`, `quick_reply`, `postback`, `reply_to`, `sent_at`, `client_msg_id`
(the customer's own sends on this channel, so a client can settle its optimistic copy),
and `channel` (only for a message from another channel).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

from adapters.base import ChannelEvent, InboundRequest, Received
from adapters.sessions import (
    Session,
    SessionAuthority,
    SessionGrant,
    decode_json,
    new_visitor_id,
)
from omni.clock import now_ms
from omni.errors import ValidationFailed
from omni.model import ATTACHMENTS_MAX, TEXT_MAX, Attachment, InboundMessage, Message, Payload

ClientMsgId = Annotated[str, Meta(min_length=1, max_length=128, pattern=r"^[\x21-\x7e]+$")]
OmniId = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]


class MessageBody(Struct, frozen=True):
    client_msg_id: ClientMsgId
    type: Literal["message"] = "message"
    text: Annotated[str, Meta(max_length=TEXT_MAX)] | None = None
    sent_at: Annotated[str, Meta(max_length=40, pattern=r"^\d{4}-\d\d-\d\dT")] | None = None
    attachments: Annotated[list[Attachment], Meta(max_length=ATTACHMENTS_MAX)] = []
    quick_reply: Payload | None = None
    postback: Payload | None = None
    reply_to: Annotated[str, Meta(max_length=512)] | None = None


def received(body: MessageBody, session: Session) -> Received:
    """A validated client message as the canonical inbound event."""
    has_text = body.text is not None and body.text.strip() != ""
    if not (has_text or body.attachments or body.quick_reply or body.postback):
        raise ValidationFailed(
            "a message needs text, attachments, a quick_reply or a postback", field="text"
        )
    metadata: dict[str, str | int | float | bool | None] = {}
    if session.identified:
        metadata["visitor_id"] = session.visitor_id
    return Received(
        InboundMessage(
            channel=session.channel,
            external_id=session.external_id,
            channel_message_id=body.client_msg_id,
            text=body.text if has_text else None,
            sent_at=body.sent_at,
            attachments=body.attachments,
            quick_reply=body.quick_reply,
            postback=body.postback,
            reply_to=body.reply_to,
            metadata=metadata,
        )
    )


def message_view(message: Message, channel: str) -> dict[str, Any]:
    """How a client sees one timeline message (see the module docstring)."""
    view: dict[str, Any] = {"type": "message", "id": message.id, "from": message.author.kind}
    if message.author.name:
        view["name"] = message.author.name
    if message.channel != channel:
        view["channel"] = message.channel
    elif message.direction == "inbound" and message.channel_message_id:
        view["client_msg_id"] = message.channel_message_id
    if message.text is not None:
        view["text"] = message.text
    if message.attachments:
        view["attachments"] = msgspec.to_builtins(message.attachments)
    for name in ("quick_reply", "postback"):
        value = getattr(message, name)
        if value is not None:
            view[name] = msgspec.to_builtins(value)
    if message.reply_to:
        view["reply_to"] = message.reply_to
    if message.sent_at:
        view["sent_at"] = message.sent_at
    return view


class ClientChannel:
    """Session, identify and message handling common to the web and mobile adapters."""

    channel: str

    def __init__(
        self,
        *,
        session_secret: str | bytes,
        identity_secret: str | bytes,
        session_ttl_s: int,
        previous_session_secrets: Sequence[str | bytes],
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.sessions = SessionAuthority(
            self.channel,
            session_secret=session_secret,
            identity_secret=identity_secret,
            session_ttl_s=session_ttl_s,
            previous_session_secrets=previous_session_secrets,
            clock=clock,
        )
        self._clock = clock

    # -- sessions and identify -----------------------------------------------------

    @staticmethod
    def new_visitor_id() -> str:
        return new_visitor_id()

    def issue_session(
        self, visitor_id: str, now_ms: int | None = None, *, user_id: str | None = None
    ) -> str:
        return self.sessions.issue(visitor_id, now_ms, user_id=user_id)

    def open_session(self, token: str, now_ms: int | None = None) -> Session:
        return self.sessions.open(token, now_ms)

    def verify_identity(self, user_id: str, user_hash: str | None) -> None:
        self.sessions.identity.verify(user_id, user_hash)

    def session_request(self, request: InboundRequest, now_ms: int | None = None) -> SessionGrant:
        """`POST /channels/<channel>/sessions`: answer `grant.render()` with `grant.status`."""
        return self.sessions.grant(request, now_ms)

    def authenticate(self, request: InboundRequest, now_ms: int | None = None) -> Session:
        """The session of a request (Authorization: Bearer, or `?token=` for sockets)."""
        return self.sessions.authenticate(request, now_ms)

    # -- messages (the Adapter seam's verify/parse, for POST …/messages) --------------

    def verify(self, request: InboundRequest) -> None:
        self.authenticate(request)

    def parse(self, request: InboundRequest) -> Sequence[ChannelEvent]:
        return [self.parse_message(request.body, self.authenticate(request))]

    def parse_message(self, body: bytes | str, session: Session) -> Received:
        return received(decode_json(body, MessageBody), session)
