"""One consumer of live events (omni.live) and what it reads: an event, an event id as a
position in every part of the service-wide stream, and the replay from a Last-Event-ID
that merges the parts by id before the listener goes on with its feed."""

from __future__ import annotations

import asyncio
import re
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import msgspec
import structlog
from redis.asyncio import Redis

from omni import keys

log = structlog.get_logger("omni.live")
QUEUE_MAX = 256
PAGE = 200  # stream entries per read
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


class Body(msgspec.Struct, frozen=True):
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
    _start: list[tuple[int, int]] = field(default_factory=list)  # `after`, per part
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
                # part from its oldest time, and say that what was missed is unsure
                # (unless that is the very start, "0-0": everything kept is replayed).
                self._mismatch = any(pair != (0, 0) for pair in given)
                given = [min(given)] * self.parts
            self._last, self._start = list(given), list(given)
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
        for part, pair in enumerate(self._start):
            if pair != (0, 0):
                kept = await self.redis.xrange(self.key(part), _id(pair), _id(pair), count=1)
                if not kept:
                    return True
        return False

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
            entries = await self.redis.xrange(self.key(part), f"({after}", "+", count=PAGE)
            entries = entries or []
            for entry_id, fields in entries:
                self._replay_from[part] = text(entry_id)
                event = decode(self.customer_id, entry_id, fields, part)
                if event is not None:
                    self._replayed[part].append(event)
            if len(entries) < PAGE:
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


def text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def decode(customer_id: str | None, entry_id: Any, fields: Any, part: int = 0) -> Event | None:
    try:
        body = msgspec.json.decode(fields[b"e"], type=Body)
    except (KeyError, msgspec.DecodeError):
        log.warning("undecodable live event skipped")
        return None
    if customer_id is not None and body.customer_id != customer_id:
        return None
    return Event(body.customer_id, body.type, body.data, id=text(entry_id), part=part)
