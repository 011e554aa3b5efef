"""Rate limits ([limits] per_key, per_identity, window_s) across processes, and the
per-process in-flight limit ([limits] max_in_flight, omni.overload) as /metrics counts it."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from omni.app import create_app
from omni.overload import LOAD
from omni.twilio import signature as twilio_signature
from tests.adapters.test_email import BASIC as POSTMARK_BASIC
from tests.adapters.test_instagram import signature
from tests.conftest import AGENT, BOT, ingest
from tests.everything import full_settings
from tests.test_channel_sms import ACCOUNT as SMS_ACCOUNT
from tests.test_channel_voice import PUBLIC, TOKEN
from tests.test_channel_web import PAGE
from tests.whatsapp_graph import change as whatsapp_change
from tests.whatsapp_graph import signature as whatsapp_signature

PROBLEM = "application/problem+json"


async def test_an_api_key_over_its_limit_gets_429_with_retry_after_in_every_process(
    aiohttp_client: Any, redis_url: str, redis: Redis
) -> None:
    settings = full_settings(redis_url, limits={"per_key": 5, "window_s": 3600})
    # Two apps on one Redis: two omni processes share the count.
    first = await aiohttp_client(create_app(settings))
    second = await aiohttp_client(create_app(settings))
    cid = (await ingest(first))["customer_id"]
    statuses = []
    for n in range(6):
        app = first if n % 2 else second
        answer = await app.get(f"/v1/customers/{cid}/context", headers=BOT)
        statuses.append(answer.status)
    assert statuses == [200, 200, 200, 200, 429, 429]  # the ingest was the first of 5
    assert answer.content_type == PROBLEM
    assert 1 <= int(answer.headers["Retry-After"]) <= 3600
    # Another key is not held back by this one.
    assert (await first.get("/v1/deliveries/dead", headers=AGENT)).status == 200
    metrics = await (await first.get("/metrics", headers=AGENT)).text()
    assert 'omni_rate_limited_total{kind="key"} 2' in metrics


def _webhook(*messages: tuple[str, int]) -> bytes:
    events = [
        {
            "sender": {"id": sender},
            "recipient": {"id": "17841400000000001"},
            "timestamp": 1_767_225_600_000 + n,
            "message": {"mid": f"mid-{sender}-{n}", "text": f"message {n}"},
        }
        for sender, n in messages
    ]
    body = {"object": "instagram", "entry": [{"id": "17841400000000001", "time": 1,
                                               "messaging": events}]}  # fmt: skip
    return json.dumps(body).encode()


async def test_a_flooding_instagram_sender_does_not_starve_the_others(
    aiohttp_client: Any, redis_url: str, redis: Redis
) -> None:
    settings = full_settings(redis_url, limits={"per_identity": 3, "window_s": 3600})
    app = await aiohttp_client(create_app(settings))

    async def send(*messages: tuple[str, int]) -> int:
        body = _webhook(*messages)
        answer = await app.post(
            "/channels/instagram/webhook",
            data=body,
            headers={"Content-Type": "application/json", "X-Hub-Signature-256": signature(body)},
        )
        return answer.status

    flooder, other = "1180000000000666", "1180000000000001"
    assert [await send((flooder, n)) for n in range(5)] == [200, 200, 200, 429, 429]
    # One notification with both senders: the other's message is stored at once, the
    # flooder's waits for Meta's redelivery (429), which finds the first one stored.
    assert await send((flooder, 5), (other, 0)) == 429
    assert await _texts(app, other) == ["message 0"]
    assert await _texts(app, flooder) == ["message 0", "message 1", "message 2"]
    metrics = await (await app.get("/metrics", headers=AGENT)).text()
    assert 'omni_rate_limited_total{kind="identity"} 3' in metrics


async def _customer(app: TestClient, sender: str, channel: str) -> str:
    context = await app.get(
        "/v1/context", params={"channel": channel, "external_id": sender}, headers=AGENT
    )
    cid: str = (await context.json())["customer"]["id"]
    return cid


async def _texts(app: TestClient, sender: str, channel: str = "instagram") -> list[str]:
    cid = await _customer(app, sender, channel)
    history = await app.get(f"/v1/customers/{cid}/history", headers=AGENT)
    return sorted(m["text"] for m in (await history.json())["messages"])


async def test_a_web_session_over_its_limit_gets_429(
    aiohttp_client: Any, redis_url: str, redis: Redis
) -> None:
    settings = full_settings(redis_url, limits={"per_identity": 2, "window_s": 3600})
    app = await aiohttp_client(create_app(settings))
    tokens = []
    for _ in range(2):
        started = await app.post("/channels/web/sessions", json={})
        tokens.append((await started.json())["token"])
    statuses = []
    for n in range(3):
        answer = await app.post(
            "/channels/web/messages",
            json={"client_msg_id": f"c-{n}", "text": "hi"},
            headers={"Authorization": f"Bearer {tokens[0]}"},
        )
        statuses.append(answer.status)
    assert statuses == [201, 201, 429]
    assert answer.content_type == PROBLEM and "Retry-After" in answer.headers
    other = await app.post(
        "/channels/web/messages",
        json={"client_msg_id": "c-0", "text": "hi"},
        headers={"Authorization": f"Bearer {tokens[1]}"},
    )
    assert other.status == 201


async def test_requests_shed_at_the_in_flight_limit_are_counted_in_metrics(
    aiohttp_client: Any, redis_url: str, redis: Redis
) -> None:
    settings = full_settings(redis_url, limits={"max_in_flight": 2})
    app = create_app(settings)
    release = asyncio.Event()
    entered = asyncio.Semaphore(0)

    async def slow(request: web.Request) -> web.Response:
        entered.release()
        await release.wait()
        return web.Response(text="done")

    app.router.add_get("/slow", slow)
    client: TestClient = await aiohttp_client(app)
    held = [asyncio.create_task(client.get("/slow")) for _ in range(2)]
    for _ in range(2):
        await entered.acquire()
    shed = await client.get("/slow")
    assert shed.status == 503 and shed.content_type == PROBLEM
    assert shed.headers["Retry-After"] == "1"
    assert (await client.get("/healthz")).status == 200  # never shed
    metrics = await (await client.get("/metrics", headers=AGENT)).text()
    assert "omni_requests_shed_total 1" in metrics
    assert "omni_requests_in_flight 2" in metrics
    release.set()
    assert [(await t).status for t in held] == [200, 200]
    assert client.app[LOAD].current == 0


async def test_a_socket_over_its_senders_limit_gets_a_429_frame_and_stays_open(
    aiohttp_client: Any, redis_url: str, redis: Redis
) -> None:
    settings = full_settings(redis_url, limits={"per_identity": 2, "window_s": 3600})
    app = await aiohttp_client(create_app(settings))
    started = await app.post("/channels/web/sessions", json={})
    token = (await started.json())["token"]
    answers = []
    async with app.ws_connect(
        "/channels/web/ws", params={"token": token}, headers={"Origin": PAGE}
    ) as ws:
        for n in range(3):
            await ws.send_str(json.dumps({"type": "message", "client_msg_id": f"s-{n}",
                                          "text": "hi"}))  # fmt: skip
            while True:
                frame = json.loads(await ws.receive_str(timeout=5))
                if frame["type"] in ("ack", "error"):
                    answers.append((frame["type"], frame.get("status")))
                    break
        assert not ws.closed
    assert answers == [("ack", None), ("ack", None), ("error", 429)]


def _whatsapp(*messages: tuple[str, int]) -> bytes:
    items = [{"from": sender, "id": f"wamid.{sender}.{n}", "timestamp": "1767225900",
              "type": "text", "text": {"body": f"message {n}"}}
             for sender, n in messages]  # fmt: skip
    contacts = [{"profile": {"name": "Someone"}, "wa_id": sender} for sender, _ in messages]
    return whatsapp_change({"contacts": contacts, "messages": items})


async def test_a_flooding_whatsapp_sender_does_not_starve_the_others(
    aiohttp_client: Any, redis_url: str, redis: Redis
) -> None:
    settings = full_settings(redis_url, limits={"per_identity": 3, "window_s": 3600})
    app = await aiohttp_client(create_app(settings))

    async def send(*messages: tuple[str, int]) -> int:
        body = _whatsapp(*messages)
        answer = await app.post(
            "/channels/whatsapp/webhook",
            data=body,
            headers={"Content-Type": "application/json",
                     "X-Hub-Signature-256": whatsapp_signature(body)},
        )  # fmt: skip
        return answer.status

    flooder, other = "14155550666", "14155550123"
    assert [await send((flooder, n)) for n in range(5)] == [200, 200, 200, 429, 429]
    assert await send((flooder, 5), (other, 0)) == 429  # the other's is stored at once
    assert await _texts(app, other, "whatsapp") == ["message 0"]
    assert await _texts(app, flooder, "whatsapp") == ["message 0", "message 1", "message 2"]


async def test_a_flooding_mail_sender_gets_429_and_the_others_are_stored(
    aiohttp_client: Any, redis_url: str, redis: Redis
) -> None:
    settings = full_settings(redis_url, limits={"per_identity": 2, "window_s": 3600})
    app = await aiohttp_client(create_app(settings))

    async def mail(sender: str, n: int) -> int:
        body = json.dumps({"From": sender, "FromFull": {"Email": sender, "Name": ""},
                           "To": "support@omni.example.com", "Subject": f"n{n}",
                           "MessageID": f"pm-{sender}-{n}", "TextBody": f"message {n}",
                           "Headers": [{"Name": "Message-ID",
                                        "Value": f"<{n}.{sender}>"}]})  # fmt: skip
        headers = {"Content-Type": "application/json", "Authorization": POSTMARK_BASIC}
        return (await app.post("/channels/email/inbound", data=body, headers=headers)).status

    flooder, other = "flood@example.net", "dana@example.net"
    # Postmark retries a 429 later; the flooder's third mail waits for that retry.
    assert [await mail(flooder, n) for n in range(3)] == [200, 200, 429]
    assert await mail(other, 0) == 200
    assert await _texts(app, other, "email") == ["message 0"]
    assert len(await _texts(app, flooder, "email")) == 2


async def test_a_flooding_sms_number_is_stored_but_wakes_no_bot(
    aiohttp_client: Any, redis_url: str, redis: Redis
) -> None:
    bots = {"sms": {"url": "http://127.0.0.1:9/sms-bot", "secret": "sms-bot-secret-00001"}}
    settings = full_settings(redis_url, limits={"per_identity": 2, "window_s": 3600}, bots=bots)
    app = await aiohttp_client(create_app(settings))
    number = "+14155550123"
    for n in range(3):
        params = [("MessageSid", f"SM{n:032d}"), ("AccountSid", SMS_ACCOUNT),
                  ("From", number), ("To", "+14155550199"), ("Body", f"message {n}"),
                  ("NumMedia", "0")]  # fmt: skip
        url = PUBLIC + "/channels/sms/twilio"
        headers = {"Content-Type": "application/x-www-form-urlencoded",
                   "X-Twilio-Signature": twilio_signature(TOKEN, url, params)}  # fmt: skip
        answer = await app.post("/channels/sms/twilio", data=urlencode(params), headers=headers)
        assert answer.status == 200  # Twilio would not redeliver a refusal: nothing is lost
    assert await _texts(app, number, "sms") == ["message 0", "message 1", "message 2"]
    cid = await _customer(app, number, "sms")
    deliveries = await app.get(f"/v1/customers/{cid}/deliveries", headers=AGENT)
    assert [d["kind"] for d in (await deliveries.json())["items"]] == ["bot", "bot"]


async def test_reads_over_the_key_limit_get_429_before_any_other_answer(
    aiohttp_client: Any, redis_url: str, redis: Redis
) -> None:
    # Context and history send their hit with their first read (omni.auth.reads_only):
    # over the limit, they still answer 429, not what they read (a 404 included), and a
    # context ?ask= (which counts the facts it finds) is refused before it counts.
    settings = full_settings(redis_url, limits={"per_key": 4, "window_s": 3600})
    app = await aiohttp_client(create_app(settings))
    cid = (await ingest(app))["customer_id"]
    await app.patch(
        f"/v1/customers/{cid}/facts", json={"facts": {"email": {"value": "a@b.example"}}},
        headers=BOT,
    )  # fmt: skip
    assert (await app.get(f"/v1/customers/{cid}/history", headers=BOT)).status == 200
    assert (await app.get("/v1/customers/cus_nobody/history", headers=BOT)).status == 404
    over = [
        await app.get(f"/v1/customers/{cid}/history", headers=BOT),
        await app.get("/v1/customers/cus_nobody/context", headers=BOT),
        await app.get(f"/v1/customers/{cid}/context", params={"ask": "email"}, headers=BOT),
    ]
    assert [answer.status for answer in over] == [429, 429, 429]
    assert all(answer.content_type == PROBLEM for answer in over)
    metrics = await (await app.get("/metrics", headers=AGENT)).text()
    assert 'omni_rate_limited_total{kind="key"} 3' in metrics
    # Another key reads the context: the refused ask counted no answered question.
    context = await (await app.get(f"/v1/customers/{cid}/context", headers=AGENT)).json()
    assert context["continuity"]["answered_for_bot"] == 0
    asked = await app.get(f"/v1/customers/{cid}/context", params={"ask": "email"}, headers=AGENT)
    assert asked.status == 200
    context = await (await app.get(f"/v1/customers/{cid}/context", headers=AGENT)).json()
    assert context["continuity"]["answered_for_bot"] == 1
