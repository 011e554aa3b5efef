"""adapters.mobile: sessions shared with the web, device registration from the fixtures in
tests/payloads/mobile/, catch-up, and push against a local APNs/FCM-speaking server."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from adapters.mobile.protocol import PREVIEW_MAX, CatchUp, Device, MobileAdapter
from adapters.mobile.sender import Pusher
from adapters.web.protocol import WebAdapter
from omni.channel import Delivery, InboundRequest, Received
from omni.errors import BadRequest, ConfigError, Forbidden, Unauthenticated, ValidationFailed
from omni.model import Author, Message

PAYLOADS = Path(__file__).parent.parent / "payloads" / "mobile"
FIXTURES = ["mobile_register_push_android.json", "mobile_register_push_ios.json"]
SESSION_SECRET = "mobile-session-secret-for-tests-012345"
# The registrations carry the web fixture's hash of cust_000123 (same brand secret).
IDENTITY_SECRET = "omni-web-identity-secret-7c41e0b2"
NOW = 1_767_225_600_000
VISITOR = "vis_01JH8Z3K9W2QX7M4T6R5B1C0DE"

ServerFactory = Callable[..., Awaitable[TestServer]]


def fixture(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((PAYLOADS / name).read_bytes())
    return loaded


def make_mobile(push_url: str = "http://127.0.0.1:9", **kw: Any) -> MobileAdapter:
    options: dict[str, Any] = {
        "session_secret": SESSION_SECRET,
        "identity_secret": IDENTITY_SECRET,
        "push_url": push_url,
        "fcm_project": "omni-test",
        "apns_topic": "com.example.shop",
        "clock": lambda: NOW,
    }
    options.update(kw)
    return MobileAdapter(**options)


def pusher(http: aiohttp.ClientSession, mobile: MobileAdapter, timeout_s: float = 10.0) -> Pusher:
    return Pusher(mobile, http, timeout_s)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def mobile(http: aiohttp.ClientSession) -> MobileAdapter:
    return make_mobile()


def request(
    body: bytes | dict[str, Any] = b"",
    *,
    token: str | None = None,
    query: dict[str, str] | None = None,
) -> InboundRequest:
    raw = json.dumps(body).encode() if isinstance(body, dict) else body
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return InboundRequest("POST", "https://omni.example.com/", headers, raw, query or {})


def device_of(mobile: MobileAdapter, name: str) -> Device:
    token = mobile.issue_session(VISITOR)
    return mobile.parse_device(request((PAYLOADS / name).read_bytes(), token=token)).device


def reply(text: str | None = "Your order 4417 ships today", **fields: Any) -> Message:
    values: dict[str, Any] = {
        "id": "msg_01JH8Z4000000000000000000A",
        "customer_id": "cus_01JH8Z3K9W2QX7M4T6R5B1C0DE",
        "conversation_id": "cnv_01JH8Z3K9W2QX7M4T6R5B1C0DE-1",
        "channel": "mobile",
        "direction": "outbound",
        "author": Author(kind="agent", id="agent-7", name="Rui"),
        "received_at": "2026-01-01T00:00:03.000Z",
        "text": text,
    }
    values.update(fields)
    return Message(**values)


# -- device registration (every mobile fixture) ------------------------------------------


@pytest.mark.parametrize("name", FIXTURES)
def test_fixture_registration_binds_device_to_the_verified_user(
    mobile: MobileAdapter, name: str
) -> None:
    raw = fixture(name)
    token = mobile.issue_session(VISITOR)
    registration = mobile.parse_device(request((PAYLOADS / name).read_bytes(), token=token))
    device = registration.device
    sent = raw["device"]
    assert device.device_id == sent["device_id"]
    assert device.platform == sent["platform"]
    assert device.push_provider == sent["push_provider"]
    assert device.push_token == sent["push_token"]
    assert (device.app_version, device.os_version, device.locale) == (
        sent["app_version"], sent["os_version"], sent["locale"],
    )  # fmt: skip
    assert device.apns_env == sent.get("apns_env")
    assert registration.external_id == "user:cust_000123"
    assert registration.user_id == "cust_000123"
    assert registration.previous is not None and registration.previous.visitor_id == VISITOR
    assert mobile.render_device(registration) == {
        "device_id": sent["device_id"],
        "external_id": "user:cust_000123",
        "status": "active",
    }


@pytest.mark.parametrize("name", FIXTURES)
def test_fixture_registration_with_a_forged_hash_is_rejected(
    mobile: MobileAdapter, name: str
) -> None:
    body = fixture(name)
    body["identifier"] = "cust_000124"
    with pytest.raises(Unauthenticated):
        mobile.parse_device(request(body, token=mobile.issue_session(VISITOR)))


@pytest.mark.parametrize("name", FIXTURES)
def test_fixture_registration_with_the_wrong_identity_secret_is_rejected(
    http: aiohttp.ClientSession, name: str
) -> None:
    mobile = make_mobile(identity_secret="the-ios-apps-own-secret")
    with pytest.raises(Unauthenticated):
        mobile.parse_device(
            request((PAYLOADS / name).read_bytes(), token=mobile.issue_session(VISITOR))
        )


@pytest.mark.parametrize("name", FIXTURES)
def test_fixture_registration_needs_a_live_mobile_session(
    http: aiohttp.ClientSession, mobile: MobileAdapter, name: str
) -> None:
    body = (PAYLOADS / name).read_bytes()
    with pytest.raises(Unauthenticated):
        mobile.parse_device(request(body))
    expired = mobile.issue_session(VISITOR, NOW - 31 * 86_400_000)
    with pytest.raises(Unauthenticated, match="expired"):
        mobile.parse_device(request(body, token=expired))
    web_token = WebAdapter(
        session_secret=SESSION_SECRET, identity_secret=IDENTITY_SECRET
    ).issue_session(VISITOR, NOW)
    with pytest.raises(Unauthenticated):
        mobile.parse_device(request(body, token=web_token))
    other_secret = make_mobile(session_secret="x" * 40)
    with pytest.raises(Unauthenticated):
        mobile.parse_device(request(body, token=other_secret.issue_session(VISITOR)))


def test_registration_for_another_users_session_is_forbidden(mobile: MobileAdapter) -> None:
    token = mobile.issue_session(VISITOR, user_id="cust_999")
    with pytest.raises(Forbidden):
        mobile.parse_device(request(fixture(FIXTURES[0]), token=token))


def test_registration_without_identifier_binds_to_the_session(mobile: MobileAdapter) -> None:
    body = {"device": fixture(FIXTURES[0])["device"]}
    anonymous = mobile.parse_device(request(body, token=mobile.issue_session(VISITOR)))
    assert anonymous.external_id == VISITOR and anonymous.previous is None
    known = mobile.issue_session(VISITOR, user_id="cust_000123")
    identified = mobile.parse_device(request(fixture(FIXTURES[1]), token=known))
    assert identified.external_id == "user:cust_000123" and identified.previous is None


def test_apns_tokens_are_normalised_to_lowercase(mobile: MobileAdapter) -> None:
    body = fixture(FIXTURES[1])
    body["device"]["push_token"] = body["device"]["push_token"].upper()
    registration = mobile.parse_device(request(body, token=mobile.issue_session(VISITOR)))
    assert registration.device.push_token == fixture(FIXTURES[1])["device"]["push_token"]


def _with_device(name: str, **device: Any) -> dict[str, Any]:
    body = fixture(name)
    body["device"].update(device)
    return {k: v for k, v in body.items() if v is not None}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (_with_device(FIXTURES[0], push_provider="apns"), "device.push_provider"),
        (_with_device(FIXTURES[0], apns_env="sandbox"), "device.apns_env"),
        (_with_device(FIXTURES[0], platform="windows"), "device.platform"),
        (_with_device(FIXTURES[0], push_provider="hms"), "device.push_provider"),
        (_with_device(FIXTURES[0], push_token=""), "device.push_token"),
        (_with_device(FIXTURES[0], push_token="has spaces"), "device.push_token"),
        (_with_device(FIXTURES[1], push_token="abc123"), "device.push_token"),
        (_with_device(FIXTURES[1], push_token="zz" * 32), "device.push_token"),
        (_with_device(FIXTURES[1], apns_env="staging"), "device.apns_env"),
        (_with_device(FIXTURES[1], locale="english please"), "device.locale"),
        ({"identifier": "cust_000123"}, "device"),
        (dict(_with_device(FIXTURES[0]), identifier=None), "identifier"),
    ],
)
def test_bad_registrations_name_the_field(
    mobile: MobileAdapter, body: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValidationFailed) as caught:
        mobile.parse_device(request(body, token=mobile.issue_session(VISITOR)))
    assert caught.value.field == field


def test_registration_that_is_not_json_is_bad_request(mobile: MobileAdapter) -> None:
    with pytest.raises(BadRequest):
        mobile.parse_device(request(b"device=1", token=mobile.issue_session(VISITOR)))


# -- sessions and messages (the code web.py uses) --------------------------------------


def test_mobile_sessions_and_identify(mobile: MobileAdapter) -> None:
    started = mobile.session_request(request(b""))
    assert started.kind == "started" and started.session.channel == "mobile"
    body = {k: fixture(FIXTURES[1])[k] for k in ("identifier", "identifier_hash")}
    grant = mobile.session_request(request(dict(body, type="identify"), token=started.token))
    assert grant.session.external_id == "user:cust_000123"
    assert grant.previous == started.session
    with pytest.raises(Unauthenticated):
        mobile.session_request(
            request({"type": "identify", "identifier": "cust_000124",
                     "identifier_hash": body["identifier_hash"]})
        )  # fmt: skip


def test_mobile_message_body(mobile: MobileAdapter) -> None:
    token = mobile.issue_session(VISITOR, user_id="cust_000123")
    (event,) = mobile.parse(request({"client_msg_id": "a-1", "text": "hi"}, token=token))
    assert isinstance(event, Received)
    assert (event.message.channel, event.message.external_id) == ("mobile", "user:cust_000123")
    assert event.message.channel_message_id == "a-1"


# -- catch-up ---------------------------------------------------------------------------


def test_catch_up_query(mobile: MobileAdapter) -> None:
    token = mobile.issue_session(VISITOR)
    catch_up = mobile.parse_catch_up(request(token=token, query={"after": "msg_0000000041"}))
    assert catch_up == CatchUp(catch_up.session, "msg_0000000041", 50)
    assert mobile.parse_catch_up(request(token=token, query={"limit": "200"})).limit == 200
    assert mobile.parse_catch_up(request(token=token, query={"after": ""})).after is None
    for query, field in (
        ({"after": "../etc"}, "after"),
        ({"limit": "0"}, "limit"),
        ({"limit": "201"}, "limit"),
        ({"limit": "-1"}, "limit"),
        ({"limit": "ten"}, "limit"),
    ):
        with pytest.raises(BadRequest) as caught:
            mobile.parse_catch_up(request(token=token, query=query))
        assert caught.value.field == field
    with pytest.raises(Unauthenticated):
        mobile.parse_catch_up(request(query={"after": "msg_1"}))


def test_render_catch_up(mobile: MobileAdapter) -> None:
    messages = [reply("one", id="msg_42"), reply("two", id="msg_43")]
    page = mobile.render_catch_up(messages, after="msg_41", has_more=True)
    assert page["next_after"] == "msg_43" and page["has_more"] is True
    assert page["messages"][0] == {
        "type": "message", "id": "msg_42", "from": "agent", "name": "Rui", "text": "one",
    }  # fmt: skip
    empty = mobile.render_catch_up([], after="msg_41", has_more=False)
    assert empty == {"messages": [], "next_after": "msg_41", "has_more": False}


# -- push -------------------------------------------------------------------------------


class PushProvider:
    """A local server speaking the APNs provider API and FCM HTTP v1: it records each
    request and answers according to the device token it is sent to."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.answers: dict[str, tuple[int, dict[str, Any] | None]] = {}
        self.delay = 0.0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/3/device/{token}", self.apns)
        app.router.add_post("/sandbox/3/device/{token}", self.apns)
        app.router.add_post("/v1/projects/{project}/messages:send", self.fcm)
        return app

    async def _record(self, request: web.Request, token: str) -> tuple[int, dict[str, Any] | None]:
        assert request.content_type == "application/json"
        self.requests.append(
            {"path": request.path, "headers": dict(request.headers), "body": await request.json()}
        )
        if self.delay:
            await asyncio.sleep(self.delay)
        return self.answers.get(token, (200, None))

    async def apns(self, request: web.Request) -> web.Response:
        status, body = await self._record(request, request.match_info["token"])
        headers = {"apns-id": request.headers.get("apns-id", "")}
        if body is None:
            return web.Response(status=status, headers=headers)
        return web.json_response(body, status=status, headers=headers)

    async def fcm(self, request: web.Request) -> web.Response:
        payload = await request.json()
        status, body = await self._record(request, payload["message"]["token"])
        if body is None:
            body = {"name": f"projects/{request.match_info['project']}/messages/0:1500415314"}
        return web.json_response(body, status=status)


@pytest.fixture
async def provider(aiohttp_server: ServerFactory) -> tuple[PushProvider, str]:
    fake = PushProvider()
    server = await aiohttp_server(fake.app())
    return fake, str(server.make_url("")).rstrip("/")


IOS = json.loads((PAYLOADS / FIXTURES[1]).read_bytes())["device"]
ANDROID = json.loads((PAYLOADS / FIXTURES[0]).read_bytes())["device"]


async def test_apns_push_success(
    http: aiohttp.ClientSession, provider: tuple[PushProvider, str]
) -> None:
    fake, url = provider
    mobile = make_mobile(url, push_auth=lambda: "provider-jwt")
    device = device_of(mobile, FIXTURES[1])
    message = reply()
    delivery = await pusher(http, mobile).deliver(message, device)
    expected_id = str(uuid.uuid5(uuid.NAMESPACE_URL, "omni:" + message.id))
    assert delivery == Delivery("sent", channel_message_id=expected_id)
    (seen,) = fake.requests
    assert seen["path"] == f"/3/device/{IOS['push_token']}"
    headers = seen["headers"]
    assert headers["Authorization"] == "Bearer provider-jwt"
    assert headers["apns-topic"] == "com.example.shop"
    assert headers["apns-push-type"] == "alert"
    assert headers["apns-priority"] == "10"
    assert headers["apns-id"] == expected_id
    assert headers["apns-collapse-id"] == message.id
    assert seen["body"] == {
        "aps": {
            "alert": {"title": "Rui", "body": "Your order 4417 ships today"},
            "sound": "default",
            "thread-id": message.conversation_id,
            "mutable-content": 1,
        },
        "omni": {"message_id": message.id, "conversation_id": message.conversation_id},
    }


async def test_fcm_push_success(
    http: aiohttp.ClientSession, provider: tuple[PushProvider, str]
) -> None:
    fake, url = provider
    mobile = make_mobile(url, push_auth="oauth-token")
    device = device_of(mobile, FIXTURES[0])
    message = reply()
    delivery = await pusher(http, mobile).deliver(message, device)
    assert delivery == Delivery(
        "sent", channel_message_id="projects/omni-test/messages/0:1500415314"
    )
    (seen,) = fake.requests
    assert seen["path"] == "/v1/projects/omni-test/messages:send"
    assert seen["headers"]["Authorization"] == "Bearer oauth-token"
    assert seen["body"] == {
        "message": {
            "token": ANDROID["push_token"],
            "notification": {"title": "Rui", "body": "Your order 4417 ships today"},
            "data": {
                "omni_message_id": message.id,
                "omni_conversation_id": message.conversation_id,
            },
            "android": {"priority": "HIGH", "notification": {"tag": message.id}},
        }
    }


async def test_ios_through_fcm_carries_the_apns_block(
    http: aiohttp.ClientSession, provider: tuple[PushProvider, str]
) -> None:
    fake, url = provider
    mobile = make_mobile(url)
    device = Device(
        device_id="ios-fcm-1", platform="ios", push_provider="fcm", push_token="fcmTok:ios_1"
    )
    assert (await pusher(http, mobile).deliver(reply(), device)).status == "sent"
    body = fake.requests[0]["body"]["message"]
    assert body["apns"]["payload"]["aps"]["thread-id"] == reply().conversation_id
    assert body["apns"]["headers"]["apns-collapse-id"] == reply().id
    assert "apns-topic" not in body["apns"]["headers"]
    assert "Authorization" not in fake.requests[0]["headers"]


async def test_sandbox_devices_use_the_sandbox_url(
    http: aiohttp.ClientSession, provider: tuple[PushProvider, str]
) -> None:
    fake, url = provider
    mobile = make_mobile(url, apns_sandbox_url=url + "/sandbox")
    device = Device(
        device_id="dev-1", platform="ios", push_provider="apns", push_token="ab" * 32,
        apns_env="sandbox", app_id="com.example.shop.debug",
    )  # fmt: skip
    assert (await pusher(http, mobile).deliver(reply(), device)).status == "sent"
    assert fake.requests[0]["path"] == f"/sandbox/3/device/{'ab' * 32}"
    assert fake.requests[0]["headers"]["apns-topic"] == "com.example.shop.debug"


INVALID = Delivery("failed", reason="invalid_token")


def retry(reason: str) -> Delivery:
    return Delivery("failed", reason=reason, retry=True)


def rejected(reason: str) -> Delivery:
    return Delivery("failed", reason=reason)


APNS_ANSWERS = [
    ((410, {"reason": "Unregistered", "timestamp": 1767225600000}), INVALID),
    ((400, {"reason": "BadDeviceToken"}), INVALID),
    ((400, {"reason": "DeviceTokenNotForTopic"}), INVALID),
    ((429, {"reason": "TooManyRequests"}), retry("rate_limited:TooManyRequests")),
    ((500, {"reason": "InternalServerError"}), retry("unavailable:InternalServerError")),
    ((503, None), retry("unavailable:503")),
    ((403, {"reason": "ExpiredProviderToken"}), retry("push_auth_failed:ExpiredProviderToken")),
    ((413, {"reason": "PayloadTooLarge"}), rejected("rejected:PayloadTooLarge")),
    ((404, {"reason": "BadPath"}), rejected("rejected:BadPath")),
]


@pytest.mark.parametrize(("answer", "expected"), APNS_ANSWERS)
async def test_apns_answers(
    http: aiohttp.ClientSession,
    provider: tuple[PushProvider, str],
    answer: tuple[int, dict[str, Any] | None],
    expected: Delivery,
) -> None:
    fake, url = provider
    fake.answers[IOS["push_token"]] = answer
    mobile = make_mobile(url)
    assert await pusher(http, mobile).deliver(reply(), device_of(mobile, FIXTURES[1])) == expected
    assert len(fake.requests) == 1


def fcm_error(code: int, status: str, message: str, detail: dict[str, Any]) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "status": status, "details": [detail]}}


def fcm(code: int, status: str, error_code: str, message: str = "") -> dict[str, Any]:
    detail = {
        "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
        "errorCode": error_code,
    }
    return fcm_error(code, status, message, detail)


def bad_field(field: str) -> dict[str, Any]:
    detail = {
        "@type": "type.googleapis.com/google.rpc.BadRequest",
        "fieldViolations": [{"field": field, "description": "Invalid value"}],
    }
    return fcm_error(400, "INVALID_ARGUMENT", f"Invalid value at '{field}'", detail)


NOT_VALID = "The registration token is not a valid FCM registration token"
FCM_ANSWERS = [
    ((404, fcm(404, "NOT_FOUND", "UNREGISTERED", "Requested entity was not found.")), INVALID),
    ((400, fcm(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT", NOT_VALID)), INVALID),
    ((400, bad_field("message.token")), INVALID),
    ((403, fcm(403, "PERMISSION_DENIED", "SENDER_ID_MISMATCH")), INVALID),
    ((429, fcm(429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED")), retry("rate_limited:QUOTA_EXCEEDED")),
    ((503, fcm(503, "UNAVAILABLE", "UNAVAILABLE")), retry("unavailable:UNAVAILABLE")),
    ((500, fcm(500, "INTERNAL", "INTERNAL")), retry("unavailable:INTERNAL")),
    (
        (401, fcm(401, "UNAUTHENTICATED", "THIRD_PARTY_AUTH_ERROR")),
        retry("push_auth_failed:THIRD_PARTY_AUTH_ERROR"),
    ),
    ((400, bad_field("message.data[0].value")), rejected("rejected:INVALID_ARGUMENT")),
    ((404, {"detail": "no such route"}), rejected("rejected:404")),
]


@pytest.mark.parametrize(("answer", "expected"), FCM_ANSWERS)
async def test_fcm_answers(
    http: aiohttp.ClientSession,
    provider: tuple[PushProvider, str],
    answer: tuple[int, dict[str, Any]],
    expected: Delivery,
) -> None:
    fake, url = provider
    fake.answers[ANDROID["push_token"]] = answer
    mobile = make_mobile(url)
    assert await pusher(http, mobile).deliver(reply(), device_of(mobile, FIXTURES[0])) == expected


async def test_invalid_token_then_success_after_re_registration(
    http: aiohttp.ClientSession, provider: tuple[PushProvider, str]
) -> None:
    fake, url = provider
    mobile = make_mobile(url)
    fake.answers[IOS["push_token"]] = (410, {"reason": "Unregistered"})
    assert (
        await pusher(http, mobile).deliver(reply(), device_of(mobile, FIXTURES[1]))
    ).reason == "invalid_token"
    rotated = Device(**{**IOS, "push_token": "cd" * 32})
    assert (await pusher(http, mobile).deliver(reply(), rotated)).status == "sent"


async def test_unreachable_push_endpoint_is_retried(
    http: aiohttp.ClientSession, unused_tcp_port: int
) -> None:
    mobile = make_mobile(f"http://127.0.0.1:{unused_tcp_port}")
    delivery = await pusher(http, mobile).deliver(reply(), device_of(mobile, FIXTURES[0]))
    assert delivery == Delivery("failed", reason="unreachable", retry=True)


async def test_slow_push_endpoint_times_out_and_is_retried(
    http: aiohttp.ClientSession, provider: tuple[PushProvider, str]
) -> None:
    fake, url = provider
    fake.delay = 1.0
    mobile = make_mobile(url)
    delivery = await pusher(http, mobile, 0.1).deliver(reply(), device_of(mobile, FIXTURES[1]))
    assert delivery == Delivery("failed", reason="unreachable", retry=True)


async def test_notification_text_preview(
    http: aiohttp.ClientSession, provider: tuple[PushProvider, str]
) -> None:
    fake, url = provider
    mobile = make_mobile(url)
    device = device_of(mobile, FIXTURES[0])
    await pusher(http, mobile).deliver(reply("é" * 500, author=Author(kind="bot")), device)
    notification = fake.requests[-1]["body"]["message"]["notification"]
    assert notification["title"] == "New message"
    assert len(notification["body"]) == PREVIEW_MAX and notification["body"].endswith("…")
    await pusher(http, mobile).deliver(reply(None), device)
    assert fake.requests[-1]["body"]["message"]["notification"]["body"] == "You have a new message"
    private = make_mobile(url, push_preview=False, push_fallback="Shop: new reply")
    await pusher(http, private).deliver(reply("secret order details"), device)
    assert "secret" not in json.dumps(fake.requests[-1]["body"])
    assert fake.requests[-1]["body"]["message"]["notification"]["body"] == "Shop: new reply"


async def test_push_without_configuration_fails_without_calling(
    http: aiohttp.ClientSession, provider: tuple[PushProvider, str]
) -> None:
    fake, url = provider
    bare = make_mobile(url, fcm_project=None, apns_topic=None)
    android = await pusher(http, bare).deliver(reply(), device_of(bare, FIXTURES[0]))
    ios = await pusher(http, bare).deliver(reply(), device_of(bare, FIXTURES[1]))
    assert android == Delivery("failed", reason="not_configured:fcm_project")
    assert ios == Delivery("failed", reason="not_configured:apns_topic")
    assert fake.requests == []


def test_push_url_must_be_http(http: aiohttp.ClientSession) -> None:
    with pytest.raises(ConfigError):
        make_mobile("ftp://push.example.com")
    with pytest.raises(ConfigError):
        make_mobile("http://push.example.com", apns_sandbox_url="push.example.com")


async def test_without_a_push_url_nothing_is_pushed(http: aiohttp.ClientSession) -> None:
    bare = make_mobile(None)  # type: ignore[arg-type]
    assert not bare.pushes
    delivery = await pusher(http, bare).deliver(reply(), device_of(bare, FIXTURES[0]))
    assert delivery == Delivery("failed", reason="not_configured:push_url")
