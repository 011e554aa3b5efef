"""Delivery statuses a channel reports after the send (WhatsApp's sent, delivered, read,
failed): they come out of order and repeated, so a reply's status only moves forward,
and delivered and failed are both final. Beside `set_status`, which the worker uses
to record its own attempt, whatever it was."""

from __future__ import annotations

from redis.asyncio import Redis
from redis.exceptions import WatchError

from omni import codec, keys
from omni.model import DeliveryState, MessageStatus

RANK: dict[str, int] = {"queued": 0, "sent": 1, "delivered": 2, "failed": 2}


async def advance_status(
    redis: Redis, cid: str, entry: str, state: DeliveryState, at: str, reason: str | None = None
) -> MessageStatus | None:
    """The message's new status, or None when it did not change: the report is not
    further than what is recorded, or the message has no delivery status (it is not
    one we sent)."""
    key, field = keys.notes(cid), f"s:{entry}"
    async with redis.pipeline(transaction=True) as pipe:
        while True:
            try:
                await pipe.watch(key)
                old = await pipe.hget(key, field)
                current = codec.decode(old, MessageStatus) if isinstance(old, bytes) else None
                if current is None or RANK[state] <= RANK[current.state]:
                    await pipe.unwatch()  # type: ignore[no-untyped-call]
                    return None
                status = MessageStatus(
                    state=state,
                    at=at,
                    reason=reason,
                    attempts=current.attempts,
                    channel_message_id=current.channel_message_id,
                )
                pipe.multi()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
                pipe.hset(key, field, codec.encode(status))
                pipe.hincrby(keys.customer(cid), "rev", 1)
                await pipe.execute()
                return status
            except WatchError:
                continue  # another report on this customer's messages came first
