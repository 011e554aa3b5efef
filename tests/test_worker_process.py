"""`omni worker` as operators run it beside `omni serve`: it delivers what the API queued,
stops cleanly on SIGTERM, and a worker killed with SIGKILL between sending and acking
loses nothing: the next one sends the delivery again and the de-duplicating bot
processes it, and its reply is stored, exactly once."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from omni.app import create_app
from omni.bots import DELIVERY_HEADER, SIGNATURE_HEADER, verify_signature
from tests.conftest import AGENT, CLUSTER, ingest, make_settings
from tests.test_bots import SECRET, ServerFactory
from tests.test_replies_api import history, until


class HangingBot:
    """A bot that de-duplicates by delivery id. It processes the first delivery, then
    holds the request open (so the worker that sent it can be killed before it acks);
    a repeat of a processed id gets the same answer at once."""

    def __init__(self) -> None:
        self.processed: list[str] = []
        self.attempts: list[str] = []
        self.holding = asyncio.Event()
        self.answer = {"replies": [{"text": "Your order ships today."}]}

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if not verify_signature(SECRET, request.headers[SIGNATURE_HEADER], body, time.time()):
            return web.Response(status=401)
        delivery_id = request.headers[DELIVERY_HEADER]
        self.attempts.append(delivery_id)
        if delivery_id not in self.processed:
            self.processed.append(delivery_id)
            self.holding.set()
            await asyncio.sleep(3600)  # until the worker's connection goes away
        return web.json_response(self.answer)


def _config(tmp_path: Path, redis_url: str, bot_url: str) -> dict[str, str]:
    config = tmp_path / "worker.toml"
    config.write_text(
        f'[redis]\nurl = "{redis_url}"\ncluster = {str(CLUSTER).lower()}\n'
        "[outbox]\nvisibility_timeout_ms = 1500\nhandler_timeout_ms = 1000\nblock_ms = 50\n"
        f'[bots.web]\nurl = "{bot_url}"\nsecret = "{SECRET}"\ntimeout_ms = 60000\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMNI_")}
    env.update(OMNI_CONFIG=str(config), OMNI_LOG_FORMAT="json")
    return env


def _worker(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "omni.cli", "worker"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


async def _app(aiohttp_client: Any, redis_url: str, bot_url: str) -> TestClient:
    settings = make_settings(redis_url, bots={"web": {"url": bot_url, "secret": SECRET}})
    return await aiohttp_client(create_app(settings))  # no in-process worker


async def test_a_killed_worker_loses_nothing_and_doubles_nothing(
    aiohttp_client: Any,
    aiohttp_server: ServerFactory,
    redis_url: str,
    redis: Redis,
    tmp_path: Path,
) -> None:
    bot = HangingBot()
    bot_app = web.Application()
    bot_app.router.add_post("/bot", bot.handle)
    bot_url = str((await aiohttp_server(bot_app)).make_url("/bot"))
    client = await _app(aiohttp_client, redis_url, bot_url)
    env = _config(tmp_path, redis_url, bot_url)
    cid = (await ingest(client, text="where is my order?"))["customer_id"]

    first = _worker(env)
    try:
        await asyncio.wait_for(bot.holding.wait(), 20)
    finally:
        first.send_signal(signal.SIGKILL)  # between claim and ack: no chance to clean up
        first.communicate(timeout=10)
    assert await history(client, cid) and len(await history(client, cid)) == 1

    second = _worker(env)
    try:

        async def replied() -> bool:
            return len(await history(client, cid)) == 2

        await until(replied, timeout_s=30)
        await asyncio.sleep(0.3)  # a doubled reply would have been stored by now
        items = await history(client, cid)
    finally:
        second.send_signal(signal.SIGTERM)
        _, err = second.communicate(timeout=20)
    assert second.returncode == 0, err.decode()[-2000:]
    assert [m["text"] for m in items] == ["Your order ships today.", "where is my order?"]
    assert len(bot.processed) == 1
    assert bot.attempts == bot.processed * 2
    deliveries = await (await client.get(f"/v1/customers/{cid}/deliveries", headers=AGENT)).json()
    bot_delivery = [d for d in deliveries["items"] if d["kind"] == "bot"]
    assert [(d["state"], d["attempts"]) for d in bot_delivery] == [("delivered", 2)]
    lines = [json.loads(line) for line in err.decode().splitlines() if line.startswith("{")]
    assert any(line.get("event") == "deliveries taken over" for line in lines)
    assert lines[-1]["event"] == "omni worker stopped"


def test_a_worker_without_a_shared_redis_says_so_in_one_line(tmp_path: Path) -> None:
    config = tmp_path / "empty.toml"
    config.write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMNI_")}
    env.update(OMNI_CONFIG=str(config))
    result = subprocess.run(
        [sys.executable, "-m", "omni.cli", "worker"], env=env, capture_output=True, timeout=20
    )
    assert result.returncode == 2
    err = result.stderr.decode().strip()
    assert len(err.splitlines()) == 1, err
    assert "redis.url" in err


class HoldingGraph:
    """Instagram's Send API: every message answered with a fresh id, except the first,
    which is held open (so the worker sending it can be killed mid-delivery)."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.holding = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        text = body.get("message", {}).get("text")
        if text is None:  # a sender action (typing): nothing to deliver
            return web.json_response({"recipient_id": body["recipient"]["id"]})
        self.texts.append(text)
        if len(self.texts) == 1:
            self.holding.set()
            await asyncio.sleep(3600)  # until the worker's connection goes away
        return web.json_response(
            {"recipient_id": body["recipient"]["id"], "message_id": f"mid.{len(self.texts)}"}
        )


async def test_a_worker_killed_mid_delivery_leaves_no_reply_unsent_or_stuck_sending(
    aiohttp_client: Any, aiohttp_server: ServerFactory, redis_url: str, redis: Redis, tmp_path: Path
) -> None:
    graph = HoldingGraph()
    graph_app = web.Application()
    graph_app.router.add_post("/v22.0/{account}/messages", graph.handle)
    graph_url = str((await aiohttp_server(graph_app)).make_url("/v22.0"))
    instagram = {"app_secret": "s" * 16, "verify_token": "v", "page_token": "EAA-token",
                 "account_id": "17841400000000001", "graph_url": graph_url}  # fmt: skip
    client = await aiohttp_client(create_app(make_settings(redis_url, instagram=instagram)))
    cid = (await ingest(client, channel="instagram", external_id="1180000000000042"))["customer_id"]
    texts = [f"reply {n}" for n in range(5)]
    for text in texts:
        body = {"channel": "instagram", "text": text}
        response = await client.post(f"/v1/customers/{cid}/messages", json=body, headers=AGENT)
        assert response.status == 202, await response.text()

    def env(name: str, handler_timeout_ms: int, visibility_timeout_ms: int) -> dict[str, str]:
        config = tmp_path / f"{name}.toml"
        config.write_text(
            f'[redis]\nurl = "{redis_url}"\ncluster = {str(CLUSTER).lower()}\n'
            f"[outbox]\nvisibility_timeout_ms = {visibility_timeout_ms}\n"
            f"handler_timeout_ms = {handler_timeout_ms}\nblock_ms = 50\n"
            + "[instagram]\n"
            + "".join(f'{k} = "{v}"\n' for k, v in instagram.items())
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("OMNI_")}
        env.update(OMNI_CONFIG=str(config), OMNI_LOG_FORMAT="json")
        return env

    async def deliveries() -> list[dict[str, Any]]:
        response = await client.get(f"/v1/customers/{cid}/deliveries", headers=AGENT)
        assert response.status == 200, await response.text()
        items: list[dict[str, Any]] = (await response.json())["items"]
        return items

    async def states(*wanted: str) -> bool:
        return sorted(d["state"] for d in await deliveries()) == sorted(wanted)

    # The first worker sends all five at once; the first to reach Instagram is held. Its
    # attempt must still be in flight when the worker dies, the other four finished: a
    # send answered but not yet recorded at the kill is sent again too (at least once),
    # so the kill waits for the four. Its handler timeout outlasts a loaded machine.
    first = _worker(env("first", handler_timeout_ms=30_000, visibility_timeout_ms=60_000))
    try:
        await asyncio.wait_for(graph.holding.wait(), 20)
        await until(lambda: states("queued", "sent", "sent", "sent", "sent"), timeout_s=20)
        in_flight = graph.texts[0]
    finally:
        first.send_signal(signal.SIGKILL)  # mid-delivery: one send in flight, unacked
        first.communicate(timeout=10)
    assert len(graph.texts) == len(texts)  # nothing was sent again before the kill

    # The second takes over what the first left unacked for its visibility timeout.
    second = _worker(env("second", handler_timeout_ms=1000, visibility_timeout_ms=1500))
    try:

        async def all_sent() -> bool:
            return all(d["state"] in ("sent", "delivered") for d in await deliveries())

        await until(all_sent, timeout_s=30)
    finally:
        second.send_signal(signal.SIGTERM)
        _, err = second.communicate(timeout=20)
    assert second.returncode == 0, err.decode()[-2000:]
    states_now = [d["state"] for d in await deliveries()]
    assert len(states_now) == len(texts) and "sending" not in states_now
    # Every reply reached Instagram; only the one in flight at the kill was sent again
    # (the Send API has no idempotency key: at least once is what it allows).
    assert sorted(set(graph.texts)) == texts
    assert [t for t in texts if graph.texts.count(t) > 1] == [in_flight]
