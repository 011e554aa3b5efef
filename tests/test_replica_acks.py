"""`[redis] replica_acks`: a message is acknowledged only once WAIT says that many replicas
hold it. The session's store has fewer replicas than asked for here (one server: none;
the cluster: one per primary), so WAIT falls short: the answer is a 503 problem with
Retry-After, every time the sender tries, until enough replicas hold the message.
The failover itself is tests/test_failover.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from omni.app import create_app
from omni.errors import ConfigError
from omni.settings import Settings
from tests.conftest import BOT, make_settings

MESSAGE = {"channel": "web", "external_id": "visitor-1", "channel_message_id": "m-1", "text": "hi"}


async def test_too_few_replicas_is_a_503_with_retry_after_and_the_retry_is_one_message(
    aiohttp_client: Any, redis_url: str, redis: Redis
) -> None:
    short = {"replica_acks": 2, "replica_ack_timeout_ms": 50}
    client = await aiohttp_client(create_app(make_settings(redis_url, redis=short)))
    for _ in range(2):  # the sender's retry: a repeat must wait for replicas too
        response = await client.post("/v1/messages", json=MESSAGE, headers=BOT)
        assert response.status == 503, await response.text()
        assert response.content_type == "application/problem+json"
        assert response.headers["Retry-After"] == "1"
        assert "replica" in (await response.json())["detail"]

    # Stored once on the primary all along: without the requirement, the retry is a repeat.
    plain = await aiohttp_client(create_app(make_settings(redis_url)))
    response = await plain.post("/v1/messages", json=MESSAGE, headers=BOT)
    assert response.status == 200, await response.text()
    assert response.headers["Idempotent-Replayed"] == "true"
    cid = (await response.json())["customer_id"]
    history = await plain.get(f"/v1/customers/{cid}/history", headers=BOT)
    assert [m["channel_message_id"] for m in (await history.json())["messages"]] == ["m-1"]


def test_a_wait_longer_than_the_request_timeout_is_a_config_error(tmp_path: Path) -> None:
    # WAIT blocks on a client whose replies are due within request_timeout: longer would
    # read as a stalled Redis, so the operator is told which setting to change.
    config = tmp_path / "omni.toml"
    config.write_text(
        "[redis]\nreplica_acks = 1\nrequest_timeout = 2.0\nreplica_ack_timeout_ms = 2000\n"
    )
    with pytest.raises(ConfigError, match=r"redis\.replica_ack_timeout_ms"):
        Settings.from_env({"OMNI_CONFIG": str(config)})
