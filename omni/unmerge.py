"""Undoing a merge (`POST /v1/merges/{merge_id}/undo`): the person is split back into
the two records they were.

A merge keeps what undoing it needs in its record (omni.keys.merge_record, written by
omni.merge before the survivor changed): the absorbed record's fields as they were,
the survivor's fields the merge overwrote, and what it wrote into them. Undoing gives
each record its own back and keeps what happened since:

- the survivor's fields the merge wrote and nobody changed since go back to what they
  were (a fact, the cart or the profile changed after the merge stays: it is news);
  the identities the merge brought leave it, and it stops reading the absorbed
  timelines the merge brought;
- the absorbed record takes back its fields as they were and stops answering 308;
  its identities lead to it again (and the search index finds it);
- messages stored after the merge go to the record whose identity they came from:
  a customer's message by its sender, a reply by the channel it went out on (when only
  the absorbed record has an identity there); omni's own events stay;
- both timelines and both audit logs say what happened; the team inbox, live sockets
  and agents' streams follow (a chat socket of a returned identity reconnects, and
  every process's identity cache finds out at that identity's next message, see
  append.lua's cached path).

The steps, each idempotent, so an undo cut short at any point is finished by running it
again; no step is a transaction across the two customers' slots:

    load      the merge record; 404 unknown, 409 undone already or its records erased
    split     the survivor's fields back (one If-Match write, retried on races)
    unmark    the absorbed record's fields back, merged_into gone (one script)
    survey    its open survey back, if still unanswered (omni.merge_surveys)
    repoint   its identities lead to it again; search follows
    move      messages stored on the survivor since the merge that are the absorbed
              record's: each copied at its own entry id (one script in its slot,
              skipped when there already), then removed from the survivor
    record    an event on each timeline, an entry in each audit log
    finish    the merge record says undone; the team inbox follows

Its cost: the records' fields and the messages stored since the merge, never the
history before it (tests/test_unmerge.py counts the commands).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from omni import codec, keys, scripts
from omni.clock import iso, now_ms
from omni.errors import Conflict, NotFound, PreconditionFailed, StoreError
from omni.ids import is_merge_id
from omni.live import Live
from omni.merge import text_fields
from omni.merge_surveys import give_back
from omni.model import Identity, Message, Profile
from omni.store import Store
from omni.store.entries import dedupe_fields
from omni.store.reply import absorbed_ids, as_bytes, as_text

_SPLIT_ATTEMPTS = 20
_PAGE = 200


class UnmergeResult(msgspec.Struct, frozen=True):
    merge_id: str
    survivor: str
    source: str
    identities: list[Identity]  # those that lead to the source again
    messages_moved: int  # stored on the survivor after the merge, now the source's
    undone_at: str


@dataclass
class Unmerge:
    """One undo in progress: what each step needs from the ones before."""

    store: Store
    merge_id: str
    survivor: str = ""
    source: str = ""
    merged_at: int = 0
    snapshot: dict[str, bytes] = field(default_factory=dict)
    before: dict[str, bytes | None] = field(default_factory=dict)
    sets: dict[str, bytes] = field(default_factory=dict)
    moved: int = 0
    undone_at: int = 0

    @property
    def identities(self) -> list[Identity]:
        return [
            codec.decode(v, Identity) for k, v in sorted(self.snapshot.items()) if k[:2] == "i:"
        ]


def _map(blob: bytes | None) -> dict[str, Any]:
    return msgspec.msgpack.decode(blob) if blob else {}


async def _load(undo: Unmerge) -> None:
    redis = undo.store.redis
    record = text_fields(await redis.hgetall(keys.merge_record(undo.merge_id)))
    if not record:
        raise NotFound(f"no merge {undo.merge_id}", field="merge_id")
    undo.survivor, undo.source = record["survivor"].decode(), record["source"].decode()
    state = record.get("state", b"merged").decode()
    if state == "undone":
        at = iso(int(record.get("undone_at", b"0"))) or "before"
        raise Conflict(f"merge {undo.merge_id} was already undone (at {at})", state="undone")
    if state == "erased" or "snapshot" not in record:
        raise Conflict(
            f"merge {undo.merge_id} cannot be undone: its records were erased", state="erased"
        )
    moved_survivor, moved_source = await _moved(undo)
    if moved_survivor is None or moved_source is None:
        raise Conflict(
            f"merge {undo.merge_id} cannot be undone: its records were erased", state="erased"
        )
    if moved_survivor:
        raise Conflict(
            f"{undo.survivor} was merged into {moved_survivor} since; undo that merge first",
            state="merged",
            customer_id=moved_survivor,
        )
    if moved_source not in ("", undo.survivor):
        raise Conflict(
            f"{undo.source} is merged into {moved_source} now, not {undo.survivor}",
            state="merged",
            customer_id=moved_source,
        )
    undo.merged_at = int(record["merged_at"])
    undo.snapshot = _map(record["snapshot"])
    undo.before = _map(record["before"])
    undo.sets = _map(record["sets"])
    await redis.hset(keys.merge_record(undo.merge_id), "state", "undoing")


async def _moved(undo: Unmerge) -> tuple[str | None, str | None]:
    """Where each record is merged into now: '' nowhere, None when it is not there."""
    async with undo.store.redis.pipeline(transaction=False) as pipe:
        for cid in (undo.survivor, undo.source):
            pipe.hmget(keys.customer(cid), ["rev", "merged_into", "erasing"])
        found = await pipe.execute()
    out: list[str | None] = []
    for rev, moved, erasing in found:
        out.append(None if rev is None or erasing is not None else (as_text(moved) or ""))
    return out[0], out[1]


def _split_plan(undo: Unmerge, mine: dict[str, bytes]) -> tuple[list[tuple[str, bytes]], list[str]]:
    """The survivor's fields back: those the merge wrote and nobody changed since."""
    sets: list[tuple[str, bytes]] = []
    deletes: list[str] = []
    for name, written in sorted(undo.sets.items()):
        prior = undo.before.get(name)
        if name == "absorbed":
            brought = set(absorbed_ids(written)) - set(absorbed_ids(prior))
            now = absorbed_ids(mine.get(name))
            kept = [cid for cid in now if cid not in brought]
            if kept != now:
                if kept:
                    sets.append((name, ",".join(kept).encode()))
                else:
                    deletes.append(name)
        elif name.startswith("i:"):
            if prior is None and name in mine:
                deletes.append(name)  # the identity the merge brought goes back
        elif mine.get(name) == written and prior != written:
            if prior is None:
                deletes.append(name)
            else:
                sets.append((name, prior))
    return sets, deletes


async def _split(undo: Unmerge) -> None:
    redis = undo.store.redis
    for _ in range(_SPLIT_ATTEMPTS):
        mine = text_fields(await redis.hgetall(keys.customer(undo.survivor)))
        if not mine:
            raise Conflict(f"merge {undo.merge_id} cannot be undone: its records were erased")
        sets, deletes = _split_plan(undo, mine)
        if not sets and not deletes:
            return
        try:
            await undo.store.parts.write(undo.survivor, "*", mine["rev"].decode(), sets, deletes)
        except PreconditionFailed:
            continue  # the survivor changed while we planned; plan again on what it is now
        restored = dict(sets).get("p")
        if restored is not None or "p" in deletes:
            old = codec.decode(mine["p"], Profile) if "p" in mine else None
            new = codec.decode(restored, Profile) if restored is not None else Profile()
            await undo.store.search.index_profile(undo.survivor, old, new)
        return
    raise StoreError(f"{undo.survivor} kept changing; the undo could not be applied")


async def _unmark(undo: Unmerge) -> None:
    args: list[Any] = [undo.survivor]
    for name, value in sorted(undo.snapshot.items()):
        args += [name, value]
    found = await scripts.load(undo.store.redis, "merge_unmark")(
        keys=[keys.customer(undo.source)], args=args
    )
    if int(found) == -2:
        raise Conflict(f"merge {undo.merge_id} cannot be undone: its records were erased")


async def _survey(undo: Unmerge) -> None:
    await give_back(undo.store, undo.merge_id, undo.survivor, undo.source)


async def _repoint(undo: Unmerge) -> None:
    await undo.store.customers.repoint(undo.identities, undo.source)
    if "p" in undo.snapshot:
        profile = codec.decode(undo.snapshot["p"], Profile)
        await undo.store.search.index_profile(undo.source, Profile(), profile)


async def _move(undo: Unmerge) -> None:
    redis = undo.store.redis
    theirs = {(i.channel, i.external_id) for i in undo.identities}
    survivor_own = await _survivor_channels(undo)
    copy = scripts.load(redis, "merge_move")
    start = f"{undo.merged_at}-0"
    while True:
        page: list[Any] = (
            await redis.xrange(keys.timeline(undo.survivor), start, "+", count=_PAGE) or []
        )
        for entry_id, fields in page:
            entry = as_text(entry_id) or ""
            blob = as_bytes(fields[b"m"])
            message = codec.decode_message(
                blob, customer_id=undo.survivor, conversation_id="", received_at=""
            )
            if not _is_theirs(message, theirs, survivor_own):
                continue
            await _move_one(undo, copy, entry, blob, fields.get(b"v", b"0"), message)
            undo.moved += 1
        if len(page) < _PAGE:
            return
        start = f"({as_text(page[-1][0])}"


async def _survivor_channels(undo: Unmerge) -> set[str]:
    """The channels the survivor has an identity on, of its own (not the merge's)."""
    fields = await undo.store.redis.hkeys(keys.customer(undo.survivor))
    names = [as_text(name) or "" for name in fields]
    return {n.split(":")[1] for n in names if n.startswith("i:")} - {
        n.split(":")[1] for n in undo.sets if n.startswith("i:") and undo.before.get(n) is None
    }


def _is_theirs(message: Message, theirs: set[tuple[str, str]], survivor_own: set[str]) -> bool:
    if message.author.kind == "system":
        return False  # omni's own events (the merge's among them) stay with the survivor
    if message.direction == "inbound":
        return (message.channel, message.author.id or "") in theirs
    # A reply went to the identity on its channel: the source's, when only it has one there.
    return message.channel in {c for c, _ in theirs} and message.channel not in survivor_own


async def _move_one(
    undo: Unmerge, copy: scripts.Script, entry: str, blob: bytes, conv: Any, message: Message
) -> None:
    redis = undo.store.redis
    assert message.channel_message_id is not None
    dedupe, legacy = dedupe_fields(message.channel, message.channel_message_id)
    notes = await redis.hmget(
        keys.notes(undo.survivor), [f"{n}:{entry}" for n in ("s", "d", "r", "rd")]
    )
    await copy(
        keys=[
            keys.customer(undo.source),
            keys.timeline(undo.source),
            keys.channel_timeline(undo.source, message.channel),
            keys.message_ids(undo.source),
            keys.notes(undo.source),
        ],
        args=[entry, blob, conv, dedupe, message.channel, message.direction,
              *[n if n is not None else "" for n in notes], legacy],
    )  # fmt: skip
    async with redis.pipeline(transaction=True) as pipe:
        pipe.xdel(keys.timeline(undo.survivor), entry)
        pipe.xdel(keys.channel_timeline(undo.survivor, message.channel), entry)
        pipe.hdel(keys.message_ids(undo.survivor), dedupe, legacy)
        pipe.hdel(keys.notes(undo.survivor), *[f"{n}:{entry}" for n in ("s", "d", "r", "rd")])
        pipe.hincrby(keys.customer(undo.survivor), "rev", 1)
        await pipe.execute()


async def _record(undo: Unmerge) -> None:
    timeline = undo.store.timeline
    channels = ", ".join(sorted({i.channel for i in undo.identities})) or "no channels"
    key = f"unmerge:{undo.merge_id}"
    metadata: dict[str, Any] = {"kind": "unmerge", "merge_id": undo.merge_id}
    await timeline.record_event(
        undo.survivor,
        key,
        f"Merge undone: customer {undo.source} ({channels}) is a separate customer again",
        {**metadata, "split_from": undo.source},
    )
    await timeline.record_event(
        undo.source,
        key,
        f"Merge undone: this customer is no longer part of {undo.survivor}",
        {**metadata, "split_from": undo.survivor},
    )
    record = keys.merge_record(undo.merge_id)
    if not await undo.store.redis.hexists(record, "undo_audited"):
        # Written, then marked: a crash in between writes it twice, never not at all.
        await undo.store.audit.record(
            [undo.survivor, undo.source], "unmerge", merge_id=undo.merge_id
        )
        await undo.store.redis.hset(record, "undo_audited", 1)


async def _finish(undo: Unmerge) -> None:
    undo.undone_at = now_ms()
    record = keys.merge_record(undo.merge_id)
    async with undo.store.redis.pipeline(transaction=True) as pipe:
        pipe.hsetnx(record, "undone_at", undo.undone_at)
        pipe.hset(record, "state", "undone")
        pipe.hget(record, "undone_at")
        found = await pipe.execute()
    undo.undone_at = int(found[-1])
    await undo.store.inbox.sync(undo.survivor)
    await undo.store.inbox.sync(undo.source)


STEPS: tuple[Callable[[Unmerge], Awaitable[None]], ...] = (
    _load,
    _split,
    _unmark,
    _survey,
    _repoint,
    _move,
    _record,
    _finish,
)


def result_of(undo: Unmerge) -> UnmergeResult:
    return UnmergeResult(
        merge_id=undo.merge_id,
        survivor=undo.survivor,
        source=undo.source,
        identities=undo.identities,
        messages_moved=undo.moved,
        undone_at=iso(undo.undone_at) or "",
    )


async def announce(live: Live, result: UnmergeResult) -> None:
    """Both records' listeners hear of it: agents' streams, and a chat socket of an
    identity that went back to the source, which then reconnects to it."""
    data = msgspec.to_builtins(result)
    await live.publish(result.survivor, "unmerge", data)
    await live.publish(result.source, "unmerge", data)


async def undo_merge(store: Store, merge_id: str) -> UnmergeResult:
    """Split a merge's two customers apart again. Running it again after a crash
    finishes what is left; after it finished, Conflict."""
    if not is_merge_id(merge_id):
        raise NotFound(f"no merge {merge_id}", field="merge_id")
    undo = Unmerge(store=store, merge_id=merge_id)
    for step in STEPS:
        await step(undo)
    return result_of(undo)
