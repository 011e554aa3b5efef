"""Operations endpoints, and what clients see when Redis is down."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from omni.app import create_app
from omni.redis_cluster import free_ports
from tests.conftest import BOT, CLUSTER, make_settings


async def test_healthz_and_readyz(client: TestClient) -> None:
    assert (await client.get("/healthz")).status == 200
    ready = await client.get("/readyz")
    assert ready.status == 200
    assert (await ready.json())["redis"] == "ok"


async def test_unreachable_redis_is_503_not_a_crash(aiohttp_client: Any, tmp_path: Path) -> None:
    # A cluster client takes TCP addresses only: a free port, where nothing listens.
    nowhere = f"redis://127.0.0.1:{free_ports(1)[0]}" if CLUSTER else f"unix://{tmp_path}/none.sock"
    settings = make_settings(nowhere)
    client = await aiohttp_client(create_app(settings))
    ready = await client.get("/readyz")
    assert ready.status == 503
    assert (await ready.json())["redis"] == "unreachable"
    assert (await client.get("/healthz")).status == 200
    response = await client.post(
        "/v1/messages",
        json={"channel": "web", "external_id": "v", "channel_message_id": "1", "text": "hi"},
        headers=BOT,
    )
    assert response.status == 503
    assert response.content_type == "application/problem+json"
    problem = await response.json()
    assert problem["type"].endswith("/unavailable")
    assert "Traceback" not in await response.text()


async def test_unknown_route_and_method_are_problems(client: TestClient) -> None:
    missing = await client.get("/v1/nothing", headers=BOT)
    assert missing.status == 404
    assert missing.content_type == "application/problem+json"
    wrong = await client.delete("/v1/messages", headers=BOT)
    assert wrong.status == 405
    assert wrong.content_type == "application/problem+json"
