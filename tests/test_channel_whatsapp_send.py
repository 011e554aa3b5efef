"""WhatsApp out: replies through a local Graph API that speaks the Cloud API — text, reply
buttons and lists, media, the template outside the 24-hour window (or a visible
outside_window failure), Graph's errors as reasons — and the statuses WhatsApp reports
as the reply's delivery status; the bot of [bots.whatsapp] hears each message."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from omni import keys
from omni.app import create_app
from omni.clock import iso, now_ms
from omni.store.entries import dedupe_field, legacy_dedupe_field
from tests.conftest import AGENT, BOT, ingest, make_settings
from tests.test_bots import BotReceiver, ServerFactory, serve
from tests.test_channel_whatsapp import WHATSAPP, accepted, context_of
from tests.test_worker import until
from tests.whatsapp_graph import (
    ACCESS_TOKEN,
    PHONE_NUMBER_ID,
    WA_ID,
    WAMID_FAILED,
    WAMID_OURS,
    Graph,
    fixture_json,
    message,
    status,
)

HOUR_MS = 3_600_000
FAST = {"in_process_worker": True, "block_ms": 50, "base_delay_ms": 5, "max_delay_ms": 20}
BOT_SECRET = "whatsapp-bot-secret-0001"
SETTLED = ("sent", "delivered", "failed")
TEMPLATE = {
    "default": {
        "name": "order_update",
        "language": "en_US",
        "parameters": ["{first_name}", "{text}"],
    }
}


@pytest.fixture
async def graph(aiohttp_server: ServerFactory) -> AsyncIterator[tuple[Graph, str]]:
    stub = Graph()
    server = await aiohttp_server(stub.app())
    yield stub, str(server.make_url("/v22.0"))


async def delivering(
    aiohttp_client: Any, redis_url: str, graph_url: str, **sections: Any
) -> TestClient:
    """The app with a worker in it, sending to the local Graph API."""
    whatsapp = {**WHATSAPP, "graph_url": graph_url, **sections.pop("whatsapp", {})}
    settings = make_settings(redis_url, whatsapp=whatsapp, outbox=FAST, **sections)
    client: TestClient = await aiohttp_client(create_app(settings))
    return client


async def timeline(client: TestClient, cid: str) -> list[dict[str, Any]]:
    response = await client.get(f"/v1/customers/{cid}/history", headers=AGENT)
    messages: list[dict[str, Any]] = (await response.json())["messages"]
    return messages


async def settled(client: TestClient, cid: str, count: int) -> dict[str, Any]:
    """The newest message once there are `count` and its delivery is over."""

    async def done() -> bool:
        items = await timeline(client, cid)
        return len(items) == count and items[0].get("status", {}).get("state") in SETTLED

    await until(done)
    return (await timeline(client, cid))[0]


async def reply(client: TestClient, cid: str, **body: Any) -> None:
    response = await client.post(
        f"/v1/customers/{cid}/messages", json={"channel": "whatsapp", **body}, headers=AGENT
    )
    assert response.status == 202, await response.text()


async def customer(client: TestClient) -> str:
    """Dana writes on WhatsApp (the 24-hour window opens); her customer id."""
    await accepted(client, "whatsapp_text.json")
    cid: str = (await context_of(client))["customer"]["id"]
    return cid


async def wrote_ago(redis: Redis, cid: str, age_ms: int) -> None:
    """Move the customer's last WhatsApp message back in time (the window's start)."""
    await redis.hset(keys.customer(cid), "in:whatsapp", now_ms() - age_ms)  # type: ignore[misc]


def bodies(graph: Graph) -> list[dict[str, Any]]:
    return [request["body"] for request in graph.requests]


# -- the bot and text --------------------------------------------------------------------------


async def test_a_message_reaches_the_bot_and_its_reply_goes_out_as_text(
    aiohttp_client: Any,
    aiohttp_server: ServerFactory,
    redis_url: str,
    redis: Redis,
    graph: tuple[Graph, str],
) -> None:
    bot = BotReceiver(secret=BOT_SECRET)
    bot.default = (200, {"replies": [{"text": "Yes! Order #A-1042 shipped today \U0001f4e6"}]})
    bot_url = await serve(aiohttp_server, bot)
    client = await delivering(
        aiohttp_client,
        redis_url,
        graph[1],
        bots={"whatsapp": {"url": bot_url, "secret": BOT_SECRET}},
    )
    cid = await customer(client)
    sent = await settled(client, cid, 2)

    (told,) = bot.delivered.values()  # the bot verified omni's signature
    assert told["message"]["text"] == "Hi! Is my order #A-1042 shipped yet?"
    assert told["context"]["customer"]["profile"]["name"] == "Dana Example"
    assert told["context"]["customer"]["identities"][0]["external_id"] == WA_ID
    (request,) = graph[0].requests
    assert request["path"] == f"/v22.0/{PHONE_NUMBER_ID}/messages"
    assert request["authorization"] == f"Bearer {ACCESS_TOKEN}"
    assert request["body"] == fixture_json("whatsapp_send_text_request.json")
    assert (sent["author"]["kind"], sent["status"]["state"]) == ("bot", "sent")
    assert sent["status"]["channel_message_id"] == "wamid.local.1"


async def test_quick_replies_are_reply_buttons_or_a_list(
    aiohttp_client: Any, redis_url: str, redis: Redis, graph: tuple[Graph, str]
) -> None:
    client = await delivering(aiohttp_client, redis_url, graph[1])
    cid = await customer(client)
    two = [
        {"title": "Track my order", "payload": "track_order_A-1042"},
        {"title": "Talk to a human", "payload": "HANDOFF"},
    ]
    await reply(client, cid, text="What do you need?", quick_replies=two)
    assert (await settled(client, cid, 2))["status"]["state"] == "sent"
    assert bodies(graph[0])[0]["interactive"] == {
        "type": "button",
        "body": {"text": "What do you need?"},
        "action": {
            "buttons": [
                {"type": "reply", "reply": {"id": "track_order_A-1042", "title": "Track my order"}},
                {"type": "reply", "reply": {"id": "HANDOFF", "title": "Talk to a human"}},
            ]
        },
    }

    sizes = [{"title": size, "payload": f"size_{size}"} for size in ("S", "M", "L", "XL")]
    await reply(client, cid, text="Which size?", quick_replies=sizes)
    assert (await settled(client, cid, 3))["status"]["state"] == "sent"
    listed = bodies(graph[0])[1]["interactive"]
    assert listed["type"] == "list"
    assert listed["action"]["sections"][0]["rows"] == [
        {"id": f"size_{size}", "title": size} for size in ("S", "M", "L", "XL")
    ]

    long = [
        {"title": "Change the delivery address", "payload": "ADDRESS"},
        {"title": "Cancel", "payload": "CANCEL"},
    ]
    await reply(client, cid, text="Anything else?", quick_replies=long)
    assert (await settled(client, cid, 4))["status"]["state"] == "sent"
    rows = bodies(graph[0])[2]["interactive"]["action"]["sections"][0]["rows"]
    assert rows[0] == {
        "id": "ADDRESS",
        "title": "Change the delivery add\u2026",
        "description": "Change the delivery address",
    }
    assert all(len(row["title"]) <= 24 for row in rows)


async def test_media_goes_out_by_link_and_what_cannot_be_sent_fails_visibly(
    aiohttp_client: Any, redis_url: str, redis: Redis, graph: tuple[Graph, str]
) -> None:
    client = await delivering(aiohttp_client, redis_url, graph[1])
    cid = await customer(client)
    image = {"type": "image", "url": "https://cdn.example.com/receipt-A-1042.png"}
    invoice = {"type": "file", "url": "https://cdn.example.com/A-1042.pdf", "name": "A-1042.pdf"}
    await reply(client, cid, text="Your receipt and invoice", attachments=[image, invoice])
    assert (await settled(client, cid, 2))["status"]["channel_message_id"] == "wamid.local.1"
    base = {"messaging_product": "whatsapp", "recipient_type": "individual", "to": WA_ID}
    assert bodies(graph[0]) == [
        {**base, "type": "image", "image": {"link": image["url"]}},
        {
            **base,
            "type": "document",
            "document": {"link": invoice["url"], "filename": "A-1042.pdf"},
        },
        {
            **base,
            "type": "text",
            "text": {"preview_url": False, "body": "Your receipt and invoice"},
        },
    ]

    product = {"type": "product", "product": {"id": "TRAIL-42"}}
    await reply(client, cid, attachments=[product])
    failed = await settled(client, cid, 3)
    assert failed["status"]["state"] == "failed"
    assert failed["status"]["reason"].startswith("unsendable: ")
    assert len(graph[0].requests) == 3


# -- the 24-hour window ------------------------------------------------------------------------


async def test_outside_the_window_a_reply_is_the_configured_template(
    aiohttp_client: Any, redis_url: str, redis: Redis, graph: tuple[Graph, str]
) -> None:
    client = await delivering(aiohttp_client, redis_url, graph[1], whatsapp={"templates": TEMPLATE})
    cid = await customer(client)
    await wrote_ago(redis, cid, 25 * HOUR_MS)
    await reply(client, cid, text="A-1042")
    sent = await settled(client, cid, 2)
    assert (sent["status"]["state"], sent["text"]) == ("sent", "A-1042")
    assert bodies(graph[0]) == [fixture_json("whatsapp_send_template_request.json")]


async def test_outside_the_window_without_a_template_a_reply_fails_and_graph_is_not_called(
    aiohttp_client: Any, redis_url: str, redis: Redis, graph: tuple[Graph, str]
) -> None:
    client = await delivering(aiohttp_client, redis_url, graph[1])
    cid = await customer(client)
    await wrote_ago(redis, cid, 25 * HOUR_MS)
    await reply(client, cid, text="Still there?")
    failed = await settled(client, cid, 2)
    assert (failed["status"]["state"], failed["status"]["attempts"]) == ("failed", 1)
    assert failed["status"]["reason"] == (
        "outside_window: the customer last wrote 25 h ago; outside the 24-hour window only "
        "an approved template can be sent; [whatsapp] templates.default is not set"
    )
    assert graph[0].requests == []


@pytest.mark.parametrize("template", [True, False])
async def test_a_customer_who_never_wrote_on_whatsapp_gets_only_a_template(
    aiohttp_client: Any, redis_url: str, redis: Redis, graph: tuple[Graph, str], template: bool
) -> None:
    options = {"whatsapp": {"templates": TEMPLATE}} if template else {}
    client = await delivering(aiohttp_client, redis_url, graph[1], **options)
    cid = (await ingest(client, channel="web", external_id="vis_dana"))["customer_id"]
    link = {"channel": "whatsapp", "external_id": WA_ID}
    response = await client.post(f"/v1/customers/{cid}/identities", json=link, headers=AGENT)
    assert response.status == 201
    await reply(client, cid, text="Your order shipped")
    outcome = await settled(client, cid, 2)
    if template:
        assert outcome["status"]["state"] == "sent"
        parameters = bodies(graph[0])[0]["template"]["components"][0]["parameters"]
        assert parameters == [
            {"type": "text", "text": "there"},
            {"type": "text", "text": "Your order shipped"},
        ]
    else:
        assert outcome["status"]["reason"].startswith(
            "outside_window: the customer has not written on WhatsApp"
        )
        assert graph[0].requests == []


async def test_a_send_graph_refuses_as_outside_the_window_goes_again_as_the_template(
    aiohttp_client: Any, redis_url: str, redis: Redis, graph: tuple[Graph, str]
) -> None:
    graph[0].answers.append((400, fixture_json("whatsapp_send_error_outside_window.json")))
    client = await delivering(aiohttp_client, redis_url, graph[1], whatsapp={"templates": TEMPLATE})
    cid = await customer(client)
    await reply(client, cid, text="A-1042")
    sent = await settled(client, cid, 2)
    assert (sent["status"]["state"], sent["status"]["channel_message_id"]) == (
        "sent",
        "wamid.local.2",
    )
    assert [body["type"] for body in bodies(graph[0])] == ["text", "template"]


# -- Graph's errors --------------------------------------------------------------------------


def _error(code: int, message: str) -> dict[str, Any]:
    return {
        "error": {
            "message": f"(#{code}) {message}",
            "type": "OAuthException",
            "code": code,
            "error_data": {"messaging_product": "whatsapp", "details": message},
            "fbtrace_id": "AbCdLocal",
        }
    }


@pytest.mark.parametrize("code", [130429, 131056])
async def test_a_rate_limit_is_retried_then_sent(
    aiohttp_client: Any, redis_url: str, redis: Redis, graph: tuple[Graph, str], code: int
) -> None:
    graph[0].answers.append((400, _error(code, "Rate limit hit")))
    client = await delivering(aiohttp_client, redis_url, graph[1])
    cid = await customer(client)
    await reply(client, cid, text="One moment")
    sent = await settled(client, cid, 2)
    assert (sent["status"]["state"], sent["status"]["attempts"]) == ("sent", 2)
    assert "reason" not in sent["status"]
    assert len(graph[0].requests) == 2


@pytest.mark.parametrize(
    ("answer", "whatsapp", "reason"),
    [
        (  # no template to fall back on: Graph's own words
            (400, fixture_json("whatsapp_send_error_outside_window.json")),
            {},
            "outside_window: 131047 (#131047) Re-engagement message: Message failed to send "
            "because more than 24 hours have passed since the customer last replied to this "
            "number.",
        ),
        (
            (400, _error(131026, "Message undeliverable")),
            {},
            "undeliverable: 131026 (#131026) Message undeliverable: Message undeliverable",
        ),
        (
            (401, _error(190, "Error validating access token")),
            {},
            "token_expired: 190 (#190) Error validating access token: "
            "Error validating access token",
        ),
        (
            None,
            {"access_token": "EAAG-revoked"},
            "token_expired: 190 Error validating access token: Session has expired",
        ),
        (
            None,
            {"access_token": ""},
            "not_configured: set [whatsapp] access_token and phone_number_id to send",
        ),
    ],
)
async def test_graph_refusals_fail_with_their_reason_and_are_not_retried(
    aiohttp_client: Any,
    redis_url: str,
    redis: Redis,
    graph: tuple[Graph, str],
    answer: tuple[int, Any] | None,
    whatsapp: dict[str, str],
    reason: str,
) -> None:
    if answer:
        graph[0].answers.append(answer)
    client = await delivering(aiohttp_client, redis_url, graph[1], whatsapp=whatsapp)
    cid = await customer(client)
    await reply(client, cid, text="Your refund is approved")
    failed = await settled(client, cid, 2)
    assert (failed["status"]["state"], failed["status"]["attempts"]) == ("failed", 1)
    assert failed["status"]["reason"] == reason


# -- statuses --------------------------------------------------------------------------------


@pytest.mark.parametrize("before_digests", [False, True])
async def test_statuses_are_the_reply_s_delivery_status_and_never_go_back(
    aiohttp_client: Any, redis_url: str, redis: Redis, graph: tuple[Graph, str],
    before_digests: bool,
) -> None:  # fmt: skip
    """`before_digests`: the reply's WhatsApp id indexed as omni did before the index
    held digests (omni.store.entries), which is found as it was."""
    graph[0].answers.append(
        (200, {"messaging_product": "whatsapp", "messages": [{"id": WAMID_OURS}]})
    )
    client = await delivering(aiohttp_client, redis_url, graph[1])
    cid = await customer(client)
    await reply(client, cid, text="It shipped today")
    assert (await settled(client, cid, 2))["status"]["channel_message_id"] == WAMID_OURS
    if before_digests:
        index = keys.message_ids(cid)
        entry = (await redis.xrevrange(keys.timeline(cid), count=1))[0][0]
        assert await redis.hdel(index, dedupe_field("whatsapp", WAMID_OURS))  # type: ignore[misc]
        await redis.hset(index, legacy_dedupe_field("whatsapp", WAMID_OURS), entry)  # type: ignore[misc]

    # Read at once: "delivered" was never reported, and read implies it.
    assert (await accepted(client, "whatsapp_status_read.json"))["messages"] == 0
    ours = (await timeline(client, cid))[0]
    assert (ours["status"]["state"], ours["read_at"]) == ("delivered", iso(1767225690000))
    # Late and repeated reports change nothing.
    await accepted(client, "whatsapp_redelivery_duplicate.json")  # a late "delivered"
    await accepted(client, status(WAMID_OURS, "sent", "1767225650"))
    assert (await timeline(client, cid))[0] == ours
    assert len(await timeline(client, cid)) == 2


async def test_a_failed_status_is_the_reply_s_failure_with_its_error(
    aiohttp_client: Any, redis_url: str, redis: Redis, graph: tuple[Graph, str]
) -> None:
    graph[0].answers.append(
        (200, {"messaging_product": "whatsapp", "messages": [{"id": WAMID_FAILED}]})
    )
    client = await delivering(aiohttp_client, redis_url, graph[1])
    cid = await customer(client)
    await reply(client, cid, text="Are you still interested?")
    assert (await settled(client, cid, 2))["status"]["state"] == "sent"
    await accepted(client, "whatsapp_status_failed.json")
    ours = (await timeline(client, cid))[0]
    assert ours["status"]["state"] == "failed"
    assert ours["status"]["reason"] == (
        "outside_window: 131047 Re-engagement message: Message failed to send because more "
        "than 24 hours have passed since the customer last replied to this number."
    )
    assert ours["status"]["channel_message_id"] == WAMID_FAILED
    await accepted(client, status(WAMID_FAILED, "delivered", "1767315700"))
    assert (await timeline(client, cid))[0]["status"]["state"] == "failed"


async def test_a_status_that_comes_before_the_send_answers_is_applied_when_it_does(
    aiohttp_client: Any, redis_url: str, redis: Redis, graph: tuple[Graph, str]
) -> None:
    # Meta's failed status (131047, usually asynchronous) reaches omni before Graph's
    # answer to the send has been linked: it waits, as Twilio's early receipts do.
    graph[0].answers.append(
        (200, {"messaging_product": "whatsapp", "messages": [{"id": WAMID_FAILED}]})
    )
    client = await delivering(aiohttp_client, redis_url, graph[1])
    cid = await customer(client)
    await accepted(client, "whatsapp_status_failed.json")  # no message of ours has this id yet
    await reply(client, cid, text="Are you still interested?")

    async def failed() -> bool:
        ours = (await timeline(client, cid))[0]
        return ours.get("status", {}).get("state") == "failed"

    await until(failed)
    ours = (await timeline(client, cid))[0]
    assert ours["text"] == "Are you still interested?"
    assert ours["status"]["reason"].startswith("outside_window: 131047 Re-engagement message")
    assert ours["status"]["channel_message_id"] == WAMID_FAILED


async def test_a_reply_delivered_then_undeliverable_codes_on_a_status(
    aiohttp_client: Any, redis_url: str, redis: Redis, graph: tuple[Graph, str]
) -> None:
    client = await delivering(aiohttp_client, redis_url, graph[1])
    cid = await customer(client)
    await reply(client, cid, text="first")
    await settled(client, cid, 2)
    await reply(client, cid, text="second")
    await settled(client, cid, 3)
    await accepted(client, status("wamid.local.1", "delivered"))
    errors = [
        {
            "code": 131026,
            "title": "Message undeliverable",
            "error_data": {"details": "The recipient's app is too old"},
        }
    ]
    await accepted(client, status("wamid.local.2", "failed", errors=errors))
    second, first, _ = await timeline(client, cid)
    assert first["status"]["state"] == "delivered"
    assert (second["status"]["state"], second["status"]["reason"]) == (
        "failed",
        "undeliverable: 131026 Message undeliverable: The recipient's app is too old",
    )


# -- continuing from another channel ---------------------------------------------------------


@pytest.mark.parametrize("present", ["token", "code"])
async def test_a_customer_continues_from_the_web_chat_on_whatsapp_with_a_link(
    aiohttp_client: Any,
    aiohttp_server: ServerFactory,
    redis_url: str,
    redis: Redis,
    graph: tuple[Graph, str],
    present: str,
) -> None:
    bot = BotReceiver(secret=BOT_SECRET)
    bot.default = (200, {"replies": [{"text": "Welcome back! Still about order 4417?"}]})
    bot_url = await serve(aiohttp_server, bot)
    client = await delivering(
        aiohttp_client,
        redis_url,
        graph[1],
        bots={"whatsapp": {"url": bot_url, "secret": BOT_SECRET}},
    )
    web = await ingest(client, channel="web", external_id="vis_dana", text="Where is order 4417?")
    cid = web["customer_id"]
    response = await client.post(
        f"/v1/customers/{cid}/link-tokens", json={"channel": "whatsapp"}, headers=BOT
    )
    assert response.status == 201, await response.text()
    link = await response.json()
    # What a wa.me link the web bot sent filled in for the customer, or the code typed.
    text = f"Continue my chat {link['token']}" if present == "token" else link["code"]
    await accepted(client, message("text", {"body": text}, "wamid.link1"))

    context = await context_of(client)
    assert context["customer"]["id"] == cid
    sent = await settled(client, cid, 3)
    assert (sent["channel"], sent["text"]) == ("whatsapp", "Welcome back! Still about order 4417?")
    (told,) = bot.delivered.values()
    assert told["message"]["text"] == text
    said = [m.get("text") for m in told["context"]["recent_messages"]]
    assert said == ["Where is order 4417?", text]
    assert told["context"]["continuity"]["came_from"] == "web"
    assert bodies(graph[0])[0]["text"]["body"] == "Welcome back! Still about order 4417?"

    # The same code again is only text: it links nobody else.
    await accepted(client, message("text", {"body": link["code"]}, "wamid.link2"))
    assert (await context_of(client))["customer"]["id"] == cid
