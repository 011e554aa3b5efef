"""Replies through the API: a bot hears of every new message and its answer goes back out,
`POST /v1/customers/{id}/messages` for bots and agents, delivery statuses in the history,
and the dead letters an agent can see and send again."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from omni.app import create_app
from omni.settings import Settings
from tests.conftest import ADMIN, AGENT, BOT, ingest, make_settings, snapshot
from tests.test_bots import SECRET, BotReceiver, ServerFactory, serve

FAST = {"in_process_worker": True, "block_ms": 50, "base_delay_ms": 5, "max_delay_ms": 20}


async def until(check: Callable[[], Awaitable[bool]], timeout_s: float = 10) -> None:
    async with asyncio.timeout(timeout_s):
        while not await check():  # noqa: ASYNC110 - the state is in Redis; no event says it
            await asyncio.sleep(0.02)


async def history(client: TestClient, cid: str) -> list[dict[str, Any]]:
    response = await client.get(f"/v1/customers/{cid}/history", headers=AGENT)
    assert response.status == 200
    items: list[dict[str, Any]] = (await response.json())["messages"]
    return items


async def app_with_bot(
    aiohttp_client: Any, redis_url: str, bot_url: str, **outbox: Any
) -> TestClient:
    settings = make_settings(
        redis_url,
        bots={"web": {"url": bot_url, "secret": SECRET}},
        outbox={**FAST, **outbox},
    )
    return await aiohttp_client(create_app(settings))


async def test_a_new_message_reaches_the_bot_and_its_reply_is_stored_and_queued(
    aiohttp_client: Any, aiohttp_server: ServerFactory, redis_url: str, redis: Redis
) -> None:
    receiver = BotReceiver()
    receiver.default = (200, {"replies": [{"text": "Order 4417 ships today."}]})
    client = await app_with_bot(aiohttp_client, redis_url, await serve(aiohttp_server, receiver))
    message = await ingest(client, text="where is order 4417?")
    cid = message["customer_id"]

    async def replied() -> bool:
        return len(await history(client, cid)) == 2

    await until(replied)
    (body,) = receiver.delivered.values()
    assert body["message"]["id"] == message["id"]
    assert body["context"]["customer"]["id"] == cid
    assert body["context"]["recent_messages"][0]["text"] == "where is order 4417?"
    reply = (await history(client, cid))[0]
    assert reply["direction"] == "outbound"
    assert reply["author"]["kind"] == "bot"
    assert reply["text"] == "Order 4417 ships today."
    assert reply["channel"] == "web"
    assert reply["status"]["state"] in ("queued", "sent", "delivered", "failed")

    # A repeat of the same channel message is not a new message: the bot is not told.
    await ingest(client, text="where is order 4417?")
    await asyncio.sleep(0.2)  # give a wrongly queued second webhook the time to arrive
    assert len(receiver.attempts) == 1


async def test_bots_and_agents_reply_on_the_customers_last_channel(
    client: TestClient, redis: Redis
) -> None:
    first = await ingest(client, channel="web", external_id="v-1", channel_message_id="w1")
    cid = first["customer_id"]
    linked = await client.post(
        f"/v1/customers/{cid}/identities",
        json={"channel": "sms", "external_id": "+14155550100"},
        headers=AGENT,
    )
    assert linked.status == 201
    response = await client.post(
        f"/v1/customers/{cid}/messages", json={"text": "Hello from the bot"}, headers=BOT
    )
    assert response.status == 202, await response.text()
    sent = await response.json()
    assert (sent["channel"], sent["author"]["kind"]) == ("web", "bot")
    assert sent["status"]["state"] == "queued"

    response = await client.post(
        f"/v1/customers/{cid}/messages",
        json={"text": "Hi, Ana here", "channel": "sms"},
        headers=AGENT,
    )
    assert response.status == 202
    by_agent = await response.json()
    assert by_agent["author"] == {"kind": "agent", "id": "test agent", "name": "test agent"}
    assert by_agent["channel"] == "sms"
    items = await history(client, cid)
    assert [m["text"] for m in items] == ["Hi, Ana here", "Hello from the bot", "hi"]
    assert all(m["status"]["state"] == "queued" for m in items[:2])


async def test_a_retried_send_with_the_same_client_message_id_is_stored_once(
    client: TestClient, redis: Redis
) -> None:
    cid = (await ingest(client))["customer_id"]
    body = {"text": "Your code is 4417", "client_message_id": "bot-77"}
    first = await client.post(f"/v1/customers/{cid}/messages", json=body, headers=BOT)
    again = await client.post(f"/v1/customers/{cid}/messages", json=body, headers=BOT)
    assert (first.status, again.status) == (202, 200)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert (await first.json())["id"] == (await again.json())["id"]
    assert len(await history(client, cid)) == 2
    deliveries = await client.get(f"/v1/customers/{cid}/deliveries", headers=AGENT)
    assert [d["kind"] for d in (await deliveries.json())["items"]] == ["web"]


async def test_replies_that_cannot_be_sent_are_refused_and_write_nothing(
    client: TestClient, redis: Redis
) -> None:
    cid = (await ingest(client))["customer_id"]
    before = await snapshot(redis)
    url = f"/v1/customers/{cid}/messages"
    cases: list[tuple[str, Any, dict[str, str], int, str | None]] = [
        (url, {}, BOT, 422, "text"),
        (url, {"text": ""}, BOT, 422, "text"),
        (url, {"text": "hi", "channel": "fax"}, BOT, 422, "channel"),
        (url, {"text": "hi", "channel": "instagram"}, BOT, 422, "channel"),
        (url, {"text": "hi", "colour": "red"}, BOT, 422, "colour"),
        (url, {"text": "x" * 5000}, BOT, 422, "text"),
        (url, {"text": "hi"}, {}, 401, None),
        ("/v1/customers/cus_01HZY7Q8W3K5M2N4P6R8S0T2V4/messages", {"text": "hi"}, BOT, 404, None),
        ("/v1/customers/nobody/messages", {"text": "hi"}, BOT, 404, None),
    ]
    for path, body, headers, status, field in cases:
        response = await client.post(path, json=body, headers=headers)
        problem = await response.json()
        assert response.status == status, (body, problem)
        assert response.content_type == "application/problem+json"
        assert problem.get("field") == field, (body, problem)
    malformed = await client.post(
        url, data=b'{"text": ', headers={**BOT, "Content-Type": "application/json"}
    )
    assert malformed.status == 400
    assert await snapshot(redis) == before


async def test_a_reply_that_fails_for_good_is_visible_and_an_agent_can_retry_it(
    aiohttp_client: Any, redis_url: str, redis: Redis
) -> None:
    # sms is an enabled channel with no adapter on this server: every attempt fails.
    settings = make_settings(redis_url, outbox={**FAST, "max_attempts": 2})
    client = await aiohttp_client(create_app(settings))
    cid = (await ingest(client))["customer_id"]
    await client.post(
        f"/v1/customers/{cid}/identities",
        json={"channel": "sms", "external_id": "+14155550100"},
        headers=AGENT,
    )
    response = await client.post(
        f"/v1/customers/{cid}/messages", json={"text": "hi", "channel": "sms"}, headers=AGENT
    )
    sent = await response.json()

    async def failed() -> bool:
        return (await history(client, cid))[0]["status"]["state"] == "failed"

    await until(failed)
    status = (await history(client, cid))[0]["status"]
    assert status["reason"] == "no adapter sends on sms"

    dead = await client.get("/v1/deliveries/dead", headers=AGENT)
    assert dead.status == 200
    page = await dead.json()
    (letter,) = page["items"]
    assert (letter["customer_id"], letter["kind"]) == (cid, "sms")
    assert letter["reason"] == "no adapter sends on sms"
    assert page["next_after"] is None

    forbidden = await client.post(f"/v1/deliveries/{letter['delivery_id']}/retry", headers=BOT)
    assert forbidden.status == 403
    retried = await client.post(f"/v1/deliveries/{letter['delivery_id']}/retry", headers=ADMIN)
    assert retried.status == 202
    assert (await client.get("/v1/deliveries/dead", headers=AGENT)).status == 200

    async def dead_again() -> bool:
        items = (await (await client.get("/v1/deliveries/dead", headers=AGENT)).json())["items"]
        return len(items) == 1

    await until(dead_again)  # it failed again: the channel still has no adapter
    deliveries = await (await client.get(f"/v1/customers/{cid}/deliveries", headers=AGENT)).json()
    assert [(d["kind"], d["state"]) for d in deliveries["items"]] == [("sms", "failed")]
    assert sent["id"] == (await history(client, cid))[0]["id"]

    missing = await client.post("/v1/deliveries/dlv_nothing/retry", headers=AGENT)
    assert missing.status == 404
    forged = await client.get("/v1/deliveries/dead?after=drop-table", headers=AGENT)
    assert (forged.status, (await forged.json())["field"]) == (400, "after")


def test_the_worker_setting_is_read_from_the_outbox_section(redis_url: str) -> None:
    assert make_settings(redis_url, outbox={"in_process_worker": True}).in_process_worker
    assert Settings.from_mapping({}).in_process_worker
