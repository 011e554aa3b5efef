"""Instagram replies: sent through the Send API only inside the customer's window, measured
from their last message on Instagram (24 hours; an agent's reply up to 7 days with the
HUMAN_AGENT tag); outside it a reply fails at once with an `outside_window` reason.

The requests and what Graph's answers mean are the protocol's (`adapters.instagram.
protocol`); sending them is here (`GraphSender`)."""

from __future__ import annotations

from collections.abc import Callable

import aiohttp

from adapters.instagram.config import NAME
from adapters.instagram.outbound import REASON_UNSENDABLE
from adapters.instagram.protocol import (
    DAY_MS,
    NO_TOKEN,
    REASON_OUTSIDE_WINDOW,
    UNANSWERED_TIMEOUT,
    InstagramAdapter,
    SenderAction,
    WindowState,
    sent_parts,
    unreachable,
    window_state,
)
from omni.channel import Delivery, OutboundRequest
from omni.channel_client import send
from omni.clock import now_ms
from omni.model import Message
from omni.store import Store

REASON_NOT_CONFIGURED = "not_configured"


class GraphSender:
    """Sends the protocol's Send API requests as the adapter's account."""

    def __init__(
        self, adapter: InstagramAdapter, session: aiohttp.ClientSession, timeout: float = 10.0
    ) -> None:
        self.adapter = adapter
        self.session = session
        self.timeout = aiohttp.ClientTimeout(total=timeout)

    async def deliver(
        self, message: Message, recipient: str, *, human_agent: bool = False
    ) -> Delivery:
        """Send one message, one Send API call per part, stopping at the first failure."""
        try:
            requests = self.adapter.requests(message, recipient, human_agent=human_agent)
        except ValueError as exc:
            return Delivery(status="failed", reason=f"{REASON_UNSENDABLE}: {exc}")
        outcomes: list[Delivery] = []
        for request in requests:
            outcomes.append(await self._send(request))
            if outcomes[-1].status == "failed":
                break
        return sent_parts(outcomes, len(requests))

    async def send_action(self, recipient: str, action: SenderAction) -> Delivery:
        """A sender action: typing_on, typing_off or mark_seen."""
        return await self._send(self.adapter.action_request(recipient, action))

    async def _send(self, request: OutboundRequest) -> Delivery:
        if not self.adapter.can_send:
            return NO_TOKEN
        try:
            answer = await send(self.session, request, self.timeout)
        except TimeoutError:
            return UNANSWERED_TIMEOUT
        except aiohttp.ClientError as exc:
            return unreachable(exc)
        return self.adapter.answer(answer)


class WindowedSender:
    """The worker's sender for Instagram: checks the customer's window, then sends."""

    def __init__(self, graph: GraphSender, store: Store, clock: Callable[[], int] = now_ms) -> None:
        self.graph = graph
        self.store = store
        self.clock = clock

    async def __call__(self, message: Message, recipient: str) -> Delivery:
        last = await self.store.customers.last_inbound_ms(message.customer_id, NAME)
        now = self.clock()
        state = window_state(last, now)
        if state == "open":
            return await self.graph.deliver(message, recipient)
        if state == "human_agent" and message.author.kind == "agent":
            return await self.graph.deliver(message, recipient, human_agent=True)
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
