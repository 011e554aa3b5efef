"""Many requests at once: one customer per identity, every message once, one order,
and optimistic writes that let exactly one of a racing group through."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from omni import keys
from tests.conftest import AGENT, BOT, ingest


async def _post(client: TestClient, **fields: Any) -> tuple[int, dict[str, Any]]:
    body = {"channel": "web", "external_id": "new-visitor", "text": "hi", **fields}
    response = await client.post("/v1/messages", json=body, headers=BOT)
    return response.status, await response.json()


async def _customers(redis: Redis) -> list[bytes]:
    return [key async for key in redis.scan_iter(match=keys.customer("*"), count=1000)]


async def _history(client: TestClient, cid: str, limit: int, **params: Any) -> list[str]:
    ids: list[str] = []
    cursor = None
    while True:
        query = {"limit": limit, **params, **({"before": cursor} if cursor else {})}
        response = await client.get(f"/v1/customers/{cid}/history", params=query, headers=BOT)
        assert response.status == 200, await response.text()
        page = await response.json()
        ids += [m["id"] for m in page["messages"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return ids


async def test_concurrent_first_messages_make_one_customer(
    client: TestClient, redis: Redis
) -> None:
    results = await asyncio.gather(
        *(_post(client, channel_message_id=f"first-{i}", text=f"m {i}") for i in range(20))
    )
    assert [status for status, _ in results] == [201] * 20
    customers = {message["customer_id"] for _, message in results}
    assert len(customers) == 1
    assert len({message["conversation_id"] for _, message in results}) == 1
    assert len(await _customers(redis)) == 1
    (cid,) = customers
    stored = await _history(client, cid, limit=200)
    assert sorted(stored) == sorted(message["id"] for _, message in results)
    context = await (await client.get(f"/v1/customers/{cid}/context", headers=BOT)).json()
    assert len(context["customer"]["identities"]) == 1
    assert len(context["recent_messages"]) == 20


async def test_the_same_message_sent_at_once_is_stored_once(
    client: TestClient, redis: Redis
) -> None:
    results = await asyncio.gather(
        *(_post(client, channel_message_id="retry-me", text="once") for _ in range(10))
    )
    statuses = sorted(status for status, _ in results)
    assert statuses == [200] * 9 + [201]
    assert len({message["id"] for _, message in results}) == 1
    assert len(await _customers(redis)) == 1
    cid = results[0][1]["customer_id"]
    assert len(await _history(client, cid, limit=50)) == 1


async def test_two_channels_at_once_keep_every_message_in_one_order(client: TestClient) -> None:
    cid = str((await ingest(client, channel_message_id="w-start", text="start"))["customer_id"])
    link = {"channel": "mobile", "external_id": "app-1"}
    linked = await client.post(f"/v1/customers/{cid}/identities", json=link, headers=AGENT)
    assert linked.status == 201

    async def talk(channel: str, external_id: str) -> list[str]:
        sent = []
        for i in range(15):
            status, message = await _post(client, channel=channel, external_id=external_id,
                                          channel_message_id=f"{channel}-{i}",
                                          text=f"{channel} {i}")  # fmt: skip
            assert status == 201
            assert message["customer_id"] == cid
            sent.append(message["id"])
        return sent

    web, mobile = await asyncio.gather(talk("web", "visitor-1"), talk("mobile", "app-1"))
    reader_a, reader_b = await asyncio.gather(
        _history(client, cid, limit=7), _history(client, cid, limit=11)
    )
    assert reader_a == reader_b
    assert len(reader_a) == len(set(reader_a)) == 31
    assert set(reader_a) == {*web, *mobile} | {reader_a[-1]}
    oldest_first = list(reversed(reader_a))
    # Each channel's messages keep the order they were sent in.
    assert [m for m in oldest_first if m in set(web)] == web
    assert [m for m in oldest_first if m in set(mobile)] == mobile
    # And the channel filter shows the same order, restricted.
    assert list(reversed(await _history(client, cid, limit=4, channel="mobile"))) == mobile

    context = await (await client.get(f"/v1/customers/{cid}/context", headers=BOT)).json()
    assert [m["id"] for m in context["recent_messages"]] == oldest_first[-20:]
    assert set(context["conversation"]["channels"]) == {"web", "mobile"}


async def test_racing_facts_writes_with_one_if_match_let_exactly_one_through(
    client: TestClient,
) -> None:
    cid = str((await ingest(client))["customer_id"])
    tag = (await client.get(f"/v1/customers/{cid}/context", headers=BOT)).headers["ETag"]

    async def patch(i: int) -> int:
        response = await client.patch(
            f"/v1/customers/{cid}/facts",
            json={"facts": {"size": {"value": i}, f"writer_{i}": {"value": True}}},
            headers={**BOT, "If-Match": tag},
        )
        return response.status

    statuses = await asyncio.gather(*(patch(i) for i in range(10)))
    assert sorted(statuses) == [200] + [412] * 9
    winner = statuses.index(200)
    facts = (await (await client.get(f"/v1/customers/{cid}/context", headers=BOT)).json())["facts"]
    assert set(facts) == {"size", f"writer_{winner}"}
    assert facts["size"]["value"] == winner


async def test_racing_cart_puts_with_one_if_match_let_exactly_one_through(
    client: TestClient,
) -> None:
    cid = str((await ingest(client))["customer_id"])
    tag = (await client.get(f"/v1/customers/{cid}/cart", headers=BOT)).headers["ETag"]

    async def put(i: int) -> int:
        item = {"sku": f"sku-{i}", "quantity": i + 1, "unit_price": 100, "currency": "EUR"}
        response = await client.put(
            f"/v1/customers/{cid}/cart", json={"items": [item]}, headers={**BOT, "If-Match": tag}
        )
        return response.status

    statuses = await asyncio.gather(*(put(i) for i in range(10)))
    assert sorted(statuses) == [200] + [412] * 9
    winner = statuses.index(200)
    cart = await (await client.get(f"/v1/customers/{cid}/cart", headers=BOT)).json()
    assert [i["sku"] for i in cart["items"]] == [f"sku-{winner}"]
    assert cart["totals"] == {"item_count": winner + 1, "subtotal": (winner + 1) * 100}


async def test_concurrent_profile_edits_of_different_fields_all_land(client: TestClient) -> None:
    cid = str((await ingest(client))["customer_id"])
    edits = [
        {"name": "Ana Silva"},
        {"email": "ana@example.com", "email_verified": True},
        {"phone": "+351 912 345 678"},
        {"locale": "pt-PT"},
    ]
    responses = await asyncio.gather(
        *(client.patch(f"/v1/customers/{cid}/profile", json=e, headers=AGENT) for e in edits)
    )
    assert [r.status for r in responses] == [200] * len(edits)
    context = await (await client.get(f"/v1/customers/{cid}/context", headers=BOT)).json()
    assert context["customer"]["profile"] == {
        "name": "Ana Silva",
        "email": "ana@example.com",
        "email_verified": True,
        "phone": "+351912345678",
        "phone_verified": False,
        "locale": "pt-PT",
    }
    found = await client.get("/v1/customers", params={"q": "ana silva"}, headers=AGENT)
    assert [c["id"] for c in (await found.json())["customers"]] == [cid]
