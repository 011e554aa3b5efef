"""Who answers the customer: a bot asks for an agent, an agent takes over and hands back,
the bot is told instead of asked while an agent holds the conversation, an agent who does
not answer in time loses it to the queue, and each conversation's first response and
resolution are recorded."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from omni import keys
from omni.app import create_app
from omni.errors import ConfigError
from omni.handoff import Handoffs, Holder, holder
from omni.live import Live
from omni.model import Author
from omni.settings import HandoffSettings, Settings
from omni.state import SERVICES, STORE
from tests.conftest import ADMIN, AGENT, BOT, ingest, make_settings, snapshot
from tests.test_bots import SECRET, BotReceiver, ServerFactory, serve
from tests.test_worker import until

FAST = {"in_process_worker": True, "block_ms": 50, "base_delay_ms": 5, "max_delay_ms": 20}
UNKNOWN = "cus_01JAAAAAAAAAAAAAAAAAAAAAAA"
# The background sweep waits this long between looks: the tests that sweep by hand do
# not want it to beat them to it.
NEVER = {"reply_timeout_s": 0.05, "sweep_interval_s": 3600}


async def with_bot(
    aiohttp_client: Any, aiohttp_server: ServerFactory, redis_url: str, **handoff: Any
) -> tuple[TestClient, BotReceiver]:
    receiver = BotReceiver()
    receiver.default = (200, {"replies": [{"text": "The bot answers."}]})
    settings = make_settings(
        redis_url,
        bots={"web": {"url": await serve(aiohttp_server, receiver), "secret": SECRET}},
        outbox=FAST,
        handoff=handoff or NEVER,
    )
    return await aiohttp_client(create_app(settings)), receiver


async def told(receiver: BotReceiver, count: int) -> list[dict[str, Any]]:
    """The first `count` webhooks the bot took, once it has taken them."""

    async def arrived() -> bool:
        return len(receiver.delivered) >= count

    await until(arrived)
    return list(receiver.delivered.values())[:count]


async def history(client: TestClient, cid: str) -> list[dict[str, Any]]:
    response = await client.get(f"/v1/customers/{cid}/history", headers=AGENT)
    assert response.status == 200
    messages: list[dict[str, Any]] = (await response.json())["messages"]
    return messages


async def conversation(client: TestClient, cid: str) -> dict[str, Any]:
    response = await client.get(f"/v1/customers/{cid}/context", headers=BOT)
    assert response.status == 200
    found: dict[str, Any] = (await response.json())["conversation"]
    return found


async def hand(
    client: TestClient, cid: str, headers: dict[str, str], **body: Any
) -> dict[str, Any]:
    response = await client.post(f"/v1/customers/{cid}/handoff", json=body, headers=headers)
    assert response.status == 200, await response.text()
    answer: dict[str, Any] = await response.json()
    return answer


async def settled(client: TestClient, cid: str, count: int) -> None:
    """Every one of the customer's deliveries (webhooks and replies) is over."""

    async def done() -> bool:
        response = await client.get(f"/v1/customers/{cid}/deliveries", headers=AGENT)
        items = (await response.json())["items"]
        return len(items) >= count and all(i["state"] in ("delivered", "failed") for i in items)

    await until(done)


# -- the bot asks for an agent ---------------------------------------------------------------


async def test_a_bot_asks_for_an_agent_and_is_told_not_asked_from_then_on(
    aiohttp_client: Any, aiohttp_server: ServerFactory, redis_url: str, redis: Redis
) -> None:
    client, bot = await with_bot(aiohttp_client, aiohttp_server, redis_url)
    first = await ingest(client, text="hi")
    cid = first["customer_id"]
    (hello,) = await told(bot, 1)
    assert hello["type"] == "message.created"

    waiting = await hand(client, cid, BOT, to="agent", reason="the customer asked for a human")
    assert waiting["status"] == "pending"
    assert waiting["assignee"]["kind"] == "agent"
    assert "id" not in waiting["assignee"]
    assert waiting["assignee"]["reason"] == "the customer asked for a human"
    assert (await conversation(client, cid))["assignee"] == waiting["assignee"]

    second = await ingest(client, channel_message_id="m-2", text="a person please")
    _, handoff = await told(bot, 2)
    assert handoff["type"] == "handoff"
    assert handoff["message"]["id"] == second["id"]
    assert handoff["handoff"] == {"since": waiting["assignee"]["since"],
                                  "reason": "the customer asked for a human"}  # fmt: skip
    assert handoff["context"]["conversation"]["status"] == "pending"
    # The bot answered the handoff event with a reply: it is not sent over the agent.
    await settled(client, cid, 3)
    texts = [m["text"] for m in await history(client, cid)]
    assert texts == ["a person please", "The bot answers.", "hi"]


async def test_a_bot_can_ask_for_an_agent_in_its_answer(
    aiohttp_client: Any, aiohttp_server: ServerFactory, redis_url: str, redis: Redis
) -> None:
    client, bot = await with_bot(aiohttp_client, aiohttp_server, redis_url)
    bot.answers = [(200, {"replies": [{"text": "Let me find you a person."}], "handoff": True})]
    cid = (await ingest(client, text="I want to talk to a human"))["customer_id"]

    async def queued() -> bool:
        return (await conversation(client, cid))["status"] == "pending"

    await until(queued)
    waiting = await conversation(client, cid)
    assert waiting["assignee"]["reason"] == "the bot asked for an agent"
    await settled(client, cid, 2)
    assert (await history(client, cid))[0]["text"] == "Let me find you a person."
    await ingest(client, channel_message_id="m-2", text="hello?")
    _, second = await told(bot, 2)
    assert second["type"] == "handoff"


async def test_an_agent_takes_over_and_hands_back(
    aiohttp_client: Any, aiohttp_server: ServerFactory, redis_url: str, redis: Redis
) -> None:
    client, bot = await with_bot(aiohttp_client, aiohttp_server, redis_url)
    cid = (await ingest(client, text="hi"))["customer_id"]
    await told(bot, 1)

    held = await hand(client, cid, AGENT, to="agent")
    assert held["status"] == "open"
    assert held["assignee"]["kind"] == "agent"
    assert held["assignee"]["id"] == "test agent"  # the agent's own key, by default
    assert held["assignee"]["reply_due"] > held["assignee"]["since"]

    await ingest(client, channel_message_id="m-2", text="are you a person?")
    _, second = await told(bot, 2)
    assert second["type"] == "handoff"
    assert second["handoff"]["agent_id"] == "test agent"

    # Another agent can be named; an admin's key is an agent's too.
    other = await hand(client, cid, ADMIN, to="agent", agent_id="ana", reason="billing")
    assert other["assignee"]["id"] == "ana"
    assert other["assignee"]["reason"] == "billing"

    back = await hand(client, cid, AGENT, to="bot")
    assert back["assignee"] == {"kind": "bot", "since": back["assignee"]["since"]}
    assert back["status"] == "open"
    await ingest(client, channel_message_id="m-3", text="thanks")
    *_, third = await told(bot, 3)
    assert third["type"] == "message.created"
    assert "handoff" not in third


async def test_refused_handoffs_change_nothing(client: TestClient, redis: Redis) -> None:
    cid = (await ingest(client))["customer_id"]
    before = await snapshot(redis)
    cases = [
        (BOT, {"to": "bot"}, 403),  # a bot asks for an agent; it does not take one back
        (AGENT, {"to": "bot", "agent_id": "ana"}, 422),
        (AGENT, {"to": "nobody"}, 422),
        (AGENT, {"to": "agent", "agent_id": ""}, 422),
        (AGENT, {"to": "agent", "colour": "red"}, 422),
        (AGENT, {}, 422),
    ]
    for headers, body, status in cases:
        response = await client.post(f"/v1/customers/{cid}/handoff", json=body, headers=headers)
        assert response.status == status, (body, await response.text())
        assert response.content_type == "application/problem+json"
    garbled = await client.post(
        f"/v1/customers/{cid}/handoff",
        data=b'{"to": ',
        headers={**AGENT, "Content-Type": "application/json"},
    )
    assert garbled.status == 400
    for path in (f"/v1/customers/{UNKNOWN}/handoff", "/v1/customers/nobody/handoff"):
        missing = await client.post(path, json={"to": "agent"}, headers=AGENT)
        assert missing.status == 404
    assert await snapshot(redis) == before


# -- the agent's reply is due ------------------------------------------------------------------


async def overdue(client: TestClient, cid: str) -> None:
    """Wait until the agent's reply is past due (the clock, not a sleep, says so)."""
    due = (await conversation(client, cid))["assignee"]["reply_due"]
    due_s = datetime.fromisoformat(due.replace("Z", "+00:00")).timestamp()

    async def passed() -> bool:
        return time.time() > due_s

    await until(passed)


async def test_an_agent_who_does_not_answer_in_time_loses_the_conversation_to_the_queue(
    aiohttp_client: Any, redis_url: str, redis: Redis
) -> None:
    client = await aiohttp_client(create_app(make_settings(redis_url, handoff=NEVER)))
    cid = (await ingest(client, text="hello?"))["customer_id"]
    await hand(client, cid, AGENT, to="agent")
    await overdue(client, cid)

    assert await client.app[SERVICES].handoffs.sweep() == 1
    after = await conversation(client, cid)
    assert after["status"] == "pending"  # shows as waiting
    assert after["assignee"]["kind"] == "agent"
    assert "id" not in after["assignee"]
    assert after["assignee"]["reason"] == "no agent reply within 0.05 s"
    # Swept once, however many processes look.
    assert await client.app[SERVICES].handoffs.sweep() == 0


async def test_an_agent_who_answers_keeps_it_until_the_customer_waits_again(
    aiohttp_client: Any, redis_url: str, redis: Redis
) -> None:
    client = await aiohttp_client(create_app(make_settings(redis_url, handoff=NEVER)))
    cid = (await ingest(client, text="hello?"))["customer_id"]
    await hand(client, cid, AGENT, to="agent")
    reply = await client.post(f"/v1/customers/{cid}/messages", json={"text": "Hi!"}, headers=AGENT)
    assert reply.status == 202
    answered = await conversation(client, cid)
    assert "reply_due" not in answered["assignee"]
    sweeps = client.app[SERVICES].handoffs
    assert await sweeps.sweep() == 0
    assert (await conversation(client, cid))["assignee"]["id"] == "test agent"

    # The customer writes again: a reply is owed again, and this time it does not come.
    await ingest(client, channel_message_id="m-2", text="still there?")
    assert "reply_due" in (await conversation(client, cid))["assignee"]
    await overdue(client, cid)
    assert await sweeps.sweep() == 1
    assert (await conversation(client, cid))["status"] == "pending"


async def test_every_omni_serve_sweeps_by_itself(
    aiohttp_client: Any, redis_url: str, redis: Redis
) -> None:
    handoff = {"reply_timeout_s": 0.05, "sweep_interval_s": 0.02}
    client = await aiohttp_client(create_app(make_settings(redis_url, handoff=handoff)))
    cid = (await ingest(client))["customer_id"]
    await hand(client, cid, AGENT, to="agent")

    async def queued() -> bool:
        return (await conversation(client, cid))["status"] == "pending"

    await until(queued)


# -- what the phone channel asks ---------------------------------------------------------------


async def test_holder_says_who_on_the_agent_side_holds_the_conversation(
    client: TestClient, redis: Redis
) -> None:
    cid = (await ingest(client))["customer_id"]
    store = client.app[STORE]
    assert await holder(store, cid) is None  # the bot answers: no transfer
    await hand(client, cid, BOT, to="agent", reason="asked for a person")
    waiting = await holder(store, cid)
    assert waiting == Holder(since=waiting.since if waiting else None, reason="asked for a person")
    assert waiting is not None and waiting.waiting
    await hand(client, cid, AGENT, to="agent")
    taken = await holder(redis, cid)  # a Redis client will do as well as the store
    assert taken is not None and taken.agent_id == "test agent" and not taken.waiting
    await hand(client, cid, AGENT, to="bot")
    assert await holder(store, cid) is None
    assert await holder(store, UNKNOWN) is None


# -- first response and resolution ---------------------------------------------------------------


async def test_first_response_and_resolution_are_recorded_per_conversation(
    client: TestClient, redis: Redis
) -> None:
    cid = (await ingest(client, text="where is order 4417?"))["customer_id"]
    fresh = await conversation(client, cid)
    assert fresh["first_response_at"] is None and fresh["resolved_by"] is None

    for text in ("It ships today.", "Anything else?"):
        sent = await client.post(f"/v1/customers/{cid}/messages", json={"text": text}, headers=BOT)
        assert sent.status == 202
    answered = await conversation(client, cid)
    assert answered["first_response_by"] == "bot"
    assert answered["first_response_at"] >= answered["started_at"]

    resolved = await client.post(f"/v1/customers/{cid}/resolve", json={}, headers=BOT)
    assert resolved.status == 200
    body = await resolved.json()
    assert body["status"] == "resolved"
    assert body["resolved_by"] == "bot"  # no agent took part
    again = await client.post(f"/v1/customers/{cid}/resolve", json={}, headers=BOT)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert (await again.json())["resolved_at"] == body["resolved_at"]

    # The customer comes back: a new conversation, measured afresh.
    await ingest(client, channel_message_id="m-2", text="one more thing")
    second = await conversation(client, cid)
    assert second["id"] != body["id"]
    assert second["status"] == "open"
    assert second["first_response_at"] is None and second["resolved_at"] is None

    await hand(client, cid, AGENT, to="agent")
    await client.post(f"/v1/customers/{cid}/messages", json={"text": "Agent here."}, headers=AGENT)
    await hand(client, cid, AGENT, to="bot")
    closed = await client.post(
        f"/v1/customers/{cid}/resolve", json={"reason": "answered"}, headers=BOT
    )
    done = await closed.json()
    assert done["first_response_by"] == "agent"
    assert done["resolved_by"] == "agent"  # an agent took part, whoever closed it


async def test_resolve_refuses_what_it_cannot_take(client: TestClient, redis: Redis) -> None:
    cid = (await ingest(client))["customer_id"]
    before = await snapshot(redis)
    bad = await client.post(f"/v1/customers/{cid}/resolve", json={"why": 1}, headers=BOT)
    assert bad.status == 422
    missing = await client.post(f"/v1/customers/{UNKNOWN}/resolve", json={}, headers=BOT)
    assert missing.status == 404
    assert await snapshot(redis) == before


@pytest.mark.parametrize(
    ("section", "named"),
    [
        ({"reply_timeout_s": 0}, "handoff.reply_timeout_s"),
        ({"reply_timeout_s": "soon"}, "handoff.reply_timeout_s"),
        ({"sweep_interval_s": 0}, "handoff.sweep_interval_s"),
    ],
)
def test_bad_handoff_settings_name_the_setting(section: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        Settings.from_mapping({"handoff": section})


async def test_a_reply_due_in_any_part_of_the_due_index_is_swept(
    aiohttp_client: Any, redis_url: str, redis: Redis
) -> None:
    """The due-index in four parts (a cluster's `[redis] shards`; the parts are keys, so
    on one server too): each customer's timer in its own part, one sweep finds all."""
    client = await aiohttp_client(create_app(make_settings(redis_url, handoff=NEVER)))
    handoffs = Handoffs(
        redis, Live(redis, shards=4, parts=4), HandoffSettings(**NEVER), client.app[STORE].inbox
    )
    by_part: dict[int, str] = {}
    for n in range(64):
        cid = (await ingest(client, external_id=f"v-{n}", channel_message_id=f"m-{n}"))[
            "customer_id"
        ]
        by_part.setdefault(keys.shard_of(cid, 4), cid)
        if len(by_part) == 4:
            break
    assert len(by_part) == 4
    agent = Author(kind="agent", id="agent-7", name="Agent 7")
    for cid in by_part.values():
        await handoffs.assign(cid, "agent", agent_id="agent-7", reason=None, by=agent)
    for part, cid in by_part.items():
        assert await redis.zrange(keys.handoff_due(part, 4), 0, -1) == [cid.encode()]
    for cid in by_part.values():
        await overdue(client, cid)

    assert await handoffs.sweep() == 4
    for cid in by_part.values():
        assert (await conversation(client, cid))["status"] == "pending"
    for part in range(4):
        assert await redis.zcard(keys.handoff_due(part, 4)) == 0
    assert await handoffs.sweep() == 0
