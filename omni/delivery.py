"""The worker's handlers: a reply to a channel goes out through the channel's sender and
its outcome is written on the message; a bot webhook carries the context as it is when
the bot is called, and the bot's replies go back out through `omni.replies`."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Mapping

import msgspec
import structlog

from omni.bots import BotDispatcher, BotReply
from omni.channel import Delivery, Sender
from omni.clock import iso, now_ms
from omni.live import Live
from omni.model import (
    Author,
    DeliveryState,
    Message,
    MessageStatus,
    OutboundRequest,
    echo_fingerprint,
)
from omni.outbox import Job
from omni.receipts import apply_early
from omni.replies import Replies
from omni.store import Store

log = structlog.get_logger("omni.delivery")


class ChannelDelivery:
    """The handler for one channel's replies (delivery kind = the channel's name)."""

    def __init__(
        self,
        store: Store,
        live: Live,
        sender: Sender | None,
        max_attempts: int,
        *,
        echoes: bool = False,
    ) -> None:
        self.store = store
        self.live = live
        self.sender = sender
        self.max_attempts = max_attempts
        self.echoes = echoes  # the channel sends our sends back (omni.inbox matches them)

    async def __call__(self, job: Job) -> Delivery:
        payload = job.payload
        cid = job.customer_id or ""
        message = msgspec.convert(payload["message"], Message)
        entry = str(payload["entry"])
        recipient = str(payload["recipient"])
        # The echo of this send may come before the send answers with its id for it.
        echo = (
            echo_fingerprint(recipient, message.text, message.attachments)
            if self.echoes and self.sender is not None
            else None
        )
        if self.sender is None:
            outcome = Delivery(status="failed", reason=f"no adapter sends on {job.kind}")
        else:
            if echo is not None:
                await self.store.timeline.expect_echo(cid, message.channel, echo, entry)
            try:
                outcome = await self.sender(message, recipient)
            except Exception as exc:
                log.exception("sender failed", channel=job.kind)
                outcome = Delivery(status="failed", reason=type(exc).__name__, retry=True)
        state: DeliveryState = outcome.status
        if state == "failed" and outcome.retry and job.attempt < self.max_attempts:
            state = "queued"  # the worker will try again; the reason says why it waits
        status = MessageStatus(
            state=state,
            at=iso(now_ms()) or "",
            reason=outcome.reason,
            attempts=job.attempt,
            channel_message_id=outcome.channel_message_id,
        )
        await self.store.timeline.set_status(cid, entry, status)
        if outcome.channel_message_id:
            await self.store.timeline.link_channel_message(
                cid, message.channel, outcome.channel_message_id, entry
            )
        if echo is not None:
            await self.store.timeline.echo_settled(cid, message.channel, echo)
        await self.live.publish(
            cid, "message.status", {"id": message.id, **msgspec.to_builtins(status)}
        )
        if outcome.channel_message_id:
            # A receipt the channel sent before this answer came back (omni.receipts).
            await apply_early(
                self.store, self.live, cid, message.channel, outcome.channel_message_id, entry
            )
        return outcome


class BotDelivery:
    """The handler for bot webhooks: adds the current context, then calls the bot. While
    a bot answers a message, the customer's live events say it is typing (omni's own
    chat clients show it; agents' consoles may)."""

    def __init__(self, store: Store, dispatcher: BotDispatcher, live: Live):
        self.store = store
        self.dispatcher = dispatcher
        self.live = live

    async def __call__(self, job: Job) -> Delivery:
        context = await self.store.contexts.read(job.customer_id or "")
        payload = {**job.payload, "context": msgspec.to_builtins(context)}
        channel = job.payload.get("bot")
        typing = job.payload.get("type") != "handoff"  # a handoff is news, not a question
        if typing:
            await self._typing(job, channel, "start")
        try:
            return await self.dispatcher(dataclasses.replace(job, payload=payload))
        finally:
            if typing:
                await self._typing(job, channel, "stop")

    async def _typing(self, job: Job, channel: object, state: str) -> None:
        typing = {"channel": channel, "from": "bot", "state": state}
        await self.live.publish(job.customer_id or "", "typing", typing)


def bot_replies(replies_out: Replies) -> Callable[[Job, list[BotReply]], Awaitable[None]]:
    """What to do with the replies in a bot's answer: send each on the channel the
    customer wrote on; ids made from the delivery id make a retried call send once."""

    async def on_replies(job: Job, replies: list[BotReply]) -> None:
        if job.payload.get("type") == "handoff":
            # An agent answers this customer now; the bot was only told.
            log.info("bot replies to a handoff event not sent", bot=job.payload.get("bot"))
            return
        channel = str(job.payload["bot"])
        for index, reply in enumerate(replies):
            request = OutboundRequest(
                text=reply.text,
                channel=channel,
                quick_replies=reply.quick_replies,
                client_message_id=f"{job.delivery_id}:{index}",
            )
            author = Author(kind="bot", name=f"{channel} bot")
            await replies_out.send(job.customer_id or "", request, author)

    return on_replies


def handlers(
    store: Store,
    live: Live,
    replies: Replies,
    dispatcher_factory: Callable[[Callable[[Job, list[BotReply]], Awaitable[None]]], BotDispatcher],
    senders: Mapping[str, Sender],
    echoing: frozenset[str],
    channels: tuple[str, ...],
    max_attempts: int,
) -> dict[str, Callable[[Job], Awaitable[Delivery]]]:
    table: dict[str, Callable[[Job], Awaitable[Delivery]]] = {
        channel: ChannelDelivery(
            store, live, senders.get(channel), max_attempts, echoes=channel in echoing
        )
        for channel in channels
    }
    table["bot"] = BotDelivery(store, dispatcher_factory(bot_replies(replies)), live)
    return table
