"""`[redis] replica_acks = N`: an append is answered only once `WAIT N` says N replicas
hold it, so a failover (the primary dies, its replica is promoted) loses no message omni
acknowledged. Fewer replicas within `replica_ack_timeout_ms` is a 503 with Retry-After:
the sender sends again, and the append is idempotent on the channel's message id.

How WAIT is routed, and why so. WAIT covers the writes *of the connection that sends
it*: the server remembers, per client, the replication offset just after that client's
last propagated write, and WAIT blocks until N replicas acknowledge that offset. Sent on
another connection (or to another node), it confirms that connection's writes, perhaps
none: a WAIT on a fresh connection answers at once, whatever happened to our message.
So the append and its WAIT go as one pipeline on one connection to one node:

    EVALSHA append ...            the message, once (a repeat writes nothing)
    EVAL touch <customer key>     HINCRBY customer rev 0: a write after the message
    WAIT N timeout

The touch is what makes a repeat safe. A sender retrying after a 503 finds its message
already stored (written by an earlier request, on another connection, perhaps not yet
replicated): the append then writes nothing, and WAIT alone would confirm an offset
from before the message. The touch is a write on this connection, after the message in
the node's one replication stream, so N replicas holding the touch hold the message.

Not the pipeliner's shared pipeline (omni.scripts.Pipeliner): redis-py's cluster
pipeline retries a failed command alone, on another connection, and follows MOVED by
resending the one command elsewhere, so the write and the WAIT could part; and a WAIT
there would hold every other request of the turn behind a replica's acknowledgement.
Single server: a redis-py pipeline is one connection (a retry resends it whole).
Cluster: the node that owns the customer's slot (`RedisCluster.get_node_from_key`, the
client's slot map), and `ClusterNode.execute_pipeline`, which sends the commands on one
connection of that node's pool and follows nothing. When that node has failed or moved
the slot (a connection error, MOVED, CLUSTERDOWN...), one routed command through the
cluster client lets redis-py relearn the topology (it refreshes its slot map on those
errors), and the request gets a 503: the sender's retry goes to the new primary.

With one replica per primary, the primary promoted by a failover has no replica until
the failed node comes back (as its replica): writes to its slots get 503 until then.
That is the price of the guarantee; two replicas per primary avoid it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.cluster import PipelineCommand
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    NoScriptError,
    RedisError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeout

from omni.errors import Unavailable
from omni.scripts import Script

# A write after the message, on the same connection, that changes nothing: the revision
# (the ETag's) plus 0. Only on a customer that exists, so that none is created by it.
_TOUCH = "if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HINCRBY', KEYS[1], 'rev', 0) end"
# The node no longer serves the slot, or is not there: the topology changed.
_MOVED = (
    MovedError,
    AskError,
    TryAgainError,
    ClusterDownError,
    RedisConnectionError,
    RedisTimeout,
    OSError,
)


class ReplicaAcks:
    """Appends confirmed on `replicas` replicas (WAIT) before they are answered."""

    def __init__(
        self, redis: Redis, replicas: int, timeout_ms: int, deadline_s: float | None = None
    ) -> None:
        """`deadline_s`: `[redis] request_timeout`, the bound on any Redis wait (WAIT's own
        timeout is below it, omni.settings); without it, WAIT's plus a margin."""
        self.redis = redis
        self.replicas = replicas
        self.timeout_ms = timeout_ms
        self._deadline_s = deadline_s if deadline_s is not None else timeout_ms / 1000 + 2.0

    async def append(self, script: Script, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """The append script's reply, once WAIT confirms it; Unavailable otherwise."""
        commands: list[tuple[Any, ...]] = [
            ("EVALSHA", script.sha, len(keys), *keys, *args),
            ("EVAL", _TOUCH, 1, keys[0]),
            ("WAIT", self.replicas, self.timeout_ms),
        ]
        replies = await self._one_connection(keys[0], commands)
        if isinstance(replies[0], NoScriptError):  # a restarted or promoted node
            await script.redis.script_load(script.source)
            replies = await self._one_connection(keys[0], commands)
        appended, touched, acked = replies
        for reply in (appended, touched):
            if isinstance(reply, Exception):
                raise reply
        if isinstance(acked, Exception) or int(acked) < self.replicas:
            got = "an error" if isinstance(acked, Exception) else f"{int(acked)} of"
            raise Unavailable(
                f"the message reached {got} {self.replicas} replica(s) within "
                f"{self.timeout_ms} ms; send it again (it is stored once)"
            )
        return appended

    async def _one_connection(self, key: Any, commands: list[tuple[Any, ...]]) -> list[Any]:
        try:
            async with asyncio.timeout(self._deadline_s):
                if isinstance(self.redis, RedisCluster):
                    return await self._on_node(self.redis, key, commands)
                async with self.redis.pipeline(transaction=False) as pipe:
                    for command in commands:
                        pipe.execute_command(*command)
                    replies: list[Any] = await pipe.execute(raise_on_error=False)
                    return replies
        except TimeoutError as exc:
            raise RedisTimeout(f"Redis did not answer within {self._deadline_s} s") from exc

    async def _on_node(
        self, cluster: RedisCluster, key: Any, commands: list[tuple[Any, ...]]
    ) -> list[Any]:
        # Returns at once once the client knows the topology, unless a refresh that an
        # error asked for is due: then it runs it first, as a routed command would.
        await cluster.initialize()
        try:
            node = cluster.get_node_from_key(key)
        except SlotNotCoveredError as exc:  # a refresh found the slot without a primary
            await self._relearn(cluster, key)
            raise Unavailable("no store node serves this customer now") from exc
        if node is None:
            raise Unavailable("no store node serves this customer now")
        queued = [PipelineCommand(at, *command) for at, command in enumerate(commands)]
        try:
            await node.execute_pipeline(queued)
        except (RedisError, OSError) as exc:
            await self._relearn(cluster, key)
            raise Unavailable(f"the store node {node.name} failed: {type(exc).__name__}") from exc
        replies = [command.result for command in queued]
        if isinstance(replies[0], _MOVED):
            await self._relearn(cluster, key)
            raise Unavailable(f"the store node {node.name} no longer serves this customer")
        return replies

    async def _relearn(self, cluster: RedisCluster, key: Any) -> None:
        """One command routed by the cluster client, which refreshes its slot map on a
        connection error or MOVED (and retries): the next request goes to the new node."""
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            async with asyncio.timeout(self._deadline_s):
                await cluster.exists(key)
