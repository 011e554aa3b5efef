"""The inbox room (`store.inbox`), the team inbox: every customer's current conversation
by status (waiting in the agents' queue, open, resolved), oldest waiting first, kept as
events happen.

The customer's hash is the truth (its `cv_status`, `ho`, `cv_assignee`, `last_channel`);
the index is where to look. `sync` is called by every path that changes what the index
shows — a customer message (it starts the wait), a bot's or agent's reply (it ends it),
a handoff, a resolution, a merge, an undo, an erasure (`drop`) — and costs one HMGET,
plus one pipelined batch when the customer's place in the index moved (an ingest's
goes in the batch that tells of its message: `stage_sync`).

Cluster-friendly: the index is `[inbox] shards` sorted sets per status (default 16),
each under its own hash tag, a customer in the shard its id hashes to, so the writes
of the whole service spread over the nodes; a read asks every shard for one page and
merges them (cost: shards x page, whatever the number of customers).

Not atomic across the two slots (a customer's hash and its shard), on purpose: no
cross-slot transaction. A read checks each entry against the customer's hash and
drops one that went stale (a race of two syncs, a crash between the two writes),
and the customer's next event puts a missing one back.

The stored place is the customer hash's `ix` field ("status channel agent score"); `iw`
is when the customer's oldest unanswered message arrived (ms).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

import msgspec
from redis.asyncio import Redis

from omni import codec, keys, scripts
from omni.clock import iso, now_ms
from omni.errors import BadRequest
from omni.model import Assignee, Message, Profile
from omni.store.reply import as_bytes, as_text

InboxStatus = Literal["waiting", "open", "resolved"]
# The API's words for the conversation statuses the customer hash stores.
_STORED: dict[str, InboxStatus] = {"pending": "waiting", "open": "open", "resolved": "resolved"}
SHARDS_DEFAULT = 16
# In append.lua's order (it returns the first six after storing a message).
_FIELDS = ["ho", "cv_assignee", "cv_status", "last_channel", "iw", "ix", "merged_into", "cv_n"]
Event = Literal["", "inbound", "reply"]


class CustomerRef(msgspec.Struct, frozen=True):
    id: str
    name: str | None


class InboxItem(msgspec.Struct, frozen=True):
    conversation_id: str | None
    customer: CustomerRef
    status: InboxStatus
    channel: str | None  # the channel the customer last wrote on
    assignee: str | None  # the agent holding it; None: the bot or the queue
    waiting_since: str | None  # the customer's oldest unanswered message (or the queueing)
    waiting_s: float  # how long they have waited; 0 when answered
    last_message: Message | None


class InboxPage(msgspec.Struct, frozen=True):
    conversations: list[InboxItem]
    next_cursor: str | None


class Place(msgspec.Struct, frozen=True, array_like=True):
    """Where a customer sits in the index."""

    status: str
    channel: str
    agent: str
    score: int


def _agent(ho: bytes | None, blob: bytes | None) -> str:
    if ho != b"agent" or not blob:
        return ""
    return codec.decode(blob, Assignee).id or ""


def _since_ms(blob: bytes | None) -> int | None:
    if not blob:
        return None
    since = codec.decode(blob, Assignee).since
    if not since:
        return None
    return int(datetime.fromisoformat(since.replace("Z", "+00:00")).timestamp() * 1000)


def _keys(shard: int, place: Place) -> list[str]:
    found = [keys.inbox(shard, place.status)]
    if place.channel:
        found.append(keys.inbox(shard, place.status, f"c:{place.channel}"))
    if place.agent:
        found.append(keys.inbox(shard, place.status, f"a:{place.agent}"))
    return found


def encode_cursor(score: int, cid: str) -> str:
    return base64.urlsafe_b64encode(f"i1.{score}.{cid}".encode()).rstrip(b"=").decode()


def decode_cursor(cursor: str) -> tuple[int, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
        version, score, cid = raw.split(".")
        if version != "i1" or not cid.startswith("cus_"):
            raise ValueError(raw)
        return int(score), cid
    except (binascii.Error, UnicodeError, ValueError):
        raise BadRequest("the cursor is not one this API issued", field="after") from None


class ConversationIndex:
    def __init__(self, redis: Redis, shards: int = SHARDS_DEFAULT) -> None:
        self.redis = redis
        self.shards = shards
        self._mark = scripts.load(redis, "inbox_mark", "store")

    def shard(self, cid: str) -> int:
        return keys.shard_of(cid, self.shards)

    async def sync(self, cid: str, event: Event = "", known: Sequence[Any] | None = None) -> None:
        """Put `cid` where its hash says it is now. `event`: a customer message starts
        the wait (when none was running), a reply ends it. `known`: the fields append.lua
        returned with the message it stored (then nothing is read, and an ingest whose
        customer already waits costs no command here)."""
        batch = scripts.Batch()
        if known is not None and len(known) >= 6:
            self.stage_sync(batch, cid, event, known)
        else:
            values = await self.redis.hmget(keys.customer(cid), _FIELDS)
            self._stage_place(batch, cid, event, values)
        if batch.size:
            await batch.execute(self.redis)

    def stage_sync(
        self, batch: scripts.Batch, cid: str, event: Event, known: Sequence[Any]
    ) -> None:
        """`sync` within the caller's batch, from the fields append.lua returned with the
        message it stored (`Appended.handoff`): an ingest's move goes in the round trip
        that tells of its message instead of one of its own. Stages nothing when the
        customer's place holds."""
        # Stored just now: not merged, in a conversation.
        self._stage_place(batch, cid, event, [*known[:6], None, b"1"])

    def _stage_place(
        self, batch: scripts.Batch, cid: str, event: Event, values: Sequence[Any]
    ) -> None:
        state: dict[str, Any] = dict(zip(_FIELDS, values, strict=True))
        old = msgspec.msgpack.decode(state["ix"], type=Place) if state["ix"] else None
        wait = int(state["iw"]) if state["iw"] else None
        if event == "inbound" and wait is None:
            wait = now_ms()
        elif event == "reply":
            wait = None
        status = _STORED.get(as_text(state["cv_status"]) or "")
        place = None
        if status is not None and state["merged_into"] is None and state["cv_n"] is not None:
            score = wait
            if score is None and status == "waiting":
                score = _since_ms(state["cv_assignee"])
            if score is None:
                # Nobody waits: keep the place it had in this status, else from now on.
                score = old.score if old is not None and old.status == status else now_ms()
            channel = as_text(state["last_channel"]) or ""
            place = Place(status, channel, _agent(state["ho"], state["cv_assignee"]), score)
        same_wait = (as_text(state["iw"]) or None) == (str(wait) if wait is not None else None)
        if place == old and same_wait:
            return
        self._stage_move(batch, cid, old, place, wait)

    async def drop(self, cid: str) -> None:
        """Take `cid` out of the index (merged away, erased)."""
        blob = await self.redis.hget(keys.customer(cid), "ix")
        old = msgspec.msgpack.decode(as_bytes(blob), type=Place) if blob else None
        batch = scripts.Batch()
        self._stage_move(batch, cid, old, None, None)
        await batch.execute(self.redis)

    def _stage_move(
        self,
        batch: scripts.Batch,
        cid: str,
        old: Place | None,
        new: Place | None,
        wait: int | None,
    ) -> None:
        shard = self.shard(cid)
        if old is not None:
            for key in _keys(shard, old):
                batch.command("zrem", key, cid)
        if new is not None:
            for key in _keys(shard, new):
                batch.command("zadd", key, {cid: new.score})
        # Written only into a customer that is there: an erased one is not recreated.
        # Idempotent, as a batch's scripts must be (run again if the server forgot it).
        ix = msgspec.msgpack.encode(new) if new is not None else b""
        batch.script(self._mark, [keys.customer(cid)], [ix, "" if wait is None else str(wait)])

    async def page(
        self,
        status: InboxStatus,
        *,
        limit: int,
        after: tuple[int, str] | None,
        agent: str | None,
        channel: str | None,
        read_last: Any,
    ) -> InboxPage:
        """Oldest waiting first. Each shard gives at most one page past the cursor; the
        merged page is checked against the customers' hashes (stale entries dropped)."""
        by = f"a:{agent}" if agent else (f"c:{channel}" if channel else "")
        shard_keys = [keys.inbox(shard, status, by) for shard in range(self.shards)]
        low = after[0] if after is not None else "-inf"
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in shard_keys:  # every shard's first page in one round trip
                pipe.zrangebyscore(key, low, "+inf", start=0, num=limit + 1, withscores=True)
            firsts: list[Any] = await pipe.execute()
        candidates: list[tuple[int, str]] = []
        for key, found in zip(shard_keys, firsts, strict=True):
            candidates += await self._shard_page(key, after, limit + 1, found)
        candidates.sort()
        rows = candidates[: limit + 1]
        more = len(rows) > limit
        rows = rows[:limit]
        fields = [*_FIELDS, "p"]
        async with self.redis.pipeline(transaction=False) as pipe:
            for _, cid in rows:
                pipe.hmget(keys.customer(cid), fields)
            states = await pipe.execute()
        items = []
        now = now_ms()
        for (score, cid), values in zip(rows, states, strict=True):
            state: dict[str, Any] = dict(zip(fields, values, strict=True))
            agent_now = _agent(state["ho"], state["cv_assignee"])
            fresh = (
                _STORED.get(as_text(state["cv_status"]) or "") == status
                and state["merged_into"] is None
                and (not agent or agent_now == agent)
                and (not channel or as_text(state["last_channel"]) == channel)
            )
            if not fresh:
                await self.redis.zrem(keys.inbox(self.shard(cid), status, by), cid)
                continue
            profile = codec.decode(state["p"], Profile) if state["p"] else Profile()
            wait = int(state["iw"]) if state["iw"] else (score if status == "waiting" else None)
            number = as_text(state["cv_n"])
            items.append(
                InboxItem(
                    conversation_id=f"cnv_{cid[4:]}-{number}" if number else None,
                    customer=CustomerRef(id=cid, name=profile.name),
                    status=status,
                    channel=as_text(state["last_channel"]),
                    assignee=agent_now or None,
                    waiting_since=iso(wait) if wait is not None else None,
                    waiting_s=max(0, now - wait) / 1000 if wait is not None else 0.0,
                    last_message=None,
                )
            )
        # Each one's last message, read at once (one page of its timeline each).
        lasts = await asyncio.gather(*(read_last(item.customer.id) for item in items))
        items = [
            msgspec.structs.replace(item, last_message=last)
            for item, last in zip(items, lasts, strict=True)
        ]
        cursor = encode_cursor(rows[-1][0], rows[-1][1]) if more and rows else None
        return InboxPage(conversations=items, next_cursor=cursor)

    async def _shard_page(
        self, key: str, after: tuple[int, str] | None, count: int, first: list[Any]
    ) -> list[tuple[int, str]]:
        """Up to `count` (score, id) of one shard after the cursor, in order, from its
        first page as read. Entries tying on the cursor's score are walked past with more
        reads (ties are rare: scores are ms)."""
        low = after[0] if after is not None else "-inf"
        out: list[tuple[int, str]] = []
        offset = 0
        found = first
        while True:
            for member, score in found:
                row = (int(score), as_text(member) or "")
                if after is None or row > after:
                    out.append(row)
            if len(out) >= count or len(found) < count:
                return out[:count]
            offset += len(found)
            found = await self.redis.zrangebyscore(
                key, low, "+inf", start=offset, num=count, withscores=True
            )
