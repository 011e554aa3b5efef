"""Running wrk: one run replays one request file against one URL for a fixed time."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

SCRIPT = Path(__file__).with_name("replay.lua")
INSTALL_HINT = (
    "wrk is not installed: `sudo apt-get install -y wrk` (Debian/Ubuntu) or "
    "`brew install wrk` (macOS), then run `make bench` again"
)


class WrkError(RuntimeError):
    pass


@dataclass(frozen=True)
class Run:
    """One wrk run, as replay.lua's done() reports it."""

    requests: int
    duration_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    errors: int
    non_2xx: int
    wrapped: bool  # the file ran out and was replayed from its start
    cpu: dict[str, float] = field(default_factory=dict)  # cores used, by bench.cpu.Meter
    # The busiest processes outside the bench's own ("comm pid": cores), by bench.cpu.
    others: dict[str, float] = field(default_factory=dict)
    # What Redis did during the run, by bench.redis_work: commands, command_usec, cpu_usec
    # (totals, over the primaries the server used), and the calls by command.
    redis: dict[str, float] = field(default_factory=dict)
    redis_calls: dict[str, float] = field(default_factory=dict)

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0


def wrk_binary() -> str | None:
    return shutil.which("wrk")


def parse(output: str) -> Run:
    """The run from wrk's output (the BENCH_RESULT line replay.lua writes)."""
    for line in output.splitlines():
        if line.startswith("BENCH_RESULT "):
            data = json.loads(line.removeprefix("BENCH_RESULT "))
            errors = data["errors"]
            return Run(
                requests=data["requests"],
                duration_s=data["duration_us"] / 1e6,
                p50_ms=data["p50_us"] / 1000,
                p90_ms=data["p90_us"] / 1000,
                p99_ms=data["p99_us"] / 1000,
                p999_ms=data.get("p999_us", data["max_us"]) / 1000,
                max_ms=data["max_us"] / 1000,
                errors=errors["connect"] + errors["read"] + errors["write"] + errors["timeout"],
                non_2xx=errors["status"],
                wrapped=bool(data["wrapped"]),
            )
    raise WrkError(f"wrk printed no result line:\n{output[-2000:]}")


def run(
    url: str,
    requests: Path,
    *,
    seconds: float,
    connections: int,
    threads: int = 1,
    start: int = 0,
) -> Run:
    binary = wrk_binary()
    if binary is None:
        raise WrkError(INSTALL_HINT)
    env = dict(
        os.environ,
        BENCH_REQUESTS=str(requests),
        BENCH_START=str(start),
        BENCH_THREADS=str(threads),
    )
    args = [
        binary,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout", "10s",
        "-s", str(SCRIPT),
        url,
    ]  # fmt: skip
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=seconds + 60)
    if done.returncode != 0:
        raise WrkError(f"wrk failed ({done.returncode}): {done.stderr.strip() or done.stdout}")
    return parse(done.stdout)
