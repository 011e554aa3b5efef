"""`python -m bench.micro`: CPU per request in one process, for decisions on a busy machine.

wrk's requests per second on a shared 2-core machine move with everyone else's work;
the CPU time this process spends per request does much less (it is not charged for
waiting). Here the app runs under aiohttp's test client against an embedded Valkey (no
persistence), one customer with 60 messages; it reports the least CPU per request over
five batches of 16 requests at once, the loops alternating three times (client and
server together, so a change shows as a difference between two runs, not as an
absolute), for a history page of 50 and a context read, and the CPU of reading back a
51-entry page alone (`page_rows` and `page_messages` on the XREVRANGE as hiredis
parses it, without redis-py's response callback, as `Timeline.page` reads it).

    python -m bench.micro                  # both loops, and uvloop's gain
    python -m bench.micro --loop asyncio   # one loop
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import timeit
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from redis.asyncio import Redis

from omni import codec, keys
from omni.app import create_app
from omni.eventloop import EVENT_LOOPS, EventLoop, loop_name, new_event_loop
from omni.logs import configure
from omni.model import Author, Message
from omni.redis_server import EmbeddedRedis
from omni.settings import Settings
from omni.store.entries import page_messages, page_rows

KEY = "bench-micro-key-0001"
HEADERS = {"Authorization": f"Bearer {KEY}"}
TEXT = "x" * 100
IN_FLIGHT = 16  # requests at once, as wrk's connections keep them


def settings(redis_url: str) -> Settings:
    return Settings.from_mapping(
        {
            "redis": {"url": redis_url},
            "auth": {"api_keys": [{"key": KEY, "role": "agent", "name": "micro"}]},
            "outbox": {"in_process_worker": False},
            "log": {"level": "warning"},
        }
    )


async def per_request(redis_url: str, count: int) -> dict[str, float]:
    client = TestClient(TestServer(create_app(settings(redis_url))))
    await client.start_server()
    try:
        cid = ""
        for i in range(60):
            body = {"channel": "web", "external_id": "micro", "channel_message_id": f"m{i}",
                    "text": TEXT}  # fmt: skip
            response = await client.post("/v1/messages", json=body, headers=HEADERS)
            cid = (await response.json())["customer_id"]
        paths = {
            "history_page_50": f"/v1/customers/{cid}/history?limit=50",
            "context_read": f"/v1/customers/{cid}/context",
        }
        out = {}
        for name, path in paths.items():
            for _ in range(100):  # warm up
                await (await client.get(path, headers=HEADERS)).read()
            best = float("inf")
            for _ in range(5):
                started = time.process_time()
                for _ in range(count // 5 // IN_FLIGHT):
                    await asyncio.gather(*(_get(client, path) for _ in range(IN_FLIGHT)))
                spent = time.process_time() - started
                best = min(best, spent / (count // 5 // IN_FLIGHT * IN_FLIGHT))
            out[name] = best * 1e6
        return out
    finally:
        await client.close()


async def _get(client: TestClient[Any, Any], path: str) -> None:
    await (await client.get(path, headers=HEADERS)).read()


async def _stored_page(redis_url: str, cid: str) -> list[Any]:
    """A 51-entry page of 100-character messages as XREVRANGE answers it (raw)."""
    redis = Redis.from_url(redis_url)
    try:
        for i in range(51):
            message = Message(
                id=f"msg_01JD6W3Q4M8X2K7N5P9R1T{i:04d}", customer_id=cid, conversation_id="",
                channel="web", direction="inbound", author=Author(kind="customer", id="v-1"),
                received_at="", channel_message_id=f"m{i}", text=TEXT,
            )  # fmt: skip
            entry = f"{1765000000000 + i * 700}-0"
            await redis.xadd(keys.timeline(cid), {"m": codec.encode_message(message), "v": 1},
                             id=entry)  # fmt: skip
        redis.response_callbacks.pop("XREVRANGE")
        page = await redis.xrevrange(keys.timeline(cid), "+", "-", count=51)
        return list(page or [])
    finally:
        await redis.aclose()


def page_decode(page: list[Any], cid: str) -> float:
    """CPU microseconds to read back a 51-entry page of 100-character messages."""

    def read() -> None:
        page_messages(cid, page_rows(page, None))

    timer = timeit.Timer(read, timer=time.thread_time)
    return min(timer.repeat(number=500, repeat=9)) / 500 * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.micro", description=__doc__)
    parser.add_argument("--loop", choices=("both", *EVENT_LOOPS), default="both")
    parser.add_argument("--requests", type=int, default=1500)
    args = parser.parse_args(argv)
    configure(settings("").log)  # the request lines would be most of the CPU measured
    loops: list[EventLoop] = ["asyncio", "uvloop"] if args.loop == "both" else [args.loop]
    found: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="omni-micro-") as work:
        server = EmbeddedRedis(Path(work), persist=False)
        server.start()
        try:
            cid = "cus_01JD6W3Q4M8X2K7N5P9R1T3V5X"
            page = asyncio.run(_stored_page(server.url, cid))
            print(f"page of 51 read back (page_rows, page_messages): "
                  f"{page_decode(page, cid):.0f} us CPU")  # fmt: skip
            # Alternating, three times, the least of each: the machine's other work
            # moves between runs.
            for _ in range(3):
                for kind in loops:
                    loop = new_event_loop(kind)
                    try:
                        figures = loop.run_until_complete(per_request(server.url, args.requests))
                    finally:
                        loop.close()
                    best = found.setdefault(loop_name(loop), figures)
                    for path, micros in figures.items():
                        best[path] = min(best[path], micros)
        finally:
            server.stop()
    for name, figures in found.items():
        for path, micros in figures.items():
            print(f"{path} ({name}): {micros:.0f} us CPU per request (client + server)")
    if {"asyncio", "uvloop"} <= set(found):
        for path, slow in found["asyncio"].items():
            fast = found["uvloop"][path]
            print(f"{path}: uvloop saves {slow - fast:.0f} us a request ({1 - fast / slow:.0%})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
