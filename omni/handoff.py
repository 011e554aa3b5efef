"""Who answers the customer: the bot, an agent, or the agents' queue.

    bot ──(bot or agent: to agent, no agent_id)──► queue (status pending: waiting)
     ▲  ──(to agent with agent_id / an agent takes over)──► agent
     │                                                        │ no reply within
     └──────────(an agent: to bot; or resolved)───────────────┤ [handoff] reply_timeout_s
                                                              ▼
                                                            queue

While an agent holds the conversation (or it waits in the queue) the channel's bot is not
asked to answer the customer's messages: it gets a `handoff` webhook instead (`omni.inbox`),
and the phone channel transfers the caller (it asks `holder()`).

An agent who holds a conversation owes the customer a reply from when they take it over
and from each customer message after their last reply; the sweep (`Handoffs.run`, in
every `omni serve`) puts overdue conversations back in the queue. The customer's hash is
the truth (one script, `lua/handoff.lua`); the due-index is where the sweep looks, so a
stale entry there costs a look and nothing else. The due-index is split like the
service-wide event stream (`Live.parts`: `[redis] shards` in a cluster, one on one
server), a customer's timer always in its part, and every sweep looks at every part.

First-response time and resolution are recorded per conversation (in its context) and
summed per channel for /metrics (`omni.metrics`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal

import msgspec
import structlog
from redis.asyncio import Redis

from omni import codec, keys, metrics, scripts
from omni.bots import BotAnswer
from omni.clock import iso, now_ms
from omni.errors import Moved, NotFound
from omni.ids import is_customer_id
from omni.live import Live
from omni.model import Assignee, Author, Message, Responder
from omni.outbox import Job
from omni.reports import Reports, Resolution
from omni.settings import HandoffSettings
from omni.store.inbox import ConversationIndex, Event

log = structlog.get_logger("omni.handoff")
Target = Literal["bot", "queue", "agent"]
_SWEEP_BATCH = 100


class Holder(msgspec.Struct, frozen=True, omit_defaults=True):
    """The agent side holding a conversation: an agent, or the queue (no agent_id)."""

    agent_id: str | None = None
    since: str | None = None
    reason: str | None = None

    @property
    def waiting(self) -> bool:
        """In the agents' queue, not yet taken by one."""
        return self.agent_id is None


# A customer's 'ho' and 'cv_assignee' fields as stored (what `holder_of` reads), and
# maybe more after them (append.lua's: omni.store.timeline.Appended.handoff).
HandoffFields = Sequence[Any] | None


async def holder(store_or_redis: Any, cid: str) -> Holder | None:
    """Who on the agent side holds `cid`'s conversation; None while the bot does.

    Takes a `Store` or a Redis client. One HMGET in the customer's slot.
    """
    redis: Redis = getattr(store_or_redis, "redis", store_or_redis)
    return holder_of(await redis.hmget(keys.customer(cid), ["ho", "cv_assignee"]))


def holder_of(fields: HandoffFields) -> Holder | None:
    """`holder` from the fields already read (the append script returns them)."""
    ho, blob = (fields[0], fields[1]) if fields else (None, None)
    if ho not in (b"agent", b"queue") or not blob:
        return None
    who = codec.decode(blob if isinstance(blob, bytes) else blob.encode(), Assignee)
    return Holder(agent_id=who.id, since=who.since, reason=who.reason)


class Handoffs:
    def __init__(
        self,
        redis: Redis,
        live: Live,
        config: HandoffSettings,
        index: ConversationIndex | None = None,
        reports: Reports | None = None,
    ) -> None:
        """`index`: the team inbox's (store.inbox), told of every change of who holds a
        conversation, of its status, and of each reply; `reports`: the service report's
        counters (omni.reports), told of first responses and resolutions."""
        self.redis = redis
        self.live = live
        # The due-index and the metrics are in as many parts as the service-wide event
        # stream (one on one server): a customer's in its part; a sweep looks at all.
        self.parts = live.parts
        self.config = config
        self.index = index
        self.reports = reports
        # Told of each resolution after it is stored (the resolution survey: omni.surveys).
        self.on_resolved: Callable[[Resolution], Awaitable[object]] | None = None
        self._script = scripts.load(redis, "handoff")

    async def _run(self, cid: str, op: str, *args: Any) -> list[Any]:
        if not is_customer_id(cid):
            raise NotFound(f"no customer {cid}")
        result: list[Any] = await self._script(keys=[keys.customer(cid)], args=[op, *args])
        code = int(result[0])
        if code == -2:
            raise NotFound(f"no customer {cid}")
        if code == -3:
            raise Moved(cid, _text(result[1]))
        return result

    # -- who answers ------------------------------------------------------------------

    async def assign(
        self, cid: str, to: Target, *, agent_id: str | None, reason: str | None, by: Author
    ) -> Assignee:
        """Hand the conversation to the bot, the queue or an agent; tells listeners."""
        now = now_ms()
        due = now + self._timeout_ms() if to == "agent" else None
        who = Assignee(
            kind="bot" if to == "bot" else "agent",
            id=agent_id if to == "agent" else None,
            since=iso(now),
            reason=reason,
        )
        status = "pending" if to == "queue" else "open"
        if due is not None:
            # Indexed before the script arms it, so a crash in between leaves a look
            # for the sweep, never an armed reply with nobody watching it.
            await self.redis.zadd(self._due(cid), {cid: due})
        try:
            result = await self._run(
                cid, "assign", now, to, codec.encode(who), "" if due is None else due, status
            )
        except (NotFound, Moved):
            if due is not None:
                await self.redis.zrem(self._due(cid), cid)  # nothing to watch there
            raise
        if due is None:
            await self.redis.zrem(self._due(cid), cid)
        before = _text(result[1])
        await self._index(cid)
        await metrics.count_handoff(self.redis, cid, self.parts, to, by.kind)
        assignee = msgspec.structs.replace(who, reply_due=iso(due))
        await self._tell(cid, to, assignee, status, by, before)
        return assignee

    async def _tell(
        self, cid: str, to: Target, who: Assignee, status: str, by: Author, before: str
    ) -> None:
        await self.live.publish(
            cid,
            "handoff",
            {
                "to": to,
                "from": before,
                "assignee": msgspec.to_builtins(who),
                "status": status,
                "by": msgspec.to_builtins(by),
            },
        )

    # -- what the inbox and replies tell us -------------------------------------------

    async def on_inbound(self, message: Message, fields: HandoffFields) -> Holder | None:
        """The customer wrote (`fields`: the customer's handoff fields as the append left
        them): who on the agent side holds the conversation (None: the bot answers); an
        agent holding it owes a reply from now, if not already."""
        # Nothing to do while the bot holds it (the common case); the script only when not.
        held = holder_of(fields)
        if held is None or held.waiting:
            return held
        result = await self._run(message.customer_id, "inbound", now_ms(), self._timeout_ms())
        if _text(result[1]) == "agent" and (due := _text(result[2])):
            await self.redis.zadd(self._due(message.customer_id), {message.customer_id: int(due)})
        return held

    async def on_reply(self, message: Message) -> None:
        """A bot or an agent answered: the conversation's first response (once), and an
        agent's reply settles what they owed."""
        kind = message.author.kind
        if message.direction != "outbound" or kind not in ("bot", "agent"):
            return
        result = await self._run(message.customer_id, "reply", now_ms(), kind)
        if int(result[1]):
            seconds = int(result[2]) / 1000
            await metrics.observe_first_response(
                self.redis, message.customer_id, self.parts, message.channel, kind, seconds
            )
            if self.reports is not None:
                who = (message.author.id or "agent") if kind == "agent" else "bot"
                await self.reports.first_response(
                    message.customer_id, message.channel, who, int(result[4]),
                    int(result[2]), now_ms(),
                )  # fmt: skip
        if int(result[3]):
            await self.redis.zrem(self._due(message.customer_id), message.customer_id)
        await self._index(message.customer_id, "reply")

    async def on_bot_answer(self, job: Job, answer: BotAnswer) -> None:
        """A bot answered a webhook with `"handoff": true`: the conversation goes to the
        agents' queue, unless the agent side holds it already (a retried answer included)."""
        cid = job.customer_id
        if not answer.handoff or not cid or await holder(self.redis, cid) is not None:
            return
        bot = job.payload.get("bot") if isinstance(job.payload, dict) else None
        by = Author(kind="bot", name=f"{bot} bot" if bot else "bot")
        await self.assign(cid, "queue", agent_id=None, reason="the bot asked for an agent", by=by)

    async def resolve(self, cid: str, by: Author, reason: str | None) -> Responder | None:
        """Mark the conversation resolved (the next message starts another): who resolved
        it ("agent" when an agent took part), or None when it already was."""
        kind = "agent" if by.kind == "agent" else "bot"
        now = now_ms()
        bot = codec.encode(Assignee(kind="bot", since=iso(now), reason=reason))
        result = await self._run(cid, "resolve", now, kind, bot)
        if not int(result[0]):
            return None
        resolved_by: Responder = "agent" if _text(result[1]) == "agent" else "bot"
        await self.redis.zrem(self._due(cid), cid)
        await self._index(cid)
        channel = _text(result[2]) or "unknown"
        await metrics.count_resolution(self.redis, cid, self.parts, channel, resolved_by)
        done = _resolution(cid, result, by, resolved_by, now)
        await self.live.publish(
            cid,
            "conversation",
            {
                "status": "resolved",
                "resolved_by": resolved_by,
                "reason": reason,
                "by": msgspec.to_builtins(by),
            },
        )
        if self.reports is not None:
            await self.reports.resolved(done)
        if self.on_resolved is not None:
            try:
                await self.on_resolved(done)
            except Exception as exc:  # the resolution stands whatever the survey does
                log.warning("after-resolution hook failed", error=type(exc).__name__)
        return resolved_by

    # -- the sweep --------------------------------------------------------------------

    async def sweep(self) -> int:
        """Put every conversation whose agent reply is overdue back in the queue; returns
        how many went back. Safe to run in any number of processes at once: the script
        moves each conversation once."""
        now = now_ms()
        moved = 0
        for part in range(self.parts):
            index = keys.handoff_due(part, self.parts)
            due = await self.redis.zrangebyscore(index, "-inf", now, 0, _SWEEP_BATCH)
            for raw in due:
                if await self._expire(_text(raw), now):
                    moved += 1
        return moved

    async def _expire(self, cid: str, now: int) -> bool:
        reason = f"no agent reply within {self.config.reply_timeout_s:g} s"
        queue = Assignee(kind="agent", since=iso(now), reason=reason)
        try:
            result = await self._run(cid, "expire", now, codec.encode(queue))
        except (NotFound, Moved):
            await self.redis.zrem(self._due(cid), cid)
            return False
        if int(result[0]):
            await self.redis.zrem(self._due(cid), cid)
            await self._index(cid)
            await metrics.count_handoff(self.redis, cid, self.parts, "queue", "timeout")
            system = Author(kind="system", name="reply timeout")
            await self._tell(cid, "queue", queue, "pending", system, "agent")
            return True
        still = _text(result[1])
        if still:
            await self.redis.zadd(self._due(cid), {cid: int(still)})
        else:
            await self.redis.zrem(self._due(cid), cid)
        return False

    async def run(self, stop: asyncio.Event) -> None:
        """Sweep every `sweep_interval_s` until `stop` is set (never cancelled in the
        middle of a sweep, which would leave a pooled connection mid-command)."""
        while not stop.is_set():
            try:
                await self.sweep()
            except Exception as exc:
                log.warning("handoff sweep interrupted", error=type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.config.sweep_interval_s)

    async def _index(self, cid: str, event: Event = "") -> None:
        if self.index is not None:
            await self.index.sync(cid, event)

    def _due(self, cid: str) -> str:
        return due_key(cid, self.parts)

    def _timeout_ms(self) -> int:
        return max(1, int(self.config.reply_timeout_s * 1000))


def due_key(cid: str, parts: int) -> str:
    """The part of the due-index that holds `cid`'s reply timer."""
    return keys.handoff_due(keys.shard_of(cid, parts), parts)


def _resolution(
    cid: str, result: Sequence[Any], by: Author, resolved_by: Responder, now: int
) -> Resolution:
    """The resolve op's answer as the report and the survey see it; the agent is the
    one who resolved it, else the one who held it, else "agent" (a queue)."""
    agent = "bot"
    if resolved_by == "agent":
        held = result[6]
        before = codec.decode(held, Assignee) if isinstance(held, bytes) and held else None
        named = (by.id if by.kind == "agent" else None) or (before.id if before else None)
        agent = named or "agent"
    started = _text(result[4])
    channels = tuple(c for c in _text(result[5]).split(",") if c)
    return Resolution(
        customer_id=cid,
        conversation=int(_text(result[3]) or 0),
        channel=_text(result[2]) or "unknown",
        agent=agent,
        resolved_by=resolved_by,
        channels=channels,
        took_ms=now - int(started) if started else 0,
        repeated=bool(_text(result[7])),
        at_ms=now,
    )


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)
