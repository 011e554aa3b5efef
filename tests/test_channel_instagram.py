"""The Instagram channel through the real app: every signed payload through the webhook
route into the history, the handshake and the signature, and replies out through a local
Graph API (which checks the token and records what it gets) under Instagram's windows."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from omni import keys
from omni.app import create_app
from omni.clock import iso, now_ms
from omni.settings import Settings
from tests.adapters.test_instagram import (
    ACCOUNT,
    CUSTOMER,
    EXPECTED,
    MID_1,
    PAGE_TOKEN,
    SECRET,
    SIGNED,
    VERIFY_TOKEN,
    Graph,
    fixture_json,
    handshake_cases,
    raw,
    sidecar,
    signature,
)
from tests.conftest import AGENT, BOT, make_settings, snapshot
from tests.test_bots import BotReceiver, ServerFactory, serve
from tests.test_worker import until

WEBHOOK = "/channels/instagram/webhook"
HEADER = "X-Hub-Signature-256"
HOUR_MS = 3_600_000
INSTAGRAM = {
    "app_secret": SECRET,
    "verify_token": VERIFY_TOKEN,
    "page_token": PAGE_TOKEN,
    "account_id": ACCOUNT,
    "graph_url": "http://127.0.0.1:9/v22.0",  # nothing listens: inbound tests send nothing
}
FAST = {"in_process_worker": True, "block_ms": 50, "base_delay_ms": 5, "max_delay_ms": 20}
BOT_SECRET = "instagram-bot-secret-0001"
SENT_MID: str = fixture_json("instagram_send_success_response.json")["message_id"]
# The message the reaction, unreact and read fixtures point at.
REACTED_MID: str = fixture_json("instagram_reaction.json")["entry"][0]["messaging"][0]["reaction"][
    "mid"
]
SETTLED = ("sent", "delivered", "failed")


@pytest.fixture
def settings(redis_url: str) -> Settings:
    return make_settings(redis_url, instagram=INSTAGRAM)


@pytest.fixture
async def graph(aiohttp_server: ServerFactory) -> AsyncIterator[tuple[Graph, str]]:
    stub = Graph()
    app = web.Application()
    app.router.add_post("/v22.0/{account}/messages", stub.handle)
    server = await aiohttp_server(app)
    yield stub, str(server.make_url("/v22.0"))
    stub.release.set()


async def delivering(
    aiohttp_client: Any, redis_url: str, graph_url: str, **sections: dict[str, Any]
) -> TestClient:
    """The app with a worker in it, sending to the local Graph API."""
    instagram = {**INSTAGRAM, "graph_url": graph_url, **sections.pop("instagram", {})}
    settings = make_settings(redis_url, instagram=instagram, outbox=FAST, **sections)
    client: TestClient = await aiohttp_client(create_app(settings))
    return client


# -- helpers ---------------------------------------------------------------------------------


async def post(
    client: TestClient, body: str | bytes, sig: str | None = None, *, signed: bool = True
) -> ClientResponse:
    """POST a payload (a fixture name or bytes), signed with the app secret unless told."""
    data = raw(body) if isinstance(body, str) else body
    headers = {"Content-Type": "application/json"}
    if signed:
        headers[HEADER] = sig if sig is not None else signature(data)
    return await client.post(WEBHOOK, data=data, headers=headers)


async def accepted(client: TestClient, body: str | bytes) -> dict[str, Any]:
    response = await post(client, body)
    assert response.status == 200, await response.text()
    answer: dict[str, Any] = await response.json()
    return answer


async def cid_of(client: TestClient, external_id: str = CUSTOMER) -> str:
    response = await client.get(
        "/v1/context", params={"channel": "instagram", "external_id": external_id}, headers=BOT
    )
    assert response.status == 200, await response.text()
    cid: str = (await response.json())["customer"]["id"]
    return cid


async def history(client: TestClient, external_id: str = CUSTOMER) -> list[dict[str, Any]]:
    """The customer's timeline, newest first."""
    return await timeline(client, await cid_of(client, external_id))


async def timeline(client: TestClient, cid: str) -> list[dict[str, Any]]:
    response = await client.get(f"/v1/customers/{cid}/history", headers=AGENT)
    assert response.status == 200
    messages: list[dict[str, Any]] = (await response.json())["messages"]
    return messages


async def settled(client: TestClient, cid: str, count: int) -> dict[str, Any]:
    """The newest message once there are `count` and its delivery is over."""

    async def done() -> bool:
        items = await timeline(client, cid)
        return len(items) == count and items[0].get("status", {}).get("state") in SETTLED

    await until(done)
    return (await timeline(client, cid))[0]


async def reply(
    client: TestClient, cid: str, headers: dict[str, str], **body: Any
) -> dict[str, Any]:
    response = await client.post(
        f"/v1/customers/{cid}/messages", json={"channel": "instagram", **body}, headers=headers
    )
    assert response.status == 202, await response.text()
    sent: dict[str, Any] = await response.json()
    return sent


async def wrote_ago(redis: Redis, cid: str, age_ms: int) -> None:
    """Move the customer's last Instagram message back in time (the window's start)."""
    await redis.hset(keys.customer(cid), "in:instagram", now_ms() - age_ms)  # type: ignore[misc]


def echo_of(mid: str, text: str) -> bytes:
    """Meta's echo of a message our account sent, as compact as Meta sends it."""
    body = fixture_json("instagram_echo.json")
    body["entry"][0]["messaging"][0]["message"].update(mid=mid, text=text)
    return json.dumps(body, separators=(",", ":")).encode()


def one_event(event: dict[str, Any]) -> bytes:
    body = {"object": "instagram", "entry": [{"id": ACCOUNT, "time": 1, "messaging": [event]}]}
    return json.dumps(body).encode()


# -- the handshake ---------------------------------------------------------------------------


async def test_handshake_echoes_the_challenge_only_for_the_verify_token(
    client: TestClient,
) -> None:
    for query, expected in handshake_cases():
        response = await client.get(WEBHOOK, params=query)
        if expected is None:
            assert response.status == 403
            assert response.content_type == "application/problem+json"
            assert "1158201444" not in await response.text()
        else:
            assert response.status == 200
            assert response.content_type == "text/plain"
            assert await response.text() == expected
    assert (await client.get(WEBHOOK)).status == 403


async def test_an_unconfigured_channel_answers_404(
    aiohttp_client: Any, redis_url: str, redis: Redis
) -> None:
    client = await aiohttp_client(create_app(make_settings(redis_url)))
    assert (await client.get(WEBHOOK, params={"hub.mode": "subscribe"})).status == 404
    response = await post(client, "instagram_text.json")
    assert response.status == 404
    assert await snapshot(redis) == {}


async def test_the_routes_are_in_the_openapi_document(client: TestClient) -> None:
    paths = (await (await client.get("/openapi.json")).json())["paths"]
    assert set(paths[WEBHOOK]) == {"get", "post"}
    assert "401" in paths[WEBHOOK]["post"]["responses"]


# -- the signature ---------------------------------------------------------------------------


def refused() -> list[tuple[str, str | None]]:
    tampered = sidecar("instagram_text_tampered.sig.txt")["X-Hub-Signature-256 presented"]
    wrong = sidecar("instagram_text_wrong_secret.sig.txt")["X-Hub-Signature-256 presented"]
    good = signature(raw("instagram_text.json"))
    return [
        ("instagram_text_tampered.json", tampered),
        ("instagram_text.json", wrong),
        ("instagram_text.json", None),
        ("instagram_text.json", "sha1=" + good[7:47]),
        ("instagram_text.json", "sha256=" + good[7:].upper()),
        ("instagram_text.json", good[7:]),
        ("instagram_batch_multi_entry.json", good),
    ]


@pytest.mark.parametrize(("name", "sig"), refused())
async def test_a_bad_signature_is_401_and_stores_nothing(
    client: TestClient, redis: Redis, name: str, sig: str | None
) -> None:
    await accepted(client, "instagram_image.json")
    before = await snapshot(redis)
    response = await post(client, name, sig, signed=sig is not None)
    assert response.status == 401
    assert response.content_type == "application/problem+json"
    assert await snapshot(redis) == before


async def test_an_empty_body_is_401(client: TestClient, redis: Redis) -> None:
    assert (await post(client, b"", signature(b""))).status == 401
    assert await snapshot(redis) == {}


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b'{"object":"instagram","entry":[',
        b"[]",
        b"null",
        b'{"object":"page","entry":[]}',
        b'{"object":"instagram","entry":[],"x":NaN}',
        b"\xff\xfe{}",
    ],
)
async def test_a_signed_body_that_is_no_notification_is_400(
    client: TestClient, redis: Redis, body: bytes
) -> None:
    response = await post(client, body)
    assert response.status == 400
    assert response.content_type == "application/problem+json"
    assert await snapshot(redis) == {}


@pytest.mark.parametrize(
    "body",
    [
        b'{"object":"instagram"}',
        b'{"object":"instagram","entry":[1,"x",null,{"messaging":"x"},{"standby":[7]}]}',
        one_event({"sender": {"id": CUSTOMER}, "message": {"text": "no mid"}}),
        one_event({"sender": {"id": CUSTOMER}, "message": {"mid": {"a": 1}}}),
        one_event({"sender": {"id": [1]}, "message": {"mid": "m", "text": "hi"}}),
        one_event({"sender": {"id": CUSTOMER}, "reaction": {"mid": "m", "action": "poke"}}),
        one_event({"sender": {"id": CUSTOMER}, "brand_new_kind": {"x": 1}}),
        one_event({"sender": {"id": CUSTOMER}, "read": {"mid": "nothing we stored"}}),
    ],
)
async def test_shapes_it_does_not_know_are_acknowledged_and_store_nothing(
    client: TestClient, redis: Redis, body: bytes
) -> None:
    # 200, or Meta would redeliver them for 36 hours and then unsubscribe the app.
    response = await post(client, body)
    assert response.status == 200, await response.text()
    assert (await response.json())["messages"] == 0
    assert await snapshot(redis) == {}


async def test_a_body_over_the_limit_is_413(
    aiohttp_client: Any, redis_url: str, redis: Redis
) -> None:
    settings = make_settings(redis_url, instagram=INSTAGRAM, limits={"body_max": 4096})
    client = await aiohttp_client(create_app(settings))
    body = b'{"object":"instagram","entry":[],"pad":"' + b"x" * 5000 + b'"}'
    assert (await post(client, body)).status == 413
    assert await snapshot(redis) == {}


# -- every payload into the history ----------------------------------------------------------


@pytest.mark.parametrize("name", SIGNED)
async def test_every_signed_payload_is_acknowledged_with_meta_s_signature(
    client: TestClient, name: str
) -> None:
    response = await post(client, name, sidecar(name.replace(".json", ".sig.txt"))[HEADER])
    assert response.status == 200, await response.text()
    assert (await response.json())["events"] == len(EXPECTED[name])


async def test_text_in_any_script_is_stored_exactly_as_written(client: TestClient) -> None:
    await accepted(client, "instagram_text.json")
    (message,) = await history(client)
    assert (message["direction"], message["channel"]) == ("inbound", "instagram")
    assert message["author"] == {"kind": "customer", "id": CUSTOMER}
    assert message["text"] == "Hi! Is my order #A-1042 shipped yet?"
    assert message["channel_message_id"] == MID_1
    assert message["sent_at"] == "2025-12-31T23:59:59.688Z"
    assert message["metadata"] == {"ig_account_id": ACCOUNT}

    wanted = fixture_json("instagram_text_emoji_nonlatin.json")["entry"][0]["messaging"][0]
    await accepted(client, "instagram_text_emoji_nonlatin.json")
    await accepted(client, "instagram_text_emoji_nonlatin_utf8raw.json")  # the same mid
    (emoji,) = await history(client, "1180000000000002")
    assert emoji["text"] == wanted["message"]["text"]
    assert "\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466" in emoji["text"]


async def test_long_text_is_kept_and_text_over_the_limit_is_cut_and_flagged(
    client: TestClient,
) -> None:
    await accepted(client, "instagram_text_long.json")
    await accepted(client, "instagram_text_over_limit.json")
    over, long = await history(client)
    assert len(long["text"]) == 974 and "truncated" not in long["metadata"]
    assert len(over["text"]) <= 4096 and over["metadata"]["truncated"] is True


async def test_attachments_stories_and_reels(client: TestClient) -> None:
    await accepted(client, "instagram_image.json")
    (images,) = await history(client)
    assert [a["type"] for a in images["attachments"]] == ["image", "image"]
    assert all(a["url"].startswith("https://lookaside.fbsbx.com/") for a in images["attachments"])
    assert "text" not in images

    await accepted(client, "instagram_story_reply.json")
    await accepted(client, "instagram_story_mention.json")
    mention, story = await history(client, "1180000000000003")
    assert story["text"] == "Do you have this in size M? \U0001f525"
    assert [a["type"] for a in story["attachments"]] == ["story_reply"]
    assert story["metadata"]["story_id"] == "18200000000000001"
    assert [a["type"] for a in mention["attachments"]] == ["story_mention"]

    await accepted(client, "instagram_ig_reel_share.json")
    (reel,) = await history(client, "1180000000000002")
    assert reel["attachments"][0]["type"] == "reel"
    assert reel["attachments"][0]["name"] == "Spring drop \U0001f338 new colours"
    assert reel["metadata"]["reel_video_id"] == "18300000000000001"


async def test_quick_reply_inline_reply_and_postback(client: TestClient) -> None:
    await accepted(client, "instagram_text.json")
    await accepted(client, "instagram_inline_reply_quick_reply.json")
    answer, _ = await history(client)
    assert answer["text"] == "Track my order"
    assert answer["quick_reply"] == {"payload": "TRACK_ORDER:A-1042", "title": "Track my order"}
    assert answer["reply_to"] == MID_1

    await accepted(client, "instagram_postback.json")
    (postback,) = await history(client, "1180000000000002")
    assert postback["postback"]["title"] == "Talk to a human"
    assert json.loads(postback["postback"]["payload"]) == {"action": "handoff", "reason": "billing"}


async def test_unsend_marks_the_earlier_message_deleted(client: TestClient) -> None:
    await accepted(client, "instagram_text_emoji_nonlatin.json")
    await accepted(client, "instagram_unsend.json")
    (message,) = await history(client, "1180000000000002")
    assert message["deleted_at"] == iso(1767225679900)
    # Taken back: its place stays, its words are shown to no agent and no bot.
    assert "text" not in message
    cid = message["customer_id"]
    context = await (await client.get(f"/v1/customers/{cid}/context", headers=BOT)).json()
    assert [m.get("text") for m in context["recent_messages"]] == [None]


async def test_unsupported_standby_unknown_fields_and_referral_are_kept(
    client: TestClient,
) -> None:
    await accepted(client, "instagram_unsupported.json")
    (unsupported,) = await history(client, "1180000000000002")
    assert unsupported["metadata"]["unsupported"] is True
    assert [a["type"] for a in unsupported["attachments"]] == ["other"]

    await accepted(client, "instagram_standby.json")
    (standby,) = await history(client)
    assert (standby["text"], standby["metadata"]["standby"]) == ("Hello? anyone there", True)

    await accepted(client, "instagram_unknown_fields.json")
    await accepted(client, "instagram_referral.json")
    await accepted(client, "instagram_referral.json")  # a redelivery: stored once
    referral, unknown = await history(client, "1180000000000003")
    assert unknown["text"] == "Price?"
    assert unknown["metadata"]["ad_title"] == "Spring Sale"
    assert referral["metadata"]["event"] == "referral"
    assert referral["metadata"]["referral_ref"] == "spring_sale_2026"
    assert referral["author"]["kind"] == "customer" and "text" not in referral


async def test_the_dashboard_test_stores_nothing(client: TestClient, redis: Redis) -> None:
    answer = await accepted(client, "instagram_dashboard_test_changes.json")
    assert answer == {"events": 1, "messages": 0}
    assert await snapshot(redis) == {}


async def test_every_event_of_a_batch_is_stored(client: TestClient) -> None:
    answer = await accepted(client, "instagram_batch_multi_entry.json")
    assert answer == {"events": 7, "messages": 5}
    echo, first = await history(client)
    assert (first["direction"], first["text"]) == ("inbound", "first of the batch")
    # Our own account's message (sent from the Instagram app): outbound, never the customer's.
    assert (echo["direction"], echo["author"]) == ("outbound", {"kind": "agent", "id": ACCOUNT})
    assert echo["text"] == "Thanks, Ana!"
    audio, postback, text = await history(client, "1180000000000004")
    assert text["text"] == "second account, first text"
    assert text["metadata"]["ig_account_id"] == "17841400000000002"
    assert postback["postback"] == {"payload": "HOURS", "title": "Opening hours"}
    assert [a["type"] for a in audio["attachments"]] == ["audio"]


async def test_redelivery_and_replay_store_nothing_twice(client: TestClient, redis: Redis) -> None:
    await accepted(client, "instagram_text.json")
    before = await snapshot(redis)
    for name in ("instagram_redelivery_duplicate.json", "instagram_replay_identical.json"):
        assert (await accepted(client, name))["messages"] == 1
    await accepted(client, "instagram_text.json")
    assert await snapshot(redis) == before
    assert len(await history(client)) == 1


# -- replies out through the Send API --------------------------------------------------------


async def test_a_dm_reaches_the_bot_and_its_reply_goes_out_and_its_echo_is_matched(
    aiohttp_client: Any,
    aiohttp_server: ServerFactory,
    redis_url: str,
    redis: Redis,
    graph: tuple[Graph, str],
) -> None:
    bot = BotReceiver(secret=BOT_SECRET)
    options = [
        {"title": "Track order", "payload": "TRACK_ORDER"},
        {"title": "Talk to a human", "payload": "HANDOFF"},
    ]
    bot.default = (200, {"replies": [{"text": "What do you need?", "quick_replies": options}]})
    bot_url = await serve(aiohttp_server, bot)
    graph[0].answers.append((200, fixture_json("instagram_send_success_response.json")))
    client = await delivering(
        aiohttp_client,
        redis_url,
        graph[1],
        bots={"instagram": {"url": bot_url, "secret": BOT_SECRET}},
    )
    await accepted(client, "instagram_text.json")
    cid = await cid_of(client)
    sent = await settled(client, cid, 2)

    (told,) = bot.delivered.values()  # the bot verified the signature
    assert told["message"]["text"] == "Hi! Is my order #A-1042 shipped yet?"
    assert told["context"]["customer"]["identities"][0]["external_id"] == CUSTOMER
    (request,) = graph[0].requests
    assert request["authorization"] == f"Bearer {PAGE_TOKEN}"
    assert request["path"] == f"/v22.0/{ACCOUNT}/messages"
    assert request["body"] == fixture_json("instagram_send_quick_replies_request.json")
    assert (sent["author"]["kind"], sent["text"]) == ("bot", "What do you need?")
    assert sent["quick_replies"] == options
    assert sent["status"]["state"] == "sent"
    assert sent["status"]["channel_message_id"] == SENT_MID

    # Meta echoes our send: the same message, not a second one, and no customer text.
    assert (await accepted(client, echo_of(SENT_MID, "What do you need?")))["messages"] == 1
    items = await timeline(client, cid)
    assert [(m["direction"], m["author"]["kind"]) for m in items] == [
        ("outbound", "bot"),
        ("inbound", "customer"),
    ]

    # While another app owns the thread (standby), agents see the message; the bot is
    # not asked, so it cannot talk over the owner.
    await accepted(client, "instagram_standby.json")
    assert (await timeline(client, cid))[0]["metadata"]["standby"] is True
    response = await client.get(f"/v1/customers/{cid}/deliveries", headers=AGENT)
    kinds = sorted(d["kind"] for d in (await response.json())["items"])
    assert kinds == ["bot", "instagram"]
    assert len(bot.attempts) == 1


async def test_an_echo_that_beats_the_send_api_answer_is_our_reply_not_a_second_one(
    aiohttp_client: Any, redis_url: str, redis: Redis, graph: tuple[Graph, str]
) -> None:
    """Meta often delivers the echo webhook of a send before the Send API call returns
    the message's id: the echo must still be recognised as the reply being sent."""
    mid = "aWdfZAG1faXRlbTpFQ0hPX1JBQ0U"
    graph[0].hang = True
    graph[0].answers.append((200, {"recipient_id": CUSTOMER, "message_id": mid}))
    client = await delivering(aiohttp_client, redis_url, graph[1])
    await accepted(client, "instagram_text.json")
    cid = await cid_of(client)
    await reply(client, cid, AGENT, text="It shipped today")

    async def sending() -> bool:
        return len(graph[0].requests) == 1

    await until(sending)
    assert (await accepted(client, echo_of(mid, "It shipped today")))["messages"] == 1
    graph[0].release.set()
    ours = await settled(client, cid, 2)
    assert (ours["author"]["kind"], ours["text"]) == ("agent", "It shipped today")
    assert ours["status"]["channel_message_id"] == mid
    # Later events naming the echo's id find the reply.
    await accepted(client, echo_of(mid, "It shipped today"))
    assert [m["direction"] for m in await timeline(client, cid)] == ["outbound", "inbound"]
    # A message typed in Instagram's own app, with other text, is still stored.
    await accepted(client, echo_of("aWdfZAG1faXRlbTpUWVBFRF9JTl9BUFA", "Typed in the app"))
    texts = [m["text"] for m in await timeline(client, cid)]
    assert texts[:2] == ["Typed in the app", "It shipped today"]


async def test_reactions_and_reads_annotate_the_reply_they_point_at(
    aiohttp_client: Any, redis_url: str, redis: Redis, graph: tuple[Graph, str]
) -> None:
    graph[0].answers.append((200, {"recipient_id": CUSTOMER, "message_id": REACTED_MID}))
    client = await delivering(aiohttp_client, redis_url, graph[1])
    await accepted(client, "instagram_text.json")
    cid = await cid_of(client)
    await reply(client, cid, AGENT, text="It shipped today")
    assert (await settled(client, cid, 2))["status"]["channel_message_id"] == REACTED_MID

    await accepted(client, "instagram_reaction.json")
    await accepted(client, "instagram_read.json")
    ours = (await timeline(client, cid))[0]
    assert ours["reaction"] == "\u2764\ufe0f"
    assert ours["read_at"] == iso(1767225661910)
    await accepted(client, "instagram_unreact.json")
    ours = (await timeline(client, cid))[0]
    assert "reaction" not in ours and ours["read_at"] == iso(1767225661910)


async def test_an_image_reply_is_sent_as_an_attachment(
    aiohttp_client: Any, redis_url: str, redis: Redis, graph: tuple[Graph, str]
) -> None:
    client = await delivering(aiohttp_client, redis_url, graph[1])
    await accepted(client, "instagram_text.json")
    cid = await cid_of(client)
    image = {"type": "image", "url": "https://cdn.example.com/receipt-A-1042.png"}
    await reply(client, cid, AGENT, attachments=[image])
    assert (await settled(client, cid, 2))["status"]["state"] == "sent"
    assert graph[0].requests[0]["body"] == fixture_json("instagram_send_image_request.json")

    await reply(client, cid, AGENT, attachments=[{"type": "location", "latitude": 1.0}])
    failed = await settled(client, cid, 3)
    assert failed["status"]["state"] == "failed"
    assert failed["status"]["reason"].startswith("unsendable: ")
    assert len(graph[0].requests) == 1


async def test_after_24_hours_only_an_agent_replies_with_the_human_agent_tag(
    aiohttp_client: Any, redis_url: str, redis: Redis, graph: tuple[Graph, str]
) -> None:
    client = await delivering(aiohttp_client, redis_url, graph[1])
    await accepted(client, "instagram_text.json")
    cid = await cid_of(client)
    await wrote_ago(redis, cid, 25 * HOUR_MS)

    text = "Sorry for the wait \u2014 an agent checked your refund: approved."
    await reply(client, cid, AGENT, text=text)
    assert (await settled(client, cid, 2))["status"]["state"] == "sent"
    (request,) = graph[0].requests
    assert request["body"] == fixture_json("instagram_send_human_agent_request.json")

    await reply(client, cid, BOT, text="Anything else?")
    failed = await settled(client, cid, 3)
    assert failed["status"]["state"] == "failed"
    assert failed["status"]["reason"].startswith("outside_window: the customer last wrote 25 h")
    assert "only an agent" in failed["status"]["reason"]
    assert len(graph[0].requests) == 1


async def test_after_7_days_a_reply_fails_visibly_and_graph_is_not_called(
    aiohttp_client: Any, redis_url: str, redis: Redis, graph: tuple[Graph, str]
) -> None:
    client = await delivering(aiohttp_client, redis_url, graph[1])
    await accepted(client, "instagram_text.json")
    cid = await cid_of(client)
    await wrote_ago(redis, cid, 8 * 24 * HOUR_MS)
    await reply(client, cid, AGENT, text="Still there?")
    failed = await settled(client, cid, 2)
    assert (failed["status"]["state"], failed["status"]["attempts"]) == ("failed", 1)
    assert failed["status"]["reason"] == (
        "outside_window: the customer last wrote 8 days ago; nothing can be sent after 7 days"
    )
    assert graph[0].requests == []


async def test_a_customer_who_never_wrote_on_instagram_cannot_be_messaged_first(
    aiohttp_client: Any, redis_url: str, redis: Redis, graph: tuple[Graph, str]
) -> None:
    client = await delivering(aiohttp_client, redis_url, graph[1])
    response = await client.post(
        "/v1/messages",
        json={"channel": "web", "external_id": "v-1", "channel_message_id": "w-1", "text": "hi"},
        headers=BOT,
    )
    cid = (await response.json())["customer_id"]
    link = {"channel": "instagram", "external_id": CUSTOMER}
    assert (
        await client.post(f"/v1/customers/{cid}/identities", json=link, headers=AGENT)
    ).status == 201
    await reply(client, cid, AGENT, text="Hello from Instagram")
    failed = await settled(client, cid, 2)
    assert failed["status"]["reason"].startswith("outside_window: the customer has not written")
    assert graph[0].requests == []


async def test_a_rate_limit_is_retried_then_sent(
    aiohttp_client: Any, redis_url: str, redis: Redis, graph: tuple[Graph, str]
) -> None:
    graph[0].answers.append((400, fixture_json("instagram_send_error_rate_limit.json")))
    client = await delivering(aiohttp_client, redis_url, graph[1])
    await accepted(client, "instagram_text.json")
    cid = await cid_of(client)
    await reply(client, cid, AGENT, text="One moment")
    sent = await settled(client, cid, 2)
    assert (sent["status"]["state"], sent["status"]["attempts"]) == ("sent", 2)
    assert "reason" not in sent["status"]
    assert [r["body"]["message"]["text"] for r in graph[0].requests] == ["One moment"] * 2


@pytest.mark.parametrize(
    ("instagram", "answers", "slug"),
    [
        ({}, [(400, fixture_json("instagram_send_error_token_expired.json"))], "token_expired"),
        ({"page_token": "EAA-revoked"}, [], "token_invalid"),
        ({}, [(400, fixture_json("instagram_send_error_outside_window.json"))], "outside_window"),
        ({"page_token": ""}, [], "not_configured"),
    ],
)
async def test_graph_refusals_fail_with_their_reason_and_are_not_retried(
    aiohttp_client: Any,
    redis_url: str,
    redis: Redis,
    graph: tuple[Graph, str],
    instagram: dict[str, str],
    answers: list[tuple[int, Any]],
    slug: str,
) -> None:
    graph[0].answers.extend(answers)
    client = await delivering(aiohttp_client, redis_url, graph[1], instagram=instagram)
    await accepted(client, "instagram_text.json")
    cid = await cid_of(client)
    await reply(client, cid, AGENT, text="Your refund is approved")
    failed = await settled(client, cid, 2)
    assert (failed["status"]["state"], failed["status"]["attempts"]) == ("failed", 1)
    assert failed["status"]["reason"].startswith(f"{slug}: ")
    assert len(graph[0].requests) == (0 if slug == "not_configured" else 1)


def _postback_body(payload: str, title: str, mid: str) -> bytes:
    event = {"sender": {"id": "1180000000000077"}, "recipient": {"id": ACCOUNT},
             "timestamp": 1767225600000,
             "postback": {"mid": mid, "title": title, "payload": payload}}  # fmt: skip
    body = {"object": "instagram", "entry": [{"id": ACCOUNT, "time": 1767225600000,
                                              "messaging": [event]}]}  # fmt: skip
    return json.dumps(body).encode()


async def test_a_product_shared_from_instagram_is_a_product_a_bot_can_put_in_the_cart(
    client: TestClient,
) -> None:
    structured = {"product": {"id": "TRAIL-42", "price": 8900, "currency": "EUR"}}
    await accepted(client, _postback_body(json.dumps(structured), "Trail shoe 42", "pb-1"))
    await accepted(client, _postback_body("PRODUCT:SOCKS-3", "Running socks", "pb-2"))
    await accepted(client, _postback_body("PRODUCT:", "Broken button", "pb-3"))
    by_mid = {m["channel_message_id"]: m for m in await history(client, "1180000000000077")}
    shoe, socks, broken = by_mid["pb-1"], by_mid["pb-2"], by_mid["pb-3"]
    assert broken.get("attachments", []) == []  # an empty id is no product
    assert socks["attachments"] == [
        {
            "type": "product",
            "name": "Running socks",
            "product": {"id": "SOCKS-3", "name": "Running socks"},
        }
    ]
    product = shoe["attachments"][0]["product"]
    assert product == {"id": "TRAIL-42", "name": "Trail shoe 42", "price": 8900,
                       "currency": "EUR"}  # fmt: skip
    # The bot puts what the customer chose in the cart, as any channel will then see it.
    cid = await cid_of(client, "1180000000000077")
    cart = await client.get(f"/v1/customers/{cid}/cart", headers=BOT)
    item = {"sku": product["id"], "name": product["name"], "quantity": 1,
            "unit_price": product["price"], "currency": product["currency"]}  # fmt: skip
    put = await client.put(f"/v1/customers/{cid}/cart", json={"items": [item], "stage": "cart"},
                           headers={**BOT, "If-Match": cart.headers["ETag"]})  # fmt: skip
    assert put.status == 200
    assert (await put.json())["totals"] == {"item_count": 1, "subtotal": 8900}
