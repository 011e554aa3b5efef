"""The bench's pieces on a tiny scale: its pre-built requests are ones omni and the
baseline answer with 2xx, its seeding stores what an ingest stores, and its results
become the table and the JSON file. Nothing here measures time (and no wrk is needed).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from bench import baseline, profile, results, traffic, wrk
from bench.seed import Seeder
from omni.app import create_app
from omni.model import InboundMessage
from omni.store import Store
from tests.conftest import make_settings

CUSTOMERS = 3
SEEDED = 3


async def _send(client: TestClient, request: bytes) -> tuple[int, bytes]:
    """One pre-built request over its own connection, as wrk sends it."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    try:
        writer.write(request)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
        body = await reader.readexactly(int(headers.get("Content-Length", "0")))
        return int(lines[0].split()[1]), body
    finally:
        writer.close()
        await writer.wait_closed()


async def _customers(redis: Redis) -> tuple[list[str], list[str], list[str]]:
    senders = [traffic.sender_id(i) for i in range(CUSTOMERS)]
    web = [traffic.web_id(i) for i in range(CUSTOMERS)]
    cids = await Seeder(redis).customers(
        [("instagram", s) for s in senders],
        SEEDED,
        tag="seed",
        text=traffic.TEXT,
        also=[("web", w) for w in web],
    )
    return cids, senders, web


def _scenarios(cids: list[str], senders: list[str], web: list[str]) -> dict[str, Any]:
    return {
        "instagram": traffic.instagram_ingest(senders, "t", 2 * CUSTOMERS),
        "messages": traffic.messages_ingest(web, "t", 2 * CUSTOMERS),
        "context": traffic.context_reads(cids),
        "history": traffic.history_reads(cids),
        "mixed": traffic.mixed(cids, web, "m", 2 * traffic.INGEST_EVERY),
    }


async def test_every_prebuilt_request_is_one_omni_accepts(
    aiohttp_client: Any, redis_url: str, redis: Redis, tmp_path: Path
) -> None:
    settings = make_settings(
        redis_url,
        auth={"api_keys": [{"key": traffic.API_KEY, "role": "bot", "name": "bench"}]},
        instagram={"app_secret": traffic.APP_SECRET, "verify_token": traffic.VERIFY_TOKEN},
    )
    client = await aiohttp_client(create_app(settings))
    cids, senders, web = await _customers(redis)
    for name, requests in _scenarios(cids, senders, web).items():
        built = list(requests)
        path = tmp_path / f"{name}.req"
        assert traffic.write_requests(path, built) == len(built)
        assert traffic.read_requests(path) == built
        for request in built:
            status, body = await _send(client, request)
            assert status in (200, 201), (name, status, body)
    # Two webhooks and two posts per customer, and the mixed load's two ingests went to
    # the first two customers: every ingest was a new message on a seeded customer.
    store = Store(redis)
    for index, cid in enumerate(cids):
        page = await store.history(cid, limit=50, before=None, channel=None)
        assert len(page.messages) == SEEDED + 4 + (index < 2)
        assert page.messages[-1].channel_message_id == "seed-0"


@pytest.mark.single_server(
    "the benchmark's baseline (bench/baseline) is a single-server client; it runs on a "
    "cluster with the cluster benchmark (issue 14's bench wave), not here yet"
)
async def test_the_baseline_answers_the_same_requests(
    aiohttp_client: Any, redis_url: str, redis: Redis
) -> None:
    client: TestClient = await aiohttp_client(baseline.create_app(redis_url))
    cids, senders, web = await _customers(redis)
    blob = traffic.message_post("seed", "seed").partition(b"\r\n\r\n")[2]
    await baseline.seed(redis, cids, baseline.RECENT + 1, blob)
    for name, requests in _scenarios(cids, senders, web).items():
        for request in requests:
            status, body = await _send(client, request)
            assert status in (200, 201), (name, status, body)
            data = json.loads(body)
            if "recent" in data:
                assert len(data["recent"]) == baseline.RECENT
                assert data["recent"][0]["text"] == traffic.TEXT
    forged = traffic.instagram_webhook(senders[0], "mid", secret="not-the-app-secret")
    assert (await _send(client, forged))[0] == 401


async def test_seeded_messages_are_what_an_ingest_stores(redis: Redis) -> None:
    store = Store(redis)
    real = (
        await store.ingest(
            InboundMessage(channel="web", external_id="v", channel_message_id="real", text="hi")
        )
    ).message
    seeder = Seeder(redis)
    added = await seeder.messages(real.customer_id, "web", "v", 5, tag="seed", text=traffic.TEXT)
    assert added == 5
    page = await store.history(real.customer_id, limit=10, before=None, channel=None)
    ids = [m.channel_message_id for m in page.messages]
    assert ids == [f"seed-{n}" for n in reversed(range(5))] + ["real"]
    newest = page.messages[0]
    assert newest.text == traffic.TEXT
    assert (newest.author, newest.conversation_id) == (real.author, real.conversation_id)
    context = await store.context(real.customer_id)
    assert context.recent_messages[-1].channel_message_id == "seed-4"


def test_results_become_the_table_and_the_json_file(tmp_path: Path) -> None:
    line = (
        'BENCH_RESULT {"requests":1000,"duration_us":2000000,"sent":1010,"wrapped":0,'
        '"p50_us":1500,"p90_us":2500,"p99_us":4000,"p999_us":7000,"max_us":9000,'
        '"errors":{"connect":0,"read":0,"write":0,"status":2,"timeout":0}}'
    )
    run = wrk.parse(f"Running 2s test\n{line}\n")
    assert (run.rps, run.p99_ms, run.non_2xx, run.wrapped) == (500.0, 4.0, 2, False)
    base = wrk.parse(line.replace('"requests":1000', '"requests":2000'))
    slow = dataclasses.replace(run, requests=800, others={"valkey-aof-rewrite 42": 0.3})
    omni = results.Summary.of([run, slow, run])
    ceiling = results.Summary.of([base])
    row = results.scenario_result(omni, ceiling, results.Target("ingest baseline", 0.6, 2.0))
    assert row["ratio"] == 0.5
    assert row["met"] is False
    assert row["p99_ratio"] == 1.0
    assert row["percentiles_ms"] == {"p50": 1.5, "p90": 2.5, "p99": 4.0, "p99.9": 7.0}
    assert (row["spread"], row["baseline_spread"]) == (0.2, 0.0)  # (500 - 400) / 500 rps
    assert row["other_processes"] == {"valkey-aof-rewrite 42": 0.1}
    out = {
        "messages_ingest": row,
        "growth_ratio": {"ingest": 1.02, "context": 1.5},
        "growth": {"ingest": {"short_rps": 10.0, "long_rps": 9.8}},
        "bytes_per_message": 250.0,
    }
    path = tmp_path / "results" / "latest.json"
    results.write(path, out)
    written = json.loads(path.read_text())
    wanted = {"rps", "p50_ms", "p99_ms", "baseline_rps", "baseline_p99_ms", "ratio"}
    assert wanted <= set(written["messages_ingest"])
    assert written["growth_ratio"] == {"ingest": 1.02, "context": 1.5}
    table = results.table(written)
    assert "messages_ingest" in table and "MISS" in table
    assert "p50/90/99/99.9 1.5/2.5/4.0/7.0 ms, rounds spread 20%" in table
    assert "other: valkey-aof-rewrite 42 0.10" in table
    assert "omni answered errors in messages_ingest" in table


def test_a_profile_is_summed_by_function_and_library() -> None:
    collapsed = "\n".join(
        [
            "main (omni/cli.py:1);read (redis/asyncio/connection.py:9) 30",
            "main (omni/cli.py:1);iso (omni/clock.py:13) 10",
        ]
    )
    report = profile.summarize(collapsed)
    assert "75.0%  redis-py" in report
    assert "25.0%  iso (omni/clock.py:13)" in report
    assert "100.0%  main (omni/cli.py:1)" in report
