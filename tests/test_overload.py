"""Load shedding: a process at `[limits] max_in_flight` answers the next request at once
with a 503 problem and Retry-After instead of queueing it; health and readiness still
answer; once a slot frees, requests are served again.

Requests are held in flight deterministically: a Twilio gather waits on the voice bot
while the caller is on the line, and this bot answers only when the test lets it."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from tests.conftest import BOT
from tests.test_bots import ServerFactory
from tests.test_channel_voice import PUBLIC, post, voice_app


class GatedBot:
    def __init__(self) -> None:
        self.waiting = 0
        self.both_waiting = asyncio.Event()
        self.gate = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        self.waiting += 1
        if self.waiting == 2:
            self.both_waiting.set()
        await self.gate.wait()
        return web.json_response({"replies": [{"text": "One moment."}]})


def _gather(n: int) -> list[tuple[str, str]]:
    return [("CallSid", f"CAoverload{n:024d}"), ("From", f"+1415555{n:04d}"),
            ("To", "+14155550199"), ("CallStatus", "in-progress"),
            ("SpeechResult", "where is my order")]  # fmt: skip


async def test_requests_beyond_the_in_flight_limit_are_shed_with_retry_after(
    aiohttp_client: Any, aiohttp_server: ServerFactory, redis_url: str, redis: Any
) -> None:
    bot = GatedBot()
    bot_app = web.Application()
    bot_app.router.add_post("/bot", bot.handle)
    bot_url = str((await aiohttp_server(bot_app)).make_url("/bot"))
    client = await voice_app(
        aiohttp_client, redis_url, bot_url=bot_url, timeout_ms=20_000, limits={"max_in_flight": 2}
    )
    url = PUBLIC + "/channels/voice/twilio/gather?turn=1"
    held = [asyncio.create_task(post(client, url, _gather(n))) for n in range(2)]
    await asyncio.wait_for(bot.both_waiting.wait(), 10)

    shed = await client.get("/v1/context?channel=web&external_id=v-1", headers=BOT)
    assert shed.status == 503
    assert shed.headers["Retry-After"] == "1"
    assert shed.content_type == "application/problem+json"
    assert "retry" in (await shed.json())["detail"]
    assert (await client.get("/healthz")).status == 200
    assert (await client.get("/readyz")).status == 200

    bot.gate.set()
    for task in held:
        assert (await task).status == 200
    served = await client.get("/v1/context?channel=voice&external_id=%2B14155550000", headers=BOT)
    assert served.status == 200
