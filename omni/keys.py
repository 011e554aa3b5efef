"""Every Redis key omni uses, in one place.

All keys of one customer carry the customer's hash tag `{cus_…}`, so that in a Redis
Cluster a customer's writes stay in one slot and one Lua script can touch them all.
Keys that index across customers (identities, search) are tagged by what they index.

    omni:{C}:c          hash    customer state: rev, profile, conversation, facts (f:*), cart
    omni:{C}:tl         stream  the timeline: one entry per message, field m = msgpack
    omni:{C}:tl:<ch>    stream  per-channel index: same entry ids as tl, no payload
    omni:{C}:mid        hash    "<channel>:<channel message id>" -> timeline entry id
    omni:ident:{<ch>:<ext>}     string  channel identity -> customer id
    omni:ix:<kind>:{<value>}    set     search index: email, phone, name token -> ids
"""

from __future__ import annotations

PREFIX = "omni"


def customer(cid: str) -> str:
    return f"{PREFIX}:{{{cid}}}:c"


def timeline(cid: str) -> str:
    return f"{PREFIX}:{{{cid}}}:tl"


def channel_timeline(cid: str, channel: str) -> str:
    return f"{PREFIX}:{{{cid}}}:tl:{channel}"


def message_ids(cid: str) -> str:
    return f"{PREFIX}:{{{cid}}}:mid"


def identity(channel: str, external_id: str) -> str:
    return f"{PREFIX}:ident:{{{channel}:{external_id}}}"


def search_index(kind: str, value: str) -> str:
    return f"{PREFIX}:ix:{kind}:{{{value}}}"
