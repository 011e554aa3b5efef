"""Presence: which customers have a live socket on a channel, seen by every omni
process. A socket refreshes its marker while open; one that stops counts as gone after
`PRESENCE_TTL_MS`."""

from __future__ import annotations

from redis.asyncio import Redis

from omni import keys
from omni.clock import now_ms

PRESENCE_TTL_MS = 60_000  # a socket that stops refreshing counts as gone after this


async def present(redis: Redis, cid: str, channel: str, socket_id: str) -> None:
    """Mark (or refresh) one live socket; it lapses unless refreshed within the TTL."""
    key = keys.presence(cid, channel)
    now = now_ms()
    async with redis.pipeline(transaction=True) as pipe:
        pipe.zremrangebyscore(key, "-inf", now)
        pipe.zadd(key, {socket_id: now + PRESENCE_TTL_MS})
        pipe.pexpire(key, PRESENCE_TTL_MS)
        await pipe.execute()


async def absent(redis: Redis, cid: str, channel: str, socket_id: str) -> None:
    await redis.zrem(keys.presence(cid, channel), socket_id)


async def online(redis: Redis, cid: str, channel: str) -> bool:
    """Whether the customer has a live socket on the channel in any omni process."""
    return int(await redis.zcount(keys.presence(cid, channel), now_ms(), "+inf")) > 0
