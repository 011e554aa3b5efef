"""Delivery receipts: what a channel later says became of a message omni sent (Twilio's
status callbacks), written on the message's delivery status.

Receipts are separate requests and arrive in any order ("sent" after "delivered"), so
the furthest state is kept: queued < sent < delivered or failed. A receipt never moves
a message back, and one for a message omni does not know (not sent by omni, or its
send has not answered yet) changes nothing.
"""

from __future__ import annotations

import msgspec
import structlog
from redis.exceptions import WatchError

from omni import codec, keys
from omni.clock import iso, now_ms
from omni.live import Live
from omni.model import DeliveryState, MessageStatus
from omni.store import Store, _b

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
    cid = await store.find(channel, external_id)
    entry = await store.entry_of(cid, channel, channel_message_id) if cid else None
    if cid is None or entry is None:
        log.info("receipt for a message omni does not know", channel=channel, state=state)
        return False
    field = f"s:{entry}"
    async with store.redis.pipeline(transaction=True) as pipe:
        while True:
            try:
                await pipe.watch(keys.notes(cid))
                held = await pipe.hget(keys.notes(cid), field)
                old = codec.decode(_b(held), MessageStatus) if held else None
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
    message = await store.message_at(cid, entry)
    data = {"id": message.id if message else None, **msgspec.to_builtins(status)}
    await live.publish(cid, "message.status", data)
    return True
