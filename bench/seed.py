"""Seeding timelines fast: omni's own `store.timeline.ingest`, with its one Lua script call
captured and replayed through Redis pipelines.

Sending 100,000 messages over HTTP (or awaiting 100,000 script calls one by one) would
take most of the bench's time. A Store built on `_Capture` instead of a Redis client,
with `_CapturePipeliner` for its pipeliner, runs the real ingest code, which builds the
message, its blob and the script's keys and arguments exactly as a real ingest does; the
capture answers the identity lookup with the customer being seeded and stops at the
script call, keeping what it would have sent. Those calls then go to Redis a thousand to
a pipeline: the stored data is what omni would have stored.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from omni import scripts
from omni.model import IdentityLink, InboundMessage
from omni.scripts import Script
from omni.store import Store

PIPELINE = 1000


@dataclass(frozen=True)
class ScriptCall:
    sha: str
    keys: tuple[Any, ...]
    args: tuple[Any, ...]


class _Captured(Exception):
    """Not an error: how the capture stops `store.timeline.ingest` at its script call."""

    def __init__(self, call: ScriptCall) -> None:
        self.call = call


class _Capture:
    """Stands in for the Redis client of a Store whose ingest is being captured."""

    def __init__(self) -> None:
        self.cid = ""
        self.response_callbacks: dict[str, Any] = {}  # the pipeliner's (scripts.answer_raw)

    async def set(self, *_: Any, **__: Any) -> bytes:
        """The identity lookup (SET NX GET): the identity already belongs to `cid`."""
        return self.cid.encode()


class _CapturePipeliner:
    """Stands in for the Store's pipeliner: the script call is kept, not sent."""

    async def script(self, script: Script, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        raise _Captured(ScriptCall(script.sha, tuple(keys), tuple(args)))


class Seeder:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.store = Store(redis)
        self._capture = _Capture()
        self._captor = Store(self._capture)  # type: ignore[arg-type]
        self._captor.timeline.pipeliner = _CapturePipeliner()  # type: ignore[assignment]
        self._append = scripts.load(redis, "append", "store")  # the one script an ingest runs
        self._loaded = False

    async def customer(self, channel: str, external_id: str) -> str:
        """The customer of an identity, created (as a first message would) when new."""
        cid, _ = await self.store.customers.resolve(channel, external_id)
        return cid

    async def link(self, cid: str, channel: str, external_id: str) -> None:
        await self.store.customers.link_identity(
            cid, IdentityLink(channel=channel, external_id=external_id)
        )

    async def capture(self, cid: str, inbound: InboundMessage) -> ScriptCall:
        """The script call `store.timeline.ingest(inbound)` makes for customer `cid`."""
        self._capture.cid = cid
        try:
            await self._captor.timeline.ingest(inbound)
        except _Captured as captured:
            return captured.call
        raise RuntimeError(
            "store.timeline.ingest made no script call: bench/seed.py needs updating"
        )

    async def replay(self, calls: Iterable[ScriptCall]) -> int:
        """Run captured calls in pipelines; returns how many ran."""
        done = 0
        batch: list[ScriptCall] = []
        for call in calls:
            batch.append(call)
            if len(batch) == PIPELINE:
                done += await self._run(batch)
                batch = []
        if batch:
            done += await self._run(batch)
        return done

    async def _run(self, batch: list[ScriptCall]) -> int:
        if any(call.sha != self._append.sha for call in batch):
            raise RuntimeError("the ingest ran another script: bench/seed.py needs updating")
        if not self._loaded:
            await self.redis.script_load(self._append.source)
            self._loaded = True
        async with self.redis.pipeline(transaction=False) as pipe:
            for call in batch:
                pipe.evalsha(call.sha, len(call.keys), *call.keys, *call.args)
            results = await pipe.execute()
        return len(results)

    async def messages(
        self, cid: str, channel: str, external_id: str, count: int, *, tag: str, text: str
    ) -> int:
        """Append `count` inbound messages from `external_id` to customer `cid`."""
        done = 0
        for start in range(0, count, PIPELINE):
            calls = [
                await self.capture(
                    cid,
                    InboundMessage(channel=channel, external_id=external_id,
                                   channel_message_id=f"{tag}-{n}", text=text),
                )
                for n in range(start, min(start + PIPELINE, count))
            ]  # fmt: skip
            done += await self.replay(calls)
        return done

    async def customers(
        self,
        identities: Sequence[tuple[str, str]],
        messages: int,
        *,
        tag: str,
        text: str,
        also: Sequence[tuple[str, str]] = (),
    ) -> list[str]:
        """A customer per (channel, external id) with `messages` messages from it; the
        identity `also[i]`, when given, is linked to the i-th customer too."""
        cids = []
        for chunk in range(0, len(identities), 100):
            part = identities[chunk : chunk + 100]
            cids += await asyncio.gather(*(self.customer(ch, ext) for ch, ext in part))
        calls = []
        for n in range(messages):
            for cid, (channel, external_id) in zip(cids, identities, strict=True):
                inbound = InboundMessage(channel=channel, external_id=external_id,
                                         channel_message_id=f"{tag}-{n}", text=text)  # fmt: skip
                calls.append(await self.capture(cid, inbound))
        await self.replay(calls)
        # Linking needs the customer to exist, which its first message does.
        for chunk in range(0, len(also), 100):
            links = zip(cids[chunk : chunk + 100], also[chunk : chunk + 100], strict=False)
            await asyncio.gather(*(self.link(cid, ch, ext) for cid, (ch, ext) in links))
        return cids
