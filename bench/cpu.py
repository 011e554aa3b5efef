"""Where the machine's CPU went during a run, in cores: the servers, Valkey, wrk, and
everything else (other work on the machine: a run with much of it is a noisy one).

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


def process_seconds(pid: int) -> float:
    """CPU time (user + system) a process has used."""
    try:
        # Fields after the ")" that ends the command name: state is the first, utime
        # and stime are the 12th and 13th (14th and 15th of the whole line).
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


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

    def _sample(self) -> dict[str, float]:
        sample = {name: sum(map(process_seconds, pids)) for name, pids in self.groups.items()}
        return sample | {"wrk": children_seconds(), "machine": machine_seconds()}

    def __enter__(self) -> Meter:
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
