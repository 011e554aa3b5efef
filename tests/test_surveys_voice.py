"""Surveys on a phone call: keypad digits at the end of a call that is still live (Twilio's
signed webhooks, TwiML read as XML); after the call, voice is skipped and the timeline
says so."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from tests.conftest import AGENT
from tests.test_channel_voice import call, customer, listening, params, post, replay, twiml
from tests.test_channel_voice import voice_app as make_voice_app
from tests.test_replies_api import history

QUESTION = "How satisfied are you with the help you got?"


async def report_csat(client: Any) -> dict[str, Any]:
    response = await client.get("/v1/reports/service", params={"channel": "voice"},
                                headers=AGENT)  # fmt: skip
    assert response.status == 200, await response.text()
    csat: dict[str, Any] = (await response.json())["totals"]["csat"]
    return csat


async def test_a_call_resolved_while_live_asks_for_keypad_digits(
    aiohttp_client: Any, redis_url: str, redis: Redis
) -> None:
    client = await make_voice_app(aiohttp_client, redis_url)
    greeting = await call(client)
    said = params(SpeechResult="Where is my order?", Confidence="0.91")
    after, _ = listening(await twiml(await post(client, greeting, said)))
    cid = await customer(client)
    resolved = await client.post(f"/v1/customers/{cid}/resolve", json={}, headers=AGENT)
    assert resolved.status == 200
    # The caller's next turn ends with the question, in a <Gather> that takes digits.
    more = params(SpeechResult="Thanks, that is all", Confidence="0.93")
    asked, prompts = listening(await twiml(await post(client, after, more)))
    assert prompts[-1].startswith(QUESTION) and "Press a key from 1 to 5." in prompts[-1]
    # A key: the answer, thanks, and the call ends.
    root = await twiml(await post(client, asked, params(Digits="4")))
    assert [child.tag for child in root] == ["Say", "Hangup"]
    assert root.findtext("Say") == "Thank you for your feedback!"
    recorded = [m["metadata"] for m in await history(client, cid)
                if m.get("metadata", {}).get("kind") == "survey"]  # fmt: skip
    assert [(r["score"], r["channel"], r["survey_kind"]) for r in recorded] == [
        (4, "voice", "csat")
    ]
    assert await report_csat(client) == {"scale": [1, 5], "sent": 1, "answered": 1,
                                         "response_rate": 1.0, "average": 4.0}  # fmt: skip


async def test_a_call_resolved_after_it_ended_gets_no_survey_and_says_so(
    aiohttp_client: Any, redis_url: str, redis: Redis
) -> None:
    client = await make_voice_app(aiohttp_client, redis_url)
    greeting = await call(client)
    said = params(SpeechResult="Where is my order?", Confidence="0.91")
    listening(await twiml(await post(client, greeting, said)))
    assert not list(await twiml(await replay(client, "status_completed")))
    cid = await customer(client)
    resolved = await client.post(f"/v1/customers/{cid}/resolve", json={}, headers=AGENT)
    assert resolved.status == 200
    skipped = [m for m in await history(client, cid)
               if m.get("metadata", {}).get("skipped") == "call ended"]  # fmt: skip
    assert skipped[0]["text"].startswith("No survey on voice: the call had ended")
    assert (await report_csat(client))["sent"] == 0
    # An agent cannot ask one on voice either, with no call on the line.
    asked = await client.post(f"/v1/customers/{cid}/surveys", json={"channel": "voice"},
                              headers=AGENT)  # fmt: skip
    assert asked.status == 409
