"""Live events: every change to a customer, published once through Redis pub/sub and
fanned out to the listeners (web chat sockets, agents' streams) of every omni process.

A listener has a bounded queue. One that falls behind is dropped (its `dropped` flag
is set and it gets no more events), so a slow or dead client never slows the rest;
its owner closes it and the client reconnects and catches up from the timeline.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import msgspec
import structlog
from redis.asyncio import Redis

from omni import keys

log = structlog.get_logger("omni.live")
QUEUE_MAX = 256


class Event(msgspec.Struct, frozen=True):
    customer_id: str
    type: str
    data: Any


@dataclass(eq=False)
class Listener:
    customer_id: str | None  # None: every customer (a team inbox)
    queue: asyncio.Queue[Event] = field(default_factory=lambda: asyncio.Queue(QUEUE_MAX))
    dropped: bool = False

    async def next(self) -> Event:
        return await self.queue.get()


class Live:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._listeners: set[Listener] = set()
        self._ready = asyncio.Event()

    async def publish(self, customer_id: str, type: str, data: Any) -> None:
        event = Event(customer_id=customer_id, type=type, data=data)
        await self.redis.publish(keys.live_channel(), msgspec.json.encode(event))

    @contextlib.contextmanager
    def listen(self, customer_id: str | None) -> Any:
        listener = Listener(customer_id)
        self._listeners.add(listener)
        try:
            yield listener
        finally:
            self._listeners.discard(listener)

    def _deliver(self, event: Event) -> None:
        for listener in list(self._listeners):
            if listener.customer_id not in (None, event.customer_id):
                continue
            try:
                listener.queue.put_nowait(event)
            except asyncio.QueueFull:
                listener.dropped = True
                self._listeners.discard(listener)
                log.warning("slow live listener dropped", customer_id=listener.customer_id)

    async def wait_ready(self) -> None:
        await self._ready.wait()

    async def run(self) -> None:
        """Receive every process's events until cancelled, reconnecting on errors."""
        while True:
            try:
                async with self.redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(keys.live_channel())
                    self._ready.set()
                    async for raw in _messages(pubsub):
                        try:
                            self._deliver(msgspec.json.decode(raw, type=Event))
                        except msgspec.DecodeError:
                            log.warning("undecodable live event skipped")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("live events interrupted", error=type(exc).__name__)
                await asyncio.sleep(1)


async def _messages(pubsub: Any) -> AsyncIterator[bytes]:
    async for message in pubsub.listen():
        if message.get("type") == "message":
            yield message["data"]
