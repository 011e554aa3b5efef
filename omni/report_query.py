"""`GET /v1/reports/service`: the figures `omni.reports` counted, read back for a range of
days. The cost is set by the range (days x shards: one pipelined round trip of hash and
sorted-set reads, plus one PFCOUNT per shard and group), never by how much history the
customers have.

Medians and p90s are exact over the duration samples kept (every sample up to
`[reports] samples_per_day` per shard and day; a uniform sample past that).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, Literal

from redis.asyncio import Redis

from omni import keys
from omni.reports import SEP, ReportSettings
from omni.survey_settings import SCALES

GroupBy = Literal["channel", "agent", "day"]
GROUP_BY: tuple[GroupBy, ...] = ("channel", "agent", "day")
MAX_DAYS = 366  # a year, a leap year's included


@dataclass
class Tally:
    """One group's (or the total's) counters and duration samples."""

    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    frt: list[float] = field(default_factory=list)
    res: list[float] = field(default_factory=list)
    returning: int | None = None


def days_between(start: date, end: date) -> list[str]:
    return [(start + timedelta(days=n)).isoformat() for n in range((end - start).days + 1)]


def _quantile(sorted_values: Sequence[float], q: float) -> float | None:
    """The nearest-rank quantile (the value at rank ceil(q * n)), in seconds."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q * len(sorted_values)))
    return round(sorted_values[rank - 1] / 1000, 3)


def _ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _durations(samples: list[float], count: int, total_ms: int) -> dict[str, Any]:
    ordered = sorted(samples)
    return {
        "count": count,
        "mean_s": round(total_ms / count / 1000, 3) if count else None,
        "median_s": _quantile(ordered, 0.5),
        "p90_s": _quantile(ordered, 0.9),
    }


def _survey(counts: Mapping[str, int], kind: str) -> dict[str, Any]:
    sent, answered = counts[f"{kind}_sent"], counts[f"{kind}_n"]
    lo, hi = SCALES[kind]
    figures: dict[str, Any] = {
        "scale": [lo, hi],
        "sent": sent,
        "answered": answered,
        "response_rate": _ratio(answered, sent),
        "average": round(counts[f"{kind}_sum"] / answered, 3) if answered else None,
    }
    if kind == "nps":
        promoters, passives, detractors = counts["nps_p"], counts["nps_pa"], counts["nps_d"]
        figures |= {
            "promoters": promoters,
            "passives": passives,
            "detractors": detractors,
            "score": round((promoters - detractors) * 100 / answered, 1) if answered else None,
        }
    return figures


def figures(tally: Tally) -> dict[str, Any]:
    """The report's figures for one group (pure)."""
    c = tally.counts
    resolved = c["res_n"]
    return {
        "conversations": c["conv"],
        "resolved": resolved,
        "first_response": _durations(tally.frt, c["frt_n"], c["frt_sum"]),
        "resolution": _durations(tally.res, resolved, c["res_sum"]),
        "first_contact_resolution": {
            "resolved": resolved,
            "reopened": c["reopen"],
            "rate": _ratio(resolved - c["reopen"], resolved),
        },
        "csat": _survey(c, "csat"),
        "ces": _survey(c, "ces"),
        "nps": _survey(c, "nps"),
        "repeated_questions": {"prevented": c["q_ans"], "let_through": c["q_rep"]},
        "channel_switches": c["switch"],
        "carts": {"placed": c["cart_placed"], "started_elsewhere": c["cart_cross"]},
        "cross_channel": {
            "conversations": c["cross"],
            "without_repeated_question": c["cross_ok"],
        },
        "returning_customers": tally.returning,
    }


def _parse_member(member: bytes | str) -> tuple[str, str]:
    text = member.decode() if isinstance(member, bytes) else member
    channel, agent, _ = [*text.split(SEP), "", ""][:3]
    return channel, agent


class ReportReader:
    def __init__(self, redis: Redis, config: ReportSettings) -> None:
        self.redis = redis
        self.config = config

    async def service(
        self, start: date, end: date, channel: str | None, group_by: GroupBy
    ) -> dict[str, Any]:
        days = days_between(start, end)
        shards = range(self.config.shards)
        async with self.redis.pipeline(transaction=False) as pipe:
            for shard in shards:
                for day in days:
                    pipe.hgetall(keys.report_day(shard, day))
                    pipe.zrange(keys.report_samples(shard, "frt", day), 0, -1, withscores=True)
                    pipe.zrange(keys.report_samples(shard, "res", day), 0, -1, withscores=True)
            raw = await pipe.execute()
        total = Tally()
        groups: dict[str, Tally] = defaultdict(Tally)
        at = 0
        for _shard in shards:
            for day in days:
                counters, frt, res = raw[at], raw[at + 1], raw[at + 2]
                at += 3
                self._add_counts(counters, day, channel, group_by, total, groups)
                for name, samples in (("frt", frt), ("res", res)):
                    for member, score in samples:
                        ch, agent = _parse_member(member)
                        if channel is not None and ch != channel:
                            continue
                        getattr(total, name).append(score)
                        key = {"channel": ch, "agent": agent, "day": day}[group_by]
                        getattr(groups[key], name).append(score)
        total.returning = await self._returning(days, channel or "*")
        if group_by == "day":
            for day in days:
                groups[day].returning = await self._returning([day], channel or "*")
        elif group_by == "channel":
            for name in list(groups):
                groups[name].returning = await self._returning(days, name)
        if group_by == "day":  # every day shows, so a chart has no holes
            ordered = [(day, groups[day]) for day in days]
        else:
            ordered = sorted(groups.items())
        return {
            "from": start.isoformat(),
            "to": end.isoformat(),
            "channel": channel,
            "group_by": group_by,
            "totals": figures(total),
            "groups": [{"key": key or None, **figures(tally)} for key, tally in ordered],
        }

    @staticmethod
    def _add_counts(
        counters: Mapping[bytes, bytes],
        day: str,
        channel: str | None,
        group_by: GroupBy,
        total: Tally,
        groups: dict[str, Tally],
    ) -> None:
        for raw_field, raw_value in counters.items():
            parts = raw_field.decode(errors="replace").split(SEP)
            if len(parts) != 3:
                continue
            figure, ch, agent = parts
            if channel is not None and ch != channel:
                continue
            value = int(raw_value)
            total.counts[figure] += value
            key = {"channel": ch, "agent": agent, "day": day}[group_by]
            groups[key].counts[figure] += value

    async def _returning(self, days: Iterable[str], channel: str) -> int:
        """Distinct returning customers over `days`: a PFCOUNT per shard (one shard's
        days share a slot) summed, each customer being in one shard only."""
        listed = list(days)
        async with self.redis.pipeline(transaction=False) as pipe:
            for shard in range(self.config.shards):
                pipe.pfcount(*[keys.report_returning(shard, day, channel) for day in listed])
            counts = await pipe.execute()
        return sum(int(n) for n in counts)
