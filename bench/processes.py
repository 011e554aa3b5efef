"""One `omni serve` against two sharing a port (`--reuse-port`), on the single Valkey or
on the cluster, with the baseline's two processes beside them.

Only one group runs at a time: every omni process hears every live event, so an idle
one would still take CPU from the group being measured.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bench import wrk
from bench.protocols import Bench, Named
from bench.redis_work import Backend
from bench.results import Summary

PICKED = ("context_read", "messages_ingest")


def one_vs_two(
    bench: Bench, scenarios: Sequence[Named], backend: Backend | None = None, label: str = ""
) -> dict[str, Any]:
    """Rounds of omni x1 and x2 (alternating which goes first) and the baseline x2, on
    `backend` (the single Valkey when None); per scenario in PICKED, the medians."""
    picked = [s for s in scenarios if s.name in PICKED]
    warm = next(s for s in picked if s.name == "context_read")
    runs: dict[tuple[str, int], list[wrk.Run]] = {}
    base_url, base = bench.start_baseline(processes=2, backend=backend)
    try:
        for round_ in range(bench.config.side_rounds):
            for processes in (1, 2) if round_ % 2 == 0 else (2, 1):
                url, group = bench.start_omni(processes, backend=backend)
                try:
                    bench.load(url, bench.scenario_file(warm, -1), seconds=bench.config.warmup)
                    for scenario in picked:
                        run = bench.load(url, bench.scenario_file(scenario, round_))
                        runs.setdefault((scenario.name, processes), []).append(run)
                        bench.progress(scenario.name, f"{label}omni x{processes}", run)
                finally:
                    bench.stop(group)
            for scenario in picked:
                run = bench.load(base_url, bench.scenario_file(scenario, round_))
                runs.setdefault((scenario.name, 0), []).append(run)
                bench.progress(scenario.name, f"{label}baseline x2", run)
    finally:
        bench.stop(base)
    table: dict[str, Any] = {}
    for scenario in picked:
        one = Summary.of(runs[(scenario.name, 1)])
        two = Summary.of(runs[(scenario.name, 2)])
        baseline = Summary.of(runs[(scenario.name, 0)])
        table[scenario.name] = {
            "one_rps": round(one.rps, 1),
            "two_rps": round(two.rps, 1),
            "ratio": round(two.rps / one.rps, 3) if one.rps else 0.0,
            "one_p99_ms": round(one.p99_ms, 2),
            "two_p99_ms": round(two.p99_ms, 2),
            "baseline_two_rps": round(baseline.rps, 1),
            "one_cores": one.cores(),
            "two_cores": two.cores(),
        }
    return table
