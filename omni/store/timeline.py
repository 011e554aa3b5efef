"""The timeline room (`store.timeline`): every read and write of a customer's messages.

Owns `omni:{C}:tl` (the timeline stream), `omni:{C}:tl:<channel>` (the per-channel
indexes), `omni:{C}:mid` (a digest of channel and message id -> the entry id packed,
omni.store.entries; the echoes expected and early receipts as text) and
`omni:{C}:ann` (what happened to a message since: status, deletion, reaction, read);
its script, append.lua, sits beside it; a page is read with plain commands (`page`).

An ingest is a straight descent. An inbound Instagram message: the channel's handler
-> omni.inbox.Inbox.ingest -> `ingest` here, which takes the customer from the identity
cache or asks `store.customers.resolve` once (SET NX GET), runs append.lua once through
the pipeliner (it de-duplicates, appends and updates the customer in the customer's
slot; and, asked by the inbox when nothing else comes first, the message's live event)
and, for a new customer with a name only, indexes it (`store.search`); back in the inbox,
typed contacts go to `store.parts.add_absent_facts` and the live event (unless written),
bot delivery, report counters and team inbox move to one pipelined batch. Each room is
entered once, downwards: none calls back up, and nothing on the path reaches into the
store's client or keys. (Before the
rooms, that path left and re-entered store.py eight times: ingest, resolve, append, a
late import of omni.search handed the store's client, omni.identity reading the facts
with the store's client, patch_facts, _write_part, the pipeliner.)

Over 400 lines on purpose: it is every read and write of the timeline's four keys, which
append.lua writes together; the pure decoding and paging arithmetic is omni.store.entries.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, NamedTuple

import msgspec
from redis.asyncio import Redis
from redis.exceptions import WatchError

from omni import codec, keys, scripts
from omni.clock import entry_ms, iso, now_ms
from omni.errors import Moved, NotFound, StoreError, Unavailable
from omni.ids import Cursor, encode_cursor, new_message_id
from omni.model import (
    Author,
    DeliveryState,
    HistoryPage,
    Identity,
    InboundMessage,
    Message,
    MessageStatus,
    MetaValue,
    Profile,
    message_from,
)
from omni.replica_acks import ReplicaAcks
from omni.store.customers import Customers
from omni.store.entries import (
    annotated,
    conversation_id,
    dedupe_field,
    dedupe_fields,
    echo_field,
    entry_order,
    found_entry,
    legacy_dedupe_field,
    note_fields,
    packed_entry,
    page_messages,
    page_rows,
    start_after,
    start_before,
    stored_message,
)
from omni.store.reply import absorbed_ids, as_bytes, as_text
from omni.store.search import Search

# How long an echo may arrive before the send it echoes has answered (Send API timeout
# and a margin); an older expectation is a send that died, and does not match.
ECHO_WAIT_MS = 120_000
SYSTEM_CHANNEL = "system"  # the timeline's own events (cart changes, merges)
_MERGE_HOPS = 4
# How far a delivery has got: a channel's report never moves a message's status to a
# lower rank (`advance_status`).
STATUS_RANK: dict[str, int] = {"queued": 0, "sent": 1, "delivered": 2, "failed": 2}
IDENTITY_CACHE = 100_000  # identities per process whose customer is remembered

# A timeline row: its sort key (entry ms, entry seq, owner) and the message.
Row = tuple[tuple[int, int, str], Message]
# A new message's live event as append.lua writes it (omni.live.Live.scripted): the
# keys of its two streams, its body, and the capping, doorbell and customer arguments.
EventOf = Callable[[Message], tuple[list[str], bytes, list[Any]] | None]
# Where the event's body is cut for the script to put what it knows once the message is
# stored: its conversation id and its time. Words JSON writes as they are, each found
# once in a body or the script is not asked to write it (a text quoting one).
_CONVERSATION_MARK = "omni-append-conversation-id"
_RECEIVED_MARK = "omni-append-received-at"


class Appended(NamedTuple):
    message: Message  # as stored (the first copy, for a repeat)
    entry: str  # its timeline entry id
    created: bool  # False: a repeat of a message already stored
    # The customer's handoff fields ('ho', 'cv_assignee') just after a new message was
    # stored (None for a repeat): who answers it, without reading them again; then its
    # team inbox fields ('cv_status', 'last_channel', 'iw', 'ix'; omni.store.inbox).
    handoff: tuple[bytes | None, ...] | None = None
    # For the service report (omni.reports): how the new message moved the customer's
    # journey ('n' opened conversation `conversation`, 's' switched channel, '') and,
    # when it opened one, the customer's last resolution ('rp', b"" when none).
    journey: tuple[str, int, bytes] | None = None
    # The script wrote the new message's live event (`ingest`'s `event`).
    told: bool = False


class _Gone(Exception):
    """A cached customer id names a customer that no longer exists."""


class Timeline:
    def __init__(
        self,
        redis: Redis,
        pipeliner: scripts.Pipeliner,
        customers: Customers,
        search: Search,
        identity_cache: int = IDENTITY_CACHE,
        *,
        acks: ReplicaAcks | None = None,
    ) -> None:
        self.redis = redis
        self.pipeliner = pipeliner
        self.acks = acks
        self.customers = customers
        self.search = search
        # Identity -> customer, learnt from successful appends: a known customer's ingest
        # then skips the identity round trip. Safe without invalidation: a merged-away
        # customer forwards appends to its survivor (-3), and one that is gone or no
        # longer holds the identity (an undone merge) is refused (-4).
        self._known: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._known_max = identity_cache
        self._append = scripts.load(redis, "append", "store")

    # -- appending --------------------------------------------------------------------

    async def ingest(self, inbound: InboundMessage, *, event: EventOf | None = None) -> Appended:
        """Store an inbound message once; a repeat returns the stored one, created=False.
        `event`: the new message's live event, which the script may write with it
        (`Appended.told` says whether it did; not with replica acknowledgements, where
        the event waits for the replicas)."""
        key = (inbound.channel, inbound.external_id)
        cached = self._known.get(key)
        if cached is not None:
            try:
                return await self._ingest(cached, inbound, cached=True, event=event)
            except _Gone:
                self._known.pop(key, None)
        cid, _ = await self.customers.resolve(inbound.channel, inbound.external_id)
        return await self._ingest(cid, inbound, cached=False, event=event)

    async def _ingest(
        self, cid: str, inbound: InboundMessage, *, cached: bool, event: EventOf | None
    ) -> Appended:
        author = Author(kind="customer", id=inbound.external_id, name=inbound.author_name)
        message = message_from(
            inbound, id=new_message_id(), customer_id=cid, direction="inbound", author=author
        )
        identity = Identity(
            channel=inbound.channel, external_id=inbound.external_id, linked_at=iso(now_ms())
        )
        profile = codec.encode(Profile(name=inbound.author_name)) if inbound.author_name else b""
        appended = await self.append(
            cid, message, identity=identity, profile=profile, cached=cached, event=event
        )
        key = (inbound.channel, inbound.external_id)
        self._known[key] = appended.message.customer_id  # the survivor, after a merge
        self._known.move_to_end(key)
        if len(self._known) > self._known_max:
            self._known.popitem(last=False)
        return appended

    async def append(
        self,
        cid: str,
        message: Message,
        *,
        identity: Identity,
        profile: bytes = b"",
        status: MessageStatus | None = None,
        cached: bool = False,
        event: EventOf | None = None,
    ) -> Appended:
        """Append once; returns the stored message, its timeline entry id and whether it
        is new. `status` starts an outbound message's delivery status. `cached`: `cid`
        came from the identity cache (a customer that is gone raises _Gone). `event`: as
        `ingest`'s."""
        assert message.channel_message_id is not None
        looked = b""  # the absorbed customers whose indexes were looked in
        for _ in range(_MERGE_HOPS):
            result = await self._append_once(
                cid, message, identity, profile, status, cached, looked, event
            )
            if int(result[0]) == -6:
                looked = as_bytes(result[1])
                repeat = await self._absorbed_repeat(cid, message, looked)
                if repeat is not None:
                    return repeat
                continue
            if int(result[0]) == -4:
                raise _Gone(cid)
            if int(result[0]) == -5:
                raise Unavailable("this customer is being erased; send the message again shortly")
            if int(result[0]) != -3:
                break
            # Merged away while this message was on its way: it belongs to the survivor.
            cid = as_text(result[1]) or ""
            message = msgspec.structs.replace(message, customer_id=cid)
        else:
            raise StoreError(f"customer {cid} is merged in a chain longer than {_MERGE_HOPS}")
        created, entry, conv = int(result[0]), as_text(result[1]), int(result[2])
        assert entry is not None
        if not created:
            return Appended(stored_message(cid, entry, result[3], conv), entry, False)
        if int(result[3]) and message.author.name:
            await self.search.index_profile(cid, None, Profile(name=message.author.name))
        stored = msgspec.structs.replace(
            message,
            conversation_id=conversation_id(cid, conv),
            received_at=iso(entry_ms(entry)) or "",
            status=status,
        )
        journey = (as_text(result[10]) or "", conv, as_bytes(result[11]) or b"")
        told = int(result[12]) == 1
        return Appended(stored, entry, True, tuple(result[4:10]), journey, told)

    async def _absorbed_repeat(
        self, cid: str, message: Message, absorbed: bytes
    ) -> Appended | None:
        """The message as stored before a merge on a customer `cid` absorbed, if it was:
        one HMGET per absorbed customer (one round trip), whatever their histories' length."""
        assert message.channel_message_id is not None
        owners = absorbed_ids(absorbed)
        dedupe = dedupe_fields(message.channel, message.channel_message_id)
        batch = scripts.Batch()
        for owner in owners:
            batch.command("hmget", keys.message_ids(owner), *dedupe)
        for owner, held in zip(owners, await self.pipeliner.run(batch), strict=True):
            entry_id = found_entry(held)
            if entry_id is None:
                continue
            found = await self.redis.xrange(keys.timeline(owner), entry_id, entry_id)
            if not found:
                continue
            fields: dict[Any, Any] = found[0][1] or {}
            blob, conv = as_bytes(fields[b"m"]), int(fields.get(b"v", b"0"))
            return Appended(stored_message(cid, entry_id, blob, conv), entry_id, False)
        return None

    async def _append_once(
        self,
        cid: str,
        message: Message,
        identity: Identity,
        profile: bytes,
        status: MessageStatus | None,
        cached: bool = False,
        looked: bytes = b"",
        event: EventOf | None = None,
    ) -> list[Any]:
        assert message.channel_message_id is not None
        script_keys = [
            keys.customer(cid),
            keys.timeline(cid),
            keys.channel_timeline(cid, message.channel),
            keys.message_ids(cid),
            keys.notes(cid),
        ]
        script_args = [
            dedupe_field(message.channel, message.channel_message_id),
            codec.encode_message(message),
            message.channel,
            f"i:{identity.channel}:{identity.external_id}",
            codec.encode(identity),
            profile,
            message.direction,
            codec.encode(status) if status else b"",
            "1" if cached else "0",
            looked,
            # omni's own words to the customer (a survey) belong to the conversation
            # they follow: they neither open one nor move it on.
            "1" if message.author.kind == "system" else "0",
            legacy_dedupe_field(message.channel, message.channel_message_id),
        ]
        # With replica acknowledgements the event waits for the replicas: not here.
        scripted = _scripted(cid, message, event) if event and self.acks is None else None
        if scripted is not None:
            script_keys += scripted[0]
            script_args += scripted[1]
        if self.acks is not None:  # answered once replicas hold it (omni.replica_acks)
            confirmed: list[Any] = await self.acks.append(self._append, script_keys, script_args)
            return confirmed
        result: list[Any] = await self.pipeliner.script(self._append, script_keys, script_args)
        return result

    async def record_event(
        self, cid: str, key: str, text: str, metadata: dict[str, MetaValue]
    ) -> Message:
        """Put an event (a cart change, a merge) on the customer's timeline, once per
        `key`: it shows in the history like a message from the system."""
        event = Message(
            id=new_message_id(),
            customer_id=cid,
            conversation_id="",
            channel=SYSTEM_CHANNEL,
            direction="outbound",
            author=Author(kind="system", name="omni"),
            received_at="",
            channel_message_id=key,
            text=text,
            metadata={k: v for k, v in metadata.items() if v is not None},
        )
        identity = Identity(channel=SYSTEM_CHANNEL, external_id=cid)
        return (await self.append(cid, event, identity=identity)).message

    # -- reading ----------------------------------------------------------------------

    async def page(
        self, cid: str, *, start: str, count: int, channel: str | None, state: bool
    ) -> tuple[Any, list[codec.PageRow]]:
        """The customer hash's fields (with `state`: HGETALL's, a dict; without: [rev,
        merged_into, absorbed], rev None when there is no such customer) and `count`
        entries from `start` back, newest first (of one channel's: `channel`), with
        their annotations.

        Plain commands through the pipeliner, no script: Valkey runs one thing at a
        time, and read_page.lua cost it ~300 µs a history page (XREVRANGE into Lua, the
        page written as one document) where these cost ~35. One round trip: the hash,
        the XREVRANGE and whether the customer has annotations at all; a second only
        for a page that has entries and either annotations to read (HMGET of its
        entries' fields) or a channel (its index holds entry ids: XRANGE of each).
        Not a transaction (a cluster pipeline cannot hold one among other requests'
        commands), and need not be: the hash is read before the entries on the same
        connection and node, and every write adds to the timeline with or before the
        hash (append.lua both at once, the annotations' writers with their `rev`), so
        what a page shows is never older than the version read with it (an ETag that
        says a page is current never hides a message); a write that lands between the
        reads shows as if the read came a moment later. A channel's entry that is gone
        by the second read (an erasure, an undone merge) is left out, as the script
        did.
        """
        timeline, notes = keys.timeline(cid), keys.notes(cid)
        batch = scripts.Batch()
        if state:
            batch.command("hgetall", keys.customer(cid))
        else:
            batch.command("hmget", keys.customer(cid), ["rev", "merged_into", "absorbed"])
        index = keys.channel_timeline(cid, channel) if channel else timeline
        batch.raw("XREVRANGE", index, start, "-", "COUNT", count)
        batch.command("exists", notes)
        found, entries, annotated = await self.pipeliner.run(batch)
        if not entries or not (annotated or channel):
            return found, page_rows(entries or [], None)
        batch = scripts.Batch()
        if channel:
            for entry_id, _ in entries:
                batch.raw("XRANGE", timeline, entry_id, entry_id)
        if annotated:
            batch.command("hmget", notes, note_fields(entries))
        replies = await self.pipeliner.run(batch)
        held = replies.pop() if annotated else None
        if channel:  # each index entry's timeline entry, where it still is
            kept = [at for at, reply in enumerate(replies) if reply]
            entries = [replies[at][0] for at in kept]
            if held is not None:
                held = [held[4 * at + n] for at in kept for n in range(4)]
        return found, page_rows(entries, held)

    async def history(
        self,
        cid: str,
        *,
        limit: int,
        before: Cursor | None,
        channel: str | None,
        follow: bool = True,
    ) -> HistoryPage:
        """A page of the timeline, newest first; `before` is a position (exclusive).

        Paging by entry id keeps pages stable while new messages arrive on top. A merged
        customer's page interleaves its own timeline with those of the customers it
        absorbed, ordered by (entry id, owner). With `follow`, an absorbed id reads its
        survivor's history; without, it raises Moved.
        """
        start = start_before(before, cid)
        exists, found = await self.page(
            cid, start=start, count=limit + 1, channel=channel, state=False
        )
        if exists[0] is None:
            raise NotFound(f"no customer {cid}")
        moved = as_text(exists[1])
        if moved:
            if not follow:
                raise Moved(cid, moved)
            return await self.history(moved, limit=limit, before=before, channel=channel)
        absorbed = absorbed_ids(exists[2])
        if not absorbed:  # one timeline: its page as read, positions need no owner
            messages = page_messages(cid, found[:limit])
            cursor = encode_cursor(found[limit - 1].entry, None) if len(found) > limit else None
            return HistoryPage(messages=messages, next_cursor=cursor)
        rows = await self.interleaved(cid, found, absorbed, before, limit + 1, channel)
        more = len(rows) > limit
        rows = rows[:limit]
        cursor = None
        if more and rows:
            (ms, seq, owner), _ = rows[-1]
            cursor = encode_cursor(f"{ms}-{seq}", owner)
        return HistoryPage(messages=[message for _, message in rows], next_cursor=cursor)

    async def interleaved(
        self,
        cid: str,
        found: list[codec.PageRow],
        absorbed: list[str],
        before: Cursor | None,
        count: int,
        channel: str | None,
    ) -> list[Row]:
        """`cid`'s own page (already read) with the same page of each customer it
        absorbed, newest first by (entry id, owner)."""
        rows = _rows(cid, cid, found)
        if not absorbed:
            return rows
        pages = await asyncio.gather(
            *(
                self.page(
                    owner,
                    start=start_before(before, owner),
                    count=count,
                    channel=channel,
                    state=False,
                )
                for owner in absorbed
            )
        )
        for owner, (_, theirs) in zip(absorbed, pages, strict=True):
            rows += _rows(cid, owner, theirs)
        rows.sort(key=lambda row: row[0], reverse=True)
        return rows

    async def read_after(
        self, cid: str, channel: str, *, after: Cursor | None, limit: int
    ) -> tuple[list[tuple[Cursor, Message]], bool]:
        """A channel's messages after a position (exclusive), oldest first, each with its
        position, and whether more follow; without `after`, the latest `limit`. A merged
        customer's absorbed timelines are read with its own, ordered as in `history`
        (entry id, then owner). Costs one page per timeline whatever their length."""
        moved, absorbed = await self.redis.hmget(keys.customer(cid), ["merged_into", "absorbed"])
        if moved is not None:
            return await self.read_after(
                as_bytes(moved).decode(), channel, after=after, limit=limit
            )
        owners = [cid, *absorbed_ids(absorbed)]
        async with self.redis.pipeline(transaction=False) as pipe:
            for owner in owners:
                index = keys.channel_timeline(owner, channel)
                if after is None:
                    pipe.xrevrange(index, "+", "-", count=limit)
                else:
                    pipe.xrange(index, start_after(after, owner), "+", count=limit + 1)
            found = await pipe.execute()
        rows = sorted(
            (entry_order(as_text(entry_id) or "0-0", owner), owner)
            for owner, page in zip(owners, found, strict=True)
            for entry_id, _ in page or []
        )
        more = len(rows) > limit and after is not None
        rows = rows[-limit:] if after is None else rows[:limit]
        if not rows:
            return [], False
        async with self.redis.pipeline(transaction=False) as pipe:
            for (ms, seq, _), owner in rows:
                pipe.xrange(keys.timeline(owner), f"{ms}-{seq}", f"{ms}-{seq}")
                pipe.hmget(keys.notes(owner), [f"{n}:{ms}-{seq}" for n in ("s", "d", "r", "rd")])
            replies = await pipe.execute()
        page = []
        for at, ((ms, seq, _), owner) in enumerate(rows):
            stored, notes = replies[2 * at], replies[2 * at + 1]
            if not stored:
                raise StoreError("a channel index names a timeline entry that is not there")
            entry_id, fields = stored[0]
            blob, conv = as_bytes(fields.get(b"m")), int(fields.get(b"v", b"0"))
            message = stored_message(cid, as_bytes(entry_id).decode(), blob, conv)
            if any(notes):
                message = annotated(message, notes)
            page.append(((f"{ms}-{seq}", owner if len(owners) > 1 else None), message))
        return page, more

    async def message_at(self, cid: str, entry: str) -> Message | None:
        _exists, found = await self.page(cid, start=entry, count=1, channel=None, state=False)
        if not found or found[0].entry != entry:
            return None
        return page_messages(cid, found)[0]

    # -- the message-id index and annotations -----------------------------------------

    async def entry_of(self, cid: str, channel: str, channel_message_id: str) -> str | None:
        """The timeline entry of a message, by the channel's id for it."""
        found = await self.redis.hmget(
            keys.message_ids(cid), dedupe_fields(channel, channel_message_id)
        )
        return found_entry(found)

    async def link_channel_message(
        self, cid: str, channel: str, channel_message_id: str, entry: str
    ) -> None:
        """Let the channel's id for a message we sent find it, so the channel's echo of
        our own send de-duplicates against it instead of storing it twice."""
        await self.redis.hsetnx(
            keys.message_ids(cid), dedupe_field(channel, channel_message_id), packed_entry(entry)
        )

    async def expect_echo(self, cid: str, channel: str, fingerprint: str, entry: str) -> None:
        """A message is being sent on a channel that echoes sends back: until the send
        answers with the channel's id for it, an echo with this fingerprint is it."""
        await self.redis.hset(keys.message_ids(cid), echo_field(channel, fingerprint),
                              f"{entry} {now_ms()}")  # fmt: skip

    async def expected_echo(self, cid: str, channel: str, fingerprint: str) -> str | None:
        """The entry of a message being sent that an echo with this fingerprint is."""
        found = as_text(
            await self.redis.hget(keys.message_ids(cid), echo_field(channel, fingerprint))
        )
        entry, _, at = (found or "").partition(" ")
        return entry if at and now_ms() - int(at) <= ECHO_WAIT_MS else None

    async def echo_settled(self, cid: str, channel: str, fingerprint: str) -> None:
        await self.redis.hdel(keys.message_ids(cid), echo_field(channel, fingerprint))

    async def set_status(self, cid: str, entry: str, status: MessageStatus) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(keys.notes(cid), f"s:{entry}", codec.encode(status))
            pipe.hincrby(keys.customer(cid), "rev", 1)
            await pipe.execute()

    async def advance_status(
        self, cid: str, entry: str, state: DeliveryState, at: str, reason: str | None = None
    ) -> MessageStatus | None:
        """What a channel reports after the send (WhatsApp's sent, delivered, failed):
        reports come out of order and repeated, so the status only moves forward, and
        delivered and failed are both final. The new status, or None when it did not
        change (not further, or the message has no status: it is not one we sent)."""
        key, field = keys.notes(cid), f"s:{entry}"
        async with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(key)
                    old = await pipe.hget(key, field)
                    current = codec.decode(old, MessageStatus) if isinstance(old, bytes) else None
                    if current is None or STATUS_RANK[state] <= STATUS_RANK[current.state]:
                        await pipe.unwatch()  # type: ignore[no-untyped-call]
                        return None
                    status = msgspec.structs.replace(current, state=state, at=at, reason=reason)
                    pipe.multi()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
                    pipe.hset(key, field, codec.encode(status))
                    pipe.hincrby(keys.customer(cid), "rev", 1)
                    await pipe.execute()
                    return status
                except WatchError:
                    continue  # another report on this customer's messages came first

    async def annotate(
        self, cid: str, entry: str, kind: str, at_ms: int, value: str | None = None
    ) -> None:
        """Record a reaction (or its removal), a deletion or a read on a stored message."""
        field = {"deleted": "d", "reaction": "r", "unreaction": "r", "read": "rd"}[kind]
        async with self.redis.pipeline(transaction=True) as pipe:
            if kind == "unreaction":
                pipe.hdel(keys.notes(cid), f"r:{entry}")
            else:
                stored = value if kind == "reaction" else str(at_ms)
                pipe.hset(keys.notes(cid), f"{field}:{entry}", stored or "")
            pipe.hincrby(keys.customer(cid), "rev", 1)
            await pipe.execute()


def _rows(cid: str, owner: str, found: list[codec.PageRow]) -> list[Row]:
    """(sort key, message) for entries of `owner`'s timeline shown as `cid`'s."""
    messages = page_messages(cid, found)
    rows = []
    for row, message in zip(found, messages, strict=True):
        ms, _, seq = row.entry.partition("-")
        rows.append(((int(ms), int(seq), owner), message))
    return rows


def _scripted(cid: str, message: Message, event: EventOf) -> tuple[list[str], list[Any]] | None:
    """append.lua's keys and arguments (KEYS 6-7, ARGV 13-19) for `message`'s live event:
    its body cut in three where the conversation id's number and the time go."""
    marked = msgspec.structs.replace(
        message, conversation_id=_CONVERSATION_MARK, received_at=_RECEIVED_MARK
    )
    found = event(marked)
    if found is None:
        return None
    event_keys, body, args = found
    conversation, received = _CONVERSATION_MARK.encode(), _RECEIVED_MARK.encode()
    if body.count(conversation) != 1 or body.count(received) != 1:
        return None
    head, _, rest = body.partition(conversation)
    middle, _, tail = rest.partition(received)
    if received in head:  # not the order Message's fields have
        return None
    # The conversation id but its number, which the script knows (entries.conversation_id).
    prefix = conversation_id(cid, 0).removesuffix("0").encode()
    return event_keys, [head + prefix, middle, tail, *args]
