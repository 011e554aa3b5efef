"""POST /v1/messages: ingest, identity resolution, idempotency."""

from __future__ import annotations

import msgpack
import pytest
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from omni import keys
from tests.conftest import BOT, index_as_before_digests, ingest


async def test_first_message_creates_customer_and_conversation(client: TestClient) -> None:
    response = await client.post(
        "/v1/messages",
        json={
            "channel": "web",
            "external_id": "visitor-7",
            "channel_message_id": "w-1",
            "text": "Where is order 4417?",
            "author_name": "Ana Silva",
        },
        headers=BOT,
    )
    assert response.status == 201
    message = await response.json()
    assert message["customer_id"].startswith("cus_")
    assert message["conversation_id"].startswith("cnv_")
    assert message["direction"] == "inbound"
    assert message["author"] == {"kind": "customer", "id": "visitor-7", "name": "Ana Silva"}
    assert message["text"] == "Where is order 4417?"
    assert response.headers["Location"] == f"/v1/customers/{message['customer_id']}/history"


async def test_repeat_returns_stored_message_and_stores_nothing(
    client: TestClient, redis: Redis
) -> None:
    first = await ingest(client, channel_message_id="dup-1", text="first")
    again = await client.post(
        "/v1/messages",
        json={"channel": "web", "external_id": "visitor-1", "channel_message_id": "dup-1",
              "text": "changed on retry"},
        headers=BOT,
    )  # fmt: skip
    assert again.status == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    assert await again.json() == first
    history = await client.get(f"/v1/customers/{first['customer_id']}/history", headers=BOT)
    assert [m["text"] for m in (await history.json())["messages"]] == ["first"]


async def test_same_identity_is_same_customer_other_identity_is_not(client: TestClient) -> None:
    a = await ingest(client, external_id="u-1", channel_message_id="1")
    b = await ingest(client, external_id="u-1", channel_message_id="2")
    c = await ingest(client, external_id="u-2", channel_message_id="3")
    d = await ingest(client, channel="mobile", external_id="u-1", channel_message_id="4")
    assert a["customer_id"] == b["customer_id"]
    assert len({a["customer_id"], c["customer_id"], d["customer_id"]}) == 3
    assert a["conversation_id"] == b["conversation_id"]


async def test_every_canonical_field_round_trips(client: TestClient) -> None:
    body = {
        "channel": "voice",
        "external_id": "+14155550100",
        "channel_message_id": "CA1-turn-1",
        "text": "order four four one seven",
        "sent_at": "2026-11-23T10:00:00Z",
        "attachments": [
            {"type": "image", "url": "https://cdn.example/a.jpg", "mime": "image/jpeg",
             "size": 1200},
            {"type": "location", "latitude": 48.85, "longitude": 2.35},
            {"type": "product", "product": {"id": "sku-1", "name": "Runner", "price": 8900,
                                            "currency": "EUR"}},
        ],
        "quick_reply": {"payload": "ORDER_STATUS", "title": "Order status"},
        "voice": {"call_id": "CA1", "transcript": "order four four one seven",
                  "confidence": 0.92, "digits": "4417#"},
        "reply_to": "CA1-turn-0",
        "metadata": {"lang": "en", "turn": 1, "barge_in": False},
    }  # fmt: skip
    response = await client.post("/v1/messages", json=body, headers=BOT)
    assert response.status == 201
    stored = await response.json()
    history = await client.get(f"/v1/customers/{stored['customer_id']}/history", headers=BOT)
    (read,) = (await history.json())["messages"]
    assert read == stored
    for key in ("attachments", "quick_reply", "voice", "reply_to", "metadata", "sent_at", "text"):
        assert read[key] == body[key], key


@pytest.mark.parametrize("cmid", ["old-1", "o" * 80])  # the second's field was a hex digest
async def test_a_message_stored_before_the_index_held_digests_is_still_a_repeat(
    client: TestClient, redis: Redis, cmid: str
) -> None:
    first = await ingest(client, channel_message_id=cmid, text="first")
    await index_as_before_digests(redis, first["customer_id"])
    again = await client.post(
        "/v1/messages",
        json={"channel": "web", "external_id": "visitor-1", "channel_message_id": cmid,
              "text": "changed on retry"},
        headers=BOT,
    )  # fmt: skip
    assert again.status == 200
    assert await again.json() == first
    await ingest(client, channel_message_id=f"{cmid}-next", text="next")
    history = await client.get(f"/v1/customers/{first['customer_id']}/history", headers=BOT)
    assert [m["text"] for m in (await history.json())["messages"]] == ["next", "first"]


async def test_a_customer_stored_in_the_layout_before_reads_and_repeats_as_before(
    client: TestClient, redis: Redis
) -> None:
    """Its message as schema 3 wrote it (the whole id, the author an array) and indexed
    as before the digests: history, context and a repeat answer as they did."""
    first = await ingest(client, channel_message_id="old-1", text="first", author_name="Ana")
    cid = first["customer_id"]
    ((entry, fields),) = await redis.xrange(keys.timeline(cid))
    three = [first["id"], "web", True, [0, "visitor-1", "Ana"], "old-1", None, "first"]
    await redis.delete(keys.timeline(cid))
    await redis.xadd(keys.timeline(cid), {"m": b"\x03" + msgpack.packb(three),
                                          "v": fields[b"v"]}, id=entry)  # fmt: skip
    await index_as_before_digests(redis, cid)
    again = await client.post(
        "/v1/messages",
        json={"channel": "web", "external_id": "visitor-1", "channel_message_id": "old-1",
              "text": "changed on retry"},
        headers=BOT,
    )  # fmt: skip
    assert again.status == 200
    assert await again.json() == first
    second = await ingest(client, channel_message_id="new-1", text="second")
    history = await client.get(f"/v1/customers/{cid}/history", headers=BOT)
    assert (await history.json())["messages"] == [second, first]
    context = await client.get(f"/v1/customers/{cid}/context", headers=BOT)
    assert (await context.json())["recent_messages"] == [first, second]  # oldest first
