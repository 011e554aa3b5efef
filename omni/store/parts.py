"""The versioned parts room (`store.parts`): the customer hash's fields a caller writes
with If-Match — facts (`f:<name>`), the cart (`cart`), the conversation's pending
question and topic (`cv_pending`, `cv_topic`), the per-part revisions (`rev`,
`<part>_rev`) — and the counters (`q_*` in the customer hash, `omni:stats`).

Each write is one write_field.lua run (omni.store.versioned); a cart change also puts an
event on the timeline (`store.timeline.record_event`).
"""

from __future__ import annotations

from collections.abc import Sequence

from redis.asyncio import Redis

from omni import codec, keys, scripts
from omni.clock import iso, now_ms
from omni.errors import Moved, NotFound
from omni.ids import is_customer_id
from omni.model import (
    EMPTY_CART,
    Cart,
    CartInput,
    ConversationPatch,
    Fact,
    FactInput,
    FactsPatch,
    Pending,
    PendingInput,
    cart_of,
)
from omni.store.reply import as_bytes
from omni.store.timeline import Timeline
from omni.store.versioned import write_part


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


class Parts:
    def __init__(self, redis: Redis, timeline: Timeline, stats_parts: int = 1) -> None:
        self.redis = redis
        self.timeline = timeline
        self.stats_parts = stats_parts
        self._write = scripts.load(redis, "write_field", "store")

    async def write(
        self,
        cid: str,
        part: str,
        if_match: str | None,
        sets: list[tuple[str, bytes]],
        deletes: Sequence[str] = (),
    ) -> tuple[str, bytes | None]:
        """A revisioned write of any of the customer hash's fields (a merge's, an
        erasure's mark): see omni.store.versioned."""
        return await write_part(self._write, cid, part, if_match, sets, deletes)

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
        rev, _ = await self.write(cid, "facts", if_match, sets, deletes)
        return rev

    async def add_absent_facts(self, cid: str, facts: dict[str, FactInput]) -> list[str]:
        """Write the facts the customer does not hold yet (whatever the revision);
        returns their names."""
        known = await self.redis.hmget(keys.customer(cid), [f"f:{name}" for name in facts])
        absent: dict[str, FactInput | None] = {
            name: fact
            for (name, fact), existing in zip(facts.items(), known, strict=True)
            if existing is None
        }
        if absent:
            await self.patch_facts(cid, FactsPatch(facts=absent), None)
        return list(absent)

    async def put_cart(self, cid: str, data: CartInput, if_match: str, by: str) -> tuple[Cart, str]:
        cart = cart_of(data, updated_at=iso(now_ms()) or "", updated_by=by)
        rev, old = await self.write(cid, "cart", if_match, [("cart", codec.encode(cart))])
        before = codec.decode(old, Cart) if old else None
        # Each change is an event on the timeline, so an agent (or the next channel's
        # bot) sees how the purchase went, not only where it stands.
        await self.timeline.record_event(cid, f"cart:{rev}", _cart_text(before, cart), {
            "kind": "cart", "stage": cart.stage, "previous_stage": (before or EMPTY_CART).stage,
            "item_count": cart.totals.item_count, "subtotal": cart.totals.subtotal,
            "currency": cart.currency, "order_id": cart.order_id,
        })  # fmt: skip
        # The event moved the revision on; the ETag names the cart as stored now.
        return cart, await self.revision(cid)

    async def cart(self, cid: str) -> tuple[Cart, str]:
        if not is_customer_id(cid):
            raise NotFound(f"no customer {cid}")
        blob, rev, moved = await self.redis.hmget(
            keys.customer(cid), ["cart", "rev", "merged_into"]
        )
        if rev is None:
            raise NotFound(f"no customer {cid}")
        if moved is not None:
            raise Moved(cid, as_bytes(moved).decode())
        return (codec.decode(as_bytes(blob), Cart) if blob else EMPTY_CART), as_bytes(rev).decode()

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
        rev, _ = await self.write(cid, "conversation", if_match, sets, deletes)
        if repeated:
            await self.count(cid, "q_repeated")
            # This conversation let a repeated question through (the service report's
            # "continued across channels without a repeated question" leaves it out).
            await self.redis.hset(keys.customer(cid), "cv_rq", "1")
        return rev, repeated

    async def count(self, cid: str, name: str, by: int = 1) -> None:
        """A counter kept per customer and service-wide (for /metrics)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hincrby(keys.customer(cid), name, by)
            part = keys.shard_of(cid, self.stats_parts)
            pipe.hincrby(keys.stats(part, self.stats_parts), name, by)
            await pipe.execute()

    async def revision(self, cid: str) -> str:
        """The customer's revision (its context's ETag)."""
        if not is_customer_id(cid):
            raise NotFound(f"no customer {cid}")
        rev = await self.redis.hget(keys.customer(cid), "rev")
        if rev is None:
            raise NotFound(f"no customer {cid}")
        return as_bytes(rev).decode()
