"""Medians over rounds, ratios to the baseline, the printed table and latest.json."""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import redis_work
from bench.wrk import Run

# Median cores used by other work on the machine during a scenario's runs, above which
# the table calls the scenario noisy.
NOISY_CORES = 0.3
GROWTH_MAX = 1.05  # issue 16: the cost at 100,000 messages over the cost at 10
BYTES_PER_MESSAGE_MAX = 250  # issue 16: Redis memory per 100-character message


@dataclass(frozen=True)
class Target:
    """What a scenario must reach: omni's rps at least `min_ratio` x the baseline's,
    and (when set) its p99 at most `max_p99_ratio` x the baseline's."""

    baseline: str  # the baseline it is measured against, for the table
    min_ratio: float
    max_p99_ratio: float | None = None


@dataclass
class Summary:
    rps: float
    p50_ms: float
    p99_ms: float
    runs: list[Run] = field(default_factory=list)
    p90_ms: float = 0.0
    p999_ms: float = 0.0

    @classmethod
    def of(cls, runs: Sequence[Run]) -> Summary:
        return cls(
            rps=statistics.median(r.rps for r in runs),
            p50_ms=statistics.median(r.p50_ms for r in runs),
            p99_ms=statistics.median(r.p99_ms for r in runs),
            runs=list(runs),
            p90_ms=statistics.median(r.p90_ms for r in runs),
            p999_ms=statistics.median(r.p999_ms for r in runs),
        )

    def percentiles(self) -> dict[str, float]:
        """Medians over the rounds of each round's latency percentiles, in ms."""
        return {"p50": round(self.p50_ms, 2), "p90": round(self.p90_ms, 2),
                "p99": round(self.p99_ms, 2), "p99.9": round(self.p999_ms, 2)}  # fmt: skip

    def spread(self) -> float:
        """(fastest round - slowest round) / the median, in requests/s: how much the
        rounds of one side differ within a run."""
        rates = [r.rps for r in self.runs]
        return round((max(rates) - min(rates)) / self.rps, 3) if self.rps else 0.0

    def others(self) -> dict[str, float]:
        """The busiest processes outside the bench's own, mean cores over the rounds."""
        names = {name for run in self.runs for name in run.others}
        mean = {name: sum(r.others.get(name, 0.0) for r in self.runs) / len(self.runs)
                for name in names}  # fmt: skip
        top = sorted(mean.items(), key=lambda item: -item[1])[:5]
        return {name: round(cores, 2) for name, cores in top if cores >= 0.01}

    def redis(self) -> dict[str, Any]:
        """What Redis did per request answered, medians over the runs (bench.redis_work)."""
        return redis_work.per_request(self.runs)

    def cpu_usec(self, group: str) -> float:
        """Microseconds of CPU a group of processes ("omni") used per request answered."""
        cores = self.cores().get(group, 0.0)
        return round(cores * 1e6 / self.rps, 1) if self.rps else 0.0

    def cores(self) -> dict[str, float]:
        """The median cores each part used over the runs (see bench.cpu)."""
        names = {name for run in self.runs for name in run.cpu}
        return {
            name: round(statistics.median(run.cpu.get(name, 0.0) for run in self.runs), 2)
            for name in sorted(names)
        }


def scenario_result(omni: Summary, baseline: Summary, target: Target | None) -> dict[str, Any]:
    ratio = omni.rps / baseline.rps if baseline.rps else 0.0
    result: dict[str, Any] = {
        "rps": round(omni.rps, 1),
        "p50_ms": round(omni.p50_ms, 2),
        "p99_ms": round(omni.p99_ms, 2),
        "baseline_rps": round(baseline.rps, 1),
        "baseline_p99_ms": round(baseline.p99_ms, 2),
        "ratio": round(ratio, 3),
    }
    p99_ratio = omni.p99_ms / baseline.p99_ms if baseline.p99_ms else float("inf")
    result["p99_ratio"] = round(p99_ratio, 3)
    result["percentiles_ms"] = omni.percentiles()
    result["baseline_percentiles_ms"] = baseline.percentiles()
    result["spread"] = omni.spread()
    result["baseline_spread"] = baseline.spread()
    if target is not None:
        met = ratio >= target.min_ratio
        result["target"] = f"ratio >= {target.min_ratio} x {target.baseline}"
        if target.max_p99_ratio is not None:
            result["target"] += f", p99 <= {target.max_p99_ratio} x its p99"
            met = met and p99_ratio <= target.max_p99_ratio
        result["met"] = met
    result["cores"] = omni.cores()
    result["baseline_cores"] = baseline.cores()
    result["redis_per_request"] = omni.redis()
    result["baseline_redis_per_request"] = baseline.redis()
    result["other_processes"] = omni.others()
    result["baseline_other_processes"] = baseline.others()
    result["rounds"] = {
        "rps": [round(r.rps, 1) for r in omni.runs],
        "baseline_rps": [round(r.rps, 1) for r in baseline.runs],
        "errors": sum(r.errors + r.non_2xx for r in omni.runs),
        "baseline_errors": sum(r.errors + r.non_2xx for r in baseline.runs),
    }
    return result


def growth_ratio(short: Summary, long: Summary) -> float:
    """The 100,000-message cost over the 10-message cost (cost = time per request)."""
    return short.rps / long.rps if long.rps else float("inf")


def write(path: Path, results: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")


def table(results: dict[str, Any]) -> str:
    """The scenarios, growth, memory and process scaling, as the terminal shows them."""
    lines = [
        f"{'scenario':<22}{'rps':>9}{'p50 ms':>9}{'p99 ms':>9}{'base rps':>10}"
        f"{'base p99':>10}{'ratio':>8}  target",
    ]
    for name, row in results.items():
        if not isinstance(row, dict) or "baseline_rps" not in row:
            continue
        verdict = "" if "met" not in row else ("ok   " if row["met"] else "MISS ")
        other = max(
            row.get("cores", {}).get("other", 0), row.get("baseline_cores", {}).get("other", 0)
        )
        noisy = f" (noisy: other work took {other:.2f} cores)" if other >= NOISY_CORES else ""
        lines.append(
            f"{name:<22}{row['rps']:>9.0f}{row['p50_ms']:>9.2f}{row['p99_ms']:>9.2f}"
            f"{row['baseline_rps']:>10.0f}{row['baseline_p99_ms']:>10.2f}{row['ratio']:>8.2f}"
            f"  {verdict}{row.get('target', '')}{noisy}"
        )
        lines.extend(_detail(row))
    growth = results.get("growth_ratio", {})
    if growth:
        detail = results.get("growth", {})
        lines.append("")
        lines.append(f"growth 10 -> 100,000 messages (cost ratio, target <= {GROWTH_MAX}):")
        for path, ratio in growth.items():
            rps = detail.get(path, {})
            verdict = "ok  " if ratio <= GROWTH_MAX else "MISS"
            lines.append(
                f"  {path:<20}{ratio:>6.2f}  {verdict}  "
                f"({rps.get('short_rps', 0):.0f} rps at 10, {rps.get('long_rps', 0):.0f} at 100k)"
            )
        same = detail.get("context_same_reply_ratio")
        if same is not None:
            context = detail.get("context", {})
            verdict = "ok  " if same <= GROWTH_MAX else "MISS"
            lines.append(
                f"  {'context, 20 returned':<20}{same:>6.2f}  {verdict}  "
                f"({context.get('full_rps', 0):.0f} rps at 100, the same 20 messages returned)"
            )
    memory = results.get("memory", {})
    if "bytes_per_message" in results:
        verdict = "ok" if results["bytes_per_message"] <= BYTES_PER_MESSAGE_MAX else "MISS"
        lines.append("")
        lines.append(
            f"memory: {results['bytes_per_message']:.0f} bytes per 100-char message "
            f"(target <= {BYTES_PER_MESSAGE_MAX}: {verdict}); "
            f"{memory.get('bytes_per_customer', 0):.0f} bytes per customer (with its first message)"
        )
        by_key = memory.get("bytes_per_message_by_key", {})
        if by_key:
            lines.append(
                "  per message, by key: " + ", ".join(f"{k} {v:.0f}" for k, v in by_key.items())
            )
        first = memory.get("bytes_of_a_one_message_customer_by_key", {})
        if first:
            lines.append(
                "  a one-message customer, by key: "
                + ", ".join(f"{k} {v}" for k, v in first.items())
            )
    failed = [
        name
        for name, row in results.items()
        if isinstance(row, dict) and "baseline_rps" in row and row["rounds"]["errors"]
    ]
    if failed:
        lines.append("")
        lines.append(f"WARNING: omni answered errors in {', '.join(failed)}: see the rounds")
    procs = results.get("two_processes", {})
    if procs:
        lines.append("")
        lines.append("2 processes over 1 (same run):")
        for name, row in procs.items():
            cores = row.get("two_cores", {})
            used = ", ".join(f"{k} {v:.2f}" for k, v in cores.items())
            lines.append(
                f"  {name:<20}{row['one_rps']:>8.0f} -> {row['two_rps']:>6.0f} rps  "
                f"x{row['ratio']:.2f}  (cores with 2: {used})"
            )
    return "\n".join(lines)


def _detail(row: dict[str, Any]) -> list[str]:
    """A scenario's second and third lines: both sides' percentiles and spread over the
    rounds, and what the other work on the machine was."""
    out = []
    for side, key in (("omni", ""), ("base", "baseline_")):
        pct = row.get(f"{key}percentiles_ms")
        if pct:
            out.append(
                f"    {side:<5} p50/90/99/99.9 {pct['p50']:.1f}/{pct['p90']:.1f}/{pct['p99']:.1f}/"
                f"{pct['p99.9']:.1f} ms, rounds spread {row.get(f'{key}spread', 0):.0%}"
            )
    others = row.get("other_processes", {}) | row.get("baseline_other_processes", {})
    if others:
        out.append("    other: " + ", ".join(f"{k} {v:.2f}" for k, v in others.items()))
    return out


def as_dict(run: Run) -> dict[str, Any]:
    return asdict(run) | {"rps": run.rps}
