"""GET /metrics: the Prometheus text format, the conversation measures the product names
(first-response time, first-contact resolution, handoffs) per channel, service-wide."""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from omni import keys
from omni.app import create_app
from omni.metrics import (
    count_handoff,
    count_rate_limited,
    count_resolution,
    observe_first_response,
    render,
)
from omni.settings import Settings
from omni.state import SERVICES
from omni.store import Store
from tests.conftest import ADMIN, AGENT, BOT, ingest

_SAMPLE = re.compile(
    r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?P<labels>\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*\})?'
    r" (?P<value>[-+]?(?:\d+(?:\.\d*)?(?:e[-+]?\d+)?|Inf|NaN))$"
)
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Samples by name and labels, checking the exposition format on the way: every
    sample belongs to a family declared (HELP, then TYPE) before it, once."""
    assert text.endswith("\n")
    families: dict[str, str] = {}
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = defaultdict(dict)
    helped: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name = line.split()[2]
            assert name not in helped, f"HELP twice for {name}"
            helped.add(name)
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            assert name in helped and name not in families, line
            assert kind in ("counter", "gauge", "histogram"), line
            families[name] = kind
        else:
            match = _SAMPLE.match(line)
            assert match, f"not a sample line: {line!r}"
            name = match.group("name")
            family = re.sub(r"_(bucket|sum|count)$", "", name)
            assert name in families or families.get(family) == "histogram", line
            labels = tuple(sorted(_LABEL.findall(match.group("labels") or "")))
            assert labels not in samples[name], f"duplicate sample {line!r}"
            samples[name][labels] = float(match.group("value").replace("Inf", "inf"))
    return samples


async def scrape(client: TestClient) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    response = await client.get("/metrics", headers=AGENT)
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    return parse(await response.text())


def value(samples: dict[str, Any], name: str, **labels: str) -> float:
    return float(samples[name].get(tuple(sorted(labels.items())), 0.0))


async def test_metrics_need_an_agent_key(client: TestClient) -> None:
    assert (await client.get("/metrics")).status == 401
    refused = await client.get("/metrics", headers=BOT)
    assert refused.status == 403
    assert refused.content_type == "application/problem+json"
    for headers in (AGENT, ADMIN):
        assert (await client.get("/metrics", headers=headers)).status == 200


async def test_an_idle_service_exposes_its_families(client: TestClient) -> None:
    samples = await scrape(client)
    assert value(samples, "omni_live_listeners") == 0
    assert value(samples, "omni_live_listeners_dropped_total") == 0
    # Every handoff series is there at 0 before the first handoff, so an alert on its
    # rate has something to watch from the start.
    handoffs = samples["omni_handoffs_total"]
    assert ((("by", "timeout"), ("to", "queue")), 0.0) in handoffs.items()
    assert len(handoffs) == 7 and set(handoffs.values()) == {0.0}


async def test_the_delivery_backlog_says_whether_there_are_workers_enough(
    client: TestClient,
) -> None:
    samples = await scrape(client)
    names = ("omni_outbox_waiting", "omni_outbox_in_flight", "omni_outbox_delayed",
             "omni_outbox_dead")  # fmt: skip
    assert [value(samples, name) for name in names] == [0, 0, 0, 0]
    cid = (await ingest(client))["customer_id"]
    for n in range(3):
        await reply(client, cid, AGENT, f"reply {n}")
    samples = await scrape(client)
    assert [value(samples, name) for name in names] == [3, 0, 0, 0]  # no worker yet
    outbox = client.app[SERVICES].outbox
    queue = outbox.queue_of(cid)  # the customer's queue (of several, in a cluster)
    await outbox.ensure_group(queue)
    taken = await outbox.read("a-worker", 2, None, queue)  # taken, not finished
    samples = await scrape(client)
    assert [value(samples, name) for name in names] == [1, 2, 0, 0]
    await outbox.retry(taken[0], "upstream said 503", 2**40)
    await outbox.fail(taken[1], "web", "refused")
    samples = await scrape(client)
    assert [value(samples, name) for name in names] == [1, 0, 1, 1]


async def reply(client: TestClient, cid: str, headers: dict[str, str], text: str) -> None:
    response = await client.post(
        f"/v1/customers/{cid}/messages", json={"text": text}, headers=headers
    )
    assert response.status == 202


async def resolve(client: TestClient, cid: str) -> None:
    response = await client.post(f"/v1/customers/{cid}/resolve", json={}, headers=BOT)
    assert response.status == 200


async def test_first_response_and_resolution_per_channel_on_every_process(
    aiohttp_client: Any, settings: Settings, redis: Redis
) -> None:
    one = await aiohttp_client(create_app(settings))
    two = await aiohttp_client(create_app(settings))
    # On the web, the bot answers and resolves on its own: a first-contact resolution.
    web = (await ingest(one, channel="web", external_id="ana"))["customer_id"]
    await reply(one, web, BOT, "Here you go.")
    await reply(one, web, BOT, "Anything else?")  # not a first response
    await resolve(one, web)
    # On Instagram the bot asks for an agent, who answers and resolves it, in process two.
    ig = (await ingest(two, channel="instagram", external_id="ig-1"))["customer_id"]
    asked = await two.post(f"/v1/customers/{ig}/handoff", json={"to": "agent"}, headers=BOT)
    assert asked.status == 200
    taken = await two.post(f"/v1/customers/{ig}/handoff", json={"to": "agent"}, headers=AGENT)
    assert taken.status == 200
    await reply(two, ig, AGENT, "An agent here.")
    await resolve(two, ig)

    first, second = await scrape(one), await scrape(two)
    frt = "omni_first_response_seconds"
    for samples in (first, second):  # service-wide: both processes say the same
        assert value(samples, f"{frt}_count", channel="web", by="bot") == 1
        assert value(samples, f"{frt}_count", channel="instagram", by="agent") == 1
        assert value(samples, f"{frt}_count", channel="web", by="agent") == 0
        assert value(samples, "omni_conversations_resolved_total", channel="web", by="bot") == 1
        assert (
            value(samples, "omni_conversations_resolved_total", channel="instagram", by="agent")
            == 1
        )
        assert value(samples, "omni_handoffs_total", to="queue", by="bot") == 1
        assert value(samples, "omni_handoffs_total", to="agent", by="agent") == 1
    for channel, by in (("web", "bot"), ("instagram", "agent")):
        buckets = sorted(
            (float(dict(labels)["le"]), count)
            for labels, count in first[f"{frt}_bucket"].items()
            if dict(labels)["channel"] == channel and dict(labels)["by"] == by
        )
        counts = [count for _, count in buckets]
        assert counts == sorted(counts), "histogram buckets are cumulative"
        assert buckets[-1] == (float("inf"), 1)
        assert value(first, f"{frt}_sum", channel=channel, by=by) >= 0


async def test_label_values_are_escaped(client: TestClient, redis: Redis) -> None:
    parts = client.app[SERVICES].live.parts
    await count_handoff(redis, "cus_odd", parts, 'odd "to"\\', "bot")
    samples = await scrape(client)
    assert value(samples, "omni_handoffs_total", to='odd \\"to\\"\\\\', by="bot") == 1


async def _count(redis: Redis, parts: int, customers: list[str]) -> None:
    store = Store(redis, stats_parts=parts)
    for n, cid in enumerate(customers):
        await observe_first_response(redis, cid, parts, "web", "bot", 2.5 * n)
        await count_resolution(redis, cid, parts, "instagram", "agent")
        await count_handoff(redis, cid, parts, "agent", "bot")
        await count_rate_limited(redis, f"digest-{n}", parts, "identity")
        await store.parts.count(cid, "q_repeated")
        await store.parts.count(cid, "q_answered", 2)


async def test_counts_split_over_parts_add_up_to_the_same_exposition(redis: Redis) -> None:
    """In a cluster the counters are split by customer over `[redis] shards` parts (keys,
    so four of them here on one server too); /metrics adds them up: the same text as
    one hash holding the same counts."""
    customers = [f"cus_metrics{n:03d}" for n in range(12)]
    assert len({keys.shard_of(cid, 4) for cid in customers}) == 4
    await _count(redis, 1, customers)
    await _count(redis, 4, customers)
    for part in range(4):
        assert await redis.hlen(keys.metrics(part, 4)) > 0
        assert await redis.hlen(keys.stats(part, 4)) > 0
    one = await render(redis, [], 1)
    assert await render(redis, [], 4) == one
    assert 'omni_stats_total{name="q_answered"} 24' in one
    assert 'omni_conversations_resolved_total{channel="instagram",by="agent"} 12' in one
