"""The outbox queue and its delivery records, on the real Redis."""

from __future__ import annotations

import random

import pytest
from redis.asyncio import Redis
from redis.crc import key_slot

from omni import keys
from omni.channel import Delivery
from omni.errors import ConfigError
from omni.outbox import Job, Outbox, OutboxConfig, backoff_ms, delivery_id
from omni.worker import Worker
from tests.conftest import key_count

CID = "cus_01HZY7Q8W3K5M2N4P6R8S0T2V4"
OTHER = "cus_01HZY7Q8W3K5M2N4P6R8S0T2V5"


async def sent(job: Job) -> Delivery:
    return Delivery(status="sent", channel_message_id=f"ch-{job.delivery_id[-6:]}")


async def test_enqueueing_one_key_twice_queues_once(redis: Redis) -> None:
    outbox = Outbox(redis)
    first = await outbox.enqueue("web", {"text": "hi"}, idempotency_key="msg-1", customer_id=CID)
    again = await outbox.enqueue(
        "web", {"text": "changed"}, idempotency_key="msg-1", customer_id=CID
    )
    assert first.created and not again.created
    assert first.delivery_id == again.delivery_id == delivery_id("msg-1", CID)
    assert again.state == "queued"
    assert await redis.xlen(outbox.queues[0].stream) == 1
    status = await outbox.status(first.delivery_id, CID)
    assert status is not None
    assert (status.state, status.attempts, status.kind) == ("queued", 0, "web")
    assert status.customer_id == CID and status.created_at is not None
    other = await outbox.enqueue("web", {}, idempotency_key="msg-2", customer_id=CID)
    assert other.created and other.delivery_id != first.delivery_id
    assert await redis.xlen(outbox.queues[0].stream) == 2


async def test_the_first_payload_is_the_one_delivered(redis: Redis) -> None:
    outbox = Outbox(redis)
    await outbox.enqueue("web", {"text": "first"}, idempotency_key="k", customer_id=CID)
    await outbox.enqueue("web", {"text": "second"}, idempotency_key="k", customer_id=CID)
    seen: list[object] = []

    async def record(job: Job) -> Delivery:
        seen.append(job.payload)
        return Delivery(status="sent")

    assert await Worker(redis, {"web": record}).run_once() == 1
    assert seen == [{"text": "first"}]


async def test_keys_are_scoped_by_customer(redis: Redis) -> None:
    outbox = Outbox(redis)
    a = await outbox.enqueue("web", {}, idempotency_key="same", customer_id=CID)
    b = await outbox.enqueue("web", {}, idempotency_key="same", customer_id=OTHER)
    c = await outbox.enqueue("web", {}, idempotency_key="same")
    assert len({a.delivery_id, b.delivery_id, c.delivery_id}) == 3
    assert all(x.created for x in (a, b, c))
    assert await redis.exists(keys.delivery(CID, a.delivery_id))
    assert await redis.exists(keys.delivery(c.delivery_id, c.delivery_id))
    no_customer = await outbox.status(c.delivery_id)
    assert no_customer is not None and no_customer.customer_id is None


def test_each_script_touches_one_slot() -> None:
    """Redis Cluster: a delivery's record lives with its customer; the queue's keys
    share the queue's slot."""
    did = delivery_id("k", CID)
    customer_slot = key_slot(keys.customer(CID).encode())
    assert key_slot(keys.delivery(CID, did).encode()) == customer_slot
    assert key_slot(keys.deliveries(CID).encode()) == customer_slot
    queue = {
        key_slot(k.encode())
        for k in (
            keys.outbox_stream("default"),
            keys.outbox_delayed("default"),
            keys.outbox_dead("default"),
            keys.outbox_dead_index("default"),
            keys.outbox_once("default", did),
        )
    }
    assert len(queue) == 1


async def test_an_enqueue_cut_short_is_completed_by_enqueuing_again(redis: Redis) -> None:
    """A crash after the record is written and before the push: the caller got no
    answer, so it enqueues again with the same key, which pushes it."""
    outbox = Outbox(redis)
    first = await outbox.enqueue("web", {}, idempotency_key="k", customer_id=CID)
    # Undo the push only, as if the process died between the two writes.
    await redis.delete(outbox.queues[0].stream, keys.outbox_once("default", first.delivery_id))
    again = await outbox.enqueue("web", {}, idempotency_key="k", customer_id=CID)
    assert again.delivery_id == first.delivery_id and not again.created
    assert await redis.xlen(outbox.queues[0].stream) == 1
    assert await Worker(redis, {"web": sent}).run_once() == 1


async def test_a_finished_delivery_is_not_queued_again(redis: Redis) -> None:
    outbox = Outbox(redis)
    first = await outbox.enqueue("web", {}, idempotency_key="k", customer_id=CID)
    assert await Worker(redis, {"web": sent}).run_once() == 1
    status = await outbox.status(first.delivery_id, CID)
    assert status is not None
    assert (status.state, status.attempts) == ("sent", 1)
    assert status.channel_message_id == f"ch-{first.delivery_id[-6:]}"
    # Its push guard gone too, the record alone keeps a repeat off the queue.
    await redis.delete(keys.outbox_once("default", first.delivery_id))
    again = await outbox.enqueue("web", {}, idempotency_key="k", customer_id=CID)
    assert (again.created, again.state) == (False, "sent")
    assert await redis.xlen(outbox.queues[0].stream) == 0


async def test_a_sent_record_keeps_its_status_and_drops_its_payload(redis: Redis) -> None:
    outbox = Outbox(redis)
    queued = await outbox.enqueue("web", {"text": "secret"}, idempotency_key="k", customer_id=CID)
    record = keys.delivery(CID, queued.delivery_id)
    assert await redis.hexists(record, "p")
    await Worker(redis, {"web": sent}).run_once()
    assert not await redis.hexists(record, "p")
    assert await outbox.mark_delivered(queued.delivery_id, CID, "ch-final")
    status = await outbox.status(queued.delivery_id, CID)
    assert status is not None
    assert (status.state, status.channel_message_id) == ("delivered", "ch-final")


async def test_a_customers_deliveries_are_listed_newest_first(redis: Redis) -> None:
    outbox = Outbox(redis)
    ids = [
        (await outbox.enqueue("web", {}, idempotency_key=f"k{i}", customer_id=CID)).delivery_id
        for i in range(3)
    ]
    await outbox.enqueue("web", {}, idempotency_key="k0", customer_id=OTHER)
    listed = await outbox.deliveries(CID)
    assert {s.id for s in listed} == set(ids)
    created = [s.created_at or "" for s in listed]
    assert created == sorted(created, reverse=True)
    assert len(await outbox.deliveries(CID, limit=2)) == 2


async def test_erasure_removes_records_and_the_worker_drops_their_entries(redis: Redis) -> None:
    outbox = Outbox(redis)
    gone = await outbox.enqueue("web", {"text": "hi"}, idempotency_key="a", customer_id=CID)
    kept = await outbox.enqueue("web", {"text": "hi"}, idempotency_key="a", customer_id=OTHER)
    assert await outbox.erase(CID) == 1
    assert await outbox.status(gone.delivery_id, CID) is None
    assert not await redis.exists(keys.deliveries(CID))
    handled: list[str] = []

    async def record(job: Job) -> Delivery:
        handled.append(job.delivery_id)
        return Delivery(status="sent")

    assert await Worker(redis, {"web": record}).run_once() == 2
    assert handled == [kept.delivery_id]
    assert await redis.xlen(outbox.queues[0].stream) == 0
    assert not await redis.exists(keys.delivery(CID, gone.delivery_id))  # not recreated


@pytest.mark.parametrize(
    ("kind", "key", "customer"),
    [
        ("", "k", CID),
        ("a b", "k", CID),
        ("web", "", CID),
        ("web", "k", "{cus}"),
        ("web", "x" * 1025, None),
    ],
)
async def test_bad_arguments_are_refused(
    redis: Redis, kind: str, key: str, customer: str | None
) -> None:
    with pytest.raises(ValueError):
        await Outbox(redis).enqueue(kind, {}, idempotency_key=key, customer_id=customer)
    assert await key_count(redis) == 0


def test_backoff_is_full_jitter_under_an_exponential_cap() -> None:
    rng = random.Random(7)
    for attempt in range(1, 30):
        ceiling = min(1_000, 10 * 2 ** (attempt - 1))
        delays = [backoff_ms(attempt, 10, 1_000, rng) for _ in range(50)]
        assert all(0 <= d <= ceiling for d in delays)
    late = [backoff_ms(25, 10, 1_000, rng) for _ in range(200)]
    assert max(late) > 500 and min(late) < 500  # spread over the whole capped range


@pytest.mark.parametrize(
    "changes",
    [
        {"max_attempts": 0},
        {"base_delay_ms": 0},
        {"base_delay_ms": 100, "max_delay_ms": 50},
        {"handler_timeout_ms": 60_000, "visibility_timeout_ms": 60_000},
        {"queue": "a b"},
    ],
)
def test_bad_settings_name_the_setting(changes: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match="outbox\\."):
        OutboxConfig(**changes)  # type: ignore[arg-type]
