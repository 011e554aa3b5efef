"""Service metrics in the Prometheus text format (version 0.0.4), for `GET /metrics`.

The conversation measures — first-response time, resolutions (by the bot alone or with
an agent: the bot's share is the first-contact resolution rate), handoffs — happen in
whichever process handles the reply or the request, the worker included, so they are
summed in Redis (`keys.metrics`) and every process shows the same service-wide figures:
scrape any one instance (or the load balancer), not all of them. In a cluster the hash
is split into parts (`[redis] shards`), a customer's counts in its part, so that no node
takes every count; a scrape adds the parts up. The few figures
about the process itself (live listeners) carry `scope="process"` in their help text.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping

from redis.asyncio import Redis

from omni import keys

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Seconds: from a quick bot answer to an agent who answers the next day.
BUCKETS: tuple[float, ...] = (1, 5, 15, 30, 60, 120, 300, 900, 1800, 3600, 14400, 86400)
_SEP = "|"
# Every (to, by) a handoff can be counted under (omni.handoff's targets by a bot or an
# agent, and the overdue reply's move to the queue), shown from the start.
_HANDOFFS = [(to, by) for to in ("agent", "bot", "queue") for by in ("agent", "bot")]
_HANDOFFS.append(("queue", "timeout"))


def _field(*parts: str) -> str:
    return _SEP.join(part.replace(_SEP, "/") for part in parts)


def _part(owner: str, parts: int) -> str:
    """The part of the metrics hash `owner`'s counts go to (a customer id, or what else
    the count is about)."""
    return keys.metrics(keys.shard_of(owner, parts), parts)


async def observe_first_response(
    redis: Redis, cid: str, parts: int, channel: str, by: str, seconds: float
) -> None:
    """A conversation's first reply, `seconds` after its first message."""
    seconds = max(0.0, seconds)
    key = _part(cid, parts)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hincrby(key, _field("frt_count", channel, by), 1)
        pipe.hincrby(key, _field("frt_sum_ms", channel, by), round(seconds * 1000))
        for le in BUCKETS:
            if seconds <= le:
                pipe.hincrby(key, _field("frt_le", channel, by, f"{le:g}"), 1)
        await pipe.execute()


async def count_resolution(redis: Redis, cid: str, parts: int, channel: str, by: str) -> None:
    await redis.hincrby(_part(cid, parts), _field("resolved", channel, by), 1)


async def count_handoff(redis: Redis, cid: str, parts: int, to: str, by: str) -> None:
    await redis.hincrby(_part(cid, parts), _field("handoff", to, by), 1)


async def count_rate_limited(redis: Redis, who: str, parts: int, kind: str) -> None:
    """`who`: the digest of the API key or the sender that was limited."""
    await redis.hincrby(_part(who, parts), _field("limited", kind), 1)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(**labels: str) -> str:
    inner = ",".join(f'{name}="{_escape(value)}"' for name, value in labels.items())
    return "{" + inner + "}" if inner else ""


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _family(name: str, kind: str, help: str) -> list[str]:
    return [f"# HELP {name} {help}", f"# TYPE {name} {kind}"]


def _first_response(fields: Mapping[str, int]) -> list[str]:
    name = "omni_first_response_seconds"
    lines = _family(
        name,
        "histogram",
        "Time from a conversation's first message to its first reply, by the channel "
        "replied on and who replied (bot or agent); service-wide.",
    )
    series = sorted({tuple(f.split(_SEP)[1:3]) for f in fields if f.startswith("frt_count" + _SEP)})
    for channel, by in series:
        for le in BUCKETS:
            count = fields.get(_field("frt_le", channel, by, f"{le:g}"), 0)
            lines.append(f"{name}_bucket{_labels(channel=channel, by=by, le=f'{le:g}')} {count}")
        total = fields.get(_field("frt_count", channel, by), 0)
        lines.append(f"{name}_bucket{_labels(channel=channel, by=by, le='+Inf')} {total}")
        seconds = fields.get(_field("frt_sum_ms", channel, by), 0) / 1000
        lines.append(f"{name}_sum{_labels(channel=channel, by=by)} {_number(seconds)}")
        lines.append(f"{name}_count{_labels(channel=channel, by=by)} {total}")
    return lines


def _counter(
    fields: Mapping[str, int],
    prefix: str,
    name: str,
    help: str,
    labels: tuple[str, str],
    known: Iterable[tuple[str, str]] = (),
) -> list[str]:
    """A counter's series, each label pair in `known` at 0 until counted: an alert on
    rate() needs the series before its first increment, or it never fires on it."""
    counts = {pair: 0 for pair in known}
    for field, value in fields.items():
        parts = field.split(_SEP)
        if parts[0] == prefix and len(parts) == 3:
            counts[(parts[1], parts[2])] = value
    lines = _family(name, "counter", help)
    for pair, value in sorted(counts.items()):
        lines.append(f"{name}{_labels(**dict(zip(labels, pair, strict=True)))} {value}")
    return lines


def _stats(stats: Mapping[str, int]) -> list[str]:
    name = "omni_stats_total"
    lines = _family(name, "counter", "Other service-wide counters omni keeps, by name.")
    lines += [f"{name}{_labels(name=key)} {value}" for key, value in sorted(stats.items())]
    return lines


def _decode(raw: Mapping[bytes, bytes]) -> dict[str, int]:
    decoded: dict[str, int] = defaultdict(int)
    for key, value in raw.items():
        try:
            decoded[key.decode()] = int(value)
        except (UnicodeDecodeError, ValueError):
            continue
    return decoded


def _sum(hashes: Iterable[Mapping[bytes, bytes]]) -> dict[str, int]:
    total: dict[str, int] = defaultdict(int)
    for raw in hashes:
        for name, value in _decode(raw).items():
            total[name] += value
    return total


async def render(
    redis: Redis, process: Iterable[tuple[str, str, str, float]], parts: int = 1
) -> str:
    """The exposition: the service-wide figures from Redis (every part's, summed), then
    `process`, this process's own as (name, type, help, value)."""
    async with redis.pipeline(transaction=False) as pipe:
        for part in range(parts):
            pipe.hgetall(keys.metrics(part, parts))
            pipe.hgetall(keys.stats(part, parts))
        raw = await pipe.execute()
    fields, stats = _sum(raw[0::2]), _sum(raw[1::2])
    lines = _first_response(fields)
    lines += _counter(
        fields,
        "resolved",
        "omni_conversations_resolved_total",
        "Conversations resolved, by the channel they started on and by whom: bot (no "
        "agent took part: first-contact resolution) or agent; service-wide.",
        ("channel", "by"),
    )
    lines += _counter(
        fields,
        "handoff",
        "omni_handoffs_total",
        "Conversations handed over, by where to (agent, queue, bot) and by whom "
        "(bot, agent, or timeout: an agent's reply was overdue); service-wide.",
        ("to", "by"),
        known=_HANDOFFS,
    )
    lines += _family(
        "omni_rate_limited_total",
        "counter",
        "Requests refused with 429 by a rate limit, by kind: key (an API key's "
        "requests) or identity (one channel sender's messages); service-wide.",
    )
    for kind in ("key", "identity"):
        count = fields.get(_field("limited", kind), 0)
        lines.append(f"omni_rate_limited_total{_labels(kind=kind)} {count}")
    lines += _stats(stats)
    for name, kind, help, value in process:
        lines += _family(name, kind, f"{help} (scope=process: this omni process only)")
        lines.append(f"{name} {_number(value)}")
    return "\n".join(lines) + "\n"
