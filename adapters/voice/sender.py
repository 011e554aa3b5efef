"""Voice replies: none can be sent. Twilio only speaks what omni answers to one of its own
webhooks, so a reply queued outside a call has no way into the line: it fails at once,
without retries, saying why (the bot speaks its replies during the call instead)."""

from __future__ import annotations

from typing import Final

from omni.channel import Delivery
from omni.model import Message

REASON_NOT_IN_CALL: Final = (
    "voice replies are spoken during a call, by the voice bot: a reply sent while the "
    "customer is not on the line cannot reach them; send it on another channel"
)


async def send(message: Message, recipient: str) -> Delivery:
    return Delivery(status="failed", reason=REASON_NOT_IN_CALL, retry=False)
