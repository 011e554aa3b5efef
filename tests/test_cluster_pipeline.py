"""omni.cluster_pipeline, on a cluster (`make test-cluster`): a pipeline sent node by node
answers as redis-py's ClusterPipeline does, every reply in its place, an error reply as
a value; a command sent to a node that no longer owns its slot (MOVED) is answered all
the same, through redis-py, and the commands already answered are not sent again.
(The failover, a node killed under load, is tests/test_failover.py's.)"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, cast

import pytest
from redis.asyncio import Redis, RedisCluster
from redis.crc import key_slot
from redis.exceptions import ResponseError

from omni import cluster_pipeline
from omni.app import create_app
from tests.conftest import BOT, ingest, make_settings

pytestmark = pytest.mark.cluster_only(
    "pipelines sent node by node: there are no nodes on one server"
)


async def test_replies_come_in_order_from_every_node(redis: Redis) -> None:
    cluster = cast(RedisCluster, redis)
    commands = cluster_pipeline.Commands()
    counters = [f"omni:test:{{n{i}}}" for i in range(12)]  # slots on every primary
    for i, key in enumerate(counters):
        commands.incrby(key, i + 1)
    commands.set("omni:test:{text}", "x")
    commands.incr("omni:test:{text}")  # not a number: an error reply, in its place
    commands.xadd("omni:test:{n0}:events", {"e": b"1"})
    groups = cluster_pipeline._route(cluster, commands.queue)
    assert groups is not None and len(groups) == len(cluster.get_primaries())
    replies = await cluster_pipeline.execute(cluster, commands.queue)
    assert replies[:12] == list(range(1, 13))
    assert replies[12] is True
    assert isinstance(replies[13], ResponseError)
    assert isinstance(replies[14], bytes)
    # A command routed by redis-py (no key this module knows): the whole pipeline is.
    commands.queue.clear()
    commands.incr(counters[0])
    commands.execute_command("DBSIZE", target_nodes=RedisCluster.RANDOM)
    assert cluster_pipeline._route(cluster, commands.queue) is None
    assert (await cluster_pipeline.execute(cluster, commands.queue))[0] == 2


async def test_a_moved_slot_is_followed_and_nothing_answered_runs_twice(redis: Redis) -> None:
    cluster = cast(RedisCluster, redis)
    moved, stays = "omni:test:{moved}", "omni:test:{stays}"
    slots = cluster.nodes_manager.slots_cache
    slot = key_slot(moved.encode())
    owner = slots[slot][0]
    wrong = next(node for node in cluster.get_primaries() if node.name != owner.name)
    slots[slot] = [wrong]  # as if the slot had moved since the map was read
    commands = cluster_pipeline.Commands()
    commands.incr(moved)
    commands.incr(stays)
    commands.hset("omni:test:{stays}:h", "f", "v")
    assert cluster_pipeline._route(cluster, commands.queue) is not None
    assert await cluster_pipeline.execute(cluster, commands.queue) == [1, 1, 1]
    assert await redis.get(moved) == b"1" and await redis.get(stays) == b"1"
    assert cluster.nodes_manager.slots_cache[slot][0].name == owner.name


async def test_the_pipeline_of_the_index_and_the_counters_raises_the_first_error(
    redis: Redis,
) -> None:
    async with cluster_pipeline.pipeline(redis) as pipe:
        pipe.incr("omni:test:{a}")
        pipe.set("omni:test:{b}", "x")
        pipe.incr("omni:test:{b}")
        with pytest.raises(ResponseError):
            await pipe.execute()
    assert await redis.get("omni:test:{a}") == b"1"
    async with cluster_pipeline.pipeline(redis) as pipe:
        pipe.incr("omni:test:{a}")
        pipe.hincrby("omni:test:{c}", "f", 2)
        assert await pipe.execute() == [2, 2]


async def test_a_pipeline_given_up_on_leaves_no_connection_taken_nor_replies_behind(
    redis: Redis,
) -> None:
    cluster = cast(RedisCluster, redis)
    commands = cluster_pipeline.Commands()
    for i in range(12):
        commands.incr(f"omni:test:{{g{i}}}")
    for steps in range(16):  # cancelled while connecting, writing, reading
        if steps % 2:  # the connections to make again: a write then waits for one
            for node in cluster.get_primaries():
                await node.disconnect()
        task = asyncio.create_task(cluster_pipeline.execute(cluster, commands.queue))
        for _ in range(steps // 2):
            await asyncio.sleep(0)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await asyncio.sleep(0.2)  # a connection dropped is closed in the background
    for node in cluster.get_primaries():
        assert len(node._free) == len(node._connections)
    probe = cluster_pipeline.Commands()
    for i in range(12):
        probe.set(f"omni:test:{{p{i}}}", f"v{i}")
        probe.get(f"omni:test:{{p{i}}}")
    replies = await cluster_pipeline.execute(cluster, probe.queue)
    assert replies == [value for i in range(12) for value in (True, f"v{i}".encode())]


async def test_the_hot_paths_go_node_by_node(
    aiohttp_client: Any, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An ingest that wakes a bot, a context read, a history page (of the whole timeline
    and of one channel, annotations included): every pipeline they send is routed here,
    none handed whole to redis-py's slower ClusterPipeline because a command is missing
    from the routing table (the client's first pipeline is, as it learns the slot map)."""
    routed: list[bool] = []
    route = cluster_pipeline._route

    def watched(cluster: RedisCluster, queue: list[Any]) -> Any:
        groups = route(cluster, queue)
        routed.append(groups is not None)
        return groups

    monkeypatch.setattr(cluster_pipeline, "_route", watched)
    bots = {"web": {"url": "http://127.0.0.1:9/bot", "secret": "s" * 32}}
    client = await aiohttp_client(create_app(make_settings(redis_url, bots=bots)))
    cid = (await ingest(client))["customer_id"]
    routed.clear()
    reply = {"channel": "web", "text": "Hello!"}
    assert (await client.post(f"/v1/customers/{cid}/messages", json=reply, headers=BOT)).ok
    await ingest(client, channel_message_id="m-2", text="and again")
    for path in ("context", "history", "history?channel=web"):
        response = await client.get(f"/v1/customers/{cid}/{path}", headers=BOT)
        assert response.status == 200, path
    assert len(routed) >= 6 and all(routed), routed
