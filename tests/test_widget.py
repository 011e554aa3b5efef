"""The chat widget's server side, without a browser: `GET /widget.js` served from the
package, a page from a disallowed Origin refused before anything is stored, and what the
widget shows that the socket must carry (a reply's quick replies, the bot typing).
The widget itself is tested in chromium: tests/test_widget_browser.py."""

from __future__ import annotations

import re
from importlib import resources
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from omni.app import create_app
from tests.conftest import AGENT, snapshot
from tests.test_bots import SECRET, BotReceiver, ServerFactory, serve
from tests.test_channel_web import (
    FAST,
    PAGE,
    bearer,
    customer_of,
    frame,
    login_body,
    say,
    socket,
    start,
    web_settings,
)


@pytest.fixture
async def chat(aiohttp_client: Any, redis_url: str, redis: Redis) -> TestClient:
    """The app with the web channel allowing the shop's page (no worker)."""
    return await aiohttp_client(create_app(web_settings(redis_url)))


WIDGET_MAX = 50 * 1024  # the widget's budget on someone else's page, uncompressed
ELSEWHERE = "https://evil.example"


async def test_the_widget_script_is_served_from_the_package(chat: TestClient) -> None:
    source = resources.files("adapters").joinpath("web/widget.js").read_bytes()
    response = await chat.get("/widget.js")
    assert response.status == 200
    assert response.content_type == "text/javascript"
    assert await response.read() == source
    assert len(source) < WIDGET_MAX
    # Any page may load it (what it may do is decided by the chat routes' Origin check).
    assert response.headers["Cross-Origin-Resource-Policy"] == "cross-origin"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    # Text from visitors and agents only ever becomes Text nodes: no HTML sink exists.
    text = source.decode()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in text, sink
    # One global: window.omni.
    assert re.findall(r"window\.(\w+)\s*=", text) == ["omni"]


async def test_a_page_from_a_disallowed_origin_is_refused_and_nothing_is_stored(
    chat: TestClient, redis: Redis
) -> None:
    visitor = await start(chat)
    before = await snapshot(redis)
    refused = [
        ("POST", "/channels/web/sessions", {}, {}),
        # A login from that page would link a customer: refused before it runs.
        ("POST", "/channels/web/sessions", login_body(None), {}),
        ("POST", "/channels/web/messages", {"client_msg_id": "c-1", "text": "hi"},
         bearer(visitor["token"])),
        ("POST", "/channels/web/link", {"token": "x"}, bearer(visitor["token"])),
        ("GET", "/channels/web/messages", None, bearer(visitor["token"])),
    ]  # fmt: skip
    for method, path, body, headers in refused:
        response = await chat.request(
            method, path, json=body, headers={"Origin": ELSEWHERE, **headers}
        )
        assert response.status == 403, (path, await response.text())
        assert response.content_type == "application/problem+json"
        problem = await response.json()
        assert problem["field"] == "Origin"
        assert "Access-Control-Allow-Origin" not in response.headers
    assert await snapshot(redis) == before
    # The same requests from the shop's page (or from no page at all) work.
    allowed = await chat.post("/channels/web/sessions", json={}, headers={"Origin": PAGE})
    assert allowed.status == 201


async def test_a_bot_shows_typing_and_its_quick_replies_reach_the_widget(
    aiohttp_client: Any, aiohttp_server: ServerFactory, redis_url: str, redis: Redis
) -> None:
    bot = BotReceiver()
    bot.answers = [(200, {"replies": [{
        "text": "Which size?",
        "quick_replies": [{"payload": "S42", "title": "42"}, {"payload": "S43", "title": "43"}],
    }]})]  # fmt: skip
    settings = web_settings(
        redis_url,
        outbox=FAST,
        bots={"web": {"url": await serve(aiohttp_server, bot), "secret": SECRET}},
    )
    chat = await aiohttp_client(create_app(settings))
    visitor = await start(chat)
    ws = await socket(chat, visitor["token"])
    await ws.send_json({"type": "hello"})
    await ws.send_json({"type": "message", "client_msg_id": "c-1", "text": "Trail runners?"})
    assert await frame(ws, "typing") == {"type": "typing", "state": "start", "from": "bot"}
    answer = await frame(ws)
    assert answer["from"] == "bot" and answer["text"] == "Which size?"
    assert answer["quick_replies"] == [{"payload": "S42", "title": "42"},
                                       {"payload": "S43", "title": "43"}]  # fmt: skip
    assert await frame(ws, "typing") == {"type": "typing", "state": "stop", "from": "bot"}
    # Catch-up (the history a widget shows on open) carries them too.
    page = await chat.get("/channels/web/messages", headers=bearer(visitor["token"]))
    last = (await page.json())["messages"][-1]
    assert last["quick_replies"][0] == {"payload": "S42", "title": "42"}
    # An agent's reply is not typed by the bot.
    cid = (await customer_of(chat, visitor["visitor_id"]))["customer"]["id"]
    sent = await chat.post(
        f"/v1/customers/{cid}/messages", json={"text": "Marta here", "channel": "web"},
        headers=AGENT,
    )  # fmt: skip
    assert sent.status == 202
    assert (await frame(ws))["text"] == "Marta here"
    await ws.close()


async def test_an_agent_typing_shows_in_the_chat_and_bad_input_is_refused(
    chat: TestClient, redis: Redis
) -> None:
    visitor = await start(chat)
    await say(chat, visitor["token"], "c-1", "Hello?")
    cid = (await customer_of(chat, visitor["visitor_id"]))["customer"]["id"]
    path = f"/v1/customers/{cid}/typing"

    before = await snapshot(redis)
    for body, field in (
        ({"state": "maybe"}, "state"),
        ({"state": "start", "channel": "fax"}, "channel"),
        ({"state": "start", "extra": 1}, None),
    ):
        refused = await chat.post(path, json=body, headers=AGENT)
        assert refused.status == 422, await refused.text()
        assert refused.content_type == "application/problem+json"
        if field:
            assert (await refused.json())["field"] == field
    missing = await chat.post(
        "/v1/customers/cus_00000000000000000000000000/typing", json={"state": "start"},
        headers=AGENT,
    )  # fmt: skip
    assert missing.status == 404
    assert (await chat.post(path, json={"state": "start"})).status == 401
    assert await snapshot(redis) == before

    ws = await socket(chat, visitor["token"])
    await ws.send_json({"type": "hello"})
    started = await chat.post(path, json={"state": "start"}, headers=AGENT)
    assert started.status == 204
    assert await frame(ws, "typing") == {"type": "typing", "state": "start", "from": "agent"}
    # Typing for another channel is not this chat's.
    elsewhere = await chat.post(path, json={"state": "start", "channel": "mobile"}, headers=AGENT)
    assert elsewhere.status == 204
    await chat.post(path, json={"state": "stop", "channel": "web"}, headers=AGENT)
    assert await frame(ws, "typing") == {"type": "typing", "state": "stop", "from": "agent"}
    await ws.close()
