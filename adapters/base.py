"""The adapter seam: what every channel module implements.

An adapter turns a channel's inbound request into canonical messages and a canonical
outbound message into the channel's own request. It never touches Redis: the core owns
routes, storage, identity and dispatch, so adding a channel is one module and its tests.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from omni.model import Message


@dataclass(frozen=True)
class InboundRequest:
    """What the core hands an adapter: the raw bytes, for signature checks, and headers."""

    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True)
class Parsed:
    """A canonical message plus the identity that sent it."""

    external_id: str
    message: Message


@dataclass(frozen=True)
class Delivery:
    """The outcome of one outbound delivery attempt."""

    status: str  # "sent", "delivered" or "failed"
    channel_message_id: str | None = None
    reason: str | None = None
    retry: bool = False


class Adapter(Protocol):
    channel: str

    def verify(self, request: InboundRequest) -> None:
        """Raise `omni.errors.Unauthenticated` unless the request is the channel's own."""

    def parse(self, request: InboundRequest) -> Sequence[Parsed]:
        """Every canonical message in the request (a webhook may batch several)."""

    async def deliver(self, message: Message, recipient: str) -> Delivery:
        """Send one outbound message to the channel's recipient id."""
