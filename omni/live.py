"""Live events: every change to a customer, kept in order and fanned out to the listeners
(web chat sockets, agents' event streams) of every omni process.

`publish` appends the event to two capped Redis streams, the customer's own and a
global one, and rings a pub/sub doorbell. The stream ids are the events' ids. Each
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
import re
from collections import deque
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import msgspec
import structlog
from redis.asyncio import Redis, RedisCluster

from omni import keys
from omni.scripts import Batch

log = structlog.get_logger("omni.live")
QUEUE_MAX = 256
# Events kept for replay: per customer, and for the team inbox (all customers).
CUSTOMER_EVENTS_MAX = 1000
ALL_EVENTS_MAX = 10_000
_PAGE = 200
SUBSCRIBE_TIMEOUT_S = 10.0  # for the server to confirm the doorbells' subscriptions
_STREAM_ID = re.compile(r"^(\d{1,20})-(\d{1,20})$")


class Event(msgspec.Struct, frozen=True):
    customer_id: str
    type: str
    data: Any
    # The event's stream entry id: in the customer's stream for a customer's listener,
    # in the global stream for a listener to every customer.
    id: str = ""


class _Body(msgspec.Struct, frozen=True):
    customer_id: str
    type: str
    data: Any


class Dropped(Exception):
    """The listener fell behind and was dropped; reconnect from its last event id."""


class Closed(Exception):
    """The listener was closed (omni is shutting down)."""


def stream_id(value: str) -> tuple[int, int] | None:
    """A Redis stream id as a comparable pair, or None when it is not one."""
    match = _STREAM_ID.match(value)
    return (int(match.group(1)), int(match.group(2))) if match else None


_GONE = object()  # queued to wake a `signal` listener that was dropped or closed


@dataclass(eq=False)
class Listener:
    """One consumer of events. `after` (a stream id) replays what came after it first.

    With `signal`, `next()` raises Dropped or Closed when that happens; without, it
    keeps waiting and the owner polls `dropped` (as the web chat sockets do).
    """

    customer_id: str | None  # None: every customer (a team inbox)
    redis: Redis | None = None
    after: str | None = None
    signal: bool = False
    queue: asyncio.Queue[Any] = field(default_factory=lambda: asyncio.Queue(QUEUE_MAX))
    dropped: bool = False
    closed: bool = False
    _last: tuple[int, int] = (0, 0)  # the newest event id handed out
    _backlog: deque[Event] = field(default_factory=deque)
    _replay_from: str | None = None  # while replaying: the stream id to read after
    # Set once the feed knows where it reads from: replay starts after that, so what
    # replay reads reaches at least where the feed starts, and nothing falls between.
    _feed_ready: asyncio.Event | None = None

    def __post_init__(self) -> None:
        if self.after is not None and self.redis is not None:
            self._last = stream_id(self.after) or (0, 0)
            self._replay_from = self.after

    @property
    def key(self) -> str:
        return keys.events(self.customer_id) if self.customer_id else keys.events_all()

    async def missed(self) -> bool:
        """True when replay cannot start at `after`: that event is no longer kept (the
        stream was trimmed past it, or it is not this stream's id), so some events that
        followed it may be gone too, and what the client holds must be reloaded."""
        if self.after is None or self.redis is None or stream_id(self.after) in (None, (0, 0)):
            return False
        return not await self.redis.xrange(self.key, self.after, self.after, count=1)

    async def started(self) -> None:
        """Returns once the feed knows where it reads from: every event published after
        this reaches the listener (one published before, it gets only by replay)."""
        if self._feed_ready is not None:
            await self._feed_ready.wait()

    async def next(self, idle_s: float | None = None) -> Event:
        """The next event; TimeoutError when none came within `idle_s` seconds of
        waiting (replay reads are not cut short by it)."""
        while True:
            if self._backlog:
                return self._accept(self._backlog.popleft())
            if self._replay_from is not None:
                if self._feed_ready is not None:
                    await self._feed_ready.wait()
                await self._replay_page()
                continue
            event = await asyncio.wait_for(self.queue.get(), idle_s)
            if event is _GONE:
                raise Dropped if self.dropped else Closed
            ids = stream_id(event.id)
            if ids is None or ids > self._last:
                return self._accept(event)

    def _accept(self, event: Event) -> Event:
        self._last = stream_id(event.id) or self._last
        return event

    async def _replay_page(self) -> None:
        assert self.redis is not None
        entries = await self.redis.xrange(self.key, f"({self._replay_from}", "+", count=_PAGE) or []
        for entry_id, fields in entries:
            self._replay_from = _text(entry_id)
            event = _decode(self.customer_id, entry_id, fields)
            if event is not None:
                self._backlog.append(event)
        if len(entries) < _PAGE:
            self._replay_from = None

    def _offer(self, event: Event) -> bool:
        """Queue without waiting; False (and dropped) when the queue is full."""
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self._gone(dropped=True)
            return False
        return True

    def _gone(self, *, dropped: bool) -> None:
        self.dropped = self.dropped or dropped
        self.closed = True
        # What it had queued is never read now: let it go at once.
        while not self.queue.empty():
            self.queue.get_nowait()
        if self.signal:
            self.queue.put_nowait(_GONE)


@dataclass(eq=False)
class _Feed:
    """One stream read for the listeners of this process, from where it last stopped."""

    key: str
    customer_id: str | None
    listeners: set[Listener] = field(default_factory=set)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    cursor: str | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)  # the cursor is set
    task: asyncio.Task[None] | None = None
    stopped: bool = False

    def stop(self) -> None:
        """Let the pump finish the read in hand and end: cancelling it mid-command
        would leave a pooled Redis connection in an unknown state."""
        self.stopped = True
        self.wake.set()


class Live:
    def __init__(self, redis: Redis, shards: int = 1) -> None:
        self.redis = redis
        # In a cluster, doorbells are sharded pub/sub (SPUBLISH), split in `shards`
        # channels: plain PUBLISH would go to every node of the cluster.
        self.cluster = redis if isinstance(redis, RedisCluster) else None
        self.shards = shards
        self._feeds: dict[str | None, _Feed] = {}
        self._pumps: set[asyncio.Task[None]] = set()
        self._ready = asyncio.Event()
        self.dropped_total = 0  # listeners dropped for falling behind, in this process

    @property
    def listeners(self) -> int:
        return sum(len(feed.listeners) for feed in self._feeds.values())

    async def publish(self, customer_id: str, type: str, data: Any) -> str:
        """Record the event in the customer's and the global stream, then ring every
        process's doorbell. Returns the event's id in the customer's stream."""
        batch = Batch()
        self.stage(batch, customer_id, type, data)
        own, _, _ = await batch.execute(self.redis)
        return _text(own)

    def stage(self, batch: Batch, customer_id: str, type: str, data: Any) -> None:
        """`publish` as three commands of the caller's batch (sent with its other work;
        the doorbell after everything else the batch writes)."""
        body = msgspec.json.encode(_Body(customer_id=customer_id, type=type, data=data))
        batch.command("xadd", keys.events(customer_id), {"e": body},
                      maxlen=CUSTOMER_EVENTS_MAX, approximate=True)  # fmt: skip
        batch.command("xadd", keys.events_all(), {"e": body}, maxlen=ALL_EVENTS_MAX,
                      approximate=True)  # fmt: skip
        # The doorbell only once both entries are in: a process that hears it reads the
        # streams at once, and one read that finds nothing new waits for the next bell.
        # (On a cluster the streams and the shard channel are on different nodes, which
        # one pipeline does not order: `then` does.)
        if self.cluster is None:
            batch.then("publish", keys.live_channel(), customer_id)
        else:
            channel = keys.live_shard(keys.shard_of(customer_id, self.shards))
            batch.then("spublish", channel, customer_id)

    async def position(self, customer_id: str | None) -> str:
        """The id of the newest event kept (for `customer_id`, or for everyone):
        a listener from here on gets what is published from now on."""
        key = keys.events(customer_id) if customer_id else keys.events_all()
        newest = await self.redis.xrevrange(key, "+", "-", count=1)
        return _text(newest[0][0]) if newest else "0-0"

    @contextlib.contextmanager
    def listen(
        self, customer_id: str | None, *, after: str | None = None, signal: bool = False
    ) -> Iterator[Listener]:
        """Listen to a customer's events (or everyone's, with None). With `after`, the
        listener first replays what the stream holds after that id."""
        listener = Listener(customer_id, self.redis, after=after, signal=signal)
        feed = self._feeds.get(customer_id)
        if feed is None:
            key = listener.key
            feed = self._feeds[customer_id] = _Feed(key, customer_id)
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
                if feed.cursor is None:
                    feed.cursor = await self._newest(feed.key)
                    feed.ready.set()
                await feed.wake.wait()
                feed.wake.clear()
                if not feed.stopped:
                    await self._read(feed)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise asyncio.CancelledError from exc  # as in _listen: stay stoppable
                log.warning("live feed interrupted", error=type(exc).__name__)
                await asyncio.sleep(1)
                feed.wake.set()

    async def _newest(self, key: str) -> str:
        newest = await self.redis.xrevrange(key, "+", "-", count=1)
        return _text(newest[0][0]) if newest else "0-0"

    async def _read(self, feed: _Feed) -> None:
        while True:
            entries = await self.redis.xrange(feed.key, f"({feed.cursor}", "+", count=_PAGE) or []
            for entry_id, fields in entries:
                feed.cursor = _text(entry_id)
                event = _decode(feed.customer_id, entry_id, fields)
                if event is not None:
                    self._deliver(feed, event)
            if len(entries) < _PAGE:
                return

    def _deliver(self, feed: _Feed, event: Event) -> None:
        for listener in list(feed.listeners):
            if listener.closed:
                continue
            if not listener._offer(event):
                feed.listeners.discard(listener)
                self.dropped_total += 1
                log.warning("slow live listener dropped", customer_id=listener.customer_id)

    def _ring(self, customer_id: str | None) -> None:
        for feed_id in (customer_id, None):
            feed = self._feeds.get(feed_id)
            if feed is not None:
                feed.wake.set()

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
                async with self._subscribed() as doorbells:
                    _still_wanted()
                    # Doorbells rung while not subscribed were missed: look at every feed.
                    for feed in self._feeds.values():
                        feed.wake.set()
                    self._ready.set()
                    async for raw in doorbells:
                        self._ring(raw.decode(errors="replace"))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    # redis-py can turn a cancellation mid-read into a ConnectionError;
                    # carrying on would make this task impossible to stop.
                    raise asyncio.CancelledError from exc
                log.warning("live events interrupted", error=type(exc).__name__)
                await asyncio.sleep(1)

    @contextlib.asynccontextmanager
    async def _subscribed(self) -> AsyncIterator[AsyncIterator[bytes]]:
        """Every doorbell from here on: the channel's, or every shard's in a cluster."""
        if self.cluster is None:
            async with self.redis.pubsub() as pubsub:
                await pubsub.subscribe(keys.live_channel())
                early = await _confirmed(pubsub, "subscribe", 1)
                yield _messages(pubsub, early)
            return
        async with contextlib.AsyncExitStack() as stack:
            yield await _sharded(self.cluster, self.shards, stack)


def _still_wanted() -> None:
    """Raise CancelledError if this task was cancelled: redis-py can lose a cancellation
    that comes while it connects or subscribes, and the task would then wait for
    doorbells until cancelled again (an app's shutdown held up by seconds)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def _sharded(
    cluster: RedisCluster, shards: int, stack: contextlib.AsyncExitStack
) -> AsyncIterator[bytes]:
    """Every shard's doorbells: one subscription per node that holds shards, each read
    as it comes (redis-py's ClusterPubSub polls nodes in turn, a wait per turn). When
    the topology changes, a read fails and `_listen` subscribes again from the new one."""
    await cluster.initialize()
    by_node: dict[tuple[str, int], list[str]] = {}
    for shard in range(shards):
        channel = keys.live_shard(shard)
        node = cluster.get_node_from_key(channel)
        if node is None:
            raise ConnectionError(f"no node serves {channel}")  # _listen tries again
        by_node.setdefault((str(node.host), int(node.port)), []).append(channel)
    heard: asyncio.Queue[bytes | BaseException] = asyncio.Queue()
    for (host, port), channels in by_node.items():
        client = Redis(host=host, port=port, socket_connect_timeout=2)
        stack.push_async_callback(client.aclose)
        pubsub = client.pubsub()
        stack.push_async_callback(pubsub.aclose)
        for channel in channels:  # one SSUBSCRIBE names channels of one slot
            await pubsub.ssubscribe(channel)
        for data in await _confirmed(pubsub, "ssubscribe", len(channels)):
            heard.put_nowait(data)
        reader = asyncio.create_task(_read_shards(pubsub, heard))
        stack.push_async_callback(_stop, reader)  # before its connection closes
    return _drain(heard)


async def _confirmed(pubsub: Any, kind: str, count: int) -> list[bytes]:
    """Wait for the server to confirm `count` subscriptions (redis-py only sends them):
    until it has, a doorbell rung elsewhere is not heard here, and `wait_ready` must
    not say otherwise. Returns the doorbells heard meanwhile, in order."""
    early: list[bytes] = []
    async with asyncio.timeout(SUBSCRIBE_TIMEOUT_S):  # a TimeoutError: _listen retries
        while count:
            message = await pubsub.get_message(timeout=SUBSCRIBE_TIMEOUT_S)
            if message is None:
                continue
            if message.get("type") == kind:
                count -= 1
            elif message.get("type") in ("message", "smessage"):
                early.append(message["data"])
    return early


async def _read_shards(pubsub: Any, heard: asyncio.Queue[bytes | BaseException]) -> None:
    try:
        async for message in pubsub.listen():
            if message.get("type") == "smessage":
                heard.put_nowait(message["data"])
    except Exception as exc:
        heard.put_nowait(exc)


async def _drain(heard: asyncio.Queue[bytes | BaseException]) -> AsyncIterator[bytes]:
    while True:
        item = await heard.get()
        if isinstance(item, BaseException):
            raise item
        yield item


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _decode(customer_id: str | None, entry_id: Any, fields: Any) -> Event | None:
    try:
        body = msgspec.json.decode(fields[b"e"], type=_Body)
    except (KeyError, msgspec.DecodeError):
        log.warning("undecodable live event skipped")
        return None
    if customer_id is not None and body.customer_id != customer_id:
        return None
    return Event(customer_id=body.customer_id, type=body.type, data=body.data, id=_text(entry_id))


async def _messages(pubsub: Any, early: list[bytes]) -> AsyncIterator[bytes]:
    for data in early:
        yield data
    async for message in pubsub.listen():
        if message.get("type") == "message":
            yield message["data"]
