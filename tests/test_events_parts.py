"""The service-wide event stream in parts (a cluster's `[redis] shards`): every part read
by the team inbox's listener, a customer's events always in one part, and an event id
that names every part's position, so that resuming from it replays exactly what was
missed in every part, none lost, none twice. Four parts here, on one server as on the
cluster (the parts are keys; the app uses one on one server)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from omni import keys
from omni.live import Event, Live

PARTS = 4
GUARD_S = 10  # a guard against a hang, not a measurement


@pytest.fixture
async def live(redis: Redis) -> AsyncIterator[Live]:
    live = Live(redis, shards=PARTS, parts=PARTS)
    running = asyncio.create_task(live.run())
    async with asyncio.timeout(GUARD_S):
        await live.wait_ready()
    try:
        yield live
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)


def _customers() -> list[str]:
    """Two customers in each part."""
    found: dict[int, list[str]] = {}
    index = 0
    while any(len(found.get(part, [])) < 2 for part in range(PARTS)):
        cid = f"cus_parts{index:04d}"
        found.setdefault(keys.shard_of(cid, PARTS), []).append(cid)
        index += 1
    return [cid for part in range(PARTS) for cid in found[part][:2]]


async def _publish(live: Live, customers: list[str], rounds: range) -> list[tuple[str, int]]:
    said = []
    for round_ in rounds:
        for cid in customers:
            await live.publish(cid, "message", {"n": round_})
            said.append((cid, round_))
    return said


async def _take(live: Live, after: str, count: int) -> list[Event]:
    with live.listen(None, after=after, signal=True) as listener:
        async with asyncio.timeout(GUARD_S):
            return [await listener.next() for _ in range(count)]


def _what(events: list[Event]) -> list[tuple[str, Any]]:
    return [(e.customer_id, e.data["n"]) for e in events]


def _in_order_per_customer(events: list[Event]) -> None:
    by_customer: dict[str, list[int]] = {}
    for event in events:
        by_customer.setdefault(event.customer_id, []).append(event.data["n"])
    for rounds in by_customer.values():
        assert rounds == sorted(rounds)


async def test_each_customer_keeps_to_one_part_and_every_part_is_used(
    live: Live, redis: Redis
) -> None:
    customers = _customers()
    await _publish(live, customers, range(2))
    for cid in customers:
        part = keys.events_all(keys.shard_of(cid, PARTS), PARTS)
        entries = await redis.xrange(part)
        assert sum(cid.encode() in fields[b"e"] for _, fields in entries) == 2
    for part in range(PARTS):
        assert await redis.xlen(keys.events_all(part, PARTS)) == 4  # two customers, twice
    assert await redis.exists(keys.events_all()) == 0  # no single service-wide key


async def test_last_event_id_replays_what_every_part_missed_none_lost_none_twice(
    live: Live,
) -> None:
    customers = _customers()
    start = await live.position(None)
    assert len(start.split(".")) == PARTS
    with live.listen(None, after=start, signal=True) as listener:
        said = await _publish(live, customers, range(3))
        async with asyncio.timeout(GUARD_S):
            got = [await listener.next() for _ in range(len(said))]
    assert sorted(_what(got)) == sorted(said)
    _in_order_per_customer(got)

    # The agent saw the first ten, lost the connection; more came in every part.
    cut = got[9]
    assert len(cut.id.split(".")) == PARTS
    later = await _publish(live, customers, range(3, 6))
    replayed = await _take(live, cut.id, len(got) - 10 + len(later))
    assert sorted(_what(replayed)) == sorted(_what(got[10:]) + later)
    _in_order_per_customer(got[:10] + replayed)
    assert len({e.id for e in got[:10] + replayed}) == len(got) + len(later)

    # From the last replayed id, only what comes next: nothing again.
    with live.listen(None, after=replayed[-1].id, signal=True) as listener:
        assert not await listener.missed()
        await live.publish(customers[-1], "message", {"n": 99})
        async with asyncio.timeout(GUARD_S):
            assert _what([await listener.next()]) == [(customers[-1], 99)]


async def test_an_id_of_another_part_count_or_a_trimmed_part_is_a_reset(
    live: Live, redis: Redis
) -> None:
    customers = _customers()
    await _publish(live, customers, range(1))
    got = await _take(live, "0-0", len(customers))  # from the start: every part's
    with live.listen(None, after=got[-1].id.rpartition(".")[0]) as fewer:
        assert await fewer.missed()
    with live.listen(None, after=got[-1].id) as kept:
        assert not await kept.missed()
    await _publish(live, customers, range(1, 3))
    part = keys.shard_of(got[-1].customer_id, PARTS)
    await redis.xtrim(keys.events_all(part, PARTS), maxlen=1, approximate=False)
    with live.listen(None, after=got[-1].id) as trimmed:
        assert await trimmed.missed()
