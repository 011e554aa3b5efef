"""The team inbox route: conversations by status, oldest waiting first, filtered by
agent and channel, paged by cursor, each with its customer, channel, waiting time and
last message; kept as events happen (handoffs, replies, resolutions, merges), read
from an index (no scan of the customers), and spread over configurable shards."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from omni.app import create_app
from tests.conftest import ADMIN, AGENT, BOT, ingest, make_settings


async def _inbox(client: TestClient, query: str = "", headers: Any = AGENT) -> Any:
    response = await client.get(f"/v1/conversations{query}", headers=headers)
    assert response.status == 200, await response.text()
    return await response.json()


async def _handoff(client: TestClient, cid: str, body: dict[str, Any], headers: Any = BOT) -> None:
    response = await client.post(f"/v1/customers/{cid}/handoff", json=body, headers=headers)
    assert response.status == 200, await response.text()


async def _customer(client: TestClient, name: str, channel: str = "web") -> str:
    stored = await ingest(
        client,
        channel=channel,
        external_id=f"{name}-ext",
        channel_message_id=f"{name}-1",
        text=f"{name} needs help",
        author_name=name,
    )
    await asyncio.sleep(0.003)  # waiting times are milliseconds: keep the order plain
    return str(stored["customer_id"])


async def test_waiting_conversations_come_oldest_first_with_customer_channel_and_last_message(
    client: TestClient, redis: Redis
) -> None:
    ana = await _customer(client, "Ana")
    bo = await _customer(client, "Bo", channel="instagram")
    cy = await _customer(client, "Cy")
    for cid in (bo, ana, cy):  # queued in another order than they wrote
        await _handoff(client, cid, {"to": "agent"})
    page = await _inbox(client, "?status=waiting")
    assert [c["customer"]["id"] for c in page["conversations"]] == [ana, bo, cy]
    first = page["conversations"][0]
    assert first["customer"]["name"] == "Ana"
    assert first["channel"] == "web"
    assert first["status"] == "waiting"
    assert first["assignee"] is None
    assert first["waiting_s"] >= 0 and first["waiting_since"]
    assert first["last_message"]["text"] == "Ana needs help"
    assert page["next_cursor"] is None
    # Nothing is open or resolved yet, and a bot key may not read the inbox.
    assert (await _inbox(client, "?status=open"))["conversations"] == []
    assert (await client.get("/v1/conversations", headers=BOT)).status == 403


async def test_the_inbox_follows_handoffs_replies_and_resolutions(
    client: TestClient, redis: Redis
) -> None:
    ana = await _customer(client, "Ana")
    bo = await _customer(client, "Bo", channel="instagram")
    # Before any handoff the bot holds both: open, the customer waiting for an answer.
    opened = await _inbox(client, "?status=open")
    assert [c["customer"]["id"] for c in opened["conversations"]] == [ana, bo]
    await _handoff(client, ana, {"to": "agent", "agent_id": "agent-7"}, AGENT)
    mine = await _inbox(client, "?status=open&assignee=agent-7")
    assert [c["customer"]["id"] for c in mine["conversations"]] == [ana]
    assert mine["conversations"][0]["assignee"] == "agent-7"
    instagram = await _inbox(client, "?status=open&channel=instagram")
    assert [c["customer"]["id"] for c in instagram["conversations"]] == [bo]
    # The agent answers: Ana no longer waits, and her last message is the reply.
    reply = await client.post(
        f"/v1/customers/{ana}/messages", json={"text": "On it."}, headers=AGENT
    )
    assert reply.status == 202, await reply.text()
    mine = await _inbox(client, "?status=open&assignee=agent-7")
    assert mine["conversations"][0]["waiting_s"] == 0
    assert mine["conversations"][0]["waiting_since"] is None
    assert mine["conversations"][0]["last_message"]["text"] == "On it."
    resolved = await client.post(f"/v1/customers/{ana}/resolve", json={}, headers=AGENT)
    assert resolved.status == 200, await resolved.text()
    assert (await _inbox(client, "?status=open&assignee=agent-7"))["conversations"] == []
    done = await _inbox(client, "?status=resolved")
    assert [c["customer"]["id"] for c in done["conversations"]] == [ana]
    # Her next message opens a new conversation: open again, waiting again.
    await ingest(client, channel="web", external_id="Ana-ext", channel_message_id="Ana-2")
    assert (await _inbox(client, "?status=resolved"))["conversations"] == []
    again = await _inbox(client, "?status=open")
    assert ana in [c["customer"]["id"] for c in again["conversations"]]


async def test_pages_walk_every_conversation_once_across_shards(
    aiohttp_client: Any, redis_url: str, redis: Redis
) -> None:
    client = await aiohttp_client(create_app(make_settings(redis_url, inbox={"shards": 3})))
    ids = [await _customer(client, f"c{i}") for i in range(7)]
    for cid in ids:
        await _handoff(client, cid, {"to": "agent"})
    seen: list[str] = []
    after = ""
    while True:
        page = await _inbox(client, f"?status=waiting&limit=2{after}")
        assert len(page["conversations"]) <= 2
        seen += [c["customer"]["id"] for c in page["conversations"]]
        if not page["next_cursor"]:
            break
        after = f"&after={page['next_cursor']}"
    assert seen == ids
    shards = [key async for key in redis.scan_iter(match="omni:inbox:*:waiting")]
    assert 1 < len(shards) <= 3  # spread over the configured shards, no more


async def test_a_merged_away_customer_leaves_the_inbox(client: TestClient, redis: Redis) -> None:
    ana = await _customer(client, "Ana")
    bo = await _customer(client, "Bo", channel="instagram")
    merged = await client.post(f"/v1/customers/{ana}/merge", json={"source": bo}, headers=AGENT)
    assert merged.status == 200, await merged.text()
    opened = await _inbox(client, "?status=open")
    assert [c["customer"]["id"] for c in opened["conversations"]] == [ana]


async def test_bad_inbox_queries_get_problems(client: TestClient, redis: Redis) -> None:
    for query, status in (
        ("?status=closed", 422),
        ("?after=nonsense", 400),
        ("?limit=0", 400),
        ("?limit=500", 400),
    ):
        response = await client.get(f"/v1/conversations{query}", headers=AGENT)
        assert response.status == status, (query, await response.text())
        assert response.content_type == "application/problem+json"


async def test_an_erased_customer_leaves_the_inbox(client: TestClient, redis: Redis) -> None:
    ana = await _customer(client, "Ana")
    await _handoff(client, ana, {"to": "agent"})
    assert len((await _inbox(client))["conversations"]) == 1
    erased = await client.delete(f"/v1/customers/{ana}", headers=ADMIN)
    assert erased.status == 204
    assert (await _inbox(client))["conversations"] == []
    assert not [
        key async for key in redis.scan_iter(match="omni:inbox:*") if await redis.zcard(key)
    ]
