"""The service report's figures, counted as things happen (`GET /v1/reports/service`
reads them: `omni.report_query`).

Each event adds to per-day buckets in Redis (keys: `omni.keys.report_day` and
beside it), in the shard of the customer it is about (crc32 of the id modulo `[reports]
shards`), so there is no service-wide key to contend on and a Redis Cluster spreads them.
A counter field is "<figure>|<channel>|<agent>": the channel the conversation started on
(or where the thing happened) and who answered or resolved it (an agent id, "bot", or ""
for what belongs to no one yet: a conversation starting, a channel switch). Durations
(first response, resolution) are also kept as samples (members name the conversation by
a digest, never the customer's id), at most `samples_per_day` per shard
and day (a uniform sample past that), so the median and p90 are exact up to that volume.

    conv       conversations started            switch     inbound channel switches
    frt_n/sum  first responses, their ms         res_n/sum  resolutions, their ms
    reopen     resolutions followed by a new conversation within `reopen_window_s`
               (counted on the resolution's day, channel and agent)
    cross      resolved conversations that crossed channels; cross_ok: without a
               repeated question in them
    q_rep      repeated questions let through   q_ans      questions omni answered for bots
    cart_placed / cart_cross   orders placed; of those, carts started on another channel
    <kind>_sent / _n / _sum    surveys asked, answered, the scores' sum (csat, ces, nps);
               nps_p / nps_pa / nps_d: promoters (9-10), passives (7-8), detractors (0-6)
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable
from dataclasses import dataclass

from redis.asyncio import Redis

from omni import keys, scripts
from omni.settings import Settings, read_int

SEP = "|"
Count = tuple[str, str, str, int]  # figure, channel, agent, how many


@dataclass(frozen=True)
class ReportSettings:
    shards: int = 16  # changing it later strands the figures already counted
    samples_per_day: int = 2000
    reopen_window_s: int = 7 * 86400
    retention_days: int = 400


def read_settings(settings: Settings) -> ReportSettings:
    section = settings.sections.get("reports", {})
    return ReportSettings(
        shards=read_int(section, "reports.shards", 16, low=1, high=1024),
        samples_per_day=read_int(section, "reports.samples_per_day", 2000, low=10, high=100_000),
        reopen_window_s=read_int(section, "reports.reopen_window_s", 7 * 86400, low=0,
                                 high=366 * 86400),
        retention_days=read_int(section, "reports.retention_days", 400, low=1, high=3650),
    )  # fmt: skip


def day_of(ms: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(ms // 1000))


def field(figure: str, channel: str, agent: str) -> str:
    return SEP.join(part.replace(SEP, "/") for part in (figure, channel, agent))


@dataclass(frozen=True)
class Resolution:
    """A conversation just resolved (omni.handoff), as the survey and report see it."""

    customer_id: str
    conversation: int
    channel: str  # where it started
    agent: str  # the agent's id, or "bot"
    resolved_by: str  # bot | agent
    channels: tuple[str, ...]
    took_ms: int
    repeated: bool
    at_ms: int


class Reports:
    def __init__(self, redis: Redis, config: ReportSettings) -> None:
        self.redis = redis
        self.config = config
        self._sample = scripts.load(redis, "reports")

    def shard(self, cid: str) -> int:
        return keys.shard_of(cid, self.config.shards)

    async def _count(self, cid: str, day: str, counts: Iterable[Count]) -> None:
        batch = scripts.Batch()
        self._stage_count(batch, cid, day, counts)
        await batch.execute(self.redis)

    def _stage_count(
        self, batch: scripts.Batch, cid: str, day: str, counts: Iterable[Count]
    ) -> None:
        key = keys.report_day(self.shard(cid), day)
        for figure, channel, agent, by in counts:
            batch.command("hincrby", key, field(figure, channel, agent), by)
        batch.command("expire", key, self.config.retention_days * 86400)

    async def _duration(
        self, cid: str, figure: str, day: str, channel: str, agent: str, conv: int, ms: int
    ) -> None:
        # The conversation by a digest, not its customer's id: an erased customer leaves
        # nothing that names them in the report (the figures stay).
        which = hashlib.blake2b(f"{cid}:{conv}".encode(), digest_size=8).hexdigest()
        member = SEP.join((channel.replace(SEP, "/"), agent.replace(SEP, "/"), which))
        key = keys.report_samples(self.shard(cid), figure, day)
        ttl = self.config.retention_days * 86400
        await self._sample(keys=[key], args=[member, max(0, ms), self.config.samples_per_day, ttl])

    # -- what happened ----------------------------------------------------------------

    def stage_journey(
        self,
        batch: scripts.Batch,
        cid: str,
        channel: str,
        step: str,
        conv: int,
        last_resolution: bytes,
        at_ms: int,
    ) -> None:
        """A new inbound message moved the journey (`Appended.journey`): it opened
        conversation `conv` ('n') or switched channel ('s'). Staged in the caller's batch
        (the ingest's live event's), not a round trip of its own: the counters depend on
        nothing the batch writes."""
        if step not in ("n", "s"):
            return  # most messages: neither (and the day is not worth making)
        day = day_of(at_ms)
        if step == "s":
            self._stage_count(batch, cid, day, [("switch", channel, "", 1)])
            return
        self._stage_count(batch, cid, day, [("conv", channel, "", 1)])
        if conv > 1:  # had a conversation before: a returning customer
            shard = self.shard(cid)
            ttl = self.config.retention_days * 86400
            for where in (channel, "*"):
                batch.command("pfadd", keys.report_returning(shard, day, where), cid)
                batch.command("expire", keys.report_returning(shard, day, where), ttl)
        parts = last_resolution.decode(errors="replace").split(SEP)
        if len(parts) == 4 and parts[0].isdigit():
            resolved_ms, resolved_day, resolved_channel, agent = parts
            if at_ms - int(resolved_ms) <= self.config.reopen_window_s * 1000:
                counts: list[Count] = [("reopen", resolved_channel, agent, 1)]
                self._stage_count(batch, cid, resolved_day, counts)

    async def first_response(
        self, cid: str, channel: str, agent: str, conv: int, took_ms: int, at_ms: int
    ) -> None:
        day = day_of(at_ms)
        await self._count(cid, day, [("frt_n", channel, agent, 1),
                                     ("frt_sum", channel, agent, max(0, took_ms))])  # fmt: skip
        await self._duration(cid, "frt", day, channel, agent, conv, took_ms)

    async def resolved(self, done: Resolution) -> None:
        """A conversation resolved: its resolution time, and whether it continued across
        channels without a repeated question. Remembers the resolution on the customer
        ('rp'), for the reopen count when the customer comes back."""
        cid, channel, agent = done.customer_id, done.channel, done.agent
        day = day_of(done.at_ms)
        counts: list[Count] = [("res_n", channel, agent, 1),
                               ("res_sum", channel, agent, max(0, done.took_ms))]  # fmt: skip
        if len(done.channels) > 1:
            counts.append(("cross", channel, agent, 1))
            if not done.repeated:
                counts.append(("cross_ok", channel, agent, 1))
        await self._count(cid, day, counts)
        await self._duration(cid, "res", day, channel, agent, done.conversation, done.took_ms)
        mark = SEP.join((str(done.at_ms), day, channel.replace(SEP, "/"), agent.replace(SEP, "/")))
        await self.redis.hset(keys.customer(cid), "rp", mark)

    async def questions(self, cid: str, channel: str, figure: str, by: int, at_ms: int) -> None:
        """`figure` q_rep (a repeated question let through) or q_ans (answered for a bot)."""
        await self._count(cid, day_of(at_ms), [(figure, channel, "", by)])

    async def last_channel(self, cid: str) -> str:
        return _text(await self.redis.hget(keys.customer(cid), "last_channel")) or "unknown"

    async def cart_changed(
        self, cid: str, stage: str, items: int, order_id: str | None, at_ms: int
    ) -> None:
        """A cart written: remember the channel it was started on ('cart_ch', the
        customer's channel then); an order placed counts once per order id ('cart_order'),
        as started elsewhere when the customer is now on another channel."""
        key = keys.customer(cid)
        started, last, placed = [
            _text(v) for v in await self.redis.hmget(key, ["cart_ch", "last_channel", "cart_order"])
        ]
        if stage != "placed":
            if items and not started and last:
                await self.redis.hset(key, "cart_ch", last)
            return
        if order_id is None or placed == order_id:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hset(key, "cart_order", order_id)
            pipe.hdel(key, "cart_ch")
            await pipe.execute()
        channel = last or "unknown"
        await self.order_placed(cid, channel, bool(started) and started != last, at_ms)

    async def order_placed(self, cid: str, channel: str, cross: bool, at_ms: int) -> None:
        counts: list[Count] = [("cart_placed", channel, "", 1)]
        if cross:
            counts.append(("cart_cross", channel, "", 1))
        await self._count(cid, day_of(at_ms), counts)

    async def survey_sent(self, cid: str, day: str, kind: str, channel: str, agent: str) -> None:
        await self._count(cid, day, [(f"{kind}_sent", channel, agent, 1)])

    async def survey_answered(
        self, cid: str, day: str, kind: str, channel: str, agent: str, score: int
    ) -> None:
        """Counted on the day the survey was asked, so response rates stay within 1."""
        counts: list[Count] = [(f"{kind}_n", channel, agent, 1),
                               (f"{kind}_sum", channel, agent, score)]  # fmt: skip
        if kind == "nps":
            band = "nps_p" if score >= 9 else "nps_pa" if score >= 7 else "nps_d"
            counts.append((band, channel, agent, 1))
        await self._count(cid, day, counts)


def _text(value: object) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)
