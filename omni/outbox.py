"""The outbox: a durable queue in Redis of deliveries (a reply to a channel, a webhook
to a bot), delivered at least once by `omni.worker`.

    enqueue ──► record (owner's slot) ──► stream ──► worker ──► sent / delivered
                                            ▲           │
                          delayed zset ─────┘ ◄─ retry ─┤ (backoff, full jitter)
                                                        └─► dead-letter stream ─► requeue

A delivery is two things in two places. Its *record* (kind, payload, state, attempts,
reason) is a hash in its owner's slot, `omni:{cus_…}:dlv:<id>`, so it lives and is
erased with the customer and the core reads its status with one HGETALL. The *queue*
(stream, consumer group, delayed retries, dead letters) lives in the queue's own slot
and carries only references (delivery id, owner), never personal data. There are
`[outbox] queues` queues (one on one server; in a cluster `[redis] shards`, so that no
node takes every delivery): a delivery goes to its owner's (`keys.shard_of`), every
worker works every queue, and the dead letters, re-queueing and the backlog in /metrics
cover them all. Every write is
one atomic script in one slot; the order of the writes makes each crash window safe:

- enqueue: create the record if absent, then push the reference once (a push guard).
  A crash in between is repaired by enqueuing again with the same idempotency key:
  the delivery id is derived from the key, so the retry finds the same record.
- attempt: count the attempt on the record, run it, write the outcome to the record,
  then XACK (or schedule the retry, or dead-letter). A worker that dies before the ack
  leaves the entry pending; another worker claims it with XAUTOCLAIM once it has been
  idle for the visibility timeout, and finds on the record whether it still has to run.

States: queued (waiting or between retries) → sent (the channel accepted it) →
delivered (the receiver confirmed it), or failed (with the reason; it is then in the
dead-letter stream until re-queued). Delivery is at least once: an attempt can be
repeated (a worker dying after the receiver got it), so each attempt carries the
delivery id and receivers de-duplicate by it.

Over 400 lines on purpose: it is every write of one queue, whose crash safety is the
order of those writes across enqueue, attempt and bury (above); split, that order would
have to be read across files. The worker's loop is omni.worker, the handlers
omni.delivery, the scripts omni.scripts.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import msgspec
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from omni import codec, keys, scripts
from omni.clock import iso, now_ms
from omni.errors import ConfigError
from omni.scripts import Batch

State = Literal["queued", "sent", "delivered", "failed"]

# How long the push guard keeps a second push of one delivery id off the stream. After
# it the record itself still stops a repeat of a finished delivery (enqueue does not push
# a sent, delivered or failed one); it only has to outlast the retries of a live one.
_PUSH_GUARD_MS = 7 * 24 * 3600 * 1000
_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
_KEY_MAX = 1024


def _s(value: object) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class OutboxConfig:
    """The `[outbox]` settings; every duration is in milliseconds."""

    queue: str = "default"
    # How many queues: a delivery goes to its owner's, each is one slot (omni.keys).
    queues: int = 1
    group: str = "workers"
    max_attempts: int = 10
    base_delay_ms: int = 1_000
    max_delay_ms: int = 600_000
    visibility_timeout_ms: int = 60_000
    handler_timeout_ms: int = 30_000
    batch: int = 16
    block_ms: int = 1_000

    def queue_name(self, index: int) -> str:
        """Queue `index`'s name: the first keeps `queue` itself, so one queue's keys
        (and what waits in them) stay where they were when queues are added."""
        return self.queue if index == 0 else f"{self.queue}.{index}"

    def __post_init__(self) -> None:
        for name in ("queue", "group"):
            if not _NAME.match(getattr(self, name)):
                raise ConfigError(f"outbox.{name}: letters, digits and _.:- only")
        for name in (
            "queues",
            "max_attempts",
            "base_delay_ms",
            "max_delay_ms",
            "batch",
            "block_ms",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"outbox.{name}: must be at least 1")
        if self.max_delay_ms < self.base_delay_ms:
            raise ConfigError("outbox.max_delay_ms: must be at least outbox.base_delay_ms")
        if not 0 < self.handler_timeout_ms < self.visibility_timeout_ms:
            raise ConfigError(
                "outbox.handler_timeout_ms: must be positive and below "
                "outbox.visibility_timeout_ms, or a slow attempt would be claimed twice"
            )


@dataclass(frozen=True)
class Job:
    """One attempt at a delivery, as a handler sees it."""

    delivery_id: str
    customer_id: str | None
    kind: str
    payload: Any
    attempt: int


class Enqueued(msgspec.Struct, frozen=True):
    delivery_id: str
    customer_id: str | None
    created: bool  # False: the idempotency key was seen before; nothing new was queued
    state: State


class DeliveryStatus(msgspec.Struct, frozen=True):
    """What the core reads about a delivery."""

    id: str
    customer_id: str | None
    kind: str
    state: State
    attempts: int
    reason: str | None
    created_at: str | None
    updated_at: str | None
    next_attempt_at: str | None
    channel_message_id: str | None


class DeadLetter(msgspec.Struct, frozen=True):
    entry_id: str
    delivery_id: str
    customer_id: str | None
    kind: str
    reason: str
    failed_at: str | None


@dataclass(frozen=True)
class Queue:
    """One queue's keys (they share its hash tag: one slot)."""

    name: str

    @property
    def stream(self) -> str:
        return keys.outbox_stream(self.name)

    @property
    def delayed(self) -> str:
        return keys.outbox_delayed(self.name)

    @property
    def dead(self) -> str:
        return keys.outbox_dead(self.name)

    @property
    def dead_index(self) -> str:
        return keys.outbox_dead_index(self.name)


@dataclass(frozen=True)
class Ref:
    """A stream entry (of queue number `queue`) and the delivery it points at."""

    entry_id: str
    delivery_id: str
    owner: str  # the customer id, or "" for a delivery that belongs to no customer
    queue: int = 0

    @property
    def record(self) -> str:
        return keys.delivery(self.owner or self.delivery_id, self.delivery_id)


@dataclass(frozen=True)
class Begun:
    """What `Outbox.begin` found: the verdict of delivery_begin.lua and the record."""

    verdict: Literal["gone", "done", "failed", "exhausted", "go"]
    attempts: int
    kind: str
    payload: bytes
    reason: str


def delivery_id(idempotency_key: str, customer_id: str | None = None) -> str:
    """The delivery id an idempotency key stands for (per customer): the same key always
    names the same delivery, which is what makes enqueue idempotent across crashes."""
    digest = hashlib.blake2b(
        f"{customer_id or ''}\0{idempotency_key}".encode(), digest_size=16
    ).hexdigest()
    return f"dlv_{digest}"


def backoff_ms(attempt: int, base_ms: int, cap_ms: int, rng: random.Random) -> int:
    """Full jitter: a uniform pick in [0, min(cap, base * 2^(attempt-1))]."""
    ceiling = min(cap_ms, base_ms * 2 ** min(max(attempt - 1, 0), 40))
    return int(rng.uniform(0, ceiling))


class Backlog(NamedTuple):
    waiting: int  # queued, not yet taken by any worker (the group's lag)
    in_flight: int  # taken by a worker, not yet finished (pending in the group)
    delayed: int  # failed attempts waiting for their retry
    dead: int  # failed for good, in the dead letters


class Outbox:
    """The queue and the delivery records. Holds the client, never opens or closes it."""

    def __init__(self, redis: Redis, config: OutboxConfig | None = None) -> None:
        self.redis = redis
        self.config = config or OutboxConfig()
        self.queues = tuple(Queue(self.config.queue_name(i)) for i in range(self.config.queues))
        self._create = scripts.load(redis, "delivery_create")
        self._begin = scripts.load(redis, "delivery_begin")
        self._update = scripts.load(redis, "delivery_update")
        self._push = scripts.load(redis, "outbox_push")
        self._promote = scripts.load(redis, "outbox_promote")
        self._dead = scripts.load(redis, "outbox_dead")
        self._requeue = scripts.load(redis, "outbox_requeue")

    # -- the core's side --------------------------------------------------------------

    async def enqueue(
        self, kind: str, payload: Any, *, idempotency_key: str, customer_id: str | None = None
    ) -> Enqueued:
        """Queue a delivery once per idempotency key (and customer).

        `kind` picks the worker's handler ("bot", or a channel name); `payload` is
        anything msgpack holds and is given back to the handler as it was.
        """
        did, record, push = self._prepare(kind, payload, idempotency_key, customer_id)
        existing = _s(await self._create(keys=record[0], args=record[1]))
        if existing in ("sent", "delivered", "failed"):
            return Enqueued(did, customer_id, created=False, state=existing)  # type: ignore[arg-type]
        pushed = await self._push(keys=push[0], args=push[1])
        return Enqueued(
            did, customer_id, created=pushed is not None and not existing, state="queued"
        )

    def stage_new(
        self, batch: Batch, kind: str, payload: Any, *, idempotency_key: str, customer_id: str
    ) -> None:
        """`enqueue` within the caller's batch, for an idempotency key made for this
        delivery (a new message's id): no record of it can be finished already, so the
        push need not wait for the record's answer and both go in one round trip."""
        _, record, push = self._prepare(kind, payload, idempotency_key, customer_id)
        batch.script(self._create, *record)
        batch.script(self._push, *push)

    def _prepare(
        self, kind: str, payload: Any, idempotency_key: str, customer_id: str | None
    ) -> tuple[str, tuple[list[Any], list[Any]], tuple[list[Any], list[Any]]]:
        """The delivery id, and (keys, args) of the record's creation and of the push."""
        if not _NAME.match(kind):
            raise ValueError("kind: letters, digits and _.:- only")
        if customer_id is not None and not _NAME.match(customer_id):
            raise ValueError("customer_id: letters, digits and _.:- only")
        if not 0 < len(idempotency_key) <= _KEY_MAX:
            raise ValueError(f"idempotency_key: 1 to {_KEY_MAX} characters")
        did = delivery_id(idempotency_key, customer_id)
        owner = customer_id or ""
        ref = Ref("", did, owner)
        queue = self.queues[self.queue_of(owner or did)]
        record_keys = [ref.record] + ([keys.deliveries(customer_id)] if customer_id else [])
        create_args = [kind, codec.encode_value(payload), now_ms(), queue.name, did]
        push_keys = [queue.stream, keys.outbox_once(queue.name, did)]
        return did, (record_keys, create_args), (push_keys, [did, owner, _PUSH_GUARD_MS])

    def queue_of(self, owner: str) -> int:
        """The queue of an owner's deliveries (the customer, or the delivery itself)."""
        return keys.shard_of(owner, len(self.queues))

    async def status(
        self, delivery_id: str, customer_id: str | None = None
    ) -> DeliveryStatus | None:
        fields = await self.redis.hgetall(keys.delivery(customer_id or delivery_id, delivery_id))
        return _status(delivery_id, customer_id, fields) if fields else None

    async def deliveries(
        self, customer_id: str, limit: int = 50, *, offset: int = 0, until_ms: int | None = None
    ) -> list[DeliveryStatus]:
        """A customer's most recent deliveries, newest first, skipping `offset`. Those
        created after `until_ms` are left out, so the pages of one listing stay put
        while new deliveries arrive."""
        found = await self.redis.zrevrangebyscore(
            keys.deliveries(customer_id),
            "+inf" if until_ms is None else until_ms,
            "-inf",
            start=offset,
            num=limit,
        )
        ids = [_s(i) for i in found]
        async with self.redis.pipeline(transaction=False) as pipe:
            for did in ids:
                pipe.hgetall(keys.delivery(customer_id, did))
            records = await pipe.execute()
        return [_status(did, customer_id, f) for did, f in zip(ids, records, strict=True) if f]

    async def mark_delivered(
        self, delivery_id: str, customer_id: str | None, channel_message_id: str | None = None
    ) -> bool:
        """The receiver confirmed it (a channel's delivery receipt)."""
        sets = ["cmid", channel_message_id] if channel_message_id else []
        return await self._set_state(delivery_id, customer_id or "", "delivered", sets)

    async def dead_letters(self, limit: int = 100, after: str | None = None) -> list[DeadLetter]:
        """Dead letters of every queue, oldest first; `after` is the entry id of the
        last one seen. With several queues an entry id is "<stream id>.<queue>": two
        queues' letters buried in the same millisecond can share a stream id."""
        at, _, of = (after or "").partition(".")
        last = int(of) if of.isdigit() else len(self.queues) - 1
        async with self.redis.pipeline(transaction=False) as pipe:
            for index, queue in enumerate(self.queues):
                # After (at, last) in (stream id, queue) order: a later queue's letter
                # with the same stream id comes after it.
                start = "-" if not at else (at if index > last else f"({at}")
                pipe.xrange(queue.dead, start, "+", count=limit)
            pages = await pipe.execute()
        found = [
            (_entry_order(_s(entry_id)), index, _s(entry_id), raw)
            for index, page in enumerate(pages)
            for entry_id, raw in page or []
        ]
        found.sort(key=lambda item: item[:2])
        out = []
        for _, index, entry_id, raw in found[:limit]:
            f = {_s(k): _s(v) for k, v in (raw or {}).items()}
            out.append(
                DeadLetter(
                    entry_id=entry_id if len(self.queues) == 1 else f"{entry_id}.{index}",
                    delivery_id=f.get("d", ""),
                    customer_id=f.get("o") or None,
                    kind=f.get("k", ""),
                    reason=f.get("r", ""),
                    failed_at=iso(f.get("t")),
                )
            )
        return out

    async def requeue(self, delivery_id: str) -> bool:
        """Put a dead letter back on the queue with a fresh set of attempts.

        The record goes back to queued before the entry moves, so a worker that takes
        the entry at once finds a delivery to run. False: no such dead letter.
        """
        async with self.redis.pipeline(transaction=False) as pipe:
            for queue in self.queues:  # the id alone does not say whose it is
                pipe.hget(queue.dead_index, delivery_id)
            entries = await pipe.execute()
        found_in = [(q, _s(e)) for q, e in zip(self.queues, entries, strict=True) if e]
        if not found_in:
            return False
        queue, entry = found_in[0]
        found = await self.redis.xrange(queue.dead, entry, entry)
        if not found:
            await self.redis.hdel(queue.dead_index, delivery_id)
            return False
        owner = _s((found[0][1] or {}).get(b"o"))
        await self._set_state(delivery_id, owner, "queued", ["attempts", 0], ["next"])
        moved = await self._requeue(
            keys=[queue.stream, queue.dead, queue.dead_index], args=[delivery_id, entry, owner]
        )
        return moved is not None

    async def erase(self, customer_id: str) -> int:
        """Delete a customer's delivery records (erasure), their dead letters and their
        waiting retries. References left in the stream then find no record, and the
        worker drops them; dead letters would stay until someone re-sent them, with
        the reason the channel gave, so they go now."""
        index = keys.deliveries(customer_id)
        ids = [_s(i) for i in await self.redis.zrange(index, 0, -1)]
        queue = self.queues[self.queue_of(customer_id)]  # every one of theirs is there
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            entries = await self.redis.hmget(queue.dead_index, chunk)
            async with self.redis.pipeline(transaction=False) as pipe:
                # One slot (the customer's): a cluster pipeline's delete() takes one key.
                pipe.execute_command("DEL", *(keys.delivery(customer_id, d) for d in chunk))
                pipe.zrem(queue.delayed, *(f"{d} {customer_id}" for d in chunk))
                dead = [_s(e) for e in entries if e]
                if dead:
                    pipe.xdel(queue.dead, *dead)
                pipe.hdel(queue.dead_index, *chunk)
                await pipe.execute()
        await self.redis.delete(index)
        return len(ids)

    async def backlog(self) -> Backlog:
        """How far behind the workers are (for /metrics), summed over the queues: one
        pipeline (per node, in a cluster)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for queue in self.queues:
                pipe.xinfo_groups(queue.stream)
                pipe.xlen(queue.stream)
                pipe.zcard(queue.delayed)
                pipe.xlen(queue.dead)
            replies = await pipe.execute(raise_on_error=False)
        total = Backlog(0, 0, 0, 0)
        for at in range(0, len(replies), 4):
            groups, queued, delayed, dead = replies[at : at + 4]
            waiting, in_flight = int(queued), 0  # before any worker made the group: all
            if not isinstance(groups, Exception):  # no stream yet: nothing ever queued
                for group in groups:
                    if _s(group.get("name")) == self.config.group:
                        waiting = int(group.get("lag") or 0)
                        in_flight = int(group.get("pending") or 0)
            total = Backlog(
                *(
                    a + b
                    for a, b in zip(
                        total, (waiting, in_flight, int(delayed), int(dead)), strict=True
                    )
                )
            )
        return total

    # -- the worker's side ------------------------------------------------------------

    async def ensure_group(self, queue: int = 0) -> None:
        stream = self.queues[queue].stream
        try:
            await self.redis.xgroup_create(stream, self.config.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def promote(self, limit: int, queue: int = 0) -> int | None:
        """Move due retries onto the stream; returns when the next one is due (ms)."""
        q = self.queues[queue]
        _, nxt = await self._promote(keys=[q.delayed, q.stream], args=[now_ms(), limit])
        return int(float(nxt)) if nxt else None

    async def claim_stale(
        self, consumer: str, cursor: str, count: int, queue: int = 0
    ) -> tuple[str, list[Ref]]:
        """Take over entries another worker read but did not ack within the visibility
        timeout. Returns the cursor to continue from ("0-0": the scan is complete)."""
        reply = await self.redis.xautoclaim(
            self.queues[queue].stream,
            self.config.group,
            consumer,
            min_idle_time=self.config.visibility_timeout_ms,
            start_id=cursor,
            count=count,
        )
        return _s(reply[0]), _refs(reply[1], queue)

    async def read(
        self, consumer: str, count: int, block_ms: int | None, queue: int = 0
    ) -> list[Ref]:
        stream = self.queues[queue].stream
        reply = await self.redis.xreadgroup(
            self.config.group, consumer, {stream: ">"}, count=count, block=block_ms
        )
        streams: Any = reply.values() if isinstance(reply, dict) else [e for _, e in reply or []]
        return [ref for entries in streams for ref in _refs(entries, queue)]

    async def begin(self, ref: Ref) -> Begun:
        verdict, attempts, kind, payload, reason = await self._begin(
            keys=[ref.record], args=[self.config.max_attempts, now_ms()]
        )
        return Begun(_s(verdict), int(attempts), _s(kind), payload or b"", _s(reason))  # type: ignore[arg-type]

    async def succeed(self, ref: Ref, state: State, channel_message_id: str | None) -> None:
        sets = ["cmid", channel_message_id] if channel_message_id else []
        # The payload is not needed any more; keeping only the status keeps it small.
        await self._set_state(ref.delivery_id, ref.owner, state, sets, ["p", "next", "reason"])
        await self.ack(ref)

    async def retry(self, ref: Ref, reason: str, due_ms: int) -> None:
        await self._set_state(
            ref.delivery_id, ref.owner, "queued", ["reason", reason, "next", due_ms]
        )
        member = f"{ref.delivery_id} {ref.owner}".rstrip()
        queue = self.queues[ref.queue]
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zadd(queue.delayed, {member: due_ms})
            pipe.xack(queue.stream, self.config.group, ref.entry_id)
            pipe.xdel(queue.stream, ref.entry_id)
            await pipe.execute()

    async def fail(self, ref: Ref, kind: str, reason: str) -> None:
        await self._set_state(ref.delivery_id, ref.owner, "failed", ["reason", reason], ["next"])
        await self.bury(ref, kind, reason)

    async def bury(self, ref: Ref, kind: str, reason: str) -> None:
        """Dead-letter the entry; idempotent, so a failed record found again (a worker
        died between its status write and this) is buried exactly once."""
        queue = self.queues[ref.queue]
        await self._dead(
            keys=[queue.stream, queue.dead, queue.dead_index],
            args=[
                self.config.group,
                ref.entry_id,
                ref.delivery_id,
                ref.owner,
                kind,
                reason,
                now_ms(),
            ],
        )

    async def ack(self, ref: Ref) -> None:
        stream = self.queues[ref.queue].stream
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xack(stream, self.config.group, ref.entry_id)
            pipe.xdel(stream, ref.entry_id)
            await pipe.execute()

    async def retire(self, consumer: str, queue: int = 0) -> bool:
        """Remove a stopping worker's consumer from the group, if it holds nothing."""
        stream = self.queues[queue].stream
        pending = await self.redis.xpending_range(
            stream, self.config.group, "-", "+", 1, consumername=consumer
        )
        if pending:
            return False
        await self.redis.xgroup_delconsumer(stream, self.config.group, consumer)
        return True

    async def _set_state(
        self,
        delivery_id: str,
        owner: str,
        state: State,
        sets: list[Any],
        deletes: Sequence[str] = (),
    ) -> bool:
        written = await self._update(
            keys=[keys.delivery(owner or delivery_id, delivery_id)],
            args=[state, now_ms(), len(sets) // 2, *sets, *deletes],
        )
        return bool(written)


def _refs(entries: list[Any], queue: int) -> list[Ref]:
    refs = []
    for entry_id, fields in entries:
        if not fields:  # claimed entries deleted from the stream meanwhile
            continue
        refs.append(Ref(_s(entry_id), _s(fields.get(b"d")), _s(fields.get(b"o")), queue))
    return refs


def _entry_order(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return (int(ms or 0), int(seq or 0))


def _status(did: str, customer_id: str | None, raw: Mapping[Any, Any]) -> DeliveryStatus:
    f = {_s(k): v for k, v in raw.items()}
    return DeliveryStatus(
        id=did,
        customer_id=customer_id,
        kind=_s(f.get("kind")),
        state=_s(f.get("state")) or "queued",  # type: ignore[arg-type]
        attempts=int(f.get("attempts", b"0")),
        reason=_s(f.get("reason")) or None,
        created_at=iso(f.get("created")),
        updated_at=iso(f.get("updated")),
        next_attempt_at=iso(f.get("next")),
        channel_message_id=_s(f.get("cmid")) or None,
    )
