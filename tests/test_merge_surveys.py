"""Merges and surveys: the absorbed customer's open survey and last-NPS date go to the
survivor (so the customer's answer still counts, and NPS is not asked twice in a period),
and undoing the merge gives each record its own back; both finish when cut short after
any step."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from omni import keys, merge, unmerge
from omni.app import create_app
from omni.merge import Merge
from omni.store import Store
from omni.unmerge import Unmerge
from tests.conftest import AGENT
from tests.test_surveys import (
    Chat,
    Sms,
    all_channels,
    answer_and_resolve,
    customer_id,
    survey_answers,
    timeline,
)


@pytest.fixture
async def app(aiohttp_client: Any, redis_url: str, redis: Redis) -> TestClient:
    client: TestClient = await aiohttp_client(create_app(all_channels(redis_url)))
    return client


async def nps(client: TestClient, cid: str) -> int:
    response = await client.post(f"/v1/customers/{cid}/surveys", json={"kind": "nps"},
                                 headers=AGENT)  # fmt: skip
    return response.status


async def open_survey(redis: Redis, cid: str) -> str | None:
    found = await redis.hget(keys.survey(cid), "id")
    return found.decode() if isinstance(found, bytes) else None


async def asked(client: TestClient, redis: Redis, number: str) -> tuple[str, str, str, Sms]:
    """An SMS customer who gave an NPS and then was asked CSAT (still open), and a web
    visitor who is the same person: (web customer, SMS customer, the open survey, SMS)."""
    sms = Sms(client, number)
    await sms.say("hello")
    texter = await customer_id(client, "sms", sms.external_id)
    assert await nps(client, texter) == 201
    await sms.say("9")
    await answer_and_resolve(client, texter, "sms")
    web = await Chat(client, "web").open()
    await web.say("hi, it is me on the website")
    visitor = await customer_id(client, "web", web.external_id)
    survey = await open_survey(redis, texter)
    assert survey is not None
    return visitor, texter, survey, sms


async def merged(client: TestClient, survivor: str, source: str) -> str:
    response = await client.post(f"/v1/customers/{survivor}/merge", json={"source": source},
                                 headers=AGENT)  # fmt: skip
    assert response.status == 200, await response.text()
    merge_id: str = (await response.json())["merge_id"]
    return merge_id


async def test_the_absorbed_customers_open_survey_and_nps_date_go_to_the_survivor(
    app: TestClient, redis: Redis
) -> None:
    visitor, texter, survey, sms = await asked(app, redis, "+14155550166")
    # The web visitor gave an NPS long ago (outside the period) and has no open survey.
    await redis.hset(keys.customer(visitor), "nps_at", 1)  # type: ignore[misc]
    await merged(app, visitor, texter)
    assert await open_survey(redis, visitor) == survey
    assert await open_survey(redis, texter) is None
    # NPS was given on SMS within the period: the person is not asked again.
    assert await nps(app, visitor) == 409
    # The answer to the survey asked on SMS, typed on SMS, counts on the survivor.
    await sms.say("4")
    [csat, _] = survey_answers(await timeline(app, visitor))
    assert (csat["survey_id"], csat["survey_kind"], csat["score"]) == (survey, "csat", 4)


async def test_undoing_the_merge_gives_each_record_its_own_survey_and_nps_date(
    app: TestClient, redis: Redis
) -> None:
    visitor, texter, survey, sms = await asked(app, redis, "+14155550167")
    merge_id = await merged(app, visitor, texter)
    assert await open_survey(redis, visitor) == survey
    undone = await app.post(f"/v1/merges/{merge_id}/undo", json={}, headers=AGENT)
    assert undone.status == 200, await undone.text()
    assert await open_survey(redis, texter) == survey
    assert await open_survey(redis, visitor) is None
    assert await nps(app, texter) == 409  # its own NPS, given within the period
    assert await nps(app, visitor) == 201  # never asked NPS itself
    await sms.say("5")
    [csat] = [a for a in survey_answers(await timeline(app, texter)) if a["survey_kind"] == "csat"]
    assert csat["score"] == 5


async def test_a_survey_answered_on_the_survivor_is_not_reopened_by_the_undo(
    app: TestClient, redis: Redis
) -> None:
    visitor, texter, survey, sms = await asked(app, redis, "+14155550168")
    merge_id = await merged(app, visitor, texter)
    await sms.say("3")
    undone = await app.post(f"/v1/merges/{merge_id}/undo", json={}, headers=AGENT)
    assert undone.status == 200, await undone.text()
    assert await open_survey(redis, texter) is None
    assert await open_survey(redis, visitor) is None
    await sms.say("2")  # no open survey: a plain message
    answers = survey_answers(await timeline(app, texter)) + survey_answers(
        await timeline(app, visitor)
    )
    csat = [(a["survey_id"], a["score"]) for a in answers if a["survey_kind"] == "csat"]
    assert csat == [(survey, 3)]


async def test_a_merge_and_an_undo_cut_after_any_step_carry_the_survey_once(
    app: TestClient, redis: Redis
) -> None:
    store = Store(redis)
    for cut in range(1, len(merge.STEPS)):
        visitor, texter, survey, _ = await asked(app, redis, f"+1415556{cut:04d}")
        run = Merge(store=store, survivor=visitor, source=texter)
        for step in merge.STEPS[:cut]:  # the process dies after `cut` steps
            await step(run)
        done = await merge.merge_customers(store, visitor, texter)  # run again: finished
        assert await open_survey(redis, visitor) == survey, cut
        assert await open_survey(redis, texter) is None, cut
    for cut in range(1, len(unmerge.STEPS)):
        visitor, texter, survey, _ = await asked(app, redis, f"+1415557{cut:04d}")
        done = await merge.merge_customers(store, visitor, texter)
        undo = Unmerge(store=store, merge_id=done.merge_id)
        for step in unmerge.STEPS[:cut]:  # the process dies after `cut` steps
            await step(undo)
        await unmerge.undo_merge(store, done.merge_id)  # run again: finished
        assert await open_survey(redis, texter) == survey, cut
        assert await open_survey(redis, visitor) is None, cut
