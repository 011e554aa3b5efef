"""Web replies: nothing to send, the widget takes them over its socket or in catch-up."""

from __future__ import annotations

from omni.channel import Delivery
from omni.model import Message


async def send(message: Message, recipient: str) -> Delivery:
    # Replies publish each message as they store it; the sockets and catch-up deliver it.
    return Delivery("sent")
