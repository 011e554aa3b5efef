"""py-spy on `omni serve` while wrk runs a scenario again: where its CPU time goes.

Run only for the scenarios that miss their target (after they are measured, so the
sampling never slows a measured run), when py-spy is installed and may attach (it
needs ptrace: root, or kernel.yama.ptrace_scope 0).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.protocols import Bench, Named

RESULTS = Path(__file__).parent / "results"
TOP = 25
_AREAS = (
    ("omni/", "omni"),
    ("adapters/", "adapters"),
    ("aiohttp/", "aiohttp"),
    ("redis/", "redis-py"),
    ("structlog/", "structlog"),
    ("msgspec", "msgspec"),
    ("asyncio/", "asyncio"),
)


def py_spy() -> str | None:
    here = Path(sys.executable).with_name("py-spy")
    return str(here) if here.exists() else shutil.which("py-spy")


def scenarios(
    bench: Bench, missed: Sequence[Named], url: str, pid: int, out: dict[str, Any]
) -> None:
    binary = py_spy()
    if not missed or binary is None:
        return
    print("profiling the scenarios that missed (py-spy):", flush=True)
    for scenario in missed:
        raw = bench.work / f"profile-{scenario.name}.txt"
        seconds = max(2, round(bench.config.seconds))
        spy = subprocess.Popen(
            [binary, "record", "--pid", str(pid), "--duration", str(seconds), "--rate", "200",
             "--function", "--format", "raw", "--output", str(raw)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        run = bench.load(url, bench.scenario_file(scenario, 100), seconds=seconds)
        _, err = spy.communicate(timeout=seconds + 30)
        if spy.returncode != 0 or not raw.exists():
            bench.notes.append(f"py-spy could not profile: {err.decode(errors='replace')[-300:]}")
            return
        report = summarize(raw.read_text())
        target = RESULTS / f"profile-{scenario.name}.txt"
        target.write_text(
            f"py-spy, omni serve under {scenario.name} at {run.rps:.0f} rps\n\n{report}\n"
        )
        out[scenario.name]["profile"] = str(target.relative_to(RESULTS.parent.parent))
        print(f"  {scenario.name}: {target}", flush=True)


def _area(frame: str) -> str:
    for needle, name in _AREAS:
        if needle in frame:
            return name
    return "other (stdlib, builtins)"


def summarize(collapsed: str, top: int = TOP) -> str:
    """Self and total time by function, and self time by library, from py-spy's raw
    (collapsed stack) output."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    samples = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        # The first frame is the thread ("process 123:..."), not code.
        frames = [f for f in frames if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        samples += count
        own[frames[-1]] += count
        areas[_area(frames[-1])] += count
        for frame in set(frames):
            total[frame] += count
    if not samples:
        return "(no samples)"

    def block(title: str, counts: Counter[str], n: int) -> list[str]:
        rows = [title]
        rows += [f"  {100 * c / samples:5.1f}%  {name}" for name, c in counts.most_common(n)]
        return rows

    lines = [f"{samples} samples (busy only: idle time in the event loop is not sampled)", ""]
    lines += block("self time by library:", areas, len(areas))
    lines += ["", *block("self time by function:", own, top)]
    lines += ["", *block("total time (self + callees) by function:", total, top)]
    return "\n".join(lines)
