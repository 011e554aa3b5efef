"""GET /v1/customers/{id}/context and GET /v1/context: the one document a bot reads."""

from __future__ import annotations

from aiohttp.test_utils import TestClient

from tests.conftest import BOT, ingest

UNKNOWN = "cus_01JAAAAAAAAAAAAAAAAAAAAAAA"


async def test_context_has_every_part_and_an_etag_of_its_version(client: TestClient) -> None:
    first = await ingest(client, external_id="v-1", channel_message_id="w-1",
                         text="where is order 4417?", author_name="Ana Silva")  # fmt: skip
    cid = first["customer_id"]
    response = await client.get(f"/v1/customers/{cid}/context", headers=BOT)
    assert response.status == 200
    context = await response.json()
    assert response.headers["ETag"] == f'"{context["version"]}"'
    customer = context["customer"]
    assert customer["id"] == cid
    assert customer["profile"]["name"] == "Ana Silva"
    assert customer["identities"][0]["channel"] == "web"
    assert customer["identities"][0]["external_id"] == "v-1"
    assert customer["last_channel"] == "web"
    assert customer["first_seen"] and customer["last_seen"]
    conversation = context["conversation"]
    assert conversation["id"] == first["conversation_id"]
    assert conversation["status"] == "open"
    assert conversation["channels"] == ["web"]
    assert conversation["assignee"] == {"kind": "bot"}
    assert context["facts"] == {}
    assert context["cart"]["items"] == []
    assert context["cart"]["stage"] == "browsing"
    assert context["cart"]["totals"] == {"item_count": 0, "subtotal": 0}
    assert context["recent_messages"] == [first]


async def test_every_write_changes_the_version(client: TestClient) -> None:
    cid = (await ingest(client, channel_message_id="1"))["customer_id"]
    seen = []
    for step in range(3):
        response = await client.get(f"/v1/customers/{cid}/context", headers=BOT)
        seen.append(response.headers["ETag"])
        await ingest(client, channel_message_id=f"more-{step}")
    assert len(set(seen)) == 3


async def test_if_none_match_current_is_304_and_stale_is_200(client: TestClient) -> None:
    cid = (await ingest(client))["customer_id"]
    url = f"/v1/customers/{cid}/context"
    tag = (await client.get(url, headers=BOT)).headers["ETag"]

    unchanged = await client.get(url, headers={**BOT, "If-None-Match": tag})
    assert unchanged.status == 304
    assert unchanged.headers["ETag"] == tag
    assert await unchanged.read() == b""

    for held in (f'"999999", {tag}', f"W/{tag}", "*"):
        listed = await client.get(url, headers={**BOT, "If-None-Match": held})
        assert listed.status == 304, held

    await ingest(client, channel_message_id="m-2")
    changed = await client.get(url, headers={**BOT, "If-None-Match": tag})
    assert changed.status == 200
    assert changed.headers["ETag"] != tag
    assert len((await changed.json())["recent_messages"]) == 2


async def test_recent_messages_are_the_newest_twenty_newest_last(client: TestClient) -> None:
    for i in range(25):
        await ingest(client, external_id="chatty", channel_message_id=f"c-{i}", text=f"c {i}")
        if i % 5 == 0:  # another customer talking meanwhile stays out of this context
            await ingest(client, external_id="other", channel_message_id=f"o-{i}", text="other")
    response = await client.get(
        "/v1/context", params={"channel": "web", "external_id": "chatty"}, headers=BOT
    )
    recent = (await response.json())["recent_messages"]
    assert [m["text"] for m in recent] == [f"c {i}" for i in range(5, 25)]
    received = [m["received_at"] for m in recent]
    assert received == sorted(received)


async def test_context_shows_facts_and_cart_written_through_the_api(client: TestClient) -> None:
    cid = (await ingest(client))["customer_id"]
    url = f"/v1/customers/{cid}/context"
    patched = await client.patch(
        f"/v1/customers/{cid}/facts",
        json={"facts": {"order_id": {"value": "4417", "source": {"channel": "web"}}}},
        headers=BOT,
    )
    assert patched.status == 200
    cart_tag = (await client.get(f"/v1/customers/{cid}/cart", headers=BOT)).headers["ETag"]
    put = await client.put(
        f"/v1/customers/{cid}/cart",
        json={"items": [{"sku": "shoe-42", "quantity": 1, "unit_price": 8900,
                         "currency": "EUR"}], "stage": "cart"},
        headers={**BOT, "If-Match": cart_tag},
    )  # fmt: skip
    assert put.status == 200
    context = await (await client.get(url, headers=BOT)).json()
    assert context["facts"]["order_id"]["value"] == "4417"
    assert context["cart"]["stage"] == "cart"
    assert context["cart"]["items"][0]["sku"] == "shoe-42"
    assert context["cart"]["totals"] == {"item_count": 1, "subtotal": 8900}


async def test_unknown_or_malformed_customer_is_404(client: TestClient) -> None:
    for cid in (UNKNOWN, "nobody", "cus_short"):
        response = await client.get(f"/v1/customers/{cid}/context", headers=BOT)
        assert response.status == 404, cid
        assert response.content_type == "application/problem+json"


async def test_context_by_identity_finds_the_customer(client: TestClient) -> None:
    message = await ingest(client, channel="instagram", external_id="ig-778",
                           channel_message_id="mid.1", text="hello")  # fmt: skip
    response = await client.get(
        "/v1/context", params={"channel": "instagram", "external_id": "ig-778"}, headers=BOT
    )
    assert response.status == 200
    context = await response.json()
    assert context["customer"]["id"] == message["customer_id"]
    assert response.headers["ETag"] == f'"{context["version"]}"'
    assert context["recent_messages"] == [message]

    again = await client.get(
        "/v1/context",
        params={"channel": "instagram", "external_id": "ig-778"},
        headers={**BOT, "If-None-Match": response.headers["ETag"]},
    )
    assert again.status == 304


async def test_context_by_identity_unknown_identity_is_404(client: TestClient) -> None:
    await ingest(client, channel="web", external_id="known")
    for params in ({"channel": "web", "external_id": "stranger"},
                   {"channel": "mobile", "external_id": "known"}):  # fmt: skip
        response = await client.get("/v1/context", params=params, headers=BOT)
        assert response.status == 404, params
        assert response.content_type == "application/problem+json"


async def test_context_by_identity_needs_both_parameters(client: TestClient) -> None:
    for params, missing in (
        ({"external_id": "x"}, "channel"),
        ({"channel": "web"}, "external_id"),
        ({"channel": "web", "external_id": ""}, "external_id"),
        ({}, "channel"),
    ):
        response = await client.get("/v1/context", params=params, headers=BOT)
        assert response.status == 400, params
        problem = await response.json()
        assert problem["field"] == missing


async def test_context_by_identity_unknown_channel_is_422(client: TestClient) -> None:
    response = await client.get(
        "/v1/context", params={"channel": "telegram", "external_id": "x"}, headers=BOT
    )
    assert response.status == 422
    problem = await response.json()
    assert problem["field"] == "channel"
    assert "telegram" in problem["detail"]
