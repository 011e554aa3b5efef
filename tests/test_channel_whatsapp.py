"""WhatsApp in: every signed fixture through the webhook route, the handshake and the
signature, each kind of message as the canonical message, the media fetched from a local
Graph API, and who the customer is (their wa_id; their number joins only on the
verified-phone rule)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from omni.app import create_app
from omni.settings import Settings
from tests.conftest import AGENT, BOT, ingest, make_settings, snapshot
from tests.test_bots import ServerFactory
from tests.whatsapp_graph import (
    ACCESS_TOKEN,
    EVENTS,
    INBOUND,
    MEDIA_ID,
    PHONE_NUMBER_ID,
    SECRET,
    VERIFY_TOKEN,
    WA_ID,
    WAMID_OURS,
    WAMID_TEXT,
    Graph,
    change,
    handshake_cases,
    message,
    raw,
    sidecar,
    signature,
)

WEBHOOK = "/channels/whatsapp/webhook"
HEADER = "X-Hub-Signature-256"
WHATSAPP = {
    "app_secret": SECRET,
    "verify_token": VERIFY_TOKEN,
    "access_token": ACCESS_TOKEN,
    "phone_number_id": PHONE_NUMBER_ID,
    "graph_url": "http://127.0.0.1:9/v22.0",  # nothing listens unless a test serves Graph
}


@pytest.fixture
def settings(redis_url: str) -> Settings:
    return make_settings(redis_url, whatsapp=WHATSAPP)


@pytest.fixture
async def graph(aiohttp_server: ServerFactory) -> AsyncIterator[tuple[Graph, str]]:
    stub = Graph()
    server = await aiohttp_server(stub.app())
    yield stub, str(server.make_url("/v22.0"))


@pytest.fixture
async def with_graph(
    aiohttp_client: Any, redis_url: str, redis: Redis, graph: tuple[Graph, str]
) -> TestClient:
    settings = make_settings(redis_url, whatsapp={**WHATSAPP, "graph_url": graph[1]})
    client: TestClient = await aiohttp_client(create_app(settings))
    return client


async def post(
    client: TestClient, body: str | bytes, sig: str | None = None, *, signed: bool = True
) -> ClientResponse:
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


async def context_of(client: TestClient, wa_id: str = WA_ID) -> dict[str, Any]:
    response = await client.get(
        "/v1/context", params={"channel": "whatsapp", "external_id": wa_id}, headers=BOT
    )
    assert response.status == 200, await response.text()
    data: dict[str, Any] = await response.json()
    return data


async def history(client: TestClient, wa_id: str = WA_ID) -> list[dict[str, Any]]:
    """The customer's timeline, newest first."""
    cid = (await context_of(client, wa_id))["customer"]["id"]
    response = await client.get(f"/v1/customers/{cid}/history", headers=AGENT)
    messages: list[dict[str, Any]] = (await response.json())["messages"]
    return messages


# -- the handshake ---------------------------------------------------------------------------


async def test_the_handshake_echoes_the_challenge_only_for_the_verify_token(
    client: TestClient,
) -> None:
    cases = handshake_cases()
    assert len(cases) == 3
    for query, expected in cases:
        response = await client.get(WEBHOOK, params=query)
        if expected is None:
            assert response.status == 403
            assert response.content_type == "application/problem+json"
            assert "1158201444" not in await response.text()
        else:
            assert response.status == 200
            assert response.content_type == "text/plain"
            assert await response.text() == expected == "1158201444"
    assert (await client.get(WEBHOOK)).status == 403


async def test_an_unconfigured_channel_answers_404_and_stores_nothing(
    aiohttp_client: Any, redis_url: str, redis: Redis
) -> None:
    client = await aiohttp_client(create_app(make_settings(redis_url)))
    assert (await client.get(WEBHOOK, params={"hub.mode": "subscribe"})).status == 404
    assert (await post(client, "whatsapp_text.json")).status == 404
    assert await snapshot(redis) == {}


async def test_the_routes_are_in_the_openapi_document(client: TestClient) -> None:
    paths = (await (await client.get("/openapi.json")).json())["paths"]
    assert set(paths[WEBHOOK]) == {"get", "post"}
    assert "401" in paths[WEBHOOK]["post"]["responses"]
    assert "get" in paths["/channels/whatsapp/media/{media_id}"]


# -- the signature ---------------------------------------------------------------------------


def refused() -> list[tuple[str, str | None]]:
    tampered = sidecar("whatsapp_text_tampered.sig.txt")["X-Hub-Signature-256 presented"]
    good = signature(raw("whatsapp_text.json"))
    return [
        ("whatsapp_text_tampered.json", tampered),
        ("whatsapp_text.json", signature(raw("whatsapp_text.json"), "not-the-app-secret")),
        ("whatsapp_text.json", None),
        ("whatsapp_text.json", "sha1=" + good[7:47]),
        ("whatsapp_text.json", "sha256=" + good[7:].upper()),
        ("whatsapp_text.json", good[7:]),
        ("whatsapp_location.json", good),
    ]


@pytest.mark.parametrize(("name", "sig"), refused())
async def test_a_forged_or_missing_signature_is_401_and_stores_nothing(
    client: TestClient, redis: Redis, name: str, sig: str | None
) -> None:
    await accepted(client, "whatsapp_interactive_button_reply.json")
    before = await snapshot(redis)
    response = await post(client, name, sig, signed=sig is not None)
    assert response.status == 401
    assert response.content_type == "application/problem+json"
    assert await snapshot(redis) == before


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b'{"object":"whatsapp_business_account","entry":[',
        b"[]",
        b'{"object":"instagram","entry":[]}',
        b'{"object":"whatsapp_business_account"}',
        b'{"object":"whatsapp_business_account","entry":{}}',
        b'{"object":"whatsapp_business_account","entry":[{"changes":"x"}]}',
        b'{"object":"whatsapp_business_account","entry":[],"x":NaN}',
        b"\xff\xfe{}",
        change({"messages": {"from": WA_ID}}),
        change({"statuses": ["delivered"]}),
        b'{"object":"whatsapp_business_account","entry":[{"changes":[{"field":"messages",'
        b'"value":[]}]}]}',
        # A good message and a broken entry: refused whole, the message is not stored.
        raw("whatsapp_text.json")[:-2] + b"]},7]}",
    ],
)
async def test_a_malformed_notification_is_400_and_nothing_is_half_written(
    client: TestClient, redis: Redis, body: bytes
) -> None:
    response = await post(client, body)
    assert response.status == 400, await response.text()
    assert response.content_type == "application/problem+json"
    assert await snapshot(redis) == {}


@pytest.mark.parametrize(
    "body",
    [
        message("unsupported", {}, "wamid.u1", errors=[{"code": 131051, "title": "Unknown"}]),
        message(
            "system", {"body": "changed number", "type": "customer_changed_number"}, "wamid.s1"
        ),
        message("ephemeral_hologram", {"x": 1}, "wamid.n1"),
        message("text", {"body": ""}, "wamid.e1"),
        message("image", {"mime_type": "image/png"}, "wamid.i1"),
        message("location", {"latitude": "north"}, "wamid.l1"),
        message("interactive", {"type": "call_permission_reply"}, "wamid.c1"),
        change({"messages": [{"type": "text", "text": {"body": "no sender, no id"}}]}),
        change({"statuses": [{"id": "wamid.x", "status": "warning", "recipient_id": WA_ID}]}),
        change({"statuses": [{"id": "wamid.unknown", "status": "read", "recipient_id": WA_ID}]}),
        change({"errors": [{"code": 131000, "title": "Something went wrong"}]}),
        change({}),
        b'{"object":"whatsapp_business_account","entry":[{"changes":[{"field":"account_update",'
        b'"value":{"event":"VERIFIED_ACCOUNT"}}]}]}',
    ],
)
async def test_kinds_it_does_not_handle_are_acknowledged_and_store_nothing(
    client: TestClient, redis: Redis, body: bytes
) -> None:
    # 200, or Meta would redeliver them; each is skipped with its reason in the log.
    response = await post(client, body)
    assert response.status == 200, await response.text()
    assert (await response.json())["messages"] == 0
    assert await snapshot(redis) == {}


# -- every fixture, every kind ---------------------------------------------------------------


@pytest.mark.parametrize("name", INBOUND)
async def test_every_fixture_is_acknowledged_with_meta_s_signature(
    client: TestClient, name: str
) -> None:
    response = await post(client, name, sidecar(name.replace(".json", ".sig.txt"))[HEADER])
    assert response.status == 200, await response.text()
    assert (await response.json())["events"] == EVENTS[name]


async def test_a_text_is_the_customer_s_message_under_their_wa_id_and_profile_name(
    client: TestClient,
) -> None:
    assert await accepted(client, "whatsapp_text.json") == {"events": 1, "messages": 1}
    context = await context_of(client)
    customer = context["customer"]
    assert customer["profile"]["name"] == "Dana Example"
    assert [(i["channel"], i["external_id"]) for i in customer["identities"]] == [
        ("whatsapp", WA_ID)
    ]
    (text,) = await history(client)
    assert (text["channel"], text["direction"]) == ("whatsapp", "inbound")
    assert text["author"] == {"kind": "customer", "id": WA_ID, "name": "Dana Example"}
    assert text["text"] == "Hi! Is my order #A-1042 shipped yet?"
    assert text["channel_message_id"] == WAMID_TEXT
    assert text["sent_at"] == "2026-01-01T00:00:12.000Z"
    assert text["metadata"] == {"phone_number_id": PHONE_NUMBER_ID}
    assert context["recent_messages"][0]["text"] == text["text"]


async def test_a_redelivery_is_stored_once(client: TestClient, redis: Redis) -> None:
    await accepted(client, "whatsapp_text.json")
    before = await snapshot(redis)
    # The same wamid in other bytes, batched with a status of a message we never sent.
    assert await accepted(client, "whatsapp_redelivery_duplicate.json") == {
        "events": 2,
        "messages": 1,
    }
    await accepted(client, "whatsapp_text.json")
    after = await snapshot(redis)
    # Nothing stored again; the status is only held aside, in case our send's answer is
    # still on its way (omni.receipts.hold_early), and changes no message.
    mids = next(key for key in after if key.endswith(b":mid"))
    held = {k: v for k, v in after[mids].items() if k not in before[mids]}
    assert [k.split(b":")[0] for k in held] == [b"rcpt#whatsapp"]
    assert after == {**before, mids: {**before[mids], **held}}
    assert len(await history(client)) == 1


async def test_a_button_reply_is_a_quick_reply_answering_our_message(client: TestClient) -> None:
    await accepted(client, "whatsapp_interactive_button_reply.json")
    (answer,) = await history(client)
    assert answer["text"] == "Track my order"
    assert answer["quick_reply"] == {"payload": "track_order_A-1042", "title": "Track my order"}
    assert answer["reply_to"] == WAMID_OURS
    assert answer["metadata"]["interactive"] == "button_reply"


async def test_list_replies_template_buttons_and_replies_with_context(client: TestClient) -> None:
    listed = {
        "type": "list_reply",
        "list_reply": {"id": "size_m", "title": "Size M", "description": "Chest 96-101 cm"},
    }
    await accepted(client, message("interactive", listed, "wamid.list1"))
    button = {"payload": "STOP_PROMOS", "text": "Stop promotions"}
    await accepted(
        client,
        message(
            "button", button, "wamid.btn1", context={"from": "14155550199", "id": "wamid.tpl1"}
        ),
    )
    quoted = {"body": "This one, please"}
    await accepted(
        client, message("text", quoted, "wamid.q1", context={"from": WA_ID, "id": "wamid.list1"})
    )
    reply, template, chosen = await history(client)
    assert chosen["quick_reply"] == {"payload": "size_m", "title": "Size M"}
    assert chosen["text"] == "Size M"
    assert chosen["metadata"]["list_description"] == "Chest 96-101 cm"
    assert template["quick_reply"] == {"payload": "STOP_PROMOS", "title": "Stop promotions"}
    assert (template["reply_to"], template["metadata"]["template_button"]) == ("wamid.tpl1", True)
    assert (reply["text"], reply["reply_to"]) == ("This one, please", "wamid.list1")


async def test_a_location_and_shared_contacts(client: TestClient) -> None:
    await accepted(client, "whatsapp_location.json")
    (place,) = await history(client)
    assert place["attachments"] == [
        {
            "type": "location",
            "latitude": 37.7793,
            "longitude": -122.4193,
            "name": "Civic Center Pickup Point",
        }
    ]
    assert place["metadata"]["location_address"] == "1 Example Plaza, San Francisco, CA 94102"
    assert "text" not in place

    card = {
        "name": {"formatted_name": "Sam Courier", "first_name": "Sam"},
        "phones": [{"phone": "+1 415 555 0177", "wa_id": "14155550177", "type": "CELL"}],
    }
    await accepted(client, message("contacts", [card], "wamid.card1"))
    shared, _ = await history(client)
    assert shared["attachments"] == [{"type": "other", "name": "Sam Courier"}]
    assert shared["metadata"]["contact_phone"] == "+1 415 555 0177"
    # Someone else's number, in the customer's address book: no fact about the customer.
    assert (await context_of(client))["facts"] == {}


async def test_a_reaction_marks_the_message_it_points_at_and_an_empty_one_removes_it(
    client: TestClient,
) -> None:
    await accepted(client, "whatsapp_text.json")
    reaction = {"message_id": WAMID_TEXT, "emoji": "\U0001f44d"}
    assert (await accepted(client, message("reaction", reaction, "wamid.r1")))["messages"] == 0
    (text,) = await history(client)
    assert text["reaction"] == "\U0001f44d"
    await accepted(client, message("reaction", {"message_id": WAMID_TEXT}, "wamid.r2"))
    (text,) = await history(client)
    assert "reaction" not in text


async def test_a_product_asked_about_and_an_order_from_the_catalog(client: TestClient) -> None:
    referred = {
        "from": "14155550199",
        "id": "wamid.catalog",
        "referred_product": {"catalog_id": "C1", "product_retailer_id": "TRAIL-42"},
    }
    await accepted(client, message("text", {"body": "In size 42?"}, "wamid.p1", context=referred))
    order = {
        "catalog_id": "C1",
        "text": "These two",
        "product_items": [
            {"product_retailer_id": "TRAIL-42", "quantity": 1, "item_price": 89, "currency": "EUR"},
            {"product_retailer_id": "SOCKS-3", "quantity": 2, "item_price": 9.5, "currency": "EUR"},
        ],
    }
    await accepted(client, message("order", order, "wamid.o1"))
    ordered, asked = await history(client)
    assert asked["attachments"] == [{"type": "product", "product": {"id": "TRAIL-42"}}]
    assert [a["product"] for a in ordered["attachments"]] == [
        {"id": "TRAIL-42", "currency": "EUR"},
        {"id": "SOCKS-3", "currency": "EUR"},
    ]
    assert (ordered["text"], ordered["metadata"]["quantity.SOCKS-3"]) == ("These two", 2)


# -- media -----------------------------------------------------------------------------------


async def test_an_image_is_looked_up_by_id_and_served_through_omni(
    with_graph: TestClient, graph: tuple[Graph, str]
) -> None:
    jpeg = b"\xff\xd8\xff\xe0 a small photo of a damaged box"
    graph[0].media[MEDIA_ID] = (jpeg, "image/jpeg")
    await accepted(with_graph, "whatsapp_image.json")
    assert graph[0].lookups == [MEDIA_ID]  # asked while Meta's URL for it was fresh
    (photo,) = await history(with_graph)
    assert photo["text"] == "Box arrived damaged \u2639\ufe0f"
    (attachment,) = photo["attachments"]
    path = f"/channels/whatsapp/media/{MEDIA_ID}"
    assert attachment == {
        "type": "image",
        "url": f"http://127.0.0.1:8080{path}",
        "mime": "image/jpeg",
        "size": len(jpeg),
    }
    assert photo["metadata"]["media_id"] == MEDIA_ID
    assert "media_error" not in photo["metadata"]

    # The bot (any omni key) fetches the bytes through omni, whose token Graph wants.
    assert (await with_graph.get(path)).status == 401
    response = await with_graph.get(path, headers=BOT)
    assert response.status == 200, await response.text()
    assert (response.content_type, await response.read()) == ("image/jpeg", jpeg)
    gone = await with_graph.get("/channels/whatsapp/media/999", headers=AGENT)
    assert (gone.status, gone.content_type) == (404, "application/problem+json")


async def test_every_media_kind_becomes_its_attachment(
    with_graph: TestClient, graph: tuple[Graph, str]
) -> None:
    kinds = [
        ("audio", {"id": "m-audio", "mime_type": "audio/ogg; codecs=opus", "voice": True}),
        ("video", {"id": "m-video", "mime_type": "video/mp4", "caption": "see?"}),
        (
            "document",
            {"id": "m-doc", "mime_type": "application/pdf", "filename": "invoice-A-1042.pdf"},
        ),
        ("sticker", {"id": "m-sticker", "mime_type": "image/webp", "animated": False}),
    ]
    for index, (kind, content) in enumerate(kinds):
        graph[0].media[content["id"]] = (b"bytes of " + kind.encode(), content["mime_type"])
        await accepted(with_graph, message(kind, content, f"wamid.media{index}"))
    sticker, document, video, audio = await history(with_graph)
    assert [m["attachments"][0]["type"] for m in (audio, video, document, sticker)] == [
        "audio",
        "video",
        "file",
        "sticker",
    ]
    assert audio["metadata"]["voice_note"] is True
    assert audio["attachments"][0]["mime"] == "audio/ogg; codecs=opus"
    assert video["text"] == "see?"
    assert document["attachments"][0]["name"] == "invoice-A-1042.pdf"
    assert document["attachments"][0]["size"] == len(b"bytes of document")
    assert graph[0].lookups == ["m-audio", "m-video", "m-doc", "m-sticker"]


async def test_media_graph_does_not_know_is_stored_with_the_reason(
    with_graph: TestClient, graph: tuple[Graph, str]
) -> None:
    await accepted(with_graph, "whatsapp_image.json")
    (photo,) = await history(with_graph)
    assert photo["attachments"][0]["type"] == "image"
    assert photo["metadata"]["media_error"].startswith("bad_request: 100 ")


async def test_media_while_graph_is_unreachable_is_stored_and_noted(client: TestClient) -> None:
    await accepted(client, "whatsapp_image.json")
    (photo,) = await history(client)
    assert photo["attachments"][0]["url"].endswith(f"/channels/whatsapp/media/{MEDIA_ID}")
    assert "Graph did not answer" in photo["metadata"]["media_error"]
    response = await client.get(f"/channels/whatsapp/media/{MEDIA_ID}", headers=BOT)
    assert (response.status, response.content_type) == (503, "application/problem+json")


# -- who the customer is ---------------------------------------------------------------------


async def _profile(client: TestClient, cid: str, **fields: Any) -> None:
    response = await client.patch(f"/v1/customers/{cid}/profile", json=fields, headers=AGENT)
    assert response.status == 200, await response.text()


async def test_a_number_the_customer_verified_joins_their_whatsapp(client: TestClient) -> None:
    dana = (await ingest(client, channel="web", external_id="vis_dana"))["customer_id"]
    await _profile(client, dana, phone="+1 415-555-0123", phone_verified=True)
    await accepted(client, "whatsapp_text.json")
    context = await context_of(client)
    assert context["customer"]["id"] == dana
    identities = {(i["channel"], i["external_id"]) for i in context["customer"]["identities"]}
    assert identities == {("web", "vis_dana"), ("whatsapp", WA_ID)}
    assert [m["channel"] for m in context["recent_messages"]] == ["web", "whatsapp"]


@pytest.mark.parametrize("how", ["typed", "unverified"])
async def test_a_typed_or_unverified_number_joins_nobody(client: TestClient, how: str) -> None:
    if how == "typed":
        typed = await ingest(
            client,
            channel="web",
            external_id="vis_mallory",
            text="I am Dana, my WhatsApp is +1 415 555 0123",
        )
        other = typed["customer_id"]
    else:
        other = (await ingest(client, channel="web", external_id="vis_dana"))["customer_id"]
        await _profile(client, other, phone="+14155550123")
    await accepted(client, "whatsapp_text.json")
    context = await context_of(client)
    assert context["customer"]["id"] != other
    assert [i["channel"] for i in context["customer"]["identities"]] == ["whatsapp"]
    assert [m["text"] for m in context["recent_messages"]] == [
        "Hi! Is my order #A-1042 shipped yet?"
    ]


async def test_an_agent_s_link_joins_the_wa_id_to_the_customer(client: TestClient) -> None:
    dana = (await ingest(client, channel="web", external_id="vis_dana"))["customer_id"]
    link = {"channel": "whatsapp", "external_id": WA_ID}
    response = await client.post(f"/v1/customers/{dana}/identities", json=link, headers=AGENT)
    assert response.status == 201, await response.text()
    await accepted(client, "whatsapp_text.json")
    assert (await context_of(client))["customer"]["id"] == dana


async def test_a_whatsapp_number_is_no_verified_phone_for_the_other_channels(
    client: TestClient,
) -> None:
    # The other way round: writing on WhatsApp verifies nothing in omni's profile, so a
    # call from the same number is its own customer until the number is verified.
    await accepted(client, "whatsapp_text.json")
    dana = (await context_of(client))["customer"]
    assert dana["profile"]["phone_verified"] is False
    call = await ingest(
        client,
        channel="voice",
        external_id="+14155550123",
        channel_message_id="CA1:1",
        text="hello",
    )
    assert call["customer_id"] != dana["id"]


async def test_the_signature_covers_the_bytes_as_sent_escaped_or_raw_utf8(
    client: TestClient,
) -> None:
    # Whether WhatsApp escapes non-ASCII as Instagram does is unconfirmed: either way the
    # raw bytes are what is signed, and the same wamid is one message.
    words = "¿Llegó? 到了吗 \U0001f469\u200d\U0001f467 \u05e9\u05dc\u05d5\u05dd"
    escaped = message("text", {"body": words}, "wamid.utf8")
    raw_utf8 = json.dumps(json.loads(escaped), ensure_ascii=False, separators=(",", ":"))
    assert b"\\u" in escaped and "\\u" not in raw_utf8
    for body in (escaped, raw_utf8.encode()):
        assert (await accepted(client, body))["messages"] == 1
    (stored,) = await history(client)
    assert stored["text"] == words


async def test_without_a_verify_token_webhooks_are_taken_and_every_handshake_refused(
    aiohttp_client: Any, redis_url: str, redis: Redis
) -> None:
    settings = make_settings(redis_url, whatsapp={**WHATSAPP, "verify_token": ""})
    client = await aiohttp_client(create_app(settings))
    for query, _ in handshake_cases():
        assert (await client.get(WEBHOOK, params={**query, "hub.verify_token": ""})).status == 403
    assert (await accepted(client, "whatsapp_text.json"))["messages"] == 1
