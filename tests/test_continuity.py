"""The continuity block: the next channel's bot learns where the customer came from, what
it was about and the question that was pending, and omni answers questions it already
knows the answer to, counting how often the customer was spared repeating themselves."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from omni import keys
from omni.state import STORE
from tests.conftest import AGENT, BOT, ingest, snapshot


async def _context(client: TestClient, cid: str, query: str = "") -> dict[str, Any]:
    response = await client.get(f"/v1/customers/{cid}/context{query}", headers=BOT)
    assert response.status == 200, await response.text()
    data: dict[str, Any] = await response.json()
    return data


async def _facts(client: TestClient, cid: str, channel: str, **values: Any) -> None:
    body = {"facts": {k: {"value": v, "source": {"channel": channel}} for k, v in values.items()}}
    response = await client.patch(f"/v1/customers/{cid}/facts", json=body, headers=BOT)
    assert response.status == 200, await response.text()


async def _pending(client: TestClient, cid: str, body: Any, headers: Any = BOT) -> Any:
    return await client.patch(f"/v1/customers/{cid}/conversation", json=body, headers=headers)


async def _dm_then_call(client: TestClient) -> str:
    cid = (
        await ingest(client, channel="instagram", external_id="ig_1", text="where is order 4417?")
    )["customer_id"]
    await _facts(client, cid, "instagram", order_id="4417")
    response = await _pending(
        client,
        cid,
        {"pending": {"fact": "email", "prompt": "What is your e-mail?", "channel": "instagram"}},
    )
    assert response.status == 200, await response.text()
    linked = await client.post(
        f"/v1/customers/{cid}/identities",
        json={"channel": "voice", "external_id": "+14155550100"},
        headers=AGENT,
    )
    assert linked.status == 201
    await ingest(
        client,
        channel="voice",
        external_id="+14155550100",
        channel_message_id="CA1:1",
        text="hi, it's about my order",
    )
    return cid


async def test_the_next_channels_bot_sees_where_the_customer_came_from_and_what_is_pending(
    client: TestClient, redis: Redis
) -> None:
    cid = await _dm_then_call(client)
    block = (await _context(client, cid))["continuity"]
    assert (block["came_from"], block["current_channel"]) == ("instagram", "voice")
    assert block["came_at"]
    assert block["pending"]["fact"] == "email"
    assert block["pending"]["prompt"] == "What is your e-mail?"
    assert block["pending"]["channel"] == "instagram"
    assert block["answered"] is None
    assert block["topic"] == "hi, it's about my order"
    hint = block["resume_hint"]
    assert hint.startswith("Continuing from instagram (")
    assert "about order 4417" in hint
    assert 'waiting for email ("What is your e-mail?")' in hint


async def test_a_fact_from_any_channel_answers_the_pending_question(
    client: TestClient, redis: Redis
) -> None:
    cid = await _dm_then_call(client)
    await _facts(client, cid, "web", email="ana@example.com")
    block = (await _context(client, cid))["continuity"]
    assert block["answered"]["value"] == "ana@example.com"
    assert block["answered"]["source"] == {"channel": "web"}
    assert "email is already known: ana@example.com" in block["resume_hint"]


async def test_ask_says_what_is_known_and_counts_questions_spared_and_repeated(
    client: TestClient, redis: Redis
) -> None:
    cid = await _dm_then_call(client)
    context = await _context(client, cid, "?ask=order_id,email,size")
    assert context["known"]["order_id"]["value"] == "4417"
    assert context["known"]["order_id"]["source"] == {"channel": "instagram"}
    assert context["known"]["email"] is None
    assert context["known"]["size"] is None
    assert context["continuity"]["answered_for_bot"] == 0  # counted after this read
    # A bot that asks again for what omni holds: a repeated question.
    await _pending(client, cid, {"pending": {"fact": "order_id", "prompt": "Order number?"}})
    block = (await _context(client, cid))["continuity"]
    assert (block["repeated_questions"], block["answered_for_bot"]) == (1, 1)
    # Service-wide, in the customer's part of the counters (one part on one server).
    parts = client.app[STORE].parts.stats_parts
    stats = keys.stats(keys.shard_of(cid, parts), parts)
    assert await redis.hgetall(stats) == {b"q_answered": b"1", b"q_repeated": b"1"}
    by_identity = await client.get(
        "/v1/context?channel=voice&external_id=%2B14155550100&ask=order_id", headers=BOT
    )
    assert (await by_identity.json())["known"]["order_id"]["value"] == "4417"


async def test_pending_and_topic_can_be_cleared_and_are_guarded_by_if_match(
    client: TestClient, redis: Redis
) -> None:
    cid = await _dm_then_call(client)
    version = (await client.get(f"/v1/customers/{cid}/context", headers=BOT)).headers["ETag"]
    response = await _pending(
        client, cid, {"pending": None, "topic": "returns"}, {**BOT, "If-Match": version}
    )
    assert response.status == 200
    block = (await response.json())["continuity"]
    assert (block["pending"], block["topic"]) == (None, "returns")
    stale = await _pending(client, cid, {"topic": "x"}, {**BOT, "If-Match": version})
    assert stale.status == 412


async def test_bad_conversation_patches_and_asks_are_refused_and_write_nothing(
    client: TestClient, redis: Redis
) -> None:
    cid = await _dm_then_call(client)
    before = await snapshot(redis)
    for body, status, field in [
        ({"pending": {"prompt": "no fact"}}, 422, "pending.fact"),
        ({"pending": {"fact": "has space"}}, 422, "pending.fact"),
        ({"pending": {"fact": "email", "channel": "fax"}}, 422, "pending.channel"),
        ({"mood": "happy"}, 422, "mood"),
        ({"topic": "x" * 201}, 422, "topic"),
    ]:
        response = await _pending(client, cid, body)
        assert (response.status, (await response.json()).get("field")) == (status, field), body
    missing = await _pending(client, "cus_01HZY7Q8W3K5M2N4P6R8S0T2V4", {"topic": "x"})
    assert missing.status == 404
    for ask in ("a b", ",".join(f"f{i}" for i in range(21)), "x" * 65):
        response = await client.get(f"/v1/customers/{cid}/context?ask={ask}", headers=BOT)
        assert (response.status, (await response.json())["field"]) == (400, "ask")
    assert await snapshot(redis) == before
