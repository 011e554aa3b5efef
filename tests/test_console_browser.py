"""The agents' console: served from the package, and used in a real browser (Debian's
chromium, headless, driven by Playwright) against a real omni on a real port: sign in,
find the customer, read a web + voice + Instagram timeline, take over, reply, and watch
the reply's delivery status change in place.

Set OMNI_SCREENSHOT=docs/console.png to keep the screenshot it takes."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from redis.asyncio import Redis

from omni.app import create_app
from tests.adapters.test_instagram import Graph
from tests.browser import chromium, png
from tests.conftest import AGENT, BOT, make_settings
from tests.test_bots import ServerFactory
from tests.test_channel_instagram import FAST, INSTAGRAM

AGENT_KEY = AGENT["Authorization"].removeprefix("Bearer ")


# -- served from the package ---------------------------------------------------------------


async def test_the_console_is_served_from_the_package(client: TestClient) -> None:
    for name in ("index.html", "console.js", "console.css", "reports.js"):
        assert resources.files("omni").joinpath(f"console/{name}").is_file()
    page = await client.get("/console")
    assert page.status == 200
    assert page.content_type == "text/html"
    html = await page.text()
    assert '<label for="key">Agent API key</label>' in html
    policy = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    script = await client.get("/console/console.js")
    assert script.status == 200 and script.content_type == "text/javascript"
    styles = await client.get("/console/console.css")
    assert styles.status == 200 and styles.content_type == "text/css"


async def test_nothing_else_is_served_from_the_console_folder(client: TestClient) -> None:
    for path in ("/console/app.py", "/console/..%2Fapp.py", "/console/index.htm", "/console/"):
        response = await client.get(path)
        assert response.status == 404, path
        assert response.content_type == "application/problem+json"


# -- in a real browser -----------------------------------------------------------------------


@pytest.fixture
async def omni(
    aiohttp_server: ServerFactory, redis_url: str, redis: Redis
) -> AsyncIterator[TestServer]:
    """omni on a real port, sending Instagram replies to a local Graph API."""
    graph = Graph()
    graph_app = web.Application()
    graph_app.router.add_post("/v22.0/{account}/messages", graph.handle)
    graph_server = await aiohttp_server(graph_app)
    settings = make_settings(
        redis_url,
        instagram={**INSTAGRAM, "graph_url": str(graph_server.make_url("/v22.0"))},
        outbox=FAST,
    )
    server = await aiohttp_server(create_app(settings))
    yield server
    graph.release.set()


async def post(server: TestServer, session: Any, path: str, body: Any, **headers: str) -> Any:
    async with session.request(
        headers.pop("method", "POST"), server.make_url(path), json=body, headers=headers
    ) as response:
        assert response.status < 300, await response.text()
        return await response.json()


async def seed(server: TestServer) -> str:
    """Ana wrote on the web, called, then wrote on Instagram (the channel she uses now)."""
    async with aiohttp.ClientSession() as session:
        first = await post(server, session, "/v1/messages", {
            "channel": "web", "external_id": "visitor-ana", "channel_message_id": "w-1",
            "author_name": "Ana Silva", "text": "Do you have these shoes in size 42?",
        }, **BOT)  # fmt: skip
        cid = first["customer_id"]
        for channel, external_id in (("instagram", "ig-ana"), ("voice", "+34600111222")):
            await post(server, session, f"/v1/customers/{cid}/identities",
                       {"channel": channel, "external_id": external_id}, **AGENT)  # fmt: skip
        await post(server, session, "/v1/messages", {
            "channel": "voice", "external_id": "+34600111222", "channel_message_id": "CA1-1",
            "voice": {"call_id": "CA1", "transcript": "I am calling about order 4417",
                      "confidence": 0.92},
        }, **BOT)  # fmt: skip
        await post(server, session, "/v1/messages", {
            "channel": "instagram", "external_id": "ig-ana", "channel_message_id": "ig-1",
            "text": "This is the box I got", "attachments": [{"type": "image", "url": png()}],
        }, **BOT)  # fmt: skip
        await post(server, session, f"/v1/customers/{cid}/facts",
                   {"facts": {"order_id": {"value": "4417"}, "shoe_size": {"value": 42}}},
                   method="PATCH", **BOT)  # fmt: skip
        async with session.get(server.make_url(f"/v1/customers/{cid}/cart"), headers=BOT) as got:
            version = got.headers["ETag"]
        await post(server, session, f"/v1/customers/{cid}/cart", {
            "items": [{"sku": "SHOE-42", "name": "Trail runner, size 42", "quantity": 1,
                       "unit_price": 8900, "currency": "EUR"}],
            "stage": "checkout",
        }, method="PUT", **{**BOT, "If-Match": version})  # fmt: skip
    return str(cid)


async def typing_told(server: TestServer, cid: str) -> list[str]:
    """The `typing` states the customer's live events carry, from the first event on."""
    states: list[str] = []
    url = server.make_url(f"/v1/customers/{cid}/events")
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, headers={**AGENT, "Last-Event-ID": "0-0"}) as stream,
    ):
        kind = ""
        async with asyncio.timeout(10):
            async for raw in stream.content:
                line = raw.decode().strip()
                if line.startswith("event: "):
                    kind = line.removeprefix("event: ")
                elif line.startswith("data: ") and kind == "typing":
                    event = json.loads(line.removeprefix("data: "))
                    assert event["data"]["from"] == "agent"
                    states.append(event["data"]["state"])
                    if states[-1] == "stop":
                        return states
    return states


async def write(server: TestServer, text: str, mid: str) -> None:
    async with aiohttp.ClientSession() as session:
        body = {"channel": "instagram", "external_id": "ig-ana", "channel_message_id": mid,
                "text": text}  # fmt: skip
        await post(server, session, "/v1/messages", body, **BOT)


async def test_an_agent_works_a_conversation_in_the_console(
    omni: TestServer, tmp_path: Path
) -> None:
    from playwright.async_api import expect

    cid = await seed(omni)
    async with chromium() as browser:
        page = await browser.new_page(viewport={"width": 1366, "height": 860})
        problems: list[str] = []
        page.on("pageerror", lambda error: problems.append(str(error)))
        await page.goto(str(omni.make_url("/console")))

        # Sign in with an agent key.
        await page.get_by_label("Agent API key").fill(AGENT_KEY)
        await page.get_by_role("button", name="Sign in").click()
        await expect(page.locator("#who")).to_have_text("Signed in as test agent (agent)")

        # Find Ana and open her.
        await page.get_by_label("Find a customer").fill("Ana")
        await page.get_by_label("Find a customer").press("Enter")
        await page.get_by_role("button", name="Ana Silva").click()
        await expect(page.locator("#customer-name")).to_have_text("Ana Silva")

        # One timeline, three channels, each with its badge, the picture and the call
        # (and the cart's progress, which omni notes on the timeline itself).
        await expect(page.locator("#timeline > li.system")).to_contain_text("checkout")
        timeline = page.locator("#timeline > li:not(.system)")
        await expect(timeline).to_have_count(3)
        channels = [await row.get_attribute("data-channel") for row in await timeline.all()]
        assert channels == ["web", "voice", "instagram"]
        await expect(timeline.locator(".badge")).to_have_text(["web", "voice", "instagram"])
        await expect(page.locator("#timeline .transcript")).to_contain_text(
            "I am calling about order 4417"
        )
        picture = page.locator("#timeline img")
        await expect(picture).to_be_visible()
        assert await picture.evaluate("img => img.complete && img.naturalWidth > 0")
        await expect(page.locator("#facts")).to_contain_text("4417")
        await expect(page.locator("#cart")).to_contain_text("Trail runner, size 42")

        # Take over from the bot.
        await expect(page.locator("#holder")).to_have_text("The bot answers")
        await page.get_by_role("button", name="Take over").click()
        await expect(page.locator("#holder")).to_contain_text("Held by test agent")
        await expect(page.locator("#take")).to_have_text("Hand back to the bot")

        # Reply: it goes out on Instagram and its status changes in place.
        await page.get_by_label("Reply").fill("Your order 4417 ships today.")
        await page.get_by_label("Reply").press("Control+Enter")
        mine = page.locator("#timeline > li.outbound")
        await expect(mine).to_have_count(1)
        await expect(mine.locator(".text")).to_have_text("Your order 4417 ships today.")
        await expect(mine.locator(".badge")).to_have_text("instagram")
        await expect(mine.locator("[data-status]")).to_have_attribute("data-status", "sent")
        # While the agent wrote, the customer's chats were told (and then told it stopped).
        assert await typing_told(omni, cid) == ["start", "stop"]

        # Ana answers: it appears without a reload.
        await write(omni, "Great, thank you!", "ig-2")
        await expect(timeline).to_have_count(5)
        await expect(timeline.last).to_contain_text("Great, thank you!")
        await expect(page.locator("#inbox")).to_contain_text("Great, thank you!")

        # Everything on the page is reachable with a label.
        for control in ("#q", "#reply", "#channel"):
            label = await page.locator(control).evaluate("e => e.labels[0].textContent")
            assert label.strip()

        shot = tmp_path / "console.png"
        await page.screenshot(path=str(shot))
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        keep = os.environ.get("OMNI_SCREENSHOT")
        if keep:
            shutil.copyfile(shot, keep)
        assert problems == []


async def play_for_the_report(server: TestServer) -> dict[str, Any]:
    """Two web visitors, each answered by the bot and resolved, who rate it 4 and 5 (the
    answer to the CSAT question omni asked); a third still waiting. Returns the figures
    the report must show, computed here from what was played."""
    async with aiohttp.ClientSession() as session:
        cids = []
        for n, (score, wait) in enumerate(((4, False), (5, False), (None, True))):
            visitor = f"visitor-{n}"
            said = await post(server, session, "/v1/messages", {
                "channel": "web", "external_id": visitor, "channel_message_id": f"q-{n}",
                "text": "Where is my parcel?"}, **BOT)  # fmt: skip
            cid = said["customer_id"]
            cids.append(cid)
            if wait:
                continue
            await post(server, session, f"/v1/customers/{cid}/messages",
                       {"text": "It arrives tomorrow.", "channel": "web"}, **BOT)  # fmt: skip
            await post(server, session, f"/v1/customers/{cid}/resolve", {}, **BOT)
            await post(server, session, "/v1/messages", {
                "channel": "web", "external_id": visitor, "channel_message_id": f"a-{n}",
                "text": str(score)}, **BOT)  # fmt: skip
    return {"conversations": 3, "resolved": 2, "csat": "4.5 / 5", "rate": "100 %"}


async def test_the_reports_view_charts_the_figures_over_time(omni: TestServer) -> None:
    from playwright.async_api import expect

    expected = await play_for_the_report(omni)
    async with chromium() as browser:
        page = await browser.new_page(viewport={"width": 1366, "height": 900})
        problems: list[str] = []
        page.on("pageerror", lambda error: problems.append(str(error)))
        await page.goto(str(omni.make_url("/console")))
        await page.get_by_label("Agent API key").fill(AGENT_KEY)
        await page.get_by_role("button", name="Sign in").click()
        await page.get_by_role("button", name="Reports").click()
        await expect(page.locator("#report-status")).to_contain_text("Report for")

        def figure(name: str) -> Any:
            return page.locator(f'#report-totals [data-figure="{name}"] dd')

        await expect(figure("Conversations")).to_have_text(str(expected["conversations"]))
        await expect(figure("Resolved")).to_have_text(str(expected["resolved"]))
        await expect(figure("CSAT average")).to_have_text(expected["csat"])
        await expect(figure("CSAT response rate")).to_have_text(expected["rate"])
        await expect(figure("Returning customers")).to_have_text("0")

        # A chart per figure, over the 30 days shown: an image with a name, today's
        # bar carrying today's figure, and the same figures in a table beside it.
        chart = page.get_by_role("img", name="Conversations by day", exact=False)
        await expect(chart).to_have_count(1)
        bars = chart.locator("rect.bar")
        await expect(bars).to_have_count(30)
        assert await bars.last.get_attribute("data-value") == "3"
        assert await bars.first.get_attribute("data-value") == "0"
        csat = page.locator('svg[data-chart="CSAT average"] rect.bar')
        assert await csat.last.get_attribute("data-value") == "4.5"
        table = page.locator("table", has_text="Conversations by day")
        await expect(table.locator("tr").last).to_contain_text("3")

        # Narrowing to a channel with nothing on it empties the figures.
        await page.get_by_label("Channel", exact=True).select_option("sms")
        await page.get_by_role("button", name="Show").click()
        await expect(page.locator("#report-status")).to_contain_text("on sms")
        await expect(figure("Conversations")).to_have_text("0")
        # A range the API refuses says why.
        await page.get_by_label("From", exact=True).fill("2020-01-01")
        await page.get_by_role("button", name="Show").click()
        await expect(page.locator("#report-error")).to_contain_text("over 1 year")

        # Back to the conversations.
        await page.get_by_role("button", name="Conversations").click()
        await expect(page.locator("#desk")).to_be_visible()
        assert problems == []


async def _record(server: TestServer, session: Any, cid: str) -> dict[str, Any]:
    """A customer as a client sees it (omni's own events left out)."""
    url = server.make_url(f"/v1/customers/{cid}/context")
    async with session.get(url, headers=BOT, allow_redirects=False) as got:
        assert got.status == 200, await got.text()
        context = await got.json()
    url = server.make_url(f"/v1/customers/{cid}/history?limit=200")
    async with session.get(url, headers=AGENT) as got:
        messages = (await got.json())["messages"]
    return {
        "profile": context["customer"]["profile"],
        "identities": sorted(
            (i["channel"], i["external_id"]) for i in context["customer"]["identities"]
        ),
        "facts": {k: (f["value"], f["at"]) for k, f in context["facts"].items()},
        "cart": context["cart"],
        "messages": [(m["id"], m.get("text")) for m in messages if m["channel"] != "system"],
    }


async def test_a_wrong_merge_is_previewed_performed_audited_and_undone_in_the_console(
    omni: TestServer,
) -> None:
    from playwright.async_api import expect

    ana = await seed(omni)
    async with aiohttp.ClientSession() as session:
        # Another Ana, on Instagram, with her own order: not the same person.
        other = (await post(omni, session, "/v1/messages", {
            "channel": "instagram", "external_id": "ig-souza", "channel_message_id": "s-1",
            "author_name": "Ana Souza", "text": "Where is order 9001?",
        }, **BOT))["customer_id"]  # fmt: skip
        await post(omni, session, f"/v1/customers/{other}/facts",
                   {"facts": {"order_id": {"value": "9001"}}}, method="PATCH", **BOT)  # fmt: skip
        await post(omni, session, f"/v1/customers/{other}/handoff", {"to": "agent"}, **BOT)
        was = {cid: await _record(omni, session, cid) for cid in (ana, other)}

    async with chromium() as browser:
        page = await browser.new_page(viewport={"width": 1366, "height": 900})
        problems: list[str] = []
        page.on("pageerror", lambda error: problems.append(str(error)))
        await page.goto(str(omni.make_url("/console")))
        await page.get_by_label("Agent API key").fill(AGENT_KEY)
        await page.get_by_role("button", name="Sign in").click()
        # The inbox starts with who waits now (GET /v1/conversations).
        await expect(page.locator("#inbox")).to_contain_text("Ana Souza")
        await expect(page.locator("#inbox .waiting")).to_contain_text("Where is order 9001?")
        await page.get_by_label("Find a customer").fill("Ana Silva")
        await page.get_by_label("Find a customer").press("Enter")
        await page.get_by_role("button", name="Ana Silva").click()
        await expect(page.locator("#customer-name")).to_have_text("Ana Silva")

        # The preview: both records side by side, the conflict and its winner.
        await page.get_by_label("Customer to merge into this one").fill(other)
        await page.get_by_role("button", name="Preview merge").click()
        preview = page.get_by_role("region", name="Merge preview")
        await expect(preview).to_contain_text("Preview: nothing has changed yet")
        conflict = preview.locator('tr[data-fact="order_id"]')
        await expect(conflict).to_contain_text("Fact: order_id (conflict)")
        await expect(conflict.locator("td.wins")).to_have_text("9001")  # newer wins
        # The evidence says what a wrong merge has: nothing in common.
        await expect(preview.locator(".evidence")).to_contain_text("nothing in common")
        await expect(page.locator("#audit")).not_to_contain_text("Merged")

        # Performed, it is on the timeline and in the audit trail.
        await page.get_by_role("button", name="Confirm merge").click()
        await expect(page.locator("#timeline > li.system").last).to_contain_text(
            f"Merged customer {other}"
        )
        await expect(page.locator("#audit li").first).to_contain_text(
            "Merged by test agent (agent)"
        )
        await expect(page.locator("#facts")).to_contain_text("9001")

        # Meanwhile the other Ana writes again: it lands on the merged record.
        async with aiohttp.ClientSession() as session:
            late = await post(omni, session, "/v1/messages", {
                "channel": "instagram", "external_id": "ig-souza",
                "channel_message_id": "s-2", "text": "Hello? Order 9001",
            }, **BOT)  # fmt: skip
        await expect(page.locator("#timeline")).to_contain_text("Hello? Order 9001")

        # Undone from the merge's event.
        undo = page.get_by_role("button", name="Undo merge")
        await undo.click()
        await expect(page.locator("#timeline")).to_contain_text("Merge undone")
        await expect(page.locator("#audit li").first).to_contain_text("Merge undone")
        await expect(page.locator("#facts")).to_contain_text("4417")
        await expect(page.locator("#timeline")).not_to_contain_text("Hello? Order 9001")
        assert problems == []

    # Both customers exactly as before, plus what arrived meanwhile (on its own record).
    async with aiohttp.ClientSession() as session:
        now = {cid: await _record(omni, session, cid) for cid in (ana, other)}
    assert now[ana] == was[ana]
    assert now[other] | {"messages": None} == was[other] | {"messages": None}
    assert now[other]["messages"] == [(late["id"], "Hello? Order 9001"), *was[other]["messages"]]
