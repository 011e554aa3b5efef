"""The bench's pieces on a tiny scale: its pre-built requests are ones omni and the
baseline answer with 2xx, its seeding stores what an ingest stores, and its results
become the table and the JSON file. Nothing here measures time (and no wrk is needed).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from typing import Any, cast

import pytest
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from bench import baseline, cluster, profile, redis_work, results, traffic, trust, wrk
from bench.run import MAX_IN_FLIGHT, Bench, Config, Scenario, _parser, omni_config
from bench.seed import Seeder
from omni.app import create_app
from omni.model import InboundMessage
from omni.redis_server import EmbeddedRedis
from omni.settings import Settings
from omni.store import Store
from tests.conftest import CLUSTER, make_settings, primaries

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
        page = await store.timeline.history(cid, limit=50, before=None, channel=None)
        assert len(page.messages) == SEEDED + 4 + (index < 2)
        assert page.messages[-1].channel_message_id == "seed-0"


async def test_the_baseline_answers_the_same_requests(
    aiohttp_client: Any, redis_url: str, redis: Redis
) -> None:
    # On the cluster run, with redis-py's cluster client (the cluster section's baseline).
    client: TestClient = await aiohttp_client(baseline.create_app(redis_url, cluster=CLUSTER))
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
        await store.timeline.ingest(
            InboundMessage(channel="web", external_id="v", channel_message_id="real", text="hi")
        )
    ).message
    seeder = Seeder(redis)
    added = await seeder.messages(real.customer_id, "web", "v", 5, tag="seed", text=traffic.TEXT)
    assert added == 5
    page = await store.timeline.history(real.customer_id, limit=10, before=None, channel=None)
    ids = [m.channel_message_id for m in page.messages]
    assert ids == [f"seed-{n}" for n in reversed(range(5))] + ["real"]
    newest = page.messages[0]
    assert newest.text == traffic.TEXT
    assert (newest.author, newest.conversation_id) == (real.author, real.conversation_id)
    context = await store.contexts.read(real.customer_id)
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


def _run(requests: int, p99_us: int = 4000) -> wrk.Run:
    return wrk.Run(requests=requests, duration_s=1.0, p50_ms=1.0, p90_ms=2.0,
                   p99_ms=p99_us / 1000, p999_ms=9.0, max_ms=9.0, errors=0, non_2xx=0,
                   wrapped=False)  # fmt: skip


def test_the_fsync_section_gives_always_over_everysec_and_the_table_says_it(
    tmp_path: Path,
) -> None:
    section = trust.fsync_result(
        {
            "messages_ingest": ([_run(600, 9000), _run(400, 8000)], [_run(1000), _run(1000)]),
            "instagram_ingest": ([_run(300, 12000)], [_run(600, 5000)]),
        }
    )
    assert section["scenarios"]["messages_ingest"]["rps"] == 500.0  # median of 600, 400
    assert section["scenarios"]["messages_ingest"]["ratio"] == 0.5
    assert section["scenarios"]["instagram_ingest"]["p99_ms"] == 12.0
    # The ingest as a whole: (500 + 300) / (1000 + 600) rps, the worst p99 of each side.
    assert (section["rps"], section["everysec_rps"], section["ratio"]) == (800.0, 1600.0, 0.5)
    assert (section["p99_ms"], section["everysec_p99_ms"]) == (12.0, 5.0)
    path = tmp_path / "latest.json"
    results.write(path, {"fsync_always": section})
    table = "\n".join(trust.table(json.loads(path.read_text())))
    assert "instagram_ingest         600 ->    300 rps  x0.50  p99 5.0 -> 12.0 ms" in table
    assert "always ÷ everysec" in table and "x0.50" in table


async def test_fsync_is_switched_on_a_running_valkey(redis: Redis, redis_url: str) -> None:
    before = (await redis.config_get("appendfsync"))["appendfsync"]
    try:
        await trust.set_fsync(redis_url, "always")
        assert (await redis.config_get("appendfsync"))["appendfsync"] == "always"
        await trust.set_fsync(redis_url, "everysec")
        assert (await redis.config_get("appendfsync"))["appendfsync"] == "everysec"
    finally:
        await redis.config_set("appendfsync", before)


def test_the_rss_reader_sees_a_process_grow() -> None:
    """A child that holds 64 MB more after its first line than before it: the reader
    reads the child's VmRSS (not ours) and sees the growth."""
    with subprocess.Popen(
        [sys.executable, "-c",
         "import sys; print(flush=True); sys.stdin.readline(); "
         "b = bytearray(64 << 20); print(flush=True); sys.stdin.readline()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    ) as child:  # fmt: skip
        assert child.stdin is not None and child.stdout is not None
        try:
            child.stdout.readline()
            small = trust.rss_mb(child.pid)
            child.stdin.write("\n")
            child.stdin.flush()
            child.stdout.readline()
            big = trust.rss_mb(child.pid)
            assert 0 < small < big
            assert big - small >= 60
            assert trust.rss_mb(child.pid, "VmHWM") >= big
        finally:
            child.kill()


class _PacedBench:
    """Stands in for bench.run.Bench's load: each wrk run answers 700 requests."""

    def __init__(self, answered: int = 700) -> None:
        self.starts: list[int] = []
        self.answered = answered

    def load(
        self, url: str, requests: Path, seconds: float | None = None, start: int = 0
    ) -> wrk.Run:
        self.starts.append(start)
        return _run(self.answered)


def test_the_soak_sends_its_requests_in_runs_that_go_on_where_the_last_stopped() -> None:
    bench = _PacedBench()
    sent = trust.send(bench, "http://x", Path("soak.req"), 1000, 500.0, trust.Paced())  # type: ignore[arg-type]
    assert (sent.requests, sent.runs, bench.starts) == (1400, 2, [0, 700])
    sent = trust.send(bench, "http://x", Path("soak.req"), 100, 500.0, sent)  # type: ignore[arg-type]
    assert (sent.requests, bench.starts[-1]) == (2100, 1400)


def test_a_soak_that_gets_no_answers_stops_saying_so() -> None:
    bench = _PacedBench(answered=0)
    with pytest.raises(RuntimeError, match="wrk got no answer from http://x"):
        trust.send(bench, "http://x", Path("soak.req"), 1000, 500.0, trust.Paced())  # type: ignore[arg-type]
    assert bench.starts == [0]


def test_the_soak_result_and_its_line() -> None:
    section = trust.soak_result(100.0, 103.0, 110.0, 200_000, 0)
    assert section | {"note": ""} == {
        "rss_warm_mb": 100.0, "rss_after_mb": 103.0, "rss_peak_mb": 110.0, "growth_mb": 3.0,
        "growth_pct": 3.0, "requests": 200_000, "errors": 0, "note": "",
    }  # fmt: skip
    limits = {"max_in_flight": 100_000, "rate_limits": "none", "omni_non_2xx": 0}
    table = "\n".join(trust.table({"soak": section, "limits": limits}))
    assert "100.0 MB after warm-up -> 103.0 MB after 200,000 requests (+3.0 MB, +3.0%" in table
    assert "non-2xx answers from omni over the whole bench: 0" in table


def test_the_bench_config_lets_omni_take_every_connection(tmp_path: Path) -> None:
    path = tmp_path / "omni.toml"
    omni_config(path, "unix:///tmp/bench.sock")
    settings = Settings.from_env({"OMNI_CONFIG": str(path)})
    assert settings.limits.max_in_flight == MAX_IN_FLIGHT
    assert 100 * Config().connections < MAX_IN_FLIGHT


async def test_redis_work_counts_what_the_requests_made_redis_do(
    aiohttp_client: Any, redis_url: str, redis: Redis
) -> None:
    """Commands, scripts and CPU from INFO before and after, over every primary: here 20
    ingests through omni's app, each one append script (and what it calls) at least."""
    settings = make_settings(
        redis_url, auth={"api_keys": [{"key": traffic.API_KEY, "role": "bot", "name": "b"}]}
    )
    client = await aiohttp_client(create_app(settings))
    async with primaries(redis) as nodes:
        urls = [
            f"unix://{n.connection_pool.connection_kwargs['path']}"
            if "path" in n.connection_pool.connection_kwargs
            else f"redis://127.0.0.1:{n.connection_pool.connection_kwargs['port']}"
            for n in nodes
        ]
    before = await asyncio.to_thread(redis_work.snapshot, urls)
    for request in traffic.messages_ingest([traffic.web_id(i) for i in range(4)], "w", 20):
        assert (await _send(client, request))[0] == 201
    after = await asyncio.to_thread(redis_work.snapshot, urls)
    totals, calls = redis_work.delta(before, after)
    assert totals["scripts"] >= 20
    assert calls["evalsha"] >= 20
    assert totals["commands"] > totals["scripts"]  # the script's own calls count too
    assert "info" not in calls  # the snapshots' own INFO is not the run's
    assert totals["script_usec"] > 0 and totals["cpu_usec"] > 0
    if len(urls) > 1:
        assert 1 / len(urls) <= totals["busiest_share"] <= 1
    run = wrk.Run(20, 1.0, 1, 1, 1, 1, 1, 0, 0, False, redis=totals, redis_calls=calls)
    per = redis_work.per_request([run])
    assert per["scripts"] == round(totals["scripts"] / 20, 2)
    assert per["by_command"]["evalsha"] >= 1


def _cluster_row(rps: float, base: float, single: float) -> dict[str, Any]:
    work = {"commands": 19.0, "scripts": 1.1, "command_usec": 60.0, "script_usec": 90.0,
            "cpu_usec": 200.0, "busiest_share": 0.4, "by_command": {"evalsha": 1.1}}  # fmt: skip
    return {
        "rps": rps, "p50_ms": 1.0, "p99_ms": 2.0, "baseline_rps": base, "baseline_p99_ms": 1.0,
        "ratio": round(rps / base, 3), "rounds": {"errors": 0}, "single_rps": single,
        "cluster_over_single": round(rps / single, 3), "redis_per_request": work,
        "baseline_redis_per_request": work | {"commands": 4.0, "cpu_usec": 70.0},
        "single_redis_per_request": work | {"cpu_usec": 110.0}, "omni_cpu_usec": 700.0,
    }  # fmt: skip


def test_the_cluster_entries_sizing_and_their_lines(tmp_path: Path) -> None:
    out: dict[str, Any] = {
        f"cluster_{name}": _cluster_row(800.0, 1000.0, 900.0) for name in cluster.SIZED
    }
    out["redis_work"] = cluster.redis_work(out)
    out["sizing"] = cluster.sizing(out)
    out["cluster_replica_acks"] = {
        "messages_ingest": {"rps": 400.0, "acks_0_rps": 800.0, "ratio": 0.5, "p99_ms": 9.0,
                            "acks_0_p99_ms": 4.0, "errors": 0, "acks_0_errors": 0},
    }  # fmt: skip
    path = tmp_path / "latest.json"
    results.write(path, out)
    written = json.loads(path.read_text())
    row = written["cluster_instagram_ingest"]
    assert {"rps", "ratio", "cluster_over_single"} <= set(row)
    assert (row["ratio"], row["cluster_over_single"]) == (0.8, 0.889)
    # Omni's CPU over the primaries' CPU per request: 700 / 200 µs, 3.5 cores a primary.
    sizing = written["sizing"]["context_read"]
    assert sizing["omni_cores_per_primary"] == 3.5
    assert sizing["primary_requests_per_s"] == 5000
    work = written["redis_work"]["messages_ingest"]
    assert work["cluster"]["baseline"]["commands"] == 4.0
    assert work["single"]["omni"]["cpu_usec"] == 110.0  # no single scenario: this section's
    lines = "\n".join(cluster.table(written))
    assert "cluster_messages_ingest" in lines and "0.89" in lines
    assert "3.5 omni cores" in lines
    assert "x0.50" in lines


def test_the_cluster_section_runs_alone_with_only_cluster() -> None:
    assert _parser().parse_args(["--only", "cluster", "--quick"]).only == "cluster"
    assert _parser().parse_args(["--only", "memory"]).only == "memory"
    with pytest.raises(SystemExit):
        _parser().parse_args(["--only", "nothing"])


def test_each_side_of_a_round_has_its_own_request_file(tmp_path: Path) -> None:
    """The cluster section's sides read different customers in the same round: one's
    file must not be the other's (a shared name once sent the single server's omni the
    cluster's customers, 404s counted as reads)."""
    bench = Bench(Config(), tmp_path, cast(EmbeddedRedis, None))
    single = Scenario("context_read", None, lambda _, __: traffic.context_reads(["a"]), False)
    clustered = Scenario("context_read", None, lambda _, __: traffic.context_reads(["b"]), False)
    first = bench.scenario_file(single, 0, "single")
    second = bench.scenario_file(clustered, 0, "cluster")
    assert first != second
    assert traffic.read_requests(first) == [traffic.context_get("a")]
    assert traffic.read_requests(second) == [traffic.context_get("b")]
