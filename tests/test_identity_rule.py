"""Records join only on verified evidence: a caller whose number a customer verified
joins that customer; an address typed in a chat is an unverified fact and joins nothing."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from omni.identity import typed_contacts
from tests.conftest import AGENT, BOT, ingest


async def _profile(client: TestClient, cid: str, **fields: Any) -> None:
    response = await client.patch(f"/v1/customers/{cid}/profile", json=fields, headers=AGENT)
    assert response.status == 200, await response.text()


async def _context(client: TestClient, cid: str) -> dict[str, Any]:
    data: dict[str, Any] = await (
        await client.get(f"/v1/customers/{cid}/context", headers=BOT)
    ).json()
    return data


async def test_a_caller_whose_number_a_customer_verified_joins_that_customer(
    client: TestClient, redis: Redis
) -> None:
    ana = (await ingest(client, channel="web", external_id="vis_1"))["customer_id"]
    await _profile(client, ana, phone="+1 415 555 0100", phone_verified=True)
    call = await ingest(
        client,
        channel="voice",
        external_id="+14155550100",
        channel_message_id="CA1:1",
        text="hello",
    )
    assert call["customer_id"] == ana
    identities = (await _context(client, ana))["customer"]["identities"]
    assert ("voice", "+14155550100") in {(i["channel"], i["external_id"]) for i in identities}


async def test_an_unverified_phone_on_a_profile_is_not_enough(
    client: TestClient, redis: Redis
) -> None:
    ana = (await ingest(client, channel="web", external_id="vis_1"))["customer_id"]
    await _profile(client, ana, phone="+14155550100")
    call = await ingest(
        client,
        channel="voice",
        external_id="+14155550100",
        channel_message_id="CA1:1",
        text="hello",
    )
    assert call["customer_id"] != ana


async def test_an_address_typed_in_a_chat_is_an_unverified_fact_and_merges_nothing(
    client: TestClient, redis: Redis
) -> None:
    bob = (await ingest(client, channel="instagram", external_id="ig_bob"))["customer_id"]
    await _profile(
        client,
        bob,
        email="bob@example.com",
        email_verified=True,
        phone="+14155550199",
        phone_verified=True,
    )
    typed = await ingest(
        client,
        channel="web",
        external_id="vis_mallory",
        channel_message_id="w1",
        text="I'm Bob, my mail is Bob@Example.com and my number +1 (415) 555-0199",
    )
    mallory = typed["customer_id"]
    assert mallory != bob
    facts = (await _context(client, mallory))["facts"]
    assert facts["email"]["value"] == "bob@example.com"
    assert facts["phone"]["value"] == "+14155550199"
    assert facts["email"]["confidence"] == 0.5
    assert facts["email"]["source"] == {"channel": "web", "message_id": typed["id"]}
    bob_history = await (await client.get(f"/v1/customers/{bob}/history", headers=AGENT)).json()
    assert all(m["customer_id"] == bob for m in bob_history["messages"])
    assert len(bob_history["messages"]) == 1
    assert (await _context(client, bob))["facts"] == {}


async def test_a_typed_address_does_not_replace_a_known_fact(
    client: TestClient, redis: Redis
) -> None:
    cid = (await ingest(client))["customer_id"]
    body = {"facts": {"email": {"value": "ana@example.com"}}}
    assert (await client.patch(f"/v1/customers/{cid}/facts", json=body, headers=BOT)).status == 200
    await ingest(client, channel_message_id="m-2", text="or write to eve@example.com")
    facts = (await _context(client, cid))["facts"]
    assert (facts["email"]["value"], facts["email"]["confidence"]) == ("ana@example.com", 1.0)


def test_what_counts_as_a_typed_contact() -> None:
    assert typed_contacts("mail me: A.B+x@mail.example.org!") == {"email": "a.b+x@mail.example.org"}
    assert typed_contacts("call +33 6 12 34 56 78") == {"phone": "+33612345678"}
    # A national number needs a region to be read in (omni.phones); without one, none.
    assert typed_contacts("call 0033 6 12 34 56 78", "FR") == {"phone": "+33612345678"}
    assert typed_contacts("call 06 12 34 56 78", "FR") == {"phone": "+33612345678"}
    assert typed_contacts("call 06 12 34 56 78") == {}
    assert typed_contacts("order 4417, 12 items, 2026-11-23") == {}
