"""Instagram replies: sent through the Send API only inside the customer's window, measured
from their last message on Instagram (24 hours; an agent's reply up to 7 days with the
HUMAN_AGENT tag); outside it a reply fails at once with an `outside_window` reason."""

from __future__ import annotations

from collections.abc import Callable

from adapters.instagram.config import NAME
from adapters.instagram.protocol import (
    DAY_MS,
    REASON_OUTSIDE_WINDOW,
    InstagramAdapter,
    WindowState,
    window_state,
)
from omni.channel import Delivery
from omni.clock import now_ms
from omni.model import Message
from omni.store import Store

REASON_NOT_CONFIGURED = "not_configured"


class WindowedSender:
    """The worker's sender for Instagram: checks the customer's window, then sends."""

    def __init__(
        self, adapter: InstagramAdapter, store: Store, clock: Callable[[], int] = now_ms
    ) -> None:
        self.adapter = adapter
        self.store = store
        self.clock = clock

    async def __call__(self, message: Message, recipient: str) -> Delivery:
        last = await self.store.customers.last_inbound_ms(message.customer_id, NAME)
        now = self.clock()
        state = window_state(last, now)
        if state == "open":
            return await self.adapter.deliver(message, recipient)
        if state == "human_agent" and message.author.kind == "agent":
            return await self.adapter.deliver(message, recipient, human_agent=True)
        reason = closed_reason(state, None if last is None else now - last)
        return Delivery(status="failed", reason=f"{REASON_OUTSIDE_WINDOW}: {reason}")


def closed_reason(state: WindowState, age_ms: int | None) -> str:
    """Why a reply cannot go out, in words an agent can act on."""
    if age_ms is None:
        return "the customer has not written on Instagram; a business cannot start the chat"
    ago = f"{age_ms // DAY_MS} days" if age_ms >= 2 * DAY_MS else f"{age_ms // 3_600_000} h"
    if state == "human_agent":
        return (
            f"the customer last wrote {ago} ago; after 24 h only an agent may reply "
            "(sent with the HUMAN_AGENT tag) until 7 days"
        )
    return f"the customer last wrote {ago} ago; nothing can be sent after 7 days"


async def not_configured(message: Message, recipient: str) -> Delivery:
    return Delivery(
        status="failed",
        reason=f"{REASON_NOT_CONFIGURED}: set [instagram] page_token and account_id to send",
    )
