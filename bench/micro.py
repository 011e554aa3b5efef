"""`python -m bench.micro`: CPU per request in one process, for decisions on a busy machine.

wrk's requests per second on a shared 2-core machine move with everyone else's work;
the CPU time this process spends per request does much less (it is not charged for
waiting). Here the app runs under aiohttp's test client against an embedded Valkey
(no persistence), one customer with 60 messages; it reports the least CPU per request
over five batches (client and server together, so a change shows as a difference
between two runs of this, not as an absolute), for a history page of 50 and a context
read, and the CPU of decoding a 51-entry page (`stored_messages`) alone.

    python -m bench.micro                       # this checkout, uvloop when installed
    python -m bench.micro --loop asyncio        # asyncio's loop
"""

from __future__ import annotations

import argparse
import tempfile
import time
import timeit
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from omni import codec
from omni.app import create_app
from omni.eventloop import EVENT_LOOPS, loop_name, new_event_loop
from omni.logs import configure
from omni.model import Author, Message
from omni.redis_server import EmbeddedRedis
from omni.settings import Settings
from omni.store.entries import stored_messages

KEY = "bench-micro-key-0001"
HEADERS = {"Authorization": f"Bearer {KEY}"}
TEXT = "x" * 100


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
                for _ in range(count // 5):
                    await (await client.get(path, headers=HEADERS)).read()
                best = min(best, (time.process_time() - started) / (count // 5))
            out[name] = best * 1e6
        return out
    finally:
        await client.close()


def page_decode() -> float:
    """CPU microseconds to read back a 51-entry page of 100-character messages."""
    cid = "cus_01JD6W3Q4M8X2K7N5P9R1T3V5X"
    entries: list[Any] = []
    for i in range(51):
        message = Message(
            id=f"msg_01JD6W3Q4M8X2K7N5P9R1T{i:04d}", customer_id=cid, conversation_id="",
            channel="web", direction="inbound", author=Author(kind="customer", id="v-1"),
            received_at="", channel_message_id=f"m{i}", text=TEXT,
        )  # fmt: skip
        entries.append(
            [f"{1765000000000 + i * 700}-0".encode(), codec.encode_message(message), b"1"]
        )
    timer = timeit.Timer(lambda: stored_messages(cid, entries, []), timer=time.thread_time)
    return min(timer.repeat(number=500, repeat=9)) / 500 * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.micro", description=__doc__)
    parser.add_argument("--loop", choices=EVENT_LOOPS, default="auto")
    parser.add_argument("--requests", type=int, default=1500)
    args = parser.parse_args(argv)
    configure(settings("").log)  # the request lines would be most of the CPU measured
    print(f"page of 51 read back (stored_messages): {page_decode():.0f} us CPU")
    with tempfile.TemporaryDirectory(prefix="omni-micro-") as work:
        server = EmbeddedRedis(Path(work), persist=False)
        server.start()
        loop = new_event_loop(args.loop)
        try:
            found = loop.run_until_complete(per_request(server.url, args.requests))
        finally:
            loop.close()
            server.stop()
    for name, micros in found.items():
        print(f"{name} ({loop_name(loop)}): {micros:.0f} us CPU per request (client + server)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
