"""`python -m bench.serve_cpu`: the CPU `omni serve` itself spends per request, for A/B
decisions between source trees on a busy machine.

wrk's rate on a shared machine moves with everyone else's work; the CPU time the server
process is charged per request moves less (waiting is not charged), and unlike
`bench.micro` it counts the server alone (not an in-process client) and runs as the
bench does: `omni serve` on its event loop, the bench's config (log level info, JSON to
a file), 1,000 customers with 55 messages each read in turn, as in `make bench`. User
and system time are printed apart (Python's work is user time), and Valkey's CPU per
request beside them: it does the same work for either tree, so when it moves between
rounds the machine's speed moved, and rounds are compared within themselves.

Each `--tree NAME=PATH` is a source tree served with PYTHONPATH=PATH (a git worktree of
another commit); the trees take turns each round, on the same Valkey and data, and the
least CPU per request over the rounds is printed per scenario and tree.

    python -m bench.serve_cpu --tree before=../main --tree after=.
    python -m bench.serve_cpu --scenario history_page_50 --baseline --profile /tmp/p

`--cluster` serves on a local 3x2 cluster (omni.redis_cluster) instead, omni in cluster
mode; Valkey's CPU is then the six nodes' summed.

    python -m bench.serve_cpu --cluster --scenario messages_ingest --scenario instagram_ingest
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from redis.asyncio import Redis, RedisCluster

from bench import profile, traffic, wrk
from bench.run import Server, _clean_env, free_port, omni_config, wait_ready
from bench.seed import Seeder
from omni.redis_cluster import LocalCluster, free_ports
from omni.redis_server import EmbeddedRedis

CUSTOMERS = 1000
HISTORY = 55


def _scenarios(cids: list[str], web: list[str]) -> dict[str, Callable[[str], Iterable[bytes]]]:
    senders = [traffic.sender_id(i) for i in range(CUSTOMERS)]
    return {
        "context_read": lambda _: traffic.context_reads(cids),
        "history_page_50": lambda _: traffic.history_reads(cids),
        "messages_ingest": lambda tag: traffic.messages_ingest(web, tag, 40_000),
        "instagram_ingest": lambda tag: traffic.instagram_ingest(senders, tag, 40_000),
        # The fixed cost of a read (a page of one), and of answering at all.
        "history_page_1": lambda _: (traffic.history_get(cid, 1) for cid in cids),
        "healthz": lambda _: [traffic.raw("GET", "/healthz")],
    }


async def _seed(url: str, cluster: bool) -> tuple[list[str], list[str]]:
    redis: Redis = RedisCluster.from_url(url) if cluster else Redis.from_url(url)  # type: ignore[assignment]
    try:
        seeder = Seeder(redis)
        ig = [("instagram", traffic.sender_id(i)) for i in range(CUSTOMERS)]
        web = [("web", traffic.web_id(i)) for i in range(CUSTOMERS)]
        cids = await seeder.customers(ig, HISTORY, tag="seed", text=traffic.TEXT, also=web)
        return cids, [external for _, external in web]
    finally:
        await redis.aclose()


def _times(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process: Python's work is user time; the
    system time is mostly socket writes and wake-ups, which move with the machine."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def _profile(out: Path, pid: int, url: str, requests: Path, args: argparse.Namespace) -> None:
    binary = profile.py_spy()
    if binary is None:
        raise SystemExit("py-spy is not installed")
    raw = out.with_suffix(".raw")
    seconds = max(2, round(args.seconds))
    spy = subprocess.Popen(
        [binary, "record", "--pid", str(pid), "--duration", str(seconds), "--rate", "250",
         "--function", "--format", "raw", "--output", str(raw)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    wrk.run(url, requests, seconds=seconds, connections=args.connections)
    spy.communicate(timeout=seconds + 30)
    out.write_text(profile.summarize(raw.read_text(), top=40) + "\n")
    print(f"profile: {out}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.serve_cpu", description=__doc__)
    parser.add_argument("--tree", action="append", default=[], help="NAME=PATH")
    parser.add_argument("--scenario", action="append", default=[])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--loop", default="auto")
    parser.add_argument("--baseline", action="store_true", help="bench.baseline's too")
    parser.add_argument("--profile", type=Path, help="py-spy each scenario and tree into DIR")
    parser.add_argument("--cluster", action="store_true", help="on a local 3x2 cluster")
    args = parser.parse_args(argv)
    trees = dict(tree.split("=", 1) for tree in args.tree) or {"here": "."}
    with tempfile.TemporaryDirectory(prefix="omni-serve-cpu-") as tmp:
        work = Path(tmp)
        valkey: EmbeddedRedis | LocalCluster
        if args.cluster:
            valkey = LocalCluster(work / "cluster", free_ports(6))
        else:
            valkey = EmbeddedRedis(work / "valkey", persist=False)
        valkey.start()
        valkey_pids = valkey.pids if isinstance(valkey, LocalCluster) else [valkey.pid or 0]
        servers: dict[str, Server] = {}
        try:
            cids, web = asyncio.run(_seed(valkey.url, args.cluster))
            scenarios = _scenarios(cids, web)
            chosen = args.scenario or list(scenarios)
            omni_config(work / "omni.toml", valkey.url)
            urls = {}
            for name, path in trees.items():
                port = free_port()
                env = _clean_env() | {
                    "OMNI_CONFIG": str(work / "omni.toml"),
                    "OMNI_SERVER_EVENT_LOOP": args.loop,
                    "PYTHONPATH": str(Path(path).resolve()),
                    "OMNI_REDIS_CLUSTER": "true" if args.cluster else "false",
                }
                # -P: the tree on PYTHONPATH, not the working directory's omni, is served.
                command = [sys.executable, "-P", "-m", "omni.cli", "serve", "--port", str(port)]
                servers[name] = Server(name, command, work / f"{name}.log", env)
                urls[name] = f"http://127.0.0.1:{port}"
            if args.baseline and not args.cluster:
                port = free_port()
                command = [sys.executable, "-m", "bench.baseline", "--port", str(port),
                           "--redis", valkey.url, "--loop", args.loop]  # fmt: skip
                servers["baseline"] = Server("baseline", command, work / "bl.log", _clean_env())
                urls["baseline"] = f"http://127.0.0.1:{port}"
            for name, url in urls.items():
                wait_ready(url, [servers[name]])
            best: dict[tuple[str, str], tuple[float, float, float]] = {}
            users: dict[tuple[str, str], list[float]] = {}
            order = list(urls)
            for round_ in range(args.rounds):
                for scenario in chosen:
                    for name in order if round_ % 2 == 0 else reversed(order):
                        requests = work / f"{scenario}-{name}-{round_}.req"
                        tag = f"{name}-{round_}-{os.getpid()}"
                        traffic.write_requests(requests, scenarios[scenario](tag))
                        pid = servers[name].pid
                        user, system = _times(pid)
                        redis_before = sum(sum(_times(p)) for p in valkey_pids)
                        run = wrk.run(urls[name], requests, seconds=args.seconds,
                                      connections=args.connections)  # fmt: skip
                        user_after, system_after = _times(pid)
                        redis_spent = sum(sum(_times(p)) for p in valkey_pids) - redis_before
                        per = 1e6 / max(1, run.requests)
                        user, system = (user_after - user) * per, (system_after - system) * per
                        key = (scenario, name)
                        was = best.get(key, (float("inf"), 0.0, 0.0))
                        if user + system < was[0]:
                            best[key] = (user + system, user, system)
                        users.setdefault(key, []).append(user)
                        failed = run.errors + run.non_2xx
                        bad = f" ({failed} errors)" if failed else ""
                        print(f"round {round_ + 1} {scenario:<16} {name:<10} {run.rps:7.0f} rps "
                              f"{user + system:6.0f} us CPU/request (user {user:.0f}, "
                              f"system {system:.0f}); Valkey {redis_spent * per:.0f} us{bad}",
                              flush=True)  # fmt: skip
            if args.profile:
                args.profile.mkdir(parents=True, exist_ok=True)
                for scenario in chosen:
                    for name in trees:
                        _profile(args.profile / f"{scenario}-{name}.txt", servers[name].pid,
                                 urls[name], work / f"{scenario}-{name}-0.req", args)  # fmt: skip
            print("least CPU per request (server process only):")
            for (scenario, name), (total, user, system) in best.items():
                least_user = min(users[scenario, name])
                print(f"  {scenario:<16} {name:<10} {total:6.0f} us (user {user:.0f}, system "
                      f"{system:.0f}); least user time {least_user:.0f} us")  # fmt: skip
        finally:
            for server in servers.values():
                server.stop()
            valkey.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
