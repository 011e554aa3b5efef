"""Live events for agents (Server-Sent Events): typed events with ids, Last-Event-ID replay
without gaps or repeats, every process delivering them, the browser's access token, and
a client that stops reading being dropped instead of slowing ingest down."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from redis.asyncio import Redis, RedisCluster

from omni import keys
from omni.api.events import TOKEN_TTL_S, mint
from omni.app import create_app
from omni.live import Live
from omni.settings import Settings
from tests.conftest import ADMIN, AGENT, BOT, ingest, make_settings, primaries
from tests.test_worker import until

GUARD_S = 10  # a guard against a hang, not a measurement


class Stream:
    """An SSE client that reads the stream the way EventSource does."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.retry: int | None = None

    async def next(self) -> dict[str, Any]:
        """The next event (comments and retry-only blocks skipped)."""
        async with asyncio.timeout(GUARD_S):
            while True:
                block = await self._block()
                if "event" in block or "data" in block:
                    data = json.loads(block["data"]) if "data" in block else None
                    return {"id": block.get("id"), "event": block.get("event"), "data": data}

    async def _block(self) -> dict[str, str]:
        fields: dict[str, str] = {}
        while True:
            line = (await self.response.content.readline()).decode()
            if line == "":
                raise EOFError("the server ended the stream")
            line = line.rstrip("\n")
            if not line:
                if fields:
                    return fields
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "retry":
                self.retry = int(value)
            else:
                fields[name] = value

    async def until(self, event_type: str) -> dict[str, Any]:
        while True:
            event = await self.next()
            if event["event"] == event_type:
                return event


async def open_stream(
    client: TestClient,
    path: str,
    headers: dict[str, str] | None = None,
    **params: str,
) -> Stream:
    response = await client.get(path, headers=headers or AGENT, params=params)
    assert response.status == 200, await response.text()
    assert response.headers["Content-Type"].startswith("text/event-stream")
    assert response.headers["Cache-Control"] == "no-store"
    return Stream(response)


async def customer(client: TestClient, external_id: str = "visitor-1") -> str:
    message = await ingest(client, external_id=external_id, channel_message_id=f"{external_id}-0")
    return str(message["customer_id"])


async def say(client: TestClient, external_id: str, mid: str, text: str) -> dict[str, Any]:
    return await ingest(client, external_id=external_id, channel_message_id=mid, text=text)


# -- one customer's stream ---------------------------------------------------------------


async def test_every_change_arrives_as_a_typed_event_with_an_id(client: TestClient) -> None:
    cid = await customer(client)
    stream = await open_stream(client, f"/v1/customers/{cid}/events")

    said = await say(client, "visitor-1", "m-2", "where is order 4417?")
    event = await stream.next()
    assert event["event"] == "message"
    assert event["data"]["type"] == "message"
    assert event["data"]["customer_id"] == cid
    assert event["data"]["id"] == event["id"]
    assert event["data"]["data"]["id"] == said["id"]
    assert event["data"]["data"]["direction"] == "inbound"
    assert event["data"]["data"]["text"] == "where is order 4417?"
    assert stream.retry is not None  # the client is told how soon to come back

    response = await client.patch(
        f"/v1/customers/{cid}/facts", json={"facts": {"order_id": {"value": "4417"}}}, headers=BOT
    )
    assert response.status == 200
    fact = await stream.next()
    assert fact["event"] == "fact"
    assert fact["data"]["data"]["facts"]["order_id"]["value"] == "4417"

    cart = await client.get(f"/v1/customers/{cid}/cart", headers=BOT)
    body = {"items": [{"sku": "SHOE-42", "quantity": 1, "unit_price": 8900, "currency": "EUR"}],
            "stage": "cart"}  # fmt: skip
    put = await client.put(
        f"/v1/customers/{cid}/cart",
        json=body,
        headers={**BOT, "If-Match": cart.headers["ETag"]},
    )
    assert put.status == 200
    cart_event = await stream.until("cart")
    assert cart_event["data"]["data"]["cart"]["totals"]["subtotal"] == 8900

    profile = await client.patch(
        f"/v1/customers/{cid}/profile", json={"name": "Ana Silva"}, headers=AGENT
    )
    assert profile.status == 200
    assert (await stream.until("profile"))["data"]["data"]["profile"]["name"] == "Ana Silva"

    reply = await client.post(
        f"/v1/customers/{cid}/messages", json={"text": "It ships today."}, headers=AGENT
    )
    assert reply.status == 202
    out = await stream.until("message")
    assert out["data"]["data"]["direction"] == "outbound"
    assert out["data"]["data"]["status"]["state"] == "queued"

    handoff = await client.post(f"/v1/customers/{cid}/handoff", json={"to": "agent"}, headers=AGENT)
    assert handoff.status == 200
    held = await stream.until("handoff")
    assert held["data"]["data"]["assignee"]["id"] == "test agent"

    ids = [event["id"], fact["id"], cart_event["id"], out["id"], held["id"]]
    assert ids == sorted(ids, key=lambda i: tuple(int(p) for p in i.split("-")))
    assert len(set(ids)) == len(ids)


async def test_the_delivery_status_follows_the_reply(
    aiohttp_client: Any, redis_url: str, redis: Redis
) -> None:
    settings = make_settings(redis_url, outbox={"in_process_worker": True, "block_ms": 50})
    client = await aiohttp_client(create_app(settings))
    first = await ingest(client, channel="email", external_id="ana@example.com")
    cid = first["customer_id"]
    stream = await open_stream(client, f"/v1/customers/{cid}/events")
    reply = await client.post(
        f"/v1/customers/{cid}/messages", json={"text": "Hello"}, headers=AGENT
    )
    sent = await reply.json()
    queued = await stream.until("message")
    assert queued["data"]["data"]["status"]["state"] == "queued"
    status = await stream.until("message.status")
    # Nothing sends on email here: the worker says so on the message, and the agent sees it.
    assert status["data"]["data"]["id"] == sent["id"]
    assert status["data"]["data"]["state"] == "failed"
    assert "email" in status["data"]["data"]["reason"]


async def test_reconnecting_with_last_event_id_gets_what_was_missed_in_order_then_live(
    client: TestClient,
) -> None:
    cid = await customer(client)
    stream = await open_stream(client, f"/v1/customers/{cid}/events")
    await say(client, "visitor-1", "m-1", "one")
    seen = await stream.next()
    stream.response.close()  # the agent's laptop loses its connection

    for index in range(2, 7):
        await say(client, "visitor-1", f"m-{index}", f"missed {index}")

    again = await open_stream(
        client, f"/v1/customers/{cid}/events", headers={**AGENT, "Last-Event-ID": seen["id"]}
    )
    replayed = [await again.next() for _ in range(5)]
    assert [e["data"]["data"]["text"] for e in replayed] == [f"missed {i}" for i in range(2, 7)]
    await say(client, "visitor-1", "m-7", "live again")
    live = await again.next()
    assert live["data"]["data"]["text"] == "live again"
    ids = [seen["id"], *(e["id"] for e in replayed), live["id"]]
    assert len(set(ids)) == len(ids)

    # The same through the query parameter, for a client that cannot set the header.
    third = await open_stream(
        client, f"/v1/customers/{cid}/events", last_event_id=replayed[-1]["id"]
    )
    assert (await third.next())["id"] == live["id"]


async def test_events_published_while_replaying_are_neither_lost_nor_repeated(
    client: TestClient,
) -> None:
    cid = await customer(client)
    start = await open_stream(client, f"/v1/customers/{cid}/events")
    await say(client, "visitor-1", "m-0", "before")
    first = await start.next()
    start.response.close()
    for index in range(1, 300):  # more than one replay page
        await say(client, "visitor-1", f"m-{index}", f"text {index}")

    again = await open_stream(
        client, f"/v1/customers/{cid}/events", headers={**AGENT, "Last-Event-ID": first["id"]}
    )
    writer = asyncio.create_task(_say_many(client, range(300, 340)))
    texts = [(await again.next())["data"]["data"]["text"] for _ in range(339)]
    await writer
    assert texts == [f"text {i}" for i in range(1, 340)]


async def _say_many(client: TestClient, indexes: range) -> None:
    for index in indexes:
        await say(client, "visitor-1", f"m-{index}", f"text {index}")


async def test_a_last_event_id_no_longer_kept_gets_a_reset_first(
    client: TestClient, redis: Redis
) -> None:
    cid = await customer(client)
    stream = await open_stream(client, f"/v1/customers/{cid}/events")
    await say(client, "visitor-1", "m-1", "old")
    old = await stream.next()
    stream.response.close()
    for index in range(2, 5):
        await say(client, "visitor-1", f"m-{index}", f"new {index}")
    await redis.xtrim(keys.events(cid), maxlen=2, approximate=False)  # as capping does in time

    again = await open_stream(
        client, f"/v1/customers/{cid}/events", headers={**AGENT, "Last-Event-ID": old["id"]}
    )
    reset = await again.next()
    assert reset["event"] == "reset"
    assert [(await again.next())["data"]["data"]["text"] for _ in range(2)] == ["new 3", "new 4"]


async def test_the_team_inbox_streams_every_customer(client: TestClient) -> None:
    stream = await open_stream(client, "/v1/events")
    ana = await say(client, "ana", "a-1", "hello from ana")
    bob = await say(client, "bob", "b-1", "hello from bob")
    first, second = await stream.next(), await stream.next()
    assert [first["data"]["customer_id"], second["data"]["customer_id"]] == [
        ana["customer_id"],
        bob["customer_id"],
    ]
    stream.response.close()
    await say(client, "ana", "a-2", "missed")
    again = await open_stream(
        client, "/v1/events", headers={**AGENT, "Last-Event-ID": second["id"]}
    )
    assert (await again.next())["data"]["data"]["text"] == "missed"


# -- several processes --------------------------------------------------------------------


async def test_two_omni_processes_on_one_redis_both_deliver_an_event(
    aiohttp_client: Any, settings: Settings, redis: Redis
) -> None:
    one = await aiohttp_client(create_app(settings))
    two = await aiohttp_client(create_app(settings))
    cid = await customer(one)
    on_one = await open_stream(one, f"/v1/customers/{cid}/events")
    on_two = await open_stream(two, f"/v1/customers/{cid}/events")
    everyone_on_two = await open_stream(two, "/v1/events")

    said = await say(one, "visitor-1", "m-2", "written through process one")
    for stream in (on_one, on_two, everyone_on_two):
        event = await stream.next()
        assert event["data"]["data"]["id"] == said["id"]
    # The ids are the stream's, not a process's: both processes name the event alike.
    back = await say(two, "visitor-1", "m-3", "and through process two")
    a, b = await on_one.next(), await on_two.next()
    assert a["id"] == b["id"]
    assert a["data"]["data"]["id"] == back["id"]


async def test_an_event_is_heard_when_its_stream_is_written_late_on_another_node(
    redis: Redis,
) -> None:
    # On a cluster, the customer's stream and its doorbell's shard channel are on two
    # nodes: a pipeline does not order them. The stream's node is held up (its writes
    # paused): a doorbell rung before the event is in would be heard, the stream read
    # empty, and the event then written with no bell left to say so.
    live = Live(redis, shards=8)
    running = asyncio.create_task(live.run())
    try:
        await asyncio.wait_for(live.wait_ready(), 10)
        cid, stream_port = await _split_customer(redis, 8)
        with live.listen(cid) as listener:
            await listener.started()
            async with primaries(redis) as nodes:
                [held] = [n for n in nodes if stream_port is None or _port(n) == stream_port]
                await held.client_pause(300, all=False)  # writes wait 0.3 s; reads go on
                await live.publish(cid, "note", {"n": 1})
            event = await listener.next(idle_s=5)
        assert (event.type, event.data) == ("note", {"n": 1})
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)


async def test_live_events_stop_at_one_cancellation_even_while_subscribing(redis: Redis) -> None:
    # A server stopped just after it started (a deploy, a test) cancels its listener
    # while it connects and subscribes, where redis-py can lose a cancellation: the
    # listener must stop anyway, not wait for doorbells until cancelled again.
    for turns in range(12):
        live = Live(redis, shards=8)
        running = asyncio.create_task(live.run())
        for _ in range(turns):
            await asyncio.sleep(0)
        running.cancel()
        await asyncio.wait([running], timeout=5)
        assert running.done(), f"still listening after a cancel at turn {turns}"
        running.cancel()  # (had it not stopped: so the test ends)
        await asyncio.gather(running, return_exceptions=True)


async def _split_customer(redis: Redis, shards: int) -> tuple[str, int | None]:
    """A customer whose event stream is on another node than its doorbell's channel
    (any on one server), and the port of its stream's node (None on one server)."""
    if not isinstance(redis, RedisCluster):
        return "cus_late", None
    await redis.initialize()
    for n in range(1000):
        cid = f"cus_late{n}"
        stream = redis.get_node_from_key(keys.events(cid))
        bell = redis.get_node_from_key(keys.live_shard(keys.shard_of(cid, shards)))
        if stream is not None and bell is not None and stream.port != bell.port:
            return cid, int(stream.port)
    raise AssertionError("every customer's stream is on its doorbell's node")


def _port(node: Redis) -> int:
    return int(node.connection_pool.connection_kwargs["port"])


# -- slow and dead clients ----------------------------------------------------------------


async def test_a_client_that_never_reads_is_dropped_and_does_not_stall_ingest(
    client: TestClient,
) -> None:
    cid = await customer(client)
    reader = await open_stream(client, f"/v1/customers/{cid}/events")  # this one keeps up
    stuck = await _never_reading(client, f"/v1/customers/{cid}/events")
    # Big events fill the stuck client's socket buffers sooner.
    pictures = [{"type": "image", "url": f"https://cdn.example.com/{i}/{'p' * 2000}.jpg"}
                for i in range(10)]  # fmt: skip
    try:
        count = 0
        while count % 25 or not await _dropped(client):
            count += 1
            await ingest(client, channel_message_id=f"m-{count}", text=f"{count} {'ab ' * 1300}",
                         attachments=pictures)  # fmt: skip
            event = await reader.next()
            assert event["data"]["data"]["text"].startswith(f"{count} ")
            assert count < 5000, "the stuck client was never dropped"
        # Ingest went on the whole time, and goes on.
        await say(client, "visitor-1", "after", "still taken")
        assert (await reader.next())["data"]["data"]["text"] == "still taken"
    finally:
        stuck.close()


async def _never_reading(client: TestClient, path: str) -> socket.socket:
    """An SSE request from a client whose socket buffer is tiny and never read."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, (client.host, client.port))
    token = AGENT["Authorization"]
    request = f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {token}\r\n\r\n"
    await loop.sock_sendall(sock, request.encode())

    async def listening() -> bool:
        return await _listeners(client) >= 2

    await until(listening)
    return sock


async def _metrics(client: TestClient) -> dict[str, float]:
    response = await client.get("/metrics", headers=AGENT)
    assert response.status == 200
    values = {}
    for line in (await response.text()).splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


async def _dropped(client: TestClient) -> bool:
    return (await _metrics(client))["omni_live_listeners_dropped_total"] >= 1


async def _listeners(client: TestClient) -> float:
    return (await _metrics(client))["omni_live_listeners"]


# -- who may listen -------------------------------------------------------------------------


async def test_a_browser_opens_the_stream_with_a_short_lived_token(client: TestClient) -> None:
    cid = await customer(client)
    response = await client.get("/v1/events/token", headers=AGENT)
    assert response.status == 200
    assert response.headers["Cache-Control"] == "no-store"
    body = await response.json()
    assert body["name"] == "test agent"
    assert body["role"] == "agent"
    assert body["expires_in"] == TOKEN_TTL_S
    assert "test-agent-key" not in body["token"]  # the key itself never goes in a URL

    stream = await open_stream(
        client, f"/v1/customers/{cid}/events", {}, access_token=body["token"]
    )
    said = await say(client, "visitor-1", "m-2", "seen in the browser")
    assert (await stream.next())["data"]["data"]["id"] == said["id"]
    everyone = await open_stream(client, "/v1/events", {}, access_token=body["token"])
    await say(client, "visitor-1", "m-3", "and in the inbox")
    assert (await everyone.next())["data"]["data"]["text"] == "and in the inbox"


async def test_tokens_open_only_the_event_streams_and_only_while_fresh(
    client: TestClient, settings: Settings
) -> None:
    cid = await customer(client)
    agent = next(k for k in settings.api_keys if k.role == "agent")
    bot = next(k for k in settings.api_keys if k.role == "bot")
    fresh, _ = mint(agent, time.time())
    stale, _ = mint(agent, time.time() - TOKEN_TTL_S - 5)
    forged = fresh[:-1] + ("0" if fresh[-1] != "0" else "1")
    for token in (stale, forged, "nonsense", "a.b.c", "", fresh + "x"):
        response = await client.get(f"/v1/customers/{cid}/events", params={"access_token": token})
        assert response.status == 401, token
        assert response.content_type == "application/problem+json"
    # Not a key anywhere else.
    other = await client.get(f"/v1/customers/{cid}/context", params={"access_token": fresh})
    assert other.status == 401
    # A token carries its key's role: a bot's token opens no agent stream.
    bot_token, _ = mint(bot, time.time())
    forbidden = await client.get("/v1/events", params={"access_token": bot_token})
    assert forbidden.status == 403
    assert (await client.get("/v1/events/token", headers=BOT)).status == 403


async def test_bad_requests_are_refused_before_the_stream_starts(client: TestClient) -> None:
    cid = await customer(client)
    for value in ("yesterday", "12", "1-2-3", "-1-0"):
        response = await client.get(
            f"/v1/customers/{cid}/events", headers={**AGENT, "Last-Event-ID": value}
        )
        assert response.status == 400, value
        assert (await response.json())["field"] == "Last-Event-ID"
    unknown = await client.get("/v1/customers/cus_01JAAAAAAAAAAAAAAAAAAAAAAA/events", headers=AGENT)
    assert unknown.status == 404
    assert (await client.get("/v1/customers/nope/events", headers=ADMIN)).status == 404
    assert (await client.get(f"/v1/customers/{cid}/events", headers=BOT)).status == 403
    assert (await client.get(f"/v1/customers/{cid}/events")).status == 401


# -- shutdown --------------------------------------------------------------------------------


@pytest.fixture
async def served(settings: Settings, redis: Redis) -> AsyncIterator[TestServer]:
    server = TestServer(create_app(settings))
    await server.start_server()
    try:
        yield server
    finally:
        await server.close()


async def test_open_streams_end_when_the_server_shuts_down(served: TestServer) -> None:
    url = served.make_url("/v1/events")
    async with aiohttp.ClientSession() as session, session.get(url, headers=AGENT) as response:
        assert response.status == 200
        closing = asyncio.create_task(served.close())
        async with asyncio.timeout(GUARD_S):
            while await response.content.readline():
                pass  # the stream ends instead of holding the shutdown up
        await closing
