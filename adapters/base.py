"""The adapter seam: what every channel module implements.

An adapter turns a channel's inbound request into canonical events, and a canonical
outbound message into the channel's own request. It never touches Redis: the core owns
routes, storage, identity and dispatch, so adding a channel is one module and its tests.

Inbound, a request becomes a list of `ChannelEvent`s:

    Received   a message to put on the timeline (inbound from the customer, or
               outbound: the channel echoing a message we sent)
    Marked     something that happened to an earlier message or the conversation:
               read, sent, delivered or failed (a failure's detail "reason" says why),
               a reaction or its removal, deletion (unsend)
    Skipped    an event the adapter understood but that stores nothing, with a reason
               the core logs (a test webhook, an unknown event kind)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from omni.model import InboundMessage, Message


@dataclass(frozen=True)
class InboundRequest:
    """What the core hands an adapter: raw bytes (signatures cover them), headers, the
    URL the channel called (its public form, for schemes that sign the URL), and the
    query string parameters."""

    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes
    query: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Received:
    """A message for the timeline. `message.external_id` is always the customer's id
    on the channel, also for an echo of our own send (direction "outbound")."""

    message: InboundMessage
    direction: Literal["inbound", "outbound"] = "inbound"


MarkKind = Literal[
    "read", "sent", "delivered", "failed", "reaction", "unreaction", "deleted", "referral"
]


@dataclass(frozen=True)
class Marked:
    channel: str
    external_id: str
    kind: MarkKind
    channel_message_id: str | None = None
    at_ms: int | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Skipped:
    reason: str


ChannelEvent = Received | Marked | Skipped


@dataclass(frozen=True)
class Delivery:
    """The outcome of one outbound delivery attempt."""

    status: Literal["sent", "delivered", "failed"]
    channel_message_id: str | None = None
    reason: str | None = None
    retry: bool = False  # a failure worth another attempt (rate limit, 5xx, timeout)


class Adapter(Protocol):
    channel: str

    def verify(self, request: InboundRequest) -> None:
        """Raise `omni.errors.Unauthenticated` unless the request is the channel's own."""

    def parse(self, request: InboundRequest) -> Sequence[ChannelEvent]:
        """Every event in the request (a webhook may batch several). Raise
        `omni.errors.BadRequest` for a body that cannot be read; never anything else."""

    async def deliver(self, message: Message, recipient: str) -> Delivery:
        """Send one outbound message to the channel's recipient id."""
