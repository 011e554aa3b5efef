"""`python -m bench`: everything on loopback, started and stopped here.

    1. a Valkey server (omni.redis_server.EmbeddedRedis, the binary `omni serve` embeds,
       with append-only persistence on, fsync every second, as `omni serve` runs it)
    2. seed: 1,000 customers with 55 messages each (an Instagram and a web identity),
       one customer with 100,000 messages, one with 100, one with 10 (bench/seed.py: omni's own
       Store and Lua script, pipelined), and the baseline's copies
    3. `omni serve` (one process) and the baseline app (bench/baseline.py), each
       scenario run against both, alternating, `rounds` times after an unmeasured warm-up
       of its own requests for an ingest: medians reported
    4. growth: ingest and context read for the 10- and the 100,000-message customer
       (and a context read at 100 messages, which returns as many as at 100,000)
    5. py-spy on omni for each scenario that missed its target (bench/profile.py)
    6. two `omni serve --reuse-port` processes against one, alternating; then the
       cluster: omni in cluster mode and the baseline on a local 3x2 cluster, cluster ÷
       single, Redis work per request, sizing, 2 processes vs 1, replica_acks
       (bench/cluster.py; `--only cluster` runs it alone)
    7. memory: INFO used_memory and MEMORY USAGE deltas per message and per customer
       (`--only memory` runs it alone, on a fresh Valkey, in seconds)
    8. fsync: ingest with Valkey's appendfsync "always" against "everysec" (bench/trust.py)
    9. soak: one fresh `omni serve`, its RSS after warm-up and after 200,000 requests
   10. the table, and bench/results/latest.json

The limits that could refuse requests (`[limits] max_in_flight`) are set far above the
bench's connections, and the table says how many non-2xx answers omni gave in all.

Every run also records the cores each part used (bench/cpu.py): omni at ~1 core means
it is CPU-bound, and "other" is work on the machine that is not the bench's (a run with
much of it is noisy; the table says so).

Two processes share one port with SO_REUSEPORT rather than two ports with a wrk each:
one wrk sees one latency distribution over both processes (two wrks give two, which
cannot be merged into a p99), and a second wrk would take CPU from the servers on a
2-core machine. The kernel spreads wrk's connections over the two listening sockets.

Over 400 lines on purpose: the steps above, in the order they run, over one `Bench` (its
servers and settings); what each step measures with lives beside it (seed, traffic, wrk,
cpu, profile, results).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from bench import baseline, cluster, processes, profile, redis_work, results, traffic, trust, wrk
from bench.cpu import Meter
from bench.redis_work import Backend
from bench.results import Summary, Target
from bench.seed import Seeder
from omni import keys
from omni.eventloop import EVENT_LOOPS
from omni.redis_server import EmbeddedRedis

RESULTS = Path(__file__).parent / "results" / "latest.json"
# Far above wrk's connections: the bench measures omni serving, never omni shedding.
MAX_IN_FLIGHT = 100_000
RATE_LIMITS = (
    "per_key and per_identity set to 10^12 a window: checked on every request, never refused"
)
INGEST = "ingest baseline"
READ = "read baseline"


@dataclass(frozen=True)
class Config:
    seconds: float = 4.0
    rounds: int = 3
    connections: int = 32
    customers: int = 1000
    history: int = 55  # per seeded customer: a full page of 50, and more behind it
    long: int = 100_000
    short: int = 10
    # Reads return min(20, history) messages: a 100-message customer gets as many as
    # the 100,000-message one, so it tells history size apart from reply size.
    full: int = 100
    memory_messages: int = 10_000
    memory_customers: int = 1000
    warmup: float = 2.0
    profile: bool = True  # py-spy the scenarios that miss their target, when it can
    out: Path = RESULTS
    loop: str = "auto"  # omni.eventloop, the same on both sides
    quick: bool = False
    soak_requests: int = 200_000
    soak_warmup: int = 20_000

    @property
    def side_rounds(self) -> int:
        """Rounds of the growth and two-process sections: one when quick, which keeps
        `--quick` short (their ratios then rest on one round each)."""
        return 1 if self.quick else self.rounds


# `--quick`: every section, smaller and shorter, in about five minutes on 2 cores; its
# ratios are within one run like the full bench's, with fewer rounds behind each median.
QUICK = Config(seconds=2.0, rounds=2, customers=200, long=10_000, memory_messages=2000,
               memory_customers=200, warmup=1.0, profile=False, quick=True,
               soak_requests=20_000, soak_warmup=2_000)  # fmt: skip


@dataclass
class Scenario:
    name: str
    target: Target | None
    requests: Callable[[str, int], Iterable[bytes]]  # (tag, count) -> requests
    fresh: bool  # ingests: every run gets new message ids
    expected_rps: float = 4000.0


# -- processes ---------------------------------------------------------------------------


class Server:
    """A server process started here; stopped with SIGTERM (then SIGKILL) by its pid."""

    def __init__(self, name: str, args: list[str], log: Path, env: dict[str, str]) -> None:
        self.name = name
        self.log = log
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env,
                start_new_session=True,
            )  # fmt: skip

    @property
    def pid(self) -> int:
        return self.process.pid

    def check(self) -> None:
        if self.process.poll() is not None:
            tail = self.log.read_text(errors="replace").splitlines()[-15:]
            raise RuntimeError(
                f"{self.name} exited ({self.process.returncode}):\n" + "\n".join(tail)
            )

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_ready(url: str, servers: list[Server], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    answered = 0
    while time.monotonic() < deadline:
        for server in servers:
            server.check()
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=1) as response:  # noqa: S310
                answered += response.status == 200
        except OSError:
            answered = 0
        # Fresh connections land on every process sharing the port; a few in a row
        # answered means they all listen.
        if answered >= 10:
            return
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer in {timeout}s")


def _clean_env() -> dict[str, str]:
    """This environment without OMNI_* (a developer's settings are not the bench's)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("OMNI_")}


def omni_config(path: Path, redis_url: str) -> None:
    path.write_text(
        f"""
[server]
host = "127.0.0.1"
[redis]
url = "{redis_url}"
[auth]
api_keys = [{{ key = "{traffic.API_KEY}", role = "bot", name = "bench bot" }}]
[instagram]
app_secret = "{traffic.APP_SECRET}"
verify_token = "{traffic.VERIFY_TOKEN}"
# Every Instagram message queues a webhook to this bot, as the target says; nothing
# delivers them during the run (the worker is a process of its own in production, and
# here it would take the CPU the request path is measured on).
[bots.instagram]
url = "http://127.0.0.1:9/bench-bot"
secret = "bench-bot-secret-not-for-production"
[outbox]
in_process_worker = false
# Never refused, yet checked: the bench measures what the limits cost, not 429s or 503s.
[limits]
per_key = 1000000000000
per_identity = 1000000000000
max_in_flight = {MAX_IN_FLIGHT}
[log]
format = "json"
level = "info"
"""
    )


# -- the bench ---------------------------------------------------------------------------


@dataclass
class Bench:
    config: Config
    work: Path
    redis: EmbeddedRedis
    servers: list[Server] = field(default_factory=list)
    runs: int = 0
    cids: list[str] = field(default_factory=list)
    long_cid: str = ""
    short_cid: str = ""
    full_cid: str = ""
    notes: list[str] = field(default_factory=list)
    omni_urls: set[str] = field(default_factory=set)
    omni_non_2xx: int = 0  # over every run against omni: a shed 503 or 429 counts here
    backends: dict[str, Backend] = field(default_factory=dict)  # server URL -> its Redis

    @property
    def single(self) -> Backend:
        """The embedded Valkey every section but the cluster's runs on."""
        return Backend(self.redis.url, False, (self.redis.url,), (self.redis.pid or 0,))

    # processes

    def start_omni(
        self,
        processes: int = 1,
        backend: Backend | None = None,
        env: dict[str, str] | None = None,
        tree: Path | None = None,
    ) -> tuple[str, list[Server]]:
        """`omni serve` (x processes, sharing a port) on the single Valkey or `backend`;
        `env` adds settings (OMNI_REDIS_REPLICA_ACKS, say); `tree` serves that source
        tree's omni (bench.ab) rather than the installed one."""
        port = free_port()
        backend = backend or self.single
        env = (
            _clean_env()
            | {
                "OMNI_CONFIG": str(self.work / "omni.toml"),
                "OMNI_SERVER_EVENT_LOOP": self.config.loop,
                "OMNI_REDIS_URL": backend.url,
                "OMNI_REDIS_CLUSTER": "true" if backend.cluster else "false",
            }
            | (env or {})
        )
        args = [sys.executable, "-m", "omni.cli", "serve", "--port", str(port)]
        if tree is not None:
            # -P: without it `-m` puts the working directory first, and its omni is served.
            env["PYTHONPATH"] = str(tree.resolve())
            args.insert(1, "-P")
        if processes > 1:
            args.append("--reuse-port")
        started = [
            Server(f"omni serve #{i + 1}", args, self.work / f"omni-{port}-{i}.log", env)
            for i in range(processes)
        ]
        self.servers += started
        url = f"http://127.0.0.1:{port}"
        self.omni_urls.add(url)
        self.backends[url] = backend
        wait_ready(url, started)
        return url, started

    def start_baseline(
        self, processes: int = 1, backend: Backend | None = None
    ) -> tuple[str, list[Server]]:
        port = free_port()
        backend = backend or self.single
        args = [sys.executable, "-m", "bench.baseline", "--port", str(port),
                "--redis", backend.url, "--loop", self.config.loop]  # fmt: skip
        if processes > 1:
            args.append("--reuse-port")
        if backend.cluster:
            args.append("--cluster")
        started = [
            Server(f"baseline #{i + 1}", args, self.work / f"baseline-{port}-{i}.log", _clean_env())
            for i in range(processes)
        ]
        self.servers += started
        url = f"http://127.0.0.1:{port}"
        self.backends[url] = backend
        wait_ready(url, started)
        return url, started

    def stop(self, servers: list[Server]) -> None:
        for server in servers:
            server.stop()
            self.servers.remove(server)

    # runs

    def request_file(self, name: str, requests: Iterable[bytes]) -> Path:
        path = self.work / "requests" / f"{name}.req"
        path.parent.mkdir(exist_ok=True)
        traffic.write_requests(path, requests)
        return path

    def load(
        self, url: str, requests: Path, seconds: float | None = None, start: int = 0
    ) -> wrk.Run:
        self.runs += 1
        backend = self.backends.get(url, self.single)
        groups: dict[str, list[int]] = {"valkey": list(backend.pids)}
        for server in self.servers:
            server.check()
            groups.setdefault(server.name.split(" ")[0], []).append(server.pid)
        before = redis_work.snapshot(backend.primaries)
        with Meter(groups) as meter:
            run = wrk.run(
                url,
                requests,
                seconds=seconds or self.config.seconds,
                connections=self.config.connections,
                start=start,
            )
        work, calls = redis_work.delta(before, redis_work.snapshot(backend.primaries))
        if url in self.omni_urls:
            self.omni_non_2xx += run.non_2xx
        return dataclasses.replace(
            run, cpu=meter.cores, others=meter.others, redis=work, redis_calls=calls
        )

    def scenario_file(self, scenario: Scenario, round_: int, side: str = "") -> Path:
        """A round's request file; `side` names it apart from another side's file of the
        same round (the cluster section's sides read different customers)."""
        tag = f"{scenario.name}-r{round_}-{time.time_ns()}"
        count = int(scenario.expected_rps * self.config.seconds * 1.5) + 1000
        name = f"{scenario.name}-{side}-{round_}" if side else f"{scenario.name}-{round_}"
        return self.request_file(name, scenario.requests(tag, count))

    def warm(self, scenario: Scenario, url: str, side: str = "") -> None:
        """A short unmeasured run of an ingest scenario's own requests (new message ids)
        before its rounds. A process's first message from each sender pays for what a
        running service has learnt already (omni's identity cache): without it omni's
        first ingest round ran 15-30% below its others, and its spread said so."""
        if scenario.fresh:
            self.load(url, self.scenario_file(scenario, -1, side), seconds=self.config.warmup)

    def compare(self, scenario: Scenario, omni_url: str, base_url: str) -> tuple[Summary, Summary]:
        """Rounds of omni and the baseline, alternating which goes first."""
        runs = self.rounds(scenario, {"omni": omni_url, "baseline": base_url})
        return Summary.of(runs["omni"]), Summary.of(runs["baseline"])

    def rounds(self, scenario: Scenario, urls: dict[str, str]) -> dict[str, list[wrk.Run]]:
        """Rounds of every server in `urls` (a name each; the baseline's is "baseline"),
        the order reversed every other round. An ingest's rounds give each server
        requests of its own: two omni on one Valkey (bench.ab) would see each other's
        message ids as repeats."""
        runs: dict[str, list[wrk.Run]] = {name: [] for name in urls}
        reads = None if scenario.fresh else self.scenario_file(scenario, 0)
        for url in urls.values():
            self.warm(scenario, url)
        for round_ in range(self.config.rounds):
            order = list(urls.items())
            for who, url in order if round_ % 2 == 0 else reversed(order):
                run = self.load(url, reads or self.scenario_file(scenario, round_, who))
                runs[who].append(run)
                if who != "baseline" and scenario.fresh:
                    scenario.expected_rps = max(scenario.expected_rps, run.rps)
                    if run.wrapped:
                        self.notes.append(f"{scenario.name}: {who} re-sent message ids")
                self.progress(scenario.name, who, run)
        return runs

    def progress(self, name: str, who: str, run: wrk.Run) -> None:
        errors = f", {run.errors + run.non_2xx} errors" if run.errors + run.non_2xx else ""
        cpu = " ".join(f"{k} {v:.2f}" for k, v in run.cpu.items() if v >= 0.01)
        print(
            f"  {name:<24} {who:<12} {run.rps:>7.0f} rps  p50/90/99/99.9 {run.p50_ms:.1f}/"
            f"{run.p90_ms:.1f}/{run.p99_ms:.1f}/{run.p999_ms:.1f} ms  cores: {cpu}{errors}",
            flush=True,
        )


# -- seeding -----------------------------------------------------------------------------


async def seed(bench: Bench, *, growth: bool = True) -> None:
    """The customers every scenario reads and writes; with `growth`, the 10-, 100- and
    100,000-message customers of the growth section too."""
    config = bench.config
    redis = Redis.from_url(bench.redis.url)
    try:
        seeder = Seeder(redis)
        started = time.monotonic()
        ig = [("instagram", traffic.sender_id(i)) for i in range(config.customers)]
        web = [("web", traffic.web_id(i)) for i in range(config.customers)]
        bench.cids = await seeder.customers(
            ig, config.history, tag="seed", text=traffic.TEXT, also=web
        )
        blob = traffic.message_post("seed", "seed").partition(b"\r\n\r\n")[2]
        await baseline.seed(redis, bench.cids, baseline.RECENT + 5, blob)
        if growth:
            await _seed_growth(bench, seeder)
        seeded = config.customers * config.history
        seeded += config.short + config.full + config.long if growth else 0
        print(f"seeded {seeded:,} messages in {time.monotonic() - started:.1f} s", flush=True)
        # Start the bench on a freshly rewritten append-only file, so the seeding does
        # not set off a rewrite (a fork) in the middle of a measurement.
        # One the seeding set off itself may be under way: let it end, then start ours.
        await _rewritten(redis)
        await redis.bgrewriteaof()
        await _rewritten(redis)
    finally:
        await redis.aclose()


async def _seed_growth(bench: Bench, seeder: Seeder) -> None:
    config = bench.config
    bench.short_cid = (
        await seeder.customers([("web", "bench-short")], config.short, tag="s", text=traffic.TEXT)
    )[0]
    bench.full_cid = (
        await seeder.customers([("web", "bench-full")], config.full, tag="f", text=traffic.TEXT)
    )[0]
    bench.long_cid = (await seeder.customers([("web", "bench-long")], 0, tag="", text=""))[0]
    await seeder.messages(
        bench.long_cid, "web", "bench-long", config.long, tag="seed", text=traffic.TEXT
    )


async def _rewritten(redis: Redis) -> None:
    """Wait until no append-only file rewrite is under way (the server's state, polled:
    there is no event of ours to wait on)."""
    while (await redis.info("persistence"))["aof_rewrite_in_progress"]:  # noqa: ASYNC110
        await asyncio.sleep(0.1)


# -- sections ----------------------------------------------------------------------------


def scenarios(bench: Bench, cids: list[str] | None = None) -> list[Scenario]:
    """The five scenarios, over the customers `cids` (the single Valkey's by default;
    the cluster section passes its own)."""
    senders = [traffic.sender_id(i) for i in range(bench.config.customers)]
    web = [traffic.web_id(i) for i in range(bench.config.customers)]
    cids = bench.cids if cids is None else cids
    return [
        Scenario(
            "instagram_ingest",
            Target(INGEST, 0.8, max_p99_ratio=1.5),
            lambda tag, n: traffic.instagram_ingest(senders, tag, n),
            fresh=True,
        ),
        Scenario(
            "messages_ingest",
            Target(INGEST, 0.9),
            lambda tag, n: traffic.messages_ingest(web, tag, n),
            fresh=True,
        ),
        Scenario(
            "context_read",
            Target(READ, 0.9),
            lambda _, __: traffic.context_reads(cids),
            fresh=False,
        ),
        Scenario(
            "history_page_50",
            Target(READ, 0.8),
            lambda _, __: traffic.history_reads(cids),
            fresh=False,
        ),
        Scenario(
            "mixed_80_read_20_ingest",
            None,
            lambda tag, n: traffic.mixed(cids, web, tag, n),
            fresh=True,
        ),
    ]


def main_scenarios(bench: Bench, omni_url: str, base_url: str, out: dict[str, Any]) -> None:
    print("scenarios (omni vs baseline, alternating):", flush=True)
    for scenario in scenarios(bench):
        omni, base = bench.compare(scenario, omni_url, base_url)
        out[scenario.name] = results.scenario_result(omni, base, scenario.target)


def growth(bench: Bench, omni_url: str, out: dict[str, Any]) -> None:
    """Ingest and context read at 10 and at 100,000 messages, alternating."""
    print("growth (10 vs 100,000 messages):", flush=True)
    config = bench.config
    runs: dict[str, list[wrk.Run]] = {}
    reads = {
        size: bench.request_file(f"growth-read-{size}", traffic.context_reads([cid]))
        for size, cid in (("short", bench.short_cid), ("full", bench.full_cid),
                          ("long", bench.long_cid))
    }  # fmt: skip
    expected = 4000.0
    for round_ in range(config.side_rounds):
        # A fresh 10-message customer each round: the one before has grown.
        short_id = f"bench-short-ingest-{round_}"
        asyncio.run(_seed_short(bench, short_id))
        sizes = (("short", short_id), ("long", "bench-long"))
        for size, external_id in sizes if round_ % 2 == 0 else reversed(sizes):
            count = int(expected * config.seconds * 1.5) + 1000
            tag = f"growth-{size}-{round_}-{time.time_ns()}"
            path = bench.request_file(
                f"growth-ingest-{size}", traffic.messages_ingest([external_id], tag, count)
            )
            run = bench.load(omni_url, path)
            expected = max(expected, run.rps)
            runs.setdefault(f"ingest/{size}", []).append(run)
            bench.progress(f"ingest at {size}", "omni", run)
            run = bench.load(omni_url, reads[size])
            runs.setdefault(f"context/{size}", []).append(run)
            bench.progress(f"context at {size}", "omni", run)
        run = bench.load(omni_url, reads["full"])
        runs.setdefault("context/full", []).append(run)
        bench.progress("context at 100", "omni", run)
    out["growth_ratio"] = {}
    out["growth"] = {}
    for kind in ("ingest", "context"):
        short, long = Summary.of(runs[f"{kind}/short"]), Summary.of(runs[f"{kind}/long"])
        ratio = results.growth_ratio(short, long)
        out["growth_ratio"][kind] = round(ratio, 3)
        out["growth"][kind] = {
            "short_rps": round(short.rps, 1),
            "long_rps": round(long.rps, 1),
            "short_p99_ms": round(short.p99_ms, 2),
            "long_p99_ms": round(long.p99_ms, 2),
        }
    full = Summary.of(runs["context/full"])
    long = Summary.of(runs["context/long"])
    out["growth"]["context"]["full_rps"] = round(full.rps, 1)
    out["growth"]["context_same_reply_ratio"] = round(results.growth_ratio(full, long), 3)
    out["growth"]["note"] = (
        f"short: a customer with {config.short} messages (for ingest, a new one each round; "
        f"it grows during the run); long: one with {config.long:,} (plus what earlier "
        "rounds added). Cost = 1/rps; ratio = long cost / short cost."
    )


async def _seed_short(bench: Bench, external_id: str) -> None:
    redis = Redis.from_url(bench.redis.url)
    try:
        await Seeder(redis).customers(
            [("web", external_id)], bench.config.short, tag="s", text=traffic.TEXT
        )
    finally:
        await redis.aclose()


def two_processes(bench: Bench, single: list[Server], out: dict[str, Any]) -> None:
    """One omni against two sharing the port, on the single Valkey (bench.processes)."""
    print("2 processes vs 1 (SO_REUSEPORT):", flush=True)
    bench.stop(single)
    out["two_processes"] = processes.one_vs_two(bench, scenarios(bench))


async def memory(bench: Bench, out: dict[str, Any]) -> None:
    """Bytes of Redis memory per stored 100-character message and per customer."""
    config = bench.config
    redis = Redis.from_url(bench.redis.url)
    try:
        seeder = Seeder(redis)
        cid = (await seeder.customers([("web", "bench-memory")], 1, tag="m0", text=traffic.TEXT))[0]
        own = _keys(cid)
        used = await _used(redis)
        before = [await _usage(redis, [name]) for name in own]
        await seeder.messages(
            cid, "web", "bench-memory", config.memory_messages, tag="m", text=traffic.TEXT
        )
        per_message_info = (await _used(redis) - used) / config.memory_messages
        after = [await _usage(redis, [name]) for name in own]
        by_key = {
            name.rsplit("}:", 1)[1]: round((a - b) / config.memory_messages, 1)
            for name, b, a in zip(own, before, after, strict=True)
        }
        per_message_keys = (
            sum(after) / config.memory_messages - sum(before) / config.memory_messages
        )
        used = await _used(redis)
        ids = [("web", f"bench-memory-{i}") for i in range(config.memory_customers)]
        cids = await seeder.customers(ids, 1, tag="c", text=traffic.TEXT)
        per_customer_info = (await _used(redis) - used) / config.memory_customers
        owned = [k for c in cids for k in _keys(c)] + [keys.identity(ch, e) for ch, e in ids]
        per_customer_keys = await _usage(redis, owned) / config.memory_customers
        # Every key a one-message customer has under its hash tag, whoever wrote it,
        # its identity, and the search index's share per customer.
        first = cids[0]
        tagged = sorted([k async for k in redis.scan_iter(match=f"*{{{first}}}*", count=1000)])
        customer_by_key: dict[str, float] = {
            "identity": await _usage(redis, [keys.identity(*ids[0])])
        }
        for name in tagged:
            customer_by_key[_kind(name)] = await _usage(redis, [name.decode()])
        index = [k.decode() async for k in redis.scan_iter(match="omni:ix:*", count=1000)]
        customer_by_key["search index (share)"] = round(
            await _usage(redis, index) / max(1, config.memory_customers + config.customers), 1
        )
    finally:
        await redis.aclose()
    out["bytes_per_message"] = round(max(per_message_info, per_message_keys), 1)
    out["memory"] = {
        "bytes_per_customer": round(per_customer_info, 1),
        "bytes_per_message_info": round(per_message_info, 1),
        "bytes_per_message_memory_usage": round(per_message_keys, 1),
        "bytes_per_message_by_key": by_key,
        "bytes_of_a_one_message_customer_by_key": customer_by_key,
        "bytes_per_customer_memory_usage": round(per_customer_keys, 1),
        "note": (
            f"per message: {config.memory_messages:,} 100-character messages added to one "
            "customer (INFO used_memory less the clients' buffers, delta, and MEMORY USAGE "
            "SAMPLES 0 delta of the "
            "customer's keys; bytes_per_message is the larger); per customer: "
            f"{config.memory_customers:,} new customers with one such message each"
        ),
    }


def _kind(name: bytes) -> str:
    """A customer key's kind: what follows its hash tag ("c", "tl", "tl:web", "mid")."""
    return name.decode().rsplit("}:", 1)[-1]


def _keys(cid: str) -> list[str]:
    return [keys.customer(cid), keys.timeline(cid), keys.channel_timeline(cid, "web"),
            keys.message_ids(cid), keys.notes(cid)]  # fmt: skip


async def _used(redis: Redis) -> int:
    """Redis's memory without its clients' buffers: the seeding's pipelines of 1,000
    calls leave ~58 KB of query buffer on the bench's own connection (29 bytes a message
    of --quick's 2,000), which is the bench's, not the stored messages'."""
    memory = await redis.info("memory")
    return int(memory["used_memory"]) - int(memory.get("mem_clients_normal", 0))


async def _usage(redis: Redis, names: list[str]) -> int:
    async with redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.memory_usage(name, samples=0)
        sizes = await pipe.execute()
    return sum(size or 0 for size in sizes)


# -- main --------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    defaults = Config()
    parser.add_argument("--seconds", type=float, default=defaults.seconds, help="per wrk run")
    parser.add_argument("--rounds", type=int, default=defaults.rounds)
    parser.add_argument("--connections", type=int, default=defaults.connections)
    parser.add_argument("--long", type=int, default=defaults.long, help="messages, growth")
    parser.add_argument("--no-profile", action="store_true", help="skip py-spy on misses")
    parser.add_argument(
        "--profile", action="store_true", help="with --quick: py-spy the misses too"
    )
    parser.add_argument("--out", type=Path, default=defaults.out)
    parser.add_argument(
        "--soak-requests", type=int, default=None, help="after warm-up (quick: 20,000)"
    )
    parser.add_argument(
        "--loop", choices=EVENT_LOOPS, default=defaults.loop, help="both sides' event loop"
    )
    parser.add_argument(
        "--quick", action="store_true", help="every section, shorter (about five minutes)"
    )
    parser.add_argument(
        "--only",
        choices=["cluster", "memory"],
        help="one section alone: its entries replace theirs in --out, the rest is kept",
    )
    return parser


@contextlib.contextmanager
def _workdir() -> Iterator[Path]:
    # Short: the Valkey Unix socket path lives in it.
    path = Path(tempfile.mkdtemp(prefix="omni-bench-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    config = Config(
        seconds=args.seconds,
        rounds=args.rounds,
        connections=args.connections,
        long=args.long,
        profile=not args.no_profile,
        out=args.out,
        loop=args.loop,
    )
    if args.quick:
        config = dataclasses.replace(
            QUICK, connections=args.connections, out=args.out, loop=args.loop,
            profile=args.profile,
        )  # fmt: skip
    if args.soak_requests is not None:
        config = dataclasses.replace(config, soak_requests=args.soak_requests)
    if wrk.wrk_binary() is None and args.only != "memory":
        print(f"bench: {wrk.INSTALL_HINT}", file=sys.stderr)
        return 2
    started = time.monotonic()
    with _workdir() as work:
        server = EmbeddedRedis(work / "valkey", persist=True)
        server.start()
        bench = Bench(config, work, server)
        try:
            sections = {"cluster": run_cluster, "memory": run_memory}
            out = sections.get(args.only or "", run)(bench)
        finally:
            for process in list(bench.servers):
                process.stop()
            server.stop()
    described = _describe(config, time.monotonic() - started)
    if args.only:
        # A section alone: the last whole run's other entries stay, this run described.
        out = _previous(config.out) | out | {f"{args.only}_config": described}
    else:
        out["config"] = described
    if bench.notes:
        out["notes"] = bench.notes
    results.write(config.out, out)
    print()
    print("\n".join([results.table(out), *trust.table(out), *cluster.table(out)]))
    print(f"\nwrote {config.out} ({time.monotonic() - started:.0f} s)")
    return 0


def _previous(path: Path) -> dict[str, Any]:
    try:
        previous: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return previous


def run_cluster(bench: Bench) -> dict[str, Any]:
    """`--only cluster`: the single server seeded (omni on it is what cluster ÷ single
    compares with), then the cluster section alone."""
    out: dict[str, Any] = {}
    omni_config(bench.work / "omni.toml", bench.redis.url)
    asyncio.run(seed(bench, growth=False))
    cluster.section(bench, lambda cids: scenarios(bench, cids), out)
    return out


def run_memory(bench: Bench) -> dict[str, Any]:
    """`--only memory`: the memory section alone, on the fresh server (nothing seeded:
    the per-message and per-customer figures are deltas, as in a whole run)."""
    out: dict[str, Any] = {}
    asyncio.run(memory(bench, out))
    return out


def run(bench: Bench) -> dict[str, Any]:
    out: dict[str, Any] = {}
    omni_config(bench.work / "omni.toml", bench.redis.url)
    asyncio.run(seed(bench))
    omni_url, single = bench.start_omni()
    base_url, _ = bench.start_baseline()
    warm = bench.request_file("warmup", traffic.context_reads(bench.cids))
    for url in (omni_url, base_url):
        bench.load(url, warm, seconds=bench.config.warmup)
    main_scenarios(bench, omni_url, base_url, out)
    ingests = [s for s in scenarios(bench) if s.name in trust.FSYNC_SCENARIOS]
    trust.fsync_cost(bench, ingests, omni_url, out)
    out["instagram_ingest"]["bot_webhooks_queued"] = asyncio.run(_queued(bench))
    growth(bench, omni_url, out)
    if bench.config.profile:
        missed = [s for s in scenarios(bench) if out.get(s.name, {}).get("met") is False]
        profile.scenarios(bench, missed, omni_url, single[0].pid, out)
    two_processes(bench, single, out)
    cluster.section(bench, lambda cids: scenarios(bench, cids), out)
    trust.soak(bench, out)
    asyncio.run(memory(bench, out))
    out["limits"] = {
        "max_in_flight": MAX_IN_FLIGHT,
        "rate_limits": RATE_LIMITS,
        "omni_non_2xx": bench.omni_non_2xx,
    }
    return out


async def _queued(bench: Bench) -> int:
    """Bot webhooks omni queued: one per Instagram message it stored (the check that the
    Instagram scenario paid for the enqueue)."""
    redis = Redis.from_url(bench.redis.url)
    try:
        return int(await redis.xlen(keys.outbox_stream("default")))
    finally:
        await redis.aclose()


def _describe(config: Config, elapsed: float) -> dict[str, Any]:
    return {
        "quick": config.quick,
        "event_loop": config.loop,
        "seconds_per_run": config.seconds,
        "rounds": config.rounds,
        "connections": config.connections,
        "wrk_threads": 1,
        "customers": config.customers,
        "messages_per_customer": config.history,
        "long_history": config.long,
        "redis": "embedded Valkey (omni.redis_server), Unix socket, appendonly yes, "
        "appendfsync everysec (always in the fsync section's rounds)",
        "omni": "omni serve, log level info (JSON to a file); an Instagram bot configured, "
        "so each Instagram message queues its webhook (the worker, a process of its own in "
        "production, is off: nothing is delivered during the run)",
        "max_in_flight": MAX_IN_FLIGHT,
        "soak_requests": config.soak_requests,
        "soak_warmup_requests": config.soak_warmup,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "elapsed_s": round(elapsed, 1),
    }
