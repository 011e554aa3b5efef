"""Redis failing under a running `omni serve`, with real processes: a Redis that stalls
(SIGSTOP), one that is stopped (connection refused), and the embedded one killed with
SIGKILL in the middle of ingest on every channel.

What a user would notice, and what is asserted: every route answers (never a 500, never
a hang past `redis.request_timeout`), what needs Redis answers a 503 problem with
Retry-After (so a channel sends again), /readyz is 503 while /healthz stays 200; once
Redis is back omni serves again without a restart; and nothing acknowledged is lost.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from omni.redis_server import EmbeddedRedis
from omni.routes import all_routes
from tests.channel_traffic import CHANNELS, Ledger, Sender, config_sections, send, stored
from tests.processes import ADMIN, Omni, alive, free_port, omni_env, valkey_pid, wait_until
from tests.test_events import Stream

pytestmark = pytest.mark.single_server(
    "starts and breaks its own single Valkey (external or embedded), not the session's: "
    "the cluster run would repeat the single-server run as it is"
)

REQUEST_TIMEOUT_S = 1.0
# A request's answer is due within the deadline; the client gives up a while after it,
# so a hang fails the test instead of holding it up.
CLIENT_TIMEOUT_S = REQUEST_TIMEOUT_S + 4


def _config(tmp_path: Path, port: int, redis: str) -> Path:
    config = tmp_path / "omni.toml"
    config.write_text(
        config_sections(f"http://127.0.0.1:{port}")
        + f"{redis}request_timeout = {REQUEST_TIMEOUT_S}\n"
        + "[outbox]\nblock_ms = 200\n"
        + '[web]\nsession_secret = "fault-test-web-session-secret-0000000001"\n'
        + 'identity_secret = "fault-test-web-identity"\n'
    )
    return config


def _requests(cid: str, web_token: str, port: int) -> list[tuple[str, str, Any, dict[str, str]]]:
    """One request for every route of the route table (method, path, JSON body, headers):
    the fault must be met on each, not on the few a test thinks of."""
    out = []
    for route in all_routes():
        path = (
            route.path.replace("{id}", cid)
            .replace("{delivery_id}", "dlv_01JH8Z3K9W2QX7M4T6R5B1C0DE")
            .replace("{asset}", "console.js")
            .replace("{route}", "messages")
        )
        headers = dict(ADMIN)
        body: Any = {} if route.body is not None else None
        if path.startswith("/channels/web/") or path.startswith("/channels/mobile/"):
            headers = {"Authorization": f"Bearer {web_token}", "Origin": f"http://127.0.0.1:{port}"}
        if path == "/v1/context":
            path += "?channel=web&external_id=fault-visitor-1"
        if path == "/v1/messages":
            body = {"channel": "web", "external_id": "fault-sweeper", "text": "hello?",
                    "channel_message_id": "fault-sweep-1"}  # fmt: skip
        out.append((route.method, path, body, headers))
    return out


async def _sweep(
    session: aiohttp.ClientSession, base: str, requests: list[tuple[str, str, Any, dict[str, str]]]
) -> dict[str, int]:
    """Every request at once; each answer checked as it comes. `path -> status`."""

    async def one(method: str, path: str, body: Any, headers: dict[str, str]) -> tuple[str, int]:
        async with session.request(
            method,
            base + path,
            json=body,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=CLIENT_TIMEOUT_S),
        ) as response:
            text = await response.text()
            where = f"{method} {path.split('?')[0]}"
            assert response.status != 500 and response.status < 600, (where, text)
            if response.status == 503:
                assert response.headers.get("Retry-After") == "1", where
                if path != "/readyz":
                    assert response.content_type == "application/problem+json", where
                    assert json.loads(text)["status"] == 503
            return where, response.status

    answers = await asyncio.gather(*(one(*request) for request in requests))
    return dict(answers)


# What must answer 503 while Redis is away: everything that reads or writes the store,
# including the channels' webhooks (so the channel sends again).
MUST_BE_503 = (
    "POST /v1/messages",
    "GET /v1/context",
    "GET /v1/customers/{cid}/context",
    "GET /v1/customers/{cid}/history",
    "GET /v1/customers/{cid}/cart",
    "GET /v1/customers/{cid}/export",
    "GET /readyz",
    "GET /metrics",
)


async def _channel_webhooks(
    session: aiohttp.ClientSession, base: str, ledger: Ledger, n: int
) -> dict[str, int]:
    """A signed message on every channel; its status (it must not be acknowledged)."""
    out = {}
    for channel in CHANNELS:
        sender = Sender(channel, 1)
        out[channel] = await send(session, base, base, sender, n, ledger, CLIENT_TIMEOUT_S)
    return out


@pytest.fixture
async def external(tmp_path: Path) -> AsyncIterator[EmbeddedRedis]:
    """A Redis omni does not own (`redis.url` set), persistent, run by the test."""
    server = EmbeddedRedis(tmp_path / "external", persist=True)
    server.start()
    try:
        yield server
    finally:
        pid = server.pid
        if pid is not None and alive(pid):
            os.kill(pid, signal.SIGCONT)
        server.stop()


async def test_a_stalled_or_stopped_redis_is_a_503_with_retry_after_then_omni_heals(
    tmp_path: Path, external: EmbeddedRedis
) -> None:
    port = free_port()
    config = _config(tmp_path, port, f'[redis]\nurl = "{external.url}"\n')
    omni = Omni(omni_env(config), tmp_path / "omni.log", port=port).start()
    base = omni.url
    ledger = Ledger()
    try:
        await omni.ready()
        async with aiohttp.ClientSession() as session:
            for n in range(1, 6):
                for channel in CHANNELS:
                    assert await send(session, base, base, Sender(channel, 1), n, ledger) in (
                        200,
                        201,
                    )
            cid, _ = await stored(session, base, Sender("web", 1))
            async with session.post(base + "/channels/web/sessions", json={}) as response:
                assert response.status == 201
                token = (await response.json())["token"]
            requests = _requests(cid, token, port)

            must = {w.replace("{cid}", cid) for w in MUST_BE_503}

            for phase, fault, heal in (
                ("stalled", lambda: os.kill(external.pid or 0, signal.SIGSTOP),
                 lambda: os.kill(external.pid or 0, signal.SIGCONT)),
                ("stopped", external.stop, external.start),
            ):  # fmt: skip
                fault()
                answers = await _sweep(session, base, requests)
                missing = {w for w in must if answers.get(w) != 503}
                assert not missing, (phase, {w: answers.get(w) for w in missing})
                assert answers["GET /healthz"] == 200
                webhooks = await _channel_webhooks(session, base, ledger, 100)
                assert webhooks == {c: 503 for c in CHANNELS}, (phase, webhooks)
                heal()

                async def serving() -> bool:
                    async with session.get(
                        f"{base}/v1/customers/{cid}/context", headers=ADMIN
                    ) as response:
                        return response.status == 200

                recovered_s = await wait_until(serving, 10, f"omni to serve after {phase}")
                print(f"redis {phase}: statuses {sorted(set(answers.values()))}, "
                      f"serving again {recovered_s:.2f} s after Redis was back")  # fmt: skip

            # The channels send again what was not acknowledged; nothing is missing.
            webhooks = await _channel_webhooks(session, base, ledger, 100)
            assert webhooks == {"web": 201, "instagram": 200, "voice": 200}
            for channel in CHANNELS:
                sender = Sender(channel, 1)
                _, ids = await stored(session, base, sender)
                wanted = [sender.message_id(n) for n in (1, 2, 3, 4, 5, 100)]
                assert ids == wanted, channel
            # The live events flow again (the listener re-subscribed by itself): an
            # agent's stream opened now hears a message sent now.
            response = await session.get(
                f"{base}/v1/customers/{cid}/events",
                headers=ADMIN,
                timeout=aiohttp.ClientTimeout(total=30),
            )
            assert response.status == 200
            stream = Stream(response)
            assert await send(session, base, base, Sender("web", 1), 101, ledger) == 201
            while "fault-1-101" not in json.dumps(await stream.next()):
                pass
            stream.response.close()
    finally:
        code = omni.stop()
    assert code == 0, omni.tail()
    assert "Traceback" not in omni.log_path.read_text(), omni.tail(60)


def _seconds(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


def _embedded_config(tmp_path: Path, port: int, fsync: str) -> Path:
    return _config(tmp_path, port, f'[redis]\ndata_dir = "{tmp_path / "var"}"\nfsync = "{fsync}"\n')


@pytest.mark.parametrize("fsync", ["always", "everysec"])
async def test_the_embedded_redis_killed_under_ingest_is_restarted_and_loses_nothing(
    tmp_path: Path, fsync: str
) -> None:
    """SIGKILL of the embedded Valkey while clients ingest on every channel: omni's
    supervisor starts it again from its append-only file; the clients' unacknowledged
    messages are sent again (as the channels do); every acknowledged one is stored, once."""
    port = free_port()
    omni = Omni(omni_env(_embedded_config(tmp_path, port, fsync)), tmp_path / "omni.log", port=port)
    omni.start()
    base = omni.url
    ledger = Ledger()
    senders = [Sender(channel, k) for channel in CHANNELS for k in range(1, 3)]
    try:
        await omni.ready()
        first = valkey_pid(tmp_path / "var")
        killed = asyncio.Event()
        async with aiohttp.ClientSession() as session:

            async def client(sender: Sender) -> None:
                for n in range(1, 61):  # bounded: 60 messages per sender
                    await send(session, base, base, sender, n, ledger, CLIENT_TIMEOUT_S)
                    if n == 20 and sender == senders[0]:
                        os.kill(first, signal.SIGKILL)
                        killed.set()

            started = time.monotonic()
            await asyncio.gather(*(client(s) for s in senders))
            assert killed.is_set()

            # Redelivery, as a channel does until it gets a 2xx.
            for _ in range(20):
                pending = [(s, n) for s, ns in ledger.unacked.items() for n in sorted(ns)]
                if not pending:
                    break
                for sender, n in pending:
                    await send(session, base, base, sender, n, ledger, CLIENT_TIMEOUT_S)
                await asyncio.sleep(0.2)
            assert not any(ledger.unacked.values()), ledger.unacked

            lost = 0
            doubled = 0
            for sender in senders:
                _, ids = await stored(session, base, sender)
                acked = {sender.message_id(n) for n in ledger.acked[sender]}
                lost += len(acked - set(ids))
                doubled += len(ids) - len(set(ids))
                assert sorted(ids) == sorted(sender.message_id(n) for n in range(1, 61))
            async with session.get(base + "/metrics", headers=ADMIN) as response:
                metrics = await response.text()
        events = {line["event"]: line["timestamp"] for line in omni.lines()}
        down_s = _seconds(events["embedded redis restarted"]) - _seconds(
            events["embedded redis exited; restarting it"]
        )
        print(
            f"fsync={fsync}: {ledger.acked_total} acknowledged, {lost} lost, {doubled} doubled, "
            f"statuses {dict(sorted(ledger.statuses.items()))}, Redis back {down_s:.2f} s "
            f"after the exit was seen, {time.monotonic() - started:.1f} s in all"
        )
        assert lost == 0 and doubled == 0
        assert "omni_redis_restarts_total 1" in metrics
        assert valkey_pid(tmp_path / "var") != first
        assert any(line.get("event") == "embedded redis restarted" for line in omni.lines())
    finally:
        code = omni.stop()
    assert code == 0, omni.tail()
    assert "Traceback" not in omni.log_path.read_text(), omni.tail(60)
