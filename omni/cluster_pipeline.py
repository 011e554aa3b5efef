"""A pipeline on a Redis Cluster, sent node by node: each node's share of the commands
as one plain pipeline over one of that node's connections, every share written before
any reply is read (the nodes work in parallel; the replies are read node after node).

redis-py's ClusterPipeline does the same with, for each command, a lookup of its
routing policies and its slot found through its command parser (coroutines both), a
command object, and a task for each node: on an ingest (about ten commands over the
three primaries) that was a fifth of omni's CPU. omni's pipelines hold a few kinds of
command whose key is always in the same place, so here the route is a table look-up, a
CRC and the client's own slot map.

Anything out of the ordinary is redis-py's to handle, as it always was:

- the whole pipeline, when a command is not one this module routes, a refresh of the
  slot map is due, or a slot has no node;
- the commands whose reply is a redirect (MOVED, ASK, TRYAGAIN, CLUSTERDOWN) or whose
  node failed before they were answered (a connection error, a timeout; they may have
  run, and redis-py sends those again too), sent again through ClusterPipeline, which
  follows redirects, refreshes the slot map and retries or raises. A command that was
  answered is never sent again.
"""

from __future__ import annotations

from typing import Any, cast

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.connection import Connection
from redis.commands import AsyncRedisClusterCommands
from redis.crc import key_slot
from redis.exceptions import (
    AskError,
    ClusterDownError,
    ConnectionError,
    MovedError,
    ResponseError,
    SlotNotCoveredError,
    TimeoutError,
    TryAgainError,
)

from omni.server_pipeline import Queued, Recorder

# A node and the positions of its commands in the pipeline.
Groups = list[tuple[ClusterNode, list[int]]]

# Where the commands omni pipelines have their key (single-key commands: the key after
# the name; EVALSHA's keys, of one slot, follow its numkeys). Any other command: redis-py.
_KEY_AT = {
    "EVALSHA": 3,
    **dict.fromkeys(
        ("XADD", "XRANGE", "XREVRANGE", "XLEN", "HMGET", "HGETALL", "HGET", "HSET", "HINCRBY"),
        1,
    ),
    **dict.fromkeys(("GET", "SET", "EXISTS"), 1),
    **dict.fromkeys(("INCR", "INCRBY", "PEXPIRE", "EXPIRE", "ZADD", "ZREM", "SPUBLISH"), 1),
    "PFADD": 1,  # a returning customer's new conversation, in the ingest's batch
}

# The parts of redis-py's cluster client this module uses, some of them private: with a
# redis-py that lacks one, every pipeline goes through ClusterPipeline (slower, and as right).
_USABLE = all(
    hasattr(owner, name)
    for owner, names in (
        (RedisCluster, "_initialize_due read_from_replicas load_balancing_strategy"),
        (ClusterNode, "acquire_connection release parse_response disconnect_if_needed"),
        (ClusterNode, "_mark_free_connections_for_reconnect_on_error"),
        (Connection, "should_reconnect mark_for_reconnect pack_commands"),
    )
    for name in names.split()
)

# What redis-py resends (RedisCluster.ERRORS_ALLOW_RETRY and the redirects).
_AGAIN = (
    ConnectionError,
    TimeoutError,
    ClusterDownError,
    SlotNotCoveredError,
    MovedError,
    AskError,
    TryAgainError,
)


class Commands(Recorder, AsyncRedisClusterCommands):  # type: ignore[misc]
    """redis-py's cluster command methods, recorded (`Recorder`)."""

    # redis-py's cluster client splits these by slot and runs them at once (a coroutine
    # of their own, which recorded here would never run: the command lost, the replies
    # after it out of place). In a pipeline they are one command, their keys of one slot
    # (or a CROSSSLOT error reply, in its place), as in redis-py's own pipeline.
    def exists(self, *keys: Any) -> Any:
        return self.execute_command("EXISTS", *keys)

    def delete(self, *keys: Any) -> Any:
        return self.execute_command("DEL", *keys)

    def touch(self, *keys: Any) -> Any:
        return self.execute_command("TOUCH", *keys)

    def unlink(self, *keys: Any) -> Any:
        return self.execute_command("UNLINK", *keys)

    def mget_nonatomic(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("mget_nonatomic cannot be pipelined: use MGET of one slot's keys")

    def mset_nonatomic(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("mset_nonatomic cannot be pipelined: use MSET of one slot's keys")


class NodePipeline(Commands):
    """`redis.pipeline(transaction=False)` for a cluster, sent by `execute` below."""

    def __init__(self, cluster: RedisCluster) -> None:
        super().__init__()
        self.cluster = cluster

    async def __aenter__(self) -> NodePipeline:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.queue = []

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        queue, self.queue = self.queue, []
        replies = await execute(self.cluster, queue)
        if raise_on_error:
            for reply in replies:
                if isinstance(reply, Exception):
                    raise reply
        return replies


def pipeline(redis: Redis) -> Pipeline:
    """A pipeline of `redis`, not a transaction: redis-py's on one server, a
    NodePipeline on a cluster (typed as redis-py's: its command methods are the same,
    but redis-py types them for its own client classes only)."""
    if isinstance(redis, RedisCluster):
        return cast(Pipeline, NodePipeline(redis))
    return redis.pipeline(transaction=False)


async def execute(cluster: RedisCluster, queue: list[Queued]) -> list[Any]:
    """Every command's reply, in order; errors as values (as `execute(raise_on_error=
    False)`), unless redis-py, sending some again, raises."""
    groups = _route(cluster, queue)
    if groups is None:
        return await _redis_py(cluster, queue)
    replies = await _send(groups, queue)
    again = [at for at, reply in enumerate(replies) if isinstance(reply, _AGAIN)]
    if again:
        for at, reply in zip(
            again, await _redis_py(cluster, [queue[at] for at in again]), strict=True
        ):
            replies[at] = reply
    return replies


def _route(
    cluster: RedisCluster, queue: list[Queued]
) -> list[tuple[ClusterNode, list[int]]] | None:
    """The commands' positions by the node of their slot; None when redis-py must route."""
    if not _USABLE or cluster._initialize_due() or cluster.read_from_replicas:
        return None
    if cluster.load_balancing_strategy is not None:
        return None
    encode = cluster.encoder.encode
    nodes = cluster.nodes_manager
    groups: dict[str, tuple[ClusterNode, list[int]]] = {}
    for at, (args, _) in enumerate(queue):
        key_at = _KEY_AT.get(args[0])
        if key_at is None or len(args) <= key_at:
            return None
        if key_at == 3 and not int(args[2]):  # an EVALSHA of no keys
            return None
        try:
            slot = key_slot(encode(args[key_at]))  # type: ignore[no-untyped-call]
            node = nodes.get_node_from_slot(slot)
        except SlotNotCoveredError:
            return None
        group = groups.get(node.name)
        if group is None:
            groups[node.name] = (node, [at])
        else:
            group[1].append(at)
    return list(groups.values())


async def _send(groups: Groups, queue: list[Queued]) -> list[Any]:
    replies: list[Any] = [None] * len(queue)
    # The connections taken whose replies are still to be read: dropped when this is
    # cancelled (the pipeliner's deadline) while they are written to or read from.
    unread: list[tuple[ClusterNode, Connection, list[int]]] = []
    try:
        for node, positions in groups:
            try:
                connection = node.acquire_connection()
            except Exception as exc:  # the pool is exhausted
                for at in positions:
                    replies[at] = exc
                continue
            unread.append((node, connection, positions))
            try:
                if connection.should_reconnect():  # type: ignore[no-untyped-call]
                    await node.disconnect_if_needed(connection)
                packed = connection.pack_commands([queue[at][0] for at in positions])
                await connection.send_packed_command(packed)
            except Exception as exc:  # nothing of it to read
                unread.pop()
                node._mark_free_connections_for_reconnect_on_error(exc)
                node.release(connection)
                for at in positions:
                    replies[at] = exc
        while unread:
            node, connection, positions = unread[0]
            for index, at in enumerate(positions):
                args, options = queue[at]
                try:
                    replies[at] = await node.parse_response(connection, args[0], **options)
                except ResponseError as exc:  # an error reply: the next one follows
                    replies[at] = exc
                except Exception as exc:  # the connection failed (and was closed)
                    node._mark_free_connections_for_reconnect_on_error(exc)
                    for rest in positions[index:]:
                        replies[rest] = exc
                    break
            del unread[0]
            node.release(connection)
    finally:
        for node, connection, _ in unread:
            connection.mark_for_reconnect()  # type: ignore[no-untyped-call]
            node.release(connection)
    return replies


async def _redis_py(cluster: RedisCluster, queue: list[Queued]) -> list[Any]:
    async with cluster.pipeline(transaction=False) as pipe:
        for args, options in queue:
            pipe.execute_command(*args, **options)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
    return replies
