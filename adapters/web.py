"""The website chat widget: omni's own protocol, modelled on Chatwoot, Intercom, Sunshine
Conversations and Bot Framework Direct Line 3.0 (CHANNELS.md 3.1-3.5).

Signature schemes: sessions are HS256 JWTs under the server's session secret; login
(identify) is verified by `identifier_hash = hex(HMAC-SHA256(identity_secret,
identifier))`; both compared in constant time (`adapters.sessions`). The socket's
Origin is checked against the operator's list (`allowed_origin`).

Routes the core serves with this adapter:

    POST /channels/web/sessions   `session_request` (start | renew | identify)
    POST /channels/web/messages   `parse` -> [Received]; Bearer session token
    GET  /channels/web/ws         `authenticate` (`?token=`), `allowed_origin`, then
                                  text frames through `parse_frame` / `render_*`

WebSocket frames are JSON text, one object each, tagged by `type`; unknown fields are
ignored. From the client:

    {"type":"hello","anonymous_id":"vis_…","resume_after":"msg_…"}   -> Resume
    {"type":"message","client_msg_id":…,"text":…}  (adapters.client)  -> Received
    {"type":"typing","state":"start"|"stop"}                          -> Typing
    {"type":"read","up_to":"msg_…","from":"customer"}                 -> Marked(kind="read")
    {"type":"ping"}                                                   -> Ping

From the server:

    {"type":"ack","client_msg_id":…,"id":"msg_…"}          a stored send (a retry gets the
                                                           same id again)
    {"type":"message","id":"msg_…","from":"agent",…}       adapters.client message view
    {"type":"typing","state":"start"|"stop","from":"agent"|"bot"}
    {"type":"read","up_to":"msg_…","from":"agent"|"bot"}
    {"type":"error","status":422,"title":…,"detail":…,"field":…,"client_msg_id":…}
    {"type":"pong"}

On `Resume(after=…)` the core sends every message after that id as `message` frames
(Direct Line's watermark). Typing is ephemeral: relay it, never store it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Annotated, Literal
from urllib.parse import urlsplit

import msgspec
from msgspec import Meta, Struct

from adapters.base import Marked, Received
from adapters.client import ClientChannel, MessageBody, OmniId, message_view, received
from adapters.sessions import SESSION_TTL_S, Session, decode_json
from omni.clock import now_ms
from omni.errors import PayloadTooLarge, ProblemError, Unauthenticated, ValidationFailed
from omni.model import Message

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


class WebAdapter(ClientChannel):
    """The web widget channel. Pure: secrets in, parsed events and frames out."""

    channel = "web"

    def __init__(
        self,
        *,
        session_secret: str | bytes,
        identity_secret: str | bytes,
        session_ttl_s: int = SESSION_TTL_S,
        previous_session_secrets: Sequence[str | bytes] = (),
        clock: Callable[[], int] = now_ms,
    ) -> None:
        super().__init__(
            session_secret=session_secret,
            identity_secret=identity_secret,
            session_ttl_s=session_ttl_s,
            previous_session_secrets=previous_session_secrets,
            clock=clock,
        )

    # -- frames from the client ----------------------------------------------------

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

    # -- frames to the client ------------------------------------------------------

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


def _origin(value: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an origin or an allowed-origin entry; None if not one."""
    value = value.strip().lower()
    if not value.isascii():
        return None
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    if parts.username or parts.password or parts.query or parts.fragment:
        return None
    if parts.path not in ("", "/"):
        return None
    default = 443 if parts.scheme == "https" else 80
    return parts.scheme, parts.hostname, port if port is not None else default


def allowed_origin(origin: str | None, allowed: Iterable[str]) -> bool:
    """Whether a browser `Origin` may use the widget routes (CORS, WebSocket handshake).

    Entries are origins (`https://shop.example.com`, port optional when default),
    `https://*.example.com` for any subdomain (not the bare domain), or `*` for any
    http(s) origin. A missing origin, `null` (sandboxed frames, files) or anything that
    is not scheme://host[:port] is refused: the widget only runs in a browser page.
    """
    if not origin:
        return False
    seen = _origin(origin)
    if seen is None:
        return False
    scheme, host, port = seen
    for entry in allowed:
        entry = entry.strip()
        if entry == "*":
            return True
        wildcard = "://*." in entry
        want = _origin(entry.replace("://*.", "://", 1) if wildcard else entry)
        if want is None or want[0] != scheme or want[2] != port:
            continue
        if host.endswith("." + want[1]) if wildcard else host == want[1]:
            return True
    return False
