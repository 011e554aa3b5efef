"""The one way omni builds a Redis client: for one server, or for a Redis Cluster.

With `[redis] cluster = true`, `[redis] url` names any one node and redis-py's asyncio
`RedisCluster` discovers the others, routes each command by its key's slot, and sends a
pipeline as one pipeline per node, in parallel (omni.scripts' batching stays per node; the
hot paths' pipelines go node by node through omni.cluster_pipeline, cheaper per command).
The cluster client speaks the same commands, so the rest of omni takes it as a `Redis`:
every script and transaction keeps to one slot (omni.keys), which is what it needs.
"""

from __future__ import annotations

from typing import cast

from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster

from omni.settings import RedisSettings


def connect(settings: RedisSettings, url: str, *, socket_timeout: float | None) -> Redis:
    """A client of `url` (or of the cluster `url` is a node of). Connecting is bounded
    by `redis.request_timeout`, like every wait on Redis."""
    if settings.cluster:
        cluster = RedisCluster.from_url(
            url,
            max_connections=settings.max_connections,  # per node
            socket_connect_timeout=settings.request_timeout,
            socket_timeout=socket_timeout,
        )
        return cast(Redis, cluster)
    # A blocking pool makes a burst of requests wait for a connection instead of
    # failing with "Too many connections" the moment the pool is exhausted.
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=settings.max_connections,
        timeout=settings.pool_timeout,
        socket_connect_timeout=settings.request_timeout,
        socket_timeout=socket_timeout,
    )
    return Redis(connection_pool=pool)


def is_cluster(redis: Redis) -> bool:
    return isinstance(redis, RedisCluster)


async def close(redis: Redis) -> None:
    """Close the client and the connections it holds (its pool, or every node's)."""
    if isinstance(redis, RedisCluster):
        await redis.aclose()
    else:
        await redis.aclose(close_connection_pool=True)
