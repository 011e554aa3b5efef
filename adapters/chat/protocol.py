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
`text`, `attachments`, `quick_reply`, `postback`, `quick_replies` (buttons offered with
an agent's, bot's or survey's message: `[{"payload", "title"}]`; a tap sends the
`quick_reply` back), `reply_to`, `sent_at`, `client_msg_id`
(the customer's own sends on this channel, so a client can settle its optimistic copy),
and `channel` (only for a message from another channel).

Catch-up (`GET /channels/<web|mobile>/messages?after=<id>&limit=<1-200>`, Bearer session
token): the messages after `after` (a message id a client was sent, or a `next_after`),
oldest first, as `{"messages": [view…], "next_after": <id>, "has_more": bool}`. Without
`after`, the latest page. It is how a client resumes after a reconnect (Direct Line's
watermark).

Socket frames (`GET /channels/<web|mobile>/ws`) are JSON text, one object each, tagged by
`type`; unknown fields are ignored. From the client:

    {"type":"hello","anonymous_id":"vis_…","resume_after":"msg_…"}   -> Resume
    {"type":"message","client_msg_id":…,"text":…}  (the body above)   -> Received
    {"type":"typing","state":"start"|"stop"}                          -> Typing
    {"type":"read","up_to":"msg_…","from":"customer"}                 -> Marked(kind="read")
    {"type":"ping"}                                                   -> Ping

From the server:

    {"type":"ack","client_msg_id":…,"id":"msg_…"}          a stored send (a retry gets the
                                                           same id again)
    {"type":"message","id":"msg_…","from":"agent",…}       the message view above
    {"type":"typing","state":"start"|"stop","from":"agent"|"bot"}
    {"type":"read","up_to":"msg_…","from":"agent"|"bot"}
    {"type":"error","status":422,"title":…,"detail":…,"field":…,"client_msg_id":…}
    {"type":"pong"}

On `Resume(after=…)` the core sends every message after that id as `message` frames.
Typing is ephemeral: relay it, never store it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

from adapters.chat.sessions import (
    SESSION_TTL_S,
    Session,
    SessionAuthority,
    SessionGrant,
    decode_json,
    new_visitor_id,
)
from omni.channel import ChannelEvent, InboundRequest, Marked, Received
from omni.clock import now_ms
from omni.errors import (
    BadRequest,
    PayloadTooLarge,
    ProblemError,
    Unauthenticated,
    ValidationFailed,
)
from omni.model import (
    ATTACHMENTS_MAX,
    PAGE_DEFAULT,
    PAGE_MAX,
    TEXT_MAX,
    Attachment,
    InboundMessage,
    Message,
    Payload,
)

ClientMsgId = Annotated[str, Meta(min_length=1, max_length=128, pattern=r"^[\x21-\x7e]+$")]
OmniId = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]

FRAME_MAX = 64 * 1024  # bytes; also give it to WebSocketResponse(max_msg_size=…)

TypingState = Literal["start", "stop"]
Staff = Literal["agent", "bot"]


@dataclass(frozen=True)
class Resume:
    """The client (re)connected; send what it missed after `after` (None: nothing seen)."""

    after: str | None


@dataclass(frozen=True)
class Typing:
    """The customer started or stopped typing: relay to agents, do not store."""

    external_id: str
    state: TypingState


@dataclass(frozen=True)
class Ping:
    """A client keep-alive: answer `render_pong()`."""


InboundFrame = Resume | Received | Typing | Marked | Ping


@dataclass(frozen=True)
class CatchUp:
    """`GET /channels/<channel>/messages`: the session's messages after `after`."""

    session: Session
    after: str | None
    limit: int


class MessageBody(Struct, frozen=True):
    client_msg_id: ClientMsgId
    type: Literal["message"] = "message"
    text: Annotated[str, Meta(max_length=TEXT_MAX)] | None = None
    sent_at: Annotated[str, Meta(max_length=40, pattern=r"^\d{4}-\d\d-\d\dT")] | None = None
    attachments: Annotated[list[Attachment], Meta(max_length=ATTACHMENTS_MAX)] = []
    quick_reply: Payload | None = None
    postback: Payload | None = None
    reply_to: Annotated[str, Meta(max_length=512)] | None = None


class _Head(Struct, frozen=True):
    type: str


class _Hello(Struct, frozen=True):
    anonymous_id: Annotated[str, Meta(max_length=64)] | None = None
    resume_after: OmniId | None = None


class _Typing(Struct, frozen=True):
    state: TypingState
    sender: Literal["customer"] = msgspec.field(default="customer", name="from")


class _Read(Struct, frozen=True):
    up_to: OmniId
    sender: Literal["customer"] = msgspec.field(default="customer", name="from")


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
    if message.quick_replies:  # buttons offered with the message (a survey's scores)
        view["quick_replies"] = msgspec.to_builtins(message.quick_replies)
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
        session_ttl_s: int = SESSION_TTL_S,
        previous_session_secrets: Sequence[str | bytes] = (),
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

    # -- catch-up ----------------------------------------------------------------------

    def parse_catch_up(self, request: InboundRequest, now_ms: int | None = None) -> CatchUp:
        session = self.authenticate(request, now_ms)
        after = request.query.get("after") or None
        if after is not None:
            try:
                msgspec.convert(after, OmniId)
            except msgspec.ValidationError:
                raise BadRequest(
                    "after must be a message id this API sent", field="after"
                ) from None
        raw = request.query.get("limit")
        if raw is None:
            limit = PAGE_DEFAULT
        elif raw.isdigit() and len(raw) <= 4 and 1 <= int(raw) <= PAGE_MAX:
            limit = int(raw)
        else:
            raise BadRequest(f"limit must be a whole number from 1 to {PAGE_MAX}", field="limit")
        return CatchUp(session, after, limit)

    def render_catch_up(
        self, messages: Sequence[Message], *, after: str | None, has_more: bool
    ) -> dict[str, Any]:
        """Oldest first. `next_after` is what the client sends as `after` next time."""
        return {
            "messages": [message_view(m, self.channel) for m in messages],
            "next_after": messages[-1].id if messages else after,
            "has_more": has_more,
        }

    # -- socket frames from the client --------------------------------------------------

    def parse_frame(
        self, data: str | bytes, session: Session, now_ms: int | None = None
    ) -> InboundFrame:
        """One client frame. BadRequest/ValidationFailed/PayloadTooLarge for a bad one
        (answer `render_error` and keep the socket); Unauthenticated for a hello that
        names another visitor (close the socket)."""
        raw = data.encode() if isinstance(data, str) else data
        if len(raw) > FRAME_MAX:
            raise PayloadTooLarge(f"a frame may be at most {FRAME_MAX} bytes")
        kind = decode_json(raw, _Head).type
        if kind == "message":
            return received(decode_json(raw, MessageBody), session)
        if kind == "hello":
            hello = decode_json(raw, _Hello)
            if hello.anonymous_id not in (None, session.visitor_id):
                raise Unauthenticated(
                    "anonymous_id is not the visitor of this session", field="anonymous_id"
                )
            return Resume(after=hello.resume_after)
        if kind == "typing":
            return Typing(session.external_id, decode_json(raw, _Typing).state)
        if kind == "read":
            read = decode_json(raw, _Read)
            return Marked(
                channel=self.channel,
                external_id=session.external_id,
                kind="read",
                at_ms=self._clock() if now_ms is None else now_ms,
                detail={"up_to": read.up_to, "watermark": True},
            )
        if kind == "ping":
            return Ping()
        raise ValidationFailed(f"unknown frame type {kind!r}", field="type")

    # -- socket frames to the client -----------------------------------------------------

    def render_message(self, message: Message) -> str:
        return _text(message_view(message, self.channel))

    def render_ack(self, client_msg_id: str, message_id: str) -> str:
        return _text({"type": "ack", "client_msg_id": client_msg_id, "id": message_id})

    def render_typing(self, state: TypingState, sender: Staff = "agent") -> str:
        return _text({"type": "typing", "state": state, "from": sender})

    def render_read(self, up_to: str, sender: Staff = "agent") -> str:
        return _text({"type": "read", "up_to": up_to, "from": sender})

    def render_error(self, problem: ProblemError, client_msg_id: str | None = None) -> str:
        frame: dict[str, object] = {
            "type": "error",
            "status": problem.status,
            "title": problem.title,
            "detail": problem.detail,
        }
        if problem.field is not None:
            frame["field"] = problem.field
        if client_msg_id is not None:
            frame["client_msg_id"] = client_msg_id
        return _text(frame)

    def render_pong(self) -> str:
        return _text({"type": "pong"})


def _text(frame: dict[str, object]) -> str:
    return msgspec.json.encode(frame).decode()
