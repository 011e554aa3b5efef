"""Presence: which customers have a live socket on a channel, seen by every omni
process. A socket refreshes its marker while open; one that stops counts as gone after
`PRESENCE_TTL_MS`."""

from __future__ import annotations

from omni import keys
from omni.clock import now_ms
from omni.store import Store

PRESENCE_TTL_MS = 60_000  # a socket that stops refreshing counts as gone after this


async def present(store: Store, cid: str, channel: str, socket_id: str) -> None:
    """Mark (or refresh) one live socket; it lapses unless refreshed within the TTL."""
    key = keys.presence(cid, channel)
    now = now_ms()
    async with store.redis.pipeline(transaction=True) as pipe:
        pipe.zremrangebyscore(key, "-inf", now)
        pipe.zadd(key, {socket_id: now + PRESENCE_TTL_MS})
        pipe.pexpire(key, PRESENCE_TTL_MS)
        await pipe.execute()


async def absent(store: Store, cid: str, channel: str, socket_id: str) -> None:
    await store.redis.zrem(keys.presence(cid, channel), socket_id)


async def online(store: Store, cid: str, channel: str) -> bool:
    """Whether the customer has a live socket on the channel in any omni process."""
    return int(await store.redis.zcount(keys.presence(cid, channel), now_ms(), "+inf")) > 0
