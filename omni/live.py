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
import re
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import msgspec
import structlog
from redis.asyncio import Redis, RedisCluster

from omni import doorbells, keys
from omni.scripts import Batch

log = structlog.get_logger("omni.live")
QUEUE_MAX = 256
# Events kept for replay: per customer, and for the team inbox (all customers).
CUSTOMER_EVENTS_MAX = 1000
ALL_EVENTS_MAX = 10_000
_PAGE = 200
PARTS_MAX = 1024  # as [redis] shards
_STREAM_ID = re.compile(r"^(\d{1,20})-(\d{1,20})$")


class Event(msgspec.Struct, frozen=True):
    customer_id: str
    type: str
    data: Any
    # The event's stream entry id: in the customer's stream for a customer's listener;
    # for a listener to every customer, in its part of the service-wide stream until
    # the listener takes it, then the listener's position (see `Listener._accept`).
    id: str = ""
    part: int = 0  # the part of the service-wide stream it came from


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


def parse_position(value: str) -> list[tuple[int, int]] | None:
    """An event id as a position: one stream id per part ("." between parts), or None
    when it is not one (a Last-Event-ID this service never sent)."""
    ids = [stream_id(part) for part in value.split(".", PARTS_MAX)]
    if len(ids) > PARTS_MAX or any(i is None for i in ids):
        return None
    return [i for i in ids if i is not None]


def _id(pair: tuple[int, int]) -> str:
    return f"{pair[0]}-{pair[1]}"


_GONE = object()  # queued to wake a `signal` listener that was dropped or closed


@dataclass(eq=False)
class Listener:
    """One consumer of events. `after` (an event id) replays what came after it first.

    With `signal`, `next()` raises Dropped or Closed when that happens; without, it
    keeps waiting and the owner polls `dropped` (as the web chat sockets do).
    """

    customer_id: str | None  # None: every customer (a team inbox)
    redis: Redis | None = None
    after: str | None = None
    signal: bool = False
    parts: int = 1  # of the service-wide stream, for a listener to every customer
    queue: asyncio.Queue[Any] = field(default_factory=lambda: asyncio.Queue(QUEUE_MAX))
    dropped: bool = False
    closed: bool = False
    # The newest event id handed out, per part: the listener's position.
    _last: list[tuple[int, int]] = field(default_factory=list)
    _mismatch: bool = False  # `after` was not a position in this many parts
    _backlog: deque[Event] = field(default_factory=deque)
    # While replaying: per part still to read, the stream id to read after, and what
    # was read and not yet handed out (parts are merged by id, oldest first).
    _replay_from: dict[int, str] = field(default_factory=dict)
    _replayed: dict[int, deque[Event]] = field(default_factory=dict)
    # Set once the feed knows where it reads from: replay starts after that, so what
    # replay reads reaches at least where the feed starts, and nothing falls between.
    _feed_ready: asyncio.Event | None = None

    def __post_init__(self) -> None:
        self._last = [(0, 0)] * self.parts
        if self.after is not None and self.redis is not None:
            given = parse_position(self.after) or [(0, 0)]
            if len(given) != self.parts:
                # Another shard count's position (or another stream's id): start every
                # part from its oldest time, and say that what was missed is unsure.
                self._mismatch = True
                given = [min(given)] * self.parts
            self._last = given
            self._replay_from = {part: _id(pair) for part, pair in enumerate(given)}
            self._replayed = {part: deque() for part in range(self.parts)}

    def key(self, part: int = 0) -> str:
        if self.customer_id:
            return keys.events(self.customer_id)
        return keys.events_all(part, self.parts)

    @property
    def position(self) -> str:
        """Where the listener is: the id to resume after (its last event's id)."""
        return ".".join(_id(pair) for pair in self._last)

    async def missed(self) -> bool:
        """True when replay cannot start at `after`: an event it names is no longer
        kept (a stream was trimmed past it, or it is not this stream's id), so some
        events that followed it may be gone too, and what the client holds must be
        reloaded."""
        if self.after is None or self.redis is None:
            return False
        if self._mismatch:
            return True
        for part, pair in enumerate(self._last):
            if pair != (0, 0):
                kept = await self.redis.xrange(self.key(part), _id(pair), _id(pair), count=1)
                if not kept:
                    return True
        return False

    async def next(self, idle_s: float | None = None) -> Event:
        """The next event; TimeoutError when none came within `idle_s` seconds of
        waiting (replay reads are not cut short by it)."""
        while True:
            if self._backlog:
                return self._accept(self._backlog.popleft())
            if self._replayed:
                if self._feed_ready is not None:
                    await self._feed_ready.wait()
                await self._replay_step()
                continue
            event = await asyncio.wait_for(self.queue.get(), idle_s)
            if event is _GONE:
                raise Dropped if self.dropped else Closed
            ids = stream_id(event.id)
            if ids is None or event.part >= self.parts or ids > self._last[event.part]:
                return self._accept(event)

    def _accept(self, event: Event) -> Event:
        if event.part < self.parts:
            self._last[event.part] = stream_id(event.id) or self._last[event.part]
        if self.parts == 1:
            return event
        return msgspec.structs.replace(event, id=self.position)

    async def _replay_step(self) -> None:
        """Read a page of every part whose read events are used up, then hand the
        oldest read event on: every part is replayed in order, the parts merged by id."""
        assert self.redis is not None
        for part, after in list(self._replay_from.items()):
            if self._replayed[part]:
                continue
            entries = await self.redis.xrange(self.key(part), f"({after}", "+", count=_PAGE)
            entries = entries or []
            for entry_id, fields in entries:
                self._replay_from[part] = _text(entry_id)
                event = _decode(self.customer_id, entry_id, fields, part)
                if event is not None:
                    self._replayed[part].append(event)
            if len(entries) < _PAGE:
                del self._replay_from[part]
        heads = [(stream_id(b[0].id) or (0, 0), p) for p, b in self._replayed.items() if b]
        if not heads:
            self._replayed = {}  # every part read to its end: live from here
            return
        self._backlog.append(self._replayed[min(heads)[1]].popleft())

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
        return _text(own)

    def stage(self, batch: Batch, customer_id: str, type: str, data: Any) -> None:
        """`publish` as three commands of the caller's batch (sent with its other work)."""
        body = msgspec.json.encode(_Body(customer_id=customer_id, type=type, data=data))
        batch.command("xadd", keys.events(customer_id), {"e": body},
                      maxlen=CUSTOMER_EVENTS_MAX, approximate=True)  # fmt: skip
        part = keys.events_all(keys.shard_of(customer_id, self.parts), self.parts)
        batch.command("xadd", part, {"e": body}, maxlen=ALL_EVENTS_MAX, approximate=True)
        if self.cluster is None:
            batch.command("publish", keys.live_channel(), customer_id)
        else:
            channel = keys.live_shard(keys.shard_of(customer_id, self.shards))
            batch.command("spublish", channel, customer_id)

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
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise asyncio.CancelledError from exc  # as in _listen: stay stoppable
                log.warning("live feed interrupted", error=type(exc).__name__)
                await asyncio.sleep(1)
                feed.ring()  # what was rung and not read may be anywhere now

    async def _newest(self, streams: list[str]) -> list[str]:
        batch = Batch()
        for key in streams:
            batch.command("xrevrange", key, "+", "-", count=1)
        newest = await batch.execute(self.redis)
        return [_text(entries[0][0]) if entries else "0-0" for entries in newest]

    async def _read(self, feed: _Feed) -> None:
        assert feed.cursors is not None
        rung, feed.rung = sorted(feed.rung), set()
        for part in rung:
            while True:
                after = f"({feed.cursors[part]}"
                entries = await self.redis.xrange(feed.keys[part], after, "+", count=_PAGE)
                for entry_id, fields in entries or []:
                    feed.cursors[part] = _text(entry_id)
                    event = _decode(feed.customer_id, entry_id, fields, part)
                    if event is not None:
                        self._deliver(feed, event)
                if len(entries or []) < _PAGE:
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
                    # Doorbells rung while not subscribed were missed: look at every feed.
                    for feed in self._feeds.values():
                        feed.ring()
                    self._ready.set()
                    async for raw in heard:
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


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _decode(customer_id: str | None, entry_id: Any, fields: Any, part: int = 0) -> Event | None:
    try:
        body = msgspec.json.decode(fields[b"e"], type=_Body)
    except (KeyError, msgspec.DecodeError):
        log.warning("undecodable live event skipped")
        return None
    if customer_id is not None and body.customer_id != customer_id:
        return None
    return Event(body.customer_id, body.type, body.data, id=_text(entry_id), part=part)
