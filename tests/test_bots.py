"""Bot webhooks: the signature, the answer, and one attempt against a real local bot."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from omni.bots import (
    ATTEMPT_HEADER,
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    BotDispatcher,
    BotReply,
    parse_answer,
    sign,
    verify_signature,
)
from omni.outbox import Job
from omni.settings import BotSettings, Secret

SECRET = "bot-secret-0000001"
ServerFactory = Callable[[web.Application], Awaitable[TestServer]]


class BotReceiver:
    """A bot as a bot should be written: it verifies the signature (401 otherwise) and
    records each delivery id once, however often it is attempted. It answers from
    `answers` in order, then with `default`."""

    def __init__(self, secret: str = SECRET, delay_s: float = 0.0) -> None:
        self.secret = secret
        self.delay_s = delay_s
        self.answers: list[tuple[int, Any]] = []
        self.default: tuple[int, Any] = (200, {"replies": []})
        self.attempts: list[str] = []  # the delivery id of every verified request
        self.delivered: dict[str, dict[str, Any]] = {}  # first processed body per id
        self.headers: list[dict[str, str]] = []
        self.rejected = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/bot", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        signature = request.headers.get(SIGNATURE_HEADER, "")
        if not verify_signature(self.secret, signature, body, time.time()):
            self.rejected += 1
            return web.Response(status=401)
        delivery_id = request.headers[DELIVERY_HEADER]
        self.attempts.append(delivery_id)
        self.headers.append(dict(request.headers))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        status, answer = self.answers.pop(0) if self.answers else self.default
        if 200 <= status < 300:
            self.delivered.setdefault(delivery_id, json.loads(body))
        if isinstance(answer, bytes):
            return web.Response(status=status, body=answer, content_type="application/json")
        return web.json_response(answer, status=status)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


async def serve(aiohttp_server: ServerFactory, receiver: BotReceiver) -> str:
    server = await aiohttp_server(receiver.app())
    return str(server.make_url("/bot"))


def job(bot: str = "web", attempt: int = 1) -> Job:
    payload = {"bot": bot, "message": {"text": "where is order 4417?"}, "context": {"v": "3"}}
    return Job("dlv_test", "cus_test", "bot", payload, attempt)


# -- the signature ------------------------------------------------------------------------


def test_signature_verifies_and_rejects_tampering_and_replays() -> None:
    body = b'{"id":"dlv_1"}'
    now = 1_700_000_000
    header = sign(SECRET, body, now)
    assert header.startswith(f"t={now},sha256=")
    assert verify_signature(SECRET, header, body, now)
    assert verify_signature(SECRET.encode(), header, body, now + 299)
    assert not verify_signature("another-secret", header, body, now)
    assert not verify_signature(SECRET, header, body + b" ", now)
    assert not verify_signature(SECRET, header, body, now + 301)  # a replay, too late
    assert not verify_signature(SECRET, header, body, now - 301)  # from the future
    assert not verify_signature(SECRET, header, body, now + 60, tolerance_s=30)
    # The time is signed: moving it invalidates the signature.
    assert not verify_signature(SECRET, header.replace(f"t={now}", f"t={now + 1}"), body, now)


@pytest.mark.parametrize(
    "header",
    ["", "sha256=abc", "t=,sha256=abc", "t=abc,sha256=abc", "t=1700000000", "garbage"],
)
def test_malformed_signature_headers_are_rejected(header: str) -> None:
    assert not verify_signature(SECRET, header, b"{}", 1_700_000_000)


def test_any_of_several_signatures_may_match_during_rotation() -> None:
    body = b"{}"
    new = sign("new-secret", body, 1_700_000_000).rpartition(",")[2]
    header = sign("old-secret", body, 1_700_000_000) + "," + new
    assert verify_signature("new-secret", header, body, 1_700_000_000)
    assert verify_signature("old-secret", header, body, 1_700_000_000)
    assert not verify_signature("other-secret", header, body, 1_700_000_000)


# -- the answer ---------------------------------------------------------------------------


def test_good_answers_parse() -> None:
    answer = parse_answer(b'{"replies": [{"text": "Your order ships today."}, {"text": "Bye"}]}')
    assert [r.text for r in answer.replies] == ["Your order ships today.", "Bye"]
    assert parse_answer(b"").replies == []
    assert parse_answer(b"{}").replies == []
    quick = parse_answer(b'{"replies": [{"text": "Size?", "quick_replies": [{"payload": "42"}]}]}')
    assert quick.replies[0].quick_replies[0].payload == "42"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"<html>oops</html>", "not JSON"),
        (b'{"replies": [{"text": "a"}', "not JSON"),
        (b'{"replies": "hello"}', "schema"),
        (b'{"replies": [{"txt": "a"}]}', "schema"),
        (b'{"replies": [{"text": ""}]}', "schema"),
        (b'{"replies": [{"text": 4417}]}', "schema"),
        (b"[]", "schema"),
        (json.dumps({"replies": [{"text": "x"}] * 11}).encode(), "schema"),
    ],
)
def test_malformed_answers_raise_a_reason(body: bytes, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_answer(body)


# -- one attempt against a local bot ----------------------------------------------------


async def test_posts_a_signed_request_and_hands_over_the_replies(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    receiver = BotReceiver()
    receiver.default = (200, {"replies": [{"text": "It ships today."}]})
    url = await serve(aiohttp_server, receiver)
    got: list[tuple[Job, list[BotReply]]] = []

    async def on_replies(j: Job, replies: list[BotReply]) -> None:
        got.append((j, replies))

    dispatcher = BotDispatcher(session, {"web": BotSettings(url, Secret(SECRET))}, on_replies)
    outcome = await dispatcher(job(attempt=2))
    assert outcome.status == "delivered"
    assert receiver.rejected == 0
    assert receiver.attempts == ["dlv_test"]
    assert receiver.headers[0][ATTEMPT_HEADER] == "2"
    body = receiver.delivered["dlv_test"]
    assert body["id"] == "dlv_test"
    assert body["type"] == "message.created"
    assert body["customer_id"] == "cus_test"
    assert body["message"] == {"text": "where is order 4417?"}
    assert body["context"] == {"v": "3"}
    assert [(j.delivery_id, [r.text for r in rs]) for j, rs in got] == [
        ("dlv_test", ["It ships today."])
    ]


async def test_a_wrong_secret_is_refused_by_the_bot_and_not_retried(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    receiver = BotReceiver()
    url = await serve(aiohttp_server, receiver)
    dispatcher = BotDispatcher(session, {"web": BotSettings(url, Secret("not-the-secret"))})
    outcome = await dispatcher(job())
    assert (outcome.status, outcome.retry) == ("failed", False)
    assert outcome.reason == "the bot answered HTTP 401"
    assert receiver.rejected == 1


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ((200, b"this is not json"), "not JSON"),
        ((200, {"replies": [{"text": ""}]}), "schema"),
        ((200, {"replies": {"text": "hi"}}), "schema"),
    ],
)
async def test_a_malformed_answer_is_a_failed_delivery_with_a_reason(
    aiohttp_server: ServerFactory,
    session: aiohttp.ClientSession,
    answer: tuple[int, Any],
    reason: str,
) -> None:
    receiver = BotReceiver()
    receiver.default = answer
    url = await serve(aiohttp_server, receiver)
    dispatcher = BotDispatcher(session, {"web": BotSettings(url, Secret(SECRET))})
    outcome = await dispatcher(job())
    assert (outcome.status, outcome.retry) == ("failed", False)
    assert reason in (outcome.reason or "")


async def test_a_bot_that_does_not_answer_in_time_is_retried(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    receiver = BotReceiver(delay_s=0.3)
    url = await serve(aiohttp_server, receiver)
    dispatcher = BotDispatcher(session, {"web": BotSettings(url, Secret(SECRET), timeout_ms=50)})
    outcome = await dispatcher(job())
    assert (outcome.status, outcome.retry) == ("failed", True)
    assert outcome.reason == "the bot did not answer within 50 ms"


@pytest.mark.parametrize(("status", "retry"), [(500, True), (503, True), (429, True), (404, False)])
async def test_status_codes_decide_retry(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession, status: int, retry: bool
) -> None:
    receiver = BotReceiver()
    receiver.default = (status, {"error": "x"})
    url = await serve(aiohttp_server, receiver)
    dispatcher = BotDispatcher(session, {"web": BotSettings(url, Secret(SECRET))})
    outcome = await dispatcher(job())
    assert (outcome.status, outcome.retry) == ("failed", retry)
    assert outcome.reason == f"the bot answered HTTP {status}"


async def test_an_unreachable_bot_is_retried(session: aiohttp.ClientSession) -> None:
    with socket.socket() as sock:  # a port nobody listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    target = BotSettings(f"http://127.0.0.1:{port}/bot", Secret(SECRET), timeout_ms=2000)
    outcome = await BotDispatcher(session, {"web": target})(job())
    assert (outcome.status, outcome.retry) == ("failed", True)
    assert (outcome.reason or "").startswith("the bot cannot be reached")


async def test_an_unconfigured_bot_fails_without_a_request(
    session: aiohttp.ClientSession,
) -> None:
    outcome = await BotDispatcher(session, {})(job(bot="instagram"))
    assert (outcome.status, outcome.retry) == ("failed", False)
    assert outcome.reason == "no bot configured for 'instagram'"


async def test_replies_that_cannot_be_stored_make_the_delivery_retry(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    receiver = BotReceiver()
    receiver.default = (200, {"replies": [{"text": "hello"}]})
    url = await serve(aiohttp_server, receiver)

    async def broken(j: Job, replies: list[BotReply]) -> None:
        raise ConnectionError("redis went away")

    dispatcher = BotDispatcher(session, {"web": BotSettings(url, Secret(SECRET))}, broken)
    outcome = await dispatcher(job())
    assert (outcome.status, outcome.retry) == ("failed", True)
    assert outcome.reason == "storing the bot's replies failed: ConnectionError"
