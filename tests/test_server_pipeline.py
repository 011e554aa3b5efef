"""The pipeliner's own connections to one server (omni.server_pipeline), on real Valkey:
every command the hot paths send is answered exactly as redis-py's pipeline answers it
(errors too, a forgotten script as the NoScriptError that makes a batch run it again),
and when the server stalls or drops the connection, the batches in flight fail as
redis-py's would (a TimeoutError by the deadline, a ConnectionError) and the next
pipeline works."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import DataError, NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from omni import server_pipeline
from omni.redis_server import EmbeddedRedis
from omni.scripts import Batch, Pipeliner, answer_raw

pytestmark = pytest.mark.single_server(
    "the pipeliner's own connections are for one server; on a cluster it pipelines node "
    "by node (test_cluster_pipeline)"
)

SCRIPT = "return {KEYS[1], ARGV[1], tonumber(ARGV[2]) + 1}"


def _table(sha: str) -> list[tuple[str, tuple[Any, ...], dict[str, Any]]]:
    """The commands omni's hot paths pipeline (and a few more), in an order whose
    replies cover every kind: strings, numbers, None, booleans, lists, maps, streams,
    errors, a forgotten script."""
    return [
        ("set", ("{t}:s", "v"), {}),
        ("set", ("{t}:s", "w"), {"nx": True}),
        ("get", ("{t}:s",), {}),
        ("get", ("{t}:missing",), {}),
        ("incr", ("{t}:n",), {}),
        ("incrby", ("{t}:n", 5), {}),
        ("pexpire", ("{t}:n", 60_000), {"nx": True}),
        ("pexpire", ("{t}:n", 60_000), {"nx": True}),
        ("incr", ("{t}:s",), {}),
        ("hset", ("{t}:h",), {"mapping": {"a": 1, "b": "x", "é": b"\xff"}}),
        ("hget", ("{t}:h", "a"), {}),
        ("hmget", ("{t}:h", ["a", "b", "c"]), {}),
        ("hgetall", ("{t}:h",), {}),
        ("hgetall", ("{t}:missing",), {}),
        ("hincrby", ("{t}:h", "a", 2), {}),
        ("exists", ("{t}:h", "{t}:missing"), {}),
        ("xadd", ("{t}:x", {"m": b"x", "v": 1}), {"id": "1-1"}),
        ("xadd", ("{t}:x", {"m": b"y"}), {"id": "2-1"}),
        ("xadd", ("{t}:x", {"m": b"z"}), {"id": "1-0"}),
        ("xlen", ("{t}:x",), {}),
        ("xrange", ("{t}:x",), {}),
        ("xrevrange", ("{t}:x", "+", "-"), {"count": 1}),
        ("execute_command", ("XREVRANGE", "{t}:x", "+", "-", "COUNT", 5), {}),
        ("zadd", ("{t}:z", {"a": 1.5, "b": 2}), {}),
        ("zrange", ("{t}:z", 0, -1), {"withscores": True}),
        ("zscore", ("{t}:z", "a"), {}),
        ("zrem", ("{t}:z", "a"), {}),
        ("evalsha", (sha, 1, "{t}:k", "arg", 3), {}),
        ("evalsha", ("0" * 40, 0), {}),
        ("hget", ("{t}:x", "m"), {}),
        ("type", ("{t}:h",), {}),
        ("pttl", ("{t}:missing",), {}),
        ("spublish", ("{t}:chan", "hi"), {}),
        ("expire", ("{t}:s", 100), {}),
        ("delete", ("{t}:s",), {}),
        ("ping", (), {}),
        ("config_get", ("maxmemory",), {}),
        ("client_setname", ("omni-test",), {}),
    ]


async def _redis_py(redis: Redis, table: list[Any]) -> list[Any]:
    async with redis.pipeline(transaction=False) as pipe:
        for name, args, kwargs in table:
            getattr(pipe, name)(*args, **kwargs)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
    return replies


async def _lanes(lanes: server_pipeline.Lanes, table: list[Any]) -> list[Any]:
    commands = server_pipeline.Commands()
    for name, args, kwargs in table:
        getattr(commands, name)(*args, **kwargs)
    return await lanes.execute(commands.queue)


def _same(reply: Any) -> Any:
    """An error as its class and text (two errors are never equal), anything else as is."""
    if isinstance(reply, Exception):
        return (type(reply), str(reply))
    return reply


@pytest.mark.parametrize("protocol", [2, 3])
async def test_every_reply_is_the_one_redis_py_gives(redis_url: str, protocol: int) -> None:
    theirs = Redis.from_url(redis_url, protocol=protocol)
    ours = Redis.from_url(redis_url, protocol=protocol)
    lanes = server_pipeline.Lanes(ours)
    try:
        sha = await theirs.script_load(SCRIPT)
        table = _table(sha)
        await theirs.flushdb()
        expected = await _redis_py(theirs, table)
        await theirs.flushdb()
        got = await _lanes(lanes, table)
        assert [_same(r) for r in got] == [_same(r) for r in expected]
        # What the table is for: the kinds of reply are all there.
        kinds = {type(r) for r in got}
        assert {bytes, int, bool, list, dict, type(None), ResponseError, NoScriptError} <= kinds
        await theirs.flushdb()
        # A value redis-py refuses to encode: the whole pipeline fails, as redis-py's does.
        bad = [("set", ("{t}:b", True), {})]
        with pytest.raises(DataError) as theirs_failed:
            await _redis_py(theirs, bad)
        with pytest.raises(DataError) as ours_failed:
            await _lanes(lanes, bad)
        assert str(ours_failed.value) == str(theirs_failed.value)
        assert await _lanes(lanes, [("ping", (), {})]) == [True]  # and nothing was sent
    finally:
        await theirs.aclose()
        await ours.aclose()


async def test_a_raw_command_skips_the_callback_over_the_pipeliners_connections(
    redis: Redis, redis_url: str
) -> None:
    client = Redis.from_url(redis_url)
    answer_raw(client)
    lanes = server_pipeline.Lanes(client)
    try:
        await redis.xadd("{r}:tl", {"m": b"x"}, id="1-1")
        commands = server_pipeline.Commands()
        commands.execute_command("XREVRANGE", "{r}:tl", "+", "-", omni_raw=True)
        commands.xrevrange("{r}:tl", "+", "-")
        assert await lanes.execute(commands.queue) == [
            [[b"1-1", [b"m", b"x"]]],
            [(b"1-1", {b"m": b"x"})],
        ]
    finally:
        await client.aclose()


@pytest.fixture
async def own_server(tmp_path: Path) -> AsyncIterator[EmbeddedRedis]:
    """A Valkey of this test's own, to stop and kill: never the session's."""
    server = EmbeddedRedis(tmp_path, persist=False)
    await asyncio.to_thread(server.start)
    try:
        yield server
    finally:
        pid = server.pid
        if pid is not None:
            os.kill(pid, signal.SIGCONT)
        await asyncio.to_thread(server.stop)


async def test_a_stalled_server_fails_the_batches_by_the_deadline_and_the_next_works(
    own_server: EmbeddedRedis,
) -> None:
    client = Redis.from_url(own_server.url)  # no socket timeout, as omni.app's pipeliner
    pipeliner = Pipeliner(client, timeout_s=0.3)
    try:
        await client.set("one", "1")
        await client.set("two", "2")
        warm = Batch()
        warm.command("get", "one")
        assert await pipeliner.run(warm) == [b"1"]  # a connection of the pipeliner's
        pid = own_server.pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        stalled = [Batch(), Batch()]
        for batch in stalled:
            batch.command("get", "one")
        began = time.monotonic()
        failed = await asyncio.gather(*map(pipeliner.run, stalled), return_exceptions=True)
        took = time.monotonic() - began
        assert all(isinstance(f, RedisTimeoutError) for f in failed), failed
        assert 0.25 < took < 1.5
        os.kill(pid, signal.SIGCONT)
        # The stalled pipeline's reply, if it comes now, is never taken for this one's.
        after = Batch()
        after.command("get", "two")
        assert await pipeliner.run(after) == [b"2"]
    finally:
        await client.aclose()


async def test_a_killed_connection_fails_its_batches_and_the_next_pipeline_reconnects(
    own_server: EmbeddedRedis,
) -> None:
    client = Redis.from_url(own_server.url, client_name="pipelined")
    admin = Redis.from_url(own_server.url)
    pipeliner = Pipeliner(client, timeout_s=5)
    try:
        # In flight: a batch waiting on the server (BLPOP) and one behind it, killed.
        blocked, behind = Batch(), Batch()
        blocked.command("blpop", ["nothing"], timeout=3)
        behind.command("incr", "n")
        running = asyncio.gather(
            pipeliner.run(blocked), pipeliner.run(behind), return_exceptions=True
        )
        await asyncio.sleep(0.2)
        assert await admin.client_kill_filter(_type="normal", skipme=True) >= 1
        failed = await running
        assert all(isinstance(f, RedisConnectionError) for f in failed), failed
        again = Batch()
        again.command("incr", "n")
        assert (await pipeliner.run(again))[0] in (1, 2)  # `behind` may have run
        # Killed while idle: the next pipeline finds it closed and connects again, with
        # the client's handshake (its name).
        await admin.client_kill_filter(_type="normal", skipme=True)
        await asyncio.sleep(0.1)
        names = Batch()
        names.command("client_getname")
        names.command("incr", "n")
        name, count = await pipeliner.run(names)
        assert name == "pipelined" and count in (2, 3)
    finally:
        await client.aclose()
        await admin.aclose()


async def test_with_no_connection_to_spare_the_pipeliner_goes_through_redis_py(
    redis_url: str,
) -> None:
    client = Redis.from_url(redis_url, max_connections=1)
    pipeliner = Pipeliner(client)
    try:
        batches = [Batch() for _ in range(3)]
        for batch in batches:
            batch.command("incr", "{one}:n")
        assert sorted(r for [r] in await asyncio.gather(*map(pipeliner.run, batches))) == [1, 2, 3]
    finally:
        await client.aclose()


async def test_a_pipeline_waiting_on_the_server_holds_up_none_sent_after_it(
    redis: Redis, redis_url: str
) -> None:
    """Pipelines in flight at once each have a connection: a later one is answered
    first when the earlier waits (here a BLPOP until a push)."""
    client = Redis.from_url(redis_url)
    pipeliner = Pipeliner(client)
    try:
        waiting = Batch()
        waiting.command("blpop", ["{w}:q"], timeout=5)
        first = asyncio.ensure_future(pipeliner.run(waiting))
        await asyncio.sleep(0.05)  # its own turn, so its own pipeline
        later = Batch()
        later.command("incr", "{w}:n")
        assert await pipeliner.run(later) == [1]
        assert not first.done()
        await redis.rpush("{w}:q", "x")
        assert await first == [(b"{w}:q", b"x")]
    finally:
        await client.aclose()


async def test_only_what_the_pipeliners_connections_can_speak_to_is_theirs() -> None:
    """Any URL works as before: what is not a plain TCP or Unix socket (SSL) stays with
    redis-py's pipeline."""
    for url, own in (
        ("redis://u:p@127.0.0.1:1/2?protocol=3&client_name=x", True),
        ("unix:///tmp/omni-none.sock?db=1", True),
        ("rediss://127.0.0.1:1/0", False),
    ):
        client = Redis.from_url(url)
        assert server_pipeline.usable(client) is own, url
        await client.aclose()
