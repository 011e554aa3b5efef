"""Live events: every change to a customer, kept in order and fanned out to the listeners
(web chat sockets, agents' event streams) of every omni process.

`publish` appends the event to two capped Redis streams, the customer's own and one
part of the service-wide one, and rings a pub/sub doorbell. The stream ids are the
events' ids. The service-wide stream is `parts` streams (one on one server, `[redis]
shards` in a cluster, so no node takes every event), a customer's always in the same
part; an event of it is named by its *position*, every part's stream id at that event
joined by "." (on one part: the stream id itself), so resuming from it reads each part
from where that listener stopped. Each
process keeps one *feed* per stream it has listeners for; a doorbell makes the feed read
the stream from where it stopped, so events reach listeners in stream order, with no
gap, whatever order the doorbells of several processes arrive in (pub/sub only says
"look", the stream says what). A listener that starts from an id (an SSE client's
Last-Event-ID) first reads what it missed from the stream itself, then goes on with
the feed, skipping what it already had.

A listener has a bounded queue. One that falls behind is dropped (its `dropped` flag is
set, its queue emptied, and it gets no more events), so a slow or dead client never
slows the rest or makes omni buffer without bound; its owner closes it and the client
reconnects and catches up from the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import msgspec
import structlog
from redis.asyncio import Redis, RedisCluster

from omni import doorbells, keys
from omni.listener import (
    PAGE,
    Body,
    Closed,
    Dropped,
    Event,
    Listener,
    decode,
    parse_position,
    stream_id,
    text,
)
from omni.scripts import Batch

__all__ = ["Closed", "Dropped", "Event", "Listener", "Live", "parse_position", "stream_id"]

log = structlog.get_logger("omni.live")
# Events kept for replay: per customer, and for the team inbox (all customers).
CUSTOMER_EVENTS_MAX = 1000
ALL_EVENTS_MAX = 10_000


@dataclass(eq=False)
class _Feed:
    """One stream (or the parts of one) read for the listeners of this process, each
    part from where it last stopped, when its doorbell rang."""

    keys: list[str]
    customer_id: str | None
    listeners: set[Listener] = field(default_factory=set)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    rung: set[int] = field(default_factory=set)  # parts to read at the next wake
    cursors: list[str] | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)  # the cursors are set
    task: asyncio.Task[None] | None = None
    stopped: bool = False

    def stop(self) -> None:
        """Let the pump finish the read in hand and end: cancelling it mid-command
        would leave a pooled Redis connection in an unknown state."""
        self.stopped = True
        self.wake.set()

    def ring(self, part: int | None = None) -> None:
        """Read `part` (every part with None) at the next wake."""
        self.rung.update(range(len(self.keys)) if part is None else (part,))
        self.wake.set()


class ScriptedEvent(NamedTuple):
    """An event for a script to write as `stage` does: XADD `body` to both `keys` (the
    customer's stream, its part of the service-wide one) capped at args[0] and args[1],
    then PUBLISH args[3] on channel args[2]."""

    keys: list[str]
    body: bytes
    args: list[Any]


class Live:
    def __init__(self, redis: Redis, shards: int = 1, parts: int | None = None) -> None:
        self.redis = redis
        # In a cluster, doorbells are sharded pub/sub (SPUBLISH), split in `shards`
        # channels: plain PUBLISH would go to every node of the cluster.
        self.cluster = redis if isinstance(redis, RedisCluster) else None
        self.shards = shards
        # The service-wide stream's parts: `shards` in a cluster, so that no one node
        # takes every event; one on one server, where a part buys nothing.
        self.parts = parts if parts is not None else (shards if self.cluster else 1)
        self._feeds: dict[str | None, _Feed] = {}
        self._pumps: set[asyncio.Task[None]] = set()
        self._ready = asyncio.Event()
        self.dropped_total = 0  # listeners dropped for falling behind, in this process

    @property
    def listeners(self) -> int:
        return sum(len(feed.listeners) for feed in self._feeds.values())

    async def publish(self, customer_id: str, type: str, data: Any) -> str:
        """Record the event in the customer's stream and its part of the service-wide
        one, then ring every process's doorbell. Returns the event's id in the customer's stream."""
        batch = Batch()
        self.stage(batch, customer_id, type, data)
        own, _, _ = await batch.execute(self.redis)
        return text(own)

    def stage(self, batch: Batch, customer_id: str, type: str, data: Any) -> None:
        """`publish` as three commands of the caller's batch (sent with its other work;
        the doorbell after everything else the batch writes)."""
        body = msgspec.json.encode(Body(customer_id=customer_id, type=type, data=data))
        batch.command("xadd", keys.events(customer_id), {"e": body},
                      maxlen=CUSTOMER_EVENTS_MAX, approximate=True)  # fmt: skip
        part = keys.events_all(keys.shard_of(customer_id, self.parts), self.parts)
        batch.command("xadd", part, {"e": body}, maxlen=ALL_EVENTS_MAX, approximate=True)
        # The doorbell only once both entries are in: a process that hears it reads the
        # streams at once, and one read that finds nothing new waits for the next bell.
        # (On a cluster the streams and the shard channel are on different nodes, which
        # one pipeline does not order: `then` does.)
        if self.cluster is None:
            batch.then("publish", keys.live_channel(), customer_id)
        else:
            channel = keys.live_shard(keys.shard_of(customer_id, self.shards))
            batch.then("spublish", channel, customer_id)

    def scripted(self, customer_id: str, type: str, data: Any) -> ScriptedEvent | None:
        """`stage`'s event as a script writes it (append.lua, for the message it stores:
        then the ingest waits for one round trip less). None on a cluster, where the
        streams and the doorbell's shard are in other slots than the script's."""
        if self.cluster is not None:
            return None
        body = msgspec.json.encode(Body(customer_id=customer_id, type=type, data=data))
        part = keys.events_all(keys.shard_of(customer_id, self.parts), self.parts)
        args = [CUSTOMER_EVENTS_MAX, ALL_EVENTS_MAX, keys.live_channel(), customer_id]
        return ScriptedEvent([keys.events(customer_id), part], body, args)

    def _keys(self, customer_id: str | None) -> list[str]:
        if customer_id:
            return [keys.events(customer_id)]
        return [keys.events_all(part, self.parts) for part in range(self.parts)]

    async def position(self, customer_id: str | None) -> str:
        """The id of the newest event kept (for `customer_id`, or for everyone: every
        part's): a listener from here on gets what is published from now on."""
        return ".".join(await self._newest(self._keys(customer_id)))

    @contextlib.contextmanager
    def listen(
        self, customer_id: str | None, *, after: str | None = None, signal: bool = False
    ) -> Iterator[Listener]:
        """Listen to a customer's events (or everyone's, with None). With `after`, the
        listener first replays what the stream holds after that id."""
        parts = 1 if customer_id else self.parts
        listener = Listener(customer_id, self.redis, after=after, signal=signal, parts=parts)
        feed = self._feeds.get(customer_id)
        if feed is None:
            feed_keys = self._keys(customer_id)
            key = feed_keys[0]
            feed = self._feeds[customer_id] = _Feed(feed_keys, customer_id)
            feed.task = asyncio.create_task(self._pump(feed), name=f"omni-live-feed {key}")
            self._pumps.add(feed.task)
            feed.task.add_done_callback(self._pumps.discard)
        listener._feed_ready = feed.ready
        feed.listeners.add(listener)
        try:
            yield listener
        finally:
            feed.listeners.discard(listener)
            if not feed.listeners and self._feeds.get(customer_id) is feed:
                del self._feeds[customer_id]
                feed.stop()

    def close(self, listener: Listener) -> None:
        """Wake `listener`'s owner with Closed (a server shutting down)."""
        listener._gone(dropped=False)

    async def _pump(self, feed: _Feed) -> None:
        while not feed.stopped:
            try:
                if feed.cursors is None:
                    feed.cursors = await self._newest(feed.keys)
                    feed.ready.set()
                await feed.wake.wait()
                feed.wake.clear()
                if not feed.stopped:
                    await self._read(feed)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                _still_wanted()  # as in _listen: stay stoppable
                log.warning("live feed interrupted", error=type(exc).__name__)
                await asyncio.sleep(1)
                feed.ring()  # what was rung and not read may be anywhere now

    async def _newest(self, streams: list[str]) -> list[str]:
        batch = Batch()
        for key in streams:
            batch.command("xrevrange", key, "+", "-", count=1)
        newest = await batch.execute(self.redis)
        return [text(entries[0][0]) if entries else "0-0" for entries in newest]

    async def _read(self, feed: _Feed) -> None:
        assert feed.cursors is not None
        rung, feed.rung = sorted(feed.rung), set()
        for part in rung:
            while True:
                after = f"({feed.cursors[part]}"
                entries = await self.redis.xrange(feed.keys[part], after, "+", count=PAGE)
                for entry_id, fields in entries or []:
                    feed.cursors[part] = text(entry_id)
                    event = decode(feed.customer_id, entry_id, fields, part)
                    if event is not None:
                        self._deliver(feed, event)
                if len(entries or []) < PAGE:
                    break

    def _deliver(self, feed: _Feed, event: Event) -> None:
        for listener in list(feed.listeners):
            if listener.closed:
                continue
            if not listener._offer(event):
                feed.listeners.discard(listener)
                self.dropped_total += 1
                log.warning("slow live listener dropped", customer_id=listener.customer_id)

    def _ring(self, customer_id: str) -> None:
        feed = self._feeds.get(customer_id)
        if feed is not None:
            feed.ring(0)
        everyone = self._feeds.get(None)
        if everyone is not None:
            everyone.ring(keys.shard_of(customer_id, self.parts))

    async def wait_ready(self) -> None:
        await self._ready.wait()

    async def run(self) -> None:
        """Hear every process's doorbells until cancelled, reconnecting on errors;
        the feeds stop with it."""
        try:
            await self._listen()
        finally:
            for feed in self._feeds.values():
                feed.stop()
            pumps = list(self._pumps)
            if pumps:
                _, stuck = await asyncio.wait(pumps, timeout=2)
                for task in stuck:
                    task.cancel()
                await asyncio.gather(*pumps, return_exceptions=True)

    async def _listen(self) -> None:
        while True:
            try:
                async with doorbells.subscribed(self.redis, self.cluster, self.shards) as heard:
                    _still_wanted()
                    # Doorbells rung while not subscribed were missed: look at every feed.
                    for feed in self._feeds.values():
                        feed.ring()
                    self._ready.set()
                    async for raw in heard:
                        self._ring(raw.decode(errors="replace"))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # redis-py can turn a cancellation mid-read into a ConnectionError;
                # carrying on would make this task impossible to stop.
                _still_wanted()
                log.warning("live events interrupted", error=type(exc).__name__)
                await asyncio.sleep(1)


def _still_wanted() -> None:
    """Raise CancelledError if this task was cancelled: redis-py can lose a cancellation
    that comes while it connects, subscribes or reads (turning it into a
    ConnectionError), and the task would then wait for doorbells, or retry, until
    cancelled again (an app's shutdown held up by seconds)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
