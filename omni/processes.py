"""`omni serve --processes N`: one parent supervising N `omni serve` children that share
one port (SO_REUSEPORT: the kernel spreads the connections over them) and one Redis.

The parent serves no request. Without `redis.url` it owns the embedded Valkey (the
data-dir lock and the server's supervisor, as a lone `omni serve` would) and hands its
socket to the children as `OMNI_REDIS_URL`, so no child tries to start one of its own.
Only the first child runs the in-process delivery worker (`outbox.in_process_worker`):
how many workers deliver is the operator's choice (`omni worker` processes), not a
side effect of the web processes' count; either way a delivery is taken by one worker
of the queue's consumer group at a time.

Each child holds one end of a socket pair with the parent. It writes one byte once it
serves (aiohttp calls `print` after its sites are listening), so the parent knows a
child that exits before that refused to start (a bad setting, a port it cannot bind):
the parent stops the others and exits with that child's code instead of restarting it
forever. A child that exits after that crashed: it is started again (with a backoff
while it keeps failing). The child reads its end until EOF: when the parent dies,
however it dies, the children stop on their own.

SIGTERM or SIGINT to the parent stops every child gracefully (SIGTERM, each finishing
its requests within `server.shutdown_timeout`), then the embedded server. Each child
runs in a session of its own, so a terminal's Ctrl-C reaches the parent alone and each
child is signalled once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass, field

import structlog

from omni.redis_server import EmbeddedRedis
from omni.settings import Settings

log = structlog.get_logger("omni.processes")
_POLL_S = 0.1
_RESTART_BACKOFF_S = (0.5, 10.0)
_HEALTHY_S = 30.0  # a child up this long resets its backoff


@dataclass
class _Child:
    slot: int
    process: subprocess.Popen[bytes] | None = None
    link: socket.socket | None = None
    ready: bool = False
    started: float = 0.0
    restarts: int = 0
    backoff: float = _RESTART_BACKOFF_S[0]
    due: float = 0.0  # when to start it again after a crash
    waiting: bool = False

    def poll(self) -> int | None:
        """The exit code once exited; notes readiness on the way."""
        assert self.process is not None and self.link is not None
        if not self.ready:
            with suppress(OSError):  # BlockingIOError: nothing yet
                self.ready = self.link.recv(1) != b""
        return self.process.poll()


@dataclass
class ProcessGroup:
    """The children of one `omni serve --processes N`."""

    settings: Settings
    count: int
    host: str
    port: int
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    children: list[_Child] = field(default_factory=list)

    def _spawn(self, child: _Child, redis_url: str) -> None:
        parent_end, child_end = socket.socketpair()
        parent_end.setblocking(False)
        env = dict(self.env)
        env["OMNI_REDIS_URL"] = redis_url
        if child.slot > 0:
            env["OMNI_OUTBOX_IN_PROCESS_WORKER"] = "false"
        argv = [sys.executable, "-m", "omni.cli", "serve", "--host", self.host,
                "--port", str(self.port), "--reuse-port",
                "--supervisor-fd", str(child_end.fileno())]  # fmt: skip
        # A session of its own: a terminal's Ctrl-C reaches the parent alone, which
        # stops each child once (a second signal would cut a child's shutdown short).
        child.process = subprocess.Popen(  # noqa: S603 - our own argument list
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            pass_fds=(child_end.fileno(),),
            start_new_session=True,
        )
        child_end.close()
        child.link, child.ready, child.started = parent_end, False, time.monotonic()
        log.info("process started", slot=child.slot, pid=child.process.pid)

    def _reap(self, child: _Child) -> None:
        if child.link is not None:
            child.link.close()
        child.link = None

    async def run(self, stop: asyncio.Event, redis_url: str) -> int:
        """Until `stop` is set (0), or a child refuses to start (its exit code)."""
        self.children = [_Child(slot) for slot in range(self.count)]
        for child in self.children:
            self._spawn(child, redis_url)
        try:
            while not stop.is_set():
                with suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), _POLL_S)
                refused = self._watch(redis_url)
                if refused is not None:
                    return refused
            return 0
        finally:
            await asyncio.to_thread(self._stop_all)

    def _watch(self, redis_url: str) -> int | None:
        now = time.monotonic()
        for child in self.children:
            if child.waiting:
                if now >= child.due:
                    child.waiting = False
                    self._spawn(child, redis_url)
                continue
            was_ready = child.ready
            code = child.poll()
            if child.ready and not was_ready:
                assert child.process is not None
                log.info("process serving", slot=child.slot, pid=child.process.pid)
            if code is None:
                if child.ready and now - child.started > _HEALTHY_S:
                    child.backoff = _RESTART_BACKOFF_S[0]
                continue
            self._reap(child)
            if not child.ready and child.restarts == 0:
                log.error("process refused to start", slot=child.slot, code=code)
                return code or 1
            child.restarts += 1
            child.waiting, child.due = True, now + child.backoff
            log.error(
                "process exited; restarting it",
                slot=child.slot,
                code=code,
                restarts=child.restarts,
                retry_in_s=child.backoff,
            )
            child.backoff = min(child.backoff * 2, _RESTART_BACKOFF_S[1])
        return None

    def _stop_all(self) -> None:
        live = [c for c in self.children if c.process is not None and c.process.poll() is None]
        for child in live:
            assert child.process is not None
            with suppress(ProcessLookupError):
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.settings.server.shutdown_timeout + 5
        for child in live:
            assert child.process is not None
            try:
                child.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("process did not stop; killing it", pid=child.process.pid)
                child.process.kill()
                child.process.wait()
        for child in self.children:
            self._reap(child)


async def serve_processes(settings: Settings, count: int, env: Mapping[str, str]) -> int:
    """The parent of `omni serve --processes N` (settings already at its host and port);
    its exit code. Raises ConfigError when the embedded server cannot start."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    embedded = None
    supervisor: asyncio.Task[None] | None = None
    url = settings.redis.url
    if not url:
        embedded = EmbeddedRedis(
            settings.redis.data_dir, fsync=settings.redis.fsync, owner_port=settings.server.port
        )
        await asyncio.to_thread(embedded.start)
        url = embedded.url
        log.info("embedded redis started", data_dir=str(embedded.data_dir), pid=embedded.pid)
        supervisor = asyncio.create_task(embedded.supervise(), name="omni-redis-supervisor")
    group = ProcessGroup(settings, count, settings.server.host, settings.server.port, dict(env))
    try:
        return await group.run(stop, url)
    finally:
        if supervisor is not None:
            supervisor.cancel()
            await asyncio.gather(supervisor, return_exceptions=True)
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)
            log.info("embedded redis stopped")


def supervised(fd: int) -> Callable[..., None]:
    """In a child: stop (SIGTERM to itself) when the parent's end of `fd` closes; the
    callable returned, given to aiohttp as `print`, tells the parent it serves."""

    def watch() -> None:
        with suppress(OSError):
            while os.read(fd, 64):
                pass
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="omni-parent-watch", daemon=True).start()

    def serving(*_: object) -> None:
        with suppress(OSError):
            os.write(fd, b"r")

    return serving
