"""The chat widget in a real browser (Debian's chromium, headless), across origins: a shop's
page served from a second local origin embeds it from omni's origin with the one tag,
`<script src="http://127.0.0.1:<omni>/widget.js" async>`, and a visitor chats with a local
bot and an agent. omni runs on a real port and is stopped and started again mid-test.

The run saves the screenshot of the open widget that the README shows (docs/widget.png)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer, unused_port
from redis.asyncio import Redis

from adapters.chat.sessions import IdentityVerifier
from omni.app import create_app
from omni.settings import Settings
from tests.browser import chromium, png
from tests.conftest import AGENT, BOT, make_settings, snapshot
from tests.test_bots import SECRET as BOT_SECRET
from tests.test_bots import BotReceiver, ServerFactory
from tests.test_worker import until

SCREENSHOT = Path(__file__).parent.parent / "docs" / "widget.png"
IDENTITY_SECRET = "widget-identity-secret-0001"
XSS = '<img src=x onerror="window.__pwned=1">'
STORED = re.compile("^(sent|delivered)$")  # delivered once the bot or an agent has it


def shop_page(omni_url: str) -> str:
    """A brand's page: its own (hostile) styles, and the one tag."""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Trail Shop</title>
<style>
  body {{ margin: 0; font: 18px/1.5 Georgia, serif; color: #223; background: #fbf7f0; }}
  header {{ background: #2d3a2e; color: #fff; padding: 18px 40px; font-size: 22px; }}
  main {{ padding: 32px 40px; max-width: 560px; }}
  /* Rules that would wreck a widget living in the page's own DOM. */
  button, textarea, li, ol {{ all: unset; color: red !important; font-size: 30px !important; }}
  .shoe {{ width: 320px; height: 180px; border-radius: 12px; background: #d9cbb2; }}
</style></head>
<body><header>Trail Shop</header>
<main><h1>Trail runner</h1><div class="shoe" role="img" aria-label="The trail runner"></div>
<p>Light, grippy, and in stock in sizes 38 to 46.</p></main>
<script src="{omni_url}/widget.js" async data-omni-color="#1f6f5c"
  data-omni-title="Trail Shop" data-omni-greeting="Hi! Ask us anything about sizes or orders."
></script>
</body></html>"""


class ShopBot(BotReceiver):
    """The shop's bot: it thinks (the test lets it answer), and offers quick replies."""

    def __init__(self) -> None:
        super().__init__()
        self.thinking = asyncio.Event()
        self.answers = [
            (200, {"replies": [{
                "text": "Yes, size 42 is in stock. What else can I do for you?",
                "quick_replies": [{"payload": "ORDER", "title": "Where is my order?"},
                                  {"payload": "HUMAN", "title": "Talk to a person"}],
            }]}),
            (200, {"replies": [{"text": "Order 4417 left our warehouse this morning."}]}),
        ]  # fmt: skip

    async def handle(self, request: web.Request) -> web.Response:
        await self.thinking.wait()
        return await super().handle(request)


class Omni:
    """omni on one port, stopped and started again on the same one (same Redis)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.port = unused_port()
        self.server: TestServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.server = TestServer(create_app(self.settings), host="127.0.0.1", port=self.port)
        await self.server.start_server()

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.close()
            self.server = None


@pytest.fixture
async def shop(aiohttp_server: ServerFactory) -> AsyncIterator[tuple[str, str, dict[str, str]]]:
    """The shop's page on two origins: one omni allows, one it does not."""
    omni_url: dict[str, str] = {}

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=shop_page(omni_url["url"]), content_type="text/html")

    async def chart(request: web.Request) -> web.Response:
        return web.Response(body=b"%PDF-1.4\n", content_type="application/pdf")

    app = web.Application()
    app.router.add_get("/", page)
    app.router.add_get("/size-chart.pdf", chart)
    allowed = await aiohttp_server(app)
    other = web.Application()
    other.router.add_get("/", page)
    blocked = await aiohttp_server(other)
    yield str(allowed.make_url("")).rstrip("/"), str(blocked.make_url("")).rstrip("/"), omni_url


async def api(omni: Omni, method: str, path: str, body: Any = None, **headers: str) -> Any:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, omni.url + path, json=body, headers=headers) as response,
    ):
        assert response.status < 300, await response.text()
        return None if response.status == 204 else await response.json()


async def customer(omni: Omni, external_id: str) -> str:
    path = f"/v1/context?channel=web&external_id={external_id}"
    return str((await api(omni, "GET", path, **BOT))["customer"]["id"])


async def texts(omni: Omni, cid: str) -> list[str]:
    found = await api(omni, "GET", f"/v1/customers/{cid}/history?limit=200", **AGENT)
    return [m.get("text") or "" for m in found["messages"]]


async def axe(page: Any) -> list[str]:
    """axe-core's serious and critical violations on the page (its shadow roots too)."""
    source = resources.files("axe_playwright_python").joinpath("axe.min.js").read_text()
    await page.evaluate(source)
    found = await page.evaluate("axe.run(document, {resultTypes: ['violations']})")
    return [
        f"{v['id']}: {v['help']} ({[n['target'] for n in v['nodes']]})"
        for v in found["violations"]
        if v["impact"] in ("serious", "critical")
    ]


async def test_a_visitor_chats_through_the_widget(
    aiohttp_server: ServerFactory,
    redis_url: str,
    redis: Redis,
    shop: tuple[str, str, dict[str, str]],
) -> None:
    page_url, blocked_url, omni_url = shop
    bot = ShopBot()
    bot_server = await aiohttp_server(bot.app())
    settings = make_settings(
        redis_url,
        web={
            "session_secret": "widget-session-secret-0123456789abcdef",
            "identity_secret": IDENTITY_SECRET,
            "allowed_origins": [page_url],
        },
        bots={"web": {"url": str(bot_server.make_url("/bot")), "secret": BOT_SECRET,
                      "timeout_ms": 20_000}},
        outbox={"in_process_worker": True, "block_ms": 50, "base_delay_ms": 5,
                "max_delay_ms": 20},
    )  # fmt: skip
    omni = Omni(settings)
    await omni.start()
    omni_url["url"] = omni.url
    try:
        async with chromium() as browser:
            await _blocked(browser, blocked_url, redis)
            await _conversation(browser, page_url, omni, bot)
            await _linked(browser, page_url, omni)
    finally:
        bot.thinking.set()
        await omni.stop()


async def _blocked(browser: Any, blocked_url: str, redis: Redis) -> None:
    """A page from an origin omni does not allow gets nothing, a clear console message,
    and nothing is stored (in the browser or in omni)."""
    before = await snapshot(redis)
    context = await browser.new_context()
    page = await context.new_page()
    async with page.expect_console_message(lambda m: "allowed_origins" in m.text) as said:
        await page.goto(blocked_url)
    message = await said.value
    assert message.type == "error"
    assert "refused this page's origin" in message.text
    assert await page.locator("[data-omni]").count() == 0
    assert await page.evaluate("localStorage.length") == 0
    assert await snapshot(redis) == before
    await context.close()


async def _conversation(browser: Any, page_url: str, omni: Omni, bot: ShopBot) -> None:
    from playwright.async_api import expect

    context = await browser.new_context(viewport={"width": 1100, "height": 780})
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    await page.goto(page_url)
    widget = page.locator("[data-omni=chat]")
    launcher = page.get_by_role("button", name="Open chat")
    chat = page.get_by_role("dialog", name="Trail Shop")
    box = page.get_by_role("textbox", name="Write a message")
    mine = chat.locator("li.mine")
    theirs = chat.locator("li.theirs")
    await expect(widget).to_have_attribute("data-status", "online")

    # The visitor opens the bubble and writes; the bot thinks (typing), then answers.
    await launcher.click()
    await expect(chat).to_be_visible()
    await expect(box).to_be_focused()
    await expect(chat).to_contain_text("Hi! Ask us anything about sizes or orders.")
    await box.fill("Hi! Do you have the trail runners in size 42?")
    await box.press("Enter")
    await expect(mine).to_have_count(1)
    await expect(mine.first).to_contain_text("Do you have the trail runners in size 42?")
    await expect(chat.locator(".typing")).to_have_text("Assistant is typing…")
    bot.thinking.set()
    await expect(theirs).to_have_count(1)
    await expect(theirs.first).to_contain_text("Yes, size 42 is in stock.")
    await expect(chat.locator(".typing")).to_have_text("")
    await expect(mine.first).to_have_attribute("data-state", "delivered")
    chips = chat.get_by_role("group", name="Suggested replies").get_by_role("button")
    await expect(chips).to_have_text(["Where is my order?", "Talk to a person"])

    # A reload keeps the conversation (the session lives in the shop's localStorage).
    visitor = await page.evaluate(f"JSON.parse(localStorage.getItem('omni:{omni.url}')).visitor")
    await page.reload()
    await expect(widget).to_have_attribute("data-status", "online")
    await launcher.click()
    await expect(mine).to_have_count(1)
    await expect(theirs).to_have_count(1)

    # A second tab of the shop is the same visitor, with the same conversation.
    tab = await context.new_page()
    await tab.goto(page_url)
    await tab.get_by_role("button", name="Open chat").click()
    await expect(tab.locator("li.mine")).to_have_count(1)
    await expect(tab.locator("li.theirs")).to_have_count(1)

    # A quick reply is tapped: it is the visitor's message, and the bot answers it
    # (live in the other tab too).
    await chips.filter(has_text="Where is my order?").click()
    await expect(mine).to_have_count(2)
    await expect(mine.last).to_contain_text("Where is my order?")
    await expect(theirs.last).to_contain_text("Order 4417 left our warehouse this morning.")
    await expect(chips).to_have_count(0)
    await expect(tab.locator("li.mine")).to_have_count(2)
    await expect(tab.locator("li.theirs")).to_have_count(2)
    await tab.close()
    cid = await customer(omni, visitor)
    assert "Where is my order?" in await texts(omni, cid)

    # Closed bubble: an agent's reply (a picture and a file) arrives live, with a badge.
    await page.keyboard.press("Escape")
    await expect(chat).to_be_hidden()
    await expect(launcher).to_be_focused()
    marta = await api(omni, "POST", f"/v1/customers/{cid}/messages", {
        "channel": "web", "text": "Hi, I'm Marta from the shop. Here is the size chart.",
        "attachments": [{"type": "image", "url": png(160, 90, (31, 111, 92)), "name": "Fit"},
                        {"type": "file", "url": f"{page_url}/size-chart.pdf"}],
    }, **AGENT)  # fmt: skip
    await expect(page.get_by_role("button", name="Open chat, 1 unread")).to_be_visible()
    assert await axe(page) == []  # the closed bubble with its badge
    await launcher.click()
    await expect(page.get_by_role("button", name="Open chat, 1 unread")).to_have_count(0)

    async def read_by_visitor() -> bool:  # opening the panel told the agent
        found = await api(omni, "GET", f"/v1/customers/{cid}/history", **AGENT)
        return any(m["id"] == marta["id"] and m.get("read_at") for m in found["messages"])

    await until(read_by_visitor)
    agent = theirs.last
    await expect(agent).to_contain_text("Here is the size chart.")
    picture = agent.get_by_role("img", name="Fit")
    await expect(picture).to_be_visible()
    assert await picture.evaluate("img => img.complete && img.naturalWidth === 160")
    link = agent.get_by_role("link", name="size-chart.pdf")
    await expect(link).to_have_attribute("href", f"{page_url}/size-chart.pdf")

    # The open panel traps focus, and axe-core finds nothing serious in it either.
    for _ in range(8):
        await page.keyboard.press("Tab")
        assert await widget.evaluate("host => host.shadowRoot.activeElement !== null")
    assert await axe(page) == []
    await box.focus()
    await page.screenshot(path=str(SCREENSHOT))

    # HTML from the visitor and from an agent is shown as text, never run.
    await box.fill(XSS)
    await box.press("Enter")
    await expect(mine.last.locator(".text")).to_have_text(XSS)
    await api(omni, "POST", f"/v1/customers/{cid}/typing", {"state": "start"}, **AGENT)
    await expect(chat.locator(".typing")).to_have_text("Team is typing…")
    await api(omni, "POST", f"/v1/customers/{cid}/messages",
              {"channel": "web", "text": XSS}, **AGENT)  # fmt: skip
    await expect(theirs.last.locator(".text")).to_have_text(XSS)
    await expect(chat.locator(".typing")).to_have_text("")
    assert await page.evaluate("window.__pwned") is None
    assert await chat.locator("img[src=x]").count() == 0
    assert (await texts(omni, cid)).count(XSS) == 2

    # Too long: the documented limit is shown, nothing is sent.
    sent = await mine.count()
    await box.fill("a" * 4097)
    await box.press("Enter")
    await expect(chat.get_by_role("alert")).to_have_text(
        "A message can be at most 4096 characters; this one has 4097."
    )
    await expect(mine).to_have_count(sent)
    await box.fill("")

    # A wrong hash is refused: the visitor stays anonymous, and the page is told why.
    refused = await page.evaluate(
        f"omni.identify({{user: 'cust_000777', hash: '{'0' * 64}'}}).catch(e => e.message)"
    )
    assert refused == "identifier_hash does not match the identifier"
    assert await customer(omni, visitor) == cid

    # identify() logs the visitor in: the agent sees one customer with everything.
    user_hash = IdentityVerifier(IDENTITY_SECRET).user_hash("cust_000777")
    await page.evaluate(f"omni.identify({{user: 'cust_000777', hash: '{user_hash}'}})")
    assert await customer(omni, "user:cust_000777") == cid
    assert await customer(omni, visitor) == cid
    await expect(mine).to_have_count(sent)
    await box.fill("I'm logged in now.")
    await box.press("Enter")
    await expect(mine.last).to_have_attribute("data-state", STORED)
    assert "I'm logged in now." in await texts(omni, cid)

    # omni stops: the banner says so, and what the visitor writes meanwhile is sent once
    # when omni is back on the same port.
    await omni.stop()
    banner = chat.get_by_role("status").filter(has_text="You are offline")
    await expect(banner).to_be_visible()
    await expect(widget).to_have_attribute("data-status", "offline")
    await box.fill("Are you still there?")
    await box.press("Enter")
    await expect(mine.last).to_have_attribute("data-state", "waiting")
    await omni.start()
    await expect(banner).to_be_hidden()
    await expect(mine.last).to_have_attribute("data-state", STORED)
    await expect(mine.filter(has_text="Are you still there?")).to_have_count(1)
    assert (await texts(omni, cid)).count("Are you still there?") == 1

    # Down again, and the visitor reloads meanwhile: what they wrote is kept in the page's
    # storage and sent, once, when the page is next opened with omni back.
    await omni.stop()
    await expect(banner).to_be_visible()
    await box.fill("Hello again?")
    await box.press("Enter")
    await expect(mine.last).to_have_attribute("data-state", "waiting")
    await page.reload()
    await omni.start()
    await page.reload()
    await launcher.click()
    await expect(mine.filter(has_text="Hello again?")).to_have_count(1)
    await expect(mine.filter(has_text="Hello again?")).to_have_attribute("data-state", STORED)
    await expect(mine.filter(has_text="Are you still there?")).to_have_count(1)
    assert (await texts(omni, cid)).count("Hello again?") == 1
    assert await page.evaluate("window.__pwned") is None
    assert errors == []
    await context.close()


async def _linked(browser: Any, page_url: str, omni: Omni) -> None:
    """A link a bot sent on Instagram, opened on the shop's site (`?omni_link=…`): the new
    visitor continues as that customer, and the page's address loses the token."""
    from playwright.async_api import expect

    ig = await api(omni, "POST", "/v1/messages", {
        "channel": "instagram", "external_id": "ig-ana", "channel_message_id": "ig-1",
        "text": "Can I finish this on your website?",
    }, **BOT)  # fmt: skip
    cid = ig["customer_id"]
    link = await api(omni, "POST", f"/v1/customers/{cid}/link-tokens", {"channel": "web"}, **BOT)
    context = await browser.new_context()
    page = await context.new_page()
    await page.goto(f"{page_url}/?ref=ig&omni_link={link['token']}")
    await expect(page.locator("[data-omni=chat]")).to_have_attribute("data-status", "online")
    assert page.url == f"{page_url}/?ref=ig"
    visitor = await page.evaluate(f"JSON.parse(localStorage.getItem('omni:{omni.url}')).visitor")
    assert await customer(omni, visitor) == cid
    await api(omni, "POST", f"/v1/customers/{cid}/messages",
              {"channel": "web", "text": "Welcome back, Ana!"}, **AGENT)  # fmt: skip
    await page.get_by_role("button", name="Open chat").click()
    await expect(page.locator("li.theirs")).to_contain_text(["Welcome back, Ana!"])

    # omni.reset() logs out: a new anonymous visitor who inherits nothing.
    await page.evaluate("omni.reset()")
    await expect(page.locator("li.theirs")).to_have_count(0)
    fresh = await page.evaluate(f"JSON.parse(localStorage.getItem('omni:{omni.url}')).visitor")
    assert fresh != visitor
    await context.close()
