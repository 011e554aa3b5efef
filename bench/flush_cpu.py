"""`python -m bench.flush_cpu [INGESTS]`: the client CPU of one pipeliner flush on a
cluster, in-process, three ways: through redis-py's ClusterPipeline, node by node
(omni.cluster_pipeline) and, for scale, as one pipeline to one server: redis-py's, and
over the pipeliner's own connections (omni.server_pipeline).

A flush holds INGESTS (default 8) ingests' commands as the pipeliner sends them: the
append script in the customer's slot, the live event's and the delivery's XADDs in
their shard parts, the de-duplication HMGET, the doorbell, and one turn's rate-limit
INCRBY and PEXPIRE. The four take turns for 12 rounds of 200 flushes each on a local
3x2 cluster and an embedded Valkey; the least and the median CPU per flush are printed.
Process time, not wall time: on a shared machine it moves less.
"""

from __future__ import annotations

import asyncio
import hashlib
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, cast

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.client import Pipeline

from omni import cluster_pipeline, server_pipeline
from omni.redis_cluster import LocalCluster, free_ports
from omni.redis_server import EmbeddedRedis

SCRIPT = "return redis.call('hset', KEYS[1], ARGV[1], ARGV[2])"
SHA = hashlib.sha1(SCRIPT.encode(), usedforsecurity=False).hexdigest()


def flush(ingests: int) -> list[server_pipeline.Queued]:
    recorded = cluster_pipeline.Commands()
    commands = cast(Pipeline, recorded)  # redis-py types its methods for its own classes
    for i in range(ingests):
        commands.evalsha(SHA, 1, f"omni:c:{{cus_{i}}}", "a", "b")
        commands.xadd(f"omni:events:{{s{i % 8}}}", {"e": b"x" * 200}, maxlen=1000, approximate=True)
        commands.xadd(f"omni:outbox:{{s{i * 3 % 8}}}", {"d": b"dlv"}, maxlen=1000, approximate=True)
        commands.hmget(f"omni:c:{{cus_{i}}}:ids", "m1")
        commands.spublish(f"omni:live:{{s{i % 8}}}", f"cus_{i}")
    commands.incrby("omni:rate:{k}", ingests)
    commands.pexpire("omni:rate:{k}", 1000, nx=True)
    return recorded.queue


async def measure(ingests: int, work: Path) -> None:
    cluster = LocalCluster(work / "cluster", free_ports(6))
    single = EmbeddedRedis(work / "single", persist=False)
    cluster.start()
    single.start()
    try:
        # No socket timeout: the pipeliner's client has none (omni.app).
        client = RedisCluster.from_url(cluster.url, socket_timeout=None)
        one = Redis.from_url(single.url, socket_timeout=None)
        await client.execute_command("SCRIPT", "LOAD", SCRIPT, target_nodes=client.PRIMARIES)
        await one.script_load(SCRIPT)
        queue = flush(ingests)

        async def redis_py(queue: list[server_pipeline.Queued]) -> list[Any]:
            async with client.pipeline(transaction=False) as pipe:
                for args, options in queue:
                    pipe.execute_command(*args, **options)
                return await pipe.execute(raise_on_error=False)

        async def node_by_node(queue: list[server_pipeline.Queued]) -> list[Any]:
            return await cluster_pipeline.execute(client, queue)

        async def one_server(queue: list[server_pipeline.Queued]) -> list[Any]:
            async with one.pipeline(transaction=False) as pipe:
                for args, options in queue:
                    pipe.execute_command(*args, **options)
                return await pipe.execute(raise_on_error=False)

        lanes = server_pipeline.Lanes(one)

        async def own_connections(queue: list[server_pipeline.Queued]) -> list[Any]:
            return await lanes.execute(queue)

        ways: dict[str, Callable[[list[server_pipeline.Queued]], Awaitable[list[Any]]]] = {
            "ClusterPipeline": redis_py,
            "node by node": node_by_node,
            "one server": one_server,
            "one server, own": own_connections,
        }
        mine, theirs = await node_by_node(queue), await redis_py(queue)
        assert [type(r) for r in mine] == [type(r) for r in theirs], (mine, theirs)
        mine, theirs = await own_connections(queue), await one_server(queue)
        assert [type(r) for r in mine] == [type(r) for r in theirs], (mine, theirs)
        spent: dict[str, list[float]] = {name: [] for name in ways}
        for round_ in range(12):
            order = list(ways) if round_ % 2 else list(reversed(ways))
            for name in order:
                started = time.process_time()
                for _ in range(200):
                    await ways[name](queue)
                spent[name].append((time.process_time() - started) / 200 * 1e6)
        print(f"one flush of {ingests} ingests ({len(queue)} commands), client CPU:")
        for name, times in spent.items():
            median = statistics.median(times)
            print(f"  {name:<16} least {min(times):5.0f} us, median {median:5.0f} us")
        await client.aclose()
        await one.aclose()
    finally:
        cluster.stop()
        single.stop()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    with tempfile.TemporaryDirectory(prefix="omni-flush-cpu-") as tmp:
        asyncio.run(measure(int(args[0]) if args else 8, Path(tmp)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
