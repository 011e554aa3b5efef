"""SMS/MMS end to end: Twilio Messaging's webhooks through the real app on a real Valkey,
Twilio's Messaging API as a local server, TwiML read as XML.

The signed fixtures under tests/payloads/sms/ are replayed against the public URL they were
signed for; other requests are signed here with Twilio's documented algorithm."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from omni import keys
from omni.app import create_app
from tests.conftest import ADMIN, AGENT, BOT, ingest, make_settings, snapshot
from tests.test_bots import SECRET, BotReceiver, ServerFactory, serve
from tests.test_channel_voice import twilio_signature
from tests.test_replies_api import FAST, history, until

PAYLOADS = Path(__file__).parent / "payloads" / "sms"
PUBLIC = "https://omni.example.com"
TOKEN = "f3a9c2e1b4d5a6978877665544332211"
ACCOUNT = "AC1b2c3d4e5f60718293a4b5c6d7e8f901"
SERVICE = "MG0a1b2c3d4e5f60718293a4b5c6d7e8f9"
CUSTOMER = "+14155550123"
OURS = "+14155550199"
INBOUND = "/channels/sms/twilio"
STATUS = "/channels/sms/status"
FORM = "application/x-www-form-urlencoded"
SENT_SID = "SM9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a"  # the send response fixture's, and the callbacks'
SETTLED = ("sent", "delivered", "failed")
QUIET = {"in_process_worker": False}  # no worker writing its stream under a snapshot


@dataclass(frozen=True)
class Fixture:
    body: bytes
    url: str
    signature: str

    @property
    def params(self) -> dict[str, str]:
        return dict(parse_qsl(self.body.decode(), keep_blank_values=True))


def fixture(name: str) -> Fixture:
    path = PAYLOADS / f"{name}.form"
    sidecar = path.with_suffix(".sig.txt").read_text()
    assert re.search(rf"^auth_token: {TOKEN}$", sidecar, re.MULTILINE)
    url = re.search(r"^url[^:]*: (\S+)$", sidecar, re.MULTILINE)
    sig = re.search(r"^X-Twilio-Signature: (\S+)$", sidecar, re.MULTILINE)
    assert url and sig
    return Fixture(path.read_bytes(), url.group(1), sig.group(1))


SIGNED = ["twilio_sms_incoming", "twilio_mms_incoming", "twilio_sms_stop",
          "twilio_sms_status_delivered", "twilio_sms_status_undelivered"]  # fmt: skip


class Twilio:
    """Twilio's Messaging API as the tests need it: records every send, answers from
    `answers` in order, then a queued message with a new sid."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.answers: list[tuple[int, Any]] = []
        self.before_answer: Callable[[], Awaitable[None]] | None = None

    async def handle(self, request: web.Request) -> web.Response:
        body = (await request.read()).decode()
        self.requests.append({
            "path": request.path,
            "authorization": request.headers.get("Authorization"),
            "content_type": request.content_type,
            "fields": parse_qsl(body, keep_blank_values=True),
        })  # fmt: skip
        if self.before_answer is not None:
            await self.before_answer()
        if self.answers:
            status, answer = self.answers.pop(0)
        else:
            status, answer = 201, {"sid": f"SM{len(self.requests):032d}", "status": "queued"}
        return web.json_response(answer, status=status)


@pytest.fixture
async def twilio(aiohttp_server: ServerFactory) -> AsyncIterator[tuple[Twilio, str]]:
    stub = Twilio()
    app = web.Application()
    app.router.add_post("/2010-04-01/Accounts/{account}/Messages.json", stub.handle)
    server = await aiohttp_server(app)
    yield stub, str(server.make_url("")).rstrip("/")


async def sms_app(
    aiohttp_client: Any, redis_url: str, api_url: str = "http://127.0.0.1:9", **sections: Any
) -> TestClient:
    sms = {"account_sid": ACCOUNT, "messaging_service_sid": SERVICE, "api_url": api_url,
           **sections.pop("sms", {})}  # fmt: skip
    settings = make_settings(
        redis_url,
        server={"public_url": PUBLIC},
        twilio={"auth_token": TOKEN},
        sms=sms,
        outbox=sections.pop("outbox", FAST),
        **sections,
    )
    client: TestClient = await aiohttp_client(create_app(settings))
    return client


async def replay(client: TestClient, name: str, signature: str | None = None) -> Any:
    found = fixture(name)
    path = found.url.removeprefix(PUBLIC)
    headers = {"Content-Type": FORM, "X-Twilio-Signature": signature or found.signature}
    return await client.post(path, data=found.body, headers=headers)


async def send(client: TestClient, path: str, params: dict[str, str]) -> Any:
    """A webhook signed here for `path`, as Twilio would sign it."""
    pairs = list(params.items())
    headers = {"Content-Type": FORM,
               "X-Twilio-Signature": twilio_signature(PUBLIC + path, pairs, TOKEN)}  # fmt: skip
    return await client.post(path, data=urlencode(pairs), headers=headers)


def text_from(body: str, sid: str, **extra: str) -> dict[str, str]:
    """An inbound text from the customer, with the fixture's parameters otherwise."""
    params = fixture("twilio_sms_incoming").params
    params.update(Body=body, MessageSid=sid, SmsSid=sid, SmsMessageSid=sid, **extra)
    return params


async def twiml(response: Any) -> ET.Element:
    assert response.status == 200, await response.text()
    assert response.content_type == "text/xml"
    root = ET.fromstring(await response.read())  # noqa: S314 - our own TwiML
    assert root.tag == "Response"
    return root


async def cid_of(client: TestClient, number: str = CUSTOMER) -> str:
    response = await client.get(
        "/v1/context", params={"channel": "sms", "external_id": number}, headers=BOT
    )
    assert response.status == 200, await response.text()
    cid: str = (await response.json())["customer"]["id"]
    return cid


async def reply(client: TestClient, cid: str, **body: Any) -> None:
    response = await client.post(
        f"/v1/customers/{cid}/messages", json={"channel": "sms", **body}, headers=AGENT
    )
    assert response.status == 202, await response.text()


async def settled(client: TestClient, cid: str, count: int) -> dict[str, Any]:
    """The newest message once there are `count` and its delivery is over."""

    async def done() -> bool:
        items = await history(client, cid)
        return len(items) == count and items[0].get("status", {}).get("state") in SETTLED

    await until(done)
    return (await history(client, cid))[0]


# -- every fixture through its route --------------------------------------------------------


async def test_every_fixture_is_accepted_with_its_signature(
    aiohttp_client: Any, redis_url: str, redis: Redis
) -> None:
    client = await sms_app(aiohttp_client, redis_url)
    for name in SIGNED:
        response = await replay(client, name)
        assert response.status == 200, (name, await response.text())
        # An empty document: replies go out through the API, Twilio sends nothing now.
        assert await response.read() == b'<?xml version="1.0" encoding="UTF-8"?><Response/>'


async def test_a_text_is_stored_once_under_the_senders_number(
    aiohttp_client: Any, redis_url: str, redis: Redis
) -> None:
    client = await sms_app(aiohttp_client, redis_url)
    await twiml(await replay(client, "twilio_sms_incoming"))
    await twiml(await replay(client, "twilio_sms_incoming"))  # Twilio's retry
    cid = await cid_of(client)
    (message,) = await history(client, cid)
    assert message["channel"] == "sms"
    assert message["text"] == "Hi, is order #A-1042 shipped? Gracias \U0001f642"
    assert message["channel_message_id"] == "SM5e1a2b3c4d5e6f708192a3b4c5d6e7f8"
    assert message["author"] == {"kind": "customer", "id": CUSTOMER}
    meta = message["metadata"]
    assert (meta["to"], meta["num_segments"], meta["from_city"]) == (OURS, 1, "OAKLAND")
    context = await (await client.get(f"/v1/customers/{cid}/context", headers=BOT)).json()
    assert [(i["channel"], i["external_id"]) for i in context["customer"]["identities"]] == [
        ("sms", CUSTOMER)
    ]
    # As a bot would write it, the "+" unescaped in the query string: still found.
    found = await client.get(f"/v1/context?channel=sms&external_id={CUSTOMER}", headers=BOT)
    assert (await found.json())["customer"]["id"] == cid


async def test_mms_media_are_attachments_typed_by_content_type(
    aiohttp_client: Any, redis_url: str, redis: Redis
) -> None:
    client = await sms_app(aiohttp_client, redis_url)
    await twiml(await replay(client, "twilio_mms_incoming"))
    (message,) = await history(client, await cid_of(client))
    assert message["text"] == "Photos of the damaged box"
    media = fixture("twilio_mms_incoming").params
    assert message["attachments"] == [
        {"type": "image", "url": media["MediaUrl0"], "mime": "image/jpeg"},
        {"type": "image", "url": media["MediaUrl1"], "mime": "image/png"},
    ]
    # Other kinds by their content type; a media-only message is stored too.
    kinds = {"MediaContentType0": "video/mp4", "MediaContentType1": "audio/amr",
             "MediaContentType2": "text/vcard"}  # fmt: skip
    urls = {f"MediaUrl{n}": f"https://media.example.com/{n}" for n in range(3)}
    more = text_from("", "MM0000000000000000000000000000000a", NumMedia="3", **kinds, **urls)
    await twiml(await send(client, INBOUND, more))
    latest = (await history(client, await cid_of(client)))[0]
    assert "text" not in latest
    assert [(a["type"], a["mime"]) for a in latest["attachments"]] == [
        ("video", "video/mp4"), ("audio", "audio/amr"), ("file", "text/vcard")
    ]  # fmt: skip


# -- what is refused -----------------------------------------------------------------------


async def test_a_forged_or_missing_signature_is_401_and_stores_nothing(
    aiohttp_client: Any, redis_url: str, redis: Redis
) -> None:
    client = await sms_app(aiohttp_client, redis_url, outbox=QUIET)
    before = await snapshot(redis)
    status_sig = fixture("twilio_sms_status_delivered").signature
    for name, sig in [
        ("twilio_sms_incoming", "jAgDqTwiNvnQPCcqxNcpbzx57OV="),  # one character off
        ("twilio_sms_incoming", status_sig),  # another request's signature
        ("twilio_sms_stop", twilio_signature(PUBLIC + INBOUND, [], "wrong-token")),
    ]:
        response = await replay(client, name, signature=sig)
        assert response.status == 401, name
        assert response.content_type == "application/problem+json"
    tampered = fixture("twilio_sms_incoming").body.replace(b"shipped", b"shipper")
    headers = {"Content-Type": FORM,
               "X-Twilio-Signature": fixture("twilio_sms_incoming").signature}  # fmt: skip
    assert (await client.post(INBOUND, data=tampered, headers=headers)).status == 401
    unsigned = await client.post(INBOUND, data=tampered, headers={"Content-Type": FORM})
    assert unsigned.status == 401
    assert await snapshot(redis) == before


async def test_malformed_webhooks_are_400_and_store_nothing(
    aiohttp_client: Any, redis_url: str, redis: Redis
) -> None:
    client = await sms_app(aiohttp_client, redis_url, outbox=QUIET)
    before = await snapshot(redis)
    base = text_from("hi", "SM00000000000000000000000000000001")
    cases = [
        {k: v for k, v in base.items() if k != "From"},
        {k: v for k, v in base.items() if k not in ("MessageSid", "SmsSid", "SmsMessageSid")},
        {**base, "NumMedia": "2", "MediaUrl0": "https://media.example.com/a"},  # no MediaUrl1
        {**base, "NumMedia": "many"},
        {**base, "NumMedia": "1", "MediaUrl0": "javascript:alert(1)"},
        {**base, "MessageSid": "SM<script>"},
        {**base, "Body": "x" * 5000},
    ]
    for params in cases:
        response = await send(client, INBOUND, params)
        assert response.status == 400, params
        assert response.content_type == "application/problem+json"
    no_status = {k: v for k, v in fixture("twilio_sms_status_delivered").params.items()
                 if k not in ("MessageStatus", "SmsStatus")}  # fmt: skip
    assert (await send(client, STATUS, no_status)).status == 400
    assert await snapshot(redis) == before


async def test_without_an_auth_token_the_routes_are_404(
    aiohttp_client: Any, redis_url: str, redis: Redis
) -> None:
    client = await aiohttp_client(create_app(make_settings(redis_url)))
    assert (await replay(client, "twilio_sms_incoming")).status == 404
    assert (await replay(client, "twilio_sms_status_delivered")).status == 404


async def test_the_routes_are_in_the_openapi_document(client: TestClient) -> None:
    paths = (await (await client.get("/openapi.json")).json())["paths"]
    assert "post" in paths[INBOUND] and "post" in paths[STATUS]


# -- the bot, replies and their receipts ------------------------------------------------------


async def test_the_sms_bot_gets_the_text_with_context_and_its_reply_is_sent(
    aiohttp_client: Any,
    aiohttp_server: ServerFactory,
    redis_url: str,
    redis: Redis,
    twilio: tuple[Twilio, str],
) -> None:
    bot = BotReceiver()
    bot.default = (200, {"replies": [{"text": "Yes! Order #A-1042 shipped today. "
                                               "Reply STOP to opt out."}]})  # fmt: skip
    twilio[0].answers.append((201, json.loads((PAYLOADS / "twilio_sms_send_response.json")
                                              .read_text())))  # fmt: skip
    client = await sms_app(
        aiohttp_client, redis_url, twilio[1],
        bots={"sms": {"url": await serve(aiohttp_server, bot), "secret": SECRET}},
    )  # fmt: skip
    await twiml(await replay(client, "twilio_sms_incoming"))
    await twiml(await replay(client, "twilio_sms_incoming"))  # a redelivery tells no one
    cid = await cid_of(client)
    sent = await settled(client, cid, 2)

    (told,) = bot.delivered.values()
    assert told["message"]["text"].startswith("Hi, is order #A-1042 shipped?")
    assert told["context"]["customer"]["identities"][0]["external_id"] == CUSTOMER
    (request,) = twilio[0].requests
    assert request["path"] == f"/2010-04-01/Accounts/{ACCOUNT}/Messages.json"
    assert request["authorization"] == aiohttp.encode_basic_auth(ACCOUNT, TOKEN)
    assert request["content_type"] == FORM
    expected = parse_qsl((PAYLOADS / "twilio_sms_send_request.form").read_text())
    assert request["fields"] == expected
    assert (sent["status"]["state"], sent["status"]["channel_message_id"]) == ("sent", SENT_SID)

    # Twilio's receipts, in any order: the furthest state stands.
    await twiml(await replay(client, "twilio_sms_status_delivered"))
    late = {**fixture("twilio_sms_status_delivered").params, "MessageStatus": "sent"}
    await twiml(await send(client, STATUS, late))
    ours = (await history(client, cid))[0]
    assert ours["status"]["state"] == "delivered"
    assert ours["status"]["channel_message_id"] == SENT_SID


async def test_an_undelivered_receipt_fails_the_reply_with_its_reason(
    aiohttp_client: Any, redis_url: str, redis: Redis, twilio: tuple[Twilio, str]
) -> None:
    twilio[0].answers.append((201, {"sid": SENT_SID, "status": "queued"}))
    client = await sms_app(aiohttp_client, redis_url, twilio[1])
    await twiml(await replay(client, "twilio_sms_incoming"))
    cid = await cid_of(client)
    await reply(client, cid, text="It shipped today")
    assert (await settled(client, cid, 2))["status"]["state"] == "sent"
    await twiml(await replay(client, "twilio_sms_status_undelivered"))
    failed = (await history(client, cid))[0]["status"]
    assert failed["state"] == "failed"
    assert failed["reason"].startswith("unreachable: Twilio error 30003")
    # A receipt for a message omni never sent changes nothing, and is still a 200.
    other = {**fixture("twilio_sms_status_delivered").params, "MessageSid": "SM" + "1" * 32}
    await twiml(await send(client, STATUS, other))


async def test_a_receipt_that_beats_the_answer_to_the_send_is_applied_after_it(
    aiohttp_client: Any, redis_url: str, redis: Redis, twilio: tuple[Twilio, str]
) -> None:
    """Twilio may call back before its answer to the send has reached omni: the receipt
    waits and is applied once the send's answer links the message's sid."""
    client = await sms_app(aiohttp_client, redis_url, twilio[1])

    async def undelivered_first() -> None:
        await twiml(await replay(client, "twilio_sms_status_undelivered"))

    twilio[0].before_answer = undelivered_first
    twilio[0].answers.append((201, {"sid": SENT_SID, "status": "queued"}))
    await twiml(await replay(client, "twilio_sms_incoming"))
    cid = await cid_of(client)
    await reply(client, cid, text="It shipped today")

    async def failed() -> bool:
        status = (await history(client, cid))[0].get("status", {})
        return status.get("state") == "failed"

    await until(failed)
    status = (await history(client, cid))[0]["status"]
    assert status["reason"].startswith("unreachable: Twilio error 30003")
    assert status["channel_message_id"] == SENT_SID


async def test_an_mms_reply_sends_its_media(
    aiohttp_client: Any, redis_url: str, redis: Redis, twilio: tuple[Twilio, str]
) -> None:
    client = await sms_app(aiohttp_client, redis_url, twilio[1],
                           sms={"messaging_service_sid": "", "from_number": OURS})  # fmt: skip
    await twiml(await replay(client, "twilio_sms_incoming"))
    cid = await cid_of(client)
    image = {"type": "image", "url": "https://cdn.example.com/receipt.png"}
    await reply(client, cid, text="Your receipt", attachments=[image])
    assert (await settled(client, cid, 2))["status"]["state"] == "sent"
    fields = twilio[0].requests[0]["fields"]
    assert fields == [("To", CUSTOMER), ("From", OURS), ("Body", "Your receipt"),
                      ("MediaUrl", image["url"]),
                      ("StatusCallback", f"{PUBLIC}{STATUS}")]  # fmt: skip


# -- opting out -----------------------------------------------------------------------------


async def test_stop_refuses_every_reply_until_start(
    aiohttp_client: Any, redis_url: str, redis: Redis, twilio: tuple[Twilio, str]
) -> None:
    client = await sms_app(aiohttp_client, redis_url, twilio[1])
    await twiml(await replay(client, "twilio_sms_incoming"))
    cid = await cid_of(client)
    root = await twiml(await replay(client, "twilio_sms_stop"))
    assert list(root) == []  # Twilio answers STOP itself
    stop = (await history(client, cid))[0]
    assert (stop["text"], stop["metadata"]["sms_keyword"]) == ("Stop", "stop")

    await reply(client, cid, text="One more thing")
    refused = await settled(client, cid, 3)
    assert refused["status"]["state"] == "failed"
    assert refused["status"]["reason"] == "opted_out"
    assert refused["status"]["attempts"] == 1  # not retried
    assert twilio[0].requests == []  # Twilio was not asked

    # The opt-out is in Redis: a restarted omni refuses as well.
    again = await sms_app(aiohttp_client, redis_url, twilio[1])
    await reply(again, cid, text="After a restart")
    assert (await settled(again, cid, 4))["status"]["reason"] == "opted_out"

    await twiml(await send(client, INBOUND, text_from("start", "SM" + "5" * 32)))
    await reply(client, cid, text="Welcome back")
    sent = await settled(client, cid, 6)
    assert (sent["text"], sent["status"]["state"]) == ("Welcome back", "sent")
    assert len(twilio[0].requests) == 1


@pytest.mark.parametrize("word", ["STOPALL", "unsubscribe", " Cancel ", "END", "quit", "stop."])
async def test_every_stop_synonym_opts_out(
    aiohttp_client: Any, redis_url: str, redis: Redis, word: str
) -> None:
    client = await sms_app(aiohttp_client, redis_url)
    params = text_from(word, "SM" + "6" * 32)
    params.pop("OptOutType", None)  # without Advanced Opt-Out Twilio names no keyword
    await twiml(await send(client, INBOUND, params))
    assert await redis.exists(keys.opt_out("sms", CUSTOMER))
    # A sentence that contains the word is a message, not a keyword.
    assert await redis.delete(keys.opt_out("sms", CUSTOMER))
    await twiml(await send(client, INBOUND, text_from(f"please {word} it", "SM" + "7" * 32)))
    assert not await redis.exists(keys.opt_out("sms", CUSTOMER))


async def test_twilio_21610_is_an_opt_out_too(
    aiohttp_client: Any, redis_url: str, redis: Redis, twilio: tuple[Twilio, str]
) -> None:
    error = json.loads((PAYLOADS / "twilio_sms_send_error_opted_out.json").read_text())
    twilio[0].answers.append((400, error))
    client = await sms_app(aiohttp_client, redis_url, twilio[1])
    await twiml(await replay(client, "twilio_sms_incoming"))
    cid = await cid_of(client)
    await reply(client, cid, text="Hello?")
    failed = await settled(client, cid, 2)
    assert (failed["status"]["state"], failed["status"]["reason"]) == ("failed", "opted_out")
    await reply(client, cid, text="Hello again?")
    assert (await settled(client, cid, 3))["status"]["reason"] == "opted_out"
    assert len(twilio[0].requests) == 1  # the second was refused without asking Twilio


async def test_help_is_answered_from_config_and_the_bot_is_not_woken(
    aiohttp_client: Any, aiohttp_server: ServerFactory, redis_url: str, redis: Redis
) -> None:
    bot = BotReceiver()
    help_text = "Acme support: reply STOP to opt out. Help at acme.example.com & +14155550100"
    client = await sms_app(
        aiohttp_client, redis_url, sms={"help_text": help_text},
        bots={"sms": {"url": await serve(aiohttp_server, bot), "secret": SECRET}},
    )  # fmt: skip
    for _ in range(2):  # and a redelivery: answered again, stored once
        root = await twiml(await send(client, INBOUND, text_from("HELP", "SM" + "8" * 32)))
        assert [(m.tag, m.text) for m in root] == [("Message", help_text)]
    root = await twiml(await send(client, INBOUND, text_from("info", "SM" + "9" * 32)))
    assert [m.text for m in root] == [help_text]
    cid = await cid_of(client)
    items = await history(client, cid)
    assert [(m["direction"], m["text"]) for m in items] == [
        ("outbound", help_text), ("inbound", "info"), ("outbound", help_text), ("inbound", "HELP")
    ]  # fmt: skip
    await twiml(await send(client, INBOUND, text_from("where is my order?", "SM" + "a" * 32)))
    await until(lambda: _told(bot, 1))
    (told,) = bot.delivered.values()
    assert told["message"]["text"] == "where is my order?"


async def _told(bot: BotReceiver, count: int) -> bool:
    return len(bot.delivered) >= count


async def test_the_opt_out_is_exported_and_erased_with_the_customer(
    aiohttp_client: Any, redis_url: str, redis: Redis
) -> None:
    client = await sms_app(aiohttp_client, redis_url)
    await twiml(await replay(client, "twilio_sms_stop"))
    cid = await cid_of(client)
    assert await redis.exists(keys.opt_out("sms", CUSTOMER))
    export = await (await client.get(f"/v1/customers/{cid}/export", headers=ADMIN)).json()
    (held,) = export["opt_outs"]
    assert (held["channel"], held["external_id"], held["keyword"]) == ("sms", CUSTOMER, "Stop")
    response = await client.delete(f"/v1/customers/{cid}", headers=ADMIN)
    assert response.status in (200, 202, 204), await response.text()
    assert not await redis.exists(keys.opt_out("sms", CUSTOMER))


# -- length -----------------------------------------------------------------------------------


async def test_a_reply_over_max_segments_is_refused_not_cut(
    aiohttp_client: Any, redis_url: str, redis: Redis, twilio: tuple[Twilio, str]
) -> None:
    client = await sms_app(aiohttp_client, redis_url, twilio[1], sms={"max_segments": 2})
    await twiml(await replay(client, "twilio_sms_incoming"))
    cid = await cid_of(client)
    await reply(client, cid, text="a" * 306)  # GSM-7: two segments of 153
    assert (await settled(client, cid, 2))["status"]["state"] == "sent"
    await reply(client, cid, text="a" * 307)
    refused = await settled(client, cid, 3)
    assert refused["status"]["reason"].startswith("too_long: 307 characters are 3 segments")
    await reply(client, cid, text="\u00e1" * 135)  # not GSM-7: UCS-2, 67 per segment
    refused = await settled(client, cid, 4)
    assert "3 segments in UCS-2" in refused["status"]["reason"]
    assert len(twilio[0].requests) == 1


# -- who is who --------------------------------------------------------------------------------


async def test_a_text_joins_the_callers_customer_only_by_the_verified_phone(
    aiohttp_client: Any, redis_url: str, redis: Redis
) -> None:
    client = await sms_app(aiohttp_client, redis_url)
    caller = (await ingest(client, channel="voice", external_id=CUSTOMER, text="(call)"))[
        "customer_id"
    ]
    # The same number calling is no proof the texter is that customer: a new one.
    await twiml(await replay(client, "twilio_sms_incoming"))
    assert await cid_of(client) != caller

    # A number the customer verified is: the next new number to text joins them.
    other = "+14155550177"
    body = {"phone": other, "phone_verified": True}
    response = await client.patch(f"/v1/customers/{caller}/profile", json=body, headers=AGENT)
    assert response.status == 200
    await twiml(await send(client, INBOUND, text_from("hi", "SM" + "b" * 32, From=other)))
    assert await cid_of(client, other) == caller
    # A typed number in another format still finds them.
    assert await cid_of(client, "+1 (415) 555-0177") == caller
