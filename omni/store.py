"""The Redis store: every read and write of a customer's context goes through here.

Hot paths are one round trip each: an ingest resolves the identity (one SET NX GET in
the identity's slot) and then runs one Lua script in the customer's slot that
de-duplicates, appends and updates the customer; a context read is one MULTI of
HGETALL + XREVRANGE COUNT. Neither ranges over the whole timeline, so their cost does
not grow with the history (tests/test_flat_cost.py counts the commands).
"""

from __future__ import annotations

import hashlib
from importlib import resources
from typing import Any

import msgspec
from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from omni import codec, keys
from omni.clock import entry_ms, iso, now_ms
from omni.errors import Conflict, NotFound, PreconditionFailed, StoreError
from omni.ids import encode_cursor, is_customer_id, new_customer_id, new_message_id
from omni.model import (
    EMPTY_CART,
    RECENT_MESSAGES,
    Assignee,
    Author,
    Cart,
    CartInput,
    Context,
    Conversation,
    Customer,
    Fact,
    FactsPatch,
    HistoryPage,
    Identity,
    IdentityLink,
    InboundMessage,
    Message,
    MessageStatus,
    Profile,
    cart_of,
)

_DEDUPE_FIELD_MAX = 64


def _script(redis: Redis, name: str) -> AsyncScript:
    source = resources.files("omni").joinpath(f"lua/{name}.lua").read_text()
    return redis.register_script(source)


def conversation_id(cid: str, number: int) -> str:
    return f"cnv_{cid[4:]}-{number}"


def dedupe_field(channel: str, channel_message_id: str) -> str:
    """The message-id index field; long channel ids (Instagram's are ~150 chars) are
    hashed so the index costs the same per message whatever the channel."""
    field = f"{channel}:{channel_message_id}"
    if len(field) <= _DEDUPE_FIELD_MAX:
        return field
    return f"{channel}#" + hashlib.blake2b(channel_message_id.encode(), digest_size=16).hexdigest()


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


class Store:
    """All of omni's Redis access. Holds the client, never opens or closes it."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._append = _script(redis, "append")
        self._write = _script(redis, "write_field")
        self._read = _script(redis, "read_page")

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

    async def ingest(self, inbound: InboundMessage) -> tuple[Message, bool]:
        """Store an inbound message once; a repeat returns the stored one, created=False."""
        cid, _ = await self.resolve(inbound.channel, inbound.external_id)
        message = Message(
            id=new_message_id(),
            customer_id=cid,
            conversation_id="",
            channel=inbound.channel,
            direction="inbound",
            author=Author(kind="customer", id=inbound.external_id, name=inbound.author_name),
            received_at="",
            channel_message_id=inbound.channel_message_id,
            sent_at=inbound.sent_at,
            text=inbound.text,
            attachments=inbound.attachments,
            quick_reply=inbound.quick_reply,
            postback=inbound.postback,
            voice=inbound.voice,
            reply_to=inbound.reply_to,
            metadata=inbound.metadata,
        )
        identity = Identity(
            channel=inbound.channel, external_id=inbound.external_id, linked_at=iso(now_ms())
        )
        profile = codec.encode(Profile(name=inbound.author_name)) if inbound.author_name else b""
        stored, _, created = await self.append(cid, message, identity=identity, profile=profile)
        return stored, created

    async def append(
        self,
        cid: str,
        message: Message,
        *,
        identity: Identity,
        profile: bytes = b"",
        status: MessageStatus | None = None,
    ) -> tuple[Message, str, bool]:
        """Append once; returns the stored message, its timeline entry id and whether it
        is new. `status` starts an outbound message's delivery status."""
        assert message.channel_message_id is not None
        result = await self._append(
            keys=[
                keys.customer(cid),
                keys.timeline(cid),
                keys.channel_timeline(cid, message.channel),
                keys.message_ids(cid),
                keys.notes(cid),
            ],
            args=[
                dedupe_field(message.channel, message.channel_message_id),
                codec.encode_message(message),
                message.channel,
                f"i:{identity.channel}:{identity.external_id}",
                codec.encode(identity),
                profile,
                message.direction,
                codec.encode(status) if status else b"",
            ],
        )
        created, entry, conv = int(result[0]), _s(result[1]), int(result[2])
        assert entry is not None
        if not created:
            return self._message(cid, entry, result[3], conv), entry, False
        if int(result[3]) and message.author.name:
            from omni.search import index_profile

            await index_profile(self.redis, cid, None, Profile(name=message.author.name))
        stored = msgspec.structs.replace(
            message,
            conversation_id=conversation_id(cid, conv),
            received_at=iso(entry_ms(entry)) or "",
            status=status,
        )
        return stored, entry, True

    def _message(
        self,
        cid: str,
        entry: str,
        blob: bytes,
        conv: int,
        notes: list[Any] = (),  # type: ignore[assignment]
    ) -> Message:
        message = codec.decode_message(
            blob,
            customer_id=cid,
            conversation_id=conversation_id(cid, conv),
            received_at=iso(entry_ms(entry)) or "",
        )
        if not any(notes):
            return message
        status, deleted, reaction, read = notes
        return msgspec.structs.replace(
            message,
            status=codec.decode(_b(status), MessageStatus) if status else None,
            deleted_at=iso(_s(deleted)),
            reaction=_s(reaction),
            read_at=iso(_s(read)),
        )

    def _entries(self, cid: str, entries: list[Any], notes: list[Any]) -> list[Message]:
        """Messages from script-read entries (flat field lists) and their annotations."""
        messages = []
        for index, (entry_id, flat) in enumerate(entries):
            fields = dict(zip(flat[::2], flat[1::2], strict=True))
            conv = int(fields.get(b"v", b"0"))
            mine = notes[4 * index : 4 * index + 4] if notes else []
            messages.append(self._message(cid, _s(entry_id) or "", fields[b"m"], conv, mine))
        return messages

    async def _page(
        self, cid: str, *, start: str, count: int, channel: str | None, state: bool
    ) -> tuple[list[Any], list[Any], list[Any]]:
        index = keys.channel_timeline(cid, channel) if channel else keys.timeline(cid)
        found, entries, notes = await self._read(
            keys=[keys.customer(cid), keys.timeline(cid), index, keys.notes(cid)],
            args=[start, count, "1" if state else "0"],
        )
        return found, entries, notes

    async def history(
        self, cid: str, *, limit: int, before: str | None, channel: str | None
    ) -> HistoryPage:
        """A page of the timeline, newest first; `before` is an entry id (exclusive).

        Paging by entry id keeps pages stable while new messages arrive on top.
        """
        start = f"({before}" if before else "+"
        exists, entries, notes = await self._page(
            cid, start=start, count=limit + 1, channel=channel, state=False
        )
        if not exists[0]:
            raise NotFound(f"no customer {cid}")
        more = len(entries) > limit
        entries = entries[:limit]
        cursor = encode_cursor(_s(entries[-1][0]) or "") if more and entries else None
        return HistoryPage(messages=self._entries(cid, entries, notes), next_cursor=cursor)

    # -- context ----------------------------------------------------------------------

    async def context(self, cid: str) -> Context:
        if not is_customer_id(cid):
            raise NotFound(f"no customer {cid}")
        flat, entries, notes = await self._page(
            cid, start="+", count=RECENT_MESSAGES, channel=None, state=True
        )
        if not flat:
            raise NotFound(f"no customer {cid}")
        fields = {_b(k).decode(): v for k, v in zip(flat[::2], flat[1::2], strict=True)}
        recent = self._entries(cid, entries, notes)
        recent.reverse()
        return Context(
            version=_s(fields.get("rev")) or "0",
            customer=self._customer(cid, fields),
            conversation=self._conversation(cid, fields),
            facts={
                name[2:]: codec.decode(value, Fact)
                for name, value in sorted(fields.items())
                if name.startswith("f:")
            },
            cart=codec.decode(fields["cart"], Cart) if "cart" in fields else EMPTY_CART,
            recent_messages=recent,
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
        return Conversation(
            id=conversation_id(cid, number) if number else None,
            status=_s(fields.get("cv_status")) or "open",  # type: ignore[arg-type]
            topic=_s(fields.get("cv_topic")),
            assignee=codec.decode(assignee, Assignee) if assignee else Assignee(kind="bot"),
            channels=[c for c in channels.split(",") if c],
            started_at=iso(fields.get("cv_started")),
            switched_at=iso(fields.get("cv_switched")),
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
        rev, _ = await self._write_part(cid, "cart", if_match, [("cart", codec.encode(cart))])
        return cart, rev

    async def cart(self, cid: str) -> tuple[Cart, str]:
        if not is_customer_id(cid):
            raise NotFound(f"no customer {cid}")
        blob, rev = await self.redis.hmget(keys.customer(cid), ["cart", "rev"])
        if rev is None:
            raise NotFound(f"no customer {cid}")
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
        blob, rev = await self.redis.hmget(keys.customer(cid), ["p", "rev"])
        if rev is None:
            raise NotFound(f"no customer {cid}")
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
