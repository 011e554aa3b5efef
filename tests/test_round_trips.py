"""An ingest's round trips to Redis, as the server counts them.

Each round trip costs omni a share of a pipeline's flush and the task switches around
it, so how many an ingest waits for is most of what it costs (issue 16; `python -m
bench.serve_cpu`). Counted with INFO stats' total_reads_processed: the server reads once
for each request or pipeline a client sends it and waits on (and once for the INFO).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import msgspec
import pytest
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from bench import traffic
from omni import keys
from omni.listener import Body
from omni.model import Message
from omni.settings import Settings
from tests.conftest import BOT, make_settings


@pytest.fixture
def settings(redis_url: str) -> Settings:
    """As the bench has it: a bot on Instagram (each new message there is also its
    outbox record), none on the web. The handoff sweep runs once at start-up, not
    during a count."""
    bot = {"url": "http://127.0.0.1:9/bot", "secret": "round-trips-bot-secret-0001"}
    return make_settings(
        redis_url,
        bots={"instagram": bot},
        instagram={"app_secret": traffic.APP_SECRET, "verify_token": traffic.VERIFY_TOKEN},
        handoff={"sweep_interval_s": 3600.0},
    )


async def _round_trips(redis: Redis, action: Callable[[], Awaitable[None]]) -> int:
    async def reads() -> int:
        return int((await redis.info("stats"))["total_reads_processed"])

    before = await reads()
    await action()
    return await reads() - before - 1  # the second INFO's own read


def _post(client: TestClient, external_id: str, mid: str) -> Callable[[], Awaitable[None]]:
    async def post() -> None:
        body = {"channel": "web", "external_id": external_id, "channel_message_id": mid,
                "text": "where is my order?"}  # fmt: skip
        response = await client.post("/v1/messages", json=body, headers=BOT)
        assert response.status == 201, await response.text()

    return post


def _webhook(client: TestClient, sender: str, n: int) -> Callable[[], Awaitable[None]]:
    async def post() -> None:
        body = traffic.instagram_body(sender, traffic.instagram_mid("rt", n))
        headers = {"Content-Type": "application/json",
                   "X-Hub-Signature-256": traffic.signature(body)}  # fmt: skip
        response = await client.post("/channels/instagram/webhook", data=body, headers=headers)
        assert response.status == 200, await response.text()

    return post


@pytest.mark.single_server("one server's reads: a cluster pipeline is a round trip per node")
async def test_an_ingest_waits_for_two_or_three_round_trips_a_new_customer_for_four(
    client: TestClient, redis: Redis
) -> None:
    # The scripts loaded and the connections made once, not part of any ingest.
    await _post(client, "warm-up", "w-1")()
    await _webhook(client, traffic.sender_id(0), 0)()
    # A new customer: the rate limit; the identity's customer (SET NX GET); append.lua;
    # then one batch: the live event, the bot's outbox record (Instagram), the report's
    # new conversation and the customer's place in the team inbox.
    assert await _round_trips(redis, _post(client, "visitor-1", "m-1")) == 4
    assert await _round_trips(redis, _webhook(client, traffic.sender_id(1), 1)) == 4
    for n in range(2, 5):
        # A known customer (the identity cached), no bot: the rate limit, then append.lua,
        # which writes the live event with the message.
        assert await _round_trips(redis, _post(client, "visitor-1", f"m-{n}")) == 2
        # With a bot: the rate limit, append.lua, then the live event and the outbox
        # record in one batch.
        assert await _round_trips(redis, _webhook(client, traffic.sender_id(1), n)) == 3


@pytest.mark.single_server("append.lua writes events on one server; a cluster's, the batch")
async def test_the_event_append_lua_writes_is_the_one_the_batch_writes(
    client: TestClient, redis: Redis
) -> None:
    """Byte for byte: the live event of a message, whether the script wrote it (a known
    web customer, no bot) or the batch after it (a new conversation: the report first),
    is the message as the API answers it, as omni.live encodes an event."""
    for n in range(3):
        response = await client.post(
            "/v1/messages",
            json={"channel": "web", "external_id": "visitor-2", "channel_message_id": f"e-{n}",
                  "text": f"hello \u00e9\n{n} \"quoted\" omni-append-received-at"
                  if n == 2 else f"hello {n}", "author_name": "Zoë"},
            headers=BOT,
        )  # fmt: skip
        assert response.status == 201
        message = msgspec.json.decode(await response.read(), type=Message)
        [(_, fields)] = await redis.xrevrange(keys.events(message.customer_id), count=1)
        expected = Body(customer_id=message.customer_id, type="message",
                        data=msgspec.to_builtins(message))  # fmt: skip
        assert fields[b"e"] == msgspec.json.encode(expected)
        [(_, shared)] = await redis.xrevrange(keys.events_all(0, 1), count=1)
        assert shared[b"e"] == fields[b"e"]
