"""The live events' doorbells (omni.live): a pub/sub message naming a customer with a new
event, heard by every omni process. On one server one channel (PUBLISH); in a cluster
`[redis] shards` sharded channels (SPUBLISH), so no node carries them all, each heard
through one subscription per node that serves some of them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from redis.asyncio import Redis, RedisCluster

from omni import keys

SUBSCRIBE_TIMEOUT_S = 10.0  # for the server to confirm the doorbells' subscriptions


@contextlib.asynccontextmanager
async def subscribed(
    redis: Redis, cluster: RedisCluster | None, shards: int
) -> AsyncIterator[AsyncIterator[bytes]]:
    """Every doorbell from here on: the channel's, or every shard's in a cluster."""
    if cluster is None:
        async with redis.pubsub() as pubsub:
            await pubsub.subscribe(keys.live_channel())
            early = await _confirmed(pubsub, "subscribe", 1)
            yield _messages(pubsub, early)
        return
    async with contextlib.AsyncExitStack() as stack:
        yield await _sharded(cluster, shards, stack)


async def _sharded(
    cluster: RedisCluster, shards: int, stack: contextlib.AsyncExitStack
) -> AsyncIterator[bytes]:
    """Every shard's doorbells: one subscription per node that holds shards, each read
    as it comes (redis-py's ClusterPubSub polls nodes in turn, a wait per turn). When
    the topology changes, a read fails and `_listen` subscribes again from the new one."""
    await cluster.initialize()
    by_node: dict[tuple[str, int], list[str]] = {}
    for shard in range(shards):
        channel = keys.live_shard(shard)
        node = cluster.get_node_from_key(channel)
        if node is None:
            raise ConnectionError(f"no node serves {channel}")  # _listen tries again
        by_node.setdefault((str(node.host), int(node.port)), []).append(channel)
    heard: asyncio.Queue[bytes | BaseException] = asyncio.Queue()
    for (host, port), channels in by_node.items():
        client = Redis(host=host, port=port, socket_connect_timeout=2)
        stack.push_async_callback(client.aclose)
        pubsub = client.pubsub()
        stack.push_async_callback(pubsub.aclose)
        for channel in channels:  # one SSUBSCRIBE names channels of one slot
            await pubsub.ssubscribe(channel)
        for data in await _confirmed(pubsub, "ssubscribe", len(channels)):
            heard.put_nowait(data)
        reader = asyncio.create_task(_read_shards(pubsub, heard))
        stack.push_async_callback(_stop, reader)  # before its connection closes
    return _drain(heard)


async def _confirmed(pubsub: Any, kind: str, count: int) -> list[bytes]:
    """Wait for the server to confirm `count` subscriptions (redis-py only sends them):
    until it has, a doorbell rung elsewhere is not heard here, and `wait_ready` must
    not say otherwise. Returns the doorbells heard meanwhile, in order."""
    early: list[bytes] = []
    async with asyncio.timeout(SUBSCRIBE_TIMEOUT_S):  # a TimeoutError: _listen retries
        while count:
            message = await pubsub.get_message(timeout=SUBSCRIBE_TIMEOUT_S)
            if message is None:
                continue
            if message.get("type") == kind:
                count -= 1
            elif message.get("type") in ("message", "smessage"):
                early.append(message["data"])
    return early


async def _read_shards(pubsub: Any, heard: asyncio.Queue[bytes | BaseException]) -> None:
    try:
        async for message in pubsub.listen():
            if message.get("type") == "smessage":
                heard.put_nowait(message["data"])
    except Exception as exc:
        heard.put_nowait(exc)


async def _drain(heard: asyncio.Queue[bytes | BaseException]) -> AsyncIterator[bytes]:
    while True:
        item = await heard.get()
        if isinstance(item, BaseException):
            raise item
        yield item


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def _messages(pubsub: Any, early: list[bytes]) -> AsyncIterator[bytes]:
    for data in early:
        yield data
    async for message in pubsub.listen():
        if message.get("type") == "message":
            yield message["data"]
