"""The cluster section (issue 14): omni in cluster mode and the baseline on redis-py's
cluster client, on one local 3x2 Valkey cluster (omni.redis_cluster, the binary omni
embeds, append-only files fsynced every second as on the single server).

    1. the cluster, seeded as the single server is (the same customers and messages,
       through omni's own Store and script; the baseline's copies), AOF rewritten after
    2. each scenario: omni on the single Valkey, omni on the cluster and the baseline on
       the cluster, rounds alternating the order; medians. `cluster_<scenario>` in
       latest.json: rps, ratio (÷ the baseline on the cluster), cluster_over_single
       (÷ omni on the single server in the same rounds)
    3. Redis work per request (bench.redis_work), from the same runs: summed over the
       primaries; and the sizing (omni cores one primary core serves)
    4. one process vs two on --reuse-port, on the cluster (bench.processes)
    5. `[redis] replica_acks = 1` against 0 on the ingests: what the WAIT costs

`python -m bench --only cluster` runs this section alone (the single server still
seeded, for cluster ÷ single).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

from redis import Redis as SyncRedis
from redis.asyncio import Redis, RedisCluster

from bench import baseline, processes, traffic, wrk
from bench.protocols import Bench
from bench.redis_work import Backend
from bench.results import Summary, scenario_result
from bench.seed import Seeder
from omni.redis_cluster import LocalCluster, free_ports

INGESTS = ("messages_ingest", "instagram_ingest")
SIZED = ("messages_ingest", "instagram_ingest", "context_read")
SIDES = ("single", "cluster", "baseline")


# -- the cluster -------------------------------------------------------------------------


def start(work: Path) -> tuple[LocalCluster, Backend]:
    cluster = LocalCluster(work / "cluster", free_ports(6), persist=True)
    cluster.start()
    primaries = tuple(
        f"redis://127.0.0.1:{port}" for port in cluster.ports if _role(port) == "master"
    )
    return cluster, Backend(cluster.url, True, primaries, tuple(cluster.pids))


def _role(port: int) -> str:
    client = SyncRedis(port=port)
    try:
        return str(client.info("replication")["role"])
    finally:
        client.close()


async def seed(bench: Bench, cluster: LocalCluster) -> list[str]:
    """The single server's customers again (bench.run.seed, without the growth ones):
    their cids on the cluster."""
    config = bench.config
    redis = cast(Redis, RedisCluster.from_url(cluster.url))
    try:
        started = time.monotonic()
        ig = [("instagram", traffic.sender_id(i)) for i in range(config.customers)]
        web = [("web", traffic.web_id(i)) for i in range(config.customers)]
        cids = await Seeder(redis).customers(
            ig, config.history, tag="seed", text=traffic.TEXT, also=web
        )
        blob = traffic.message_post("seed", "seed").partition(b"\r\n\r\n")[2]
        await baseline.seed(redis, cids, baseline.RECENT + 5, blob)
        seeded = config.customers * config.history
        print(f"cluster: seeded {seeded:,} messages in {time.monotonic() - started:.1f} s")
    finally:
        await redis.aclose()
    # As on the single server: no append-only-file rewrite set off by the seeding in the
    # middle of a measurement.
    for port in cluster.ports:
        await _rewrite(port)
    return cids


async def _rewrite(port: int) -> None:
    redis = Redis(port=port)
    try:
        while (await redis.info("persistence"))["aof_rewrite_in_progress"]:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        await redis.bgrewriteaof()
        await asyncio.sleep(0.1)
        while (await redis.info("persistence"))["aof_rewrite_in_progress"]:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
    finally:
        await redis.aclose()


# -- the section -------------------------------------------------------------------------


def section(
    bench: Bench, scenarios: Callable[[list[str] | None], Sequence[Any]], out: dict[str, Any]
) -> None:
    """Everything above, on a cluster started and stopped here. `scenarios(cids)` gives
    bench.run's scenarios over the customers `cids` (None: the single server's)."""
    print("cluster: 3 primaries + 3 replicas (omni.redis_cluster)", flush=True)
    cluster, backend = start(bench.work)
    try:
        cids = asyncio.run(seed(bench, cluster))
        compare(bench, scenarios(None), scenarios(cids), backend, out)
        out["redis_work"] = redis_work(out)
        out["sizing"] = sizing(out)
        print("cluster: 2 processes vs 1 (SO_REUSEPORT):", flush=True)
        out["cluster_two_processes"] = processes.one_vs_two(
            bench, scenarios(cids), backend, label="cluster "
        )
        out["cluster_replica_acks"] = replica_acks(bench, scenarios(cids), backend)
    finally:
        cluster.stop()


def compare(
    bench: Bench,
    single_scenarios: Sequence[Any],
    cluster_scenarios: Sequence[Any],
    backend: Backend,
    out: dict[str, Any],
) -> None:
    """Omni on the single server, omni on the cluster, the baseline on the cluster: one
    run each a round, the order turned a step each round."""
    print("cluster scenarios (omni single, omni cluster, baseline cluster):", flush=True)
    urls: dict[str, str] = {}
    started: list[Any] = []
    try:
        urls["single"], group = bench.start_omni()
        started += group
        urls["cluster"], group = bench.start_omni(backend=backend)
        started += group
        urls["baseline"], group = bench.start_baseline(backend=backend)
        started += group
        for side, each in (("single", single_scenarios), ("cluster", cluster_scenarios),
                           ("baseline", cluster_scenarios)):  # fmt: skip
            warm = next(s for s in each if s.name == "context_read")
            warming = bench.scenario_file(warm, -1, side)
            bench.load(urls[side], warming, seconds=bench.config.warmup)
        for single, clustered in zip(single_scenarios, cluster_scenarios, strict=True):
            runs = _rounds(bench, {"single": single, "cluster": clustered,
                                   "baseline": clustered}, urls)  # fmt: skip
            summary = {side: Summary.of(runs[side]) for side in SIDES}
            row = scenario_result(summary["cluster"], summary["baseline"], None)
            over = summary["cluster"].rps / summary["single"].rps if summary["single"].rps else 0.0
            row["cluster_over_single"] = round(over, 3)
            row["single_rps"] = round(summary["single"].rps, 1)
            row["single_p99_ms"] = round(summary["single"].p99_ms, 2)
            row["single_redis_per_request"] = summary["single"].redis()
            row["single_cores"] = summary["single"].cores()
            row["rounds"]["single_errors"] = sum(r.errors + r.non_2xx for r in runs["single"])
            row["omni_cpu_usec"] = summary["cluster"].cpu_usec("omni")
            row["single_omni_cpu_usec"] = summary["single"].cpu_usec("omni")
            out[f"cluster_{clustered.name}"] = row
    finally:
        bench.stop(started)


def _rounds(
    bench: Bench, scenario: dict[str, Any], urls: dict[str, str]
) -> dict[str, list[wrk.Run]]:
    runs: dict[str, list[wrk.Run]] = {side: [] for side in SIDES}
    files: dict[str, Path] = {}
    for side in SIDES:
        bench.warm(scenario[side], urls[side], side)
    for round_ in range(bench.config.rounds):
        turn = round_ % len(SIDES)
        for side in SIDES[turn:] + SIDES[:turn]:
            chosen = scenario[side]
            if chosen.fresh or side not in files:
                # A file per side: the single server's customers are not the cluster's.
                files[side] = bench.scenario_file(chosen, round_, side)
            run = bench.load(urls[side], files[side])
            runs[side].append(run)
            if side != "baseline" and chosen.fresh:
                chosen.expected_rps = max(chosen.expected_rps, run.rps)
            bench.progress(chosen.name, f"{side}", run)
    return runs


# -- Redis work and sizing ---------------------------------------------------------------


def redis_work(out: dict[str, Any]) -> dict[str, Any]:
    """Per ingest and per context read: what Redis did per request, for omni and the
    baseline, on the single server (the main scenarios' runs; with --only cluster, omni's
    single-server runs of this section) and on the cluster (summed over the primaries)."""
    table: dict[str, Any] = {}
    for name in SIZED:
        row = out.get(f"cluster_{name}")
        if row is None:
            continue
        single = out.get(name, {})
        table[name] = {
            "single": {
                "omni": single.get("redis_per_request") or row["single_redis_per_request"],
                "baseline": single.get("baseline_redis_per_request", {}),
            },
            "cluster": {
                "omni": row["redis_per_request"],
                "baseline": row["baseline_redis_per_request"],
            },
        }
    table["note"] = (
        "per request answered (bench/redis_work.py): commands (INFO commandstats calls, a "
        "script's own calls included), scripts, command_usec (non-script commands' "
        "execution), script_usec (scripts' execution, their calls included), cpu_usec (the "
        "server's user+sys CPU, INFO cpu: the figure to size with); medians over the "
        "rounds; on the cluster summed over the three primaries"
    )
    return table


def sizing(out: dict[str, Any]) -> dict[str, Any]:
    """How many omni cores one primary's core serves, per kind of request: omni's CPU per
    request over Redis's (both measured in the cluster runs). A primary is one core
    (Valkey executes commands on one thread)."""
    table: dict[str, Any] = {}
    for name in SIZED:
        row = out.get(f"cluster_{name}")
        if row is None:
            continue
        redis_us = row["redis_per_request"].get("cpu_usec", 0.0)
        omni_us = row["omni_cpu_usec"]
        table[name] = {
            "omni_cpu_usec": omni_us,
            "redis_cpu_usec": redis_us,
            "redis_commands": row["redis_per_request"].get("commands", 0.0),
            "primary_requests_per_s": round(1e6 / redis_us) if redis_us else 0,
            "omni_cores_per_primary": round(omni_us / redis_us, 1) if redis_us else 0.0,
            "busiest_primary_share": row["redis_per_request"].get("busiest_share", 0.0),
        }
    table["note"] = (
        "omni_cpu_usec: omni's CPU per request in the cluster runs (bench.cpu); "
        "redis_cpu_usec: the primaries' CPU per request (INFO cpu); a primary saturates "
        "at 1e6 / redis_cpu_usec requests/s, which take omni_cpu_usec / redis_cpu_usec "
        "omni cores (on average over the primaries: busiest_primary_share is the busiest "
        "one's part of the Redis CPU, 0.333 when even)"
    )
    return table


# -- replica_acks ------------------------------------------------------------------------


def replica_acks(bench: Bench, scenarios: Sequence[Any], backend: Backend) -> dict[str, Any]:
    """The ingests with `[redis] replica_acks = 1` against 0, one omni at a time on the
    cluster (started afresh for each setting, alternating which goes first)."""
    print("cluster: replica_acks 1 vs 0 (ingest):", flush=True)
    picked = [s for s in scenarios if s.name in INGESTS]
    warm = next(s for s in scenarios if s.name == "context_read")
    runs: dict[tuple[str, int], list[wrk.Run]] = {}
    for round_ in range(bench.config.side_rounds):
        for acks in (1, 0) if round_ % 2 == 0 else (0, 1):
            url, group = bench.start_omni(
                backend=backend, env={"OMNI_REDIS_REPLICA_ACKS": str(acks)}
            )
            try:
                bench.load(url, bench.scenario_file(warm, -1), seconds=bench.config.warmup)
                for scenario in picked:
                    run = bench.load(url, bench.scenario_file(scenario, round_))
                    runs.setdefault((scenario.name, acks), []).append(run)
                    bench.progress(scenario.name, f"replica_acks {acks}", run)
            finally:
                bench.stop(group)
    table: dict[str, Any] = {}
    for scenario in picked:
        one, zero = Summary.of(runs[(scenario.name, 1)]), Summary.of(runs[(scenario.name, 0)])
        table[scenario.name] = {
            "rps": round(one.rps, 1),
            "acks_0_rps": round(zero.rps, 1),
            "ratio": round(one.rps / zero.rps, 3) if zero.rps else 0.0,
            "p99_ms": round(one.p99_ms, 2),
            "acks_0_p99_ms": round(zero.p99_ms, 2),
            "errors": sum(r.errors + r.non_2xx for r in runs[(scenario.name, 1)]),
            "acks_0_errors": sum(r.errors + r.non_2xx for r in runs[(scenario.name, 0)]),
        }
    table["note"] = (
        "omni on the cluster with OMNI_REDIS_REPLICA_ACKS=1 (each append answered after "
        "WAIT 1) and =0; ratio = rps with 1 / rps with 0; an error is a 503 (WAIT timed out)"
    )
    return table


# -- the table ---------------------------------------------------------------------------


def table(results: dict[str, Any]) -> list[str]:
    rows = {k: v for k, v in results.items() if k.startswith("cluster_") and "ratio" in v
            and "cluster_over_single" in v}  # fmt: skip
    lines: list[str] = []
    if rows:
        lines += ["", "cluster (3x2, omni in cluster mode; base = redis-py's cluster client):",
                  f"  {'scenario':<32}{'rps':>8}{'base rps':>10}{'ratio':>8}{'single rps':>12}"
                  f"{'cluster ÷ single':>18}"]  # fmt: skip
        for name, row in rows.items():
            lines.append(
                f"  {name:<32}{row['rps']:>8.0f}{row['baseline_rps']:>10.0f}{row['ratio']:>8.2f}"
                f"{row['single_rps']:>12.0f}{row['cluster_over_single']:>18.2f}"
            )
    failed = [name for name, row in rows.items()
              if row["rounds"].get("errors") or row["rounds"].get("single_errors")]  # fmt: skip
    if failed:
        lines.append(
            f"  WARNING: errors (non-2xx or dropped) in {', '.join(failed)}: see the rounds"
        )
    work = results.get("redis_work", {})
    if any(k != "note" for k in work):
        lines += ["", "Redis work per request (cluster: summed over the primaries):",
                  f"  {'scenario':<18}{'where':<9}{'who':<10}{'commands':>9}{'scripts':>9}"
                  f"{'CPU µs':>8}"]  # fmt: skip
        for name, row in work.items():
            if name == "note":
                continue
            for where in ("single", "cluster"):
                for who in ("omni", "baseline"):
                    w = row[where][who]
                    if w:
                        lines.append(
                            f"  {name:<18}{where:<9}{who:<10}{w['commands']:>9.1f}"
                            f"{w['scripts']:>9.1f}{w['cpu_usec']:>8.0f}"
                        )
    size = results.get("sizing", {})
    if any(k != "note" for k in size):
        lines += ["", "sizing (cluster runs): omni CPU µs / Redis CPU µs per request -> "
                  "omni cores one primary serves:"]  # fmt: skip
        for name, row in size.items():
            if name == "note":
                continue
            lines.append(
                f"  {name:<18}{row['omni_cpu_usec']:>8.0f} /{row['redis_cpu_usec']:>6.0f} µs"
                f"  -> {row['omni_cores_per_primary']:.1f} omni cores "
                f"(a primary: {row['primary_requests_per_s']:,} requests/s; busiest "
                f"primary {row['busiest_primary_share']:.0%} of the Redis CPU)"
            )
    procs = results.get("cluster_two_processes", {})
    if procs:
        lines += ["", "cluster: 2 processes over 1 (same run):"]
        for name, row in procs.items():
            lines.append(
                f"  {name:<20}{row['one_rps']:>8.0f} -> {row['two_rps']:>6.0f} rps  "
                f"x{row['ratio']:.2f}  (baseline x2: {row['baseline_two_rps']:.0f})"
            )
    acks = results.get("cluster_replica_acks", {})
    if any(k != "note" for k in acks):
        lines += ["", "cluster: replica_acks = 1 vs 0 (ingest):"]
        for name, row in acks.items():
            if name == "note":
                continue
            lines.append(
                f"  {name:<20}{row['acks_0_rps']:>8.0f} -> {row['rps']:>6.0f} rps  "
                f"x{row['ratio']:.2f}  p99 {row['acks_0_p99_ms']:.1f} -> {row['p99_ms']:.1f} ms"
                f"  errors {row['errors']}"
            )
    return lines
