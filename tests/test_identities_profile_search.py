"""Linking identities, editing the profile, and finding customers (agent work)."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from tests.conftest import AGENT, BOT, ingest, key_count, snapshot

UNKNOWN = "cus_01JAAAAAAAAAAAAAAAAAAAAAAA"


async def _customer(client: TestClient, external_id: str = "visitor-1", **fields: Any) -> str:
    message = await ingest(client, external_id=external_id,
                           channel_message_id=f"{external_id}-first", **fields)  # fmt: skip
    return str(message["customer_id"])


async def _link(client: TestClient, cid: str, body: dict[str, Any], headers: Any = AGENT) -> Any:
    return await client.post(f"/v1/customers/{cid}/identities", json=body, headers=headers)


async def _profile(client: TestClient, cid: str, body: dict[str, Any]) -> Any:
    return await client.patch(f"/v1/customers/{cid}/profile", json=body, headers=AGENT)


async def _find(client: TestClient, q: str) -> list[str]:
    response = await client.get("/v1/customers", params={"q": q}, headers=AGENT)
    assert response.status == 200, await response.text()
    return [c["id"] for c in (await response.json())["customers"]]


# -- identities -----------------------------------------------------------------------


async def test_linking_a_new_identity_is_201_then_200(client: TestClient) -> None:
    cid = await _customer(client)
    body = {"channel": "instagram", "external_id": "ig-778"}
    first = await _link(client, cid, body)
    assert first.status == 201
    identity = await first.json()
    assert identity["channel"] == "instagram"
    assert identity["external_id"] == "ig-778"
    assert identity["verified"] is True
    assert identity["linked_at"].endswith("Z")

    again = await _link(client, cid, body)
    assert again.status == 200
    assert await again.json() == identity

    context = await (await client.get(f"/v1/customers/{cid}/context", headers=BOT)).json()
    linked = {(i["channel"], i["external_id"]) for i in context["customer"]["identities"]}
    assert linked == {("web", "visitor-1"), ("instagram", "ig-778")}


async def test_a_linked_identity_writes_into_the_same_customer(client: TestClient) -> None:
    cid = await _customer(client)
    linked = await _link(client, cid, {"channel": "voice", "external_id": "+14155550100"})
    assert linked.status == 201
    call = await ingest(client, channel="voice", external_id="+14155550100",
                        channel_message_id="CA1-1", text="about my order")  # fmt: skip
    assert call["customer_id"] == cid
    by_identity = await client.get(
        "/v1/context", params={"channel": "voice", "external_id": "+14155550100"}, headers=BOT
    )
    assert (await by_identity.json())["customer"]["id"] == cid


async def test_identity_of_another_customer_is_409_and_changes_nothing(
    client: TestClient, redis: Redis
) -> None:
    ana = await _customer(client, "ana")
    bob = await _customer(client, "bob")
    before = await snapshot(redis)
    response = await _link(client, ana, {"channel": "web", "external_id": "bob"})
    assert response.status == 409
    problem = await response.json()
    assert problem["field"] == "external_id"
    assert problem["customer_id"] == bob
    assert await snapshot(redis) == before


async def test_linking_needs_the_agent_role(client: TestClient, redis: Redis) -> None:
    cid = await _customer(client)
    before = await snapshot(redis)
    response = await _link(client, cid, {"channel": "instagram", "external_id": "x"}, BOT)
    assert response.status == 403
    assert await snapshot(redis) == before


async def test_linking_to_an_unknown_customer_is_404(client: TestClient, redis: Redis) -> None:
    response = await _link(client, UNKNOWN, {"channel": "instagram", "external_id": "ig-1"})
    assert response.status == 404
    assert await key_count(redis) == 0


async def test_verifying_an_ingested_identity_marks_it_verified(client: TestClient) -> None:
    cid = await _customer(client)
    context = await (await client.get(f"/v1/customers/{cid}/context", headers=BOT)).json()
    assert context["customer"]["identities"][0]["verified"] is False
    response = await _link(client, cid, {"channel": "web", "external_id": "visitor-1"})
    assert response.status == 200
    assert (await response.json())["verified"] is True
    context = await (await client.get(f"/v1/customers/{cid}/context", headers=BOT)).json()
    assert [i["verified"] for i in context["customer"]["identities"]] == [True]


# -- profile --------------------------------------------------------------------------


async def test_profile_phone_is_normalised_to_e164(client: TestClient) -> None:
    cid = await _customer(client)
    for typed in ("+33 6 12-34-56-78", "+33 (6) 12.34.56.78", "+33612345678"):
        response = await _profile(client, cid, {"phone": typed})
        assert response.status == 200, typed
        assert (await response.json())["customer"]["profile"]["phone"] == "+33612345678"


async def test_bad_phone_is_422_and_writes_nothing(client: TestClient, redis: Redis) -> None:
    cid = await _customer(client)
    before = await snapshot(redis)
    for typed in ("call me", "12345", "+0612345678", "+33 6 12 34 56 78 90 12 34"):
        response = await _profile(client, cid, {"phone": typed})
        assert response.status == 422, typed
        assert (await response.json())["field"] == "phone"
    assert await snapshot(redis) == before


async def test_profile_fields_are_set_and_others_kept(client: TestClient) -> None:
    cid = await _customer(client, author_name="Ana Silva")
    response = await _profile(client, cid, {"email": "ana@example.com", "locale": "pt-PT"})
    assert response.status == 200
    context = await response.json()
    assert response.headers["ETag"] == f'"{context["version"]}"'
    profile = context["customer"]["profile"]
    assert profile["name"] == "Ana Silva"
    assert profile["email"] == "ana@example.com"
    assert profile["locale"] == "pt-PT"


async def test_changing_the_email_resets_email_verified_unless_given(client: TestClient) -> None:
    cid = await _customer(client)

    async def profile_after(body: dict[str, Any]) -> dict[str, Any]:
        response = await _profile(client, cid, body)
        assert response.status == 200, await response.text()
        data: dict[str, Any] = (await response.json())["customer"]["profile"]
        return data

    verified = await profile_after({"email": "ana@example.com", "email_verified": True})
    assert verified["email_verified"] is True
    same = await profile_after({"email": "ana@example.com", "name": "Ana"})
    assert same["email_verified"] is True
    changed = await profile_after({"email": "ana.silva@example.com"})
    assert changed["email"] == "ana.silva@example.com"
    assert changed["email_verified"] is False
    given = await profile_after({"email": "ana@work.example", "email_verified": True})
    assert given["email_verified"] is True

    await profile_after({"phone": "+14155550100", "phone_verified": True})
    moved = await profile_after({"phone": "+14155550199"})
    assert moved["phone_verified"] is False


async def test_profile_if_match_stale_is_412(client: TestClient, redis: Redis) -> None:
    cid = await _customer(client)
    tag = (await client.get(f"/v1/customers/{cid}/context", headers=BOT)).headers["ETag"]
    first = await client.patch(f"/v1/customers/{cid}/profile", json={"name": "Ana"},
                               headers={**AGENT, "If-Match": tag})  # fmt: skip
    assert first.status == 200
    before = await snapshot(redis)
    stale = await client.patch(f"/v1/customers/{cid}/profile", json={"name": "Bob"},
                               headers={**AGENT, "If-Match": tag})  # fmt: skip
    assert stale.status == 412
    assert await snapshot(redis) == before
    assert await _find(client, "bob") == []
    assert await _find(client, "ana") == [cid]


async def test_profile_needs_the_agent_role(client: TestClient, redis: Redis) -> None:
    cid = await _customer(client)
    before = await snapshot(redis)
    response = await client.patch(f"/v1/customers/{cid}/profile", json={"name": "X"}, headers=BOT)
    assert response.status == 403
    assert await snapshot(redis) == before


# -- search ---------------------------------------------------------------------------


async def test_search_by_name_prefix(client: TestClient) -> None:
    ana = await _customer(client, "ana", author_name="Ana Silva")
    anabela = await _customer(client, "anabela", author_name="Anabela Costa")
    await _customer(client, "bob", author_name="Bob Stone")
    assert set(await _find(client, "ana")) == {ana, anabela}
    assert await _find(client, "Ana Silva") == [ana]
    assert await _find(client, "sil") == [ana]
    assert await _find(client, "ANA") != []
    assert await _find(client, "zed") == []


async def test_search_follows_a_renamed_profile(client: TestClient) -> None:
    cid = await _customer(client, author_name="Ana Silva")
    await _profile(client, cid, {"name": "Joana Reis"})
    assert await _find(client, "silva") == []
    assert await _find(client, "joana") == [cid]


async def test_search_by_email_ignores_case(client: TestClient) -> None:
    cid = await _customer(client)
    other = await _customer(client, "other")
    await _profile(client, cid, {"email": "Ana.Silva@Example.com"})
    await _profile(client, other, {"email": "bob@example.com"})
    assert await _find(client, "ana.silva@example.com") == [cid]
    assert await _find(client, "ANA.SILVA@EXAMPLE.COM") == [cid]
    assert await _find(client, "nobody@example.com") == []


async def test_search_by_phone_typed_any_way(client: TestClient) -> None:
    cid = await _customer(client)
    await _profile(client, cid, {"phone": "+33612345678"})
    for typed in ("+33 6 12 34 56 78", "+33612345678", "+33 (0)6 12-34-56-78"):
        assert await _find(client, typed) == [cid], typed
    assert await _find(client, "+33 6 00 00 00 00") == []


async def test_search_by_channel_identity_and_by_id(client: TestClient) -> None:
    cid = await _customer(client, "visitor-9")
    await _link(client, cid, {"channel": "instagram", "external_id": "ig-778"})
    assert await _find(client, "web:visitor-9") == [cid]
    assert await _find(client, "instagram:ig-778") == [cid]
    assert await _find(client, "instagram:nobody") == []
    assert await _find(client, cid) == [cid]
    assert await _find(client, UNKNOWN) == []


async def test_search_result_shows_who_was_found(client: TestClient) -> None:
    cid = await _customer(client, author_name="Ana Silva")
    response = await client.get("/v1/customers", params={"q": "ana"}, headers=AGENT)
    (found,) = (await response.json())["customers"]
    assert found["id"] == cid
    assert found["profile"]["name"] == "Ana Silva"
    assert found["identities"][0]["external_id"] == "visitor-1"
    assert found["last_channel"] == "web"
    assert found["last_seen"]


async def test_search_needs_the_agent_role(client: TestClient) -> None:
    await _customer(client, author_name="Ana Silva")
    response = await client.get("/v1/customers", params={"q": "ana"}, headers=BOT)
    assert response.status == 403
    assert response.content_type == "application/problem+json"


async def test_empty_query_is_refused(client: TestClient) -> None:
    for params in ({}, {"q": ""}, {"q": "   "}, {"q": "!!"}):
        response = await client.get("/v1/customers", params=params, headers=AGENT)
        assert response.status in (400, 422), params
        assert (await response.json())["field"] == "q"


async def test_a_name_learnt_from_a_message_is_a_profile_change(client: TestClient) -> None:
    cid = await _customer(client)  # no name yet
    tag = (await client.get(f"/v1/customers/{cid}/context", headers=BOT)).headers["ETag"]
    await ingest(client, channel_message_id="named", author_name="Ana Silva")
    stale = await client.patch(f"/v1/customers/{cid}/profile", json={"name": "Someone Else"},
                               headers={**AGENT, "If-Match": tag})  # fmt: skip
    assert stale.status == 412
    response = await _profile(client, cid, {"email": "ana@example.com"})
    profile = (await response.json())["customer"]["profile"]
    assert (profile["name"], profile["email"]) == ("Ana Silva", "ana@example.com")
