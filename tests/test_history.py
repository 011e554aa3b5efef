"""GET /v1/customers/{id}/history: the cross-channel timeline, newest first, in pages."""

from __future__ import annotations

import base64
from typing import Any

from aiohttp.test_utils import TestClient

from tests.conftest import AGENT, BOT, ingest

UNKNOWN = "cus_01JAAAAAAAAAAAAAAAAAAAAAAA"


async def _customer_with(client: TestClient, count: int) -> str:
    """A customer who wrote `count` messages, "m 0" first; web then mobile alternately."""
    cid = str((await ingest(client, channel_message_id="w-0", text="m 0"))["customer_id"])
    link = {"channel": "mobile", "external_id": "app-1"}
    linked = await client.post(f"/v1/customers/{cid}/identities", json=link, headers=AGENT)
    assert linked.status == 201
    for i in range(1, count):
        if i % 2:
            await ingest(client, channel="mobile", external_id="app-1",
                         channel_message_id=f"a-{i}", text=f"m {i}")  # fmt: skip
        else:
            await ingest(client, channel_message_id=f"w-{i}", text=f"m {i}")
    return cid


async def _page(client: TestClient, cid: str, **params: Any) -> dict[str, Any]:
    response = await client.get(f"/v1/customers/{cid}/history", params=params, headers=BOT)
    assert response.status == 200, await response.text()
    data: dict[str, Any] = await response.json()
    return data


async def _all_pages(client: TestClient, cid: str, **params: Any) -> list[list[str]]:
    pages = []
    cursor = None
    while True:
        page = await _page(client, cid, **params, **({"before": cursor} if cursor else {}))
        pages.append([m["text"] for m in page["messages"]])
        cursor = page["next_cursor"]
        if cursor is None:
            return pages


async def test_history_is_newest_first_across_channels(client: TestClient) -> None:
    cid = await _customer_with(client, 6)
    page = await _page(client, cid)
    assert [m["text"] for m in page["messages"]] == [f"m {i}" for i in range(5, -1, -1)]
    assert [m["channel"] for m in page["messages"]] == ["mobile", "web"] * 3
    assert page["next_cursor"] is None
    received = [m["received_at"] for m in page["messages"]]
    assert received == sorted(received, reverse=True)


async def test_limit_bounds_the_page(client: TestClient) -> None:
    cid = await _customer_with(client, 6)
    page = await _page(client, cid, limit=4)
    assert [m["text"] for m in page["messages"]] == ["m 5", "m 4", "m 3", "m 2"]
    assert page["next_cursor"]
    exact = await _page(client, cid, limit=6)
    assert len(exact["messages"]) == 6
    assert exact["next_cursor"] is None


async def test_cursor_pages_through_everything_exactly_once(client: TestClient) -> None:
    cid = await _customer_with(client, 23)
    pages = await _all_pages(client, cid, limit=5)
    assert [len(p) for p in pages] == [5, 5, 5, 5, 3]
    assert [text for page in pages for text in page] == [f"m {i}" for i in range(22, -1, -1)]


async def test_default_page_is_fifty(client: TestClient) -> None:
    cid = str((await ingest(client, channel_message_id="0", text="m 0"))["customer_id"])
    for i in range(1, 55):
        await ingest(client, channel_message_id=str(i), text=f"m {i}")
    first = await _page(client, cid)
    assert len(first["messages"]) == 50
    rest = await _page(client, cid, before=first["next_cursor"])
    assert [m["text"] for m in rest["messages"]] == ["m 4", "m 3", "m 2", "m 1", "m 0"]
    assert rest["next_cursor"] is None


async def test_channel_filter_pages_one_channel(client: TestClient) -> None:
    cid = await _customer_with(client, 11)
    web = await _all_pages(client, cid, channel="web", limit=2)
    assert [t for page in web for t in page] == [f"m {i}" for i in (10, 8, 6, 4, 2, 0)]
    mobile = await _page(client, cid, channel="mobile")
    assert [m["text"] for m in mobile["messages"]] == [f"m {i}" for i in (9, 7, 5, 3, 1)]
    assert {m["channel"] for m in mobile["messages"]} == {"mobile"}
    none = await _page(client, cid, channel="instagram")
    assert none == {"messages": [], "next_cursor": None}


async def test_unknown_channel_filter_is_refused(client: TestClient) -> None:
    cid = await _customer_with(client, 2)
    response = await client.get(
        f"/v1/customers/{cid}/history", params={"channel": "telegram"}, headers=BOT
    )
    assert response.status in (400, 422)
    assert (await response.json())["field"] == "channel"


async def test_pages_are_stable_while_messages_arrive(client: TestClient) -> None:
    cid = await _customer_with(client, 12)
    first = await _page(client, cid, limit=5)
    assert [m["text"] for m in first["messages"]] == [f"m {i}" for i in range(11, 6, -1)]
    for i in range(12, 20):
        await ingest(client, channel_message_id=f"late-{i}", text=f"m {i}")
    second = await _page(client, cid, limit=5, before=first["next_cursor"])
    assert [m["text"] for m in second["messages"]] == [f"m {i}" for i in range(6, 1, -1)]
    third = await _page(client, cid, limit=5, before=second["next_cursor"])
    assert [m["text"] for m in third["messages"]] == ["m 1", "m 0"]
    assert third["next_cursor"] is None
    # The new ones are on top for a reader starting over.
    fresh = await _page(client, cid, limit=3)
    assert [m["text"] for m in fresh["messages"]] == ["m 19", "m 18", "m 17"]


async def test_bad_limit_is_400_naming_limit(client: TestClient) -> None:
    cid = await _customer_with(client, 2)
    for limit in ("0", "201", "abc", "-1", "1.5", "", "99999999999"):
        response = await client.get(
            f"/v1/customers/{cid}/history", params={"limit": limit}, headers=BOT
        )
        assert response.status == 400, limit
        assert response.content_type == "application/problem+json"
        assert (await response.json())["field"] == "limit"
    assert len((await _page(client, cid, limit=200))["messages"]) == 2
    assert len((await _page(client, cid, limit=1))["messages"]) == 1


async def test_forged_cursor_is_400_naming_before(client: TestClient) -> None:
    cid = await _customer_with(client, 3)
    forged = [
        "not-a-cursor",
        "%%%",
        base64.urlsafe_b64encode(b"v2.1-1").decode(),
        base64.urlsafe_b64encode(b"v1.abc").decode(),
        base64.urlsafe_b64encode(b"v1.1-1; FLUSHALL").decode(),
        base64.urlsafe_b64encode("v1.\u0661-\u0661".encode()).decode(),
    ]
    for cursor in forged:
        response = await client.get(
            f"/v1/customers/{cid}/history", params={"before": cursor}, headers=BOT
        )
        assert response.status == 400, cursor
        problem = await response.json()
        assert problem["field"] == "before"
        assert "Traceback" not in problem["detail"]
    assert len((await _page(client, cid))["messages"]) == 3


async def test_unknown_customer_is_404(client: TestClient) -> None:
    for cid in (UNKNOWN, "cus_nope"):
        response = await client.get(f"/v1/customers/{cid}/history", headers=BOT)
        assert response.status == 404, cid
        assert response.content_type == "application/problem+json"
    response = await client.get(
        f"/v1/customers/{UNKNOWN}/history", params={"channel": "web"}, headers=BOT
    )
    assert response.status == 404
