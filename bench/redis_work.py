"""What Redis did for a run: commands and CPU, from INFO before and after it (issue 14's
"Redis work per message"), so an operator can size Redis on paper.

    commands       calls counted by INFO commandstats (every node read, summed): the
                   commands a Lua script calls are counted too, as Redis counts them
    scripts        of those, script calls (EVALSHA and its kin)
    command_usec   execution time of the commands that are not scripts, whoever called
                   them (commandstats usec)
    script_usec    execution time of the scripts, the commands they call included (so
                   the two overlap: Redis counts a script's calls under their own names too)
    cpu_usec       the server process's CPU (INFO cpu: used_cpu_user + used_cpu_sys): the
                   above without overlap, plus reading, parsing and answering, and feeding
                   the replicas. The figure to size with.
    busiest_share  on a cluster, the busiest primary's part of cpu_usec (1/3 is even: the
                   service-wide keys, one each, make one node busier)

Read from the primaries only (on a cluster, every primary, summed): the replicas' work
is the same writes applied again, and omni never reads from them. The INFO calls these
snapshots make are left out of the counts. Whatever else the servers did during the
run (an idle omni's timers, the events it listens to) is in the figures, as it would be
in production; the bench keeps it small by running one side at a time.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from redis import Redis

# The snapshots' own commands, not the run's.
OWN = frozenset({"info"})
SCRIPTS = frozenset({"eval", "evalsha", "eval_ro", "evalsha_ro", "fcall", "fcall_ro"})


@dataclass(frozen=True)
class Backend:
    """The Redis a server uses: its URL, whether it is a cluster, the primaries whose
    INFO a run reads and the pids (every node's) its CPU is counted from."""

    url: str
    cluster: bool
    primaries: tuple[str, ...]
    pids: tuple[int, ...]


@dataclass(frozen=True)
class Snapshot:
    calls: dict[str, int] = field(default_factory=dict)  # command name -> calls
    command_usec: int = 0
    script_usec: int = 0
    cpu_s: float = 0.0
    node_cpu_s: tuple[float, ...] = ()


def snapshot(urls: Sequence[str]) -> Snapshot:
    """The counters of every node in `urls`, summed."""
    calls: dict[str, int] = {}
    usec, script_usec, cpu = 0, 0, 0.0
    nodes: list[float] = []
    for url in urls:
        client = Redis.from_url(url)
        try:
            stats: dict[str, Any] = client.info("commandstats")
            used: dict[str, Any] = client.info("cpu")
        finally:
            client.close()
        for name, row in stats.items():
            command = name.removeprefix("cmdstat_").lower()
            if command in OWN:
                continue
            calls[command] = calls.get(command, 0) + int(row["calls"])
            if command in SCRIPTS:
                script_usec += int(row["usec"])
            else:
                usec += int(row["usec"])
        nodes.append(float(used["used_cpu_user"]) + float(used["used_cpu_sys"]))
        cpu += nodes[-1]
    return Snapshot(calls, usec, script_usec, cpu, tuple(nodes))


def delta(before: Snapshot, after: Snapshot) -> tuple[dict[str, float], dict[str, float]]:
    """(totals, calls by command) between two snapshots."""
    calls = {
        name: float(count - before.calls.get(name, 0))
        for name, count in after.calls.items()
        if count > before.calls.get(name, 0)
    }
    totals = {
        "commands": sum(calls.values()),
        "scripts": sum(count for name, count in calls.items() if name in SCRIPTS),
        "command_usec": float(after.command_usec - before.command_usec),
        "script_usec": float(after.script_usec - before.script_usec),
        "cpu_usec": round((after.cpu_s - before.cpu_s) * 1e6, 1),
    }
    used = [a - b for a, b in zip(after.node_cpu_s, before.node_cpu_s, strict=True)]
    if sum(used) > 0:
        totals["busiest_share"] = round(max(used) / sum(used), 3)
    return totals, calls


class Measured(Protocol):
    """A wrk run with what Redis did during it (bench.wrk.Run)."""

    @property
    def requests(self) -> int: ...
    @property
    def redis(self) -> dict[str, float]: ...
    @property
    def redis_calls(self) -> dict[str, float]: ...


def per_request(runs: Sequence[Measured]) -> dict[str, Any]:
    """Medians over the runs of what Redis did per request answered."""
    rows = [run for run in runs if run.requests and run.redis]
    if not rows:
        return {}

    def median(values: Sequence[float]) -> float:
        return statistics.median(values)

    out: dict[str, Any] = {
        key: round(median([run.redis[key] / run.requests for run in rows]), 2)
        for key in ("commands", "scripts", "command_usec", "script_usec", "cpu_usec")
    }
    names = sorted({name for run in rows for name in run.redis_calls})
    by_command = {
        name: round(median([run.redis_calls.get(name, 0.0) / run.requests for run in rows]), 2)
        for name in names
    }
    shares = [run.redis["busiest_share"] for run in rows if "busiest_share" in run.redis]
    if shares:
        out["busiest_share"] = round(median(shares), 3)
    out["by_command"] = {name: calls for name, calls in by_command.items() if calls >= 0.01}
    return out
