"""Appending and reading a context cost the same for 10 messages as for 10,000.

Nothing here times anything: the proof is the Redis commands each path issues, counted
with INFO commandstats (which counts commands run inside Lua scripts too) and read
with MONITOR, for a customer with a short history and one with a long one.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from omni.model import InboundMessage
from omni.settings import Settings
from omni.store import Store
from tests.conftest import BOT, CLUSTER, make_settings, primaries

LONG = 10_000


@pytest.fixture
def settings(redis_url: str) -> Settings:
    """The app's own background work (the handoff sweep) would add its commands to the
    counts: it sweeps once at start-up, then not again during a test."""
    return make_settings(redis_url, handoff={"sweep_interval_s": 3600.0})


async def _seed(store: Store, external_id: str, count: int) -> str:
    cid = ""
    for start in range(0, count, 50):
        batch = [
            store.timeline.ingest(
                InboundMessage(channel="web", external_id=external_id,
                               channel_message_id=f"{external_id}-{i}", text="x" * 100)
            )
            for i in range(start, min(start + 50, count))
        ]  # fmt: skip
        results = await asyncio.gather(*batch)
        cid = results[0][0].customer_id
    return cid


async def _commandstats(redis: Redis) -> dict[str, int]:
    """Summed over every primary (on a cluster, a path's commands go to several)."""
    calls: dict[str, int] = {}
    async with primaries(redis) as nodes:
        for node in nodes:
            for name, stats in (await node.info("commandstats")).items():
                name = name.removeprefix("cmdstat_")
                calls[name] = calls.get(name, 0) + int(stats["calls"])
    return calls


async def _measure(redis: Redis, action: Any) -> dict[str, int]:
    async with primaries(redis) as nodes:
        for node in nodes:
            await node.config_resetstat()
    await action()
    stats = await _commandstats(redis)
    # Neither the measurement's own commands nor a new pool connection's handshake
    # (HELLO, CLIENT SETINFO) are part of the path, nor a replica's once-a-second
    # acknowledgement to its primary (REPLCONF ACK, on a cluster).
    ignored = ("config|resetstat", "info", "hello", "replconf")
    return {k: v for k, v in stats.items() if k not in ignored and not k.startswith("client|")}


async def _paths(client: TestClient, short: str, long: str) -> list[tuple[str, Any, Any]]:
    async def ingest(external_id: str) -> None:
        body = {"channel": "web", "external_id": external_id,
                "channel_message_id": f"{external_id}-new", "text": "y" * 100}  # fmt: skip
        response = await client.post("/v1/messages", json=body, headers=BOT)
        assert response.status == 201

    async def read(cid: str) -> None:
        response = await client.get(f"/v1/customers/{cid}/context", headers=BOT)
        assert response.status == 200
        assert 0 < len((await response.json())["recent_messages"]) <= 20

    return [
        ("ingest", lambda: ingest("short"), lambda: ingest("long")),
        ("context", lambda: read(short), lambda: read(long)),
    ]


async def test_ingest_and_context_issue_the_same_commands_at_10_and_10000(
    client: TestClient, redis: Redis
) -> None:
    store = Store(redis)
    short = await _seed(store, "short", 10)
    long = await _seed(store, "long", LONG)
    assert await redis.xlen(f"omni:{{{long}}}:tl") == LONG
    # Load the read script into the server first: that happens once per server, not per read.
    assert (await client.get(f"/v1/customers/{short}/context", headers=BOT)).status == 200
    # Each customer's first message through the inbox puts its conversation in the team
    # inbox's index (omni.store.inbox), once; the paths measured are the next message's.
    for external_id in ("short", "long"):
        body = {"channel": "web", "external_id": external_id, "channel_message_id": "warm",
                "text": "x"}  # fmt: skip
        assert (await client.post("/v1/messages", json=body, headers=BOT)).status == 201
    for name, on_short, on_long in await _paths(client, short, long):
        small, large = await _measure(redis, on_short), await _measure(redis, on_long)
        assert small == large, f"{name}: {small} != {large}"
        # Ingest: one script (its commands count here too: one HMGET of everything it
        # reads of the customer, one of the message-id index, the two XADDs of the
        # timeline and its channel index, one HSET of the index and one of the customer)
        # and the live event (two capped XADDs and the PUBLISH doorbell); a context read:
        # one script. Both: the API key's rate limit (omni.ratelimit), INCRBY and PEXPIRE
        # NX in one pipelined round trip; the PEXPIRE is on every request, not only a
        # window's first, so a process that stops between the two can never leave a
        # counter that never expires.
        assert sum(small.values()) <= 12, f"{name} issues too many commands: {small}"


async def test_no_command_in_the_hot_paths_ranges_over_the_timeline(
    client: TestClient, redis: Redis, redis_url: str
) -> None:
    store = Store(redis)
    short = await _seed(store, "short", 10)
    long = await _seed(store, "long", 1_000)
    seen: list[list[str]] = []
    async with contextlib.AsyncExitStack() as stack:
        if CLUSTER:  # every primary's commands
            watchers = await stack.enter_async_context(primaries(redis, decode_responses=True))
        else:
            watchers = [Redis.from_url(redis_url, decode_responses=True)]
            stack.push_async_callback(watchers[0].aclose)
        listening = []
        for watcher in watchers:
            monitor = await stack.enter_async_context(watcher.monitor())
            listening.append(asyncio.create_task(_collect(monitor, seen)))
        await asyncio.sleep(0.05)
        for _, on_short, on_long in await _paths(client, short, long):
            await on_short()
            await on_long()
        await asyncio.sleep(0.1)
        for task in listening:
            task.cancel()
    ranges = [c for c in seen if c[0].upper() in ("XRANGE", "XREVRANGE", "LRANGE", "ZRANGE")]
    assert ranges, "the context read must read the recent messages"
    for command in ranges:
        upper = [part.upper() for part in command]
        bounded = "COUNT" in upper or command[2] == command[3]
        assert bounded, f"unbounded range in a hot path: {command}"
    forbidden = {"XLEN", "HGETALL", "HKEYS", "HVALS", "KEYS", "SCAN", "SMEMBERS"}
    for command in seen:
        if command[0].upper() in forbidden:
            assert not command[1].endswith((":tl", ":mid")), f"whole-history read: {command}"


async def _collect(monitor: Any, seen: list[list[str]]) -> None:
    async for event in monitor.listen():
        parts = event["command"].split()
        if parts:
            seen.append([p.strip('"') for p in parts])
