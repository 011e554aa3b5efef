"""Fixtures on real things: one real Valkey server per test session (the same embedded
binary `omni serve` runs), a clean database for every test, and the app under test
through `aiohttp_client`. Set OMNI_TEST_REDIS_URL to run against another server."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from omni.app import create_app
from omni.redis_server import EmbeddedRedis
from omni.settings import Settings

BOT = {"Authorization": "Bearer test-bot-key-0001"}
AGENT = {"Authorization": "Bearer test-agent-key-001"}
ADMIN = {"Authorization": "Bearer test-admin-key-001"}


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = os.environ.get("OMNI_TEST_REDIS_URL")
    if url:
        yield url
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
        "redis": {"url": redis_url, "request_timeout": 10.0},
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
    client = Redis.from_url(redis_url)
    await client.flushall()
    try:
        yield client
    finally:
        await client.aclose()


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
