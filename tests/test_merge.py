"""Merging two customers: one time-ordered timeline with every message once, facts newest
wins with provenance, the more recent cart kept and the other recorded, identities and
the absorbed id leading to the survivor, idempotence, a merge cut short at every step
and run again, and a cost that does not grow with the histories."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from omni.merge import STEPS, Merge, merge_customers
from omni.model import InboundMessage
from omni.store import Store
from tests.conftest import ADMIN, AGENT, BOT, index_as_before_digests, ingest, snapshot
from tests.test_flat_cost import _measure, _seed


async def _two_customers(client: TestClient) -> tuple[str, str]:
    """A web visitor and an Instagram customer whose messages interleave in time."""
    web = ig = ""
    for i in range(3):
        web = (
            await ingest(
                client,
                channel="web",
                external_id="vis_1",
                channel_message_id=f"w{i}",
                text=f"web {i}",
            )
        )["customer_id"]
        await asyncio.sleep(0.002)  # entry ids are milliseconds: keep the order unambiguous
        ig = (
            await ingest(
                client,
                channel="instagram",
                external_id="ig_77",
                channel_message_id=f"i{i}",
                text=f"ig {i}",
            )
        )["customer_id"]
        await asyncio.sleep(0.002)
    return web, ig


async def _texts(client: TestClient, cid: str, limit: int = 200) -> list[str]:
    texts: list[str] = []
    before = None
    while True:
        url = f"/v1/customers/{cid}/history?limit={limit}" + (f"&before={before}" if before else "")
        response = await client.get(url, headers=AGENT)
        assert response.status == 200, await response.text()
        page = await response.json()
        texts += [m["text"] for m in page["messages"]]
        before = page["next_cursor"]
        if not before:
            return texts


async def _merge(client: TestClient, survivor: str, source: str, headers: Any = AGENT) -> Any:
    return await client.post(
        f"/v1/customers/{survivor}/merge", json={"source": source}, headers=headers
    )


async def test_the_merged_timeline_is_one_ordered_history_with_every_message_once(
    client: TestClient, redis: Redis
) -> None:
    web, ig = await _two_customers(client)
    response = await _merge(client, ig, web)
    assert response.status == 200, await response.text()
    result = await response.json()
    assert (result["survivor"], result["source"]) == (ig, web)
    expected = ["ig 2", "web 2", "ig 1", "web 1", "ig 0", "web 0"]
    texts = await _texts(client, ig)
    assert texts[0].startswith(f"Merged customer {web} (web)")
    assert texts[1:] == expected
    # Paging two at a time walks the same order: nothing skipped, nothing twice.
    assert await _texts(client, ig, limit=2) == texts
    web_only = await client.get(f"/v1/customers/{ig}/history?channel=web", headers=AGENT)
    assert [m["text"] for m in (await web_only.json())["messages"]] == ["web 2", "web 1", "web 0"]
    context = await (await client.get(f"/v1/customers/{ig}/context", headers=BOT)).json()
    assert [m["text"] for m in context["recent_messages"]][-1].startswith("Merged customer")
    assert {(i["channel"], i["external_id"]) for i in context["customer"]["identities"]} == {
        ("web", "vis_1"),
        ("instagram", "ig_77"),
    }


async def test_identities_and_the_absorbed_id_lead_to_the_survivor(
    client: TestClient, redis: Redis
) -> None:
    web, ig = await _two_customers(client)
    await _merge(client, ig, web)
    by_identity = await client.get("/v1/context?channel=web&external_id=vis_1", headers=BOT)
    assert (await by_identity.json())["customer"]["id"] == ig
    moved = await client.get(f"/v1/customers/{web}/context", headers=BOT, allow_redirects=False)
    assert moved.status == 308
    assert moved.headers["Location"] == f"/v1/customers/{ig}/context"
    assert (await moved.json())["customer_id"] == ig
    followed = await client.get(f"/v1/customers/{web}/history?limit=3", headers=BOT)
    assert followed.status == 200  # the client follows the 308 to the survivor
    assert len((await followed.json())["messages"]) == 3
    write = await client.patch(
        f"/v1/customers/{web}/facts",
        json={"facts": {"size": {"value": "M"}}},
        headers=BOT,
        allow_redirects=False,
    )
    assert write.status == 308
    # A new message on the absorbed identity lands on the survivor.
    late = await ingest(client, channel="web", external_id="vis_1", channel_message_id="w9")
    assert late["customer_id"] == ig
    assert (await _texts(client, ig))[0] == "hi"


async def test_facts_newest_win_and_the_cart_changed_last_is_kept(
    client: TestClient, redis: Redis
) -> None:
    web, ig = await _two_customers(client)

    async def facts(cid: str, values: dict[str, Any], source: str) -> None:
        body = {
            "facts": {k: {"value": v, "source": {"channel": source}} for k, v in values.items()}
        }
        response = await client.patch(f"/v1/customers/{cid}/facts", json=body, headers=BOT)
        assert response.status == 200, await response.text()

    async def cart(cid: str, sku: str) -> None:
        version = (await client.get(f"/v1/customers/{cid}/cart", headers=BOT)).headers["ETag"]
        body = {
            "items": [
                {"sku": sku, "name": sku, "quantity": 1, "unit_price": 1000, "currency": "EUR"}
            ],
            "stage": "cart",
        }
        response = await client.put(
            f"/v1/customers/{cid}/cart", json=body, headers={**BOT, "If-Match": version}
        )
        assert response.status == 200, await response.text()

    await facts(ig, {"order_id": "4417", "size": "S"}, "instagram")
    await cart(ig, "SHOE-OLD")
    await facts(web, {"size": "M", "email": "ana@example.com"}, "web")
    await cart(web, "SHOE-NEW")
    await _merge(client, ig, web)
    context = await (await client.get(f"/v1/customers/{ig}/context", headers=BOT)).json()
    facts_now = {k: (f["value"], f["source"]["channel"]) for k, f in context["facts"].items()}
    assert facts_now == {
        "order_id": ("4417", "instagram"),
        "size": ("M", "web"),
        "email": ("ana@example.com", "web"),
    }
    assert [i["sku"] for i in context["cart"]["items"]] == ["SHOE-NEW"]
    history = await (await client.get(f"/v1/customers/{ig}/history", headers=AGENT)).json()
    event = history["messages"][0]
    assert event["author"]["kind"] == "system"
    assert "their cart, changed more recently, is the cart now" in event["text"]


async def test_the_set_aside_cart_is_recorded(client: TestClient, redis: Redis) -> None:
    web, ig = await _two_customers(client)
    for cid, sku in ((web, "OLD-CART"), (ig, "NEW-CART")):
        body = {
            "items": [
                {"sku": sku, "name": sku, "quantity": 2, "unit_price": 500, "currency": "EUR"}
            ],
            "stage": "cart",
        }
        response = await client.put(
            f"/v1/customers/{cid}/cart", json=body, headers={**BOT, "If-Match": "*"}
        )
        assert response.status == 200
    await _merge(client, ig, web)
    history = await (await client.get(f"/v1/customers/{ig}/history", headers=AGENT)).json()
    event = history["messages"][0]
    set_aside = json.loads(event["metadata"]["set_aside_cart"])
    assert [i["sku"] for i in set_aside["items"]] == ["OLD-CART"]
    cart = await (await client.get(f"/v1/customers/{ig}/cart", headers=BOT)).json()
    assert [i["sku"] for i in cart["items"]] == ["NEW-CART"]


async def _state(client: TestClient, cid: str) -> tuple[Any, ...]:
    context = await (await client.get(f"/v1/customers/{cid}/context", headers=BOT)).json()
    return (
        await _texts(client, cid),
        sorted((i["channel"], i["external_id"]) for i in context["customer"]["identities"]),
        {k: f["value"] for k, f in context["facts"].items()},
        context["cart"]["items"],
    )


async def test_a_merge_is_idempotent(client: TestClient, redis: Redis) -> None:
    web, ig = await _two_customers(client)
    first = await _merge(client, ig, web)
    state = await _state(client, ig)
    again = await _merge(client, ig, web)
    assert (first.status, again.status) == (200, 200)
    assert await _state(client, ig) == state
    reverse = await _merge(client, web, ig)  # the absorbed id stands for the survivor
    assert reverse.status == 422
    assert await _state(client, ig) == state


async def test_a_merge_cut_short_at_any_step_is_finished_by_running_it_again(
    client: TestClient, redis: Redis
) -> None:
    web, ig = await _two_customers(client)
    await client.patch(
        f"/v1/customers/{web}/facts", json={"facts": {"a": {"value": 1}}}, headers=BOT
    )
    await _merge(client, ig, web)
    clean = await _state(client, ig)
    for cut in range(1, len(STEPS)):
        await redis.flushall()
        web, ig = await _two_customers(client)
        await client.patch(
            f"/v1/customers/{web}/facts", json={"facts": {"a": {"value": 1}}}, headers=BOT
        )
        merge = Merge(store=Store(redis), survivor=ig, source=web)
        for step in STEPS[:cut]:  # the process dies after `cut` steps
            await step(merge)
        response = await _merge(client, ig, web)
        assert response.status == 200, (cut, await response.text())
        state = await _state(client, ig)
        # Same messages, identities, facts and cart as a merge that was never cut
        # (the event's text names the customer ids, which differ per run).
        assert [t for t in state[0][1:]] == [t for t in clean[0][1:]], cut
        assert state[1:] == clean[1:], cut


async def test_a_message_arriving_mid_merge_lands_on_the_survivor(
    client: TestClient, redis: Redis
) -> None:
    web, ig = await _two_customers(client)
    merge = Merge(store=Store(redis), survivor=ig, source=web)
    await STEPS[0](merge)  # the source is marked; its identities still point at it
    late = await ingest(
        client, channel="web", external_id="vis_1", channel_message_id="w-late", text="still there?"
    )
    assert late["customer_id"] == ig
    await _merge(client, ig, web)
    texts = await _texts(client, ig)
    assert texts.count("still there?") == 1
    assert len(texts) == 8


async def test_bad_merges_are_refused_and_write_nothing(client: TestClient, redis: Redis) -> None:
    web, ig = await _two_customers(client)
    before = await snapshot(redis)
    cases = [
        (ig, {"source": ig}, AGENT, 422),
        (ig, {"source": "cus_01HZY7Q8W3K5M2N4P6R8S0T2V4"}, AGENT, 404),
        (ig, {"source": "nobody"}, AGENT, 404),
        ("cus_01HZY7Q8W3K5M2N4P6R8S0T2V4", {"source": web}, AGENT, 404),
        (ig, {}, AGENT, 422),
        (ig, {"source": web, "extra": 1}, AGENT, 422),
        (ig, {"source": web}, BOT, 403),
    ]
    for survivor, body, headers, status in cases:
        response = await client.post(f"/v1/customers/{survivor}/merge", json=body, headers=headers)
        assert response.status == status, (body, await response.text())
        assert response.content_type == "application/problem+json"
    assert await snapshot(redis) == before
    assert (await _merge(client, ig, web, ADMIN)).status == 200


async def test_a_merge_costs_the_same_whatever_the_histories_length(redis: Redis) -> None:
    # No app runs here: its background work (the handoff sweep) would be counted too.
    store = Store(redis)
    # A first merge loads the scripts into the server; that is not the merge's cost.
    await merge_customers(store, await _seed(store, "w1", 1), await _seed(store, "w2", 1))
    counts = []
    for size in (10, 1000):
        survivor = await _seed(store, f"s{size}", size)
        source = await _seed(store, f"t{size}", size)

        async def run(survivor: str = survivor, source: str = source) -> None:
            await merge_customers(store, survivor, source)

        counts.append(await _measure(redis, run))
    assert counts[0] == counts[1]


async def test_a_process_that_remembers_an_absorbed_customer_still_lands_on_the_survivor(
    client: TestClient, redis: Redis
) -> None:
    web, ig = await _two_customers(client)  # this process now knows web:vis_1 -> web
    await _merge(client, ig, web)
    for n in range(2):
        late = await ingest(
            client, channel="web", external_id="vis_1", channel_message_id=f"after-{n}"
        )
        assert late["customer_id"] == ig


async def test_a_remembered_customer_that_is_gone_is_not_brought_back(
    client: TestClient, redis: Redis
) -> None:
    first = await ingest(client, channel="web", external_id="vis_9", channel_message_id="a")
    # The customer and its identity disappear behind this process's back (an erasure).
    await redis.flushall()
    again = await ingest(client, channel="web", external_id="vis_9", channel_message_id="b")
    assert again["customer_id"] != first["customer_id"]
    assert not await redis.exists(f"omni:{{{first['customer_id']}}}:c")
    found = await client.get("/v1/context?channel=web&external_id=vis_9", headers=BOT)
    assert (await found.json())["customer"]["id"] == again["customer_id"]


@pytest.mark.parametrize("before_digests", [False, True])
async def test_a_redelivery_of_a_message_stored_before_a_merge_is_not_stored_again(
    client: TestClient, redis: Redis, before_digests: bool
) -> None:
    """`before_digests`: the customers' message-id indexes as omni wrote them before
    they held digests (omni.store.entries), which are read as they were."""
    web, ig = await _two_customers(client)
    third = (
        await ingest(client, channel="voice", external_id="+14155550123", channel_message_id="v0")
    )["customer_id"]
    if before_digests:
        for cid in (web, ig, third):
            await index_as_before_digests(redis, cid)
    await _merge(client, web, third)  # web absorbed voice; then ig absorbs web (and voice)
    await _merge(client, ig, web)
    before = await _texts(client, ig)
    # Every channel sends again, through either identity, messages from before the merges.
    for channel, external_id, mid in (
        ("web", "vis_1", "w1"),
        ("instagram", "ig_77", "i2"),
        ("voice", "+14155550123", "v0"),
        ("web", "vis_1", "w1"),
    ):
        again = await ingest(
            client, channel=channel, external_id=external_id, channel_message_id=mid, text="x"
        )
        assert again["customer_id"] == ig
        assert again["channel_message_id"] == mid and again["text"] != "x"
    assert await _texts(client, ig) == before
    # A new message still lands, once.
    await ingest(client, channel="web", external_id="vis_1", channel_message_id="w-new", text="n")
    await ingest(client, channel="web", external_id="vis_1", channel_message_id="w-new", text="n")
    assert await _texts(client, ig) == ["n", *before]


async def test_de_duplication_across_a_merge_costs_the_same_whatever_the_histories_length(
    redis: Redis,
) -> None:
    # No app runs here: its background work (the handoff sweep) would be counted too.
    store = Store(redis)
    await merge_customers(store, await _seed(store, "w1", 1), await _seed(store, "w2", 1))
    counts = []
    for size in (10, 1000):
        survivor = await _seed(store, f"s{size}", size)
        source = await _seed(store, f"t{size}", size)
        await merge_customers(store, survivor, source)

        async def redeliver(size: int = size, survivor: str = survivor) -> None:
            # Stored on the source before the merge; sent again through its identity.
            inbound = InboundMessage(
                channel="web", external_id=f"t{size}", channel_message_id=f"t{size}-0", text="x"
            )
            appended = await store.timeline.ingest(inbound)
            assert not appended.created and appended.message.customer_id == survivor

        counts.append(await _measure(redis, redeliver))
    assert counts[0] == counts[1]
