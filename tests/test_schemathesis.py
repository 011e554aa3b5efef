"""Every route, from its schema: schemathesis over /openapi.json with all of its checks,
against `omni serve` on a local port (every channel configured, a real Valkey), once
with each role's key and once with none. 0 server errors, 0 answers the document does
not describe, and no traceback in the server's log.

The run is bounded (EXAMPLES per operation, a fixed seed, no example database), so CI
sees the same cases every time; `make test PYTEST_ARGS="tests/test_schemathesis.py -s"`
prints the figures. `GET /v1/events` is left out: a stream that answers 200 never ends,
which schemathesis can only report as a timeout (tests/test_events.py covers it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.test_serve import _free_port
from tests.whatsapp_graph import ACCESS_TOKEN, PHONE_NUMBER_ID

pytestmark = pytest.mark.single_server(
    "explores the HTTP interface's shapes (routes, statuses, problem documents), which do "
    "not depend on the storage mode: the single-server run covers it, and keeps CI under "
    "15 minutes"
)

EXAMPLES = 3
SEED = 20261207
ROLES = {"none": None, "bot": "dev-bot-key", "agent": "dev-agent-key", "admin": "dev-admin-key"}
# The coverage phase (every boundary of every schema, some 3,000 cases) runs with the
# admin key, which every operation admits; the other roles get the examples and a
# bounded fuzzing phase, where what differs is what their key may reach.
PHASES = {"admin": "examples,coverage,fuzzing"}


@pytest.fixture(scope="module")
def served(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """`omni serve` with config/omni.toml's development keys and secrets (every channel
    on), on the suite's Valkey, sending nothing anywhere: no worker; Graph, Twilio and
    SMTP addresses where nothing listens."""
    tmp = tmp_path_factory.mktemp("schemathesis")
    port, graph_port = _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMNI_")}
    env.update(
        OMNI_REDIS_URL=redis_url,
        OMNI_SERVER_PORT=str(port),
        OMNI_SERVER_PUBLIC_URL=f"http://127.0.0.1:{port}",
        OMNI_OUTBOX_IN_PROCESS_WORKER="false",
        OMNI_INSTAGRAM_GRAPH_URL="http://127.0.0.1:9/v22.0",
        # The WhatsApp media route asks a local Graph API (tests/whatsapp_graph.py).
        OMNI_WHATSAPP_GRAPH_URL=f"http://127.0.0.1:{graph_port}/v22.0",
        OMNI_WHATSAPP_ACCESS_TOKEN=ACCESS_TOKEN,
        OMNI_WHATSAPP_PHONE_NUMBER_ID=PHONE_NUMBER_ID,
        OMNI_SMS_API_URL="http://127.0.0.1:9",
        OMNI_LOG_FORMAT="json",
    )
    log = tmp / "serve.log"
    with log.open("wb") as out:
        graph = subprocess.Popen(
            [sys.executable, "-m", "tests.whatsapp_graph", str(graph_port)],
            stdout=out,
            stderr=out,
            cwd=Path(__file__).parent.parent,
        )
        process = subprocess.Popen(
            [sys.executable, "-m", "omni.cli", "serve"], env=env, stdout=out, stderr=out
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            assert process.poll() is None, log.read_text()
            try:
                with urllib.request.urlopen(base + "/readyz", timeout=2):  # noqa: S310
                    break
            except OSError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
        yield base, log
    finally:
        process.terminate()
        process.wait(timeout=20)
        graph.terminate()
        graph.wait(timeout=20)


def _run(base: str, role: str, report: Path) -> dict[str, Any]:
    key = ROLES[role]
    command = [
        str(Path(sys.executable).parent / "st"),
        "--config-file", str(Path(__file__).parent / "schemathesis.toml"),
        "run", base + "/openapi.json",
        "--checks", "all",
        "--max-examples", str(EXAMPLES),
        "--seed", str(SEED),
        "--generation-database", "none",
        "--phases", PHASES.get(role, "examples,fuzzing"),
        "--exclude-path", "/v1/events",
        "--request-timeout", "10",
        # One worker: hypothesis describes lambdas with ast.parse, which CPython 3.11
        # can fail on when threads run it at once ("AST constructor recursion depth
        # mismatch"), an error of the tool, not of omni.
        "--workers", "1",
        "--no-color",
        "--report", "json", "--report-json-path", str(report),
    ]  # fmt: skip
    if key is not None:
        command += ["--header", f"Authorization: Bearer {key}"]
    # In the report's directory: schemathesis keeps a cache where it runs.
    done = subprocess.run(
        command, cwd=report.parent, capture_output=True, text=True, timeout=600, check=False
    )
    assert report.exists(), done.stdout + done.stderr
    result: dict[str, Any] = json.loads(report.read_text())
    result["output"] = done.stdout
    return result


@pytest.mark.timeout(900)
@pytest.mark.parametrize("role", list(ROLES))
def test_every_route_answers_as_its_schema_says(
    served: tuple[str, Path], role: str, tmp_path: Path
) -> None:
    base, log = served
    result = _run(base, role, tmp_path / "report.json")
    cases = result["test_cases"]
    print(
        f"\nschemathesis as {role}: {result['operations']['tested']} operations, "
        f"{cases['generated']} cases, {cases['with_failures']} with failures"
    )
    assert result["operations"]["errored"] == 0, result["output"][-6000:]
    assert cases["generated"] > 0
    assert result["failures"] == [], result["output"][-12000:]
    assert result["errors"] == [], result["output"][-6000:]
    tracebacks = [
        line for line in log.read_text().splitlines() if "Traceback" in line or "unhandled" in line
    ]
    assert tracebacks == []
