"""Link tokens: a bot asks for one, the customer presents it (or its code) on another
channel and that identity joins the customer; forged, expired, reused and mismatched
tokens are refused, each with its own answer, and change nothing."""

from __future__ import annotations

import time
from typing import Any

from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from omni.links import TTL_S, LinkTokens, Redeem
from omni.state import SERVICES
from tests.conftest import AGENT, BOT, ingest, snapshot


async def _token(client: TestClient, cid: str, channel: str = "mobile") -> dict[str, Any]:
    response = await client.post(
        f"/v1/customers/{cid}/link-tokens", json={"channel": channel}, headers=BOT
    )
    assert response.status == 201, await response.text()
    data: dict[str, Any] = await response.json()
    return data


async def _redeem(client: TestClient, **body: Any) -> Any:
    return await client.post("/v1/link-tokens/redeem", json=body, headers=BOT)


async def test_a_token_links_a_new_identity_to_the_customer(
    client: TestClient, redis: Redis
) -> None:
    cid = (await ingest(client, channel="web", external_id="vis_1"))["customer_id"]
    token = await _token(client, cid)
    assert token["url"].startswith("http://127.0.0.1:8080/channels/mobile/link?token=lt1.")
    assert len(token["code"]) == 6 and token["code"].isdigit()
    response = await _redeem(client, token=token["token"], channel="mobile", external_id="user:42")
    assert response.status == 200, await response.text()
    assert await response.json() == {
        "customer_id": cid,
        "channel": "mobile",
        "external_id": "user:42",
        "merged_from": None,
    }
    found = await client.get("/v1/context?channel=mobile&external_id=user:42", headers=BOT)
    assert (await found.json())["customer"]["id"] == cid


async def test_a_code_said_on_a_call_merges_the_callers_record_into_the_customer(
    client: TestClient, redis: Redis
) -> None:
    cid = (await ingest(client, channel="instagram", external_id="ig_1", text="order 4417?"))[
        "customer_id"
    ]
    caller = (
        await ingest(
            client,
            channel="voice",
            external_id="+14155550100",
            channel_message_id="call-1",
            text="hello",
        )
    )["customer_id"]
    token = await _token(client, cid, "voice")
    response = await _redeem(
        client, code=token["code"], channel="voice", external_id="+14155550100"
    )
    assert response.status == 200
    assert (await response.json())["merged_from"] == caller
    history = await (await client.get(f"/v1/customers/{cid}/history", headers=AGENT)).json()
    assert [m["text"] for m in history["messages"]][1:] == ["hello", "order 4417?"]
    again = await _redeem(client, code=token["code"], channel="voice", external_id="+1415555")
    assert again.status == 404  # the code is spent with its token


async def test_forged_expired_reused_and_mismatched_tokens_are_refused(
    client: TestClient, redis: Redis
) -> None:
    cid = (await ingest(client))["customer_id"]
    token = (await _token(client, cid))["token"]
    version, body, signature = token.split(".")
    forged = f"{version}.{body}.{'A' * len(signature)}"
    before = await snapshot(redis)
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"token": forged, "channel": "mobile", "external_id": "u"}, 401, "token"),
        ({"token": "lt1.garbage", "channel": "mobile", "external_id": "u"}, 401, "token"),
        ({"token": "not-a-token", "channel": "mobile", "external_id": "u"}, 401, "token"),
        ({"token": token, "channel": "web", "external_id": "u"}, 422, "channel"),
        ({"token": token, "channel": "fax", "external_id": "u"}, 422, "channel"),
        ({"code": "000000", "channel": "mobile", "external_id": "u"}, 404, "code"),
        ({"code": "12ab", "channel": "mobile", "external_id": "u"}, 422, "code"),
        ({"channel": "mobile", "external_id": "u"}, 422, "token"),
        ({"token": token, "code": "123456", "channel": "mobile", "external_id": "u"}, 422, "token"),
    ]
    for body_, status, field in cases:
        response = await _redeem(client, **body_)
        problem = await response.json()
        assert (response.status, problem.get("field")) == (status, field), (body_, problem)
    assert await snapshot(redis) == before

    first = await _redeem(client, token=token, channel="mobile", external_id="user:1")
    reused = await _redeem(client, token=token, channel="mobile", external_id="user:2")
    assert (first.status, reused.status) == (200, 410)
    assert "already used" in (await reused.json())["detail"]

    links: LinkTokens = client.app[SERVICES].links
    old = await links.issue(cid, "mobile", now=time.time() - TTL_S - 1)
    expired = await _redeem(client, token=old.token, channel="mobile", external_id="user:3")
    assert expired.status == 410
    assert "expired" in (await expired.json())["detail"]
    assert await links.redeem(
        Redeem(
            channel="mobile", external_id="user:1", token=(await links.issue(cid, "mobile")).token
        )
    )


async def test_tokens_are_for_existing_customers_and_bots(client: TestClient, redis: Redis) -> None:
    missing = await client.post(
        "/v1/customers/cus_01HZY7Q8W3K5M2N4P6R8S0T2V4/link-tokens",
        json={"channel": "mobile"},
        headers=BOT,
    )
    assert missing.status == 404
    cid = (await ingest(client))["customer_id"]
    for body, status in (({"channel": "fax"}, 422), ({}, 422), ({"channel": "mobile"}, 401)):
        headers = BOT if status != 401 else {}
        response = await client.post(f"/v1/customers/{cid}/link-tokens", json=body, headers=headers)
        assert response.status == status
