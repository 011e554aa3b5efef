"""Who may do what, generated from the route table (omni.routes.all_routes(), the
channels' routes included): every route x every kind of caller gets the answer its rule
says, so a route added without a rule fails here. Then object-level checks: a session
reaches only its own customer's conversation, whatever ids it crafts; link tokens are
single-use; a login ends the anonymous session and an erasure ends every session.

`pytest tests/test_authz.py -s` prints how many cells were checked."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from omni.app import create_app
from omni.route import Route
from omni.routes import all_routes
from omni.settings import ROLES
from tests.conftest import ADMIN, AGENT, BOT, ingest
from tests.everything import full_settings
from tests.test_bots import ServerFactory
from tests.test_channel_web import PAGE, login_body
from tests.test_channel_whatsapp import WHATSAPP
from tests.whatsapp_graph import Graph

Json = dict[str, Any]
CALLERS = ("none", "wrong key", "web session", "mobile session", "bot", "agent", "admin")
KEYS = {"bot": BOT, "agent": AGENT, "admin": ADMIN}

# The channels' routes authenticate the channel's way; every one must be named here.
#   public        anyone (the widget's script, and its session start: it has nothing yet)
#   session:<ch>  a session token of that channel, nothing else
#   signature     the provider's signature over the request: no caller here has it
#   verify-token  Meta's subscription handshake: 403 without the app's verify token
CHANNEL_RULES = {
    ("GET", "/channels/instagram/webhook"): "verify-token",
    ("POST", "/channels/instagram/webhook"): "signature",
    ("POST", "/channels/voice/twilio"): "signature",
    ("POST", "/channels/voice/twilio/gather"): "signature",
    ("POST", "/channels/voice/twilio/status"): "signature",
    ("POST", "/channels/voice/twilio/dial"): "signature",
    ("GET", "/widget.js"): "public",  # a static script on the brand's pages
    ("POST", "/channels/web/sessions"): "public",
    ("POST", "/channels/web/messages"): "session:web",
    ("POST", "/channels/web/link"): "session:web",
    ("GET", "/channels/web/messages"): "session:web",
    ("GET", "/channels/web/ws"): "session:web",
    ("OPTIONS", "/channels/web/{route}"): "public",
    ("POST", "/channels/mobile/sessions"): "public",
    ("POST", "/channels/mobile/messages"): "session:mobile",
    ("POST", "/channels/mobile/link"): "session:mobile",
    ("GET", "/channels/mobile/messages"): "session:mobile",
    ("POST", "/channels/mobile/devices"): "session:mobile",
    ("GET", "/channels/mobile/ws"): "session:mobile",
    ("GET", "/channels/whatsapp/webhook"): "verify-token",
    ("POST", "/channels/whatsapp/webhook"): "signature",
    ("POST", "/channels/sms/twilio"): "signature",
    ("POST", "/channels/sms/status"): "signature",
    ("POST", "/channels/email/inbound"): "signature",  # Mailgun's HMAC or Postmark's basic auth
}
# Core routes without a role: what anyone may read.
PUBLIC = {
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/openapi.json"),
    ("GET", "/console"),
    ("GET", "/console/{asset}"),
}


def rule(route: Route) -> str:
    if route.role is not None:
        return f"role:{route.role}"
    if (route.method, route.path) in PUBLIC:
        return "public"
    found = CHANNEL_RULES.get((route.method, route.path))
    assert found is not None, f"{route.method} {route.path} has no authorization rule"
    return found


def expected(rule_: str, caller: str) -> int | None:
    """The status the cell must answer; None: allowed (anything but 401/403, no 5xx)."""
    kind, _, arg = rule_.partition(":")
    if kind == "public":
        return None
    if kind == "signature":
        return 401
    if kind == "verify-token":
        return 403
    if kind == "session":
        return None if caller == f"{arg} session" else 401
    if caller not in KEYS:
        return 401  # no key, an unknown one, or a session token: not an API key
    return None if ROLES.index(caller) >= ROLES.index(arg) else 403  # type: ignore[arg-type]


@pytest.fixture
async def app(
    aiohttp_client: Any, aiohttp_server: ServerFactory, redis_url: str, redis: Redis
) -> TestClient:
    # A local Graph API, so the WhatsApp media route answers what its caller may see.
    graph = await aiohttp_server(Graph().app())
    whatsapp = {**WHATSAPP, "graph_url": str(graph.make_url("/v22.0"))}
    client: TestClient = await aiohttp_client(
        create_app(full_settings(redis_url, whatsapp=whatsapp))
    )
    return client


async def session(app: TestClient, channel: str) -> Json:
    response = await app.post(f"/channels/{channel}/sessions", json={})
    assert response.status == 201
    body: Json = await response.json()
    return body


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_every_route_answers_every_caller_as_its_rule_says(app: TestClient) -> None:
    tokens = {
        "none": {},
        "wrong key": bearer("not-a-key-of-this-server"),
        "web session": bearer((await session(app, "web"))["token"]),
        "mobile session": bearer((await session(app, "mobile"))["token"]),
        **KEYS,
    }
    checked = 0
    wrong: list[str] = []
    for route in all_routes():
        cid = (await ingest(app, channel_message_id=f"m-{checked}"))["customer_id"]
        path = (
            route.path.replace("{id}", cid)
            .replace("{route}", "sessions")
            .replace("{asset}", "console.js")
            .replace("{delivery_id}", "dlv_01JAAAAAAAAAAAAAAAAAAAAAAA")
            .replace("{merge_id}", "mrg_01JAAAAAAAAAAAAAAAAAAAAAAA")
            .replace("{media_id}", "1230000000000001")
        )
        for caller in CALLERS:  # admin last: its DELETE erases the customer
            headers = {**tokens[caller], "Origin": PAGE, "If-Match": "*"}
            body = {} if route.method in ("POST", "PUT", "PATCH") else None
            async with app.request(route.method, path, json=body, headers=headers) as answer:
                status = answer.status
            want = expected(rule(route), caller)
            ok = status < 500 and (status not in (401, 403) if want is None else status == want)
            if not ok:
                wrong.append(f"{route.method} {route.path} as {caller}: {status}, want {want}")
            checked += 1
    print(f"\nauthorization matrix: {checked} cells, {len(all_routes())} routes")
    assert wrong == []
    assert checked == len(all_routes()) * len(CALLERS)


async def test_a_session_reaches_only_its_own_conversation(app: TestClient) -> None:
    ana, bob = await session(app, "web"), await session(app, "web")
    said = await app.post(
        "/channels/web/messages",
        json={"client_msg_id": "b-1", "text": "bob's secret"},
        headers=bearer(bob["token"]),
    )
    bob_message = (await said.json())["id"]
    # Ana names Bob's message as her catch-up position: she gets nothing of his.
    page = await app.get(
        "/channels/web/messages", params={"after": bob_message}, headers=bearer(ana["token"])
    )
    assert "bob's secret" not in await page.text()
    # Fields naming Bob are not obeyed: what Ana says stays in her own conversation.
    for n, extra in enumerate(({"external_id": bob["external_id"]}, {"customer_id": "cus_x"})):
        crafted = await app.post(
            "/channels/web/messages",
            json={"client_msg_id": f"a-{n}", "text": "ana crafted", **extra},
            headers=bearer(ana["token"]),
        )
        assert crafted.status in (201, 422)
    bobs = await app.get("/channels/web/messages", headers=bearer(bob["token"]))
    assert "ana crafted" not in await bobs.text()
    assert "bob's secret" in await bobs.text()
    # Bob's visitor id as Ana's hello, or a token query naming Bob's with Ana's header.
    renewed = await app.post(
        "/channels/web/sessions",
        json={"type": "renew", "anonymous_id": bob["visitor_id"]},
        headers=bearer(ana["token"]),
    )
    assert (await renewed.json())["visitor_id"] == ana["visitor_id"]
    # A session token is no API key: the customer routes refuse it.
    cid = (
        await (
            await app.get(
                "/v1/context",
                params={"channel": "web", "external_id": bob["visitor_id"]},
                headers=BOT,
            )
        ).json()
    )["customer"]["id"]
    for path in (f"/v1/customers/{cid}/history", f"/v1/customers/{cid}/context"):
        assert (await app.get(path, headers=bearer(ana["token"]))).status == 401
    # Another channel's token is not this channel's.
    mobile = await app.get("/channels/mobile/messages", headers=bearer(ana["token"]))
    assert mobile.status == 401


async def test_a_link_token_is_single_use(app: TestClient) -> None:
    cid = (await ingest(app))["customer_id"]
    issued = await app.post(
        f"/v1/customers/{cid}/link-tokens", json={"channel": "web"}, headers=BOT
    )
    assert issued.status == 201, await issued.text()
    token = (await issued.json())["token"]
    visitor = await session(app, "web")
    first = await app.post(
        "/channels/web/link", json={"token": token}, headers=bearer(visitor["token"])
    )
    assert first.status == 200, await first.text()
    other = await session(app, "web")
    again = await app.post(
        "/channels/web/link", json={"token": token}, headers=bearer(other["token"])
    )
    assert again.status == 410


async def _works(app: TestClient, token: str) -> list[int]:
    """What the session's routes answer with this token."""
    said = await app.post(
        "/channels/web/messages",
        json={"client_msg_id": "after-1", "text": "still me?"},
        headers=bearer(token),
    )
    page = await app.get("/channels/web/messages", headers=bearer(token))
    renew = await app.post("/channels/web/sessions", json={"type": "renew"}, headers=bearer(token))
    socket = await app.get("/channels/web/ws", params={"token": token}, headers={"Origin": PAGE})
    return [said.status, page.status, renew.status, socket.status]


async def test_a_login_ends_the_anonymous_session(app: TestClient) -> None:
    anonymous = await session(app, "web")
    said = await app.post(
        "/channels/web/messages",
        json={"client_msg_id": "v-1", "text": "hello"},
        headers=bearer(anonymous["token"]),
    )
    assert said.status == 201
    login = await app.post(
        "/channels/web/sessions",
        json=login_body(anonymous["visitor_id"]),
        headers=bearer(anonymous["token"]),
    )
    assert login.status == 200, await login.text()
    known = (await login.json())["token"]
    assert await _works(app, anonymous["token"]) == [401, 401, 401, 401]
    assert [s for s in await _works(app, known)][:3] == [201, 200, 200]


async def test_an_erasure_ends_every_session_of_the_customer(app: TestClient) -> None:
    visitor = await session(app, "web")
    said = await app.post(
        "/channels/web/messages",
        json={"client_msg_id": "v-1", "text": "hello"},
        headers=bearer(visitor["token"]),
    )
    assert said.status == 201
    context = await app.get(
        "/v1/context",
        params={"channel": "web", "external_id": visitor["visitor_id"]},
        headers=BOT,
    )
    cid = (await context.json())["customer"]["id"]
    assert (await app.delete(f"/v1/customers/{cid}", headers=ADMIN)).status == 204
    assert await _works(app, visitor["token"]) == [401, 401, 401, 401]
    fresh = await session(app, "web")
    assert (await _works(app, fresh["token"]))[:3] == [201, 200, 200]
