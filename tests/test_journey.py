"""The acceptance story of DESIGN.md, end to end through the real adapters: web chat →
Instagram → link → phone → agent reply → mobile checkout → WhatsApp through a link token
→ an authenticated e-mail, played by `omni demo`'s own script against a real omni on a
real port, asserting at each step what the next channel's bot receives. Then the
messaging channels' journey, which starts in the chat widget on a shop's page in a real
browser: widget → WhatsApp through a link token → an e-mail receipt over SMTP → the
customer's e-mailed answer → an agent's answer shown live in the widget, each channel's
bot (a local bot server) told what was said on the channels before. Every log line of
the acceptance story, and of WhatsApp, SMS and e-mail posts, is searched for the
customer's personal data: phone, e-mail, name, words, tokens."""

from __future__ import annotations

from typing import Any

import aiohttp
from aiohttp import web
from redis.asyncio import Redis

from omni.app import create_app
from omni.demo import Story
from omni.settings import Settings
from tests.adapters.test_email import BASIC, edited
from tests.adapters.test_email import payload as email_payload
from tests.adapters.test_instagram import ACCOUNT, PAGE_TOKEN, SECRET, Graph
from tests.browser import chromium
from tests.conftest import AGENT, BOT, make_settings
from tests.everything import Logs, full_settings
from tests.smtp_server import Mailbox, has_mails
from tests.test_bots import SECRET as BOT_SECRET
from tests.test_bots import BotReceiver, ServerFactory
from tests.test_channel_email import EMAIL, mailgun_fields
from tests.test_channel_email import REPLY as EMAIL_REPLY
from tests.test_channel_email import signed as mailgun_signed
from tests.test_channel_sms import fixture as sms_fixture
from tests.test_channel_voice import PUBLIC
from tests.test_channel_whatsapp import WHATSAPP
from tests.test_widget_browser import shop_page
from tests.test_worker import until
from tests.whatsapp_graph import WA_ID, message, signature
from tests.whatsapp_graph import Graph as WhatsAppGraph
from tests.whatsapp_graph import raw as whatsapp_raw

FORM = "application/x-www-form-urlencoded"
FAST = {"in_process_worker": True, "block_ms": 50, "base_delay_ms": 5, "max_delay_ms": 20}


async def _upstreams(aiohttp_server: ServerFactory) -> tuple[Graph, dict[str, BotReceiver], str]:
    """A Graph API and a bot per channel, on one local server."""
    graph = Graph()
    bots = {c: BotReceiver() for c in ("web", "instagram", "mobile", "whatsapp", "email")}
    app = web.Application()
    app.router.add_post("/v22.0/{account}/messages", graph.handle)
    for channel, bot in bots.items():
        app.router.add_post(f"/bot/{channel}", bot.handle)
    server = await aiohttp_server(app)
    return graph, bots, str(server.make_url(""))


async def test_the_acceptance_story(
    aiohttp_server: ServerFactory, redis_url: str, redis: Redis
) -> None:
    _, bots, upstream = await _upstreams(aiohttp_server)
    settings = make_settings(
        redis_url,
        server={"public_url": "https://omni.example.com"},
        instagram={
            "app_secret": SECRET,
            "verify_token": "verify-me",
            "page_token": PAGE_TOKEN,
            "account_id": ACCOUNT,
            "graph_url": f"{upstream}/v22.0",
        },
        twilio={"auth_token": "twilio-token-for-the-story-0001"},
        web={"session_secret": "w" * 40, "identity_secret": "web-identity-secret"},
        mobile={"session_secret": "m" * 40, "identity_secret": "mobile-identity-secret"},
        whatsapp=WHATSAPP,  # replies would go to a Graph nobody serves: none is sent here
        email=EMAIL,
        bots={c: {"url": f"{upstream}/bot/{c}", "secret": BOT_SECRET} for c in bots},
        outbox=FAST,
    )
    logs = Logs()  # everything omni logs from here on, as JSON lines
    server = await aiohttp_server(create_app(settings))
    lines: list[str] = []
    base = str(server.make_url("")).rstrip("/")
    async with aiohttp.ClientSession() as http:
        story = Story(http, base, settings, lines.append)
        steps = await story.run()
        cid = story.customer_id

        async def webhooks(channel: str) -> list[dict[str, Any]]:
            return list(bots[channel].delivered.values())

        # 1. The website: the web bot is told of each message, with the context.
        web_step = steps[0]
        assert web_step.bot_sees["customer"]["id"] == cid
        assert web_step.bot_sees["cart"]["stage"] == "checkout"
        await until(lambda: _count(bots["web"], 2))
        first = (await webhooks("web"))[0]
        assert first["message"]["text"] == "Hi! Do you have the trail running shoes in size 42?"
        assert first["context"]["customer"]["id"] == first["customer_id"]

        # 2. Instagram: a stranger at first, then — once linked — everything known.
        ig_step = steps[1]
        context = ig_step.bot_sees
        assert context["customer"]["id"] == cid
        assert context["known"]["order_id"]["value"] == "4417"
        assert context["known"]["order_id"]["source"] == {"channel": "web"}
        assert context["known"]["email"]["value"] == story.email
        assert context["cart"]["stage"] == "checkout"
        assert context["continuity"]["came_from"] == "web"
        assert "order 4417" in context["continuity"]["resume_hint"]
        await until(lambda: _count(bots["instagram"], 1))
        ig_first = (await webhooks("instagram"))[0]
        assert ig_first["message"]["text"] == "hi! any news on my order?"
        assert ig_first["context"]["facts"] == {}  # not linked yet: nothing leaked
        assert any("become one" in line for line in ig_step.said)

        # 3. The phone: the verified number is hers; the greeting knows the order.
        voice_step = steps[2]
        greeting = next(line for line in voice_step.said if line.startswith("the phone answers"))
        assert "4417" in greeting
        assert voice_step.bot_sees["customer"]["id"] == cid
        assert voice_step.bot_sees["continuity"]["came_from"] == "instagram"

        # 4. The agent: one time-ordered history, the reply on the channel in use now.
        agent_step = steps[3]
        assert any("web → instagram → voice → web" in line for line in agent_step.said)
        reply = agent_step.bot_sees["reply"]
        assert (reply["channel"], reply["author"]["kind"]) == ("web", "agent")

        async def reply_sent() -> bool:
            history = await http.get(f"{base}/v1/customers/{cid}/history", headers=AGENT)
            messages = (await history.json())["messages"]
            mine = [m for m in messages if m["id"] == reply["id"]]
            return bool(mine) and mine[0]["status"]["state"] in ("sent", "delivered")

        await until(reply_sent)

        # 5. The app: the same customer, the same cart at the same step, then placed.
        app_step = steps[4]
        assert app_step.bot_sees["customer"]["id"] == cid
        assert app_step.bot_sees["cart"]["stage"] == "checkout"
        assert [i["sku"] for i in app_step.bot_sees["cart"]["items"]] == ["TRAIL-42"]
        assert any("order 4418 placed" in line for line in app_step.said)

        # 6. WhatsApp through a link token: the WhatsApp bot knows her, her order and cart.
        wa_step = steps[5]
        assert wa_step.bot_sees["customer"]["id"] == cid
        assert wa_step.bot_sees["facts"]["order_id"]["value"] == "4417"
        assert wa_step.bot_sees["cart"]["order_id"] == "4418"
        assert wa_step.bot_sees["continuity"]["came_from"] == "web"
        said = [m.get("text") for m in wa_step.bot_sees["recent_messages"]]
        assert "I'm back on the website — can someone confirm the delivery date?" in said
        await until(lambda: _count(bots["whatsapp"], 2))
        wa_told = list(bots["whatsapp"].delivered.values())[-1]
        assert wa_told["message"]["text"] == "Will order 4418 ship together with 4417?"
        assert wa_told["context"]["customer"]["id"] == cid

        # 7. E-mail from her verified address, authenticated: the same customer, and the
        # e-mail bot reads what she asked on WhatsApp.
        mail_step = steps[6]
        assert mail_step.bot_sees["customer"]["id"] == cid
        assert mail_step.bot_sees["continuity"]["came_from"] == "whatsapp"
        said = [m.get("text") for m in mail_step.bot_sees["recent_messages"]]
        assert "Will order 4418 ship together with 4417?" in said
        await until(lambda: _count(bots["email"], 1))
        [mail_told] = bots["email"].delivered.values()
        assert mail_told["context"]["customer"]["id"] == cid
        assert mail_told["message"]["text"] == (
            "Please leave the parcel with the neighbour at number 7."
        )

    identities = {(i["channel"], i["external_id"]) for i in context["customer"]["identities"]}
    assert ("instagram", story.instagram_user) in identities
    assert ("voice", story.phone) in {
        (i["channel"], i["external_id"]) for i in voice_step.bot_sees["customer"]["identities"]
    }
    assert lines[-1].strip() == "One customer, six channels, nothing asked twice."
    _no_personal_data(logs, story, settings, await _words(base, cid))


async def _words(base: str, cid: str) -> list[str]:
    """Everything the customer and omni said, from the history."""
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{base}/v1/customers/{cid}/history?limit=200", headers=AGENT) as answer,
    ):
        history = await answer.json()
    return [m["text"] for m in history["messages"] if m.get("text")]


def _no_personal_data(logs: Logs, story: Story, settings: Settings, words: list[str]) -> None:
    phone_digits = story.phone.lstrip("+")
    secrets = [
        story.phone,
        phone_digits,
        phone_digits[-10:],  # the national number
        story.email,
        story.wa_id,
        "Ana Silva",
        story.web_token,
        story.web_token.split(".")[-1],  # a token's signature alone
        *(key.key.reveal() for key in settings.api_keys),
        PAGE_TOKEN,
        SECRET,
    ]
    # Every message's text, and each run of four words of it (not single words: "order"
    # or "size" also name fields in omni's own lines).
    for text in words:
        secrets.append(text)
        tokens = text.split()
        secrets += [" ".join(tokens[i : i + 4]) for i in range(max(0, len(tokens) - 3))]
    assert len(logs.lines()) > 20  # the journey was logged
    leaks = [
        (secret, line)
        for line in logs.text.splitlines()
        for secret in secrets
        if len(secret) >= 6 and secret in line
    ]
    assert leaks == [], "\n".join(f"{secret!r} in {line[:300]}" for secret, line in leaks[:20])


async def _count(bot: BotReceiver, n: int) -> bool:
    return len(bot.delivered) >= n


async def test_the_new_channels_log_no_personal_data(
    aiohttp_client: Any, redis_url: str, redis: Redis
) -> None:
    """Dana writes on WhatsApp, texts by SMS and mails through Postmark and Mailgun:
    every log line of it is searched for her number, address, name and words."""
    client = await aiohttp_client(create_app(full_settings(redis_url)))
    logs = Logs()
    body = whatsapp_raw("whatsapp_text.json")
    whatsapp = {"Content-Type": "application/json", "X-Hub-Signature-256": signature(body)}
    sms = sms_fixture("twilio_sms_incoming")
    twilio = {"Content-Type": FORM, "X-Twilio-Signature": sms.signature}
    postmark = {"Content-Type": "application/json", "Authorization": BASIC}
    posts = [
        ("/channels/whatsapp/webhook", body, whatsapp),
        (sms.url.removeprefix(PUBLIC), sms.body, twilio),
        ("/channels/email/inbound", email_payload("email_postmark_inbound.json"), postmark),
        ("/channels/email/inbound", mailgun_signed(mailgun_fields()), {"Content-Type": FORM}),
    ]
    for path, data, headers in posts:
        answer = await client.post(path, data=data, headers=headers)
        assert answer.status == 200, await answer.text()
    history = await client.get(
        "/v1/context", params={"channel": "email", "external_id": "dana@example.net"},
        headers=AGENT,
    )  # fmt: skip
    assert history.status == 200  # stored: the lines below are of real work
    text = logs.text
    assert '"route":"/channels/sms/twilio"' in text  # the requests were logged
    for personal in ("14155550123", "+1 415", "dana@example.net", "Dana Example",
                     "shipped", "Gracias", "has not arrived", "Any update"):  # fmt: skip
        assert personal not in text, personal


# -- the widget → WhatsApp → e-mail receipt → e-mail answer → the widget -------------------

DANA = "dana@example.net"  # the address the e-mail fixtures are from
FIRST_WORDS = "Hi! I ordered the trail shoes, order 4417. Can I still change the address?"
ON_WHATSAPP = "It's Dana again, from my phone. The new address is Rua Nova 5, Porto."


async def test_the_widget_then_whatsapp_then_an_email_receipt_and_its_answer(
    aiohttp_server: ServerFactory, redis_url: str, redis: Redis, mailbox: tuple[Mailbox, int]
) -> None:
    """The journey starts where most do, on the shop's website: a visitor writes in the
    chat widget (Chromium, the shop's page on its own origin embedding omni's one tag),
    continues on WhatsApp through a link, gets a receipt by e-mail and answers it; then
    an agent answers on the website, and the widget still open there shows it live."""
    box, smtp_port = mailbox
    graph = WhatsAppGraph()
    upstream_app = graph.app()
    bots = {channel: BotReceiver() for channel in ("web", "whatsapp", "email")}
    for channel, bot in bots.items():
        upstream_app.router.add_post(f"/bot/{channel}", bot.handle)
    upstream = str((await aiohttp_server(upstream_app)).make_url("")).rstrip("/")
    omni_url: dict[str, str] = {}

    async def shop(request: web.Request) -> web.Response:
        return web.Response(text=shop_page(omni_url["url"]), content_type="text/html")

    shop_app = web.Application()
    shop_app.router.add_get("/", shop)
    shop_url = str((await aiohttp_server(shop_app)).make_url("")).rstrip("/")
    settings = make_settings(
        redis_url,
        web={"session_secret": "w" * 40, "identity_secret": "web-identity-secret",
             "allowed_origins": [shop_url]},
        whatsapp={**WHATSAPP, "graph_url": f"{upstream}/v22.0"},
        email={**EMAIL, "smtp_url": f"smtp://127.0.0.1:{smtp_port}"},
        bots={c: {"url": f"{upstream}/bot/{c}", "secret": BOT_SECRET} for c in bots},
        outbox=FAST,
    )  # fmt: skip
    server = await aiohttp_server(create_app(settings))
    base = omni_url["url"] = str(server.make_url("")).rstrip("/")
    async with aiohttp.ClientSession() as http, chromium() as browser:
        story = Story(http, base, settings, lambda _: None)
        from playwright.async_api import expect

        # 1. The website: an anonymous visitor opens the shop's chat bubble and asks; the
        # web bot notes the order, and the shop's backend records the address she
        # verified when she ordered.
        page = await (await browser.new_context()).new_page()
        await page.goto(shop_url)
        await page.get_by_role("button", name="Open chat").click()
        write = page.get_by_role("textbox", name="Write a message")
        await write.fill(FIRST_WORDS)
        await write.press("Enter")
        mine = page.locator("li.mine")
        await expect(mine).to_have_count(1)
        await until(lambda: _count(bots["web"], 1))
        [web_told] = bots["web"].delivered.values()
        assert web_told["message"]["text"] == FIRST_WORDS
        assert web_told["message"]["channel"] == "web"
        cid = web_told["customer_id"]
        visitor = await page.evaluate(f"JSON.parse(localStorage.getItem('omni:{base}')).visitor")
        assert web_told["message"]["author"]["id"] == visitor
        await story.call(
            "PATCH", f"/v1/customers/{cid}/facts",
            json={"facts": {"order_id": {"value": "4417", "source": {"channel": "web"}}}},
            headers=BOT,
        )  # fmt: skip
        await story.call(
            "PATCH", f"/v1/customers/{cid}/profile",
            json={"name": "Dana Example", "email": DANA, "email_verified": True}, headers=AGENT,
        )  # fmt: skip

        # 2. WhatsApp: the web bot gives her a link (a wa.me link fills the token in as her
        # first message); her wa_id joins the web customer before the message is stored.
        link = await story.call(
            "POST", f"/v1/customers/{cid}/link-tokens", json={"channel": "whatsapp"},
            headers=BOT,
        )  # fmt: skip
        await _whatsapp(story, f"Continue my chat {link['token']}", "wamid.journey.1")
        await _whatsapp(story, ON_WHATSAPP, "wamid.journey.2")
        await until(lambda: _count(bots["whatsapp"], 2))
        linked, wa_told = bots["whatsapp"].delivered.values()
        assert linked["context"]["customer"]["id"] == cid
        context = wa_told["context"]
        assert wa_told["message"]["text"] == ON_WHATSAPP
        assert context["customer"]["id"] == cid
        said = [(m["channel"], m.get("text")) for m in context["recent_messages"]]
        assert ("web", FIRST_WORDS) in said  # what she said on the website
        assert context["facts"]["order_id"]["value"] == "4417"
        assert context["facts"]["order_id"]["source"] == {"channel": "web"}
        assert context["continuity"]["came_from"] == "web"
        assert context["continuity"]["current_channel"] == "whatsapp"
        identities = {(i["channel"], i["external_id"]) for i in context["customer"]["identities"]}
        assert ("whatsapp", WA_ID) in identities

        # 3. The receipt goes out by e-mail, to the address the shop verified.
        receipt_text = "Receipt: order 4417, trail running shoes, 89.00 EUR. New address noted."
        await story.call(
            "POST", f"/v1/customers/{cid}/messages",
            json={"text": receipt_text, "channel": "email"}, headers=AGENT,
        )  # fmt: skip
        await until(lambda: has_mails(box, 1))
        [receipt] = box.mails
        assert box.envelopes[0] == (EMAIL["from_address"], [DANA])
        assert receipt.get_content().strip() == receipt_text

        # 4. She answers the receipt from her mail program: In-Reply-To names it, the quote
        # is cut for the bot, and the e-mail bot knows the web chat and WhatsApp before it.
        answer = edited(
            EMAIL_REPLY,
            Headers=[{"Name": "Message-ID", "Value": "<journey-answer@mail.example.net>"},
                     {"Name": "In-Reply-To", "Value": receipt["Message-ID"]},
                     {"Name": "References", "Value": receipt["Message-ID"]}],
            Subject=f"Re: {receipt['Subject']}",
            TextBody=f"Thanks! Does it still arrive Thursday?\n\nOn Mon, Omni wrote:\n> "
                     f"{receipt_text}",
            StrippedTextReply="",
        )  # fmt: skip
        await story.call(
            "POST", "/channels/email/inbound", data=answer,
            headers={"Content-Type": "application/json", "Authorization": BASIC},
        )  # fmt: skip
        await until(lambda: _count(bots["email"], 1))
        [mail_told] = bots["email"].delivered.values()
        assert mail_told["message"]["text"] == "Thanks! Does it still arrive Thursday?"
        assert mail_told["message"]["reply_to"] == receipt["Message-ID"].strip("<>")
        context = mail_told["context"]
        assert context["customer"]["id"] == cid
        said = [(m["channel"], m.get("text")) for m in context["recent_messages"]]
        assert ("web", FIRST_WORDS) in said
        assert ("whatsapp", ON_WHATSAPP) in said
        assert ("email", receipt_text) in said  # what she was sent, too
        assert context["facts"]["order_id"]["value"] == "4417"
        assert context["continuity"]["came_from"] == "whatsapp"
        assert context["continuity"]["current_channel"] == "email"
        channels = {i["channel"] for i in context["customer"]["identities"]}
        assert {"web", "whatsapp", "email"} <= channels

        # 5. Back on the website: an agent answers there, and the widget the visitor left
        # open shows it live, after her own first words (nothing shown twice).
        answer_text = "Yes, Thursday. Dana, the courier has the new address."
        await story.call(
            "POST", f"/v1/customers/{cid}/messages",
            json={"text": answer_text, "channel": "web"}, headers=AGENT,
        )  # fmt: skip
        theirs = page.locator("li.theirs")
        await expect(theirs.last).to_contain_text(answer_text)
        await expect(theirs.filter(has_text=answer_text)).to_have_count(1)
        await expect(mine).to_have_count(1)


async def _whatsapp(story: Story, text: str, wamid: str) -> None:
    """A text from the fixtures' WhatsApp customer, signed as Meta signs it."""
    body = message("text", {"body": text}, wamid)
    answer = await story.call(
        "POST", "/channels/whatsapp/webhook", data=body,
        headers={"Content-Type": "application/json", "X-Hub-Signature-256": signature(body)},
    )  # fmt: skip
    assert answer == {"events": 1, "messages": 1}
