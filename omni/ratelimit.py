"""Rate limits, held in Redis so they bind every omni process together.

Two kinds, each a fixed window of `[limits] window_s` seconds:

- per API key (`[limits] per_key` requests): checked when a key is authenticated;
- per channel identity (`[limits] per_identity` messages): a flood from one sender
  (an Instagram account, a widget session) cannot starve the others. A web or app
  client over its limit gets 429; a webhook that carries several senders' events
  (Instagram) has the others' events stored at once and is answered 429, so Meta
  redelivers it later: the flooding sender's messages wait, and none is acknowledged
  without being stored. WhatsApp, SMS and e-mail webhooks are limited per sender the
  same way (`omni.channel_http.within_limits`).

Over the limit: `TooManyRequests` (429 problem, `Retry-After`: the seconds to the next
window), counted in `/metrics` as omni_rate_limited_total{kind}. The cost on the hot
path is no round trip of its own: INCR and PEXPIRE NX go through the store's pipeliner,
in the pipeline of the event-loop turn that also carries the requests' appends and reads,
the turn's hits on one key as one INCRBY (`Pipeliner.count`).
0 switches a limit off.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import structlog
from aiohttp import web
from redis.asyncio import Redis

from omni import keys, metrics
from omni.errors import TooManyRequests
from omni.scripts import Pipeliner
from omni.settings import LimitSettings

log = structlog.get_logger("omni.ratelimit")
Kind = Literal["key", "identity"]


@dataclass(frozen=True, slots=True)
class Hit:
    """A staged hit: its replies (its count, PEXPIRE's) come in `replies`."""

    kind: Kind
    digest: str
    limit: int
    now: float
    window: int
    replies: asyncio.Future[list[Any]]


class RateLimiter:
    def __init__(
        self,
        redis: Redis,
        pipeliner: Pipeliner,
        limits: LimitSettings,
        clock: Callable[[], float] = time.time,
        parts: int = 1,
    ) -> None:
        """`parts`: the metrics hash's, where refusals are counted (omni.metrics)."""
        self.redis = redis
        self.pipeliner = pipeliner
        self.limits = limits
        self.parts = parts
        self._clock = clock

    async def key(self, api_key: str) -> None:
        """One request of this API key."""
        await self.settle(self.stage_key(api_key))

    def stage_key(self, api_key: str) -> Hit | None:
        """`key`'s INCR and PEXPIRE, staged in this turn's pipeline and not waited for:
        a handler that only reads sends its first read in the same round trip, and
        `settle` answers 429 before it answers (omni.auth.require)."""
        return self._stage("key", api_key, self.limits.per_key)

    async def identity(self, channel: str, external_id: str) -> None:
        """One message from (channel, external_id)."""
        who = f"{channel}\x00{external_id}"
        await self.settle(self._stage("identity", who, self.limits.per_identity))

    def _stage(self, kind: Kind, who: str, limit: int) -> Hit | None:
        if limit <= 0:
            return None
        window_s = self.limits.window_s
        now = self._clock()
        window = int(now // window_s)
        digest = _digest(who)
        name = keys.rate(kind, digest, window)
        return Hit(kind, digest, limit, now, window, self.pipeliner.count(name, window_s * 2000))

    async def settle(self, hit: Hit | None) -> None:
        """Raises TooManyRequests when the staged hit went over its limit."""
        if hit is None:
            return
        count, _ = await hit.replies
        kind, limit, window_s = hit.kind, hit.limit, self.limits.window_s
        if count > limit:
            retry = max(1, math.ceil((hit.window + 1) * window_s - hit.now))
            if count == limit + 1:  # once per window and sender: the flood is not logged
                log.warning("rate limit reached", kind=kind, limit=limit, window_s=window_s)
            await metrics.count_rate_limited(self.redis, hit.digest, self.parts, kind)
            raise TooManyRequests(
                f"more than {limit} {'requests' if kind == 'key' else 'messages'} in "
                f"{window_s} s; retry in {retry} s",
                retry_after_s=retry,
            )


LIMITER = web.AppKey("limiter", RateLimiter)


@functools.lru_cache(maxsize=4096)
def _digest(who: str) -> str:
    """A digest, not the key or the identity itself: neither belongs in a key name.
    Kept for the senders seen lately: a sender's messages come in runs, and the hash is
    a tenth of a hit's cost."""
    return hashlib.sha256(who.encode("utf-8", "surrogatepass")).hexdigest()[:24]
