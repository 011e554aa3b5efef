"""Every Redis key omni uses, in one place.

All keys of one customer carry the customer's hash tag `{cus_…}`, so that in a Redis
Cluster a customer's writes stay in one slot and one Lua script can touch them all.
Keys that index across customers (identities, search) are tagged by what they index.

    omni:{C}:c          hash    customer state: rev, profile, conversation, facts (f:*), cart
    omni:{C}:tl         stream  the timeline: one entry per message, field m = msgpack
    omni:{C}:tl:<ch>    stream  per-channel index: same entry ids as tl, no payload
    omni:{C}:mid        hash    "<channel>:<channel message id>" -> timeline entry id
    omni:{C}:ann        hash    annotations by entry id: delivery status, deleted, reaction
    omni:{C}:ev         stream  live events, capped: field e = JSON {customer_id, type, data}
    omni:{C}:calls      hash    phone calls: CallSid -> "<latest status> <sequence number>"
    omni:{C}:dev        hash    mobile devices: device id -> msgpack device record
    omni:{C}:on:<ch>    zset    live sockets on a channel: socket id scored by expiry (ms)
    omni:{C}:svy        hash    the open survey: id, kind, channel, steps, expiry, what it
                                is about (omni.surveys); the customer hash keeps svy_conv
                                (last conversation asked), nps_at, rp (last resolution, for
                                the report's reopen count), cv_rq, cart_ch, cart_order
    omni:{C}:mail       hash    e-mail threads: the last mail each way, the Message-IDs indexed
    omni:ident:{<ch>:<ext>}     string  channel identity -> customer id
    omni:optout:{<ch>:<ext>}    string  the identity asked for no more messages (STOP):
                                        "<ms> <keyword>"; beside its identity key's slot
    omni:push:{<digest>}        string  push token digest -> "<customer id> <device id>"
    omni:ix:<kind>:{<value>}    set     search index: email, phone, name token -> ids
    omni:rep:{r<shard>}:…       the service report's per-day figures (see below)
    omni:msgid:{<digest>}       string  an e-mail Message-ID omni sent or received -> id
    omni:once:<scope>:{<digest>} string a webhook's one-time token, until it expires
    omni:audit:{C}              stream  the customer's identity changes (omni.store.audit)
    omni:merge:{<merge id>}     hash    a merge and what undoing it needs (omni.unmerge)
    omni:inbox:{ib<n>}:…        zset    the team inbox's index shards (omni.store.inbox)
"""

from __future__ import annotations

import zlib

PREFIX = "omni"


def shard_of(cid: str, shards: int) -> int:
    """The shard a customer's entries in a sharded service-wide index or channel go to
    (the team inbox, the service report, the live doorbells): crc32 of its id modulo the
    section's `shards`, stable across processes."""
    return zlib.crc32(cid.encode()) % shards


def customer(cid: str) -> str:
    return f"{PREFIX}:{{{cid}}}:c"


def timeline(cid: str) -> str:
    return f"{PREFIX}:{{{cid}}}:tl"


def channel_timeline(cid: str, channel: str) -> str:
    return f"{PREFIX}:{{{cid}}}:tl:{channel}"


def message_ids(cid: str) -> str:
    return f"{PREFIX}:{{{cid}}}:mid"


def notes(cid: str) -> str:
    """What happened to messages after they were stored, by timeline entry id:
    `s:<entry>` delivery status, `d:<entry>` deleted at, `r:<entry>` reaction,
    `rd:<entry>` read at. The timeline itself is append-only."""
    return f"{PREFIX}:{{{cid}}}:ann"


def calls(cid: str) -> str:
    """The latest status of each of the customer's phone calls, by CallSid: status
    callbacks arrive in any order, and a finished call must not look live again."""
    return f"{PREFIX}:{{{cid}}}:calls"


def devices(cid: str) -> str:
    """The customer's registered app installs (push tokens), by device id."""
    return f"{PREFIX}:{{{cid}}}:dev"


def presence(cid: str, channel: str) -> str:
    """The customer's live sockets on a channel, each scored by when it expires unless
    its socket refreshes it: a reply goes over a socket instead of a push while any live."""
    return f"{PREFIX}:{{{cid}}}:on:{channel}"


def push_token(digest: str) -> str:
    """Who holds a push token now, so a token that moves to another customer (a shared
    device, a new login) stops receiving the previous customer's pushes."""
    return f"{PREFIX}:push:{{{digest}}}"


def mail(cid: str) -> str:
    """The customer's e-mail threads (omni.threads): `in` and `out`, the last mail from
    and to them, and `x:<digest>` -> the address of each Message-ID indexed for them."""
    return f"{PREFIX}:{{{cid}}}:mail"


def message_id(digest: str) -> str:
    """Which customer an e-mail Message-ID belongs to (by its digest: ids are long), so a
    reply's In-Reply-To or References finds the conversation it answers."""
    return f"{PREFIX}:msgid:{{{digest}}}"


def once(scope: str, digest: str) -> str:
    """A one-time token a webhook carried (Mailgun's `token`), kept while a post with it
    could still be accepted, so a replayed post is refused (omni.nonces)."""
    return f"{PREFIX}:once:{scope}:{{{digest}}}"


def identity(channel: str, external_id: str) -> str:
    return f"{PREFIX}:ident:{{{channel}:{external_id}}}"


def opt_out(channel: str, external_id: str) -> str:
    """A channel identity that asked for no more messages (SMS STOP), until it asks
    again (START). Tagged like its identity: the number's, whichever customer it is."""
    return f"{PREFIX}:optout:{{{channel}:{external_id}}}"


def search_index(kind: str, value: str) -> str:
    return f"{PREFIX}:ix:{kind}:{{{value}}}"


# -- the outbox (omni.outbox) ---------------------------------------------------------
#
#     omni:outbox:{<q>}:stream     stream  queued deliveries: d = delivery id, o = owner
#     omni:outbox:{<q>}:delayed    zset    "<delivery id> <owner>" scored by due time (ms)
#     omni:outbox:{<q>}:dead       stream  dead letters: d, o, k (kind), r (reason), t (ms)
#     omni:outbox:{<q>}:dead:ix    hash    delivery id -> its dead-letter entry id
#     omni:outbox:{<q>}:once:<id>  string  guard: a delivery id is pushed to the stream once
#     omni:{C}:dlv:<id>            hash    a delivery: kind, state, attempts, payload, reason
#     omni:{C}:dlvs                zset    a customer's delivery ids by creation time (ms)
#
# `<q>` is one of `[outbox] queues` queues: `[outbox] queue` itself (the first, and the
# only one on one server), then `<queue>.1`, `<queue>.2`, … (omni.outbox); a delivery
# waits in its owner's, `shard_of(owner, queues)`. The queue's keys share the queue's
# hash tag, so each queue transition is one atomic script in one slot; a delivery's
# record carries its owner's tag (the customer, or the delivery id itself for a delivery
# that belongs to no customer), so it lives, and is erased, with the customer.


def outbox_stream(queue: str) -> str:
    """The stream of queued deliveries, read by the workers' consumer group."""
    return f"{PREFIX}:outbox:{{{queue}}}:stream"


def outbox_delayed(queue: str) -> str:
    """Retries waiting for their backoff: members "<delivery id> <owner>", score due ms."""
    return f"{PREFIX}:outbox:{{{queue}}}:delayed"


def outbox_dead(queue: str) -> str:
    """The dead-letter stream: deliveries that failed for good, until re-queued."""
    return f"{PREFIX}:outbox:{{{queue}}}:dead"


def outbox_dead_index(queue: str) -> str:
    """Delivery id -> dead-letter entry id, to re-queue a dead letter by delivery id."""
    return f"{PREFIX}:outbox:{{{queue}}}:dead:ix"


def outbox_once(queue: str, delivery_id: str) -> str:
    """The guard that makes pushing one delivery id onto the stream happen once."""
    return f"{PREFIX}:outbox:{{{queue}}}:once:{delivery_id}"


def delivery(owner: str, delivery_id: str) -> str:
    """One delivery's record; `owner` is its customer id, or the delivery id itself."""
    return f"{PREFIX}:{{{owner}}}:dlv:{delivery_id}"


def deliveries(cid: str) -> str:
    """A customer's delivery ids, scored by creation time, newest last."""
    return f"{PREFIX}:{{{cid}}}:dlvs"


def events(cid: str) -> str:
    """The customer's recent live events (capped), replayed to an agent's event stream
    that reconnects with Last-Event-ID; the entry ids are the events' ids."""
    return f"{PREFIX}:{{{cid}}}:ev"


def events_all(part: int = 0, parts: int = 1) -> str:
    """One part of every customer's recent live events (capped), for the team inbox's
    stream: `omni:events` when there is one part (one server), else
    `omni:events:{s<part>}`, a customer's events in part `shard_of(id, parts)`."""
    return f"{PREFIX}:events" if parts == 1 else f"{PREFIX}:events:{{s{part}}}"


def handoff_due(part: int = 0, parts: int = 1) -> str:
    """One part of the conversations an agent holds whose reply is due, scored by when
    (ms); the customer's hash says whether it still is (this is only where to look).
    `omni:handoff:due` when there is one part (one server), else
    `omni:handoff:due:{s<part>}`, a customer's in part `shard_of(id, parts)`."""
    return f"{PREFIX}:handoff:due" if parts == 1 else f"{PREFIX}:handoff:due:{{s{part}}}"


def metrics(part: int = 0, parts: int = 1) -> str:
    """One part of the service-wide conversation metrics (hash): first-response times,
    resolutions and handoffs per channel, counted by every process, summed over the
    parts for /metrics. `omni:metrics` with one part (one server), else
    `omni:metrics:{s<part>}`, a customer's counts in part `shard_of(id, parts)`."""
    return f"{PREFIX}:metrics" if parts == 1 else f"{PREFIX}:metrics:{{s{part}}}"


def live_channel() -> str:
    """The pub/sub channel every omni process listens on: each message is the id of a
    customer with a new event in its stream (omni.live reads the event from there)."""
    return f"{PREFIX}:live"


# -- shards (cluster mode) -------------------------------------------------------------
#
# What every process must hear about every customer (the live doorbells, the service-wide
# event stream `events_all`, the handoff timers `handoff_due`, the counters `metrics` and
# `stats`) cannot be one key or one channel in a Redis Cluster without sending all of it
# to one node: it is split into `[redis] shards` parts (`RedisSettings.parts`), each under
# its own hash tag `{s<n>}`, and a customer's always go to the same part (`shard_of`). On
# one server there is one part, as before.


def live_shard(shard: int) -> str:
    """A sharded pub/sub channel (SPUBLISH) of doorbells, in cluster mode: each message
    is the id of a customer with a new event in its stream."""
    return f"{PREFIX}:live:{{s{shard}}}"


# -- link tokens (omni.links) ---------------------------------------------------------


def link_secret() -> str:
    """The key link tokens are signed with, created once by whichever process is first."""
    return f"{PREFIX}:link:secret"


def link_nonce(nonce: str) -> str:
    """Present while a link token is unused; deleting it is using the token."""
    return f"{PREFIX}:link:nonce:{{{nonce}}}"


def link_code(code: str) -> str:
    """A six-digit code standing for a link token, for the phone."""
    return f"{PREFIX}:link:code:{{{code}}}"


def revoked_sessions(digest: str) -> str:
    """Until when the session tokens of one identity are void (omni.revocation)."""
    return f"{PREFIX}:revoked:{digest}"


def rate(kind: str, digest: str, window: int) -> str:
    """Requests (or messages) of one API key or identity in one window (omni.ratelimit)."""
    return f"{PREFIX}:rate:{kind}:{digest}:{window}"


def stats(part: int = 0, parts: int = 1) -> str:
    """One part of the service-wide counters (hash): repeated questions, questions omni
    answered, …; parts as `metrics`'s (`omni:stats`, or `omni:stats:{s<part>}`)."""
    return f"{PREFIX}:stats" if parts == 1 else f"{PREFIX}:stats:{{s{part}}}"


# -- the service report (omni.reports) ------------------------------------------------
#
#     omni:rep:{r<shard>}:d:<day>             hash  counters "<figure>|<channel>|<agent>"
#     omni:rep:{r<shard>}:q:<figure>:<day>    zset  duration samples (ms), bounded
#     omni:rep:{r<shard>}:u:<day>:<channel>   HLL   returning customers ("*": any channel)
#
# A customer's figures go to one shard (crc32 of its id modulo [reports] shards), so no
# key is service-wide, one shard's days share a slot (PFCOUNT over a range is one
# command) and distinct counts add up across shards.


def report_day(shard: int, day: str) -> str:
    return f"{PREFIX}:rep:{{r{shard}}}:d:{day}"


def report_samples(shard: int, figure: str, day: str) -> str:
    return f"{PREFIX}:rep:{{r{shard}}}:q:{figure}:{day}"


def report_returning(shard: int, day: str, channel: str) -> str:
    return f"{PREFIX}:rep:{{r{shard}}}:u:{day}:{channel}"


def survey(cid: str) -> str:
    """The customer's open survey (hash: id, kind, channel, steps, expiry, what it is
    about); gone once answered or expired (omni.surveys)."""
    return f"{PREFIX}:{{{cid}}}:svy"


# -- the team inbox (omni.store.inbox) ------------------------------------------------
#
#     omni:inbox:{ib<n>}:<status>              zset  customer ids scored by waiting since (ms);
#                                                    status: waiting, open or resolved
#     omni:inbox:{ib<n>}:<status>:c:<channel>  zset  the same, on one channel
#     omni:inbox:{ib<n>}:<status>:a:<agent>    zset  the same, held by one agent
#
# Sharded by customer id (`[inbox] shards`): a single global set would pin every
# conversation change of the service to one Cluster node; a read merges the shards.


def inbox(shard: int, status: str, by: str = "") -> str:
    """One shard of the team inbox's index for a status; `by` is "c:<channel>" or
    "a:<agent id>" for the filtered sets, "" for all."""
    return f"{PREFIX}:inbox:{{ib{shard}}}:{status}" + (f":{by}" if by else "")


# -- identity changes (omni.store.audit, omni.merge, omni.unmerge) --------------------


def audit(cid: str) -> str:
    """The customer's audit log of identity changes (stream). It carries the customer's
    hash tag but is not one of the keys erasure deletes: erasure scrubs it to ids."""
    return f"{PREFIX}:audit:{{{cid}}}"


def merge_record(merge_id: str) -> str:
    """One merge (hash): its two customers, the absorbed record's fields at merge time
    and the survivor's fields the merge overwrote, what undoing it needs."""
    return f"{PREFIX}:merge:{{{merge_id}}}"
