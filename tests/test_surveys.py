"""Surveys in the channel the customer is on, end to end through each channel's own
requests (web and app chat, Instagram's signed webhook, Twilio's signed SMS webhook) on a
real Valkey; the answers read back from the timeline and the service report."""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from omni import keys
from omni.app import create_app
from omni.errors import ConfigError
from tests.adapters.test_instagram import ACCOUNT, Graph, signature
from tests.conftest import AGENT, BOT, make_settings
from tests.test_channel_instagram import INSTAGRAM, delivering
from tests.test_channel_mobile import MOBILE
from tests.test_channel_sms import ACCOUNT as TWILIO_ACCOUNT
from tests.test_channel_sms import PUBLIC, SERVICE, TOKEN, text_from
from tests.test_channel_voice import twilio_signature
from tests.test_channel_web import WEB
from tests.test_worker import until

Json = dict[str, Any]
QUIET = {"in_process_worker": False}
SMS_INBOUND = "/channels/sms/twilio"


def all_channels(redis_url: str, **sections: Any) -> Any:
    return make_settings(
        redis_url,
        server={"public_url": PUBLIC},
        web=WEB,
        mobile={**MOBILE, "push_url": "http://127.0.0.1:9"},
        instagram=INSTAGRAM,
        twilio={"auth_token": TOKEN},
        sms={"account_sid": TWILIO_ACCOUNT, "messaging_service_sid": SERVICE,
             "api_url": "http://127.0.0.1:9"},
        outbox=QUIET,
        **sections,
    )  # fmt: skip


@pytest.fixture
async def graph(aiohttp_server: Any) -> AsyncIterator[tuple[Graph, str]]:
    """Instagram's Graph API as a local server (the Send API)."""
    stub = Graph()
    api = web.Application()
    api.router.add_post("/v22.0/{account}/messages", stub.handle)
    server = await aiohttp_server(api)
    yield stub, str(server.make_url("/v22.0"))
    stub.release.set()


@pytest.fixture
async def app(aiohttp_client: Any, redis_url: str, redis: Redis) -> TestClient:
    client: TestClient = await aiohttp_client(create_app(all_channels(redis_url)))
    return client


# -- each channel's customer, as the channel sends them ------------------------------------


class Chat:
    """A web or app visitor: a session, and messages sent with it."""

    def __init__(self, client: TestClient, channel: str) -> None:
        self.client, self.channel, self.sent = client, channel, 0
        self.token = self.external_id = ""

    async def open(self) -> Chat:
        response = await self.client.post(f"/channels/{self.channel}/sessions", json={})
        assert response.status == 201, await response.text()
        body = await response.json()
        self.token, self.external_id = body["token"], body["visitor_id"]
        return self

    async def say(self, text: str | None = None, quick_reply: Json | None = None) -> Json:
        self.sent += 1
        body: Json = {"client_msg_id": f"{self.channel}-{self.sent}"}
        if text is not None:
            body["text"] = text
        if quick_reply is not None:
            body["quick_reply"] = quick_reply
        response = await self.client.post(
            f"/channels/{self.channel}/messages", json=body,
            headers={"Authorization": f"Bearer {self.token}"},
        )  # fmt: skip
        assert response.status in (200, 201), await response.text()
        ack: Json = await response.json()
        return ack

    async def seen(self) -> list[Json]:
        """What the visitor's client shows (catch-up), oldest first."""
        response = await self.client.get(
            f"/channels/{self.channel}/messages",
            headers={"Authorization": f"Bearer {self.token}"},
        )
        assert response.status == 200, await response.text()
        messages: list[Json] = (await response.json())["messages"]
        return messages


class Instagram:
    def __init__(self, client: TestClient, external_id: str = "1180000000000077") -> None:
        self.client, self.external_id, self.sent = client, external_id, 0
        self.channel = "instagram"

    async def say(self, text: str | None = None, quick_reply: Json | None = None) -> None:
        self.sent += 1
        message: Json = {"mid": f"mid.survey.{self.external_id}.{self.sent}",
                         "text": text or (quick_reply or {}).get("title", "")}  # fmt: skip
        if quick_reply is not None:
            message["quick_reply"] = {"payload": quick_reply["payload"]}
        event = {"sender": {"id": self.external_id}, "recipient": {"id": ACCOUNT},
                 "timestamp": int(time.time() * 1000), "message": message}  # fmt: skip
        body = json.dumps(
            {
                "object": "instagram",
                "entry": [{"id": ACCOUNT, "time": int(time.time() * 1000), "messaging": [event]}],
            }
        ).encode()
        response = await self.client.post(
            "/channels/instagram/webhook", data=body,
            headers={"Content-Type": "application/json", "X-Hub-Signature-256": signature(body)},
        )  # fmt: skip
        assert response.status == 200, await response.text()


class Sms:
    def __init__(self, client: TestClient, number: str = "+14155550177") -> None:
        self.client, self.external_id, self.sent = client, number, 0
        self.channel = "sms"

    async def say(self, text: str) -> None:
        self.sent += 1
        sid = f"SM{self.external_id[-4:]}{self.sent:028d}"
        params = text_from(text, sid, From=self.external_id)
        pairs = list(params.items())
        signed = twilio_signature(PUBLIC + SMS_INBOUND, pairs, TOKEN)
        headers = {"Content-Type": "application/x-www-form-urlencoded",
                   "X-Twilio-Signature": signed}  # fmt: skip
        response = await self.client.post(SMS_INBOUND, data=urlencode(pairs), headers=headers)
        assert response.status == 200, await response.text()


async def customer_id(client: TestClient, channel: str, external_id: str) -> str:
    response = await client.get(
        "/v1/context", params={"channel": channel, "external_id": external_id}, headers=BOT
    )
    assert response.status == 200, await response.text()
    cid: str = (await response.json())["customer"]["id"]
    return cid


async def timeline(client: TestClient, cid: str) -> list[Json]:
    response = await client.get(f"/v1/customers/{cid}/history", headers=AGENT)
    assert response.status == 200, await response.text()
    messages: list[Json] = (await response.json())["messages"]
    return messages


async def conversation(client: TestClient, cid: str) -> Json:
    response = await client.get(f"/v1/customers/{cid}/context", headers=BOT)
    assert response.status == 200, await response.text()
    found: Json = (await response.json())["conversation"]
    return found


async def answer_and_resolve(client: TestClient, cid: str, channel: str) -> None:
    sent = await client.post(f"/v1/customers/{cid}/messages",
                             json={"text": "Here is your answer", "channel": channel},
                             headers=AGENT)  # fmt: skip
    assert sent.status == 202, await sent.text()
    resolved = await client.post(f"/v1/customers/{cid}/resolve", json={}, headers=AGENT)
    assert resolved.status == 200, await resolved.text()


async def report(client: TestClient, **query: str) -> Json:
    response = await client.get("/v1/reports/service", params=query, headers=AGENT)
    assert response.status == 200, await response.text()
    body: Json = await response.json()
    return body


def survey_answers(messages: list[Json]) -> list[Json]:
    return [m["metadata"] for m in messages
            if m["channel"] == "system" and m.get("metadata", {}).get("kind") == "survey"
            and "score" in m["metadata"]]  # fmt: skip


def question(messages: list[Json]) -> Json:
    """The newest survey question on the timeline."""
    return next(m for m in messages if m["author"] == {"kind": "system", "name": "survey"}
                and m.get("text", "").startswith("How"))  # fmt: skip


# -- the tests -------------------------------------------------------------------------------


async def test_a_conversation_resolved_on_each_channel_gets_its_survey_there(
    app: TestClient,
) -> None:
    web, mobile = await Chat(app, "web").open(), await Chat(app, "mobile").open()
    instagram, sms = Instagram(app), Sms(app)
    scores = {"web": 5, "mobile": 4, "instagram": 2, "sms": 3}
    for customer in (web, mobile, instagram, sms):
        await customer.say("Where is my parcel?")
        cid = await customer_id(app, customer.channel, customer.external_id)
        await answer_and_resolve(app, cid, customer.channel)
        asked = question(await timeline(app, cid))
        assert asked["channel"] == customer.channel
        score = scores[customer.channel]
        if customer.channel == "sms":  # no buttons: a numbered reply
            assert "Reply with a number from 1 to 5." in asked["text"]
            assert "quick_replies" not in asked
            await customer.say(str(score))
        else:
            buttons = asked["quick_replies"]
            assert [b["title"] for b in buttons] == ["1", "2", "3", "4", "5"]
            if isinstance(customer, Chat):  # what the widget / app shows: the buttons
                shown = (await customer.seen())[-1]
                assert shown["quick_replies"] == buttons
            await customer.say(quick_reply=buttons[score - 1])
        messages = await timeline(app, cid)
        [recorded] = survey_answers(messages)
        assert recorded["score"] == score and recorded["survey_kind"] == "csat"
        assert recorded["channel"] == customer.channel
        assert recorded["resolved_by"] == "agent" and recorded["agent"] == "test agent"
        assert recorded["channels_crossed"] == 1
        # The answer is the survey's event: no new conversation, and thanks are sent.
        assert (await conversation(app, cid))["status"] == "resolved"
        assert messages[0]["text"] == "Thank you for your feedback!"
    figures = await report(app, group_by="channel")
    by_channel = {g["key"]: g for g in figures["groups"]}
    for channel, score in scores.items():
        csat = by_channel[channel]["csat"]
        assert (csat["sent"], csat["answered"], csat["average"]) == (1, 1, score)
        assert csat["response_rate"] == 1
    total = figures["totals"]
    assert total["csat"]["average"] == sum(scores.values()) / 4
    assert total["conversations"] == total["resolved"] == 4


async def test_the_instagram_question_goes_out_as_quick_replies_with_the_survey_id(
    aiohttp_client: Any, redis_url: str, redis: Redis, graph: tuple[Graph, str]
) -> None:
    stub, graph_url = graph
    client = await delivering(aiohttp_client, redis_url, graph_url)
    customer = Instagram(client)
    await customer.say("hello")
    cid = await customer_id(client, "instagram", customer.external_id)
    await answer_and_resolve(client, cid, "instagram")

    async def asked() -> bool:
        return any("quick_replies" in r["body"].get("message", {}) for r in stub.requests)

    await until(asked)
    [sent] = [r["body"] for r in stub.requests if "quick_replies" in r["body"]["message"]]
    assert sent["recipient"] == {"id": customer.external_id}
    assert sent["message"]["text"].startswith("How satisfied are you")
    replies = sent["message"]["quick_replies"]
    assert [r["title"] for r in replies] == ["1", "2", "3", "4", "5"]
    survey = (await redis.hget(keys.survey(cid), "id")).decode()  # type: ignore[union-attr]
    assert [r["payload"] for r in replies] == [f"SURVEY:{survey}:{n}" for n in range(1, 6)]
    assert {r["content_type"] for r in replies} == {"text"}


@pytest.fixture
async def with_bot(aiohttp_client: Any, redis_url: str, redis: Redis) -> TestClient:
    """Every channel, and a web bot (its deliveries queue: no worker sends them)."""
    bots = {"web": {"url": "http://127.0.0.1:9/bot", "secret": "web-bot-secret-000001"}}
    client: TestClient = await aiohttp_client(create_app(all_channels(redis_url, bots=bots)))
    return client


async def bot_deliveries(client: TestClient, cid: str) -> int:
    response = await client.get(f"/v1/customers/{cid}/deliveries", headers=AGENT)
    assert response.status == 200, await response.text()
    return sum(1 for d in (await response.json())["items"] if d["kind"] == "bot")


async def test_only_an_answer_to_the_open_survey_is_a_score(with_bot: TestClient) -> None:
    app = with_bot
    web = await Chat(app, "web").open()
    # A number before any survey is a plain message: stored, and the bot hears of it.
    await web.say("4")
    cid = await customer_id(app, "web", web.external_id)
    assert await bot_deliveries(app, cid) == 1
    assert not survey_answers(await timeline(app, cid))
    await answer_and_resolve(app, cid, "web")
    buttons = question(await timeline(app, cid))["quick_replies"]
    survey_id = buttons[0]["payload"].split(":")[1]
    # The customer's SMS number joins the customer: a bare number there is no answer,
    # the survey was asked on web.
    linked = await app.post(f"/v1/customers/{cid}/identities",
                            json={"channel": "sms", "external_id": "+14155550188"},
                            headers=AGENT)  # fmt: skip
    assert linked.status == 201, await linked.text()
    await Sms(app, "+14155550188").say("5")
    # Out of range, as a typed number or a forged button: plain messages.
    await web.say("9")
    await web.say(quick_reply={"payload": f"SURVEY:{survey_id}:6", "title": "6"})
    assert not survey_answers(await timeline(app, cid))
    assert await bot_deliveries(app, cid) == 3  # "4", "9", the forged button; SMS has no bot
    # The answer: recorded, the bot not woken.
    await web.say("2")
    [recorded] = survey_answers(await timeline(app, cid))
    assert (recorded["score"], recorded["survey_id"]) == (2, survey_id)
    assert await bot_deliveries(app, cid) == 3
    # Answered: the same button again, or another number, is a plain message.
    await web.say(quick_reply=buttons[3])
    await web.say("3")
    assert len(survey_answers(await timeline(app, cid))) == 1
    assert await bot_deliveries(app, cid) == 5
    figures = (await report(app))["totals"]["csat"]
    assert (figures["sent"], figures["answered"], figures["average"]) == (1, 1, 2)


async def test_an_answer_on_another_channel_closes_the_survey_everywhere(
    app: TestClient,
) -> None:
    web = await Chat(app, "web").open()
    await web.say("My order is late")
    cid = await customer_id(app, "web", web.external_id)
    instagram = Instagram(app, "1180000000000099")
    linked = await app.post(f"/v1/customers/{cid}/identities",
                            json={"channel": "instagram", "external_id": instagram.external_id},
                            headers=AGENT)  # fmt: skip
    assert linked.status == 201, await linked.text()
    await answer_and_resolve(app, cid, "web")
    buttons = question(await timeline(app, cid))["quick_replies"]
    # The web button's payload names the survey: tapped from Instagram (a shared link,
    # a forwarded button) it answers it, and the web survey is closed.
    await instagram.say(quick_reply=buttons[4])
    [recorded] = survey_answers(await timeline(app, cid))
    assert (recorded["score"], recorded["channel"], recorded["asked_on"]) == (5, "instagram", "web")
    # Taken up again and resolved again: the conversation was asked once, not twice.
    taken = await app.post(f"/v1/customers/{cid}/handoff", json={"to": "agent"}, headers=AGENT)
    assert taken.status == 200, await taken.text()
    resolved = await app.post(f"/v1/customers/{cid}/resolve", json={}, headers=AGENT)
    assert resolved.status == 200
    questions = [m for m in await timeline(app, cid)
                 if m["author"] == {"kind": "system", "name": "survey"}
                 and m.get("text", "").startswith("How")]  # fmt: skip
    assert len(questions) == 1
    await web.say(quick_reply=buttons[0])
    await web.say("1")
    assert len(survey_answers(await timeline(app, cid))) == 1


async def test_a_retried_answer_is_recorded_once(app: TestClient) -> None:
    sms = Sms(app, "+14155550166")
    await sms.say("hi")
    cid = await customer_id(app, "sms", sms.external_id)
    await answer_and_resolve(app, cid, "sms")
    params = text_from("4", "SM" + "7" * 32, From=sms.external_id)
    pairs = list(params.items())
    signed = twilio_signature(PUBLIC + SMS_INBOUND, pairs, TOKEN)
    headers = {"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": signed}
    for _ in range(2):  # Twilio retries a webhook it got no answer to
        response = await app.post(SMS_INBOUND, data=urlencode(pairs), headers=headers)
        assert response.status == 200
    assert [a["score"] for a in survey_answers(await timeline(app, cid))] == [4]
    assert (await report(app))["totals"]["csat"]["answered"] == 1


async def test_nps_on_demand_at_most_once_per_period_across_channels(
    app: TestClient, redis: Redis
) -> None:
    sms = Sms(app, "+14155550155")
    await sms.say("hello")
    cid = await customer_id(app, "sms", sms.external_id)
    asked = await app.post(f"/v1/customers/{cid}/surveys", json={"kind": "nps"}, headers=AGENT)
    assert asked.status == 201, await asked.text()
    survey = await asked.json()
    assert (survey["kind"], survey["channel"], survey["scale"]) == ("nps", "sms", [0, 10])
    text = question(await timeline(app, cid))["text"]
    assert "Reply with a number from 0 to 10." in text
    # Within the period: 409, whatever the channel, with when it is allowed again.
    for channel in ("current", "sms", "web"):
        again = await app.post(f"/v1/customers/{cid}/surveys",
                               json={"kind": "nps", "channel": channel}, headers=AGENT)  # fmt: skip
        assert again.status == 409, await again.text()
        assert again.content_type == "application/problem+json"
        assert "next_allowed_at" in await again.json()
    await sms.say("10 you were great")  # a comment is not invited on SMS by default
    assert not survey_answers(await timeline(app, cid))
    await sms.say("10")
    [recorded] = survey_answers(await timeline(app, cid))
    assert (recorded["survey_kind"], recorded["score"]) == ("nps", 10)
    # A period later, NPS may be asked again.
    await redis.hset(keys.customer(cid), "nps_at", 0)  # type: ignore[misc]
    later = await app.post(f"/v1/customers/{cid}/surveys", json={}, headers=AGENT)
    assert later.status == 201, await later.text()
    await sms.say("3")
    nps = (await report(app))["totals"]["nps"]
    assert (nps["sent"], nps["answered"], nps["promoters"], nps["detractors"]) == (2, 2, 1, 1)
    assert nps["score"] == 0  # 50 % promoters - 50 % detractors
    # Bad requests: a bot may not ask, bad kinds and channels, no such customer.
    assert (await app.post(f"/v1/customers/{cid}/surveys", json={}, headers=BOT)).status == 403
    for body in ({"kind": "wow"}, {"channel": "fax"}, {"kind": "nps", "extra": 1}):
        bad = await app.post(f"/v1/customers/{cid}/surveys", json=body, headers=AGENT)
        assert bad.status in (400, 422), body
    ghost = "cus_01JAAAAAAAAAAAAAAAAAAAAAAA"
    assert (await app.post(f"/v1/customers/{ghost}/surveys", json={}, headers=AGENT)).status == 404


async def test_a_comment_after_the_number_where_comments_are_invited(
    aiohttp_client: Any, redis_url: str, redis: Redis
) -> None:
    surveys = {"channels": {"sms": {"resolution": ["csat", "ces"], "comment": True}}}
    app = await aiohttp_client(create_app(all_channels(redis_url, surveys=surveys)))
    sms = Sms(app, "+14155550144")
    await sms.say("My parcel?")
    cid = await customer_id(app, "sms", sms.external_id)
    await answer_and_resolve(app, cid, "sms")
    assert "comment after the number" in question(await timeline(app, cid))["text"]
    await sms.say("4 quick and kind")
    # Then the next question: CES, 1 to 7.
    assert "1 to 7" in question(await timeline(app, cid))["text"]
    await sms.say("8")  # out of range: a plain message
    await sms.say("6")
    answers = survey_answers(await timeline(app, cid))
    assert [(a["survey_kind"], a["score"], a.get("comment")) for a in reversed(answers)] == [
        ("csat", 4, "quick and kind"), ("ces", 6, None)
    ]  # fmt: skip
    figures = (await report(app, channel="sms"))["totals"]
    assert (figures["csat"]["average"], figures["ces"]["average"]) == (4, 6)


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"from": "2026-01-02", "to": "2026-01-01"}, "from"),
        ({"from": "2025-01-01", "to": "2026-01-02"}, "to"),
        ({"from": "yesterday"}, "from"),
        ({"to": "2026-13-01"}, "to"),
        ({"group_by": "week"}, "group_by"),
        ({"channel": "fax"}, "channel"),
    ],
)
async def test_bad_report_queries_are_422(app: TestClient, query: Json, field: str) -> None:
    response = await app.get("/v1/reports/service", params=query, headers=AGENT)
    assert response.status == 422, await response.text()
    assert response.content_type == "application/problem+json"
    assert (await response.json())["field"] == field


async def test_a_year_is_allowed_and_the_report_is_for_agents(app: TestClient) -> None:
    query = {"from": "2025-03-01", "to": "2026-03-01", "group_by": "day"}
    year = await app.get("/v1/reports/service", params=query, headers=AGENT)
    assert year.status == 200
    body = await year.json()
    assert len(body["groups"]) == 366 and body["totals"]["conversations"] == 0
    assert (await app.get("/v1/reports/service", headers=BOT)).status == 403
    assert (await app.get("/v1/reports/service")).status == 401
    paths = (await (await app.get("/openapi.json")).json())["paths"]
    assert "422" in paths["/v1/reports/service"]["get"]["responses"]
    assert "409" in paths["/v1/customers/{id}/surveys"]["post"]["responses"]


async def test_an_expired_survey_takes_no_answer(app: TestClient, redis: Redis) -> None:
    web = await Chat(app, "web").open()
    await web.say("Hello")
    cid = await customer_id(app, "web", web.external_id)
    await answer_and_resolve(app, cid, "web")
    await redis.hset(keys.survey(cid), "expires", 1)  # type: ignore[misc]  # long ago
    await web.say("5")
    assert not survey_answers(await timeline(app, cid))
    assert (await conversation(app, cid))["status"] == "open"  # a plain message: a new one


async def test_nps_on_a_schedule_follows_the_resolution_survey_once_per_period(
    aiohttp_client: Any, redis_url: str, redis: Redis
) -> None:
    surveys = {"nps_on_resolution": True, "nps_period_days": 30}
    app = await aiohttp_client(create_app(all_channels(redis_url, surveys=surveys)))
    web = await Chat(app, "web").open()
    await web.say("Hello")
    cid = await customer_id(app, "web", web.external_id)
    await answer_and_resolve(app, cid, "web")
    first = question(await timeline(app, cid))["quick_replies"]
    await web.say(quick_reply=first[4])  # CSAT 5, then the NPS question
    nps = question(await timeline(app, cid))
    assert [b["title"] for b in nps["quick_replies"]] == [str(n) for n in range(11)]
    await web.say(quick_reply=nps["quick_replies"][8])
    kinds = [(a["survey_kind"], a["score"]) for a in survey_answers(await timeline(app, cid))]
    assert sorted(kinds) == [("csat", 5), ("nps", 8)]
    # The next resolution within the period asks CSAT only.
    await web.say("One more thing")
    await answer_and_resolve(app, cid, "web")
    latest = question(await timeline(app, cid))
    assert len(latest["quick_replies"]) == 5
    await web.say(quick_reply=latest["quick_replies"][2])
    assert question(await timeline(app, cid))["id"] == latest["id"]  # no NPS after it
    totals = (await report(app))["totals"]
    assert (totals["nps"]["sent"], totals["nps"]["passives"], totals["csat"]["sent"]) == (1, 1, 2)


@pytest.mark.parametrize(
    ("surveys", "named"),
    [
        ({"resolution": ["nps"]}, "surveys.resolution"),
        ({"resolution": "csat"}, "surveys.resolution"),
        ({"nps_period_days": -1}, "surveys.nps_period_days"),
        ({"channels": {"sms": {"comment": "yes"}}}, "surveys.channels.sms.comment"),
    ],
)
async def test_a_bad_surveys_setting_stops_start_up_naming_it(
    redis_url: str, surveys: Json, named: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(named)):
        create_app(all_channels(redis_url, surveys=surveys))


async def test_a_bad_reports_setting_stops_start_up_naming_it(redis_url: str) -> None:
    with pytest.raises(ConfigError, match=re.escape("reports.shards")):
        create_app(all_channels(redis_url, reports={"shards": 0}))
