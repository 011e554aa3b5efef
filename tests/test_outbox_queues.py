"""The outbox over several queues (`[outbox] queues`, a cluster's default is `[redis]
shards`): a delivery goes to its owner's queue, one worker drains every queue, and the
dead letters, re-queueing and the backlog see them all. Four queues here, on one server
as on the cluster (the queues are keys)."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from omni import keys
from omni.channel import Delivery
from omni.errors import ConfigError
from omni.outbox import Job, Outbox, OutboxConfig
from omni.settings import Settings
from omni.worker import Worker

QUEUES = OutboxConfig(queues=4, base_delay_ms=5, max_delay_ms=40, block_ms=50, max_attempts=1)


def _owners() -> list[str]:
    """Two customers for each queue."""
    found: dict[int, list[str]] = {}
    index = 0
    while any(len(found.get(q, [])) < 2 for q in range(QUEUES.queues)):
        cid = f"cus_queue{index:04d}"
        found.setdefault(keys.shard_of(cid, QUEUES.queues), []).append(cid)
        index += 1
    return [cid for q in range(QUEUES.queues) for cid in found[q][:2]]


async def _enqueue_all(outbox: Outbox, owners: list[str]) -> dict[str, str]:
    """delivery id -> owner, one delivery per owner and one that belongs to no one."""
    ids = {}
    for cid in owners:
        queued = await outbox.enqueue("web", {"to": cid}, idempotency_key="k", customer_id=cid)
        ids[queued.delivery_id] = cid
    loose = await outbox.enqueue("web", {"to": ""}, idempotency_key="no-one")
    ids[loose.delivery_id] = ""
    return ids


async def test_each_delivery_waits_in_its_owners_queue_and_one_worker_drains_them_all(
    redis: Redis,
) -> None:
    outbox = Outbox(redis, QUEUES)
    assert [q.name for q in outbox.queues] == ["default", "default.1", "default.2", "default.3"]
    ids = await _enqueue_all(outbox, _owners())
    for did, owner in ids.items():
        queue = outbox.queues[outbox.queue_of(owner or did)]
        entries = await redis.xrange(queue.stream)
        assert did.encode() in [fields[b"d"] for _, fields in entries]
    for queue in outbox.queues:
        assert await redis.xlen(queue.stream) >= 2  # every queue is used
    assert (await outbox.backlog()).waiting == len(ids)

    sent: list[str] = []

    async def deliver(job: Job) -> Delivery:
        sent.append(job.delivery_id)
        return Delivery(status="sent")

    worker = Worker(redis, {"web": deliver}, config=QUEUES)
    assert await worker.run_once() == len(ids)
    assert sorted(sent) == sorted(ids)  # each once
    for did, owner in ids.items():
        status = await outbox.status(did, owner or None)
        assert status is not None and status.state == "sent"
    assert await outbox.backlog() == (0, 0, 0, 0)
    for queue in outbox.queues:
        assert await redis.xlen(queue.stream) == 0


async def test_dead_letters_of_every_queue_are_listed_and_requeued(redis: Redis) -> None:
    outbox = Outbox(redis, QUEUES)
    ids = await _enqueue_all(outbox, _owners())

    async def refuse(job: Job) -> Delivery:
        return Delivery(status="failed", reason="refused")

    assert await Worker(redis, {"web": refuse}, config=QUEUES).run_once() == len(ids)
    assert (await outbox.backlog()).dead == len(ids)
    first = await outbox.dead_letters(limit=5)
    rest = await outbox.dead_letters(limit=100, after=first[-1].entry_id)
    letters = first + rest
    assert sorted(d.delivery_id for d in letters) == sorted(ids)
    # Oldest first, and no two alike (two queues can bury in the same millisecond).
    order = [tuple(map(int, d.entry_id.replace(".", "-").split("-"))) for d in letters]
    assert order == sorted(order)
    assert len(set(order)) == len(ids)

    for did in ids:
        assert await outbox.requeue(did)
        assert not await outbox.requeue(did)
    assert await outbox.dead_letters() == []

    async def deliver(job: Job) -> Delivery:
        return Delivery(status="sent")

    assert await Worker(redis, {"web": deliver}, config=QUEUES).run_once() == len(ids)
    for did, owner in ids.items():
        status = await outbox.status(did, owner or None)
        assert status is not None and status.state == "sent"


async def test_erasing_a_customer_clears_their_queue_only(redis: Redis) -> None:
    outbox = Outbox(redis, QUEUES)
    ids = await _enqueue_all(outbox, _owners())

    async def refuse(job: Job) -> Delivery:
        return Delivery(status="failed", reason="refused")

    await Worker(redis, {"web": refuse}, config=QUEUES).run_once()
    gone = next(owner for owner in ids.values() if owner)
    assert await outbox.erase(gone) == 1
    left = {d.delivery_id for d in await outbox.dead_letters()}
    assert left == {did for did, owner in ids.items() if owner != gone}


def test_one_queue_on_one_server_and_one_per_shard_in_a_cluster_unless_set() -> None:
    node = {"url": "redis://127.0.0.1:7000", "shards": 5}
    one = Settings.from_mapping({"redis": {**node, "cluster": False}})
    cluster = Settings.from_mapping({"redis": {**node, "cluster": True}})
    chosen = Settings.from_mapping({"redis": {**node, "cluster": True}, "outbox": {"queues": 3}})
    assert (one.outbox.queues, one.redis.parts) == (1, 1)
    assert (cluster.outbox.queues, cluster.redis.parts) == (5, 5)
    assert chosen.outbox.queues == 3
    with pytest.raises(ConfigError, match=r"outbox\.queues"):
        Settings.from_mapping({"outbox": {"queues": 0}})
