"""Delivery receipts: what a channel later says became of a message omni sent (Twilio's
status callbacks), written on the message's delivery status.

Receipts are separate requests and arrive in any order ("sent" after "delivered"), so
the furthest state is kept: queued < sent < delivered or failed. A receipt never moves
a message back. One that comes before the send itself has answered with the channel's
id (the provider called back while its answer to the send was on its way) waits beside
the customer's message ids and is applied when that id is linked (omni.delivery), if it
says more than "sent" (Twilio's callbacks through record_receipt, WhatsApp's statuses
through omni.inbox); one for a message omni never sent is kept there with the
customer's other message ids (and erased with them), and changes nothing.
"""

from __future__ import annotations

import msgspec
import structlog
from redis.exceptions import WatchError

from omni import codec, keys
from omni.clock import iso, now_ms
from omni.live import Live
from omni.model import DeliveryState, MessageStatus
from omni.store import Store
from omni.store.reply import as_bytes

log = structlog.get_logger("omni.receipts")
_RANK: dict[str, int] = {"queued": 0, "sent": 1, "delivered": 2, "failed": 2}


def supersedes(new: DeliveryState, old: DeliveryState | None) -> bool:
    return old is None or _RANK[new] > _RANK[old]


async def record_receipt(
    store: Store,
    live: Live,
    *,
    channel: str,
    external_id: str,
    channel_message_id: str,
    state: DeliveryState,
    reason: str | None = None,
) -> bool:
    """Write the receipt on the message the channel knows as `channel_message_id`, sent
    to `external_id`; False when it is unknown or older news than its status."""
    cid = await store.customers.find(channel, external_id)
    entry = await store.timeline.entry_of(cid, channel, channel_message_id) if cid else None
    if cid is None:
        log.info("receipt for a message omni does not know", channel=channel, state=state)
        return False
    if entry is None:
        # Kept until the send answers (the furthest of several is what is kept).
        await hold_early(store, cid, channel, channel_message_id, state, reason)
        return False
    return await _apply(store, live, cid, entry, channel_message_id, state, reason)


async def apply_early(
    store: Store, live: Live, cid: str, channel: str, channel_message_id: str, entry: str
) -> bool:
    """Apply a receipt that came before the send answered, now that its id is linked."""
    field = _early_field(channel, channel_message_id)
    held = await store.redis.hget(keys.message_ids(cid), field)
    if held is None:
        return False
    await store.redis.hdel(keys.message_ids(cid), field)
    early = codec.decode(as_bytes(held), MessageStatus)
    return await _apply(store, live, cid, entry, channel_message_id, early.state, early.reason)


async def hold_early(
    store: Store,
    cid: str,
    channel: str,
    channel_message_id: str,
    state: DeliveryState,
    reason: str | None = None,
) -> None:
    """Keep a receipt for a message whose send has not answered yet (its id is not linked);
    `apply_early` writes it once the id is linked. Queued or sent: the answer says as much."""
    if _RANK[state] >= _RANK["delivered"]:
        early = MessageStatus(state=state, at=iso(now_ms()) or "", reason=reason)
        await _stash(store, cid, channel, channel_message_id, early)


def _early_field(channel: str, channel_message_id: str) -> str:
    # Beside "<channel>:<id>" entries of the same hash, never mistaken for one: a channel
    # name has no "#".
    return f"rcpt#{channel}:{channel_message_id}"


async def _stash(
    store: Store, cid: str, channel: str, channel_message_id: str, status: MessageStatus
) -> None:
    field = _early_field(channel, channel_message_id)
    async with store.redis.pipeline(transaction=True) as pipe:
        while True:
            try:
                await pipe.watch(keys.message_ids(cid))
                held = await pipe.hget(keys.message_ids(cid), field)
                old = codec.decode(as_bytes(held), MessageStatus) if held else None
                if old is not None and not supersedes(status.state, old.state):
                    return
                pipe.multi()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
                pipe.hset(keys.message_ids(cid), field, codec.encode(status))
                await pipe.execute()
                return
            except WatchError:
                continue


async def _apply(
    store: Store,
    live: Live,
    cid: str,
    entry: str,
    channel_message_id: str,
    state: DeliveryState,
    reason: str | None,
) -> bool:
    field = f"s:{entry}"
    async with store.redis.pipeline(transaction=True) as pipe:
        while True:
            try:
                await pipe.watch(keys.notes(cid))
                held = await pipe.hget(keys.notes(cid), field)
                old = codec.decode(as_bytes(held), MessageStatus) if held else None
                if not supersedes(state, old.state if old else None):
                    return False  # leaving the block unwatches
                status = MessageStatus(
                    state=state,
                    at=iso(now_ms()) or "",
                    reason=reason,
                    attempts=old.attempts if old else 0,
                    channel_message_id=channel_message_id,
                )
                pipe.multi()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
                pipe.hset(keys.notes(cid), field, codec.encode(status))
                pipe.hincrby(keys.customer(cid), "rev", 1)
                await pipe.execute()
                break
            except WatchError:  # another receipt for this customer wrote first
                continue
    message = await store.timeline.message_at(cid, entry)
    data = {"id": message.id if message else None, **msgspec.to_builtins(status)}
    await live.publish(cid, "message.status", data)
    return True
