"""The outbox worker: runs queued deliveries through their handlers, at least once.

Each round (`run_once`) a worker moves due retries onto the stream, takes over entries
that another worker claimed but did not ack within the visibility timeout (XAUTOCLAIM:
that worker died), reads new entries (XREADGROUP), and runs them concurrently:

    handler → Delivery sent/delivered      → record sent/delivered, XACK
            → failed, retry, attempts left → record queued + reason, retry in the
                                             delayed set after a backoff (full jitter)
            → failed otherwise             → record failed + reason, dead letter
            → raises, or takes too long    → a failure worth a retry; never escapes

A handler is an async callable taking a `Job` and returning `omni.channel.Delivery`;
the worker picks it by the delivery's kind ("bot", or a channel name). An attempt is
counted before it runs, so a delivery that crashes its worker every time still ends
in the dead letters. Many workers (processes or tasks) can share one queue; with
`[outbox] queues` above one, every worker works every queue, each in a loop of its own
(a blocking read waits on one queue's stream: one slot).

Log lines carry delivery ids, kinds, attempts and outcomes, never payloads.
"""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import socket
from collections.abc import Awaitable, Callable, Mapping
from contextlib import suppress
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from omni import codec
from omni.channel import Delivery
from omni.clock import entry_ms, now_ms
from omni.errors import CorruptRecord
from omni.outbox import Begun, Job, Outbox, OutboxConfig, Ref, backoff_ms

Handler = Callable[[Job], Awaitable[Delivery]]

log = structlog.get_logger("omni.worker")
_IDLE_BACKOFF_S = (0.1, 5.0)
# How long a queue entry's missing record is looked for again before the delivery counts
# as erased, and how often (see Worker._begin).
_RECORD_GRACE_MS = 1000
_RECORD_POLL_S = 0.02


def consumer_name() -> str:
    """A name no other live worker has: host, process and a random suffix."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class Worker:
    def __init__(
        self,
        redis: Redis,
        handlers: Mapping[str, Handler],
        *,
        config: OutboxConfig | None = None,
        consumer: str | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.outbox = Outbox(redis, config)
        self.config = self.outbox.config
        self.handlers = dict(handlers)
        self.consumer = consumer or consumer_name()
        self._rng = rng or random.Random()  # noqa: S311 - backoff jitter, not cryptography
        queues = len(self.outbox.queues)
        self._cursor = ["0-0"] * queues  # per queue: where the stale-entry scan is
        self._ready = [False] * queues  # per queue: its consumer group exists

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until `stop` is set; the round in progress finishes first.

        Errors (Redis unreachable, say) are logged and retried with a backoff; a
        cancelled worker leaves its unacked entries for another to claim.
        """
        log.info(
            "worker started",
            consumer=self.consumer,
            queue=self.config.queue,
            queues=len(self.outbox.queues),
        )
        await asyncio.gather(*(self._work(q, stop) for q in range(len(self.outbox.queues))))
        log.info("worker stopped", consumer=self.consumer)

    async def _work(self, queue: int, stop: asyncio.Event) -> None:
        pause = _IDLE_BACKOFF_S[0]
        while not stop.is_set():
            try:
                await self._round(queue, self.config.block_ms)
                pause = _IDLE_BACKOFF_S[0]
            except Exception as exc:
                detail = str(exc)[:200] if isinstance(exc, RedisError) else None
                log.warning(
                    "worker round failed", error=type(exc).__name__, detail=detail, retry_in_s=pause
                )
                with suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), pause)
                pause = min(pause * 2, _IDLE_BACKOFF_S[1])
        with suppress(Exception):
            await self.outbox.retire(self.consumer, queue)

    async def run_once(self, block_ms: int | None = None) -> int:
        """One round of every queue at once; returns how many entries it handled.
        Blocks up to `block_ms` for new entries when there is nothing to do (never, by
        default)."""
        rounds = await asyncio.gather(
            *(self._round(q, block_ms) for q in range(len(self.outbox.queues))),
            return_exceptions=True,
        )
        for result in rounds:
            if isinstance(result, BaseException):
                raise result  # only once every queue's round has finished
        return sum(r for r in rounds if isinstance(r, int))

    async def _round(self, queue: int, block_ms: int | None) -> int:
        if not self._ready[queue]:
            await self.outbox.ensure_group(queue)
            self._ready[queue] = True
        batch = self.config.batch
        next_due = await self.outbox.promote(limit=batch * 4, queue=queue)
        try:
            refs = await self._take(queue, batch, block_ms, next_due)
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            self._ready[queue] = False  # the stream or its group was deleted; recreate it
            return 0
        results = await asyncio.gather(
            *(self._process(ref) for ref in refs), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result  # only once every entry of the round has finished
        return len(refs)

    async def _take(
        self, queue: int, batch: int, block_ms: int | None, next_due: int | None
    ) -> list[Ref]:
        self._cursor[queue], refs = await self.outbox.claim_stale(
            self.consumer, self._cursor[queue], batch, queue
        )
        if refs:
            log.info("deliveries taken over", count=len(refs), consumer=self.consumer)
        if len(refs) >= batch:
            return refs
        block = None
        if block_ms is not None and not refs:
            wait = block_ms if next_due is None else min(block_ms, next_due - now_ms())
            block = wait if wait > 0 else None
        return refs + await self.outbox.read(self.consumer, batch - len(refs), block, queue)

    async def _process(self, ref: Ref) -> None:
        bound = log.bind(delivery_id=ref.delivery_id)
        begun = await self._begin(ref)
        if begun.verdict in ("gone", "done"):
            # Erased, or finished by a worker that died before its ack.
            await self.outbox.ack(ref)
            bound.info("delivery skipped", verdict=begun.verdict)
            return
        if begun.verdict == "failed":
            await self.outbox.bury(ref, begun.kind, begun.reason)
            return
        if begun.verdict == "exhausted":
            reason = f"no attempts left after {begun.attempts}: {begun.reason or 'worker lost'}"
            await self.outbox.fail(ref, begun.kind, reason)
            bound.warning("delivery failed", kind=begun.kind, attempts=begun.attempts)
            return
        bound = bound.bind(kind=begun.kind, attempt=begun.attempts)
        outcome = await self._attempt(ref, begun.kind, begun.payload, begun.attempts, bound)
        if outcome.status in ("sent", "delivered"):
            await self.outbox.succeed(ref, outcome.status, outcome.channel_message_id)
            bound.info("delivery done", status=outcome.status)
            return
        reason = outcome.reason or "failed"
        if outcome.retry and begun.attempts < self.config.max_attempts:
            delay = backoff_ms(
                begun.attempts, self.config.base_delay_ms, self.config.max_delay_ms, self._rng
            )
            await self.outbox.retry(ref, reason, now_ms() + delay)
            bound.info("delivery retry", reason=reason, delay_ms=delay)
            return
        if outcome.retry:
            reason = f"{reason} (after {begun.attempts} attempts)"
        await self.outbox.fail(ref, begun.kind, reason)
        bound.warning("delivery failed", reason=reason)

    async def _begin(self, ref: Ref) -> Begun:
        """`Outbox.begin`, a missing record of a young entry looked for again. On a
        cluster a new delivery's record (its customer's slot) and its queue entry (the
        queue's) go to two nodes in one pipeline, and a worker may read the entry before
        the record's node has written it: "gone" then is not yet an erasure."""
        begun = await self.outbox.begin(ref)
        for _ in range(int(_RECORD_GRACE_MS / 1000 / _RECORD_POLL_S)):
            if begun.verdict != "gone" or now_ms() - entry_ms(ref.entry_id) > _RECORD_GRACE_MS:
                break
            await asyncio.sleep(_RECORD_POLL_S)
            begun = await self.outbox.begin(ref)
        return begun

    async def _attempt(
        self, ref: Ref, kind: str, blob: bytes, attempt: int, bound: Any
    ) -> Delivery:
        handler = self.handlers.get(kind)
        if handler is None:
            return Delivery(status="failed", reason=f"no handler for deliveries of kind {kind!r}")
        try:
            payload = codec.decode_value(blob)
        except CorruptRecord:
            return Delivery(status="failed", reason="the stored payload does not decode")
        job = Job(ref.delivery_id, ref.owner or None, kind, payload, attempt)
        limit_ms = self.config.handler_timeout_ms
        try:
            async with asyncio.timeout(limit_ms / 1000) as deadline:
                return await handler(job)
        except Exception as exc:
            if isinstance(exc, TimeoutError) and deadline.expired():
                return Delivery(
                    status="failed", reason=f"the attempt took over {limit_ms} ms", retry=True
                )
            bound.warning("delivery handler raised", error=type(exc).__name__)
            return Delivery(
                status="failed", reason=f"the handler raised {type(exc).__name__}", retry=True
            )
