"""Fixtures on real things: one real Valkey server per test session (the same embedded
binary `omni serve` runs), a clean database for every test, and the app under test
through `aiohttp_client`. Set OMNI_TEST_REDIS_URL to run against another server.

OMNI_TEST_CLUSTER=1 (`make test-cluster`) runs the whole suite on a real Redis Cluster
instead: three primaries with a replica each, from the same binary (omni.redis_cluster),
and omni in cluster mode. A test that cannot mean anything there is marked
`@pytest.mark.single_server("why")`: the cluster run leaves it out, saying why."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web_app
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis, RedisCluster

from omni import codec, keys
from omni.app import create_app
from omni.redis_client import close, connect
from omni.redis_cluster import LocalCluster, free_ports
from omni.redis_server import EmbeddedRedis
from omni.settings import Settings
from omni.store.entries import dedupe_field, legacy_dedupe_field
from tests.smtp_server import Mailbox

BOT = {"Authorization": "Bearer test-bot-key-0001"}
AGENT = {"Authorization": "Bearer test-agent-key-001"}
ADMIN = {"Authorization": "Bearer test-admin-key-001"}


# Taken out of the environment once read: omni reads every OMNI_<SECTION>_<NAME> as a
# setting, and a [test] section is not one (an in-process `omni` command or a child
# process handed os.environ would stop on it).
CLUSTER = os.environ.pop("OMNI_TEST_CLUSTER", "") == "1"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "single_server(reason): about one Redis server itself; left out of the cluster run",
    )
    config.addinivalue_line(
        "markers",
        "cluster_only(reason): about the cluster itself; left out of the single-server run",
    )


# The marker that leaves a test out of this run, and how the summary says so.
_LEFT_OUT = (
    ("single_server", "not on the cluster") if CLUSTER else ("cluster_only", "only on a cluster")
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    name = _LEFT_OUT[0]
    kept, left_out = [], []
    for item in items:
        marker = item.get_closest_marker(name)
        if marker is None:
            kept.append(item)
            continue
        if not marker.args or not str(marker.args[0]).strip():
            raise pytest.UsageError(f"{item.nodeid}: {name} needs a reason")
        left_out.append(item)
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = kept


def pytest_terminal_summary(terminalreporter: Any) -> None:
    name, said = _LEFT_OUT
    for item in terminalreporter.stats.get("deselected", []):
        marker = item.get_closest_marker(name)
        if marker is not None:
            terminalreporter.write_line(f"{said}: {item.nodeid}: {marker.args[0]}")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@pytest.fixture(autouse=True)
def _forget_apps() -> Iterator[None]:
    """Let each test's apps go when it ends. aiohttp caches every app's middleware chain
    in a module-level LRU of 1024 entries, keyed by the app: in one process serving one
    app that is nothing, but here every test makes apps, and the cache held each one (its
    Redis clients, a cluster client's per-node objects) for the rest of the session. The
    garbage collector then walked all of them on every full pass: seconds per pass late
    in the cluster run."""
    yield
    cached = getattr(web_app, "_cached_build_middleware", None)
    if cached is not None:
        cached.cache_clear()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = os.environ.get("OMNI_TEST_REDIS_URL")
    if url:
        yield url
        return
    if CLUSTER:
        cluster = LocalCluster(Path(tmp_path_factory.mktemp("cluster")), free_ports(6))
        # A SIGTERM (a CI timeout) would end pytest without this finally: six servers
        # would be left running. As an interrupt, it stops them on the way out.
        previous = signal.signal(signal.SIGTERM, _interrupt)
        cluster.start()
        try:
            yield cluster.url
        finally:
            cluster.stop()
            signal.signal(signal.SIGTERM, previous)
        return
    server = EmbeddedRedis(Path(tmp_path_factory.mktemp("valkey")), persist=False)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


def make_settings(redis_url: str, **sections: dict[str, Any]) -> Settings:
    raw: dict[str, Any] = {
        # Generous: a loaded CI machine must not turn a slow reply into a 503; the fault
        # tests set their own short deadline.
        "redis": {"url": redis_url, "request_timeout": 10.0, "cluster": CLUSTER},
        "auth": {
            "api_keys": [
                {"key": "test-bot-key-0001", "role": "bot", "name": "test bot"},
                {"key": "test-agent-key-001", "role": "agent", "name": "test agent"},
                {"key": "test-admin-key-001", "role": "admin", "name": "test admin"},
            ]
        },
        # The in-process worker is switched on by the tests that deliver; elsewhere it
        # would write its stream and group into databases tests compare key by key.
        "outbox": {"in_process_worker": False},
    }
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    return Settings.from_mapping(raw)


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    # On the cluster: a cluster client, which flushes and scans every primary.
    client = connect(make_settings(redis_url).redis, redis_url, socket_timeout=10)
    await client.flushall()
    try:
        yield client
    finally:
        await close(client)


@pytest.fixture
def settings(redis_url: str) -> Settings:
    return make_settings(redis_url)


@pytest.fixture
async def client(aiohttp_client: Any, settings: Settings, redis: Redis) -> TestClient:
    return await aiohttp_client(create_app(settings))


async def ingest(client: TestClient, **fields: Any) -> dict[str, Any]:
    """POST /v1/messages with sensible defaults; returns the stored message."""
    body = {"channel": "web", "external_id": "visitor-1", "channel_message_id": "m-1", "text": "hi"}
    body.update(fields)
    response = await client.post("/v1/messages", json=body, headers=BOT)
    assert response.status in (200, 201), await response.text()
    data: dict[str, Any] = await response.json()
    return data


async def index_as_before_digests(redis: Redis, cid: str) -> None:
    """Rewrite customer `cid`'s message-id index as omni wrote it before it held digests
    (omni.store.entries): each message's field `channel:id` (or `channel#` and a hex
    digest of a long id), its entry id as text, and no `tl_channels` naming the
    channels the timeline has an index for."""
    index = keys.message_ids(cid)
    for entry, fields in await redis.xrange(keys.timeline(cid)):
        message = codec.decode_message(fields[b"m"], customer_id=cid, conversation_id="",
                                       received_at="")  # fmt: skip
        assert message.channel_message_id is not None
        digest = dedupe_field(message.channel, message.channel_message_id)
        if await redis.hdel(index, digest):  # type: ignore[misc]
            legacy = legacy_dedupe_field(message.channel, message.channel_message_id)
            await redis.hset(index, legacy, entry)  # type: ignore[misc]
    await redis.hdel(keys.customer(cid), "tl_channels")  # type: ignore[misc]


async def snapshot(redis: Redis) -> dict[bytes, Any]:
    """Every key and its full contents, to assert that a rejected request wrote nothing.
    Rate-limit counters (omni.ratelimit) are left out: they count requests, refused
    ones included, and hold no data."""
    state: dict[bytes, Any] = {}
    async for key in redis.scan_iter(count=1000):
        if key.startswith(b"omni:rate:"):
            continue
        kind = (await redis.type(key)).decode()
        if kind == "string":
            state[key] = await redis.get(key)
        elif kind == "hash":
            state[key] = await redis.hgetall(key)
        elif kind == "stream":
            state[key] = await redis.xrange(key)
        elif kind == "set":
            state[key] = await redis.smembers(key)
        elif kind == "zset":
            state[key] = await redis.zrange(key, 0, -1, withscores=True)
        else:
            state[key] = await redis.lrange(key, 0, -1)
    return state


@pytest.fixture
async def mailbox() -> AsyncIterator[tuple[Mailbox, int]]:
    """A real SMTP server on a free port (aiosmtpd) and what it received."""
    from aiosmtpd.smtp import SMTP  # only the tests that mail need it

    box = Mailbox()
    server = await asyncio.get_running_loop().create_server(
        lambda: SMTP(box, hostname="mx.test"), "127.0.0.1", 0
    )
    yield box, server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


@contextlib.asynccontextmanager
async def primaries(redis: Redis, **options: Any) -> AsyncIterator[list[Redis]]:
    """A plain client of each primary (of the cluster, or the one server): for what is
    per server (INFO, CONFIG, MONITOR, CLIENT PAUSE)."""
    if not isinstance(redis, RedisCluster):
        yield [redis]
        return
    await redis.initialize()
    nodes = [Redis(host=n.host, port=n.port, **options) for n in redis.get_primaries()]
    try:
        yield nodes
    finally:
        for node in nodes:
            await node.aclose()


async def key_count(redis: Redis) -> int:
    """How many keys there are, on every primary (a cluster client's DBSIZE asks one)."""
    async with primaries(redis) as nodes:
        return sum([int(await node.dbsize()) for node in nodes])
