"""The mobile app channel through the real app: sessions and login, device registration
(both fixtures), replies pushed through a local APNs/FCM-speaking server when the app has
no live socket, invalid tokens retired, the socket preferred while it is open (in any
omni process), and catch-up."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from adapters.chat.sessions import IdentityVerifier
from omni import keys
from omni.app import create_app
from omni.settings import Settings
from omni.state import SERVICES
from tests.adapters.test_mobile import PushProvider
from tests.conftest import AGENT, BOT, make_settings, snapshot
from tests.test_bots import ServerFactory
from tests.test_channel_web import FAST, WEB, bearer, frame
from tests.test_worker import until

PAYLOADS = Path(__file__).parent / "payloads" / "mobile"
ANDROID, IOS = "mobile_register_push_android.json", "mobile_register_push_ios.json"
# The registrations carry the hash of cust_000123 under the brand's identity secret.
IDENTITY_SECRET = "omni-web-identity-secret-7c41e0b2"
USER = "cust_000123"
MOBILE = {
    "session_secret": "mobile-session-secret-for-tests-012345",
    "identity_secret": IDENTITY_SECRET,
    "fcm_project": "omni-test",
    "apns_topic": "com.example.shop",
    "push_auth": "provider-jwt",
}
Json = dict[str, Any]


def fixture(name: str) -> Json:
    loaded: Json = json.loads((PAYLOADS / name).read_bytes())
    return loaded


def mobile_settings(redis_url: str, push_url: str = "", **sections: Any) -> Settings:
    return make_settings(redis_url, mobile={**MOBILE, "push_url": push_url}, **sections)


@pytest.fixture
async def push(aiohttp_server: ServerFactory) -> tuple[PushProvider, str]:
    fake = PushProvider()
    server = await aiohttp_server(fake.app())
    return fake, str(server.make_url("")).rstrip("/")


@pytest.fixture
async def app(
    aiohttp_client: Any, redis_url: str, redis: Redis, push: tuple[PushProvider, str]
) -> TestClient:
    """The app with the mobile channel, pushing to the fake provider, and a worker."""
    settings = mobile_settings(redis_url, push[1], outbox=FAST)
    return await aiohttp_client(create_app(settings))


@pytest.fixture
async def quiet(aiohttp_client: Any, redis_url: str, redis: Redis) -> TestClient:
    """The app with the mobile channel and no worker: rejected requests write nothing."""
    return await aiohttp_client(create_app(mobile_settings(redis_url)))


async def start(client: TestClient) -> Json:
    response = await client.post("/channels/mobile/sessions", json={})
    assert response.status == 201, await response.text()
    body: Json = await response.json()
    return body


async def say(client: TestClient, token: str, client_msg_id: str, text: str) -> Json:
    body = {"client_msg_id": client_msg_id, "text": text}
    response = await client.post("/channels/mobile/messages", json=body, headers=bearer(token))
    assert response.status in (200, 201), await response.text()
    ack: Json = await response.json()
    return ack


async def register(client: TestClient, token: str, body: Json) -> Json:
    response = await client.post("/channels/mobile/devices", json=body, headers=bearer(token))
    assert response.status == 200, await response.text()
    registered: Json = await response.json()
    return registered


async def customer(client: TestClient, channel: str, external_id: str) -> str:
    response = await client.get(
        "/v1/context", params={"channel": channel, "external_id": external_id}, headers=BOT
    )
    assert response.status == 200, await response.text()
    cid: str = (await response.json())["customer"]["id"]
    return cid


async def reply(client: TestClient, cid: str, text: str) -> Json:
    response = await client.post(
        f"/v1/customers/{cid}/messages", json={"text": text, "channel": "mobile"}, headers=AGENT
    )
    assert response.status == 202, await response.text()
    body: Json = await response.json()
    return body


async def status_of(client: TestClient, cid: str, message_id: str) -> Json:
    response = await client.get(f"/v1/customers/{cid}/history", headers=AGENT)
    for message in (await response.json())["messages"]:
        if message["id"] == message_id:
            status: Json = message.get("status") or {}
            return status
    raise AssertionError(f"{message_id} is not in the history")


async def settled(client: TestClient, cid: str, message_id: str) -> Json:
    """The reply's status once the worker has handled it."""

    async def done() -> bool:
        return (await status_of(client, cid, message_id)).get("state") != "queued"

    await until(done)
    return await status_of(client, cid, message_id)


async def app_user_with(client: TestClient, *names: str) -> tuple[Json, str]:
    """An app user who wrote once, then registered the fixtures' devices (logging in)."""
    session = await start(client)
    await say(client, session["token"], "a-1", "Where is order 4417?")
    for name in names:
        registered = await register(client, session["token"], fixture(name))
        assert registered == {
            "device_id": fixture(name)["device"]["device_id"],
            "external_id": f"user:{USER}",
            "status": "active",
        }
    return session, await customer(client, "mobile", session["visitor_id"])


# -- registration -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", [IOS, ANDROID])
async def test_registering_a_device_binds_it_to_the_logged_in_customer(
    app: TestClient, redis: Redis, name: str
) -> None:
    _, cid = await app_user_with(app, name)
    assert await customer(app, "mobile", f"user:{USER}") == cid
    stored = await redis.hgetall(keys.devices(cid))
    assert list(stored) == [fixture(name)["device"]["device_id"].encode()]


async def test_a_forged_registration_is_401_and_changes_nothing(
    quiet: TestClient, redis: Redis
) -> None:
    session = await start(quiet)
    await say(quiet, session["token"], "a-1", "hi")
    before = await snapshot(redis)
    for body in (
        {**fixture(IOS), "identifier": "cust_000124"},
        {k: v for k, v in fixture(IOS).items() if k != "identifier_hash"},
    ):
        response = await quiet.post(
            "/channels/mobile/devices", json=body, headers=bearer(session["token"])
        )
        assert response.status in (401, 422), await response.text()
    response = await quiet.post("/channels/mobile/devices", json=fixture(IOS))
    assert response.status == 401
    assert await snapshot(redis) == before


@pytest.mark.parametrize(
    ("device", "status"),
    [
        ({"platform": "android"}, 422),  # apns is for ios only
        ({"push_token": "not-hex"}, 422),
        ({"push_token": ""}, 422),
        ({"push_provider": "pigeon"}, 422),
        ({"device_id": ""}, 422),
        ({"apns_env": "staging"}, 422),
    ],
)
async def test_bad_registrations_are_4xx_and_store_nothing(
    quiet: TestClient, redis: Redis, device: Json, status: int
) -> None:
    session = await start(quiet)
    body = fixture(IOS)
    body["device"] = {**body["device"], **device}
    before = await snapshot(redis)
    response = await quiet.post(
        "/channels/mobile/devices", json=body, headers=bearer(session["token"])
    )
    assert response.status == status, await response.text()
    assert response.content_type == "application/problem+json"
    not_json = await quiet.post(
        "/channels/mobile/devices", data=b"{device", headers=bearer(session["token"])
    )
    assert not_json.status == 400
    assert await snapshot(redis) == before


# -- replies: pushed, or over the socket --------------------------------------------------------


async def test_a_reply_with_no_live_connection_is_pushed_to_every_device(
    app: TestClient, push: tuple[PushProvider, str]
) -> None:
    fake, _ = push
    _, cid = await app_user_with(app, IOS, ANDROID)
    sent = await reply(app, cid, "Order 4417 ships today")
    assert (await settled(app, cid, sent["id"]))["state"] == "sent"
    by_path = {r["path"]: r for r in fake.requests}
    ios_token = fixture(IOS)["device"]["push_token"]
    apns = by_path[f"/3/device/{ios_token}"]
    assert apns["headers"]["Authorization"] == "Bearer provider-jwt"
    assert apns["headers"]["apns-topic"] == "com.example.shop"
    assert apns["body"]["aps"]["alert"] == {"title": "test agent", "body": "Order 4417 ships today"}
    assert apns["body"]["omni"]["message_id"] == sent["id"]
    fcm = by_path["/v1/projects/omni-test/messages:send"]["body"]["message"]
    assert fcm["token"] == fixture(ANDROID)["device"]["push_token"]
    assert fcm["data"]["omni_message_id"] == sent["id"]
    assert len(fake.requests) == 2


async def test_an_invalid_token_retires_the_device_until_it_registers_again(
    app: TestClient, push: tuple[PushProvider, str]
) -> None:
    fake, _ = push
    session, cid = await app_user_with(app, IOS)
    token = fixture(IOS)["device"]["push_token"]
    fake.answers[token] = (410, {"reason": "Unregistered"})
    first = await reply(app, cid, "One")
    failed = await settled(app, cid, first["id"])
    assert (failed["state"], failed["reason"]) == ("failed", "invalid_token")
    assert len(fake.requests) == 1

    second = await reply(app, cid, "Two")
    waiting = await settled(app, cid, second["id"])
    assert waiting["state"] == "sent" and "no active device" in waiting["reason"]
    assert len(fake.requests) == 1  # the retired token was not pushed to again

    del fake.answers[token]
    await register(app, session["token"], fixture(IOS))  # the app registers afresh
    third = await reply(app, cid, "Three")
    assert (await settled(app, cid, third["id"]))["state"] == "sent"
    assert [r["body"]["aps"]["alert"]["body"] for r in fake.requests] == ["One", "Three"]


async def test_a_reply_goes_over_the_live_socket_and_is_not_pushed(
    app: TestClient, push: tuple[PushProvider, str], redis: Redis
) -> None:
    fake, _ = push
    session, cid = await app_user_with(app, IOS)
    ws = await app.ws_connect("/channels/mobile/ws", headers=bearer(session["token"]))
    sent = await reply(app, cid, "Here now?")
    shown = await frame(ws)
    assert (shown["id"], shown["text"]) == (sent["id"], "Here now?")

    async def delivered() -> bool:
        return (await status_of(app, cid, sent["id"])).get("state") == "delivered"

    await until(delivered)
    assert fake.requests == []

    await ws.close()

    async def gone() -> bool:
        return int(await redis.zcard(keys.presence(cid, "mobile"))) == 0

    await until(gone)
    later = await reply(app, cid, "Back in the pocket")
    assert (await settled(app, cid, later["id"]))["state"] == "sent"
    assert [r["body"]["aps"]["alert"]["body"] for r in fake.requests] == ["Back in the pocket"]


async def test_a_socket_in_one_process_keeps_another_processes_worker_from_pushing(
    aiohttp_client: Any, redis_url: str, redis: Redis, push: tuple[PushProvider, str]
) -> None:
    fake, url = push
    serving = await aiohttp_client(create_app(mobile_settings(redis_url, url)))
    working = await aiohttp_client(create_app(mobile_settings(redis_url, url, outbox=FAST)))
    session, cid = await app_user_with(serving, ANDROID)
    ws = await serving.ws_connect("/channels/mobile/ws", params={"token": session["token"]})
    # The serving process hears other processes once its listener is subscribed (on a
    # cluster, one subscription per node takes longer to open than the reply to queue).
    await serving.app[SERVICES].live.wait_ready()
    sent = await reply(working, cid, "From the other process")
    assert (await frame(ws))["id"] == sent["id"]
    assert (await settled(working, cid, sent["id"]))["state"] in ("sent", "delivered")
    assert fake.requests == []
    await ws.close()


async def test_without_a_push_endpoint_replies_wait_for_catch_up(
    aiohttp_client: Any, redis_url: str, redis: Redis
) -> None:
    client = await aiohttp_client(create_app(mobile_settings(redis_url, outbox=FAST)))
    session, cid = await app_user_with(client, ANDROID)
    sent = await reply(client, cid, "When you are back")
    status = await settled(client, cid, sent["id"])
    assert status["state"] == "sent" and "no push endpoint" in status["reason"]
    page = await client.get("/channels/mobile/messages", headers=bearer(session["token"]))
    assert [m["text"] for m in (await page.json())["messages"]][-1] == "When you are back"


async def test_a_push_token_moves_with_the_phone_to_its_new_user(
    app: TestClient, push: tuple[PushProvider, str]
) -> None:
    fake, _ = push
    _, first = await app_user_with(app, ANDROID)
    # Logged out: the same phone, a new anonymous user, registers the same token.
    someone_else = await start(app)
    await say(app, someone_else["token"], "b-1", "hello")
    device = {"device": fixture(ANDROID)["device"]}
    await register(app, someone_else["token"], device)
    sent = await reply(app, first, "For the first user only")
    status = await settled(app, first, sent["id"])
    assert status["state"] == "sent" and "no active device" in status["reason"]
    assert fake.requests == []


# -- sessions, login across channels, catch-up ----------------------------------------------------


async def test_logging_in_on_the_app_finds_the_customer_from_the_website(
    aiohttp_client: Any, redis_url: str, redis: Redis
) -> None:
    settings = make_settings(redis_url, web=WEB, mobile=MOBILE)
    client = await aiohttp_client(create_app(settings))
    web = await (await client.post("/channels/web/sessions", json={})).json()
    web_hash = IdentityVerifier(WEB["identity_secret"]).user_hash(USER)
    web_login = await client.post(
        "/channels/web/sessions",
        json={"type": "identify", "identifier": USER, "identifier_hash": web_hash},
        headers=bearer(web["token"]),
    )
    assert web_login.status == 200
    token = (await web_login.json())["token"]
    await client.post("/channels/web/messages", json={"client_msg_id": "w-1", "text": "shoes"},
                      headers=bearer(token))  # fmt: skip
    on_web = await customer(client, "web", f"user:{USER}")

    app_session = await start(client)
    await say(client, app_session["token"], "a-1", "hi from the app")
    login = {"type": "identify", "identifier": USER,
             "identifier_hash": fixture(IOS)["identifier_hash"]}  # fmt: skip
    response = await client.post(
        "/channels/mobile/sessions", json=login, headers=bearer(app_session["token"])
    )
    assert response.status == 200, await response.text()
    assert await customer(client, "mobile", f"user:{USER}") == on_web
    texts = {m["text"] for m in (await (await client.get(
        f"/v1/customers/{on_web}/history", headers=AGENT)).json())["messages"]}  # fmt: skip
    assert {"shoes", "hi from the app"} <= texts


async def test_mobile_messages_are_idempotent_and_caught_up(app: TestClient) -> None:
    session = await start(app)
    first = await say(app, session["token"], "a-1", "Is it in stock?")
    again = await say(app, session["token"], "a-1", "Is it in stock?")
    assert first["id"] == again["id"]
    cid = await customer(app, "mobile", session["visitor_id"])
    answer = await reply(app, cid, "Yes, two left")
    page = await app.get(
        "/channels/mobile/messages", params={"after": first["id"]},
        headers=bearer(session["token"]),
    )  # fmt: skip
    assert page.status == 200
    body = await page.json()
    assert [(m["id"], m["from"]) for m in body["messages"]] == [(answer["id"], "agent")]
    assert body == {**body, "next_after": answer["id"], "has_more": False}


async def test_mobile_routes_need_a_mobile_session(quiet: TestClient, redis: Redis) -> None:
    before = await snapshot(redis)
    for method, path in (
        ("POST", "/channels/mobile/messages"),
        ("GET", "/channels/mobile/messages"),
        ("POST", "/channels/mobile/devices"),
    ):
        response = await quiet.request(method, path, json={}, headers=bearer("nope"))
        assert response.status == 401, (method, path)
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await quiet.ws_connect("/channels/mobile/ws")
    assert refused.value.status == 401
    assert await snapshot(redis) == before
