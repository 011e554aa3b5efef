"""The Redis store, in rooms: each room is every read and write of one family of keys
(omni.keys), encoded with the one codec (omni.codec), and its Lua scripts sit beside it.

    room                    module                     keys it owns (omni.keys)
    store.timeline          omni/store/timeline.py     timeline (tl), channel_timeline
                                                       (tl:<ch>), message_ids (mid),
                                                       notes (ann); append.lua
    store.customers         omni/store/customers.py    identity (ident:*); in customer (c):
                                                       i:*, p, created, first_seen
    store.parts             omni/store/parts.py        in customer (c): f:*, cart, cv_pending,
                                                       cv_topic, rev, *_rev, q_*; stats
    store.search            omni/store/search.py       search_index (ix:*)
    store.audit             omni/store/audit.py        audit (audit:{C}), the identity changes
    store.inbox             omni/store/inbox.py        inbox (the team inbox's shards);
                                                       in customer (c): ix, iw;
                                                       inbox_mark.lua
    store.contexts          omni/store/context.py      none: reads c + tl in one round trip
    (shared)                omni/store/versioned.py    write_field.lua: If-Match writes of c
                            omni/store/entries.py      pure: entries decoded, page starts
                            omni/store/reply.py        pure: Redis replies as str / bytes

The customer hash is shared by design (one slot, one script per write), by field: the
rooms above own the fields listed; append.lua writes the activity fields (last_seen,
last_channel, in:<ch>, cv_n, cv_channels, tl_channels, …); omni.handoff owns ho*, cv_assignee,
cv_first, cv_resolved; omni.merge owns merged_into, merged_at, merge_id and absorbed
(which the rooms read to follow a merge); omni.erasure owns erasing. Three operations
reach every key of a customer by design: omni.merge (reads both hashes whole, repoints
identities through `store.customers`), omni.unmerge (its reverse: the same fields, and
the timeline entries stored since the merge) and omni.erasure (exports, then deletes
every key but the audit log, which it scrubs to ids). omni.metrics
reads `stats` with its own keys in one round trip. The keys of other concerns are their
modules' own: outbox/delivery (omni.outbox), events/live (omni.live), handoff_due and
metrics (omni.handoff), links (omni.links), devices/push_token/presence (the mobile and
socket channels), calls (voice).

Hot paths are one round trip each. An ingest walks straight down, never back up: the
identity's customer (the timeline's cache, else `customers.resolve`: one SET NX GET in
the identity's slot), then append.lua in the customer's slot (de-duplicate, append,
update the customer; on one server, the message's live event too when nothing must come
before it: omni.inbox), then, for a new customer with a name only, the search index. A
context read is one pipelined HGETALL + XREVRANGE COUNT (+ EXISTS of the annotations;
their HMGET a second round trip when there are any). Neither ranges over the whole
timeline, so their cost does not grow with the history (tests/test_flat_cost.py counts
the commands).
"""

from __future__ import annotations

from redis.asyncio import Redis

from omni import scripts
from omni.replica_acks import ReplicaAcks
from omni.store.audit import Audit
from omni.store.context import Contexts
from omni.store.customers import Customers
from omni.store.inbox import SHARDS_DEFAULT, ConversationIndex
from omni.store.parts import Parts
from omni.store.search import Search
from omni.store.timeline import IDENTITY_CACHE, SYSTEM_CHANNEL, Appended, Timeline

__all__ = ["SYSTEM_CHANNEL", "Appended", "Store"]


class Store:
    """omni's Redis store: holds the client and the rooms, never opens or closes it."""

    def __init__(
        self,
        redis: Redis,
        identity_cache: int = IDENTITY_CACHE,
        *,
        pipelined: Redis | None = None,
        timeout_s: float = 10.0,
        inbox_shards: int = SHARDS_DEFAULT,
        acks: ReplicaAcks | None = None,
        stats_parts: int = 1,
    ) -> None:
        """`pipelined`: the client the hot paths' pipeliner uses (`redis` when not given);
        `timeout_s`: the pipeliner's deadline for Redis's answer; `inbox_shards`: `[inbox]
        shards`, the team inbox index's sorted sets per status; `acks`: with `[redis] replica_acks`,
        appends are confirmed on replicas (WAIT) before they are answered; `stats_parts`: the
        service-wide counters' parts (`[redis] shards` in a cluster, omni.keys)."""
        self.redis = redis
        self.pipeliner = scripts.Pipeliner(pipelined or redis, timeout_s)  # the hot paths
        self.customers = Customers(redis)
        self.search = Search(redis, self.customers)
        self.timeline = Timeline(
            redis, self.pipeliner, self.customers, self.search, identity_cache, acks=acks
        )
        self.parts = Parts(redis, self.timeline, stats_parts)
        self.contexts = Contexts(self.timeline)
        self.inbox = ConversationIndex(redis, inbox_shards)
        self.audit = Audit(redis)
