"""API keys and roles on every /v1 route: 401 without a known key, 403 below the role."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from omni.routes import ROUTES, Route
from tests.conftest import ADMIN, AGENT, BOT, ingest, snapshot

UNKNOWN = "cus_01JAAAAAAAAAAAAAAAAAAAAAAA"
GUARDED = [r for r in ROUTES if r.role is not None]


def _url(route: Route, cid: str) -> str:
    return (
        route.path.replace("{id}", cid)
        .replace("{delivery_id}", "dlv_0")
        .replace("{merge_id}", "mrg_0")
    )


async def _call(client: TestClient, route: Route, cid: str, headers: dict[str, str]) -> Any:
    return await client.request(
        route.method,
        _url(route, cid),
        headers={**headers, "If-Match": "*"} if route.method in ("PUT", "PATCH") else headers,
        params={"q": "ana", "channel": "web", "external_id": "visitor-1"},
        json={} if route.body is not None else None,
    )


def _assert_401(response: Any, body: dict[str, Any]) -> None:
    assert response.status == 401
    assert response.content_type == "application/problem+json"
    assert response.headers["WWW-Authenticate"].lower().startswith("bearer")
    assert body["status"] == 401
    assert body["type"].endswith("/unauthenticated")


def test_every_v1_route_has_a_role() -> None:
    v1 = [r for r in ROUTES if r.path.startswith("/v1/")]
    assert v1
    assert all(r.role is not None for r in v1), [f"{r.method} {r.path}" for r in v1 if not r.role]


@pytest.mark.parametrize("route", GUARDED, ids=lambda r: f"{r.method} {r.path}")
async def test_every_guarded_route_rejects_a_missing_or_unknown_key(
    client: TestClient, redis: Redis, route: Route
) -> None:
    cid = str((await ingest(client))["customer_id"])
    before = await snapshot(redis)
    for headers in (
        {},
        {"Authorization": "Bearer "},
        {"Authorization": "Bearer not-a-key-we-issued"},
        {"Authorization": "Basic dGVzdC1ib3Qta2V5LTAwMDE6"},
        {"Authorization": "test-bot-key-0001"},
        {"Authorization": "Bearer test-bot-key-000"},  # a prefix of a real key
        {"X-Api-Key": "test-bot-key-0001"},
    ):
        response = await _call(client, route, cid, headers)
        _assert_401(response, await response.json())
    assert await snapshot(redis) == before


@pytest.mark.parametrize("route", GUARDED, ids=lambda r: f"{r.method} {r.path}")
async def test_every_guarded_route_admits_its_role_and_above(
    client: TestClient, route: Route
) -> None:
    cid = str((await ingest(client))["customer_id"])
    keys = {"bot": BOT, "agent": AGENT, "admin": ADMIN}
    ranks = ["bot", "agent", "admin"]
    assert route.role is not None
    for role in ranks:
        response = await _call(client, route, cid, keys[role])
        if ranks.index(role) < ranks.index(route.role):
            assert response.status == 403, (role, await response.text())
            assert response.content_type == "application/problem+json"
        else:
            # Past the guard: anything but an auth refusal (the empty bodies may be 4xx).
            assert response.status not in (401, 403), (role, await response.text())
        response.close()  # a live stream (events) is not read to its end


async def test_scheme_is_case_insensitive(client: TestClient) -> None:
    cid = str((await ingest(client))["customer_id"])
    response = await client.get(
        f"/v1/customers/{cid}/context", headers={"Authorization": "bearer test-bot-key-0001"}
    )
    assert response.status == 200


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/v1/customers?q=ana", None),
        ("POST", "/v1/customers/{id}/identities", {"channel": "instagram", "external_id": "i"}),
        ("PATCH", "/v1/customers/{id}/profile", {"name": "Mallory"}),
    ],
)
async def test_bot_key_may_not_do_agent_work(
    client: TestClient, redis: Redis, method: str, path: str, body: Any
) -> None:
    cid = str((await ingest(client, author_name="Ana Silva"))["customer_id"])
    before = await snapshot(redis)
    response = await client.request(method, path.replace("{id}", cid), json=body, headers=BOT)
    assert response.status == 403
    problem = await response.json()
    assert problem["type"].endswith("/forbidden")
    assert "agent" in problem["detail"]
    assert await snapshot(redis) == before
    allowed = await client.request(method, path.replace("{id}", cid), json=body, headers=AGENT)
    assert allowed.status in (200, 201)


async def test_401_for_an_unknown_customer_does_not_reveal_it_exists(client: TestClient) -> None:
    known = str((await ingest(client))["customer_id"])
    a = await client.get(f"/v1/customers/{known}/context")
    b = await client.get(f"/v1/customers/{UNKNOWN}/context")
    assert a.status == b.status == 401
    body_a, body_b = await a.json(), await b.json()
    assert body_a["detail"] == body_b["detail"]


async def test_operations_routes_need_no_key(client: TestClient) -> None:
    for path in ("/healthz", "/readyz", "/openapi.json"):
        response = await client.get(path)
        assert response.status == 200, path
