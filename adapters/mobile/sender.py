"""Mobile replies: over the live socket when the customer has one open in any omni process,
otherwise pushed to each of the customer's active devices (APNs, FCM) through
`[mobile] push_url`; a token the provider calls invalid marks its device inactive.
The push requests and what the providers' answers mean are the protocol's; sending them
is here (`Pusher`)."""

from __future__ import annotations

import asyncio

import aiohttp

from adapters.mobile.config import NAME
from adapters.mobile.protocol import UNREACHABLE, MobileAdapter
from omni.channel import Delivery
from omni.channel_client import send
from omni.devices import Device, deactivate, device_records
from omni.model import Message
from omni.presence import online
from omni.store import Store

REASON_INVALID = "invalid_token"


class Pusher:
    """Sends the protocol's push requests (APNs, FCM, or a relay for them)."""

    def __init__(
        self, adapter: MobileAdapter, http: aiohttp.ClientSession, timeout_s: float = 10.0
    ) -> None:
        self.adapter = adapter
        self.http = http
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def deliver(self, message: Message, device: Device) -> Delivery:
        """Push one message to one device."""
        request = self.adapter.push_request(message, device)
        if isinstance(request, Delivery):
            return request
        try:
            answer = await send(self.http, request, self.timeout)
        except (aiohttp.ClientError, TimeoutError):
            return UNREACHABLE
        return self.adapter.push_answer(device, answer)


class MobileSender:
    """The worker's sender for replies on the mobile channel."""

    def __init__(self, pusher: Pusher, store: Store) -> None:
        self.pusher = pusher
        self.store = store

    async def __call__(self, message: Message, recipient: str) -> Delivery:
        cid = message.customer_id
        if await online(self.store, cid, NAME):
            return Delivery("sent")  # the live socket writes it (and marks it delivered)
        if not self.pusher.adapter.pushes:
            return Delivery("sent", reason="not pushed: no push endpoint; the app catches up")
        owners = [cid, *await self.store.customers.absorbed(cid)]
        found = await asyncio.gather(*(device_records(self.store, owner) for owner in owners))
        targets = [
            (owner, record.device)
            for owner, records in zip(owners, found, strict=True)
            for record in records.values()
            if record.status == "active"
        ]
        if not targets:
            return Delivery("sent", reason="not pushed: no active device; the app catches up")
        outcomes = await asyncio.gather(
            *(self.pusher.deliver(message, device) for _, device in targets)
        )
        for (owner, device), outcome in zip(targets, outcomes, strict=True):
            if outcome.reason == REASON_INVALID:
                await deactivate(self.store, owner, device, REASON_INVALID)
        return combined(outcomes)


def combined(outcomes: list[Delivery]) -> Delivery:
    """One push per device: sent if any device took it; else retried if any failure is
    worth a retry; else failed with every reason."""
    sent = [o for o in outcomes if o.status != "failed"]
    if sent:
        return Delivery("sent", channel_message_id=sent[0].channel_message_id)
    retry = [o for o in outcomes if o.retry]
    if retry:
        return Delivery("failed", reason=retry[0].reason, retry=True)
    reasons = sorted({o.reason or "failed" for o in outcomes})
    return Delivery("failed", reason=",".join(reasons))
