"""The Redis store: every read and write of a customer's context goes through here.

Hot paths are one round trip each: an ingest resolves the identity (one SET NX GET in
the identity's slot) and then runs one Lua script in the customer's slot that
de-duplicates, appends and updates the customer; a context read is one MULTI of
HGETALL + XREVRANGE COUNT. Neither ranges over the whole timeline, so their cost does
not grow with the history (tests/test_flat_cost.py counts the commands).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict
from typing import Any, NamedTuple

import msgspec
from redis.asyncio import Redis

from omni import codec, keys, scripts
from omni.clock import entry_ms, iso, now_ms
from omni.continuity import continuity
from omni.errors import (
    Conflict,
    Moved,
    NotFound,
    PreconditionFailed,
    StoreError,
    Unavailable,
)
from omni.ids import Cursor, encode_cursor, is_customer_id, new_customer_id, new_message_id
from omni.model import (
    EMPTY_CART,
    RECENT_MESSAGES,
    Assignee,
    Author,
    Cart,
    CartInput,
    Context,
    Conversation,
    ConversationPatch,
    Customer,
    Fact,
    FactsPatch,
    HistoryPage,
    Identity,
    IdentityLink,
    InboundMessage,
    Message,
    MessageStatus,
    MetaValue,
    Pending,
    PendingInput,
    Profile,
    Voice,
    cart_of,
    message_from,
)
from omni.replica_acks import ReplicaAcks

_DEDUPE_FIELD_MAX = 64


def conversation_id(cid: str, number: int) -> str:
    return f"cnv_{cid[4:]}-{number}"


def dedupe_field(channel: str, channel_message_id: str) -> str:
    """The message-id index field; long channel ids (Instagram's are ~150 chars) are
    hashed so the index costs the same per message whatever the channel."""
    field = f"{channel}:{channel_message_id}"
    if len(field) <= _DEDUPE_FIELD_MAX:
        return field
    return f"{channel}#" + hashlib.blake2b(channel_message_id.encode(), digest_size=16).hexdigest()


# How long an echo may arrive before the send it echoes has answered (Send API timeout
# and a margin); an older expectation is a send that died, and does not match.
ECHO_WAIT_MS = 120_000
SYSTEM_CHANNEL = "system"  # the timeline's own events (cart changes, merges)
_MERGE_HOPS = 4
IDENTITY_CACHE = 100_000  # identities per process whose customer is remembered


class Appended(NamedTuple):
    message: Message  # as stored (the first copy, for a repeat)
    entry: str  # its timeline entry id
    created: bool  # False: a repeat of a message already stored
    # The customer's handoff fields ('ho', 'cv_assignee') just after a new message was
    # stored (None for a repeat): who answers it, without reading them again.
    handoff: tuple[bytes | None, bytes | None] | None = None


class _Gone(Exception):
    """A cached customer id names a customer that no longer exists."""


def _echo_field(channel: str, fingerprint: str) -> str:
    # In the message-id index, beside the channel's ids; '#' keeps the channel first, as
    # a hashed id's field does, and "echo:" keeps it apart from those.
    return f"{channel}#echo:{fingerprint}"


def _money(minor: int, currency: str | None) -> str:
    return f"{minor / 100:.2f} {currency}" if currency else f"{minor / 100:.2f}"


def _cart_text(before: Cart | None, cart: Cart) -> str:
    count = cart.totals.item_count
    summary = f"{count} item{'' if count == 1 else 's'}, " + _money(
        cart.totals.subtotal, cart.currency
    )
    if cart.stage == "placed":
        return f"Order {cart.order_id} placed: {summary}"
    previous = (before or EMPTY_CART).stage
    moved = f"{previous} → {cart.stage}" if previous != cart.stage else cart.stage
    return f"Cart {moved}: {summary}"


def _start(before: Cursor | None, owner: str) -> str:
    """Where `owner`'s timeline is read from for a page before `before` (exclusive):
    ties on the entry id are ordered by owner, so a smaller owner still holds it."""
    if before is None:
        return "+"
    entry, after_owner = before
    if after_owner is not None and owner < after_owner:
        return entry
    return f"({entry}"


def _start_after(after: Cursor, owner: str) -> str:
    """Where `owner`'s timeline is read from for messages after `after` (exclusive), in
    the same (entry id, owner) order as `_start`."""
    entry, after_owner = after
    if after_owner is not None and owner > after_owner:
        return entry
    return f"({entry}"


def _order(entry_id: str, owner: str) -> tuple[int, int, str]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq), owner


def _absorbed(value: object) -> list[str]:
    return [c for c in (_s(value) or "").split(",") if c]


def _of_conversation(value: object, number: int) -> tuple[str, str] | None:
    """(ms, who) from a "<conversation number>:<ms>:<who>" field (omni.handoff writes
    them), when it is about conversation `number` and not an earlier one."""
    parts = (_s(value) or "").split(":")
    if len(parts) != 3 or parts[0] != str(number):
        return None
    return parts[1], parts[2]


def _s(value: object) -> str | None:
    """A Redis reply as text (redis-py types replies loosely)."""
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def _b(value: object) -> bytes:
    """A Redis reply as bytes: the client is built without decode_responses."""
    if not isinstance(value, bytes):
        raise StoreError(f"expected bytes from Redis, got {type(value).__name__}")
    return value


def _annotated(message: Message, notes: list[Any]) -> Message:
    """The message with what happened to it since (its four annotations). A message the
    customer unsent keeps its place on the timeline and loses its content in every read:
    they took it back, and an agent or a bot must not act on it."""
    status, deleted, reaction, read = notes
    message = msgspec.structs.replace(
        message,
        status=codec.decode(_b(status), MessageStatus) if status else None,
        deleted_at=iso(_s(deleted)),
        reaction=_s(reaction),
        read_at=iso(_s(read)),
    )
    if not deleted:
        return message
    return msgspec.structs.replace(
        message,
        text=None,
        attachments=[],
        quick_reply=None,
        postback=None,
        voice=Voice(call_id=message.voice.call_id) if message.voice else None,
    )


class Store:
    """All of omni's Redis access. Holds the client, never opens or closes it."""

    def __init__(
        self,
        redis: Redis,
        identity_cache: int = IDENTITY_CACHE,
        *,
        pipelined: Redis | None = None,
        acks: ReplicaAcks | None = None,
    ) -> None:
        """`pipelined`: the client the hot paths' pipeliner uses (`redis` when not given).
        `acks`: with `[redis] replica_acks`, appends are confirmed on replicas (WAIT)."""
        self.redis = redis
        self.acks = acks
        # Identity -> customer, learnt from successful appends: a known customer's ingest
        # then skips the identity round trip. Safe without invalidation: a merged-away
        # customer forwards appends to its survivor (-3) and a missing one is refused (-4).
        self._known: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._known_max = identity_cache
        self.pipeliner = scripts.Pipeliner(pipelined or redis)  # the hot paths' round trips
        self._append = scripts.load(redis, "append")
        self._write = scripts.load(redis, "write_field")
        self._read = scripts.load(redis, "read_page")

    # -- identities -------------------------------------------------------------------

    async def resolve(self, channel: str, external_id: str) -> tuple[str, bool]:
        """The customer of a channel identity, created when new: (id, created).

        `SET NX GET` makes concurrent first messages from one identity agree on one id.
        """
        candidate = new_customer_id()
        existing = await self.redis.set(
            keys.identity(channel, external_id), candidate, nx=True, get=True
        )
        if existing is None:
            return candidate, True
        return _b(existing).decode(), False

    async def find(self, channel: str, external_id: str) -> str | None:
        return _s(await self.redis.get(keys.identity(channel, external_id)))

    async def ensure_customer(self, channel: str, external_id: str) -> str:
        """The customer of a channel identity, made now if new, before it has written
        anything (a chat socket or an app install that needs somewhere to belong).
        Only absent fields are written, so an existing customer is left as it is."""
        cid, _ = await self.resolve(channel, external_id)
        ms = now_ms()
        identity = Identity(channel=channel, external_id=external_id, linked_at=iso(ms))
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hsetnx(keys.customer(cid), "created", ms)
            pipe.hsetnx(keys.customer(cid), "first_seen", ms)
            pipe.hsetnx(keys.customer(cid), f"i:{channel}:{external_id}", codec.encode(identity))
            pipe.hsetnx(keys.customer(cid), "rev", 1)
            await pipe.execute()
        return cid

    async def link_identity(self, cid: str, link: IdentityLink) -> tuple[Identity, bool]:
        await self._require(cid)
        key = keys.identity(link.channel, link.external_id)
        existing = _s(await self.redis.set(key, cid, nx=True, get=True))
        if existing is not None and existing != cid:
            raise Conflict(
                f"that {link.channel} identity belongs to another customer; merge them instead",
                field="external_id",
                customer_id=existing,
            )
        identity = Identity(
            channel=link.channel,
            external_id=link.external_id,
            verified=link.verified,
            linked_at=iso(now_ms()),
        )
        field = f"i:{link.channel}:{link.external_id}"
        old = await self.redis.hget(keys.customer(cid), field)
        if old is not None:
            stored = codec.decode(_b(old), Identity)
            if stored.verified or not link.verified:
                return stored, False
        await self._write(
            keys=[keys.customer(cid)], args=["ident", "", 1, field, codec.encode(identity)]
        )
        return identity, existing is None

    # -- messages ---------------------------------------------------------------------

    async def ingest(self, inbound: InboundMessage) -> Appended:
        """Store an inbound message once; a repeat returns the stored one, created=False."""
        key = (inbound.channel, inbound.external_id)
        cached = self._known.get(key)
        if cached is not None:
            try:
                return await self._ingest(cached, inbound, cached=True)
            except _Gone:
                self._known.pop(key, None)
        cid, _ = await self.resolve(inbound.channel, inbound.external_id)
        return await self._ingest(cid, inbound, cached=False)

    async def _ingest(self, cid: str, inbound: InboundMessage, *, cached: bool) -> Appended:
        author = Author(kind="customer", id=inbound.external_id, name=inbound.author_name)
        message = message_from(
            inbound, id=new_message_id(), customer_id=cid, direction="inbound", author=author
        )
        identity = Identity(
            channel=inbound.channel, external_id=inbound.external_id, linked_at=iso(now_ms())
        )
        profile = codec.encode(Profile(name=inbound.author_name)) if inbound.author_name else b""
        appended = await self.append(
            cid, message, identity=identity, profile=profile, cached=cached
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
    ) -> Appended:
        """Append once; returns the stored message, its timeline entry id and whether it
        is new. `status` starts an outbound message's delivery status. `cached`: `cid`
        came from the identity cache (a customer that is gone raises _Gone)."""
        assert message.channel_message_id is not None
        for _ in range(_MERGE_HOPS):
            result = await self._append_once(cid, message, identity, profile, status, cached)
            if int(result[0]) == -4:
                raise _Gone(cid)
            if int(result[0]) == -5:
                raise Unavailable("this customer is being erased; send the message again shortly")
            if int(result[0]) != -3:
                break
            # Merged away while this message was on its way: it belongs to the survivor.
            cid = _s(result[1]) or ""
            message = msgspec.structs.replace(message, customer_id=cid)
        else:
            raise StoreError(f"customer {cid} is merged in a chain longer than {_MERGE_HOPS}")
        created, entry, conv = int(result[0]), _s(result[1]), int(result[2])
        assert entry is not None
        if not created:
            return Appended(self._message(cid, entry, result[3], conv), entry, False)
        if int(result[3]) and message.author.name:
            from omni.search import index_profile

            await index_profile(self.redis, cid, None, Profile(name=message.author.name))
        stored = msgspec.structs.replace(
            message,
            conversation_id=conversation_id(cid, conv),
            received_at=iso(entry_ms(entry)) or "",
            status=status,
        )
        return Appended(stored, entry, True, (result[4], result[5]))

    async def _append_once(
        self,
        cid: str,
        message: Message,
        identity: Identity,
        profile: bytes,
        status: MessageStatus | None,
        cached: bool = False,
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
        ]
        if self.acks is not None:  # answered once replicas hold it (omni.replica_acks)
            confirmed: list[Any] = await self.acks.append(self._append, script_keys, script_args)
            return confirmed
        result: list[Any] = await self.pipeliner.script(self._append, script_keys, script_args)
        return result

    def _message(self, cid: str, entry: str, blob: bytes, conv: int) -> Message:
        return codec.decode_message(
            blob,
            customer_id=cid,
            conversation_id=conversation_id(cid, conv),
            received_at=iso(entry_ms(entry)) or "",
        )

    def _entries(self, cid: str, entries: list[Any], notes: list[Any]) -> list[Message]:
        """Messages from the read script's entries ([entry id, blob, conversation number])
        and their annotations (four per entry, or none at all)."""
        conversations: dict[bytes, str] = {}  # a page spans few conversations
        messages = []
        for index, (entry_id, blob, conv) in enumerate(entries):
            conversation = conversations.get(conv)
            if conversation is None:
                conversation = conversations[conv] = conversation_id(cid, int(conv))
            message = codec.decode_message(
                _b(blob),
                customer_id=cid,
                conversation_id=conversation,
                received_at=iso(entry_ms(entry_id)) or "",
            )
            if notes and any(mine := notes[4 * index : 4 * index + 4]):
                message = _annotated(message, mine)
            messages.append(message)
        return messages

    async def _page(
        self, cid: str, *, start: str, count: int, channel: str | None, state: bool
    ) -> tuple[list[Any], list[Any], list[Any]]:
        index = keys.channel_timeline(cid, channel) if channel else keys.timeline(cid)
        found, entries, notes = await self.pipeliner.script(
            self._read,
            [keys.customer(cid), keys.timeline(cid), index, keys.notes(cid)],
            [start, count, "1" if state else "0"],
        )
        return found, entries, notes

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
        exists, entries, notes = await self._page(
            cid, start=_start(before, cid), count=limit + 1, channel=channel, state=False
        )
        if not exists or not int(exists[0]):
            raise NotFound(f"no customer {cid}")
        moved = _s(exists[1])
        if moved:
            if not follow:
                raise Moved(cid, moved)
            return await self.history(moved, limit=limit, before=before, channel=channel)
        absorbed = _absorbed(exists[2])
        if not absorbed:  # one timeline: its page as read, positions need no owner
            messages = self._entries(cid, entries, notes)
            more = len(messages) > limit
            cursor = encode_cursor(_b(entries[limit - 1][0]).decode(), None) if more else None
            return HistoryPage(messages=messages[:limit], next_cursor=cursor)
        rows = await self._interleaved(cid, entries, notes, absorbed, before, limit + 1, channel)
        more = len(rows) > limit
        rows = rows[:limit]
        cursor = None
        if more and rows:
            (ms, seq, owner), _ = rows[-1]
            cursor = encode_cursor(f"{ms}-{seq}", owner)
        return HistoryPage(messages=[message for _, message in rows], next_cursor=cursor)

    async def _interleaved(
        self,
        cid: str,
        entries: list[Any],
        notes: list[Any],
        absorbed: list[str],
        before: Cursor | None,
        count: int,
        channel: str | None,
    ) -> list[tuple[tuple[int, int, str], Message]]:
        """`cid`'s own page (already read) with the same page of each customer it
        absorbed, newest first by (entry id, owner)."""
        rows = self._rows(cid, cid, entries, notes)
        if not absorbed:
            return rows
        pages = await asyncio.gather(
            *(
                self._page(
                    owner, start=_start(before, owner), count=count, channel=channel, state=False
                )
                for owner in absorbed
            )
        )
        for owner, (_, their_entries, their_notes) in zip(absorbed, pages, strict=True):
            rows += self._rows(cid, owner, their_entries, their_notes)
        rows.sort(key=lambda row: row[0], reverse=True)
        return rows

    def _rows(
        self, cid: str, owner: str, entries: list[Any], notes: list[Any]
    ) -> list[tuple[tuple[int, int, str], Message]]:
        """(sort key, message) for entries of `owner`'s timeline shown as `cid`'s."""
        messages = self._entries(cid, entries, notes)
        rows = []
        for (entry_id, *_), message in zip(entries, messages, strict=True):
            ms, _, seq = (_s(entry_id) or "0-0").partition("-")
            rows.append(((int(ms), int(seq), owner), message))
        return rows

    async def absorbed(self, cid: str) -> list[str]:
        """The customers merged into `cid` (their records stay, read with its own)."""
        return _absorbed(await self.redis.hget(keys.customer(cid), "absorbed"))

    async def read_after(
        self, cid: str, channel: str, *, after: Cursor | None, limit: int
    ) -> tuple[list[tuple[Cursor, Message]], bool]:
        """A channel's messages after a position (exclusive), oldest first, each with its
        position, and whether more follow; without `after`, the latest `limit`. A merged
        customer's absorbed timelines are read with its own, ordered as in `history`
        (entry id, then owner). Costs one page per timeline whatever their length."""
        moved, absorbed = await self.redis.hmget(keys.customer(cid), ["merged_into", "absorbed"])
        if moved is not None:
            return await self.read_after(_b(moved).decode(), channel, after=after, limit=limit)
        owners = [cid, *_absorbed(absorbed)]
        async with self.redis.pipeline(transaction=False) as pipe:
            for owner in owners:
                index = keys.channel_timeline(owner, channel)
                if after is None:
                    pipe.xrevrange(index, "+", "-", count=limit)
                else:
                    pipe.xrange(index, _start_after(after, owner), "+", count=limit + 1)
            found = await pipe.execute()
        rows = sorted(
            (_order(_s(entry_id) or "0-0", owner), owner)
            for owner, entries in zip(owners, found, strict=True)
            for entry_id, _ in entries or []
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
            row = (entry_id, fields.get(b"m"), fields.get(b"v", b"0"))
            message = self._entries(cid, [row], notes)[0]
            page.append(((f"{ms}-{seq}", owner if len(owners) > 1 else None), message))
        return page, more

    # -- context ----------------------------------------------------------------------

    async def context(self, cid: str, *, follow: bool = True) -> Context:
        """The customer's context; an absorbed id gives its survivor's (with `follow`)
        or raises Moved."""
        if not is_customer_id(cid):
            raise NotFound(f"no customer {cid}")
        flat, entries, notes = await self._page(
            cid, start="+", count=RECENT_MESSAGES, channel=None, state=True
        )
        if not flat:
            raise NotFound(f"no customer {cid}")
        fields = {_b(k).decode(): v for k, v in zip(flat[::2], flat[1::2], strict=True)}
        moved = _s(fields.get("merged_into"))
        if moved:
            if not follow:
                raise Moved(cid, moved)
            return await self.context(moved)
        absorbed = _absorbed(fields.get("absorbed"))
        if absorbed:
            # The survivor's own recent entries are in hand: only the absorbed are read.
            rows = await self._interleaved(
                cid, entries, notes, absorbed, None, RECENT_MESSAGES, channel=None
            )
            recent = [message for _, message in rows[:RECENT_MESSAGES]]
        else:
            recent = self._entries(cid, entries, notes)
        recent.reverse()
        facts = {
            name[2:]: codec.decode(value, Fact)
            for name, value in sorted(fields.items())
            if name.startswith("f:")
        }
        pending = codec.decode(fields["cv_pending"], Pending) if "cv_pending" in fields else None
        counts = (int(fields.get("q_repeated", 0)), int(fields.get("q_answered", 0)))
        return Context(
            version=_s(fields.get("rev")) or "0",
            customer=self._customer(cid, fields),
            conversation=self._conversation(cid, fields),
            facts=facts,
            cart=codec.decode(fields["cart"], Cart) if "cart" in fields else EMPTY_CART,
            recent_messages=recent,
            continuity=continuity(recent, facts, pending, _s(fields.get("cv_topic")), counts),
        )

    def _customer(self, cid: str, fields: dict[str, bytes]) -> Customer:
        return Customer(
            id=cid,
            profile=codec.decode(fields["p"], Profile) if "p" in fields else Profile(),
            identities=[
                codec.decode(value, Identity)
                for name, value in sorted(fields.items())
                if name.startswith("i:")
            ],
            first_seen=iso(fields.get("first_seen")),
            last_seen=iso(fields.get("last_seen")),
            last_channel=_s(fields.get("last_channel")),
        )

    def _conversation(self, cid: str, fields: dict[str, bytes]) -> Conversation:
        number = int(fields.get("cv_n", b"0"))
        channels = _s(fields.get("cv_channels")) or ""
        assignee = fields.get("cv_assignee")
        holder = codec.decode(assignee, Assignee) if assignee else Assignee(kind="bot")
        if fields.get("ho_due"):
            holder = msgspec.structs.replace(holder, reply_due=iso(fields["ho_due"]))
        first = _of_conversation(fields.get("cv_first"), number)
        resolved = _of_conversation(fields.get("cv_resolved"), number)
        return Conversation(
            id=conversation_id(cid, number) if number else None,
            status=_s(fields.get("cv_status")) or "open",  # type: ignore[arg-type]
            topic=_s(fields.get("cv_topic")),
            assignee=holder,
            channels=[c for c in channels.split(",") if c],
            started_at=iso(fields.get("cv_started")),
            switched_at=iso(fields.get("cv_switched")),
            first_response_at=iso(first[0]) if first else None,
            first_response_by=first[1] if first else None,  # type: ignore[arg-type]
            resolved_at=iso(resolved[0]) if resolved else None,
            resolved_by=resolved[1] if resolved else None,  # type: ignore[arg-type]
        )

    async def _require(self, cid: str) -> None:
        if not is_customer_id(cid) or not await self.redis.exists(keys.customer(cid)):
            raise NotFound(f"no customer {cid}")

    async def revision(self, cid: str) -> str:
        if not is_customer_id(cid):
            raise NotFound(f"no customer {cid}")
        rev = await self.redis.hget(keys.customer(cid), "rev")
        if rev is None:
            raise NotFound(f"no customer {cid}")
        return _b(rev).decode()

    # -- optimistic writes ------------------------------------------------------------

    async def _write_part(
        self,
        cid: str,
        part: str,
        if_match: str | None,
        sets: list[tuple[str, bytes]],
        deletes: list[str] = (),  # type: ignore[assignment]
    ) -> tuple[str, bytes | None]:
        if not is_customer_id(cid):
            raise NotFound(f"no customer {cid}")
        args: list[Any] = [part, if_match or "", len(sets)]
        for name, value in sets:
            args += [name, value]
        args += list(deletes)
        status, rev, old = await self._write(keys=[keys.customer(cid)], args=args)
        if status == -2:
            raise NotFound(f"no customer {cid}")
        if status == -3:
            raise Moved(cid, _s(old) or "")
        if status == -1:
            raise PreconditionFailed(
                f"If-Match {if_match} is stale: the {part} changed since; read it and retry",
                current_version=str(rev),
            )
        if status != 1:
            raise StoreError(f"unexpected write status {status!r}")
        return str(rev), old

    async def patch_facts(self, cid: str, patch: FactsPatch, if_match: str | None) -> str:
        at = iso(now_ms()) or ""
        sets = [
            (
                f"f:{name}",
                codec.encode(Fact(value=f.value, at=at, confidence=f.confidence, source=f.source)),
            )
            for name, f in sorted(patch.facts.items())
            if f is not None
        ]
        deletes = [f"f:{name}" for name, f in sorted(patch.facts.items()) if f is None]
        rev, _ = await self._write_part(cid, "facts", if_match, sets, deletes)
        return rev

    async def put_cart(self, cid: str, data: CartInput, if_match: str, by: str) -> tuple[Cart, str]:
        cart = cart_of(data, updated_at=iso(now_ms()) or "", updated_by=by)
        rev, old = await self._write_part(cid, "cart", if_match, [("cart", codec.encode(cart))])
        before = codec.decode(old, Cart) if old else None
        # Each change is an event on the timeline, so an agent (or the next channel's
        # bot) sees how the purchase went, not only where it stands.
        await self.record_event(cid, f"cart:{rev}", _cart_text(before, cart), {
            "kind": "cart", "stage": cart.stage, "previous_stage": (before or EMPTY_CART).stage,
            "item_count": cart.totals.item_count, "subtotal": cart.totals.subtotal,
            "currency": cart.currency, "order_id": cart.order_id,
        })  # fmt: skip
        # The event moved the revision on; the ETag names the cart as stored now.
        return cart, await self.revision(cid)

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

    async def patch_conversation(
        self, cid: str, patch: ConversationPatch, if_match: str | None, channel: str | None
    ) -> tuple[str, bool]:
        """Set or clear the pending question and the topic; returns the revision and
        whether the pending question asks for a fact omni already holds (a repeat)."""
        sets: list[tuple[str, bytes]] = []
        deletes: list[str] = []
        repeated = False
        if isinstance(patch.pending, PendingInput):
            asked = patch.pending
            pending = Pending(
                fact=asked.fact,
                prompt=asked.prompt,
                asked_at=iso(now_ms()) or "",
                channel=asked.channel or channel,
            )
            sets.append(("cv_pending", codec.encode(pending)))
            repeated = bool(await self.redis.hexists(keys.customer(cid), f"f:{asked.fact}"))
        elif patch.pending is None:
            deletes.append("cv_pending")
        if isinstance(patch.topic, str):
            sets.append(("cv_topic", patch.topic.encode()))
        elif patch.topic is None:
            deletes.append("cv_topic")
        rev, _ = await self._write_part(cid, "conversation", if_match, sets, deletes)
        if repeated:
            await self.count(cid, "q_repeated")
        return rev, repeated

    async def count(self, cid: str, name: str, by: int = 1) -> None:
        """A counter kept per customer and service-wide (for /metrics)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hincrby(keys.customer(cid), name, by)
            pipe.hincrby(keys.stats(), name, by)
            await pipe.execute()

    async def cart(self, cid: str) -> tuple[Cart, str]:
        if not is_customer_id(cid):
            raise NotFound(f"no customer {cid}")
        blob, rev, moved = await self.redis.hmget(
            keys.customer(cid), ["cart", "rev", "merged_into"]
        )
        if rev is None:
            raise NotFound(f"no customer {cid}")
        if moved is not None:
            raise Moved(cid, _b(moved).decode())
        return (codec.decode(_b(blob), Cart) if blob else EMPTY_CART), _b(rev).decode()

    async def put_profile(
        self, cid: str, profile: Profile, if_match: str | None
    ) -> tuple[str, Profile | None]:
        rev, old = await self._write_part(cid, "profile", if_match, [("p", codec.encode(profile))])
        return rev, codec.decode(_b(old), Profile) if old else None

    async def profile(self, cid: str) -> tuple[Profile, str]:
        """The profile and the revision it was read at (an If-Match for writing it back)."""
        if not is_customer_id(cid):
            raise NotFound(f"no customer {cid}")
        blob, rev, moved = await self.redis.hmget(keys.customer(cid), ["p", "rev", "merged_into"])
        if rev is None:
            raise NotFound(f"no customer {cid}")
        if moved is not None:
            raise Moved(cid, _b(moved).decode())
        return (codec.decode(_b(blob), Profile) if blob else Profile()), _b(rev).decode()

    # -- annotations: what happens to a message after it is stored --------------------

    async def entry_of(self, cid: str, channel: str, channel_message_id: str) -> str | None:
        """The timeline entry of a message, by the channel's id for it."""
        found = await self.redis.hget(
            keys.message_ids(cid), dedupe_field(channel, channel_message_id)
        )
        return _s(found)

    async def link_channel_message(
        self, cid: str, channel: str, channel_message_id: str, entry: str
    ) -> None:
        """Let the channel's id for a message we sent find it, so the channel's echo of
        our own send de-duplicates against it instead of storing it twice."""
        await self.redis.hsetnx(
            keys.message_ids(cid), dedupe_field(channel, channel_message_id), entry
        )

    async def expect_echo(self, cid: str, channel: str, fingerprint: str, entry: str) -> None:
        """A message is being sent on a channel that echoes sends back: until the send
        answers with the channel's id for it, an echo with this fingerprint is it."""
        await self.redis.hset(keys.message_ids(cid), _echo_field(channel, fingerprint),
                              f"{entry} {now_ms()}")  # fmt: skip

    async def expected_echo(self, cid: str, channel: str, fingerprint: str) -> str | None:
        """The entry of a message being sent that an echo with this fingerprint is."""
        found = _s(await self.redis.hget(keys.message_ids(cid), _echo_field(channel, fingerprint)))
        entry, _, at = (found or "").partition(" ")
        return entry if at and now_ms() - int(at) <= ECHO_WAIT_MS else None

    async def echo_settled(self, cid: str, channel: str, fingerprint: str) -> None:
        await self.redis.hdel(keys.message_ids(cid), _echo_field(channel, fingerprint))

    async def set_status(self, cid: str, entry: str, status: MessageStatus) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(keys.notes(cid), f"s:{entry}", codec.encode(status))
            pipe.hincrby(keys.customer(cid), "rev", 1)
            await pipe.execute()

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

    async def message_at(self, cid: str, entry: str) -> Message | None:
        _exists, entries, notes = await self._page(
            cid, start=entry, count=1, channel=None, state=False
        )
        if not entries or _s(entries[0][0]) != entry:
            return None
        return self._entries(cid, entries, notes)[0]

    async def last_inbound_ms(self, cid: str, channel: str) -> int | None:
        """When the customer last wrote on `channel` (Instagram's reply window)."""
        value = await self.redis.hget(keys.customer(cid), f"in:{channel}")
        return int(value) if value else None
