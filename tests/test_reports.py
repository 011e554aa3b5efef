"""The service report against figures computed here, independently, from the events the
test plays (and the times omni stamped on each conversation)."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from aiohttp.test_utils import TestClient

from tests.conftest import AGENT, BOT, ingest

Json = dict[str, Any]


class Player:
    """Plays customers' messages, replies and resolutions, keeping what a report should
    say about them."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.sent = 0
        self.first_response: list[tuple[str, str, int]] = []  # channel, agent, ms
        self.resolution: list[tuple[str, str, int]] = []

    async def say(self, channel: str, external_id: str, text: str) -> str:
        self.sent += 1
        message = await ingest(self.client, channel=channel, external_id=external_id,
                               channel_message_id=f"r-{self.sent}", text=text)  # fmt: skip
        cid: str = message["customer_id"]
        return cid

    async def conversation(self, cid: str) -> Json:
        response = await self.client.get(f"/v1/customers/{cid}/context", headers=BOT)
        assert response.status == 200
        found: Json = (await response.json())["conversation"]
        return found

    async def reply(self, cid: str, channel: str, who: dict[str, str]) -> None:
        before = await self.conversation(cid)
        response = await self.client.post(f"/v1/customers/{cid}/messages",
                                          json={"text": "On it", "channel": channel},
                                          headers=who)  # fmt: skip
        assert response.status == 202, await response.text()
        after = await self.conversation(cid)
        if before["first_response_at"] is None:  # the conversation's first response
            agent = "bot" if who is BOT else "test agent"
            took = _seconds(after["started_at"], after["first_response_at"])
            self.first_response.append((after["channels"][0], agent, took))

    async def resolve(self, cid: str, who: dict[str, str]) -> None:
        response = await self.client.post(f"/v1/customers/{cid}/resolve", json={}, headers=who)
        assert response.status == 200, await response.text()
        done = await response.json()
        agent = "test agent" if done["resolved_by"] == "agent" else "bot"
        took = _seconds(done["started_at"], done["resolved_at"])
        self.resolution.append((done["channels"][0], agent, took))


def _seconds(start: str, end: str) -> int:
    """Milliseconds between two of omni's stamps (they are whole milliseconds)."""

    def parse(text: str) -> datetime:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))

    return round((parse(end) - parse(start)).total_seconds() * 1000)


def _nearest_rank(values: list[int], q: float) -> float | None:
    """The value at rank ceil(q * n), in seconds."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1] / 1000 if ordered else None


def expected_durations(samples: list[int]) -> Json:
    return {
        "count": len(samples),
        "mean_s": round(sum(samples) / len(samples) / 1000, 3) if samples else None,
        "median_s": _nearest_rank(samples, 0.5),
        "p90_s": _nearest_rank(samples, 0.9),
    }


async def link(client: TestClient, cid: str, channel: str, external_id: str) -> None:
    response = await client.post(f"/v1/customers/{cid}/identities",
                                 json={"channel": channel, "external_id": external_id},
                                 headers=AGENT)  # fmt: skip
    assert response.status == 201, await response.text()


async def test_the_report_matches_figures_computed_from_the_events_played(
    client: TestClient,
) -> None:
    play = Player(client)
    # A: the bot answers and resolves on web; A answers the survey, then comes back
    # (a reopen within the window, and a returning customer); an agent resolves that.
    a = await play.say("web", "visitor-a", "Do you ship to Norway?")
    await play.reply(a, "web", BOT)
    await play.resolve(a, BOT)
    await play.say("web", "visitor-a", "5")  # the CSAT answer
    await play.say("web", "visitor-a", "And to Iceland?")
    await play.reply(a, "web", AGENT)
    await play.resolve(a, AGENT)
    # B: web, then SMS in the same conversation (a switch, crossed without a repeat).
    b = await play.say("web", "visitor-b", "My parcel is late")
    await link(client, b, "sms", "+14155550101")
    await play.say("sms", "+14155550101", "Any news?")
    await play.reply(b, "sms", AGENT)
    await play.resolve(b, AGENT)
    await play.say("sms", "+14155550101", "2")  # the CSAT answer, asked by SMS
    # C: Instagram, then web; the bot asks for an order id omni knew (let through).
    c = await play.say("instagram", "1180000000000301", "Order status?")
    order = {"facts": {"order_id": {"value": "A-1"}}}
    known = await client.patch(f"/v1/customers/{c}/facts", json=order, headers=BOT)
    assert known.status == 200, await known.text()
    asked = await client.patch(f"/v1/customers/{c}/conversation",
                               json={"pending": {"fact": "order_id"}}, headers=BOT)  # fmt: skip
    assert asked.status == 200, await asked.text()
    await link(client, c, "web", "visitor-c")
    await play.say("web", "visitor-c", "Still waiting")
    await play.reply(c, "web", AGENT)
    await play.resolve(c, AGENT)
    # D: a cart started by SMS, placed after a move to web; omni answers a bot's question.
    d = await play.say("sms", "+14155550104", "I want the blue one")
    await client.patch(f"/v1/customers/{d}/facts",
                       json={"facts": {"size": {"value": "M"}}}, headers=BOT)  # fmt: skip
    found = await client.get(f"/v1/customers/{d}/context", params={"ask": "size"}, headers=BOT)
    assert (await found.json())["known"]["size"]["value"] == "M"
    cart = await client.get(f"/v1/customers/{d}/cart", headers=BOT)
    item = {"sku": "BLUE-1", "name": "Blue one", "quantity": 1, "unit_price": 2500,
            "currency": "EUR"}  # fmt: skip
    put = await client.put(f"/v1/customers/{d}/cart", json={"items": [item], "stage": "cart"},
                           headers={**BOT, "If-Match": cart.headers["ETag"]})  # fmt: skip
    assert put.status == 200, await put.text()
    await link(client, d, "web", "visitor-d")
    await play.say("web", "visitor-d", "Paying now")
    placed = await client.put(f"/v1/customers/{d}/cart",
                              json={"items": [item], "stage": "placed", "order_id": "O-9"},
                              headers={**BOT, "If-Match": put.headers["ETag"]})  # fmt: skip
    assert placed.status == 200, await placed.text()

    response = await client.get("/v1/reports/service", params={"group_by": "agent"},
                                headers=AGENT)  # fmt: skip
    assert response.status == 200, await response.text()
    report = await response.json()
    totals = report["totals"]
    assert totals["conversations"] == 5
    assert totals["resolved"] == 4
    assert totals["first_response"] == expected_durations([s for *_, s in play.first_response])
    assert totals["resolution"] == expected_durations([s for *_, s in play.resolution])
    assert totals["first_contact_resolution"] == {"resolved": 4, "reopened": 1, "rate": 0.75}
    assert totals["csat"] == {"scale": [1, 5], "sent": 4, "answered": 2,
                              "response_rate": 0.5, "average": 3.5}  # fmt: skip
    assert totals["nps"]["sent"] == 0 and totals["nps"]["score"] is None
    assert totals["repeated_questions"] == {"prevented": 1, "let_through": 1}
    assert totals["channel_switches"] == 3
    assert totals["carts"] == {"placed": 1, "started_elsewhere": 1}
    assert totals["cross_channel"] == {"conversations": 2, "without_repeated_question": 1}
    assert totals["returning_customers"] == 1
    # By agent: who resolved what, and their own first responses.
    groups = {g["key"]: g for g in report["groups"]}
    for agent in ("bot", "test agent"):
        mine = [s for _, who, s in play.resolution if who == agent]
        assert groups[agent]["resolution"] == expected_durations(mine)
        firsts = [s for _, who, s in play.first_response if who == agent]
        assert groups[agent]["first_response"] == expected_durations(firsts)
        assert groups[agent]["returning_customers"] is None
    assert groups["bot"]["first_contact_resolution"]["reopened"] == 1
    # By channel: where each conversation started.
    by_channel = await client.get("/v1/reports/service", params={"group_by": "channel"},
                                  headers=AGENT)  # fmt: skip
    channels = {g["key"]: g for g in (await by_channel.json())["groups"]}
    assert {k: g["conversations"] for k, g in channels.items()} == {
        "web": 3, "instagram": 1, "sms": 1
    }  # fmt: skip
    assert channels["web"]["returning_customers"] == 1
    # One channel only, and by day: all of it today.
    web = await client.get("/v1/reports/service", params={"channel": "web", "group_by": "day"},
                           headers=AGENT)  # fmt: skip
    web_report = await web.json()
    assert web_report["totals"]["conversations"] == 3
    assert web_report["totals"]["resolution"] == expected_durations(
        [s for channel, _, s in play.resolution if channel == "web"]
    )
    assert web_report["groups"][-1]["conversations"] == 3  # today, the range's last day
