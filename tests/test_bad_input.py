"""Bad input on every write route: a clear 4xx problem document, and nothing written."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from omni.app import create_app
from omni.model import TEXT_MAX
from tests.conftest import AGENT, BOT, ingest, make_settings, snapshot

UNKNOWN = "cus_01JAAAAAAAAAAAAAAAAAAAAAAA"
ITEM = {"sku": "shoe-42", "quantity": 1, "unit_price": 8900, "currency": "EUR"}


@dataclass(frozen=True)
class Write:
    method: str
    path: str  # "{id}" is the customer's id
    headers: dict[str, str]
    valid: dict[str, Any]
    # (body, the field the 422 must name)
    invalid: list[tuple[Any, str | None]] = field(default_factory=list)
    needs_if_match: bool = False

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


WRITES = [
    Write(
        "POST", "/v1/messages", BOT,
        {"channel": "web", "external_id": "visitor-2", "channel_message_id": "w-1",
         "text": "hi"},
        [
            ({"channel": "web", "channel_message_id": "w-1", "text": "hi"}, "external_id"),
            ({"channel": "web", "external_id": 5, "channel_message_id": "w-1", "text": "hi"},
             "external_id"),
            ({"channel": "web", "external_id": "", "channel_message_id": "w-1", "text": "hi"},
             "external_id"),
            ({"channel": "web", "external_id": "v", "text": "hi"}, "channel_message_id"),
            ({"external_id": "v", "channel_message_id": "w-1", "text": "hi"}, "channel"),
            ({"channel": "telegram", "external_id": "v", "channel_message_id": "w-1",
              "text": "hi"}, "channel"),
            ({"channel": "web", "external_id": "v", "channel_message_id": "w-1",
              "text": "x" * (TEXT_MAX + 1)}, "text"),
            ({"channel": "web", "external_id": "v", "channel_message_id": "w-1",
              "text": 42}, "text"),
            ({"channel": "web", "external_id": "v", "channel_message_id": "w-1"}, "text"),
            ({"channel": "web", "external_id": "v", "channel_message_id": "w-1", "text": "hi",
              "attachments": [{"type": "hologram"}]}, "attachments[0].type"),
            ({"channel": "web", "external_id": "v", "channel_message_id": "w-1", "text": "hi",
              "attachments": [{"type": "image", "url": "ftp://x/y.jpg"}]},
             "attachments[0].url"),
            ({"channel": "web", "external_id": "v", "channel_message_id": "w-1", "text": "hi",
              "attachments": [{"type": "image"}] * 11}, "attachments"),
            ({"channel": "web", "external_id": "v", "channel_message_id": "w-1", "text": "hi",
              "metadata": {f"k{i}": i for i in range(33)}}, "metadata"),
            ({"channel": "web", "external_id": "v", "channel_message_id": "w-1", "text": "hi",
              "sent_at": "yesterday"}, "sent_at"),
            ({"channel": "web", "external_id": "v", "channel_message_id": "w-1", "text": "hi",
              "voice": {"call_id": "CA1", "confidence": 1.5}}, "voice.confidence"),
            ({"channel": "web", "external_id": "v", "channel_message_id": "w-1", "text": "hi",
              "customer_id": UNKNOWN}, "customer_id"),
            ([{"channel": "web"}], None),
        ],
    ),
    Write(
        "PATCH", "/v1/customers/{id}/facts", BOT,
        {"facts": {"size": {"value": 42}}},
        [
            ({}, "facts"),
            ({"facts": {}}, "facts"),
            ({"facts": ["size"]}, "facts"),
            ({"facts": {"Bad Key": {"value": 1}}}, "facts"),
            ({"facts": {"size": 42}}, "facts"),
            ({"facts": {"size": {"confidence": 1}}}, "value"),
            ({"facts": {"size": {"value": 1, "confidence": 2}}}, "confidence"),
            ({"facts": {"size": {"value": 1, "confidence": "high"}}}, "confidence"),
            ({"facts": {"size": {"value": "x" * 3000}}}, "facts.size.value"),
            ({"facts": {f"k{i}": {"value": i} for i in range(51)}}, "facts"),
            ({"facts": {"size": {"value": 1}}, "extra": True}, "extra"),
        ],
    ),
    Write(
        "PATCH", "/v1/customers/{id}/profile", AGENT,
        {"name": "Ana Silva", "email": "ana@example.com"},
        [
            ({"email": "not-an-email"}, "email"),
            ({"email": 7}, "email"),
            ({"name": ""}, "name"),
            ({"phone": "call me"}, "phone"),
            ({"phone": 33612345678}, "phone"),
            ({"locale": "english please"}, "locale"),
            ({"email_verified": "yes"}, "email_verified"),
            ({"nickname": "Ana"}, "nickname"),
        ],
    ),
    Write(
        "PUT", "/v1/customers/{id}/cart", BOT,
        {"items": [ITEM], "stage": "cart"},
        [
            ({"items": [{**ITEM, "quantity": "2"}]}, "items[0].quantity"),
            ({"items": [{**ITEM, "quantity": 0}]}, "items[0].quantity"),
            ({"items": [ITEM, {"quantity": 1, "unit_price": 1, "currency": "EUR"}]},
             "items[1].sku"),
            ({"items": [{**ITEM, "unit_price": -1}]}, "items[0].unit_price"),
            ({"items": [{**ITEM, "currency": "eur"}]}, "items[0].currency"),
            ({"items": [ITEM, {**ITEM, "currency": "USD"}]}, "items"),
            ({"items": [ITEM] * 101}, "items"),
            ({"items": {"sku": "x"}}, "items"),
            ({"items": [ITEM], "stage": "shipped"}, "stage"),
            ({"items": [ITEM], "stage": "placed"}, "order_id"),
            ({"items": [ITEM], "stage": "placed", "order_id": ""}, "order_id"),
            ({"items": [{**ITEM, "colour": "red"}]}, "items[0].colour"),
        ],
        needs_if_match=True,
    ),
    Write(
        "POST", "/v1/customers/{id}/identities", AGENT,
        {"channel": "instagram", "external_id": "ig-778"},
        [
            ({"channel": "telegram", "external_id": "t-1"}, "channel"),
            ({"channel": "instagram"}, "external_id"),
            ({"channel": "instagram", "external_id": ""}, "external_id"),
            ({"channel": "instagram", "external_id": "ig-1", "verified": "yes"}, "verified"),
            ({"external_id": "ig-1"}, "channel"),
        ],
    ),
]  # fmt: skip
IDS = [str(w) for w in WRITES]


@pytest.fixture
async def cid(client: TestClient) -> str:
    return str((await ingest(client))["customer_id"])


async def _send(
    client: TestClient, write: Write, cid: str, *, headers: dict[str, str] | None = None,
    **kwargs: Any,
) -> Any:  # fmt: skip
    all_headers = dict(write.headers)
    if write.needs_if_match:
        cart = await client.get(f"/v1/customers/{cid}/cart", headers=BOT)
        all_headers["If-Match"] = cart.headers.get("ETag", '"1"')
    all_headers.update(headers or {})
    return await client.request(
        write.method, write.path.replace("{id}", cid), headers=all_headers, **kwargs
    )


async def _assert_problem(response: Any, status: int) -> dict[str, Any]:
    text = await response.text()
    assert response.status == status, text
    assert response.content_type == "application/problem+json"
    problem: dict[str, Any] = json.loads(text)
    assert problem["status"] == status
    assert problem["type"].startswith("https://")
    assert problem["title"]
    assert problem["detail"]
    assert "Traceback" not in text
    assert 'File "' not in text
    assert "msgspec" not in text
    return problem


@pytest.mark.parametrize("write", WRITES, ids=IDS)
async def test_valid_body_is_accepted(client: TestClient, cid: str, write: Write) -> None:
    """The baseline the other tests break one thing of."""
    response = await _send(client, write, cid, json=write.valid)
    assert response.status in (200, 201), await response.text()


@pytest.mark.parametrize("write", WRITES, ids=IDS)
async def test_malformed_json_is_400(
    client: TestClient, redis: Redis, cid: str, write: Write
) -> None:
    before = await snapshot(redis)
    for body in (b'{"channel": ', b"", b"{'single': 'quotes'}", b"\xff\xfe", b"NaN"):
        response = await _send(
            client, write, cid, data=body, headers={"Content-Type": "application/json"}
        )
        await _assert_problem(response, 400)
    assert await snapshot(redis) == before


@pytest.mark.parametrize("write", WRITES, ids=IDS)
async def test_invalid_body_is_422_naming_the_field(
    client: TestClient, redis: Redis, cid: str, write: Write
) -> None:
    before = await snapshot(redis)
    for body, name in write.invalid:
        response = await _send(client, write, cid, json=body)
        problem = await _assert_problem(response, 422)
        if name is None:
            continue
        assert "field" in problem, (body, problem)
        # A path through a map cannot name the key: `facts[...].value` stands for any fact.
        got = problem["field"]
        assert got == name or got.endswith(f".{name}") or got == f"{name}[...]", (body, got)
        assert " - at `" not in problem["detail"], problem
    assert await snapshot(redis) == before


@pytest.mark.parametrize("write", WRITES, ids=IDS)
async def test_not_json_content_type_is_415(
    client: TestClient, redis: Redis, cid: str, write: Write
) -> None:
    before = await snapshot(redis)
    body = json.dumps(write.valid)
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "application/xml"):
        response = await _send(client, write, cid, data=body,
                               headers={"Content-Type": content_type})  # fmt: skip
        await _assert_problem(response, 415)
    response = await _send(client, write, cid, data=body.encode())  # no Content-Type at all
    await _assert_problem(response, 415)
    assert await snapshot(redis) == before


@pytest.mark.parametrize("write", [w for w in WRITES if "{id}" in w.path], ids=str)
async def test_unknown_customer_is_404(client: TestClient, redis: Redis, write: Write) -> None:
    for cid in (UNKNOWN, "cus_nope", "nobody"):
        response = await _send(client, write, cid, json=write.valid)
        await _assert_problem(response, 404)
    assert await snapshot(redis) == {}  # rate counters aside (conftest.snapshot)


@pytest.mark.parametrize("write", WRITES, ids=IDS)
async def test_body_over_the_limit_is_413(
    aiohttp_client: Any, redis_url: str, redis: Redis, write: Write
) -> None:
    small = await aiohttp_client(create_app(make_settings(redis_url, limits={"body_max": 2048})))
    cid = str((await ingest(small))["customer_id"])
    before = await snapshot(redis)
    big = {**write.valid, "padding": "x" * 4000}
    response = await _send(small, write, cid, json=big)
    problem = await _assert_problem(response, 413)
    assert "2048" in problem["detail"]
    # A body under the limit is still read (and here refused only for its extra field).
    near = await _send(small, write, cid, json={**write.valid, "padding": "x" * 1500})
    await _assert_problem(near, 422)
    assert await snapshot(redis) == before


async def test_text_up_to_the_limit_is_accepted(client: TestClient) -> None:
    message = await ingest(client, text="é" * TEXT_MAX)
    assert len(message["text"]) == TEXT_MAX


async def test_json_with_a_charset_or_a_json_suffix_is_read(client: TestClient) -> None:
    body = json.dumps({"channel": "web", "external_id": "v", "channel_message_id": "1",
                       "text": "olá"}).encode()  # fmt: skip
    for n, content_type in enumerate(
        ("application/json; charset=utf-8", "application/vnd.omni+json")
    ):
        response = await client.post(
            "/v1/messages", data=body.replace(b'"1"', f'"{n + 10}"'.encode()),
            headers={**BOT, "Content-Type": content_type},
        )  # fmt: skip
        assert response.status == 201, content_type


async def test_put_cart_without_if_match_is_428_even_with_a_bad_body(
    client: TestClient, redis: Redis, cid: str
) -> None:
    before = await snapshot(redis)
    response = await client.put(f"/v1/customers/{cid}/cart", data=b"{", headers=BOT)
    await _assert_problem(response, 428)
    assert await snapshot(redis) == before


async def test_unknown_routes_and_methods_are_problems(client: TestClient) -> None:
    await _assert_problem(await client.get("/v1/nothing-here", headers=BOT), 404)
    await _assert_problem(await client.delete("/v1/messages", headers=BOT), 405)
