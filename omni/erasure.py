"""Erasing everything omni holds about a customer, and exporting it (the operator's
answers to a data-subject request).

Both act on the whole person: the customer and every customer merged into it (its
`absorbed` ids), whose timelines its reads interleave. An absorbed id answers 308 to
its survivor, as every route by id does.

Erasure goes in steps, each idempotent, so an erasure cut short at any point is
finished by running it again:

    mark      the survivor's hash says `erasing`; it is deleted last, so until the end
              the id is there for a repeat to find and finish
    release   what points at the person from other slots, each only while it still
              points at them: channel identities (a new message on one then makes a
              new customer, never the old one again) and their opt-outs, e-mail
              Message-IDs, push tokens, search and verified-phone index entries,
              the handoff sweep's entry, and delivery
              records with their dead letters and waiting retries
    scrub     the person's events in the capped stream of every customer's events
    forget    each record's audit log is scrubbed to ids (omni.store.audit; it is kept:
              who merged whom and when stays answerable), and its merges' records lose
              the fields an undo needed (omni.merge.forget)
    announce  one `customer.erased` event, ids only, for agents' consoles
    delete    each absorbed record, then the survivor: every key under its hash tag in
              one transaction, the hash among them

Left behind: a queued delivery's reference in the outbox stream (a delivery id and a
customer id, no content; the worker drops it when it finds no record), the
`customer.erased` event, service-wide counters, which count and name no one, and the
audit logs and merge records scrubbed to ids (what was merged into what, when, by which
role, in which request), so identity changes stay accountable after an erasure.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import structlog
from redis.asyncio import Redis
from redis.exceptions import WatchError

from omni import codec, keys, revocation, scripts
from omni.clock import iso, now_ms
from omni.devices import device_records, token_digest
from omni.errors import Conflict, NotFound, StoreError
from omni.handoff import due_key
from omni.ids import decode_cursor
from omni.live import Live
from omni.merge import forget, text_fields
from omni.model import Cart, Continuity, Conversation, Customer, Fact, Message, Profile
from omni.optouts import opted_out
from omni.outbox import DeliveryStatus, Outbox
from omni.store import SYSTEM_CHANNEL, Store
from omni.store.entries import DIGEST_MARK
from omni.store.reply import as_text

log = structlog.get_logger("omni.erasure")
EXPORT_FORMAT = "omni.export/1"
EXPORT_PAGE = 100  # messages and deliveries read and written per round trip
_EVENTS_PAGE = 500
_DELETE_ATTEMPTS = 20
_UNLINK_BATCH = 500
_CHANNEL = re.compile(r"[^:#]*")  # a message-id index field starts with its channel


@dataclass
class Erasure:
    """One erasure in progress: what each step needs from the ones before."""

    store: Store
    outbox: Outbox
    live: Live
    cid: str
    channels: tuple[str, ...] = ()  # the configured ones: their keys go whatever else
    absorbed: list[str] = field(default_factory=list)

    @property
    def redis(self) -> Redis:
        return self.store.redis

    @property
    def person(self) -> list[str]:
        return [*self.absorbed, self.cid]


async def _mark(erasure: Erasure) -> None:
    try:
        # One write as any other (a merged-away id is Moved): the revision moves on, so a
        # writer holding an older version is refused from here on.
        marked = [("erasing", str(now_ms()).encode())]
        await erasure.store.parts.write(erasure.cid, "erasing", None, marked)
    except NotFound:
        # Nothing to erase, or erased already. What in-flight work (a delivery status,
        # a live event) wrote under this id after its hash went is still this id's by
        # its hash tag: a repeat sweeps it.
        await erasure.outbox.erase(erasure.cid)
        await _delete(erasure, erasure.cid)
        raise
    # Merges keep the list flat; following it further costs little and misses nothing.
    pending = await erasure.store.customers.absorbed(erasure.cid)
    while pending:
        cid = pending.pop()
        if cid in erasure.absorbed or cid == erasure.cid:
            continue
        erasure.absorbed.append(cid)
        pending += await erasure.store.customers.absorbed(cid)


async def _release(erasure: Erasure) -> None:
    redis = erasure.redis
    owned = scripts.load(redis, "erase_owned")
    for cid in erasure.person:
        fields = text_fields(await redis.hgetall(keys.customer(cid)))
        for name in fields:
            if name.startswith("i:"):
                channel, _, external_id = name[2:].partition(":")
                await owned(keys=[keys.identity(channel, external_id)], args=erasure.person)
                await revocation.revoke(erasure.store, channel, external_id)  # sessions end
                # The number's opt-out (omni.optouts) is theirs too: it names the number.
                await redis.delete(keys.opt_out(channel, external_id))
        for name in text_fields(await redis.hgetall(keys.mail(cid))):
            if name.startswith("x:"):  # an e-mail Message-ID indexed for them (omni.threads)
                await owned(keys=[keys.message_id(name[2:])], args=erasure.person)
        for device_id, record in (await device_records(erasure.store, cid)).items():
            await owned(
                keys=[keys.push_token(token_digest(record.device))], args=[f"{cid} {device_id}"]
            )
        if "p" in fields:
            # The verified-phone lookup (store.search) reads the same phone entries.
            await erasure.store.search.index_profile(
                cid, codec.decode(fields["p"], Profile), Profile()
            )
        await erasure.outbox.erase(cid)
        await erasure.store.inbox.drop(cid)
    for cid in erasure.person:
        await redis.zrem(due_key(cid, erasure.live.parts), cid)


class _Owner(msgspec.Struct):
    customer_id: str = ""


async def _scrub(erasure: Erasure) -> None:
    person = set(erasure.person)
    parts = erasure.live.parts
    # Each customer's events are in one part of the service-wide stream (omni.live).
    for part in sorted({keys.shard_of(cid, parts) for cid in person}):
        await _scrub_part(erasure.redis, keys.events_all(part, parts), person)


async def _scrub_part(redis: Redis, stream: str, person: set[str]) -> None:
    needles = [cid.encode() for cid in person]
    start = "-"
    while True:
        found = await redis.xrange(stream, start, "+", count=_EVENTS_PAGE)
        entries: list[Any] = found or []
        doomed = []
        for entry_id, fields in entries:
            body = (fields or {}).get(b"e", b"")
            # Most events are someone else's: a byte search spares decoding them.
            if any(n in body for n in needles) and _owner(body) in person:
                doomed.append(entry_id)
        if doomed:
            await redis.xdel(stream, *doomed)
        if len(entries) < _EVENTS_PAGE:
            return
        start = f"({as_text(entries[-1][0])}"


def _owner(body: bytes) -> str:
    try:
        return msgspec.json.decode(body, type=_Owner).customer_id
    except msgspec.DecodeError:
        return ""  # unreadable: not provably theirs, and the stream's cap will take it


async def _forget(erasure: Erasure) -> None:
    for cid in erasure.person:
        await forget(erasure.store, cid)
        await erasure.store.audit.scrub(cid)


async def _announce(erasure: Erasure) -> None:
    # Published before the delete, which takes the customer's own event stream with it;
    # the copy in the stream of every customer's events names ids only.
    await erasure.live.publish(erasure.cid, "customer.erased", {"erased": erasure.person})


async def _delete_absorbed(erasure: Erasure) -> None:
    for cid in erasure.absorbed:
        await _delete(erasure, cid)


async def _delete_own(erasure: Erasure) -> None:
    await _delete(erasure, erasure.cid)


async def _delete(erasure: Erasure, cid: str) -> None:
    """Every key under `cid`'s hash tag in one transaction, watched: a message or a
    delivery that lands while the keys are listed starts the listing again."""
    redis = erasure.redis
    hash_key = keys.customer(cid)
    async with redis.pipeline(transaction=True) as pipe:
        for _ in range(_DELETE_ATTEMPTS):
            try:
                await pipe.watch(hash_key, keys.deliveries(cid))
                fields = text_fields(await pipe.hgetall(hash_key))
                doomed = await _tagged_keys(erasure, cid, fields)
                pipe.multi()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
                for start in range(0, len(doomed), _UNLINK_BATCH):
                    # UNLINK: a long timeline is freed off Redis's main thread. Staged
                    # as a plain command: a cluster pipeline's own unlink() is a coroutine.
                    pipe.execute_command("UNLINK", *doomed[start : start + _UNLINK_BATCH])
                await pipe.execute()
                return
            except WatchError:
                continue
    raise StoreError(f"{cid} kept changing; its erasure could not finish (run it again)")


async def _tagged_keys(erasure: Erasure, cid: str, fields: dict[str, bytes]) -> list[str]:
    redis = erasure.redis
    channels = {SYSTEM_CHANNEL, *erasure.channels}
    channels.update(n[2:].partition(":")[0] for n in fields if n.startswith("i:"))
    channels.update(n[3:] for n in fields if n.startswith("in:"))
    channels.update((as_text(fields.get("cv_channels")) or "").split(","))
    # Every channel the timeline has an index for, also one switched off since: the
    # customer's own hash names them (never the keyspace scanned), and so does the
    # message-id index's text field of each message stored before its digests.
    channels.update((as_text(fields.get("tl_channels")) or "").split(","))
    async for name in redis.hscan_iter(keys.message_ids(cid), count=1000, no_values=True):
        if name.startswith(DIGEST_MARK):
            continue
        match = _CHANNEL.match(name.decode(errors="replace"))
        channels.add(match.group(0) if match else "")
    channels.discard("")
    deliveries = [as_text(d) or "" for d in await redis.zrange(keys.deliveries(cid), 0, -1)]
    return [
        *(keys.channel_timeline(cid, ch) for ch in sorted(channels)),
        *(keys.presence(cid, ch) for ch in sorted(channels)),
        *(keys.delivery(cid, d) for d in deliveries),
        keys.deliveries(cid),
        keys.timeline(cid),
        keys.message_ids(cid),
        keys.notes(cid),
        keys.calls(cid),
        keys.devices(cid),
        keys.mail(cid),
        keys.events(cid),
        keys.survey(cid),
        keys.customer(cid),
    ]


STEPS: tuple[Callable[[Erasure], Awaitable[None]], ...] = (
    _mark,
    _release,
    _scrub,
    _forget,
    _announce,
    _delete_absorbed,
    _delete_own,
)


async def erase_customer(
    store: Store, outbox: Outbox, live: Live, cid: str, channels: tuple[str, ...] = ()
) -> list[str]:
    """Erase `cid` and every customer merged into it; returns the ids erased. Raises
    NotFound when there is nothing (left) to erase and Moved for an absorbed id.
    Running it again after a crash finishes what is left."""
    erasure = Erasure(store=store, outbox=outbox, live=live, cid=cid, channels=channels)
    for step in STEPS:
        await step(erasure)
    log.info("customer erased", customer_id=cid, absorbed=len(erasure.absorbed))
    return erasure.person


# -- export ---------------------------------------------------------------------------


class ExportedDevice(msgspec.Struct, frozen=True):
    """A registered app install. Its push token is left out: it is a credential to
    push to the device, not something the customer told us."""

    device_id: str
    platform: str
    push_provider: str
    app_id: str | None
    app_version: str | None
    os_version: str | None
    locale: str | None
    external_id: str
    registered_at: str
    status: str
    reason: str | None


class ExportedCall(msgspec.Struct, frozen=True):
    call_id: str
    status: str  # the latest status the phone provider reported


class ExportedOptOut(msgspec.Struct, frozen=True):
    channel: str
    external_id: str
    at: str  # when the customer asked for no more messages
    keyword: str  # what they sent ("STOP"), or the provider's error that told omni


class ExportHead(msgspec.Struct, frozen=True):
    """What the export says before its long lists."""

    format: str
    exported_at: str
    customer: Customer
    absorbed: list[str]  # the customers merged into this one, whose data is included
    conversation: Conversation
    facts: dict[str, Fact]
    cart: Cart
    continuity: Continuity | None
    devices: list[ExportedDevice]
    calls: list[ExportedCall]
    opt_outs: list[ExportedOptOut]


class Export(ExportHead, frozen=True):
    """The whole export document, streamed in this order: the head, then every
    delivery (the customer's own, then each absorbed one's, each newest first), then
    every message across all channels, newest first as in the history."""

    deliveries: list[DeliveryStatus]
    messages: list[Message]


async def export_head(store: Store, cid: str) -> ExportHead:
    """Read before the response starts, so a missing or absorbed id is a problem
    document, not a cut-off download."""
    context = await store.contexts.read(cid, follow=False)
    if await store.redis.hexists(keys.customer(cid), "erasing"):
        raise Conflict(f"{cid} is being erased; DELETE it again to finish the erasure")
    absorbed = await store.customers.absorbed(cid)
    devices: list[ExportedDevice] = []
    calls: list[ExportedCall] = []
    for owner in [cid, *absorbed]:
        for device_id, record in sorted((await device_records(store, owner)).items()):
            device = record.device
            devices.append(
                ExportedDevice(
                    device_id=device_id,
                    platform=device.platform,
                    push_provider=device.push_provider,
                    app_id=device.app_id,
                    app_version=device.app_version,
                    os_version=device.os_version,
                    locale=device.locale,
                    external_id=record.external_id,
                    registered_at=record.registered_at,
                    status=record.status,
                    reason=record.reason,
                )
            )
        for call_id, held in sorted((await store.redis.hgetall(keys.calls(owner))).items()):
            status = (as_text(held) or "").partition(" ")[0]
            calls.append(ExportedCall(call_id=as_text(call_id) or "", status=status))
    opt_outs: list[ExportedOptOut] = []
    for identity in context.customer.identities:
        opt_out = await opted_out(store, identity.channel, identity.external_id)
        if opt_out is not None:
            opt_outs.append(
                ExportedOptOut(identity.channel, identity.external_id, opt_out.at, opt_out.keyword)
            )
    return ExportHead(
        format=EXPORT_FORMAT,
        exported_at=iso(now_ms()) or "",
        customer=context.customer,
        absorbed=absorbed,
        conversation=context.conversation,
        facts=context.facts,
        cart=context.cart,
        continuity=context.continuity,
        devices=devices,
        calls=calls,
        opt_outs=opt_outs,
    )


async def export_body(
    store: Store, outbox: Outbox, head: ExportHead, page: int = EXPORT_PAGE
) -> AsyncIterator[bytes]:
    """The export as JSON, a page at a time: however long the history, one page of it
    is held at once."""
    encoder = msgspec.json.Encoder()
    cid = head.customer.id
    since = now_ms()
    yield encoder.encode(head)[:-1] + b',"deliveries":['
    comma = b""
    for owner in [cid, *head.absorbed]:
        offset = 0
        while True:
            items = await outbox.deliveries(owner, page, offset=offset, until_ms=since)
            if items:
                yield comma + b",".join(encoder.encode(item) for item in items)
                comma = b","
            if len(items) < page:
                break
            offset += page
    yield b'],"messages":['
    comma, before, count = b"", None, 0
    while True:
        history = await store.timeline.history(
            cid, limit=page, before=before, channel=None, follow=False
        )
        if history.messages:
            yield comma + b",".join(encoder.encode(m) for m in history.messages)
            comma = b","
            count += len(history.messages)
        if history.next_cursor is None:
            break
        before = decode_cursor(history.next_cursor)
    yield b"]}"
    log.info("customer exported", customer_id=cid, messages=count)
