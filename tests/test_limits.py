"""The documented input limits on every route that takes JSON (README "Limits"): nesting
deeper than omni.jsonbody.DEPTH_MAX, invalid UTF-8 and a body over `[limits] body_max`
are clear problems, never a 500, never a traceback in the log, and write nothing; a
request aiohttp's HTTP parser refuses (a NUL byte in a header) is logged in one line."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from omni.app import create_app
from omni.jsonbody import DEPTH_MAX, too_deep
from omni.routes import all_routes
from tests.conftest import ADMIN, ingest, snapshot
from tests.everything import Logs, full_settings
from tests.test_worker import until

JSON_ROUTES = [r for r in all_routes() if r.body is not None]
DEEP = {
    "array": b"[" * 5000 + b"]" * 5000,
    "object": b'{"a":' * 5000 + b"1" + b"}" * 5000,
    "just over": b'{"text":' + b"[" * DEPTH_MAX + b"]" * DEPTH_MAX + b"}",
}


@pytest.fixture
async def app(aiohttp_client: Any, redis_url: str, redis: Redis) -> TestClient:
    client: TestClient = await aiohttp_client(create_app(full_settings(redis_url)))
    return client


async def _caller(app: TestClient, path: str) -> dict[str, str]:
    """Credentials that get a request on `path` past authentication."""
    if path.startswith("/channels/web/") or path.startswith("/channels/mobile/"):
        channel = path.split("/")[2]
        started = await app.post(f"/channels/{channel}/sessions", json={})
        return {"Authorization": "Bearer " + (await started.json())["token"]}
    return ADMIN


def test_the_depth_check_counts_structure_not_text() -> None:
    assert not too_deep(b'{"text": "' + b"[" * 100 + b'"}')
    assert not too_deep(b"[" * DEPTH_MAX + b"]" * DEPTH_MAX)
    assert too_deep(b"[" * (DEPTH_MAX + 1) + b"]" * (DEPTH_MAX + 1))
    assert not too_deep(b"[" + b"[]," * 1000 + b"[]]")  # many brackets, shallow


@pytest.mark.parametrize("route", JSON_ROUTES, ids=lambda r: f"{r.method} {r.path}")
async def test_deep_nesting_and_invalid_utf8_are_400_problems(
    app: TestClient, redis: Redis, route: Any
) -> None:
    cid = (await ingest(app))["customer_id"]
    path = route.path.replace("{id}", cid)
    headers = {**await _caller(app, path), "Content-Type": "application/json", "If-Match": "*"}
    before = await snapshot(redis)
    logs = Logs()
    bodies = [*DEEP.values(), b'"caf\xe9 \xff"']
    for body in bodies:
        response = await app.request(route.method, path, data=body, headers=headers)
        assert response.status == 400, (body[:20], await response.text())
        assert response.content_type == "application/problem+json"
    assert logs.tracebacks() == []
    assert await snapshot(redis) == before


async def test_a_body_over_body_max_is_413(
    aiohttp_client: Any, redis_url: str, redis: Redis
) -> None:
    app = await aiohttp_client(create_app(full_settings(redis_url, limits={"body_max": 4096})))
    for route in JSON_ROUTES:
        path = route.path.replace("{id}", "cus_01JAAAAAAAAAAAAAAAAAAAAAAA")
        headers = {**await _caller(app, path), "Content-Type": "application/json", "If-Match": "*"}
        body = b'{"text": "' + b"x" * 5000 + b'"}'
        response = await app.request(route.method, path, data=body, headers=headers)
        assert response.status == 413, (route.path, await response.text())
        assert response.content_type == "application/problem+json"


@pytest.mark.parametrize(
    "raw",
    [
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Note: a\x00b\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Note: a\x01b\r\n\r\n",
        b"GET /v1/cont\x00ext HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /v1/context?channel=%00&external_id=\xff HTTP/1.1\r\nHost: x\r\n\r\n",
    ],
    ids=["nul-in-header", "control-in-header", "nul-in-path", "bytes-in-query"],
)
async def test_bytes_the_http_parser_refuses_are_400_in_one_log_line(
    app: TestClient, raw: bytes
) -> None:
    logs = Logs()
    reader, writer = await asyncio.open_connection("127.0.0.1", app.server.port)
    writer.write(raw)
    await writer.drain()
    answer = await reader.read(4096)
    writer.close()
    assert answer.startswith(b"HTTP/1.0 400") or answer.startswith(b"HTTP/1.1 400"), answer
    assert logs.tracebacks() == []
    refused = [
        line for line in logs.lines() if line["event"] == "request refused by the HTTP parser"
    ]
    assert len(refused) == 1 and refused[0]["status"] == 400
    assert "a\\x00b" not in logs.text


@pytest.mark.parametrize("path", ["/v1/messages", "/channels/instagram/webhook"])
async def test_a_client_gone_mid_body_is_one_quiet_log_line_not_an_error(
    redis_url: str, redis: Redis, path: str
) -> None:
    # Served as `omni serve` serves (aiohttp's test server would cancel the handler when
    # the client goes, which `omni serve` does not).
    runner = web.AppRunner(create_app(full_settings(redis_url)), handler_cancellation=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        logs = Logs()
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        head = (
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Authorization: {ADMIN['Authorization']}\r\nContent-Length: 1000\r\n\r\n"
        )
        writer.write(head.encode() + b'{"channel": "web"')  # then the client goes away
        await writer.drain()
        writer.transport.abort()

        async def answered() -> bool:
            return any(line.get("event") == "request" for line in logs.lines())

        await until(answered, timeout_s=10)
        assert logs.tracebacks() == []
        request = next(line for line in logs.lines() if line["event"] == "request")
        assert request["status"] == 400
    finally:
        await runner.cleanup()
