"""The cart as a purchase journey: each change is an event on the timeline, placing the
order closes it, and two channels changing it at once are settled by If-Match."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from tests.conftest import AGENT, BOT, ingest

SHOE = {
    "sku": "SHOE-42",
    "name": "Trail shoe",
    "quantity": 1,
    "unit_price": 8900,
    "currency": "EUR",
}


async def _put(client: TestClient, cid: str, version: str, **body: Any) -> Any:
    return await client.put(
        f"/v1/customers/{cid}/cart", json=body, headers={**BOT, "If-Match": version}
    )


async def test_every_step_of_the_purchase_is_on_the_timeline(
    client: TestClient, redis: Redis
) -> None:
    cid = (await ingest(client, channel="instagram", external_id="ig_1"))["customer_id"]
    version = (await client.get(f"/v1/customers/{cid}/cart", headers=BOT)).headers["ETag"]
    steps = [
        {"items": [SHOE], "stage": "cart"},
        {"items": [{**SHOE, "quantity": 2}], "stage": "checkout"},
        {"items": [{**SHOE, "quantity": 2}], "stage": "payment"},
        {"items": [{**SHOE, "quantity": 2}], "stage": "placed", "order_id": "4417"},
    ]
    for body in steps:
        response = await _put(client, cid, version, **body)
        assert response.status == 200, await response.text()
        version = response.headers["ETag"]
    cart = await (await client.get(f"/v1/customers/{cid}/cart", headers=BOT)).json()
    assert (cart["stage"], cart["order_id"], cart["totals"]["subtotal"]) == (
        "placed",
        "4417",
        17800,
    )
    history = await (await client.get(f"/v1/customers/{cid}/history", headers=AGENT)).json()
    events = [m for m in history["messages"] if m["channel"] == "system"]
    assert [m["text"] for m in reversed(events)] == [
        "Cart browsing → cart: 1 item, 89.00 EUR",
        "Cart cart → checkout: 2 items, 178.00 EUR",
        "Cart checkout → payment: 2 items, 178.00 EUR",
        "Order 4417 placed: 2 items, 178.00 EUR",
    ]
    assert all(m["author"]["kind"] == "system" for m in events)
    assert events[0]["metadata"] == {
        "kind": "cart",
        "stage": "placed",
        "previous_stage": "payment",
        "item_count": 2,
        "subtotal": 17800,
        "currency": "EUR",
        "order_id": "4417",
    }
    # The events do not count as the customer writing: their last channel stays.
    context = await (await client.get(f"/v1/customers/{cid}/context", headers=BOT)).json()
    assert context["customer"]["last_channel"] == "instagram"
    # …nor as a channel of the conversation.
    assert context["conversation"]["channels"] == ["instagram"]


async def test_two_channels_changing_the_cart_at_once_one_wins_the_other_retries(
    client: TestClient, redis: Redis
) -> None:
    cid = (await ingest(client))["customer_id"]
    version = (await client.get(f"/v1/customers/{cid}/cart", headers=BOT)).headers["ETag"]
    mobile, instagram = await asyncio.gather(
        _put(client, cid, version, items=[SHOE], stage="cart"),
        _put(client, cid, version, items=[{**SHOE, "sku": "SHOE-43"}], stage="cart"),
    )
    assert sorted([mobile.status, instagram.status]) == [200, 412]
    loser = mobile if mobile.status == 412 else instagram
    problem = await loser.json()
    assert problem["status"] == 412
    # The loser reads again and applies its change on top: nothing silently overwritten.
    fresh = await client.get(f"/v1/customers/{cid}/cart", headers=BOT)
    current = await fresh.json()
    retried = await _put(
        client,
        cid,
        fresh.headers["ETag"],
        items=[*current["items"], {**SHOE, "sku": "SOCKS"}],
        stage="cart",
    )
    assert retried.status == 200
    skus = [i["sku"] for i in (await retried.json())["items"]]
    assert len(skus) == 2 and skus[-1] == "SOCKS"
