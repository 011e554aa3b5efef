"""Merging two customers into one: after a verified login, or when an agent sees that
two records are one person.

A merge does not copy the history. The survivor records whom it absorbed, and reads
interleave the absorbed timelines with its own (omni.store: by entry id, then owner),
so a merge costs O(identities + facts), whatever the length of either history, and a
read costs one more script call per absorbed customer.

The steps, each idempotent, so a merge cut short at any point is finished by running
it again (nothing lost, nothing doubled):

    mark      the source refuses writes from now on, naming the survivor (a message
              on its way is appended to the survivor instead); the merge gets its id
    absorb    the merge record (omni.keys.merge_record) keeps what undoing it needs —
              the source's fields as they are, the survivor's fields about to be
              overwritten and what they are overwritten with (omni.unmerge) —, then
              the survivor takes the source's timeline (by reference), identities,
              facts (newest wins, provenance kept), profile gaps, the more recently
              changed cart, and first/last seen; one If-Match write, retried on races
    repoint   every identity of the source resolves to the survivor; search follows
    record    one event on the survivor's timeline says what was merged (and which
              cart was set aside), and both records' audit logs say who merged them,
              on what evidence (omni.store.audit)
    survey    the source's open survey goes to the survivor (omni.merge_surveys)
    index     the team inbox shows the survivor's conversation, not the source's
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from omni import codec, keys, scripts
from omni.clock import now_ms
from omni.errors import Conflict, NotFound, PreconditionFailed, StoreError, ValidationFailed
from omni.ids import is_customer_id, new_merge_id
from omni.live import Live
from omni.merge_surveys import RECORD_FIELDS as SURVEY_FIELDS
from omni.merge_surveys import carry
from omni.model import Cart, Fact, Identity, MetaValue, Profile
from omni.store import Store
from omni.store.audit import AuditAction
from omni.store.reply import absorbed_ids, as_bytes, as_text

_ABSORB_ATTEMPTS = 20


class MergeResult(msgspec.Struct, frozen=True):
    survivor: str
    source: str
    identities: list[Identity]
    facts_taken: list[str]
    cart_from: str | None  # the customer whose cart the survivor kept; None: no cart
    merge_id: str = ""  # what POST /v1/merges/{merge_id}/undo takes


@dataclass
class Merge:
    """One merge in progress: what each step needs from the ones before."""

    store: Store
    survivor: str
    source: str
    action: AuditAction = "merge"  # how the audit log names it (a link token's, a join's)
    evidence: str | None = None
    identity: tuple[str, str] | None = None  # the channel identity that proved it, if one
    merge_id: str = ""
    merged_at: int = 0  # ms: messages stored on the survivor from then on came after it
    source_fields: dict[str, bytes] = field(default_factory=dict)
    result: MergeResult | None = None


async def canonical(store: Store, cid: str) -> str:
    """The customer `cid` is now: itself, or the survivor it was merged into."""
    if not is_customer_id(cid):
        raise NotFound(f"no customer {cid}")
    for _ in range(8):
        moved, rev = await store.redis.hmget(keys.customer(cid), ["merged_into", "rev"])
        if rev is None:
            raise NotFound(f"no customer {cid}")
        if moved is None:
            return cid
        cid = as_bytes(moved).decode()
    raise StoreError(f"customer {cid} is at the end of a merge chain too long to follow")


async def _mark(merge: Merge) -> None:
    found = await scripts.load(merge.store.redis, "merge_mark")(
        keys=[keys.customer(merge.source)], args=[merge.survivor, now_ms(), new_merge_id()]
    )
    if int(found[0]) == -2:
        raise NotFound(f"no customer {merge.source}", field="source")
    if int(found[0]) == -1:
        raise Conflict(
            f"{merge.source} was merged into {as_text(found[1])} meanwhile; merge that one",
            field="source",
            customer_id=as_text(found[1]),
        )
    merge.merge_id, merge.merged_at = as_text(found[1]) or "", int(found[2])


def text_fields(flat: dict[Any, Any]) -> dict[str, bytes]:
    """A hash as read (bytes names) with its field names as text."""
    return {as_bytes(k).decode(): as_bytes(v) for k, v in flat.items()}


def _fact_at(blob: bytes) -> str:
    return codec.decode(blob, Fact).at


def _cart_at(blob: bytes | None) -> str:
    return (codec.decode(blob, Cart).updated_at or "") if blob else ""


def _profile(mine: bytes | None, theirs: bytes | None) -> Profile | None:
    """The survivor's profile with its gaps filled from the source's; a verified value
    beats an unverified one."""
    if theirs is None:
        return None
    a = codec.decode(mine, Profile) if mine else Profile()
    b = codec.decode(theirs, Profile)
    email_b = b.email_verified and not a.email_verified
    phone_b = b.phone_verified and not a.phone_verified
    return Profile(
        name=a.name or b.name,
        email=b.email if (email_b or not a.email) else a.email,
        email_verified=a.email_verified or b.email_verified,
        phone=b.phone if (phone_b or not a.phone) else a.phone,
        phone_verified=a.phone_verified or b.phone_verified,
        locale=a.locale or b.locale,
    )


def absorb_plan(
    merge: Merge, mine: dict[str, bytes], theirs: dict[str, bytes]
) -> tuple[list[tuple[str, bytes]], MergeResult, Profile | None]:
    """The merge rule: the survivor's fields to write, from both records as read (the
    merge writes them; its preview, omni.merge_preview, shows them)."""
    sets: list[tuple[str, bytes]] = []
    absorbed = [c for c in (mine.get("absorbed", b"").decode()).split(",") if c]
    for cid in [merge.source, *theirs.get("absorbed", b"").decode().split(",")]:
        if cid and cid not in absorbed and cid != merge.survivor:
            absorbed.append(cid)
    sets.append(("absorbed", ",".join(absorbed).encode()))
    identities = []
    for name, blob in sorted(theirs.items()):
        if name.startswith("i:"):
            identities.append(codec.decode(blob, Identity))
            if name not in mine:
                sets.append((name, blob))
    facts_taken = []
    for name, blob in sorted(theirs.items()):
        if name.startswith("f:") and (name not in mine or _fact_at(blob) > _fact_at(mine[name])):
            facts_taken.append(name[2:])
            sets.append((name, blob))
    cart_from = merge.survivor if "cart" in mine else None
    if "cart" in theirs and _cart_at(theirs["cart"]) > _cart_at(mine.get("cart")):
        cart_from = merge.source
        sets.append(("cart", theirs["cart"]))
    profile = _profile(mine.get("p"), theirs.get("p"))
    if profile is not None:
        sets.append(("p", codec.encode(profile)))
    for name in ("first_seen", "created"):
        if name in theirs and (name not in mine or int(theirs[name]) < int(mine[name])):
            sets.append((name, theirs[name]))
    if "last_seen" in theirs and int(theirs["last_seen"]) > int(mine.get("last_seen", b"0")):
        sets.append(("last_seen", theirs["last_seen"]))
        if "last_channel" in theirs:
            sets.append(("last_channel", theirs["last_channel"]))
    for name, value in theirs.items():
        if name.startswith("in:") and int(value) > int(mine.get(name, b"0")):
            sets.append((name, value))
    # NPS at most once per person per period: the later of the two records' asks counts.
    if "nps_at" in theirs and int(theirs["nps_at"]) > int(mine.get("nps_at", b"0")):
        sets.append(("nps_at", theirs["nps_at"]))
    result = MergeResult(
        survivor=merge.survivor,
        source=merge.source,
        identities=identities,
        facts_taken=facts_taken,
        cart_from=cart_from,
        merge_id=merge.merge_id,
    )
    return sets, result, profile


async def _absorb(merge: Merge) -> None:
    redis = merge.store.redis
    merge.source_fields = text_fields(await redis.hgetall(keys.customer(merge.source)))
    for _ in range(_ABSORB_ATTEMPTS):
        mine = text_fields(await redis.hgetall(keys.customer(merge.survivor)))
        if not mine:
            raise NotFound(f"no customer {merge.survivor}")
        sets, merge.result, profile = absorb_plan(merge, mine, merge.source_fields)
        if merge.source not in absorbed_ids(mine.get("absorbed")):
            await _keep_for_undo(merge, mine, sets)
        try:
            await merge.store.parts.write(merge.survivor, "*", mine["rev"].decode(), sets)
        except PreconditionFailed:
            continue  # the survivor changed while we planned; plan again on what it is now
        old = codec.decode(mine["p"], Profile) if "p" in mine else None
        if profile is not None and profile != old:
            await merge.store.search.index_profile(merge.survivor, old, profile)
        return
    raise StoreError(f"{merge.survivor} kept changing; the merge could not be applied")


# Fields of the source that are the merge's own, or the team inbox's: not the record's.
_NOT_SNAPSHOT = frozenset({"merged_into", "merged_at", "merge_id", "ix", "iw"})


async def _keep_for_undo(
    merge: Merge, mine: dict[str, bytes], sets: list[tuple[str, bytes]]
) -> None:
    """The merge record: written before the survivor changes (and again when its
    write is retried), never after it changed, so `before` is what the survivor was."""
    snapshot = {k: v for k, v in merge.source_fields.items() if k not in _NOT_SNAPSHOT}
    record: dict[str, str | int | bytes] = {
        "survivor": merge.survivor,
        "source": merge.source,
        "merged_at": merge.merged_at,
        "action": merge.action,
        "snapshot": msgspec.msgpack.encode(snapshot),
        "before": msgspec.msgpack.encode({name: mine.get(name) for name, _ in sets}),
        "sets": msgspec.msgpack.encode(dict(sets)),
    }
    async with merge.store.redis.pipeline(transaction=True) as pipe:
        pipe.hset(keys.merge_record(merge.merge_id), mapping=record)  # type: ignore[arg-type]
        pipe.hsetnx(keys.merge_record(merge.merge_id), "state", "merged")
        await pipe.execute()


async def _repoint(merge: Merge) -> None:
    identities = [
        codec.decode(blob, Identity)
        for name, blob in merge.source_fields.items()
        if name.startswith("i:")
    ]
    await merge.store.customers.repoint(identities, merge.survivor)
    if "p" in merge.source_fields:
        await merge.store.search.index_profile(
            merge.source, codec.decode(merge.source_fields["p"], Profile), Profile()
        )


async def _record(merge: Merge) -> None:
    assert merge.result is not None
    result = merge.result
    channels = sorted({i.channel for i in result.identities})
    text = f"Merged customer {merge.source} ({', '.join(channels) or 'no channels'}) into this one"
    metadata: dict[str, MetaValue] = {
        "kind": "merge",
        "merged_from": merge.source,
        "merge_id": merge.merge_id,
    }
    if result.cart_from is not None and "cart" in merge.source_fields:
        if result.cart_from == merge.survivor:
            # The cart set aside is kept in the record, so nothing the customer chose is lost.
            # (as JSON text: metadata values are scalars)
            cart = codec.decode(merge.source_fields["cart"], Cart)
            metadata["set_aside_cart"] = msgspec.json.encode(cart).decode()
            text += "; their cart was set aside (this customer's was changed more recently)"
        else:
            text += "; their cart, changed more recently, is the cart now"
    await merge.store.timeline.record_event(
        merge.survivor, f"merge:{merge.merge_id}", text, metadata
    )
    record = keys.merge_record(merge.merge_id)
    if not await merge.store.redis.hexists(record, "audited"):
        # Written, then marked: a crash in between writes it twice, never not at all.
        await merge.store.audit.record(
            [merge.survivor, merge.source],
            merge.action,
            evidence=merge.evidence,
            identity=merge.identity,
            merge_id=merge.merge_id,
        )
        await merge.store.redis.hset(record, "audited", 1)


async def _survey(merge: Merge) -> None:
    await carry(merge.store, merge.merge_id, merge.survivor, merge.source)


async def _index(merge: Merge) -> None:
    await merge.store.inbox.drop(merge.source)
    await merge.store.inbox.sync(merge.survivor)


STEPS: tuple[Callable[[Merge], Awaitable[None]], ...] = (
    _mark,
    _absorb,
    _repoint,
    _record,
    _survey,
    _index,
)


async def forget(store: Store, cid: str) -> None:
    """An erasure's part: the records of the customer's merges keep their ids and lose
    what undoing them needed (the records' fields), so such a merge cannot be undone."""
    for merge_id in await store.audit.merge_ids(cid):
        async with store.redis.pipeline(transaction=True) as pipe:
            pipe.hdel(keys.merge_record(merge_id), "snapshot", "before", "sets", *SURVEY_FIELDS)
            pipe.hset(keys.merge_record(merge_id), "state", "erased")
            await pipe.execute()


async def announce(live: Live, result: MergeResult) -> None:
    """Both records' listeners hear of a merge: agents' streams, and a chat socket on
    the absorbed record, which then has its client reconnect to the survivor."""
    data = msgspec.to_builtins(result)
    await live.publish(result.survivor, "merge", data)
    await live.publish(result.source, "merge", data)


async def pair(store: Store, survivor: str, source: str) -> tuple[str, str]:
    """The two customers a merge of `source` into `survivor` joins, as they are now."""
    if not is_customer_id(source):
        raise NotFound(f"no customer {source}", field="source")
    survivor = await canonical(store, survivor)
    moved = await store.redis.hget(keys.customer(source), "merged_into")
    if moved is not None and as_bytes(moved).decode() != survivor:
        source = await canonical(store, source)  # merged elsewhere: bring that one over
    if source == survivor:
        raise ValidationFailed("a customer cannot be merged into itself", field="source")
    return survivor, source


async def merge_customers(
    store: Store,
    survivor: str,
    source: str,
    *,
    action: AuditAction = "merge",
    evidence: str | None = None,
    identity: tuple[str, str] | None = None,
) -> MergeResult:
    """Make `source` part of `survivor`. Running it again (after a crash, or twice)
    finishes what is left and changes nothing else. `action` and `evidence` are what
    the audit log says of it (an agent's merge, a link token, a verified login), and
    `identity` the channel identity (channel, external id) that proved it, if one."""
    survivor, source = await pair(store, survivor, source)
    merge = Merge(
        store=store,
        survivor=survivor,
        source=source,
        action=action,
        evidence=evidence,
        identity=identity,
    )
    for step in STEPS:
        await step(merge)
    assert merge.result is not None
    return merge.result
