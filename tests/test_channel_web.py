"""The web chat channel through the real app: anonymous sessions, login (identify) with
its HMAC, messages in (idempotent, through the bot), replies out over the WebSocket,
catch-up after a reconnect, CORS and the Origin check, and bad input of every kind."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

import adapters.web as web_channel
from adapters.chat.sessions import IdentityVerifier
from adapters.web import config as web_config
from omni.app import create_app
from omni.errors import ConfigError
from omni.settings import Settings
from omni.store import Store
from tests.adapters.test_web import IDENTIFY, SIG
from tests.conftest import AGENT, BOT, ingest, make_settings, snapshot
from tests.test_bots import SECRET, BotReceiver, ServerFactory, serve
from tests.test_worker import until

USER = SIG["identifier"]  # cust_000123
PAGE = "https://shop.example.com"
WEB = {
    "session_secret": "web-session-secret-for-tests-0123456789",
    "identity_secret": SIG["identity_secret"],
    "allowed_origins": [PAGE, "http://127.0.0.1:8080"],
}
FAST = {"in_process_worker": True, "block_ms": 50, "base_delay_ms": 5, "max_delay_ms": 20}
Json = dict[str, Any]


def web_settings(redis_url: str, **sections: Any) -> Settings:
    return make_settings(redis_url, web=WEB, **sections)


@pytest.fixture
async def chat(aiohttp_client: Any, redis_url: str, redis: Redis) -> TestClient:
    """The app with the web channel (no worker: a rejected request writes nothing at all)."""
    return await aiohttp_client(create_app(web_settings(redis_url)))


@pytest.fixture
async def worked(aiohttp_client: Any, redis_url: str, redis: Redis) -> TestClient:
    """The app with the web channel and a delivery worker, for replies' statuses."""
    return await aiohttp_client(create_app(web_settings(redis_url, outbox=FAST)))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def start(client: TestClient) -> Json:
    response = await client.post("/channels/web/sessions", json={})
    assert response.status == 201, await response.text()
    body: Json = await response.json()
    return body


async def say(client: TestClient, token: str, client_msg_id: str, text: str) -> Json:
    body = {"client_msg_id": client_msg_id, "text": text}
    response = await client.post("/channels/web/messages", json=body, headers=bearer(token))
    assert response.status in (200, 201), await response.text()
    ack: Json = await response.json()
    return ack


def login_body(visitor_id: str | None, user: str = USER, user_hash: str | None = None) -> Json:
    body = dict(IDENTIFY, identifier=user, identifier_hash=user_hash or SIG["identifier_hash"])
    if visitor_id is None:
        body.pop("anonymous_id")
    else:
        body["anonymous_id"] = visitor_id
    return body


async def identify(client: TestClient, session: Json, user: str = USER) -> Json:
    user_hash = IdentityVerifier(SIG["identity_secret"]).user_hash(user)
    response = await client.post(
        "/channels/web/sessions",
        json=login_body(session["visitor_id"], user, user_hash),
        headers=bearer(session["token"]),
    )
    assert response.status == 200, await response.text()
    body: Json = await response.json()
    return body


async def customer_of(client: TestClient, external_id: str) -> Json:
    response = await client.get(
        "/v1/context", params={"channel": "web", "external_id": external_id}, headers=BOT
    )
    assert response.status == 200, await response.text()
    context: Json = await response.json()
    return context


async def history(client: TestClient, cid: str) -> list[Json]:
    response = await client.get(f"/v1/customers/{cid}/history", headers=AGENT)
    assert response.status == 200, await response.text()
    messages: list[Json] = (await response.json())["messages"]
    return messages


async def reply(client: TestClient, cid: str, text: str) -> Json:
    response = await client.post(
        f"/v1/customers/{cid}/messages", json={"text": text, "channel": "web"}, headers=AGENT
    )
    assert response.status == 202, await response.text()
    body: Json = await response.json()
    return body


async def socket(
    client: TestClient, token: str, origin: str = PAGE
) -> aiohttp.ClientWebSocketResponse:
    return await client.ws_connect(
        "/channels/web/ws", params={"token": token}, headers={"Origin": origin}
    )


async def frame(ws: aiohttp.ClientWebSocketResponse, kind: str = "message") -> Json:
    """The next frame of `kind` (others, like acks of earlier sends, are skipped)."""
    while True:
        received: Json = await ws.receive_json(timeout=5)
        if received["type"] == kind:
            return received


# -- sessions and messages ------------------------------------------------------------------


async def test_an_anonymous_visitor_chats_and_the_message_is_stored(chat: TestClient) -> None:
    session = await start(chat)
    assert session["visitor_id"].startswith("vis_")
    assert session["external_id"] == session["visitor_id"]
    ack = await say(chat, session["token"], "c-1", "Do you have the trail shoe in 42?")
    assert ack["type"] == "ack" and ack["client_msg_id"] == "c-1"
    context = await customer_of(chat, session["visitor_id"])
    (message,) = context["recent_messages"]
    assert message["id"] == ack["id"]
    assert (message["channel"], message["direction"]) == ("web", "inbound")
    assert message["text"] == "Do you have the trail shoe in 42?"
    assert message["channel_message_id"] == "c-1"


async def test_a_retried_send_gets_the_same_id_and_is_stored_once(chat: TestClient) -> None:
    session = await start(chat)
    body = {"client_msg_id": "c-7f3a-0001", "text": "Hi 👋 is anyone there?"}
    first = await chat.post("/channels/web/messages", json=body, headers=bearer(session["token"]))
    again = await chat.post("/channels/web/messages", json=body, headers=bearer(session["token"]))
    assert (first.status, again.status) == (201, 200)
    assert (await first.json())["id"] == (await again.json())["id"]
    context = await customer_of(chat, session["visitor_id"])
    assert len(await history(chat, context["customer"]["id"])) == 1


async def test_each_message_reaches_the_web_bot_once_and_its_answer_is_sent(
    aiohttp_client: Any, aiohttp_server: ServerFactory, redis_url: str, redis: Redis
) -> None:
    bot = BotReceiver()
    bot.default = (200, {"replies": [{"text": "Yes, size 42 is in stock."}]})
    settings = web_settings(
        redis_url,
        outbox=FAST,
        bots={"web": {"url": await serve(aiohttp_server, bot), "secret": SECRET}},
    )
    client = await aiohttp_client(create_app(settings))
    session = await start(client)
    ws = await socket(client, session["token"])
    ack = await say(client, session["token"], "c-1", "Trail shoe in 42?")
    await say(client, session["token"], "c-1", "Trail shoe in 42?")  # a retry
    assert (await frame(ws))["id"] == ack["id"]  # the customer's own, as other tabs see it
    answer = await frame(ws)
    assert (answer["from"], answer["text"]) == ("bot", "Yes, size 42 is in stock.")
    (delivered,) = bot.delivered.values()
    assert delivered["message"]["id"] == ack["id"]
    assert delivered["message"]["channel"] == "web"
    assert len(bot.attempts) == 1
    await ws.close()


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer not-a-token"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer " + "a" * 5000},
    ],
)
async def test_a_message_without_a_valid_session_is_401_and_stores_nothing(
    chat: TestClient, redis: Redis, headers: dict[str, str]
) -> None:
    before = await snapshot(redis)
    body = {"client_msg_id": "c-1", "text": "hi"}
    response = await chat.post("/channels/web/messages", json=body, headers=headers)
    assert response.status == 401
    assert response.content_type == "application/problem+json"
    assert await snapshot(redis) == before


async def test_a_token_from_another_secret_or_channel_is_401(
    aiohttp_client: Any, redis_url: str, redis: Redis
) -> None:
    from adapters.web.protocol import WebAdapter

    mobile = {"session_secret": WEB["session_secret"], "identity_secret": "app-secret"}
    client = await aiohttp_client(create_app(web_settings(redis_url, mobile=mobile)))
    forged = WebAdapter(session_secret="another-secret-of-at-least-32-bytes!", identity_secret="x")
    app_session = await (await client.post("/channels/mobile/sessions", json={})).json()
    before = await snapshot(redis)
    for token in (forged.issue_session("vis_01JH8Z3K9W2QX7M4T6R5B1C0DE"), app_session["token"]):
        response = await client.post(
            "/channels/web/messages",
            json={"client_msg_id": "c-1", "text": "hi"},
            headers=bearer(token),
        )
        assert response.status == 401
    assert await snapshot(redis) == before


BAD_MESSAGES: list[tuple[Any, int]] = [
    (b"not json", 400),
    (b"", 400),
    (b"[]", 422),
    ({}, 422),
    ({"text": "no client id"}, 422),
    ({"client_msg_id": "c-1"}, 422),
    ({"client_msg_id": "c-1", "text": "   "}, 422),
    ({"client_msg_id": "", "text": "hi"}, 422),
    ({"client_msg_id": "has space", "text": "hi"}, 422),
    ({"client_msg_id": "c-1", "text": "x" * 4097}, 422),
    ({"client_msg_id": "c-1", "text": 42}, 422),
    ({"client_msg_id": "c-1", "text": "hi", "attachments": [{"type": "hologram"}]}, 422),
    ({"client_msg_id": "c-1", "attachments": [{"type": "image", "url": "ftp://x"}]}, 422),
    ({"client_msg_id": "c-1", "text": "hi", "type": "typing"}, 422),
    ({"client_msg_id": "c-1", "text": "hi", "sent_at": "yesterday"}, 422),
]


@pytest.mark.parametrize(("body", "status"), BAD_MESSAGES)
async def test_malformed_messages_are_4xx_problems_and_store_nothing(
    chat: TestClient, redis: Redis, body: Any, status: int
) -> None:
    session = await start(chat)
    before = await snapshot(redis)
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = await chat.post(
        "/channels/web/messages",
        data=raw,
        headers={**bearer(session["token"]), "Content-Type": "application/json"},
    )
    assert response.status == status, await response.text()
    assert response.content_type == "application/problem+json"
    assert await snapshot(redis) == before


async def test_an_oversized_body_is_413(aiohttp_client: Any, redis_url: str, redis: Redis) -> None:
    settings = make_settings(redis_url, web=WEB, limits={"body_max": 2048})
    client = await aiohttp_client(create_app(settings))
    session = await start(client)
    body = {"client_msg_id": "c-1", "text": "x" * 4000}
    response = await client.post(
        "/channels/web/messages", json=body, headers=bearer(session["token"])
    )
    assert response.status == 413


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"{", 400),
        (b'"start"', 422),
        (json.dumps({"type": "logout"}).encode(), 422),
        (json.dumps({"type": "identify"}).encode(), 422),
        (json.dumps({"type": "renew"}).encode(), 401),
        (json.dumps({"type": "identify", "identifier": "", "identifier_hash": "ab"}).encode(), 422),
        (
            json.dumps(
                {
                    "type": "identify",
                    "identifier": USER,
                    "traits": {"email": "no"},
                    "identifier_hash": SIG["identifier_hash"],
                }
            ).encode(),
            422,
        ),
    ],
)
async def test_malformed_session_requests_are_4xx_and_write_nothing(
    chat: TestClient, redis: Redis, body: bytes, status: int
) -> None:
    before = await snapshot(redis)
    response = await chat.post(
        "/channels/web/sessions", data=body, headers={"Content-Type": "application/json"}
    )
    assert response.status == status, await response.text()
    assert response.content_type == "application/problem+json"
    assert await snapshot(redis) == before


async def test_an_unconfigured_web_channel_answers_404(client: TestClient) -> None:
    for method, path in (
        ("POST", "/channels/web/sessions"),
        ("POST", "/channels/web/messages"),
        ("GET", "/channels/web/messages"),
        ("GET", "/channels/web/ws"),
        ("OPTIONS", "/channels/web/sessions"),
    ):
        response = await client.request(method, path, headers={"Origin": PAGE})
        assert response.status == 404, (method, path)


# -- login ----------------------------------------------------------------------------------


async def test_login_of_a_new_user_keeps_the_visitors_history_on_one_customer(
    chat: TestClient,
) -> None:
    session = await start(chat)
    first = await say(chat, session["token"], "c-1", "I like the trail shoe")
    visitor = await customer_of(chat, session["visitor_id"])
    logged_in = await identify(chat, session)
    assert logged_in["user_id"] == USER
    assert logged_in["external_id"] == f"user:{USER}"
    assert logged_in["visitor_id"] == session["visitor_id"]
    second = await say(chat, logged_in["token"], "c-2", "Where is order 4417?")

    known = await customer_of(chat, f"user:{USER}")
    assert known["customer"]["id"] == visitor["customer"]["id"]
    identities = {(i["external_id"], i["verified"]) for i in known["customer"]["identities"]}
    assert (f"user:{USER}", True) in identities
    assert {first["id"], second["id"]} <= {m["id"] for m in known["recent_messages"]}
    # The traits are unverified claims: they fill the empty profile, verified stays false.
    profile = known["customer"]["profile"]
    assert (profile["name"], profile["email"], profile["email_verified"]) == (
        "Ana Souza",
        "ana@example.com",
        False,
    )


async def test_login_of_a_known_user_moves_the_session_and_the_history_joins(
    chat: TestClient,
) -> None:
    # The user chatted before, logged in, on another browser.
    earlier = await identify(chat, await start(chat))
    said = await say(chat, earlier["token"], "old-1", "Where is order 4417?")
    known_id = (await customer_of(chat, f"user:{USER}"))["customer"]["id"]
    # Today, anonymous at first, then logging in.
    today = await start(chat)
    anonymous = await say(chat, today["token"], "new-1", "Do you have it in blue?")
    anonymous_id = (await customer_of(chat, today["visitor_id"]))["customer"]["id"]
    assert anonymous_id != known_id
    logged_in = await identify(chat, today)
    after = await say(chat, logged_in["token"], "new-2", "And in 43?")

    timeline = {m["id"] for m in await history(chat, known_id)}
    assert {said["id"], anonymous["id"], after["id"]} <= timeline
    # The visitor's identity now answers with the known customer.
    assert (await customer_of(chat, today["visitor_id"]))["customer"]["id"] == known_id
    merged = await chat.get(f"/v1/customers/{anonymous_id}/context", headers=BOT)
    assert merged.status == 200
    assert (await merged.json())["customer"]["id"] == known_id
    # The join is in both records' audit logs: the web channel's, on a verified login.
    for cid, other in ((known_id, anonymous_id), (anonymous_id, known_id)):
        log = await (await chat.get(f"/v1/customers/{cid}/audit", headers=AGENT)).json()
        [entry] = log["entries"]
        assert (entry["action"], entry["other_customer_id"]) == ("join", other)
        assert entry["identity"] == {"channel": "web", "external_id": f"user:{USER}"}
        assert entry["actor"] == {"kind": "channel", "name": "web"}
        assert "verified login" in entry["evidence"]


@pytest.mark.parametrize(
    "case",
    ["another_users_hash", "no_hash", "hash_of_another_secret", "not_hex", "uppercase_id"],
)
async def test_an_unverified_identify_is_401_and_changes_nothing(
    chat: TestClient, redis: Redis, case: str
) -> None:
    session = await start(chat)
    await say(chat, session["token"], "c-1", "hello")
    bodies = {
        "another_users_hash": login_body(session["visitor_id"], "cust_000124"),
        "no_hash": {
            k: v for k, v in login_body(session["visitor_id"]).items() if k != "identifier_hash"
        },
        "hash_of_another_secret": login_body(
            session["visitor_id"], user_hash=IdentityVerifier("wrong").user_hash(USER)
        ),
        "not_hex": login_body(session["visitor_id"], user_hash="z" * 64),
        "uppercase_id": login_body(session["visitor_id"], USER.upper()),
    }
    before = await snapshot(redis)
    response = await chat.post(
        "/channels/web/sessions", json=bodies[case], headers=bearer(session["token"])
    )
    assert response.status == 401
    assert (await response.json())["field"] == "identifier_hash"
    assert await snapshot(redis) == before


async def test_identify_for_another_visitor_is_401(chat: TestClient, redis: Redis) -> None:
    session = await start(chat)
    before = await snapshot(redis)
    response = await chat.post(
        "/channels/web/sessions",
        json=login_body("vis_01JH8Z3K9W2QX7M4T6R5B1C0DE"),
        headers=bearer(session["token"]),
    )
    assert response.status == 401
    assert await snapshot(redis) == before


# -- the socket -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "origin", ["https://evil.example.net", "null", "http://shop.example.com", None]
)
async def test_a_socket_from_a_page_not_allowed_is_refused_before_upgrade(
    chat: TestClient, origin: str | None
) -> None:
    session = await start(chat)
    headers = {"Origin": origin} if origin else {}
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await chat.ws_connect(
            "/channels/web/ws", params={"token": session["token"]}, headers=headers
        )
    assert refused.value.status == 403


async def test_a_socket_without_a_valid_session_is_refused_before_upgrade(
    chat: TestClient, redis: Redis
) -> None:
    before = await snapshot(redis)
    for params in ({}, {"token": "forged"}):
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await chat.ws_connect("/channels/web/ws", params=params, headers={"Origin": PAGE})
        assert refused.value.status == 401
    plain = await chat.get(
        "/channels/web/ws", params={"token": (await start(chat))["token"]}, headers={"Origin": PAGE}
    )
    assert plain.status == 400  # not a WebSocket request
    assert await snapshot(redis) == before


async def test_an_agents_reply_arrives_on_the_socket_and_is_marked_delivered(
    worked: TestClient,
) -> None:
    session = await start(worked)
    await say(worked, session["token"], "c-1", "Where is order 4417?")
    cid = (await customer_of(worked, session["visitor_id"]))["customer"]["id"]
    ws = await socket(worked, session["token"])
    sent = await reply(worked, cid, "It ships today.")
    shown = await frame(ws)
    assert shown == {
        "type": "message",
        "id": sent["id"],
        "from": "agent",
        "name": "test agent",
        "text": "It ships today.",
    }

    async def delivered() -> bool:
        (latest, *_) = await history(worked, cid)
        return bool(latest["status"]["state"] == "delivered")

    await until(delivered)
    await ws.close()


async def test_the_socket_takes_messages_acks_them_once_and_shows_them_to_other_tabs(
    chat: TestClient,
) -> None:
    session = await start(chat)
    tab, other_tab = await socket(chat, session["token"]), await socket(chat, session["token"])
    send = {"type": "message", "client_msg_id": "c-7f3a-0001", "text": "Hi 👋"}
    await tab.send_json(send)
    ack = await frame(tab, "ack")
    assert ack["client_msg_id"] == "c-7f3a-0001"
    await tab.send_json(send)  # a retry after a reconnect
    assert (await frame(tab, "ack"))["id"] == ack["id"]
    echoed = await frame(other_tab)
    assert (echoed["id"], echoed["from"], echoed["client_msg_id"]) == (
        ack["id"],
        "customer",
        "c-7f3a-0001",
    )
    cid = (await customer_of(chat, session["visitor_id"]))["customer"]["id"]
    assert [m["id"] for m in await history(chat, cid)] == [ack["id"]]
    for ws in (tab, other_tab):
        await ws.close()


async def test_bad_frames_get_error_frames_and_the_socket_stays_open(chat: TestClient) -> None:
    session = await start(chat)
    ws = await socket(chat, session["token"])
    await ws.send_str("not json")
    assert (await frame(ws, "error"))["status"] == 400
    await ws.send_json({"type": "message", "client_msg_id": "c-9", "text": " "})
    error = await frame(ws, "error")
    assert (error["status"], error["field"], error["client_msg_id"]) == (422, "text", "c-9")
    await ws.send_json({"type": "subscribe"})
    assert (await frame(ws, "error"))["field"] == "type"
    await ws.send_bytes(b"\x00\x01")
    assert (await frame(ws, "error"))["status"] == 400
    await ws.send_json({"type": "ping"})
    assert await frame(ws, "pong") == {"type": "pong"}
    await ws.send_json({"type": "hello", "anonymous_id": "vis_SOMEONE_ELSE"})
    assert (await frame(ws, "error"))["status"] == 401
    closing = await ws.receive(timeout=5)
    assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == 4401


async def test_catch_up_after_a_reconnect(chat: TestClient) -> None:
    session = await start(chat)
    token = session["token"]
    first = await say(chat, token, "c-1", "Is it waterproof?")
    cid = (await customer_of(chat, session["visitor_id"]))["customer"]["id"]
    missed = [await reply(chat, cid, "Yes."), await reply(chat, cid, "Fully, to 1 m.")]

    response = await chat.get(
        "/channels/web/messages", params={"after": first["id"]}, headers=bearer(token)
    )
    assert response.status == 200
    page = await response.json()
    assert [m["id"] for m in page["messages"]] == [m["id"] for m in missed]
    assert [m["text"] for m in page["messages"]] == ["Yes.", "Fully, to 1 m."]
    assert (page["next_after"], page["has_more"]) == (missed[-1]["id"], False)

    one = await chat.get(
        "/channels/web/messages", params={"after": first["id"], "limit": "1"}, headers=bearer(token)
    )
    paged = await one.json()
    assert ([m["id"] for m in paged["messages"]], paged["has_more"]) == ([missed[0]["id"]], True)
    rest = await chat.get(
        "/channels/web/messages", params={"after": paged["next_after"]}, headers=bearer(token)
    )
    assert [m["id"] for m in (await rest.json())["messages"]] == [missed[1]["id"]]

    everything = await chat.get("/channels/web/messages", headers=bearer(token))
    assert [m["id"] for m in (await everything.json())["messages"]] == [
        first["id"],
        *[m["id"] for m in missed],
    ]

    # The socket does the same on hello: what came after the id the client last saw.
    ws = await socket(chat, token)
    await ws.send_json({"type": "hello", "resume_after": first["id"]})
    replayed = [await frame(ws), await frame(ws)]
    assert [m["id"] for m in replayed] == [m["id"] for m in missed]
    await ws.close()


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ({"after": "../../etc"}, 400),
        ({"after": "not-a-cursor"}, 400),
        ({"limit": "0"}, 400),
        ({"limit": "9999"}, 400),
        ({"limit": "ten"}, 400),
    ],
)
async def test_bad_catch_up_queries_are_400(
    chat: TestClient, query: dict[str, str], status: int
) -> None:
    session = await start(chat)
    await say(chat, session["token"], "c-1", "hi")
    response = await chat.get(
        "/channels/web/messages", params=query, headers=bearer(session["token"])
    )
    assert response.status == status
    assert (await response.json())["field"] in ("after", "limit")


async def test_catch_up_for_a_visitor_who_never_wrote_is_empty(chat: TestClient) -> None:
    session = await start(chat)
    response = await chat.get("/channels/web/messages", headers=bearer(session["token"]))
    assert await response.json() == {"messages": [], "next_after": None, "has_more": False}
    unknown = await chat.get(
        "/channels/web/messages",
        params={"after": "msg_01JH8Z4000000000000000000A"},
        headers=bearer(session["token"]),
    )
    assert (await unknown.json())["messages"] == []


async def test_a_read_watermark_marks_the_reply_read(chat: TestClient) -> None:
    session = await start(chat)
    await say(chat, session["token"], "c-1", "Any news?")
    cid = (await customer_of(chat, session["visitor_id"]))["customer"]["id"]
    ws = await socket(chat, session["token"])
    sent = await reply(chat, cid, "Shipped this morning.")
    await frame(ws)
    await ws.send_json({"type": "read", "up_to": sent["id"]})

    async def read() -> bool:
        (latest, *_) = await history(chat, cid)
        return latest.get("read_at") is not None

    await until(read)
    await ws.close()


async def test_a_socket_opened_before_the_first_message_still_gets_replies(
    chat: TestClient,
) -> None:
    session = await start(chat)
    ws = await socket(chat, session["token"])
    await say(chat, session["token"], "c-1", "Hello?")
    cid = (await customer_of(chat, session["visitor_id"]))["customer"]["id"]
    assert (await frame(ws))["client_msg_id"] == "c-1"  # its own message, from another tab
    sent = await reply(chat, cid, "Hi there!")
    assert (await frame(ws))["id"] == sent["id"]
    await ws.close()


# -- CORS -----------------------------------------------------------------------------------


async def test_cors_for_the_widgets_page(chat: TestClient) -> None:
    preflight = await chat.options(
        "/channels/web/messages",
        headers={
            "Origin": PAGE,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert preflight.status == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == PAGE
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    assert "Authorization" in preflight.headers["Access-Control-Allow-Headers"]
    refused = await chat.options("/channels/web/sessions", headers={"Origin": "https://evil.test"})
    assert refused.status == 403
    assert (await chat.options("/channels/web/elsewhere", headers={"Origin": PAGE})).status == 404

    started = await chat.post("/channels/web/sessions", json={}, headers={"Origin": PAGE})
    assert started.headers["Access-Control-Allow-Origin"] == PAGE
    # A problem carries the headers too, so the widget can read it and start over.
    expired = await chat.post("/channels/web/messages", json={}, headers={"Origin": PAGE})
    assert expired.status == 401
    assert expired.headers["Access-Control-Allow-Origin"] == PAGE
    other = await chat.post("/channels/web/sessions", json={}, headers={"Origin": "https://x.io"})
    assert "Access-Control-Allow-Origin" not in other.headers


# -- configuration --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("web", "named"),
    [
        ({"session_secret": "short", "identity_secret": "x"}, "web.session_secret"),
        ({"session_secret": WEB["session_secret"]}, "web"),
        ({"identity_secret": "x"}, "web"),
        ({**WEB, "allowed_origins": ["localhost:8080"]}, "web.allowed_origins"),
    ],
)
async def test_a_bad_web_configuration_names_the_setting(
    redis_url: str, redis: Redis, web: dict[str, Any], named: str
) -> None:
    async with aiohttp.ClientSession() as session:
        with pytest.raises(ConfigError, match=named):
            web_channel.setup(make_settings(redis_url, web=web), session, Store(redis))


async def test_the_development_config_has_working_web_and_mobile_channels(
    redis: Redis,
) -> None:
    config = Path(__file__).parent.parent / "config" / "omni.toml"
    settings = Settings.from_env({"OMNI_CONFIG": str(config)})
    assert {"http://127.0.0.1:8080", "http://localhost:8080"} <= set(
        web_config.read(settings).allowed_origins
    )
    import adapters.mobile as mobile_channel

    async with aiohttp.ClientSession() as session:
        for module in (web_channel, mobile_channel):
            adapter, sender = module.setup(settings, session, Store(redis))
            assert adapter is not None and sender is not None, module.NAME


async def test_replies_while_the_socket_is_away_wait_for_catch_up_and_are_sent(
    worked: TestClient,
) -> None:
    session = await start(worked)
    await say(worked, session["token"], "c-1", "Still there?")
    cid = (await customer_of(worked, session["visitor_id"]))["customer"]["id"]
    await reply(worked, cid, "Yes!")

    async def sent() -> bool:
        (latest, *_) = await history(worked, cid)
        return bool(latest["status"]["state"] == "sent")

    await until(sent)


async def test_open_sockets_are_closed_when_the_server_shuts_down(
    aiohttp_client: Any, redis_url: str, redis: Redis
) -> None:
    app = create_app(web_settings(redis_url))  # create_app tracks the sockets it serves
    client = await aiohttp_client(app)
    ws = await socket(client, (await start(client))["token"])
    await app.shutdown()
    closing = await ws.receive(timeout=5)
    assert closing.type == aiohttp.WSMsgType.CLOSE
    assert closing.data == aiohttp.WSCloseCode.GOING_AWAY


async def _instagram_customer_with_a_web_link(client: TestClient, sender: str) -> tuple[str, str]:
    """An Instagram customer who asked about an order, and a link token for the web."""
    ig = str((await ingest(client, channel="instagram", external_id=sender,
                           text="order 4417?"))["customer_id"])  # fmt: skip
    issued = await client.post(
        f"/v1/customers/{ig}/link-tokens", json={"channel": "web"}, headers=BOT
    )
    return ig, str((await issued.json())["token"])


async def test_a_link_token_presented_from_the_chat_joins_the_visitor_to_its_customer(
    chat: TestClient,
) -> None:
    # An Instagram customer's bot sent a sign-in link; the visitor opens it in the chat.
    ig, token = await _instagram_customer_with_a_web_link(chat, "ig_9")
    session = await start(chat)
    await say(chat, session["token"], "c-1", "hello from the website")
    visitor = (await customer_of(chat, session["external_id"]))["customer"]["id"]

    wrong = await chat.post(
        "/channels/web/link", json={"token": token + "x"}, headers=bearer(session["token"])
    )
    assert wrong.status == 401
    anonymous = await chat.post("/channels/web/link", json={"token": token})
    assert anonymous.status == 401
    linked = await chat.post(
        "/channels/web/link", json={"token": token}, headers=bearer(session["token"])
    )
    assert linked.status == 200, await linked.text()
    assert (await linked.json())["customer_id"] == ig  # the older record survives
    assert (await linked.json())["merged_from"] == visitor
    texts = [m["text"] for m in await history(chat, ig)]
    assert "hello from the website" in texts and "order 4417?" in texts
    used = await chat.post(
        "/channels/web/link", json={"token": token}, headers=bearer(session["token"])
    )
    assert used.status == 410


async def test_an_open_chat_follows_its_visitor_into_the_customer_it_was_linked_to(
    worked: TestClient,
) -> None:
    """The visitor's record is merged into an older customer while the chat is open: the
    socket asks the widget to reconnect, and the new socket hears the survivor's replies."""
    ig, token = await _instagram_customer_with_a_web_link(worked, "ig_7")
    session = await start(worked)
    await say(worked, session["token"], "c-1", "hello from the website")
    ws = await socket(worked, session["token"])
    linked = await worked.post(
        "/channels/web/link", json={"token": token}, headers=bearer(session["token"])
    )
    assert (await linked.json())["customer_id"] == ig
    closing = await ws.receive(timeout=5)
    while closing.type == aiohttp.WSMsgType.TEXT:  # acks, typing: not what this is about
        closing = await ws.receive(timeout=5)
    assert closing.type == aiohttp.WSMsgType.CLOSE
    assert closing.data == aiohttp.WSCloseCode.TRY_AGAIN_LATER
    again = await socket(worked, session["token"])
    sent = await reply(worked, ig, "Order 4417 ships today.")
    assert (await frame(again))["id"] == sent["id"]
    await again.close()


async def test_an_open_chat_goes_back_to_its_own_record_when_the_merge_is_undone(
    worked: TestClient,
) -> None:
    """The merge that brought the visitor into a customer is undone while the chat is
    open there: the socket asks the widget to reconnect, and the new socket hears the
    visitor's own record's replies."""
    ig, token = await _instagram_customer_with_a_web_link(worked, "ig_8")
    session = await start(worked)
    await say(worked, session["token"], "c-1", "hello from the website")
    linked = await worked.post(
        "/channels/web/link", json={"token": token}, headers=bearer(session["token"])
    )
    visitor = (await linked.json())["merged_from"]
    ws = await socket(worked, session["token"])
    log = await (await worked.get(f"/v1/customers/{ig}/audit", headers=AGENT)).json()
    merge_id = log["entries"][0]["merge_id"]
    undone = await worked.post(f"/v1/merges/{merge_id}/undo", headers=AGENT)
    assert undone.status == 200, await undone.text()
    closing = await ws.receive(timeout=5)
    while closing.type == aiohttp.WSMsgType.TEXT:
        closing = await ws.receive(timeout=5)
    assert closing.type == aiohttp.WSMsgType.CLOSE
    assert closing.data == aiohttp.WSCloseCode.TRY_AGAIN_LATER
    again = await socket(worked, session["token"])
    sent = await reply(worked, visitor, "Back on your own record.")
    assert (await frame(again))["id"] == sent["id"]
    await again.close()
