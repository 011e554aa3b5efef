"""Sending to a customer: a bot's or an agent's reply becomes an outbound message on the
timeline (status queued) and a delivery in the outbox, on the channel asked for or the
one the customer used last. The worker then delivers it (`omni.delivery`)."""

from __future__ import annotations

import msgspec

from omni.clock import iso, now_ms
from omni.errors import ValidationFailed
from omni.handoff import Handoffs
from omni.ids import new_message_id
from omni.live import Live
from omni.model import Author, Context, Identity, Message, MessageStatus, OutboundRequest
from omni.outbox import Outbox
from omni.store import Store


def recipient(context: Context, channel: str) -> str | None:
    """The customer's id on `channel`: the most recently linked identity there; on
    e-mail, before the customer has written from any address, the address they verified
    (a receipt to a customer of the web chat or the app)."""
    found = [i for i in context.customer.identities if i.channel == channel]
    found.sort(key=lambda i: i.linked_at or "")
    if found:
        return found[-1].external_id
    profile = context.customer.profile
    if channel == "email" and profile.email and profile.email_verified:
        return profile.email.casefold()
    return None


class Replies:
    def __init__(
        self,
        store: Store,
        outbox: Outbox,
        live: Live,
        channels: tuple[str, ...],
        *,
        handoffs: Handoffs | None = None,
    ):
        self.store = store
        self.outbox = outbox
        self.live = live
        self.channels = channels
        self.handoffs = handoffs

    async def send(
        self, cid: str, request: OutboundRequest, author: Author
    ) -> tuple[Message, bool]:
        """Store and queue one reply; a repeated `client_message_id` sends nothing twice."""
        if not (request.text or request.attachments):
            raise ValidationFailed("a reply needs text or attachments", field="text")
        context = await self.store.contexts.read(cid)
        channel = request.channel or context.customer.last_channel
        if channel is None:
            raise ValidationFailed("the customer has no channel yet; name one", field="channel")
        if channel not in self.channels:
            raise ValidationFailed(f"unknown channel {channel!r}", field="channel")
        to = recipient(context, channel)
        if to is None:
            raise ValidationFailed(
                f"the customer has no {channel} identity to send to", field="channel"
            )
        message_id = new_message_id()
        message = Message(
            id=message_id,
            customer_id=cid,
            conversation_id="",
            channel=channel,
            direction="outbound",
            author=author,
            received_at="",
            channel_message_id=f"omni:{request.client_message_id or message_id}",
            text=request.text,
            attachments=request.attachments,
            quick_replies=request.quick_replies,
        )
        status = MessageStatus(state="queued", at=iso(now_ms()) or "")
        stored, entry, created, *_ = await self.store.timeline.append(
            cid, message, identity=Identity(channel=channel, external_id=to), status=status
        )
        if created:
            await self.outbox.enqueue(
                channel,
                {"entry": entry, "recipient": to, "message": msgspec.to_builtins(stored)},
                idempotency_key=stored.id,
                customer_id=stored.customer_id,  # the survivor, if cid was merged away
            )
            await self.live.publish(stored.customer_id, "message", msgspec.to_builtins(stored))
            if self.handoffs is not None:
                await self.handoffs.on_reply(stored)
        return stored, created
