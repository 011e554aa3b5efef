"""`python -m bench.ab`: the rates of source trees side by side, under wrk, with the
baseline in the same rounds: for a change whose effect is not in omni's CPU per request
(`bench.serve_cpu`) but in how omni and Valkey share the time, such as when a pipeline
is sent.

Each `--tree NAME=PATH` is a source tree (a git worktree of another commit) served as
`omni serve` on one Valkey, seeded as `make bench` seeds it; each round every tree and
the baseline run the scenario in turn (the order reversed every other round), and the
medians are printed as ratios to the baseline's. Trees served in turn share the machine,
so a difference under ~10% between two trees in one run is within its noise: run again.

    python -m bench.ab --tree before=../main --tree after=.
    python -m bench.ab --tree after=. --scenario messages_ingest --rounds 5 --processes 2
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
from pathlib import Path

from bench import run, wrk
from omni.redis_server import EmbeddedRedis


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ab")
    parser.add_argument("--tree", action="append", default=[], help="NAME=PATH")
    parser.add_argument("--scenario", action="append", default=[], help="default: the ingests")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--processes", type=int, default=1, help="omni processes a tree")
    args = parser.parse_args(argv)
    trees = {name: Path(path) for name, path in (t.split("=", 1) for t in args.tree)}
    if not trees:
        parser.error("name at least one --tree NAME=PATH")
    if wrk.wrk_binary() is None:
        print(f"bench.ab: {wrk.INSTALL_HINT}")
        return 2
    wanted = args.scenario or ["messages_ingest", "instagram_ingest"]
    config = run.Config(seconds=args.seconds, rounds=args.rounds, profile=False)
    with tempfile.TemporaryDirectory(prefix="omni-ab-") as work:
        server = EmbeddedRedis(Path(work) / "valkey", persist=True)
        server.start()
        bench = run.Bench(config, Path(work), server)
        try:
            run.omni_config(bench.work / "omni.toml", server.url)
            asyncio.run(run.seed(bench, growth=False))
            urls = {
                name: bench.start_omni(args.processes, tree=tree)[0] for name, tree in trees.items()
            }
            urls["baseline"] = bench.start_baseline()[0]
            for scenario in run.scenarios(bench):
                if scenario.name in wanted:
                    _rounds(bench, scenario, urls)
        finally:
            for process in list(bench.servers):
                process.stop()
            server.stop()
    return 0


def _rounds(bench: run.Bench, scenario: run.Scenario, urls: dict[str, str]) -> None:
    runs = bench.rounds(scenario, urls)
    rates = {name: [load.rps for load in loads] for name, loads in runs.items()}
    base = statistics.median(rates["baseline"])
    for name, rps in rates.items():
        median = statistics.median(rps)
        print(f"  {scenario.name:<24} {name:<12} {median:>7.0f} rps  x{median / base:.3f}")


if __name__ == "__main__":
    raise SystemExit(main())
