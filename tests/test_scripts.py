"""The Redis side. Scripts sent by SHA in one round trip still run when the server has
forgotten them (a restart without the script cache): an ingest then stores the message,
tells the live listeners once and queues the bot's webhook once. The embedded server
keeps a new customer's streams small."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from omni import cluster_pipeline, keys, scripts, server_pipeline
from omni.app import create_app
from omni.outbox import delivery_id
from omni.redis_client import close, connect, is_cluster
from omni.redis_server import STREAM_NODE_MAX_BYTES, EmbeddedRedis
from omni.scripts import Batch, Pipeliner
from omni.state import SERVICES
from tests.conftest import BOT, make_settings, primaries
from tests.test_worker import until


async def test_a_batch_reloads_forgotten_scripts_and_runs_plain_commands_once(
    redis: Redis,
) -> None:
    push = scripts.load(redis, "outbox_push")
    batch = Batch()
    batch.command("incr", "plain")
    batch.script(push, ["{q}:stream", "{q}:guard"], ["dlv_1", "cus_1", 60_000])
    await redis.script_flush()
    plain, pushed = await batch.execute(redis)
    assert plain == 1 and pushed is not None
    assert await redis.get("plain") == b"1"
    assert await redis.xlen("{q}:stream") == 1
    assert (await redis.script_exists(push.sha)) == [True]


async def test_batches_of_one_turn_share_one_pipeline_and_each_gets_its_own_replies(
    redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipelines = 0
    # On a cluster a pipeline goes node by node (omni.cluster_pipeline), through
    # redis-py's ClusterPipeline only for what that does not route; on one server over
    # the pipeliner's own connections (omni.server_pipeline).
    owner: Any = cluster_pipeline if is_cluster(redis) else server_pipeline.Lane
    name = "execute" if is_cluster(redis) else "write"
    make = getattr(owner, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal pipelines
        pipelines += 1
        return make(*args, **kwargs)

    monkeypatch.setattr(owner, name, counted)
    pipeliner = Pipeliner(redis)

    async def count_to(key: str, n: int) -> list[Any]:
        batch = Batch()
        for _ in range(n):
            batch.command("incr", key)
        return await pipeliner.run(batch)

    async def broken() -> list[Any]:
        batch = Batch()
        batch.command("set", "text", "x")
        batch.command("incr", "text")  # not a number: this batch alone fails
        return await pipeliner.run(batch)

    replies = await asyncio.gather(
        count_to("a", 3), broken(), count_to("b", 2), return_exceptions=True
    )
    assert pipelines == 1
    assert replies[0] == [1, 2, 3] and replies[2] == [1, 2]
    assert isinstance(replies[1], ResponseError)
    # The next turn's work is another pipeline, and scripts forgotten meanwhile run.
    await redis.script_flush()
    push = scripts.load(redis, "outbox_push")
    assert await pipeliner.script(push, ["{q}:stream", "{q}:guard"], ["dlv_1", "cus_1", 60_000])
    assert pipelines == 2


async def test_a_caller_that_stops_waiting_leaves_the_others_their_replies(
    redis: Redis,
) -> None:
    pipeliner = Pipeliner(redis)
    one, two = Batch(), Batch()
    one.command("incr", "one")
    two.command("incr", "two")
    gave_up = asyncio.create_task(pipeliner.run(one))
    kept = asyncio.create_task(pipeliner.run(two))
    await asyncio.sleep(0)
    gave_up.cancel()
    assert await kept == [1]
    assert gave_up.cancelled()
    assert await redis.get("one") == b"1"  # sent all the same: it was on its way


async def test_the_hits_of_one_turn_on_a_counter_are_counted_as_if_each_were_sent(
    redis: Redis,
) -> None:
    """`Pipeliner.count`: one INCRBY a turn and counter, each hit answered with the
    count its own INCR would have had, in the order staged; a hit given up on leaves
    the others theirs, and is counted all the same."""
    pipeliner = Pipeliner(redis)
    first = [pipeliner.count("{c}:a", 60_000) for _ in range(3)]
    other = pipeliner.count("{c}:b", 60_000)
    first[1].cancel()
    assert [await first[0], await first[2], await other] == [[1, 1], [3, 1], [1, 1]]
    again = await asyncio.gather(*(pipeliner.count("{c}:a", 60_000) for _ in range(2)))
    assert [count for count, _ in again] == [4, 5]
    assert again[0][1] == 0  # the expiry was set by the first turn (NX)
    assert await redis.get("{c}:a") == b"5"
    assert 0 < await redis.pttl("{c}:a") <= 60_000


@pytest.mark.single_server("a cluster's pipelines go node by node through redis-py's")
async def test_a_turn_of_many_scripts_is_sent_in_parts_the_first_before_the_turn_ends(
    redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis answers a pipeline once all of it has run: a turn's scripts go out twelve
    batches at a time, written as the twelfth is submitted, so Redis works on them
    while the turn goes on. Every batch keeps its own replies, in order, and the turn's
    counter hits are counted as before, whichever part carried them."""
    writes = 0
    write = server_pipeline.Lane.write

    def counted(lane: server_pipeline.Lane, packed: bytes) -> None:
        nonlocal writes
        writes += 1
        write(lane, packed)

    monkeypatch.setattr(server_pipeline.Lane, "write", counted)
    pipeliner = Pipeliner(redis)
    push = scripts.load(redis, "outbox_push")

    def pushed(n: int, stream: str = "{q}:stream") -> asyncio.Future[list[Any]]:
        batch = Batch()
        batch.command("incr", "{q}:plain")
        batch.script(push, [stream, f"{stream}:guard:{n}"], [f"dlv_{n}", "cus_1", 60_000])
        return pipeliner.submit(batch)

    # A first such turn: its parts each take a connection, idle again once answered.
    await asyncio.gather(*(pushed(n, "{q}:warm") for n in range(30)))
    await redis.delete("{q}:plain")
    writes = 0

    hits = [pipeliner.count("{c}:hits", 60_000) for _ in range(2)]
    turn = [pushed(n) for n in range(11)]
    assert writes == 0  # eleven scripts: the turn's pipeline waits for the turn's end
    turn.append(pushed(11))
    assert writes == 1  # the twelfth: written at once, the hits staged before it with it
    hits += [pipeliner.count("{c}:hits", 60_000) for _ in range(2)]
    turn += [pushed(n) for n in range(12, 30)]
    assert writes == 2
    replies = await asyncio.gather(*turn)
    assert writes == 3  # the last six, with the last two hits, at the turn's end
    assert [plain for plain, _ in replies] == list(range(1, 31))
    entries = [entry for _, entry in await redis.xrange("{q}:stream")]
    assert [fields[b"d"] for fields in entries] == [f"dlv_{n}".encode() for n in range(30)]
    assert all(entry for _, entry in replies)
    assert [count for count, _ in await asyncio.gather(*hits)] == [1, 2, 3, 4]


async def test_an_ingest_after_redis_forgot_its_scripts_tells_everyone_once(
    aiohttp_client: Any, redis: Redis, redis_url: str
) -> None:
    settings = make_settings(
        redis_url, bots={"web": {"url": "http://127.0.0.1:9/bot", "secret": "s" * 32}}
    )
    client = await aiohttp_client(create_app(settings))
    body = {"channel": "web", "external_id": "v1", "channel_message_id": "m1", "text": "hi"}
    await redis.script_flush()
    response = await client.post("/v1/messages", json=body, headers=BOT)
    assert response.status == 201
    message = await response.json()
    cid = message["customer_id"]
    assert await redis.xlen(keys.events(cid)) == 1
    did = delivery_id(f"bot:{message['id']}", cid)
    assert await redis.hget(keys.delivery(cid, did), "state") == b"queued"
    outbox = client.app[SERVICES].outbox  # its customer's queue (one of several on a cluster)
    queued = await redis.xrange(outbox.queues[outbox.queue_of(cid)].stream)
    assert [fields[b"d"].decode() for _, fields in queued] == [did]


async def test_the_embedded_server_allocates_small_stream_nodes(tmp_path: Path) -> None:
    """A customer's streams each start with one node, allocated whole: at 2048 bytes a
    one-message customer's timeline stays near 2 KB (4 KB at Redis's default)."""
    server = EmbeddedRedis(tmp_path, persist=False)
    server.start()
    client = Redis.from_url(server.url)
    try:
        setting = await client.config_get("stream-node-max-bytes")
        assert setting == {"stream-node-max-bytes": str(STREAM_NODE_MAX_BYTES)}
        await client.xadd("one", {"m": b"x" * 200})
        assert 0 < (await client.memory_usage("one") or 0) < 3000
    finally:
        await client.aclose()
        server.stop()


async def test_a_pipeline_redis_does_not_answer_fails_by_its_deadline_then_work_resumes(
    redis: Redis, redis_url: str
) -> None:
    # A client without a socket timeout, as omni.app gives the pipeliner.
    untimed = connect(make_settings(redis_url).redis, redis_url, socket_timeout=None)
    pipeliner = Pipeliner(untimed, timeout_s=0.2)
    async with primaries(redis) as servers:  # on a cluster: whichever node has the key
        try:
            for server in servers:
                await server.execute_command("CLIENT", "PAUSE", 1000, "ALL")
            batch = Batch()
            batch.command("get", "anything")
            with pytest.raises(RedisTimeoutError):
                await pipeliner.run(batch)
            for server in servers:
                await server.execute_command("CLIENT", "UNPAUSE")
            again = Batch()
            again.command("incr", "after")
            assert await pipeliner.run(again) == [1]
        finally:
            for server in servers:
                await server.execute_command("CLIENT", "UNPAUSE")
            await close(untimed)


async def test_a_then_command_is_sent_after_the_rest_even_when_nothing_follows(
    redis: Redis,
) -> None:
    # On a cluster the pipeliner sends a batch's `then` commands at the head of its next
    # pipeline, which starts once this one is answered; with no other work coming, one
    # of their own. Keys of two slots: on a cluster, two nodes.
    pipeliner = Pipeliner(redis)
    first, second = "omni:test:{then-a}", "omni:test:{then-b}"
    batch = Batch()
    batch.command("set", first, "1")
    batch.then("set", second, "2")
    replies = await pipeliner.run(batch)
    assert replies[0] is True
    assert replies[1] in (True, None)  # None: sent later, and nothing waits for it

    async def sent() -> bool:
        return bool(await redis.exists(second))

    await until(sent, timeout_s=5)
    assert await redis.get(first) == b"1" and await redis.get(second) == b"2"


async def test_a_raw_command_is_answered_as_the_server_sent_it_and_others_as_before(
    redis: Redis,
) -> None:
    await redis.xadd("{s}:tl", {"m": b"x", "v": 1}, id="1-1")
    pipeliner = Pipeliner(redis)
    batch = Batch()
    batch.raw("XREVRANGE", "{s}:tl", "+", "-", "COUNT", 5)
    batch.command("xrevrange", "{s}:tl", "+", "-", count=5)
    raw, parsed = await pipeliner.run(batch)
    assert raw == [[b"1-1", [b"m", b"x", b"v", b"1"]]]
    assert parsed == [(b"1-1", {b"m": b"x", b"v": b"1"})]
    # The client's own commands still get redis-py's callback; wrapping it is idempotent.
    Pipeliner(redis)
    assert await redis.xrange("{s}:tl") == parsed
