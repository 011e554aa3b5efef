"""Where the machine's CPU went during a run, in cores: the servers, Valkey, wrk, and
everything else (other work on the machine: a run with much of it is a noisy one).

"Other" is named too (`Meter.others`): the busiest processes outside the bench's own
by command name and pid, and the finished children of the bench's servers (Valkey's
append-only-file rewrite is a child that forks, works and exits within a run: only its
parent's children time shows it).

Linux only (/proc); elsewhere every figure is 0.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat(pid: int | str) -> tuple[str, float, float]:
    """(command name, CPU seconds, CPU seconds of its finished children) of a process."""
    try:
        line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "", 0.0, 0.0
    # Fields after the ")" that ends the command name: state is the first, utime and
    # stime the 12th and 13th, cutime and cstime the 14th and 15th.
    head, _, rest = line.rpartition(")")
    name, fields = head.partition("(")[2], rest.split()
    own = (int(fields[11]) + int(fields[12])) / _TICK
    children = (int(fields[13]) + int(fields[14])) / _TICK
    return name, own, children


def process_seconds(pid: int) -> float:
    """CPU time (user + system) a process has used."""
    return _stat(pid)[1]


def every_process() -> dict[int, tuple[str, float]]:
    """pid -> (command name, CPU seconds) of every process on the machine."""
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return {}
    out = {}
    for pid in pids:
        name, own, _ = _stat(pid)
        if name:
            out[pid] = (name, own)
    return out


def machine_seconds() -> float:
    """CPU time every core has spent busy since boot."""
    try:
        first = Path("/proc/stat").read_text().splitlines()[0].split()
    except OSError:
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in first[1:9])
    return (user + nice + system + irq + softirq + steal) / _TICK


def children_seconds() -> float:
    """CPU time of this process's finished children (wrk, once it has exited)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Meter:
    """`with Meter({"omni": [pid], ...}) as meter:` around a wrk run; then
    `meter.cores` has each group's cores, "wrk" and "other"."""

    def __init__(self, groups: Mapping[str, Sequence[int]]) -> None:
        self.groups = {name: list(pids) for name, pids in groups.items()}
        self.cores: dict[str, float] = {}
        self.others: dict[str, float] = {}

    def _sample(self) -> dict[str, float]:
        sample = {name: sum(map(process_seconds, pids)) for name, pids in self.groups.items()}
        return sample | {"wrk": children_seconds(), "machine": machine_seconds()}

    def _children(self) -> dict[str, float]:
        return {
            f"{name}'s finished children": sum(_stat(pid)[2] for pid in pids)
            for name, pids in self.groups.items()
        }

    def __enter__(self) -> Meter:
        self._processes, self._children_at = every_process(), self._children()
        self._start, self._at = self._sample(), time.monotonic()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        end, elapsed = self._sample(), time.monotonic() - self._at
        if elapsed <= 0:
            return
        used = {name: (end[name] - self._start[name]) / elapsed for name in end}
        machine = used.pop("machine")
        used["other"] = max(0.0, machine - sum(used.values()))
        self.cores = {name: round(value, 2) for name, value in used.items()}
        ours = {pid for pids in self.groups.values() for pid in pids}
        named = {
            name: end_children - self._children_at[name]
            for name, end_children in self._children().items()
        }
        for pid, (name, seconds) in every_process().items():
            if pid not in ours and pid != os.getpid():
                named[f"{name} {pid}"] = seconds - self._processes.get(pid, (name, 0.0))[1]
        busiest = sorted(named.items(), key=lambda item: -item[1])[:5]
        self.others = {
            name: round(seconds / elapsed, 2)
            for name, seconds in busiest
            if seconds / elapsed >= 0.01
        }
