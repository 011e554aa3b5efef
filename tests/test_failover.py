"""Failover, measured: a primary of a real Redis Cluster is killed (SIGKILL) while several
clients ingest without pause through `omni serve` in cluster mode.

The test starts its own 3x2 cluster (not the session's: it kills a node of it), with a
short node timeout so the replica is promoted within seconds, and `omni serve` as a
process. After the kill it waits for the promotion, then starts the killed node again
(by then it rejoins as the new primary's replica, as an operator's restart would).
Every response must be 201/200, or a 503 problem with Retry-After (never a 500, never
a request left hanging); a 503 is sent again, as a provider does. Once the clients stop,
every acknowledged message must be readable through omni, which was not restarted.

Run with `[redis] replica_acks` 0 and 1: with 0 (asynchronous replication) a message
acknowledged just before the kill may be lost, and the count is printed; with 1 none
may be (omni.replica_acks). Run with -s to see the figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from omni.redis_cluster import LocalCluster, free_ports

KEY = "failover-test-bot-key"
HEADERS = {"Authorization": f"Bearer {KEY}"}
CLIENTS = 6
IDENTITIES = 8  # per client: customers spread over every primary's slots
PER_CLIENT_MAX = 2000  # bounds the run whatever the machine's speed
# A request omni has not answered in this long is a hang (its deadlines are shorter).
CLIENT_DEADLINE_S = 15.0
KILLED = 1  # the primary killed: nodes[1]; nodes[3 + 1] is its replica
ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Run:
    sent: int = 0  # requests, retries included
    acked: dict[str, tuple[str, str]] = field(default_factory=dict)  # cmid -> (cid, id)
    unavailable: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    bad: list[str] = field(default_factory=list)  # responses a client must never get
    last_503: float = 0.0
    ack_times: list[float] = field(default_factory=list)  # monotonic, in order
    slowest_s: float = 0.0


def _env(redis_url: str, port: int, replica_acks: int, config: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMNI_")}
    config.write_text("")
    env.update(
        OMNI_CONFIG=str(config),
        OMNI_REDIS_URL=redis_url,
        OMNI_REDIS_CLUSTER="true",
        OMNI_REDIS_REPLICA_ACKS=str(replica_acks),
        OMNI_SERVER_PORT=str(port),
        OMNI_API_KEYS=f"bot:{KEY}",
        OMNI_LOG_FORMAT="json",
        OMNI_LOG_LEVEL="warning",
    )
    return env


@contextlib.asynccontextmanager
async def _cluster(data_dir: Path) -> AsyncIterator[LocalCluster]:
    # 2 s: promoted within seconds, yet a node that is only slow (2 shared cores) is not.
    cluster = LocalCluster(data_dir, free_ports(6), node_timeout_ms=2000)
    await asyncio.to_thread(cluster.start)
    try:
        yield cluster
    finally:
        await asyncio.to_thread(cluster.stop)


def _start_serve(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "omni.cli", "serve"],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-2000:]


@contextlib.asynccontextmanager
async def _serve(env: dict[str, str], log: Path) -> AsyncIterator[subprocess.Popen[bytes]]:
    process = await asyncio.to_thread(_start_serve, env, log)
    try:
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(process.wait, 20)
        except subprocess.TimeoutExpired:
            process.kill()
            await asyncio.to_thread(process.wait)


async def _ready(session: aiohttp.ClientSession, base: str, process: Any, log: Path) -> None:
    for _ in range(300):
        assert process.poll() is None, _tail(log)
        with contextlib.suppress(aiohttp.ClientError):
            async with session.get(f"{base}/readyz") as response:
                if response.status == 200:
                    return
        await asyncio.sleep(0.1)
    raise AssertionError(f"omni serve did not become ready: {_tail(log)}")


async def _client(
    session: aiohttp.ClientSession, base: str, number: int, run: Run, stop: asyncio.Event
) -> None:
    """Ingests until told to stop; a 503 is sent again (same message id) as a provider
    would, after a short pause (shorter than Retry-After, to keep the test short)."""
    seq = 0
    while not stop.is_set() and seq < PER_CLIENT_MAX:
        cmid = f"fo-{number}-{seq}"
        body = {
            "channel": "web",
            "external_id": f"fo-visitor-{number}-{seq % IDENTITIES}",
            "channel_message_id": cmid,
            "text": f"message {seq} from client {number}",
        }
        while True:
            started = time.monotonic()
            run.sent += 1
            try:
                async with session.post(f"{base}/v1/messages", json=body, headers=HEADERS) as r:
                    status, text = r.status, await r.text()
                    kind, retry_after = r.content_type, r.headers.get("Retry-After")
            except (aiohttp.ClientError, TimeoutError) as exc:
                run.bad.append(f"{cmid}: no answer: {type(exc).__name__} {exc}")
                return
            run.slowest_s = max(run.slowest_s, time.monotonic() - started)
            run.statuses[status] = run.statuses.get(status, 0) + 1
            if status in (200, 201):
                message = json.loads(text)
                run.acked[cmid] = (message["customer_id"], message["id"])
                run.ack_times.append(time.monotonic())
                break
            if status == 503 and kind == "application/problem+json" and retry_after:
                run.unavailable += 1
                run.last_503 = time.monotonic()
                if stop.is_set():
                    break  # never acknowledged: the sender still has it
                await asyncio.sleep(0.2)
                continue
            run.bad.append(f"{cmid}: {status} {kind} Retry-After={retry_after}: {text[:300]}")
            return
        seq += 1


async def _promoted(replica: Redis) -> None:
    for _ in range(400):
        with contextlib.suppress(Exception):
            if (await replica.info("replication")).get("role") == "master":
                return
        await asyncio.sleep(0.05)
    raise AssertionError("the killed primary's replica was not promoted within 20 s")


async def _has_replica(primary: Redis) -> None:
    for _ in range(400):
        info = await primary.info("replication")
        if int(info.get("connected_slaves", 0)) >= 1 and "online" in str(info.get("slave0")):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the restarted node did not rejoin as a replica within 20 s")


async def _stored(session: aiohttp.ClientSession, base: str, cid: str) -> set[str]:
    """Every message id in the customer's history, read through omni."""
    ids: set[str] = set()
    cursor = None
    while True:
        params = {"limit": "200", **({"before": cursor} if cursor else {})}
        url = f"{base}/v1/customers/{cid}/history"
        async with session.get(url, params=params, headers=HEADERS) as response:
            assert response.status == 200, await response.text()
            page = await response.json()
        ids.update(message["id"] for message in page["messages"])
        cursor = page["next_cursor"]
        if not cursor:
            return ids


@pytest.mark.timeout(120)
@pytest.mark.parametrize("replica_acks", [0, 1])
async def test_a_killed_primary_loses_no_acknowledged_message(
    tmp_path: Path, replica_acks: int
) -> None:
    port = free_ports(1)[0]
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "omni.log"
    async with _cluster(tmp_path / "cluster") as cluster:
        env = _env(cluster.url, port, replica_acks, tmp_path / "none.toml")
        killed, replica = cluster.nodes[KILLED], cluster.nodes[cluster.primaries + KILLED]
        promoted = Redis(unix_socket_path=str(replica.socket_path), decode_responses=True)
        timeout = aiohttp.ClientTimeout(total=CLIENT_DEADLINE_S)
        async with (
            _serve(env, log) as server,
            aiohttp.ClientSession(timeout=timeout) as session,
        ):
            await _ready(session, base, server, log)
            run, stop = Run(), asyncio.Event()
            clients = [
                asyncio.create_task(_client(session, base, n, run, stop)) for n in range(CLIENTS)
            ]
            await asyncio.sleep(2)  # ingest under way on every primary
            acked_before = len(run.acked)
            assert killed.pid is not None
            os.kill(killed.pid, signal.SIGKILL)
            killed_at = time.monotonic()
            await _promoted(promoted)
            promoted_s = time.monotonic() - killed_at
            await asyncio.to_thread(killed.stop)  # reaps the killed process
            await asyncio.to_thread(killed.start)  # rejoins as the new primary's replica
            await _has_replica(promoted)
            rejoined_s = time.monotonic() - killed_at
            acked_rejoined = len(run.acked)
            await asyncio.sleep(2)  # ingest goes on, on the new topology
            stop.set()
            await asyncio.gather(*clients)

            stored: dict[str, set[str]] = {}
            for cid in sorted({cid for cid, _ in run.acked.values()}):
                stored[cid] = await _stored(session, base, cid)
            lost = sorted(cmid for cmid, (cid, mid) in run.acked.items() if mid not in stored[cid])
            assert server.poll() is None  # the same process throughout: no restart
        await promoted.aclose()

    # What the clients saw: the longest time after the kill with no acknowledgement at all
    # (every client soon waits on a customer of the killed primary), and the last 503.
    after = [killed_at, *(t for t in run.ack_times if t > killed_at)]
    outage_s = max(b - a for a, b in itertools.pairwise(after)) if len(after) > 1 else 0.0
    last_503_s = max(run.last_503 - killed_at, 0.0)
    print(
        f"\nfailover, replica_acks={replica_acks}: sent {run.sent} requests, "
        f"acknowledged {len(run.acked)} messages ({acked_before} before the kill), "
        f"503s {run.unavailable}, statuses {dict(sorted(run.statuses.items()))}, "
        f"lost {len(lost)} {lost[:10]}; replica promoted after {promoted_s:.1f} s, "
        f"killed node back as replica after {rejoined_s:.1f} s; longest pause in "
        f"acknowledgements {outage_s:.1f} s, last 503 {last_503_s:.1f} s after the kill; "
        f"slowest answer {run.slowest_s:.2f} s"
    )
    assert not run.bad, run.bad[:10]
    # omni followed the new topology: messages were acknowledged after the failover.
    assert len(run.acked) > acked_rejoined, "nothing acknowledged after the failover"
    if replica_acks:
        assert lost == [], f"acknowledged, then lost in the failover: {lost}"
