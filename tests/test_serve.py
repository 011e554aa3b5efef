"""`omni serve` as a user runs it: embedded Redis, data kept across a restart, a clean
stop on SIGTERM, and one clear line for a bad setting."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.single_server(
    "omni serve on its own embedded Valkey, or stopped by a bad setting: nothing here "
    "uses the session's Redis, so the cluster run would repeat the single-server run"
)

KEY = "serve-test-admin-key"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _env(data_dir: Path, port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMNI_")}
    env.update(
        OMNI_CONFIG=str(data_dir / "none.toml"),
        OMNI_REDIS_DATA_DIR=str(data_dir),
        OMNI_SERVER_PORT=str(port),
        OMNI_API_KEYS=f"admin:{KEY}",
        OMNI_LOG_FORMAT="json",
    )
    env.update(extra)
    (data_dir / "none.toml").write_text("")
    return env


def _call(port: int, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def _serve(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "omni.cli", "serve"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _wait_ready(process: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
        try:
            if _call(port, "/readyz")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError("omni serve did not become ready")


def _stop(process: subprocess.Popen[bytes]) -> tuple[int, str]:
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=20)
    return process.returncode, err.decode()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purposes.
    status = Path(f"/proc/{pid}/status").read_text()
    return "\nState:\tZ" not in status


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "var"


def test_serve_keeps_data_across_a_restart_and_stops_cleanly(data_dir: Path) -> None:
    data_dir.mkdir()
    port = _free_port()
    env = _env(data_dir, port)
    process = _serve(env)
    try:
        _wait_ready(process, port)
        status, message = _call(
            port,
            "/v1/messages",
            {"channel": "web", "external_id": "v-1", "channel_message_id": "1", "text": "hello"},
        )
        assert status == 201
        pid = int((data_dir / "valkey.pid").read_text())
        assert _alive(pid)
    finally:
        code, err = _stop(process)
    assert code == 0, err
    assert not _alive(pid), "the embedded server outlived omni"
    assert list(data_dir.glob("appendonly*")), "no append-only files were written"

    process = _serve(env)
    try:
        _wait_ready(process, port)
        status, context = _call(port, f"/v1/customers/{message['customer_id']}/context")
        assert status == 200
        assert [m["text"] for m in context["recent_messages"]] == ["hello"]
    finally:
        code, err = _stop(process)
    assert code == 0, err
    # Logs are JSON lines, with no message text in them.
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert any(line.get("event") == "request" for line in lines)
    assert "hello" not in err


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ({"OMNI_SERVER_PORT": "eighty"}, "server.port"),
        ({"OMNI_API_KEYS": "boss:some-long-key"}, "OMNI_API_KEYS"),
        ({"OMNI_LOG_LEVEL": "loud"}, "log.level"),
    ],
)
def test_a_bad_setting_fails_with_one_line_naming_it(
    data_dir: Path, extra: dict[str, str], named: str
) -> None:
    data_dir.mkdir()
    env = _env(data_dir, _free_port(), **extra)
    result = subprocess.run(
        [sys.executable, "-m", "omni.cli", "serve"], env=env, capture_output=True, timeout=20
    )
    assert result.returncode == 2
    err = result.stderr.decode().strip()
    assert len(err.splitlines()) == 1, err
    assert named in err
    assert "Traceback" not in err
