"""The bench's two trust sections (issue 15): what `[redis] fsync = "always"` costs the
ingest, and whether one process's memory stays flat under sustained load (the soak).

fsync: the same Valkey, the same data and the same `omni serve`, with the server's
appendfsync switched between rounds by CONFIG SET (what `fsync = "always"` starts the
embedded server with), so the only difference between the two sides is the fsync.

soak: one fresh `omni serve`, warmed up, its resident memory (VmRSS of omni's own
process, not Valkey's) read; then the mixed traffic at wrk's pace until the requests
are sent, and VmRSS read again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from redis.asyncio import Redis

from bench import traffic, wrk
from bench.protocols import Bench, Named
from bench.results import Summary

Fsync = Literal["always", "everysec"]


FSYNC_SCENARIOS = ("messages_ingest", "instagram_ingest")


# -- fsync -------------------------------------------------------------------------------


async def set_fsync(url: str, mode: Fsync) -> None:
    """Switch a running Valkey's appendfsync (takes effect on its next write)."""
    redis = Redis.from_url(url)
    try:
        await redis.config_set("appendfsync", mode)
    finally:
        await redis.aclose()


def fsync_cost(bench: Bench, picked: Sequence[Named], omni_url: str, out: dict[str, Any]) -> None:
    """Ingest with appendfsync always and everysec, alternating which goes first."""
    print('fsync "always" vs "everysec" (ingest, same Valkey and omni):', flush=True)
    runs: dict[tuple[str, Fsync], list[wrk.Run]] = {}
    order: tuple[Fsync, Fsync] = ("always", "everysec")
    try:
        for round_ in range(bench.config.side_rounds):
            for mode in order if round_ % 2 == 0 else tuple(reversed(order)):
                asyncio.run(set_fsync(bench.redis.url, mode))
                for scenario in picked:
                    run = bench.load(omni_url, bench.scenario_file(scenario, round_))
                    runs.setdefault((scenario.name, mode), []).append(run)
                    bench.progress(scenario.name, f"fsync {mode}", run)
    finally:
        asyncio.run(set_fsync(bench.redis.url, "everysec"))
    out["fsync_always"] = fsync_result(
        {s.name: (runs[(s.name, "always")], runs[(s.name, "everysec")]) for s in picked}
    )


def fsync_result(runs: dict[str, tuple[list[wrk.Run], list[wrk.Run]]]) -> dict[str, Any]:
    """Per scenario: medians with always and with everysec, and always ÷ everysec; at
    the top, the ingest as a whole (the scenarios' summed rps, their worst p99)."""
    table: dict[str, Any] = {}
    for name, (always_runs, everysec_runs) in runs.items():
        always, everysec = Summary.of(always_runs), Summary.of(everysec_runs)
        table[name] = {
            "rps": round(always.rps, 1),
            "everysec_rps": round(everysec.rps, 1),
            "ratio": round(always.rps / everysec.rps, 3) if everysec.rps else 0.0,
            "p99_ms": round(always.p99_ms, 2),
            "everysec_p99_ms": round(everysec.p99_ms, 2),
            "errors": sum(r.errors + r.non_2xx for r in always_runs + everysec_runs),
        }
    rows = list(table.values())
    rps = sum(r["rps"] for r in rows)
    everysec_rps = sum(r["everysec_rps"] for r in rows)
    return {
        "rps": round(rps, 1),
        "everysec_rps": round(everysec_rps, 1),
        "ratio": round(rps / everysec_rps, 3) if everysec_rps else 0.0,
        "p99_ms": max((r["p99_ms"] for r in rows), default=0.0),
        "everysec_p99_ms": max((r["everysec_p99_ms"] for r in rows), default=0.0),
        "scenarios": table,
        "note": "the embedded Valkey's appendfsync switched by CONFIG SET between rounds "
        "(same server, data and omni process); rps summed over the scenarios, p99 the worst "
        "of them; ratio = always rps / everysec rps",
    }


# -- soak --------------------------------------------------------------------------------


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """A process's resident memory in MB, from /proc/<pid>/status (VmRSS now, VmHWM
    the peak)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            kb = int(line.split()[1])  # "VmRSS:   123456 kB"
            return kb / 1024
    raise ValueError(f"/proc/{pid}/status has no {field}")


@dataclass
class Paced:
    """Requests sent by wrk runs over one request file, each run starting where the
    last stopped (the file's ingests are new messages until it is used up)."""

    requests: int = 0
    errors: int = 0
    runs: int = 0


def send(bench: Bench, url: str, path: Path, count: int, rate: float, sent: Paced) -> Paced:
    """wrk runs of at most 30 s until `count` more requests were answered; each run's
    length from the rate so far (wrk runs for whole seconds: the last may overshoot)."""
    target = sent.requests + count
    while sent.requests < target:
        seconds = min(30.0, max(1.0, (target - sent.requests) / max(rate, 1.0)))
        run = bench.load(url, path, seconds=seconds, start=sent.requests)
        if not run.requests:  # else this would never end
            raise RuntimeError(f"soak: wrk got no answer from {url} in {seconds:.0f} s")
        sent.requests += run.requests
        sent.errors += run.errors + run.non_2xx
        sent.runs += 1
        rate = run.rps or rate
    return sent


def soak(bench: Bench, out: dict[str, Any]) -> None:
    config = bench.config
    total, warm = config.soak_requests, config.soak_warmup
    print(f"soak: one omni serve, {warm:,} requests warm-up, then {total:,} mixed:", flush=True)
    web = [traffic.web_id(i) for i in range(config.customers)]
    # One file for warm-up and soak, long enough that no ingest is sent twice.
    path = bench.request_file(
        "soak", traffic.mixed(bench.cids, web, "soak", int((warm + total) * 1.2) + 10_000)
    )
    url, group = bench.start_omni()
    pid = group[0].pid
    try:
        sent = send(bench, url, path, warm, 2000.0, Paced())
        rss_warm = rss_mb(pid)
        warm_sent = sent.requests
        print(f"  after warm-up ({warm_sent:,} requests): omni RSS {rss_warm:.1f} MB", flush=True)
        sent = send(bench, url, path, total, 2000.0, sent)
        rss_after, peak = rss_mb(pid), rss_mb(pid, "VmHWM")
    finally:
        bench.stop(group)
    out["soak"] = soak_result(rss_warm, rss_after, peak, sent.requests - warm_sent, sent.errors)
    print(
        f"  after {out['soak']['requests']:,} more: omni RSS {rss_after:.1f} MB, growth "
        f"{out['soak']['growth_mb']:+.1f} MB ({out['soak']['growth_pct']:+.1f}%)",
        flush=True,
    )


def soak_result(
    rss_warm: float, rss_after: float, peak: float, requests: int, errors: int
) -> dict[str, Any]:
    growth = rss_after - rss_warm
    return {
        "rss_warm_mb": round(rss_warm, 1),
        "rss_after_mb": round(rss_after, 1),
        "rss_peak_mb": round(peak, 1),
        "growth_mb": round(growth, 1),
        "growth_pct": round(100 * growth / rss_warm, 1) if rss_warm else 0.0,
        "requests": requests,
        "errors": errors,
        "note": "VmRSS of the omni serve process (not Valkey's) after the warm-up and after "
        "the requests: the mixed traffic (4 context reads, 1 web ingest) at wrk's pace",
    }


# -- the table ---------------------------------------------------------------------------


def table(results: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    fsync = results.get("fsync_always")
    if fsync:
        lines += ["", 'fsync "always" vs "everysec" (ingest, same run):']
        for name, row in fsync["scenarios"].items():
            lines.append(
                f"  {name:<20}{row['everysec_rps']:>8.0f} -> {row['rps']:>6.0f} rps  "
                f"x{row['ratio']:.2f}  p99 {row['everysec_p99_ms']:.1f} -> {row['p99_ms']:.1f} ms"
            )
        lines.append(f"  {'ingest, always ÷ everysec':<28}x{fsync['ratio']:.2f}")
    soaked = results.get("soak")
    if soaked:
        lines += [
            "",
            f"soak: omni RSS {soaked['rss_warm_mb']:.1f} MB after warm-up -> "
            f"{soaked['rss_after_mb']:.1f} MB after {soaked['requests']:,} requests "
            f"({soaked['growth_mb']:+.1f} MB, {soaked['growth_pct']:+.1f}%; peak "
            f"{soaked['rss_peak_mb']:.1f} MB)",
        ]
    limits = results.get("limits")
    if limits:
        lines += [
            "",
            f"limits: max_in_flight {limits['max_in_flight']:,}; {limits['rate_limits']}; "
            f"non-2xx answers from omni over the whole bench: {limits['omni_non_2xx']}",
        ]
    return lines
