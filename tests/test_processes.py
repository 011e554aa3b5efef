"""Many processes on one Redis, as they are deployed: two `omni serve` on their own ports
and two `omni worker`, all real subprocesses stopped by pid; and `omni serve --processes
2`, whose parent owns the embedded Valkey and supervises its children.

What a user would notice: whichever process a request reaches, it sees what any other
wrote a moment before (the in-process identity cache included: after a merge or an
erasure through one process, an ingest through another lands where it should); an agent
connected to one process gets the events of a message taken in by the other; and each
outbound message is delivered once by the two workers together.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from omni.bots import DELIVERY_HEADER
from tests.conftest import CLUSTER
from tests.processes import ADMIN, BOT, Omni, alive, free_port, omni_env, valkey_pid, wait_until
from tests.test_bots import SECRET, ServerFactory

ACCOUNT = "17841400000000001"
REPLIES = 6  # agent replies to Instagram, sent half through each server
INGESTS = 6  # web messages with a bot, taken in half through each server


class Counting:
    """The bot and Instagram's Send API in one local server, counting what arrives: bot
    webhooks by delivery id, Instagram messages by their text (each reply's is unique)."""

    def __init__(self) -> None:
        self.bot: Counter[str] = Counter()
        self.bot_types: list[str] = []
        self.bot_texts: list[str] = []
        self.graph: Counter[str] = Counter()

    async def on_bot(self, request: web.Request) -> web.Response:
        self.bot[request.headers[DELIVERY_HEADER]] += 1
        body = await request.json()
        self.bot_types.append(body["type"])
        self.bot_texts.append(body["message"]["text"])
        return web.json_response({"replies": []})

    async def on_graph(self, request: web.Request) -> web.Response:
        body = await request.json()
        text = body.get("message", {}).get("text")
        if text is not None:
            self.graph[text] += 1
        recipient = body["recipient"]["id"]
        return web.json_response({"recipient_id": recipient, "message_id": f"mid.{text}"})


def _shared(redis_url: str) -> dict[str, str]:
    """The session's Redis (a cluster under `make test-cluster`) for a process's env."""
    return {"OMNI_REDIS_URL": redis_url, "OMNI_REDIS_CLUSTER": str(CLUSTER).lower()}


def _shared_config(tmp_path: Path, redis_url: str, upstream: str) -> Path:
    config = tmp_path / "omni.toml"
    config.write_text(
        f'[redis]\nurl = "{redis_url}"\ncluster = {str(CLUSTER).lower()}\nrequest_timeout = 10.0\n'
        "[outbox]\nin_process_worker = false\nblock_ms = 200\n"
        f'[bots.web]\nurl = "{upstream}/bot"\nsecret = "{SECRET}"\n'
        f'[instagram]\napp_secret = "{"s" * 16}"\nverify_token = "v"\n'
        f'page_token = "EAA-token"\naccount_id = "{ACCOUNT}"\ngraph_url = "{upstream}/v22.0"\n'
    )
    return config


async def _call(
    session: aiohttp.ClientSession, method: str, url: str, body: Any = None, key: Any = ADMIN
) -> tuple[int, Any]:
    async with session.request(method, url, json=body, headers=key) as response:
        return response.status, await response.json(content_type=None)


async def _ingest(
    session: aiohttp.ClientSession, base: str, external_id: str, mid: str, channel: str = "web"
) -> dict[str, Any]:
    body = {"channel": channel, "external_id": external_id, "channel_message_id": mid,
            "text": f"text of {mid}"}  # fmt: skip
    status, message = await _call(session, "POST", f"{base}/v1/messages", body, BOT)
    assert status in (200, 201), message
    return dict(message)


async def _texts(session: aiohttp.ClientSession, base: str, cid: str) -> list[str]:
    status, context = await _call(session, "GET", f"{base}/v1/customers/{cid}/context")
    assert status == 200, context
    return [m["text"] for m in context["recent_messages"]]


async def _event(response: aiohttp.ClientResponse, wanted: str) -> dict[str, Any]:
    """The next SSE event whose data mentions `wanted`."""
    while True:
        line = (await response.content.readline()).decode()
        assert line, "the event stream ended"
        if line.startswith("data: ") and wanted in line:
            data: dict[str, Any] = json.loads(line[len("data: ") :])
            return data


async def test_two_servers_and_two_workers_on_one_redis_act_as_one(
    aiohttp_server: ServerFactory, redis_url: str, tmp_path: Path
) -> None:
    upstream = Counting()
    app = web.Application()
    app.router.add_post("/bot", upstream.on_bot)
    app.router.add_post(f"/v22.0/{ACCOUNT}/messages", upstream.on_graph)
    base_up = str((await aiohttp_server(app)).make_url("")).rstrip("/")
    env = omni_env(_shared_config(tmp_path, redis_url, base_up))
    a = Omni(env, tmp_path / "a.log", port=free_port()).start()
    b = Omni(env, tmp_path / "b.log", port=free_port()).start()
    workers = [Omni(env, tmp_path / f"w{n}.log", command="worker").start() for n in (1, 2)]
    try:
        await asyncio.gather(a.ready(), b.ready())
        async with aiohttp.ClientSession() as session:
            # Through A, read through B at once (no wait, no retry).
            first = await _ingest(session, a.url, "ana", "m-1")
            ana = first["customer_id"]
            assert await _texts(session, b.url, ana) == ["text of m-1"]

            # B learns ana's and bo's customers (its identity cache); A merges ana into
            # bo; B's next ingest for ana lands on bo, the survivor.
            await _ingest(session, b.url, "ana", "m-2")
            bo = (await _ingest(session, b.url, "bo", "b-1"))["customer_id"]
            status, merged = await _call(
                session, "POST", f"{a.url}/v1/customers/{bo}/merge", {"source": ana}
            )
            assert status == 200, merged
            after = await _ingest(session, b.url, "ana", "m-3")
            assert after["customer_id"] == bo
            assert "text of m-3" in await _texts(session, a.url, bo)

            # B knows cy; A erases cy; B's next ingest for cy makes a new customer.
            cy = (await _ingest(session, b.url, "cy", "c-1"))["customer_id"]

            async def bot_told() -> bool:  # so the count below is exact
                return "text of c-1" in upstream.bot_texts

            await wait_until(bot_told, timeout_s=30, what="cy's first message at the bot")
            status, _ = await _call(session, "DELETE", f"{a.url}/v1/customers/{cy}")
            assert status in (200, 202, 204)
            again = (await _ingest(session, b.url, "cy", "c-2"))["customer_id"]
            assert again != cy
            assert await _texts(session, a.url, again) == ["text of c-2"]
            status, _ = await _call(session, "GET", f"{b.url}/v1/customers/{cy}/context")
            assert status == 404

            # An agent takes bo over through A: B's context says so, and the bot is told
            # of B's next message as a handoff, not asked to answer it.
            status, held = await _call(
                session, "POST", f"{a.url}/v1/customers/{bo}/handoff", {"to": "agent"}
            )
            assert status == 200, held
            status, context = await _call(session, "GET", f"{b.url}/v1/customers/{bo}/context")
            assert context["conversation"]["assignee"]["kind"] == "agent"
            await _ingest(session, b.url, "bo", "b-2")

            # An agent listening on B gets the message A takes in.
            async with session.get(f"{b.url}/v1/events", headers=ADMIN) as stream:
                assert stream.status == 200
                await asyncio.sleep(0.3)  # B's listener is subscribed once the stream opened
                await _ingest(session, a.url, "dee", "d-1")
                event = await asyncio.wait_for(_event(stream, "text of d-1"), 20)
            assert event["type"] == "message"

            # Outbound: replies sent through both servers, delivered by both workers.
            ig = await _ingest(session, a.url, "1180000000000042", "ig-1", "instagram")
            for n in range(REPLIES):
                base = (a, b)[n % 2].url
                status, queued = await _call(
                    session, "POST", f"{base}/v1/customers/{ig['customer_id']}/messages",
                    {"channel": "instagram", "text": f"reply {n}"},
                )  # fmt: skip
                assert status == 202, queued
            for n in range(INGESTS):
                await _ingest(session, (a, b)[n % 2].url, f"web-{n}", f"w-{n}")

            # Every web message so far reached the bot: ana's 3 (m-3 on bo), bo's 2,
            # cy's 2 (one erased with cy), dee's 1 and INGESTS more.
            expected_bot = 3 + 2 + 2 + 1 + INGESTS

            async def delivered() -> bool:
                return len(upstream.graph) == REPLIES and len(upstream.bot) >= expected_bot

            await wait_until(delivered, timeout_s=40, what="every delivery")
            await asyncio.sleep(0.5)  # a second delivery of anything would be here by now
        assert sorted(upstream.graph) == sorted(f"reply {n}" for n in range(REPLIES))
        assert set(upstream.graph.values()) == {1}, upstream.graph
        assert set(upstream.bot.values()) == {1}, upstream.bot
        assert len(upstream.bot) == expected_bot
        assert "handoff" in upstream.bot_types
    finally:
        codes = [p.stop() for p in (*workers, a, b)]
    assert codes == [0, 0, 0, 0], [p.tail() for p in (*workers, a, b)]
    for process in (*workers, a, b):
        assert "Traceback" not in process.log_path.read_text(), process.tail(60)
    done = [line for w in workers for line in w.lines() if line.get("event") == "delivery done"]
    assert len(done) == REPLIES + len(upstream.bot)


def _ppid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


@pytest.mark.single_server(
    "the parent owns an embedded Valkey (one server by design), not the session's Redis"
)
async def test_serve_processes_shares_one_embedded_redis_and_restarts_a_crashed_child(
    tmp_path: Path,
) -> None:
    port = free_port()
    config = tmp_path / "omni.toml"
    config.write_text(f'[redis]\ndata_dir = "{tmp_path / "var"}"\n')
    parent = Omni(
        omni_env(config), tmp_path / "parent.log", port=port, args=("--processes", "2")
    ).start()

    def serving() -> dict[int, int]:
        """slot -> pid of its latest child that serves."""
        return {
            line["slot"]: line["pid"]
            for line in parent.lines()
            if line.get("event") == "process serving"
        }

    try:
        await parent.ready()

        async def both() -> bool:
            return len(serving()) == 2

        await wait_until(both, timeout_s=60, what="two children serving")
        children = serving()
        # The parent owns the data directory and the one Valkey; the children use it.
        lock = json.loads((tmp_path / "var" / "omni.lock").read_text())
        assert lock == {"pid": parent.pid, "port": port}
        server = valkey_pid(tmp_path / "var")
        assert _ppid(server) == parent.pid
        assert all(_ppid(pid) == parent.pid for pid in children.values())
        # One in-process worker, in the first child only.
        started = [line["consumer"] for line in parent.lines()
                   if line.get("event") == "worker started"]  # fmt: skip
        assert len(started) == 1 and f"-{children[0]}-" in started[0], started

        # A new connection per request: a kept-alive one may be the child killed below,
        # which resets it (the kernel spreads connections, not requests, over the children).
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=connector) as session:
            cid = (await _ingest(session, parent.url, "eve", "e-0"))["customer_id"]
            for n in range(1, 8):  # spread over both children by the kernel
                await _ingest(session, parent.url, "eve", f"e-{n}")
            texts = await _texts(session, parent.url, cid)
            assert sorted(texts) == sorted(f"text of e-{n}" for n in range(8))

            os.kill(children[1], signal.SIGKILL)

            async def replaced() -> bool:
                return serving().get(1, children[1]) != children[1]

            # The other child serves meanwhile.
            assert (await _call(session, "GET", parent.url + "/readyz"))[0] == 200
            await wait_until(replaced, timeout_s=60, what="the killed child replaced")
            assert not alive(children[1]) and alive(children[0])
            assert any(line.get("event") == "process exited; restarting it"
                       for line in parent.lines())  # fmt: skip
            assert len(await _texts(session, parent.url, cid)) == 8
            now = serving()
    finally:
        code = parent.stop()
    assert code == 0, parent.tail(40)
    assert not any(alive(pid) for pid in (*now.values(), server))
    assert "Traceback" not in parent.log_path.read_text(), parent.tail(60)


def _listening(port: int) -> socket.socket:
    """A port held the way a plain `omni serve` (make run) holds it: no SO_REUSEPORT."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", port))
    sock.listen()
    return sock


async def _omni(env: dict[str, str], *args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "omni.cli", *args, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, err.decode()


async def test_sharing_a_port_held_without_reuse_port_says_what_to_do(
    tmp_path: Path, redis_url: str
) -> None:
    port = free_port()
    config = tmp_path / "omni.toml"
    config.write_text(f'[redis]\ndata_dir = "{tmp_path / "var"}"\n')
    env = omni_env(config)
    held = _listening(port)
    try:
        beside, alone, first, plain = await asyncio.gather(
            _omni({**env, **_shared(redis_url)}, "serve", "--reuse-port", "--port", str(port)),
            _omni(env, "serve", "--processes", "2", "--port", str(port)),
            _omni(env, "serve", "--reuse-port", "--port", str(port)),  # would own the Valkey
            _omni(env, "serve", "--port", str(port)),
        )
    finally:
        held.close()
    for code, err in (beside, alone, first):
        assert code == 1, err
        line = err.strip().splitlines()[-1]
        assert f"cannot serve on 127.0.0.1:{port}" in line, err
        assert "every process sharing a port needs the flag" in line, line
        assert "--processes N" in line and "--port" in line, line
        assert "Traceback" not in err
    code, err = plain
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert "the port is in use; stop what holds it or choose another port" in err, err
    # Nothing was started for a port that cannot be had: no embedded server.
    assert not (tmp_path / "var" / "valkey.pid").exists()


async def test_a_child_whose_parent_is_gone_stops_by_itself(tmp_path: Path, redis_url: str) -> None:
    """The parent's end of the socket pair closing (its death, however it dies) stops
    the child gracefully: no child outlives its `omni serve --processes` parent."""
    config = tmp_path / "omni.toml"
    config.write_text("")
    parent_end, child_end = socket.socketpair()
    port = free_port()
    log = (tmp_path / "child.log").open("wb")
    env = {**omni_env(config), **_shared(redis_url)}
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "omni.cli", "serve", "--reuse-port", "--port", str(port),
        "--supervisor-fd", str(child_end.fileno()),
        env=env, stdout=log, stderr=log, pass_fds=(child_end.fileno(),),
    )  # fmt: skip
    child_end.close()
    try:
        ready = await asyncio.wait_for(asyncio.to_thread(parent_end.recv, 1), 60)
        assert ready == b"r"  # it serves
        parent_end.close()  # the parent is gone
        code = await asyncio.wait_for(child.wait(), 30)
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
        log.close()
    text = (tmp_path / "child.log").read_text()
    assert code == 0, text
    assert '"omni process stopped"' in text and "Traceback" not in text
