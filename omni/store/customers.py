"""The customers room (`store.customers`): who a channel identity is, and the customer
record's identity and profile fields.

Owns the identity keys (`omni:ident:{<channel>:<external id>}` -> customer id) and,
in the customer hash (`omni:{C}:c`), the identity fields `i:<channel>:<external id>`
and the profile `p`; the search index follows the profile (through `store.search`).
An ingest asks this room once (`resolve`, or its cache of known identities) on its way
down to the timeline (which remembers the answer for the identity's next message).
"""

from __future__ import annotations

from redis.asyncio import Redis

from omni import codec, keys, scripts
from omni.clock import iso, now_ms
from omni.errors import Conflict, Moved, NotFound
from omni.ids import is_customer_id, new_customer_id
from omni.model import Identity, IdentityLink, Profile
from omni.store.reply import absorbed_ids, as_bytes, as_text
from omni.store.versioned import write_part


class Customers:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._write = scripts.load(redis, "write_field", "store")

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
        return as_bytes(existing).decode(), False

    async def find(self, channel: str, external_id: str) -> str | None:
        return as_text(await self.redis.get(keys.identity(channel, external_id)))

    async def ensure(self, channel: str, external_id: str) -> str:
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
        await self.require(cid)
        key = keys.identity(link.channel, link.external_id)
        existing = as_text(await self.redis.set(key, cid, nx=True, get=True))
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
            stored = codec.decode(as_bytes(old), Identity)
            if stored.verified or not link.verified:
                return stored, False
        await self._write(
            keys=[keys.customer(cid)], args=["ident", "", 1, field, codec.encode(identity)]
        )
        return identity, existing is None

    async def rename_identity(self, cid: str, identity: Identity, external_id: str) -> bool:
        """Move `cid`'s identity to another external id on the same channel (a number
        rewritten in its canonical form, omni.migrations): the new key points at `cid`,
        the field is renamed with its verified flag and time, the old key goes.
        `Conflict` when the new id is another customer's; False when the old id is no
        longer `cid`'s (nothing to move)."""
        channel = identity.channel
        old_key = keys.identity(channel, identity.external_id)
        if as_text(await self.redis.get(old_key)) not in (cid, None):
            return False
        new_key = keys.identity(channel, external_id)
        owner = as_text(await self.redis.set(new_key, cid, nx=True, get=True))
        if owner not in (None, cid):
            raise Conflict(
                f"that {channel} identity belongs to another customer; merge them instead",
                field="external_id",
                customer_id=owner,
            )
        moved = Identity(channel, external_id, identity.verified, identity.linked_at)
        await write_part(
            self._write, cid, "ident", None,
            [(f"i:{channel}:{external_id}", codec.encode(moved))],
            [f"i:{channel}:{identity.external_id}"],
        )  # fmt: skip
        # Only while it still names this customer: deleting it is what moves the identity.
        if as_text(await self.redis.get(old_key)) == cid:
            await self.redis.delete(old_key)
        return True

    async def repoint(self, identities: list[Identity], cid: str) -> None:
        """Make each identity resolve to `cid` (a merge's survivor)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for identity in identities:
                pipe.set(keys.identity(identity.channel, identity.external_id), cid)
            await pipe.execute()

    async def states(self, ids: list[str]) -> list[dict[bytes, bytes]]:
        """Each customer's whole hash, in one round trip (empty for one that is gone)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for cid in ids:
                pipe.hgetall(keys.customer(cid))
            states: list[dict[bytes, bytes]] = await pipe.execute()
        return states

    async def stored_profile(self, cid: str) -> Profile | None:
        """The customer's profile as stored, None when it has none."""
        blob = await self.redis.hget(keys.customer(cid), "p")
        return codec.decode(as_bytes(blob), Profile) if blob is not None else None

    async def require(self, cid: str) -> None:
        """NotFound unless `cid` is a customer."""
        if not is_customer_id(cid) or not await self.redis.exists(keys.customer(cid)):
            raise NotFound(f"no customer {cid}")

    async def absorbed(self, cid: str) -> list[str]:
        """The customers merged into `cid` (their records stay, read with its own)."""
        return absorbed_ids(await self.redis.hget(keys.customer(cid), "absorbed"))

    async def last_inbound_ms(self, cid: str, channel: str) -> int | None:
        """When the customer last wrote on `channel` (Instagram's reply window)."""
        value = await self.redis.hget(keys.customer(cid), f"in:{channel}")
        return int(value) if value else None

    async def put_profile(
        self, cid: str, profile: Profile, if_match: str | None
    ) -> tuple[str, Profile | None]:
        rev, old = await write_part(
            self._write, cid, "profile", if_match, [("p", codec.encode(profile))]
        )
        return rev, codec.decode(as_bytes(old), Profile) if old else None

    async def profile(self, cid: str) -> tuple[Profile, str]:
        """The profile and the revision it was read at (an If-Match for writing it back)."""
        if not is_customer_id(cid):
            raise NotFound(f"no customer {cid}")
        blob, rev, moved = await self.redis.hmget(keys.customer(cid), ["p", "rev", "merged_into"])
        if rev is None:
            raise NotFound(f"no customer {cid}")
        if moved is not None:
            raise Moved(cid, as_bytes(moved).decode())
        return (codec.decode(as_bytes(blob), Profile) if blob else Profile()), as_bytes(
            rev
        ).decode()
