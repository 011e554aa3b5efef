"""`omni demo`: the acceptance story of DESIGN.md, played against a running omni.

It is the customer on each channel — the website chat, Instagram, a phone call, the
mobile app, WhatsApp, e-mail — speaking each channel's real protocol (signed the way Meta
and Twilio sign, posted with Postmark's basic auth, logged in the way the brand's backend
signs), and after each step it prints what that
channel's bot gets from omni: who the customer is, what omni already knows, and the hint
it offers instead of a question. It also plays the bots and an agent, through the API.

The same story is tests/test_journey.py, which asserts every step.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import aiohttp

from omni.settings import Role, Settings, read_secret, read_str

SHOES = {"sku": "TRAIL-42", "name": "Trail running shoes, size 42", "quantity": 1,
         "unit_price": 8900, "currency": "EUR"}  # fmt: skip
IG_ACCOUNT_DEFAULT = "17841400000000001"
WA_NUMBER_ID_DEFAULT = "106000000000001"
# What the receiving provider writes when SPF, DKIM and DMARC pass for the sender's domain.
AUTHENTICATED = ("inbound.postmarkapp.com; spf=pass smtp.mailfrom=example.com; "
                 "dkim=pass header.d=example.com; dmarc=pass header.from=example.com")  # fmt: skip


class DemoError(Exception):
    """A step did not get the answer the story expects; the message says which."""


@dataclass
class Step:
    number: int
    channel: str
    title: str
    said: list[str] = field(default_factory=list)  # what happened, as lines to print
    bot_sees: dict[str, Any] = field(default_factory=dict)  # the context, as the bot gets it


@dataclass
class Story:
    """The story's state as it goes: ids learnt on the way, and the steps taken."""

    http: aiohttp.ClientSession
    base: str
    settings: Settings
    out: Callable[[str], None] = print
    steps: list[Step] = field(default_factory=list)
    web_token: str = ""
    web_external_id: str = ""
    customer_id: str = ""
    # Fresh for every run, so the story can be played again on the same data.
    user_id: str = field(default_factory=lambda: f"ana-{secrets.token_hex(3)}")
    phone: str = field(default_factory=lambda: f"+1415555{secrets.randbelow(10_000):04d}")
    instagram_user: str = field(default_factory=lambda: f"118{secrets.randbelow(10**13):013d}")
    call_sid: str = field(default_factory=lambda: "CA" + secrets.token_hex(16))
    wa_id: str = field(default_factory=lambda: f"1415556{secrets.randbelow(10_000):04d}")
    email: str = field(default_factory=lambda: f"ana.{secrets.token_hex(3)}@example.com")

    # -- plumbing -----------------------------------------------------------------------

    def key(self, role: Role) -> dict[str, str]:
        for api_key in self.settings.api_keys:
            if api_key.role == role:
                return {"Authorization": f"Bearer {api_key.key.reveal()}"}
        raise DemoError(f"no {role} API key is configured ([auth] api_keys)")

    async def call(
        self, method: str, path: str, *, expect: tuple[int, ...] = (200, 201, 202), **kw: Any
    ) -> Any:
        async with self.http.request(method, self.base + path, **kw) as response:
            body = await response.read()
            if response.status not in expect:
                raise DemoError(f"{method} {path} answered {response.status}: {body[:300]!r}")
            kind = response.content_type
            if kind.endswith("json"):
                return json.loads(body)
            return body.decode()

    def step(self, channel: str, title: str) -> Step:
        step = Step(len(self.steps) + 1, channel, title)
        self.steps.append(step)
        self.out(f"\n── {step.number}. {title} [{channel}]")
        return step

    def say(self, step: Step, line: str) -> None:
        step.said.append(line)
        self.out(f"   {line}")

    async def bot_view(self, step: Step, channel: str, external_id: str, ask: str = "") -> Any:
        """The context the channel's bot gets for this customer (its webhook carries the
        same document), with `?ask=` when the bot is about to ask for facts."""
        query = {"channel": channel, "external_id": external_id}
        if ask:
            query["ask"] = ask
        context = await self.call("GET", "/v1/context?" + urlencode(query), headers=self.key("bot"))
        step.bot_sees = context
        block = context["continuity"]
        facts = {name: fact["value"] for name, fact in context["facts"].items()}
        cart = context["cart"]
        self.out(f"   the {channel} bot sees: customer {context['customer']['id']}")
        self.out(f"     facts: {facts or 'none'}")
        if cart["items"]:
            items = ", ".join(f"{i['quantity']} x {i['sku']}" for i in cart["items"])
            self.out(f"     cart:  {cart['stage']} — {items}")
        if block["resume_hint"]:
            self.out(f"     hint:  {block['resume_hint']}")
        if context.get("known"):
            known = {k: (v["value"] if v else None) for k, v in context["known"].items()}
            self.out(f"     known (no need to ask): {known}")
        return context

    # -- the channels' own protocols ------------------------------------------------------

    def _section(self, name: str) -> Mapping[str, Any]:
        """A channel's settings section as configured (the demo signs as the channel's
        provider would, and the core does not import the channels' own parsers)."""
        return self.settings.sections.get(name, {})

    def user_hash(self, secret: str, user_id: str) -> str:
        return hmac.new(secret.encode(), user_id.encode(), hashlib.sha256).hexdigest()

    async def web_say(self, text: str) -> Any:
        return await self.call(
            "POST", "/channels/web/messages",
            json={"client_msg_id": secrets.token_hex(8), "text": text},
            headers={"Authorization": f"Bearer {self.web_token}"},
        )  # fmt: skip

    async def meta_post(self, path: str, section: str, body: bytes) -> Any:
        """POST as Meta does: JSON signed with the app secret (X-Hub-Signature-256)."""
        secret = read_secret(self._section(section), f"{section}.app_secret").reveal().encode()
        signature = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
        return await self.call(
            "POST", path, data=body,
            headers={"Content-Type": "application/json", "X-Hub-Signature-256": signature},
        )  # fmt: skip

    async def instagram_dm(self, text: str) -> Any:
        account = (
            read_str(self._section("instagram"), "instagram.account_id", "") or IG_ACCOUNT_DEFAULT
        )
        now = int(time.time() * 1000)
        mid = "demo-" + secrets.token_hex(12)
        event = {"sender": {"id": self.instagram_user}, "recipient": {"id": account},
                 "timestamp": now, "message": {"mid": mid, "text": text}}  # fmt: skip
        entry = {"id": account, "time": now, "messaging": [event]}
        body = json.dumps({"object": "instagram", "entry": [entry]}).encode()
        return await self.meta_post("/channels/instagram/webhook", "instagram", body)

    async def whatsapp_text(self, text: str) -> Any:
        number_id = (
            read_str(self._section("whatsapp"), "whatsapp.phone_number_id", "")
            or WA_NUMBER_ID_DEFAULT
        )
        message = {
            "from": self.wa_id,
            "id": "wamid.demo-" + secrets.token_hex(12),
            "timestamp": str(int(time.time())),
            "type": "text",
            "text": {"body": text},
        }
        value = {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "14155550199", "phone_number_id": number_id},
            "contacts": [{"profile": {"name": "Ana"}, "wa_id": self.wa_id}],
            "messages": [message],
        }
        change = {"field": "messages", "value": value}
        body = json.dumps(
            {
                "object": "whatsapp_business_account",
                "entry": [{"id": "102000000000001", "changes": [change]}],
            }
        ).encode()
        return await self.meta_post("/channels/whatsapp/webhook", "whatsapp", body)  # fmt: skip

    async def mail(self, subject: str, text: str) -> Any:
        """A mail from her, as Postmark posts it (basic auth), authenticated by the provider."""
        section = self._section("email")
        user = read_secret(section, "email.postmark_user").reveal()
        password = read_secret(section, "email.postmark_password").reveal()
        auth = base64.b64encode(f"{user}:{password}".encode()).decode()
        to = read_str(section, "email.from_address", "") or "support@shop.example"
        headers = [
            {"Name": "Message-ID", "Value": f"<demo-{secrets.token_hex(8)}@example.com>"},
            {"Name": "Authentication-Results", "Value": AUTHENTICATED},
        ]
        posted = {
            "From": self.email,
            "FromFull": {"Email": self.email, "Name": "Ana Silva"},
            "To": to,
            "Subject": subject,
            "TextBody": text,
            "Headers": headers,
        }
        return await self.call(
            "POST", "/channels/email/inbound", json=posted,
            headers={"Authorization": f"Basic {auth}"},
        )  # fmt: skip

    async def twilio(self, path: str, params: dict[str, str]) -> str:
        """POST as Twilio does: form-encoded, signed over the public URL."""
        url = self.settings.server.public_url + path
        payload = url + "".join(k + v for k, v in sorted(params.items()))
        token = read_secret(self._section("twilio"), "twilio.auth_token").reveal().encode()
        signature = base64.b64encode(hmac.new(token, payload.encode(), hashlib.sha1).digest())
        answer: str = await self.call(
            "POST", path, data=params, headers={"X-Twilio-Signature": signature.decode()}
        )
        return answer

    # -- the story --------------------------------------------------------------------------

    async def run(self) -> list[Step]:
        await self.on_the_website()
        await self.on_instagram()
        await self.on_the_phone()
        await self.the_agent()
        await self.in_the_app()
        await self.on_whatsapp()
        await self.by_email()
        self.out("\nOne customer, six channels, nothing asked twice.")
        return self.steps

    async def on_the_website(self) -> None:
        step = self.step("web", "A visitor chats on the website, anonymously")
        session = await self.call("POST", "/channels/web/sessions", json={})
        self.web_token, self.web_external_id = session["token"], session["external_id"]
        self.say(step, f"visitor {self.web_external_id} gets a session")
        await self.web_say("Hi! Do you have the trail running shoes in size 42?")
        self.say(step, "visitor: Hi! Do you have the trail running shoes in size 42?")
        context = await self.bot_view(step, "web", self.web_external_id)
        cid = context["customer"]["id"]
        cart = await self.http.get(f"{self.base}/v1/customers/{cid}/cart", headers=self.key("bot"))
        version = cart.headers["ETag"]
        cart.release()
        await self.call(
            "PUT", f"/v1/customers/{cid}/cart", json={"items": [SHOES], "stage": "checkout"},
            headers={**self.key("bot"), "If-Match": version},
        )  # fmt: skip
        self.say(step, "web bot: puts the shoes in the cart and opens checkout")
        await self.web_say(f"Also, where is order 4417? My email is {self.email}")
        self.say(step, f"visitor: Also, where is order 4417? My email is {self.email}")
        await self.call(
            "PATCH", f"/v1/customers/{cid}/facts",
            json={"facts": {"order_id": {"value": "4417", "source": {"channel": "web"}}}},
            headers=self.key("bot"),
        )  # fmt: skip
        self.say(step, "web bot: notes order_id 4417")
        secret = read_secret(self._section("web"), "web.identity_secret").reveal()
        login = await self.call(
            "POST", "/channels/web/sessions",
            json={"type": "identify", "identifier": self.user_id,
                  "identifier_hash": self.user_hash(secret, self.user_id)},
            headers={"Authorization": f"Bearer {self.web_token}"},
        )  # fmt: skip
        self.web_token, self.web_external_id = login["token"], login["external_id"]
        self.say(step, f"visitor logs in as {self.user_id} (verified by the shop's HMAC)")
        found = await self.bot_view(step, "web", self.web_external_id)
        self.customer_id = found["customer"]["id"]
        await self.call(
            "PATCH", f"/v1/customers/{self.customer_id}/profile",
            json={"name": "Ana Silva", "email": self.email, "email_verified": True,
                  "phone": self.phone, "phone_verified": True},
            headers=self.key("agent"),
        )  # fmt: skip
        self.say(step, f"the shop's backend records her verified phone {self.phone}")

    async def on_instagram(self) -> None:
        step = self.step("instagram", "Later she writes from Instagram")
        await self.instagram_dm("hi! any news on my order?")
        self.say(step, "instagram: hi! any news on my order?")
        context = await self.bot_view(step, "instagram", self.instagram_user)
        stranger = context["customer"]["id"]
        self.say(step, "nothing links this account yet: omni keeps it as its own customer")
        token = await self.call(
            "POST", f"/v1/customers/{stranger}/link-tokens", json={"channel": "web"},
            headers=self.key("bot"),
        )  # fmt: skip
        self.say(step, f"instagram bot sends a sign-in link: {token['url'][:60]}…")
        await self.call(
            "POST", "/v1/link-tokens/redeem",
            json={"token": token["token"], "channel": "web", "external_id": self.web_external_id},
            headers=self.key("bot"),
        )  # fmt: skip
        self.say(step, "she opens it where she is logged in: the two records become one")
        context = await self.bot_view(step, "instagram", self.instagram_user, ask="order_id,email")
        self.customer_id = context["customer"]["id"]

    async def on_the_phone(self) -> None:
        step = self.step("voice", "She calls the support line")
        params = {"CallSid": self.call_sid, "AccountSid": "AC" + "0" * 32, "From": self.phone,
                  "To": "+14155550199", "CallStatus": "ringing", "Direction": "inbound",
                  "ApiVersion": "2010-04-01"}  # fmt: skip
        twiml = await self.twilio("/channels/voice/twilio", params)
        greeting = " ".join(_says(twiml))
        self.say(step, f"the phone answers: “{greeting}”")
        await self.bot_view(step, "voice", self.phone)
        params.update(CallStatus="completed", CallDuration="42")
        await self.twilio("/channels/voice/twilio/status", params)
        self.say(step, "the call ends after 42 s")

    async def the_agent(self) -> None:
        step = self.step("agent", "An agent reads the whole story and replies")
        await self.web_say("I'm back on the website — can someone confirm the delivery date?")
        self.say(step, "web: I'm back on the website — can someone confirm the delivery date?")
        history = await self.call(
            "GET", f"/v1/customers/{self.customer_id}/history?limit=50", headers=self.key("agent")
        )
        channels = [m["channel"] for m in reversed(history["messages"]) if m["channel"] != "system"]
        seen = [c for i, c in enumerate(channels) if i == 0 or channels[i - 1] != c]
        self.say(step, f"one timeline, in order: {' → '.join(seen)}")
        reply = await self.call(
            "POST", f"/v1/customers/{self.customer_id}/messages",
            json={"text": "Hi Ana, order 4417 arrives Thursday. — Sam"}, headers=self.key("agent"),
        )  # fmt: skip
        self.say(
            step, f"agent replies; it goes out on {reply['channel']}, the channel she uses now"
        )
        step.bot_sees = {"reply": reply, "history": history}

    async def in_the_app(self) -> None:
        step = self.step("mobile", "She opens the app, logs in, and pays")
        secret = read_secret(self._section("mobile"), "mobile.identity_secret").reveal()
        login = await self.call(
            "POST", "/channels/mobile/sessions",
            json={"type": "identify", "identifier": self.user_id,
                  "identifier_hash": self.user_hash(secret, self.user_id)},
        )  # fmt: skip
        self.say(step, f"app login as {self.user_id}")
        context = await self.bot_view(step, "mobile", login["external_id"])
        cid = context["customer"]["id"]
        cart = context["cart"]
        self.say(step, f"the same cart, at the same step: {cart['stage']}")
        version = '"' + context["version"] + '"'
        placed = await self.call(
            "PUT", f"/v1/customers/{cid}/cart",
            json={"items": cart["items"], "stage": "placed", "order_id": "4418"},
            headers={**self.key("bot"), "If-Match": version},
        )  # fmt: skip
        self.say(step, f"she pays: order {placed['order_id']} placed")

    async def on_whatsapp(self) -> None:
        step = self.step("whatsapp", "She asks for delivery updates on WhatsApp")
        token = await self.call(
            "POST", f"/v1/customers/{self.customer_id}/link-tokens",
            json={"channel": "whatsapp"}, headers=self.key("bot"),
        )  # fmt: skip
        self.say(step, "the app bot offers WhatsApp: a wa.me link that fills in a link token")
        await self.whatsapp_text(f"Updates here please {token['token']}")
        self.say(step, "whatsapp: Updates here please lt1.…  (her wa_id joins her record)")
        await self.whatsapp_text("Will order 4418 ship together with 4417?")
        self.say(step, "whatsapp: Will order 4418 ship together with 4417?")
        await self.bot_view(step, "whatsapp", self.wa_id)

    async def by_email(self) -> None:
        step = self.step("email", "She writes to the shop by e-mail")
        await self.mail("Order 4418", "Please leave the parcel with the neighbour at number 7.")
        self.say(step, f"e-mail from {self.email}, her verified address (SPF, DKIM and DMARC")
        self.say(step, "pass): Please leave the parcel with the neighbour at number 7.")
        await self.bot_view(step, "email", self.email)


def _says(twiml: str) -> list[str]:
    # omni's own answer to the demo's own request: not untrusted input.
    return [el.text or "" for el in ET.fromstring(twiml).iter("Say")]  # noqa: S314


async def play(base: str, settings: Settings, out: Callable[[str], None] = print) -> list[Step]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        story = Story(http, base.rstrip("/"), settings, out)
        return await story.run()
