"""Real processes for the fault tests: `omni serve`, `omni worker` and Valkey, each started
by the test that uses it and signalled by its pid (never by name).

An omni process logs to a file, not a pipe: under a few thousand requests a pipe nobody
reads fills up and the process blocks on its own log lines.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

ADMIN_KEY = "fault-test-admin-key-01"
BOT_KEY = "fault-test-bot-key-0001"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
BOT = {"Authorization": f"Bearer {BOT_KEY}"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def omni_env(config: Path, **extra: str) -> dict[str, str]:
    """The environment of an omni process reading `config` alone (no OMNI_* inherited)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMNI_")}
    env.update(
        OMNI_CONFIG=str(config),
        OMNI_API_KEYS=f"admin:{ADMIN_KEY},bot:{BOT_KEY}",
        OMNI_LOG_FORMAT="json",
        OMNI_LOG_LEVEL="info",
    )
    env.update(extra)
    return env


@dataclass
class Omni:
    """One `omni <command>` process and its log file."""

    env: dict[str, str]
    log_path: Path
    command: str = "serve"
    port: int = 0
    args: tuple[str, ...] = ()  # after the command: ("--processes", "2"), say
    process: subprocess.Popen[bytes] | None = None
    _log: Any = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Omni:
        self._log = self.log_path.open("ab")
        env = dict(self.env)
        if self.port:
            env["OMNI_SERVER_PORT"] = str(self.port)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "omni.cli", self.command, *self.args],
            env=env,
            stdout=self._log,
            stderr=self._log,
        )
        return self

    async def ready(self, timeout_s: float = 30) -> None:
        """Until /readyz answers 200 (the process must stay alive meanwhile)."""
        deadline = time.monotonic() + timeout_s
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                assert self.process is not None and self.process.poll() is None, self.tail()
                try:
                    async with session.get(
                        self.url + "/readyz", timeout=aiohttp.ClientTimeout(total=2)
                    ) as response:
                        if response.status == 200:
                            return
                except (aiohttp.ClientError, TimeoutError):
                    pass
                await asyncio.sleep(0.05)
        raise AssertionError(f"omni did not become ready: {self.tail()}")

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush, nothing finished."""
        assert self.process is not None
        os.kill(self.pid, signal.SIGKILL)
        self.process.wait(10)
        self._log.close()

    def stop(self) -> int:
        """SIGTERM and wait; the exit code."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode

    def lines(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                out.append(json.loads(line))
        return out

    def tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"


def valkey_pid(data_dir: Path) -> int:
    return int((data_dir / "valkey.pid").read_text().strip())


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status  # a zombie is gone for our purposes


async def wait_until(check: Any, timeout_s: float = 30, what: str = "condition") -> float:
    """Poll the async `check` until true; the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if await check():
            return time.monotonic() - started
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")
