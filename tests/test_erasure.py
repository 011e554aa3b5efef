"""Erasing and exporting a customer (admins only): after an erasure nothing of the person
is left — no record merged into them, no channel identity, index entry, push token,
delivery or event — and their next message makes a new customer; an erasure cut short
at any step is finished by running it again; the export holds everything, with the
whole history however many pages it takes."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from omni import keys
from omni.channel import Delivery
from omni.clock import now_ms
from omni.erasure import EXPORT_PAGE, STEPS, Erasure, Export
from omni.handoff import due_key
from omni.ids import new_message_id
from omni.model import Author, Identity, Message
from omni.outbox import Job
from omni.presence import present
from omni.settings import Settings
from omni.state import REDIS, SERVICES, STORE
from omni.worker import Worker
from tests.adapters.test_instagram import ACCOUNT
from tests.conftest import (
    ADMIN,
    AGENT,
    BOT,
    index_as_before_digests,
    ingest,
    make_settings,
    snapshot,
)
from tests.test_channel_instagram import INSTAGRAM, accepted, cid_of, one_event
from tests.test_channel_mobile import IOS, MOBILE, USER, app_user_with, fixture
from tests.test_events import open_stream

IG_SENDER = "1180000000000077"
NAME, EMAIL, PHONE = "Ana Silva", "ana@example.com", "+14155550100"
VISITOR = "vis_ana"
# What the person told us, anywhere it might be kept: none of it may survive an erasure.
PERSONAL = [NAME, "silva", EMAIL, PHONE, VISITOR, IG_SENDER, USER, "marmalade",
            fixture(IOS)["device"]["push_token"]]  # fmt: skip
SHOE = {"sku": "shoe-42", "name": "Runner 42", "quantity": 1, "unit_price": 8900,
        "currency": "EUR"}  # fmt: skip


@pytest.fixture
def settings(redis_url: str) -> Settings:
    return make_settings(redis_url, instagram=INSTAGRAM, mobile={**MOBILE, "push_url": ""})


async def _ok(response: ClientResponse, status: int = 200) -> Any:
    assert response.status == status, await response.text()
    return None if status == 204 else await response.json()


async def _instagram(client: TestClient, mid: str, text: str) -> None:
    """A direct message from IG_SENDER through the signed webhook."""
    event = {
        "sender": {"id": IG_SENDER},
        "recipient": {"id": ACCOUNT},
        "timestamp": now_ms(),
        "message": {"mid": mid, "text": text},
    }
    await accepted(client, one_event(event))


async def _merge(client: TestClient, survivor: str, source: str) -> None:
    body = {"source": source}
    await _ok(await client.post(f"/v1/customers/{survivor}/merge", json=body, headers=AGENT))


async def _web_and_instagram(client: TestClient) -> tuple[str, str]:
    """A web visitor and an Instagram sender, merged into the web visitor, with a fact."""
    first = await ingest(client, channel="web", external_id=VISITOR, channel_message_id="w-1",
                         text="Where is my marmalade order?", author_name=NAME)  # fmt: skip
    web = str(first["customer_id"])
    await _instagram(client, "ig-mid-1", "Did the marmalade ship?")
    ig = await cid_of(client, IG_SENDER)
    await _merge(client, web, ig)
    facts = {"facts": {"jar": {"value": "marmalade"}}}
    await _ok(await client.patch(f"/v1/customers/{web}/facts", json=facts, headers=BOT))
    return web, ig


async def _person(client: TestClient) -> tuple[str, list[str]]:
    """Ana on the web, on Instagram and in the app (with a device), all merged into the
    web record, with facts, a cart, a verified phone, an agent holding the conversation
    and a live socket. Returns the survivor and every id."""
    web, ig = await _web_and_instagram(client)
    _, app = await app_user_with(client, IOS)
    await _merge(client, web, app)
    cart = await client.get(f"/v1/customers/{web}/cart", headers=BOT)
    headers = {**BOT, "If-Match": cart.headers["ETag"]}
    await _ok(
        await client.put(f"/v1/customers/{web}/cart", json={"items": [SHOE]}, headers=headers)
    )
    profile = {"email": EMAIL, "phone": PHONE, "phone_verified": True}
    await _ok(await client.patch(f"/v1/customers/{web}/profile", json=profile, headers=AGENT))
    handoff = {"to": "agent", "agent_id": "agent-7"}
    await _ok(await client.post(f"/v1/customers/{web}/handoff", json=handoff, headers=AGENT))
    await present(client.app[STORE], web, "web", "socket-1")
    return web, [web, ig, app]


async def _replies(client: TestClient, cid: str) -> None:
    """Two replies: one the channel refused for good (a dead letter), one still queued;
    then the customer answers."""

    async def refused(job: Job) -> Delivery:
        return Delivery(status="failed", reason="the channel refused it")

    path = f"/v1/customers/{cid}/messages"
    body = {"channel": "web", "text": "Your marmalade left today"}
    await _ok(await client.post(path, json=body, headers=AGENT), 202)
    config = client.app[SERVICES].outbox.config  # the app's queues (several, in a cluster)
    assert await Worker(client.app[REDIS], {"web": refused}, config=config).run_once() == 1
    body = {"channel": "web", "text": "It arrives on Friday"}
    await _ok(await client.post(path, json=body, headers=AGENT), 202)
    # She answers: the agent holding the conversation owes her a reply again.
    await ingest(client, channel="web", external_id=VISITOR, channel_message_id="w-thanks",
                 text="Thanks!")  # fmt: skip


def _mentioning(state: dict[bytes, Any], needles: list[str]) -> set[bytes]:
    """The keys whose name or contents mention any of `needles`."""
    return {key for key, value in state.items() if any(n in f"{key!r} {value!r}" for n in needles)}


async def _nothing_left(client: TestClient, redis: Redis, ids: list[str]) -> None:
    """No key of theirs but their audit logs, nothing they told us anywhere; their ids
    only where they are no one's data: the erasure notice, the queued reply's reference
    (which the worker drops when it finds no record behind it), and the audit logs and
    merge records, scrubbed to ids (who merged what when stays answerable)."""
    state = await snapshot(redis)
    assert not _mentioning(state, PERSONAL)
    audits = {keys.audit(cid).encode() for cid in ids}
    merges = {key for key in state if key.startswith(b"omni:merge:")}
    for cid in ids:
        assert not [key for key in state if cid.encode() in key and key not in audits]
    for key in merges:
        assert set(state[key]) <= {b"survivor", b"source", b"merged_at", b"action", b"state",
                                   b"audited", b"undo_audited", b"undone_at"}  # fmt: skip
        assert state[key][b"state"] == b"erased"
    outbox = client.app[SERVICES].outbox
    parts = client.app[SERVICES].live.parts
    everyones = {keys.events_all(part, parts).encode() for part in range(parts)}
    queued = {queue.stream.encode() for queue in outbox.queues}
    allowed = {*everyones, *queued, *audits, *merges}
    assert _mentioning(state, ids) <= allowed
    for stream in everyones:
        for _, fields in state.get(stream, []):
            if any(cid.encode() in fields[b"e"] for cid in ids):
                assert json.loads(fields[b"e"])["type"] == "customer.erased"
    for stream in queued:
        for entry_id, fields in state.get(stream, []):
            assert set(fields) == {b"d", b"o"}, entry_id
    for cid in ids:
        gone = await client.get(f"/v1/customers/{cid}/context", headers=BOT)
        assert gone.status == 404
        assert gone.content_type == "application/problem+json"


async def _history_ids(client: TestClient, cid: str) -> list[str]:
    """Every message id of the history, walked page by page through the API."""
    found: list[str] = []
    before = None
    while True:
        params = {"limit": "50", **({"before": before} if before else {})}
        page = await _ok(
            await client.get(f"/v1/customers/{cid}/history", params=params, headers=AGENT)
        )
        found += [m["id"] for m in page["messages"]]
        before = page["next_cursor"]
        if not before:
            return found


# -- erasure ------------------------------------------------------------------------------


async def test_erasing_a_merged_customer_leaves_nothing_of_them(
    client: TestClient, redis: Redis
) -> None:
    web, ids = await _person(client)
    await _replies(client, web)
    before = await snapshot(redis)
    assert all(_mentioning(before, [value]) for value in PERSONAL)  # it was all there
    assert [key async for key in redis.scan_iter(match="omni:push:*")]
    assert (await _ok(await client.get("/v1/deliveries/dead", headers=AGENT)))["items"]
    parts = client.app[SERVICES].live.parts
    assert await redis.zscore(due_key(web, parts), web) is not None
    inbox = await open_stream(client, "/v1/events")

    await _ok(await client.delete(f"/v1/customers/{web}", headers=ADMIN), 204)

    notice = await inbox.until("customer.erased")
    assert notice["data"]["customer_id"] == web
    assert sorted(notice["data"]["data"]["erased"]) == sorted(ids)
    inbox.response.close()
    await _nothing_left(client, redis, ids)
    for q in (NAME, EMAIL, PHONE, f"instagram:{IG_SENDER}", f"web:{VISITOR}", web):
        found = await _ok(await client.get("/v1/customers", params={"q": q}, headers=AGENT))
        assert found["customers"] == [], q
    assert (await _ok(await client.get("/v1/deliveries/dead", headers=AGENT)))["items"] == []
    # Nothing an agent's inbox replays names them, except the notice.
    await ingest(client, external_id="someone-else", channel_message_id="s-1", text="hello")
    replay = await open_stream(client, "/v1/events", headers={**AGENT, "Last-Event-ID": "0-0"})
    seen = []
    while (event := await replay.next())["data"]["data"].get("text") != "hello":
        seen.append(event)
    replay.response.close()
    assert [e["event"] for e in seen if e["data"]["customer_id"] in ids] == ["customer.erased"]


async def test_their_next_message_on_any_channel_makes_a_new_customer(
    client: TestClient, redis: Redis
) -> None:
    web, ids = await _person(client)
    await _ok(await client.delete(f"/v1/customers/{web}", headers=ADMIN), 204)
    # This process remembers which customer the sender was: that must not bring it back.
    await _instagram(client, "ig-mid-2", "Hello again")
    fresh = await cid_of(client, IG_SENDER)
    assert fresh not in ids
    history = await _ok(await client.get(f"/v1/customers/{fresh}/history", headers=AGENT))
    assert [m["text"] for m in history["messages"]] == ["Hello again"]
    again = await ingest(client, channel="web", external_id=VISITOR, channel_message_id="w-1")
    assert again["customer_id"] not in [*ids, fresh]
    context = await _ok(await client.get(f"/v1/customers/{fresh}/context", headers=BOT))
    assert context["facts"] == {}
    assert context["customer"]["profile"]["email"] is None


async def test_a_repeated_erasure_is_404_and_sweeps_what_landed_after_it(
    client: TestClient, redis: Redis
) -> None:
    web, ig = await _web_and_instagram(client)
    await _ok(await client.delete(f"/v1/customers/{web}", headers=ADMIN), 204)
    # Work in flight when it ran (a delivery status, a live event) may still write under
    # the id; a repeat answers 404, and takes that with it.
    await redis.hset(keys.notes(web), "s:1-0", b"late")  # type: ignore[misc]
    await redis.xadd(keys.events(web), {"e": b"{}"})
    again = await client.delete(f"/v1/customers/{web}", headers=ADMIN)
    assert again.status == 404
    assert (await again.json())["type"].endswith("/not-found")
    assert not await redis.exists(keys.notes(web), keys.events(web))
    await _nothing_left(client, redis, [web, ig])


@pytest.mark.parametrize("cut", range(1, len(STEPS)))
async def test_an_erasure_cut_short_at_any_step_is_finished_by_running_it_again(
    client: TestClient, redis: Redis, settings: Settings, cut: int
) -> None:
    web, ig = await _web_and_instagram(client)
    await _replies(client, web)
    services = client.app[SERVICES]
    store = client.app[STORE]
    erasure = Erasure(store, services.outbox, services.live, web, settings.channels.enabled)
    for step in STEPS[:cut]:
        await step(erasure)
    # A message for the person while it runs is not stored: the sender is asked to send
    # it again, by when it makes a new customer.
    late = {"channel": "web", "external_id": VISITOR, "channel_message_id": "w-late",
            "text": "still there?"}  # fmt: skip
    refused = await client.post("/v1/messages", json=late, headers=BOT)
    assert refused.status == 503, await refused.text()
    # Under way: the id is still there, and an export says the erasure must be finished.
    half = await client.get(f"/v1/customers/{web}/export", headers=ADMIN)
    assert half.status == 409, await half.text()
    await _ok(await client.delete(f"/v1/customers/{web}", headers=ADMIN), 204)
    await _nothing_left(client, redis, [web, ig])
    await _instagram(client, "ig-mid-2", "Hello again")
    assert await cid_of(client, IG_SENDER) not in (web, ig)
    sent_again = await ingest(client, **late)
    assert sent_again["customer_id"] not in (web, ig)


# -- who may, and which ids -----------------------------------------------------------------


def _routes(cid: str) -> list[tuple[str, str]]:
    return [("DELETE", f"/v1/customers/{cid}"), ("GET", f"/v1/customers/{cid}/export")]


@pytest.mark.parametrize("headers", [BOT, AGENT])
async def test_bots_and_agents_may_neither_erase_nor_export(
    client: TestClient, headers: dict[str, str]
) -> None:
    cid = (await ingest(client))["customer_id"]
    for method, path in _routes(cid):
        response = await client.request(method, path, headers=headers)
        assert response.status == 403
        assert response.content_type == "application/problem+json"
        assert (await response.json())["type"].endswith("/forbidden")
        anonymous = await client.request(method, path)
        assert anonymous.status == 401
    await _ok(await client.get(f"/v1/customers/{cid}/context", headers=BOT))


@pytest.mark.parametrize("cid", ["cus_01JAAAAAAAAAAAAAAAAAAAAAAA", "nobody", "cus_"])
async def test_an_unknown_id_is_404(client: TestClient, cid: str) -> None:
    for method, path in _routes(cid):
        response = await client.request(method, path, headers=ADMIN)
        assert response.status == 404
        assert response.content_type == "application/problem+json"


async def test_an_absorbed_id_answers_308_with_its_survivor(client: TestClient) -> None:
    web, ig = await _web_and_instagram(client)
    for (method, path), (_, survivor) in zip(_routes(ig), _routes(web), strict=True):
        moved = await client.request(method, path, headers=ADMIN, allow_redirects=False)
        assert moved.status == 308
        assert moved.headers["Location"] == survivor
        assert (await moved.json())["customer_id"] == web
    await _ok(await client.get(f"/v1/customers/{web}/context", headers=BOT))


# -- export -----------------------------------------------------------------------------------


async def test_the_export_holds_everything_and_the_whole_history(client: TestClient) -> None:
    web, ids = await _person(client)
    await _replies(client, web)
    bulk = EXPORT_PAGE + 20
    for i in range(bulk):
        await ingest(client, channel="web", external_id=VISITOR, channel_message_id=f"b-{i}",
                     text=f"message {i}")  # fmt: skip

    response = await client.get(f"/v1/customers/{web}/export", headers=ADMIN)
    assert response.status == 200
    assert response.content_type == "application/json"
    disposition = f'attachment; filename="omni-export-{web}.json"'
    assert response.headers["Content-Disposition"] == disposition
    body = await response.read()
    export = msgspec.json.decode(body, type=Export)  # the shape the OpenAPI document gives

    assert export.customer.id == web
    assert sorted(export.absorbed) == sorted(ids[1:])
    assert {i.channel for i in export.customer.identities} == {"web", "instagram", "mobile"}
    assert export.customer.profile.email == EMAIL
    assert export.facts["jar"].value == "marmalade"
    assert [item.sku for item in export.cart.items] == ["shoe-42"]
    assert export.conversation.assignee.id == "agent-7"
    device = fixture(IOS)["device"]
    assert [d.device_id for d in export.devices] == [device["device_id"]]
    assert device["push_token"].encode() not in body  # a credential, not their data
    assert sorted(d.state for d in export.deliveries) == ["failed", "queued"]
    # Every message, newest first as in the history, across more than one page.
    assert [m.id for m in export.messages] == await _history_ids(client, web)
    texts = [m.text for m in export.messages]
    assert texts[:bulk] == [f"message {i}" for i in reversed(range(bulk))]
    assert {"Where is my marmalade order?", "Did the marmalade ship?"} <= set(texts)
    assert {m.channel for m in export.messages} >= {"web", "instagram", "mobile", "system"}


@pytest.mark.parametrize("before_digests", [False, True])
async def test_the_index_of_a_channel_nothing_else_names_goes_too(
    client: TestClient, redis: Redis, before_digests: bool
) -> None:
    """A reply on a channel omni no longer serves, in a conversation resolved since: no
    identity, setting or conversation names the channel, yet its index is theirs and
    goes. The customer's hash names it; a message stored before the message-id index
    held digests names it in its field there."""
    said = await ingest(client, channel="web", external_id=VISITOR, channel_message_id="w-1")
    cid = said["customer_id"]
    reply = Message(id=new_message_id(), customer_id=cid, conversation_id="", channel="fax",
                    direction="outbound", author=Author(kind="agent", id="agent-7"),
                    received_at="", channel_message_id="fax-1", text="Your order left")  # fmt: skip
    identity = Identity(channel="fax", external_id=PHONE)
    await client.app[STORE].timeline.append(cid, reply, identity=identity)
    await _ok(await client.post(f"/v1/customers/{cid}/resolve", json={}, headers=AGENT))
    await ingest(client, channel="web", external_id=VISITOR, channel_message_id="w-2")
    if before_digests:
        await index_as_before_digests(redis, cid)
    assert await redis.exists(keys.channel_timeline(cid, "fax"))

    await _ok(await client.delete(f"/v1/customers/{cid}", headers=ADMIN), 204)

    assert not await redis.exists(keys.channel_timeline(cid, "fax"))
    await _nothing_left(client, redis, [cid])
