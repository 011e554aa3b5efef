"""The outbox worker against the real Redis and real local bots: delivery, retries,
dead letters, and a worker that dies between claiming an entry and acking it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from redis.asyncio import Redis

from omni import keys
from omni.bots import BotDispatcher, bot_event
from omni.channel import Delivery
from omni.model import InboundMessage
from omni.outbox import Job, Outbox, OutboxConfig
from omni.settings import BotSettings, Secret
from omni.store import Store
from omni.worker import Handler, Worker
from tests.test_bots import SECRET, BotReceiver, ServerFactory, serve

CID = "cus_01HZY7Q8W3K5M2N4P6R8S0T2V4"
FAST = OutboxConfig(base_delay_ms=5, max_delay_ms=40, block_ms=50)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


async def until(check: Callable[[], Awaitable[bool]], timeout_s: float = 10) -> None:
    """Poll `check` until it holds; the test's timeout, not a sleep, bounds the wait."""
    async with asyncio.timeout(timeout_s):
        while not await check():  # noqa: ASYNC110 - the state is in Redis; no event says it
            await asyncio.sleep(0.01)


async def state_of(outbox: Outbox, did: str) -> str | None:
    status = await outbox.status(did, CID)
    return status.state if status else None


async def bot_setup(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> tuple[BotReceiver, BotDispatcher]:
    receiver = BotReceiver()
    url = await serve(aiohttp_server, receiver)
    return receiver, BotDispatcher(session, {"web": BotSettings(url, Secret(SECRET))})


async def enqueue_bot(outbox: Outbox, key: str = "msg-1") -> str:
    payload = {"bot": "web", "message": {"text": "hello"}, "context": {}}
    queued = await outbox.enqueue("bot", payload, idempotency_key=key, customer_id=CID)
    return queued.delivery_id


async def running(worker: Worker) -> tuple[asyncio.Event, asyncio.Task[None]]:
    stop = asyncio.Event()
    return stop, asyncio.create_task(worker.run(stop))


async def stopped(stop: asyncio.Event, task: asyncio.Task[None]) -> None:
    stop.set()
    await asyncio.wait_for(task, 5)


async def test_a_message_reaches_the_bot_signed_with_its_context(
    redis: Redis, aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    receiver, dispatcher = await bot_setup(aiohttp_server, session)
    store = Store(redis)
    message, *_ = await store.timeline.ingest(
        InboundMessage(
            channel="web", external_id="visitor-1", channel_message_id="w-1",
            text="Where is order 4417?",
        )
    )  # fmt: skip
    context = await store.contexts.read(message.customer_id)
    outbox = Outbox(redis, FAST)
    queued = await outbox.enqueue(
        "bot",
        bot_event("web", message, context),
        idempotency_key=f"bot:web:{message.id}",
        customer_id=message.customer_id,
    )
    worker = Worker(redis, {"bot": dispatcher}, config=FAST)
    assert await worker.run_once() == 1
    assert receiver.rejected == 0
    body = receiver.delivered[queued.delivery_id]
    assert body["message"]["text"] == "Where is order 4417?"
    assert body["context"]["customer"]["id"] == message.customer_id
    assert body["context"]["recent_messages"][-1]["id"] == message.id
    status = await outbox.status(queued.delivery_id, message.customer_id)
    assert status is not None
    assert (status.state, status.attempts, status.reason) == ("delivered", 1, None)
    assert await redis.xlen(outbox.queues[0].stream) == 0
    assert (await redis.xpending(outbox.queues[0].stream, FAST.group))["pending"] == 0


async def test_a_failing_bot_is_retried_with_backoff_until_it_answers(
    redis: Redis, aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    receiver, dispatcher = await bot_setup(aiohttp_server, session)
    receiver.answers = [(500, {"error": "busy"})]
    outbox = Outbox(redis, FAST)
    did = await enqueue_bot(outbox)
    worker = Worker(redis, {"bot": dispatcher}, config=FAST)
    assert await worker.run_once() == 1
    status = await outbox.status(did, CID)
    assert status is not None
    assert (status.state, status.attempts) == ("queued", 1)
    assert status.reason == "the bot answered HTTP 500"
    assert status.next_attempt_at is not None
    assert await redis.zcard(outbox.queues[0].delayed) == 1
    assert (await redis.xpending(outbox.queues[0].stream, FAST.group))["pending"] == 0

    stop, task = await running(worker)
    await until(lambda: _has(receiver, did))
    await stopped(stop, task)
    assert receiver.attempts == [did, did]
    status = await outbox.status(did, CID)
    assert status is not None
    assert (status.state, status.attempts) == ("delivered", 2)
    assert await redis.zcard(outbox.queues[0].delayed) == 0


async def _has(receiver: BotReceiver, did: str) -> bool:
    return did in receiver.delivered


async def test_after_max_attempts_a_delivery_is_dead_and_can_be_requeued(
    redis: Redis, aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    receiver, dispatcher = await bot_setup(aiohttp_server, session)
    receiver.default = (503, {"error": "down"})
    config = OutboxConfig(max_attempts=3, base_delay_ms=5, max_delay_ms=20, block_ms=50)
    outbox = Outbox(redis, config)
    did = await enqueue_bot(outbox)
    worker = Worker(redis, {"bot": dispatcher}, config=config)
    stop, task = await running(worker)
    await until(lambda: _is(outbox, did, "failed"))
    await stopped(stop, task)
    assert receiver.attempts == [did, did, did]
    status = await outbox.status(did, CID)
    assert status is not None
    assert status.attempts == 3
    assert status.reason == "the bot answered HTTP 503 (after 3 attempts)"
    [dead] = await outbox.dead_letters()
    assert (dead.delivery_id, dead.customer_id, dead.kind) == (did, CID, "bot")
    assert dead.reason == status.reason
    assert await redis.xlen(outbox.queues[0].stream) == 0
    assert await redis.zcard(outbox.queues[0].delayed) == 0

    receiver.default = (200, {"replies": []})  # the bot is fixed; the operator re-queues
    assert await outbox.requeue(did)
    assert await outbox.dead_letters() == []
    assert not await outbox.requeue(did)
    assert await worker.run_once() == 1
    assert did in receiver.delivered
    status = await outbox.status(did, CID)
    assert status is not None
    assert (status.state, status.attempts) == ("delivered", 1)


async def _is(outbox: Outbox, did: str, state: str) -> bool:
    return await state_of(outbox, did) == state


async def test_a_permanent_failure_is_dead_at_once(
    redis: Redis, aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    receiver, dispatcher = await bot_setup(aiohttp_server, session)
    receiver.default = (400, {"error": "what is this"})
    outbox = Outbox(redis, FAST)
    did = await enqueue_bot(outbox)
    assert await Worker(redis, {"bot": dispatcher}, config=FAST).run_once() == 1
    status = await outbox.status(did, CID)
    assert status is not None
    assert (status.state, status.attempts, status.reason) == (
        "failed", 1, "the bot answered HTTP 400",
    )  # fmt: skip
    assert [d.delivery_id for d in await outbox.dead_letters()] == [did]


async def test_a_worker_killed_between_claim_and_ack_is_taken_over(
    redis: Redis, aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """Worker A sends the webhook and dies before it acks: the bot got it, omni does not
    know. Worker B takes the entry over after the visibility timeout and sends it again
    with the same delivery id, and the de-duplicating bot records it exactly once."""
    receiver, dispatcher = await bot_setup(aiohttp_server, session)
    outbox = Outbox(redis, FAST)
    did = await enqueue_bot(outbox)
    sent_once = asyncio.Event()

    async def send_then_hang(job: Job) -> Delivery:
        await dispatcher(job)
        sent_once.set()
        await asyncio.Event().wait()  # until cancelled: the process dies here
        raise AssertionError("unreachable")

    worker_a = Worker(redis, {"bot": send_then_hang}, config=FAST, consumer="worker-a")
    task_a = asyncio.create_task(worker_a.run_once())
    await asyncio.wait_for(sent_once.wait(), 5)
    task_a.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task_a
    pending = await redis.xpending_range(outbox.queues[0].stream, FAST.group, "-", "+", 10)
    assert [p["consumer"] for p in pending] == [b"worker-a"]
    status = await outbox.status(did, CID)
    assert status is not None
    assert (status.state, status.attempts) == ("queued", 1)

    quick = OutboxConfig(visibility_timeout_ms=300, handler_timeout_ms=250, block_ms=50)
    worker_b = Worker(redis, {"bot": dispatcher}, config=quick, consumer="worker-b")
    await until(lambda: _ran(worker_b, outbox, did))
    assert receiver.attempts == [did, did]
    assert list(receiver.delivered) == [did]
    status = await outbox.status(did, CID)
    assert status is not None
    assert (status.state, status.attempts) == ("delivered", 2)
    assert (await redis.xpending(outbox.queues[0].stream, FAST.group))["pending"] == 0


async def _ran(worker: Worker, outbox: Outbox, did: str) -> bool:
    await worker.run_once()
    return await _is(outbox, did, "delivered")


async def test_a_delivery_that_kills_every_worker_ends_dead(redis: Redis) -> None:
    config = OutboxConfig(max_attempts=1, visibility_timeout_ms=200, handler_timeout_ms=100)
    outbox = Outbox(redis, config)
    did = (await outbox.enqueue("web", {}, idempotency_key="poison", customer_id=CID)).delivery_id
    entered = asyncio.Event()

    async def dies(job: Job) -> Delivery:
        entered.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    task = asyncio.create_task(Worker(redis, {"web": dies}, config=config).run_once())
    await asyncio.wait_for(entered.wait(), 5)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    calls: list[str] = []

    async def fine(job: Job) -> Delivery:
        calls.append(job.delivery_id)
        return Delivery(status="sent")

    other = Worker(redis, {"web": fine}, config=config)
    await until(lambda: _settled(other, outbox, did))
    assert calls == []  # no attempts left: it is not run again
    status = await outbox.status(did, CID)
    assert status is not None
    assert status.reason == "no attempts left after 1: worker lost"
    assert [d.delivery_id for d in await outbox.dead_letters()] == [did]


async def _settled(worker: Worker, outbox: Outbox, did: str) -> bool:
    await worker.run_once()
    return await _is(outbox, did, "failed")


@pytest.mark.parametrize(
    ("handler", "reason", "retry"),
    [
        ("raises", "the handler raised RuntimeError", True),
        ("hangs", "the attempt took over 100 ms", True),
        ("missing", "no handler for deliveries of kind 'web'", False),
    ],
)
async def test_handler_trouble_is_a_failure_never_an_exception(
    redis: Redis, handler: str, reason: str, retry: bool
) -> None:
    async def raises(job: Job) -> Delivery:
        raise RuntimeError("boom with ana@example.com in it")

    async def hangs(job: Job) -> Delivery:
        await asyncio.sleep(10)
        return Delivery(status="sent")

    chosen: dict[str, Handler] = {"raises": raises, "hangs": hangs}
    handlers = {"web": chosen[handler]} if handler in chosen else {}
    config = OutboxConfig(handler_timeout_ms=100, visibility_timeout_ms=1_000)
    outbox = Outbox(redis, config)
    did = (await outbox.enqueue("web", {}, idempotency_key="k", customer_id=CID)).delivery_id
    assert await Worker(redis, handlers, config=config).run_once() == 1
    status = await outbox.status(did, CID)
    assert status is not None
    assert status.reason == reason
    assert status.state == ("queued" if retry else "failed")
    assert await redis.zcard(outbox.queues[0].delayed) == (1 if retry else 0)
    assert len(await outbox.dead_letters()) == (0 if retry else 1)


async def test_workers_share_a_queue_and_stop_gracefully(
    redis: Redis, aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    receiver, dispatcher = await bot_setup(aiohttp_server, session)
    outbox = Outbox(redis, FAST)
    ids = [await enqueue_bot(outbox, f"msg-{i}") for i in range(30)]
    workers = [Worker(redis, {"bot": dispatcher}, config=FAST) for _ in range(3)]
    runs = [await running(w) for w in workers]

    async def all_delivered() -> bool:
        return len(receiver.delivered) == len(ids)

    await until(all_delivered)
    for stop, task in runs:
        await stopped(stop, task)
    assert sorted(receiver.attempts) == sorted(ids)  # nothing lost, nothing repeated
    assert await redis.xlen(outbox.queues[0].stream) == 0
    # Stopped cleanly, with nothing pending, each worker left the group.
    assert await redis.xinfo_consumers(outbox.queues[0].stream, FAST.group) == []
    assert await redis.exists(keys.deliveries(CID))


async def test_a_queue_entry_read_before_its_record_is_written_is_still_delivered(
    redis: Redis, aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    # On a cluster a new delivery's record and its queue entry are on two nodes, written
    # in one pipeline: a worker can read the entry first. Here the record is held back
    # (renamed within its slot) while the worker takes the entry, and put back 0.2 s later.
    receiver, dispatcher = await bot_setup(aiohttp_server, session)
    outbox = Outbox(redis, FAST)
    did = await enqueue_bot(outbox)
    record = keys.delivery(CID, did)
    await redis.rename(record, f"{record}:held")
    worker = Worker(redis, {"bot": dispatcher}, config=FAST)

    async def put_back() -> None:
        await asyncio.sleep(0.2)
        await redis.rename(f"{record}:held", record)

    restore = asyncio.create_task(put_back())
    assert await worker.run_once() == 1
    await restore
    assert list(receiver.delivered) == [did]
    assert await state_of(outbox, did) == "delivered"


async def test_a_queue_entry_whose_record_never_comes_is_skipped_as_erased(
    redis: Redis, aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    receiver, dispatcher = await bot_setup(aiohttp_server, session)
    outbox = Outbox(redis, FAST)
    did = await enqueue_bot(outbox)
    await redis.delete(keys.delivery(CID, did))  # erased with its customer
    worker = Worker(redis, {"bot": dispatcher}, config=FAST)
    assert await worker.run_once() == 1
    assert receiver.delivered == {}
    assert (await redis.xpending(outbox.queues[0].stream, FAST.group))["pending"] == 0
