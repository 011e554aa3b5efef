"""Reversible merges: the preview shows what the real merge then does and writes
nothing; every identity change is in the audit log (who, when, evidence, request);
an undo splits the person back into the two records as they were plus what arrived
meanwhile, is refused when done already or erased, finishes when cut short at any step,
and costs the same whatever the length of the histories."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from omni import keys
from omni.merge import merge_customers
from omni.model import InboundMessage
from omni.store import Store
from omni.store.entries import dedupe_fields
from omni.unmerge import STEPS, Unmerge, undo_merge
from tests.conftest import ADMIN, AGENT, BOT, index_as_before_digests, ingest, snapshot
from tests.test_flat_cost import _measure, _seed
from tests.test_merge import _texts, _two_customers


async def _facts(client: TestClient, cid: str, values: dict[str, Any]) -> None:
    body = {"facts": {k: {"value": v} for k, v in values.items()}}
    response = await client.patch(f"/v1/customers/{cid}/facts", json=body, headers=BOT)
    assert response.status == 200, await response.text()


async def _cart(client: TestClient, cid: str, sku: str) -> None:
    body = {
        "items": [{"sku": sku, "name": sku, "quantity": 1, "unit_price": 1000, "currency": "EUR"}],
        "stage": "cart",
    }
    response = await client.put(
        f"/v1/customers/{cid}/cart", json=body, headers={**BOT, "If-Match": "*"}
    )
    assert response.status == 200, await response.text()


async def _profile(client: TestClient, cid: str, **fields: Any) -> None:
    response = await client.patch(f"/v1/customers/{cid}/profile", json=fields, headers=AGENT)
    assert response.status == 200, await response.text()


async def _wrongly_alike(client: TestClient) -> tuple[str, str]:
    """Two people who look alike: each with facts (one in conflict), a cart, a name."""
    web, ig = await _two_customers(client)
    await _facts(client, ig, {"size": "S", "order_id": "4417"})
    await _cart(client, ig, "IG-CART")
    await _profile(client, ig, name="Ana Lima")
    await asyncio.sleep(0.002)
    await _facts(client, web, {"size": "M", "email": "ana@example.com"})
    await _cart(client, web, "WEB-CART")
    await _profile(client, web, name="Ana Lima")
    return web, ig


async def _record(client: TestClient, cid: str) -> dict[str, Any]:
    """What a customer is, as a client sees it (omni's own events left out)."""
    response = await client.get(f"/v1/customers/{cid}/context", headers=BOT, allow_redirects=False)
    assert response.status == 200, await response.text()
    context = await response.json()
    history = await client.get(f"/v1/customers/{cid}/history?limit=200", headers=AGENT)
    messages = (await history.json())["messages"]
    return {
        "profile": context["customer"]["profile"],
        "identities": sorted(
            (i["channel"], i["external_id"], i["verified"])
            for i in context["customer"]["identities"]
        ),
        "facts": {k: (f["value"], f["at"]) for k, f in context["facts"].items()},
        "cart": context["cart"],
        "messages": [(m["id"], m["text"]) for m in messages if m["channel"] != "system"],
    }


async def _merge(client: TestClient, survivor: str, source: str, **extra: Any) -> Any:
    response = await client.post(
        f"/v1/customers/{survivor}/merge", json={"source": source, **extra}, headers=AGENT
    )
    assert response.status == 200, await response.text()
    return await response.json()


async def test_the_preview_shows_what_the_merge_then_does_and_writes_nothing(
    client: TestClient, redis: Redis
) -> None:
    web, ig = await _wrongly_alike(client)
    before = await snapshot(redis)
    response = await client.post(
        f"/v1/customers/{ig}/merge", json={"source": web, "dry_run": True}, headers=AGENT
    )
    assert response.status == 200, await response.text()
    preview = await response.json()
    assert await snapshot(redis) == before  # nothing written
    assert preview["dry_run"] is True
    assert (preview["survivor"]["id"], preview["source"]["id"]) == (ig, web)
    assert [i["channel"] for i in preview["source"]["identities"]] == ["web"]
    size = next(f for f in preview["facts"] if f["name"] == "size")
    assert size == {"name": "size", "survivor": "S", "source": "M", "conflict": True,
                    "wins": "source", "value": "M"}  # fmt: skip
    assert "same name: ana lima" in preview["evidence"]
    merged = await _merge(client, ig, web)
    context = await (await client.get(f"/v1/customers/{ig}/context", headers=BOT)).json()
    # The preview said what the merge did: same facts, identities, cart.
    assert {k: f["value"] for k, f in context["facts"].items()} == {
        k: f["value"] for k, f in preview["result"]["facts"].items()
    }
    assert sorted(i["external_id"] for i in context["customer"]["identities"]) == sorted(
        i["external_id"] for i in preview["result"]["identities"]
    )
    assert context["cart"]["items"] == preview["result"]["cart"]["items"]
    assert preview["result"]["cart_from"] == merged["cart_from"] == web


async def test_every_identity_change_is_audited_with_who_when_evidence_and_request(
    client: TestClient, redis: Redis
) -> None:
    web, ig = await _two_customers(client)
    linked = await client.post(
        f"/v1/customers/{ig}/identities",
        json={"channel": "voice", "external_id": "+351910000001"},
        headers={**AGENT, "X-Request-Id": "req-link-1"},
    )
    assert linked.status == 201, await linked.text()
    response = await client.post(
        f"/v1/customers/{ig}/merge",
        json={"source": web, "reason": "same order number on both chats"},
        headers={**AGENT, "X-Request-Id": "req-merge-1"},
    )
    merge_id = (await response.json())["merge_id"]
    undone = await client.post(
        f"/v1/merges/{merge_id}/undo", headers={**AGENT, "X-Request-Id": "req-undo-1"}
    )
    assert undone.status == 200, await undone.text()
    log = await (await client.get(f"/v1/customers/{ig}/audit", headers=AGENT)).json()
    actions = [(e["action"], e["request_id"]) for e in log["entries"]]
    assert actions == [("unmerge", "req-undo-1"), ("merge", "req-merge-1"),
                       ("link", "req-link-1")]  # fmt: skip
    merge = log["entries"][1]
    assert merge["actor"] == {"kind": "key", "name": "test agent", "role": "agent"}
    assert merge["evidence"] == "same order number on both chats"
    assert (merge["merge_id"], merge["other_customer_id"]) == (merge_id, web)
    assert log["entries"][2]["identity"] == {"channel": "voice", "external_id": "+351910000001"}
    theirs = await (await client.get(f"/v1/customers/{web}/audit", headers=AGENT)).json()
    assert [e["action"] for e in theirs["entries"]] == ["unmerge", "merge"]
    paged = await (await client.get(f"/v1/customers/{ig}/audit?limit=2", headers=AGENT)).json()
    assert len(paged["entries"]) == 2
    rest = await client.get(
        f"/v1/customers/{ig}/audit?limit=2&before={paged['next_cursor']}", headers=AGENT
    )
    assert [e["action"] for e in (await rest.json())["entries"]] == ["link"]
    assert (await client.get(f"/v1/customers/{ig}/audit", headers=BOT)).status == 403
    missing = await client.get("/v1/customers/cus_01HZY7Q8W3K5M2N4P6R8S0T2V4/audit", headers=AGENT)
    assert missing.status == 404


async def test_a_link_token_is_audited_as_such(client: TestClient, redis: Redis) -> None:
    ig = (await ingest(client, channel="instagram", external_id="ig_5", channel_message_id="a"))[
        "customer_id"
    ]
    issued = await client.post(
        f"/v1/customers/{ig}/link-tokens", json={"channel": "web"}, headers=BOT
    )
    token = (await issued.json())["token"]
    redeemed = await client.post(
        "/v1/link-tokens/redeem",
        json={"channel": "web", "external_id": "vis_5", "token": token},
        headers=BOT,
    )
    assert redeemed.status == 200, await redeemed.text()
    log = await (await client.get(f"/v1/customers/{ig}/audit", headers=AGENT)).json()
    entry = log["entries"][0]
    assert entry["action"] == "link_token"
    assert entry["identity"] == {"channel": "web", "external_id": "vis_5"}
    assert entry["actor"]["role"] == "bot"


@pytest.mark.parametrize("before_digests", [False, True])
async def test_an_undo_leaves_both_customers_as_before_plus_what_arrived_meanwhile(
    client: TestClient, redis: Redis, before_digests: bool
) -> None:
    """`before_digests`: both message-id indexes as omni wrote them before they held
    digests (omni.store.entries) when the undo runs."""
    web, ig = await _wrongly_alike(client)
    was = {ig: await _record(client, ig), web: await _record(client, web)}
    merged = await _merge(client, ig, web)
    # Meanwhile: each person writes again (the web visitor's message lands on the
    # survivor), the agent answers on web, and the bot learns a new fact.
    late_web = await ingest(
        client, channel="web", external_id="vis_1", channel_message_id="w-late", text="web late"
    )
    late_ig = await ingest(
        client,
        channel="instagram",
        external_id="ig_77",
        channel_message_id="i-late",
        text="ig late",
    )
    assert late_web["customer_id"] == ig
    reply = await client.post(
        f"/v1/customers/{ig}/messages", json={"text": "to web", "channel": "web"}, headers=AGENT
    )
    assert reply.status == 202, await reply.text()
    reply_id = (await reply.json())["id"]
    await _facts(client, ig, {"vip": True})
    if before_digests:
        for cid in (ig, web):
            await index_as_before_digests(redis, cid)
    response = await client.post(f"/v1/merges/{merged['merge_id']}/undo", headers=AGENT)
    assert response.status == 200, await response.text()
    result = await response.json()
    assert (result["survivor"], result["source"], result["messages_moved"]) == (ig, web, 2)
    now = {ig: await _record(client, ig), web: await _record(client, web)}
    # The source: exactly as before, plus its visitor's late message and the reply to it.
    assert now[web] | {"messages": None} == was[web] | {"messages": None}
    assert now[web]["messages"] == [(reply_id, "to web"), (late_web["id"], "web late"),
                                    *was[web]["messages"]]  # fmt: skip
    # The survivor: as before, plus its own late message and the fact learnt since.
    assert now[ig]["messages"] == [(late_ig["id"], "ig late"), *was[ig]["messages"]]
    assert {k: v for k, v in now[ig]["facts"].items() if k != "vip"} == was[ig]["facts"]
    assert now[ig]["facts"]["vip"][0] is True
    assert (now[ig]["identities"], now[ig]["cart"], now[ig]["profile"]) == (
        was[ig]["identities"], was[ig]["cart"], was[ig]["profile"])  # fmt: skip
    # The absorbed id answers for itself again; its identities lead to it.
    direct = await client.get(f"/v1/customers/{web}/context", headers=BOT, allow_redirects=False)
    assert direct.status == 200
    found = await client.get("/v1/context?channel=web&external_id=vis_1", headers=BOT)
    assert (await found.json())["customer"]["id"] == web
    # This process remembered vis_1 -> the survivor: its next message still finds web.
    again = await ingest(client, channel="web", external_id="vis_1", channel_message_id="w-again")
    assert again["customer_id"] == web
    # A redelivery of a message moved back is still a repeat, not a new message.
    repeat = await client.post(
        "/v1/messages",
        json={"channel": "web", "external_id": "vis_1", "channel_message_id": "w-late",
              "text": "web late"},
        headers=BOT,
    )  # fmt: skip
    assert repeat.status == 200
    # The survivor's index lets go of the moved message, in either layout.
    held = await redis.hmget(keys.message_ids(ig), dedupe_fields("web", "w-late"))
    assert held == [None, None]
    # Both timelines say what happened.
    for cid in (ig, web):
        events = [t for t in await _texts(client, cid) if t.startswith("Merge undone")]
        assert len(events) == 1, cid


async def test_undoing_twice_an_unknown_merge_or_an_erased_one_is_refused(
    client: TestClient, redis: Redis
) -> None:
    web, ig = await _two_customers(client)
    merged = await _merge(client, ig, web)
    url = f"/v1/merges/{merged['merge_id']}/undo"
    assert (await client.post(url, headers=AGENT)).status == 200
    twice = await client.post(url, headers=AGENT)
    assert twice.status == 409
    assert twice.content_type == "application/problem+json"
    assert "already undone" in (await twice.json())["detail"]
    for unknown in ("mrg_01HZY7Q8W3K5M2N4P6R8S0T2V4", "nonsense"):
        response = await client.post(f"/v1/merges/{unknown}/undo", headers=AGENT)
        assert response.status == 404, unknown
    assert (await client.post(url, headers=BOT)).status == 403
    # Merged again, then erased: the undo is refused, naming why.
    again = await _merge(client, ig, web)
    erased = await client.delete(f"/v1/customers/{ig}", headers=ADMIN)
    assert erased.status == 204, await erased.text()
    refused = await client.post(f"/v1/merges/{again['merge_id']}/undo", headers=AGENT)
    assert refused.status == 409
    assert "erased" in (await refused.json())["detail"]
    # The audit log outlives the erasure, with ids only.
    log = await (await client.get(f"/v1/customers/{web}/audit", headers=AGENT)).json()
    assert [e["action"] for e in log["entries"]] == ["merge", "unmerge", "merge"]
    for entry in log["entries"]:
        assert entry["erased"] is True
        assert entry["evidence"] is None
        assert entry["actor"] == {"kind": "key", "role": "agent"}
        assert entry["customer_id"] == web and entry["other_customer_id"] == ig
    leftovers = await redis.hgetall(f"omni:merge:{{{again['merge_id']}}}")
    assert b"snapshot" not in leftovers and b"before" not in leftovers


async def test_an_undo_cut_short_at_any_step_is_finished_by_running_it_again(
    client: TestClient, redis: Redis
) -> None:
    async def scenario() -> tuple[str, str, str, dict[str, Any]]:
        web, ig = await _wrongly_alike(client)
        was = {"ig": await _record(client, ig), "web": await _record(client, web)}
        merged = await _merge(client, ig, web)
        await ingest(client, channel="web", external_id="vis_1", channel_message_id="late")
        return web, ig, merged["merge_id"], was

    for cut in range(1, len(STEPS)):
        await redis.flushall()
        web, ig, merge_id, was = await scenario()
        undo = Unmerge(store=Store(redis), merge_id=merge_id)
        for step in STEPS[:cut]:  # the process dies after `cut` steps
            await step(undo)
        response = await client.post(f"/v1/merges/{merge_id}/undo", headers=AGENT)
        assert response.status == 200, (cut, await response.text())
        now = {"ig": await _record(client, ig), "web": await _record(client, web)}
        assert now["ig"] == was["ig"], cut
        assert now["web"] | {"messages": None} == was["web"] | {"messages": None}, cut
        assert len(now["web"]["messages"]) == len(was["web"]["messages"]) + 1, cut
        for cid in (ig, web):
            events = [t for t in await _texts(client, cid) if t.startswith("Merge undone")]
            assert len(events) == 1, (cut, cid)


async def test_an_undo_costs_the_same_whatever_the_histories_length(redis: Redis) -> None:
    # No app (the client fixture's): its handoff sweep, every second, would add its
    # ZRANGEBYSCOREs to the commands counted whenever it fell in the measured undo.
    store = Store(redis)
    # A first merge and undo load the scripts into the server; that is not their cost.
    first = await merge_customers(store, await _seed(store, "w1", 1), await _seed(store, "w2", 1))
    late = InboundMessage(channel="web", external_id="w2", channel_message_id="late", text="x")
    await store.timeline.ingest(late)
    await undo_merge(store, first.merge_id)
    counts = []
    for size in (10, 10_000):
        survivor = await _seed(store, f"s{size}", size)
        source = await _seed(store, f"t{size}", size)
        merged = await merge_customers(store, survivor, source)
        # The same traffic after the merge, whatever came before it.
        for n in range(3):
            await _seed(store, f"t{size}", 1) if n else None
        counts.append(await _measure(redis, lambda m=merged.merge_id: undo_merge(store, m)))
    assert counts[0] == counts[1], counts
    print("undo commands at 10 and 10,000 messages:", sum(counts[0].values()), counts[0])


async def test_an_agents_stream_hears_of_the_undo(client: TestClient, redis: Redis) -> None:
    web, ig = await _two_customers(client)
    merged = await _merge(client, ig, web)
    async with client.get(f"/v1/customers/{ig}/events", headers=AGENT) as stream:
        undo = await client.post(f"/v1/merges/{merged['merge_id']}/undo", headers=AGENT)
        assert undo.status == 200
        seen = b""
        while b"event: unmerge" not in seen:
            seen += await asyncio.wait_for(stream.content.readline(), 5)
        data = await asyncio.wait_for(stream.content.readline(), 5)
    assert merged["merge_id"].encode() in data
    assert b'"source":"' + web.encode() in data


async def test_a_caller_joining_on_a_verified_phone_is_audited(
    client: TestClient, redis: Redis
) -> None:
    ana = (await ingest(client, channel="web", external_id="vis_3", channel_message_id="a"))[
        "customer_id"
    ]
    await _profile(client, ana, phone="+351910000002", phone_verified=True)
    called = await ingest(
        client, channel="voice", external_id="+351910000002", channel_message_id="CA1-1"
    )
    assert called["customer_id"] == ana
    log = await (await client.get(f"/v1/customers/{ana}/audit", headers=AGENT)).json()
    entry = log["entries"][0]
    assert entry["action"] == "join"
    assert entry["identity"] == {"channel": "voice", "external_id": "+351910000002"}
    assert "verified" in entry["evidence"]


async def test_undoing_a_merge_whose_survivor_was_merged_on_waits_for_that_undo(
    client: TestClient, redis: Redis
) -> None:
    web, ig = await _two_customers(client)
    phone = (await ingest(client, channel="voice", external_id="+351910000009",
                          channel_message_id="c1", text="call"))["customer_id"]  # fmt: skip
    first = await _merge(client, ig, web)
    second = await _merge(client, phone, ig)  # the survivor of the first is absorbed now
    refused = await client.post(f"/v1/merges/{first['merge_id']}/undo", headers=AGENT)
    assert refused.status == 409
    problem = await refused.json()
    assert (problem["state"], problem["customer_id"]) == ("merged", phone)
    # Undone in order, each record is itself again, with its own messages.
    for merge_id in (second["merge_id"], first["merge_id"]):
        response = await client.post(f"/v1/merges/{merge_id}/undo", headers=AGENT)
        assert response.status == 200, await response.text()
    for cid, texts in ((web, ["web 2", "web 1", "web 0"]), (ig, ["ig 2", "ig 1", "ig 0"]),
                       (phone, ["call"])):  # fmt: skip
        own = [t for t in await _texts(client, cid) if not t.startswith(("Merge", "Merged"))]
        assert own == texts, cid
