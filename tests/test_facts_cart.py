"""PATCH facts and GET/PUT cart: provenance, totals, and optimistic concurrency."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from tests.conftest import AGENT, BOT, ingest, snapshot

SHOE = {"sku": "shoe-42", "name": "Runner 42", "quantity": 2, "unit_price": 8900,
        "currency": "EUR"}  # fmt: skip
SOCKS = {"sku": "socks", "quantity": 3, "unit_price": 450, "currency": "EUR"}


async def _customer(client: TestClient) -> str:
    return str((await ingest(client))["customer_id"])


async def _context(client: TestClient, cid: str) -> dict[str, Any]:
    response = await client.get(f"/v1/customers/{cid}/context", headers=BOT)
    assert response.status == 200
    data: dict[str, Any] = await response.json()
    return data


async def _patch(
    client: TestClient, cid: str, facts: dict[str, Any], if_match: str | None = None
) -> Any:
    headers = {**BOT, "If-Match": if_match} if if_match is not None else BOT
    return await client.patch(f"/v1/customers/{cid}/facts", json={"facts": facts}, headers=headers)


async def _put_cart(client: TestClient, cid: str, body: dict[str, Any], if_match: str) -> Any:
    return await client.put(
        f"/v1/customers/{cid}/cart", json=body, headers={**BOT, "If-Match": if_match}
    )


# -- facts ----------------------------------------------------------------------------


async def test_set_facts_keep_their_provenance(client: TestClient) -> None:
    message = await ingest(client, channel_message_id="w-9", text="my order is 4417")
    cid = message["customer_id"]
    response = await _patch(client, cid, {
        "order_id": {"value": "4417", "confidence": 0.8,
                     "source": {"channel": "web", "message_id": message["id"]}},
        "shoe_size": {"value": 42},
        "address": {"value": {"city": "Lisbon", "zip": "1100-148"}},
    })  # fmt: skip
    assert response.status == 200
    context = await response.json()
    assert response.headers["ETag"] == f'"{context["version"]}"'
    facts = context["facts"]
    assert set(facts) == {"order_id", "shoe_size", "address"}
    order = facts["order_id"]
    assert order["value"] == "4417"
    assert order["confidence"] == 0.8
    assert order["source"] == {"channel": "web", "message_id": message["id"]}
    assert order["at"].endswith("Z")
    assert facts["shoe_size"]["value"] == 42
    assert facts["shoe_size"]["confidence"] == 1.0
    assert facts["shoe_size"]["source"] == {}
    assert facts["address"]["value"] == {"city": "Lisbon", "zip": "1100-148"}
    # And the next reader sees them too.
    assert (await _context(client, cid))["facts"] == facts


async def test_null_clears_a_fact_and_leaves_the_others(client: TestClient) -> None:
    cid = await _customer(client)
    await _patch(client, cid, {"email": {"value": "ana@example.com"}, "size": {"value": 42}})
    response = await _patch(client, cid, {"email": None, "size": {"value": 43}})
    assert response.status == 200
    facts = (await _context(client, cid))["facts"]
    assert set(facts) == {"size"}
    assert facts["size"]["value"] == 43


async def test_facts_if_match_current_succeeds_stale_is_412_and_writes_nothing(
    client: TestClient, redis: Redis
) -> None:
    cid = await _customer(client)
    tag = (await client.get(f"/v1/customers/{cid}/context", headers=BOT)).headers["ETag"]

    first = await _patch(client, cid, {"size": {"value": 42}}, if_match=tag)
    assert first.status == 200
    new_tag = first.headers["ETag"]
    assert new_tag != tag

    before = await snapshot(redis)
    stale = await _patch(client, cid, {"size": {"value": 99}, "other": {"value": 1}}, if_match=tag)
    assert stale.status == 412
    assert stale.content_type == "application/problem+json"
    assert await snapshot(redis) == before
    facts = (await _context(client, cid))["facts"]
    assert set(facts) == {"size"}
    assert facts["size"]["value"] == 42

    again = await _patch(client, cid, {"size": {"value": 44}}, if_match=new_tag)
    assert again.status == 200


async def test_facts_without_if_match_are_written(client: TestClient) -> None:
    cid = await _customer(client)
    await _patch(client, cid, {"size": {"value": 41}})
    response = await _patch(client, cid, {"size": {"value": 42}})
    assert response.status == 200
    assert (await _context(client, cid))["facts"]["size"]["value"] == 42


async def test_if_match_not_issued_by_the_api_is_412(client: TestClient, redis: Redis) -> None:
    cid = await _customer(client)
    before = await snapshot(redis)
    for tag in ('W/"1"', "1", '"abc"', '"99999"'):
        response = await _patch(client, cid, {"size": {"value": 1}}, if_match=tag)
        assert response.status == 412, tag
    assert await snapshot(redis) == before


async def test_a_message_between_read_and_write_does_not_make_facts_stale(
    client: TestClient,
) -> None:
    cid = await _customer(client)
    tag = (await client.get(f"/v1/customers/{cid}/context", headers=BOT)).headers["ETag"]
    # The customer keeps talking and the cart moves while the bot thinks...
    await ingest(client, channel_message_id="m-2", text="and in blue please")
    cart_tag = (await client.get(f"/v1/customers/{cid}/cart", headers=BOT)).headers["ETag"]
    assert (await _put_cart(client, cid, {"items": [SHOE]}, cart_tag)).status == 200
    # ...but nobody touched the facts, so the bot's write is not stale.
    response = await _patch(client, cid, {"colour": {"value": "blue"}}, if_match=tag)
    assert response.status == 200
    assert (await response.json())["facts"]["colour"]["value"] == "blue"
    # A facts write since the read does make it stale.
    stale = await _patch(client, cid, {"colour": {"value": "red"}}, if_match=tag)
    assert stale.status == 412


# -- cart -----------------------------------------------------------------------------


async def test_new_customer_has_an_empty_cart_with_an_etag(client: TestClient) -> None:
    cid = await _customer(client)
    response = await client.get(f"/v1/customers/{cid}/cart", headers=BOT)
    assert response.status == 200
    assert response.headers["ETag"].startswith('"')
    cart = await response.json()
    assert cart["items"] == []
    assert cart["stage"] == "browsing"
    assert cart["totals"] == {"item_count": 0, "subtotal": 0}
    assert cart["currency"] is None
    assert cart["order_id"] is None


async def test_put_cart_computes_totals_and_is_read_back(client: TestClient) -> None:
    cid = await _customer(client)
    tag = (await client.get(f"/v1/customers/{cid}/cart", headers=BOT)).headers["ETag"]
    response = await _put_cart(client, cid, {"items": [SHOE, SOCKS], "stage": "checkout"}, tag)
    assert response.status == 200
    cart = await response.json()
    assert cart["totals"] == {"item_count": 5, "subtotal": 2 * 8900 + 3 * 450}
    assert cart["currency"] == "EUR"
    assert cart["stage"] == "checkout"
    assert cart["items"] == [SHOE, SOCKS]
    assert cart["updated_by"] == "test bot"
    assert cart["updated_at"].endswith("Z")
    assert response.headers["ETag"] != tag

    read = await client.get(f"/v1/customers/{cid}/cart", headers=BOT)
    assert await read.json() == cart
    assert read.headers["ETag"] == response.headers["ETag"]
    unchanged = await client.get(
        f"/v1/customers/{cid}/cart", headers={**BOT, "If-None-Match": read.headers["ETag"]}
    )
    assert unchanged.status == 304
    assert (await _context(client, cid))["cart"] == cart


async def test_placed_cart_with_order_id(client: TestClient) -> None:
    cid = await _customer(client)
    tag = (await client.get(f"/v1/customers/{cid}/cart", headers=BOT)).headers["ETag"]
    response = await _put_cart(
        client, cid, {"items": [SHOE], "stage": "placed", "order_id": "4417"}, tag
    )
    assert response.status == 200
    cart = await response.json()
    assert (cart["stage"], cart["order_id"]) == ("placed", "4417")


async def test_put_cart_without_if_match_is_428(client: TestClient, redis: Redis) -> None:
    cid = await _customer(client)
    before = await snapshot(redis)
    response = await client.put(f"/v1/customers/{cid}/cart", json={"items": [SHOE]}, headers=BOT)
    assert response.status == 428
    assert response.content_type == "application/problem+json"
    assert await snapshot(redis) == before


async def test_put_cart_stale_is_412_and_writes_nothing(client: TestClient, redis: Redis) -> None:
    cid = await _customer(client)
    tag = (await client.get(f"/v1/customers/{cid}/cart", headers=BOT)).headers["ETag"]
    assert (await _put_cart(client, cid, {"items": [SHOE]}, tag)).status == 200
    before = await snapshot(redis)
    stale = await _put_cart(client, cid, {"items": [SOCKS]}, tag)
    assert stale.status == 412
    assert await snapshot(redis) == before
    cart = await (await client.get(f"/v1/customers/{cid}/cart", headers=AGENT)).json()
    assert [i["sku"] for i in cart["items"]] == ["shoe-42"]


async def test_a_message_or_fact_between_read_and_put_does_not_make_the_cart_stale(
    client: TestClient,
) -> None:
    cid = await _customer(client)
    tag = (await client.get(f"/v1/customers/{cid}/cart", headers=BOT)).headers["ETag"]
    await ingest(client, channel_message_id="m-2", text="add socks")
    await _patch(client, cid, {"size": {"value": 42}})
    response = await _put_cart(client, cid, {"items": [SOCKS]}, tag)
    assert response.status == 200


async def test_mixed_currencies_are_422_and_write_nothing(client: TestClient, redis: Redis) -> None:
    cid = await _customer(client)
    tag = (await client.get(f"/v1/customers/{cid}/cart", headers=BOT)).headers["ETag"]
    before = await snapshot(redis)
    response = await _put_cart(client, cid, {"items": [SHOE, {**SOCKS, "currency": "USD"}]}, tag)
    assert response.status == 422
    assert (await response.json())["field"] == "items"
    assert await snapshot(redis) == before


async def test_placed_without_order_id_is_422_and_writes_nothing(
    client: TestClient, redis: Redis
) -> None:
    cid = await _customer(client)
    tag = (await client.get(f"/v1/customers/{cid}/cart", headers=BOT)).headers["ETag"]
    before = await snapshot(redis)
    response = await _put_cart(client, cid, {"items": [SHOE], "stage": "placed"}, tag)
    assert response.status == 422
    assert (await response.json())["field"] == "order_id"
    assert await snapshot(redis) == before
