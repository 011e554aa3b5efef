"""The search room (`store.search`): finding customers by name, email, phone (E.164) or
channel identity, and the index that makes it possible (`omni:ix:*`, `keys.search_index`).

Each searchable value has a set of customer ids. The sets live in
their own slots, so updating them is not atomic with the profile write: a search
re-reads every candidate's profile and drops those that no longer match, so a stale
index entry costs a lookup, never a wrong answer.
"""

from __future__ import annotations

import re

from redis.asyncio import Redis

from omni import codec, keys
from omni.clock import iso
from omni.errors import ValidationFailed
from omni.ids import is_customer_id
from omni.model import CustomerSummary, Identity, Profile
from omni.phones import canonical_external_id, normalize_phone, plus_restored
from omni.store.customers import Customers
from omni.store.reply import as_bytes

RESULTS_MAX = 20
_PREFIX_MIN, _PREFIX_MAX = 2, 12
_IDENTITY = re.compile(r"^([a-z][a-z0-9_]*):(.+)$")


def name_tokens(name: str) -> set[str]:
    """Every prefix (2 to 12 characters) of every word, so "ali" finds "Alice Martin"."""
    tokens: set[str] = set()
    for word in re.findall(r"\w+", name.casefold()):
        for end in range(_PREFIX_MIN, min(len(word), _PREFIX_MAX) + 1):
            tokens.add(word[:end])
    return tokens


def _entries(profile: Profile | None) -> set[str]:
    if profile is None:
        return set()
    out = {keys.search_index("name", t) for t in name_tokens(profile.name or "")}
    if profile.email:
        out.add(keys.search_index("email", profile.email.casefold()))
    if profile.phone:
        out.add(keys.search_index("phone", profile.phone))
    return out


class Search:
    """Reads and writes the search index; asks the customers room who a hit is."""

    def __init__(self, redis: Redis, customers: Customers) -> None:
        self.redis = redis
        self.customers = customers

    async def index_profile(self, cid: str, old: Profile | None, new: Profile) -> None:
        """Move `cid` from the entries of its `old` profile to those of the `new` one."""
        before, after = _entries(old), _entries(new)
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in before - after:
                pipe.srem(key, cid)
            for key in after - before:
                pipe.sadd(key, cid)
            await pipe.execute()

    async def find(
        self, query: str, channels: tuple[str, ...], region: str | None = None
    ) -> list[CustomerSummary]:
        """The customers a query (an id, "<channel>:<external id>", an e-mail, a phone
        number or words of a name) finds, most recently seen first. `region`: where a
        phone number typed without its country code is read (omni.phones)."""
        q = query.strip()
        if not q:
            raise ValidationFailed("q must not be empty", field="q")
        if len(q) > 256:
            raise ValidationFailed("q is longer than 256 characters", field="q")
        candidates: set[str] = set()
        match = _IDENTITY.match(q)
        phone = normalize_phone(plus_restored(query).strip(), region) if not match else None
        if is_customer_id(q):
            candidates.add(q)
        elif match and match.group(1) in channels:
            channel = match.group(1)
            external_id = canonical_external_id(channel, match.group(2), region)
            q = f"{channel}:{external_id}"
            found = await self.customers.find(channel, external_id)
            if found is not None:
                candidates.add(found)
        elif "@" in q:
            candidates = await self._members([keys.search_index("email", q.casefold())])
        elif phone:
            candidates = await self._members([keys.search_index("phone", phone)])
        else:
            words = re.findall(r"\w+", q.casefold())
            if not words:
                raise ValidationFailed("q has no searchable words", field="q")
            index = [keys.search_index("name", w[:_PREFIX_MAX]) for w in words]
            candidates = await self._members(index, intersect=True)
        return await self._summaries(sorted(candidates)[: RESULTS_MAX * 2], q, phone)

    async def verified_phone_owner(self, phone: str) -> str | None:
        """The one customer who verified `phone`, or None (nobody, or more than one)."""
        members = await self.redis.smembers(keys.search_index("phone", phone))
        owners = []
        for member in members:
            cid = as_bytes(member).decode()
            profile = await self.customers.stored_profile(cid)
            if profile is not None and profile.phone == phone and profile.phone_verified:
                owners.append(cid)
        return owners[0] if len(owners) == 1 else None

    async def verified_email_owner(self, address: str) -> str | None:
        """The one customer whose verified profile e-mail is `address`, or None."""
        address = address.casefold()
        members = await self.redis.smembers(keys.search_index("email", address))
        owners = []
        for member in members:
            cid = as_bytes(member).decode()
            profile = await self.customers.stored_profile(cid)
            email = (profile.email or "").casefold() if profile is not None else ""
            if profile is not None and profile.email_verified and email == address:
                owners.append(cid)
        return owners[0] if len(owners) == 1 else None

    async def _members(self, index_keys: list[str], *, intersect: bool = False) -> set[str]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in index_keys:
                pipe.smembers(key)
            results = await pipe.execute()
        sets = [{m.decode() for m in r} for r in results]
        if not sets:
            return set()
        return set.intersection(*sets) if intersect else set.union(*sets)

    async def _summaries(
        self, ids: list[str], query: str, phone: str | None
    ) -> list[CustomerSummary]:
        states = await self.customers.states(ids)
        found = []
        for cid, state in zip(ids, states, strict=True):
            if not state:
                continue
            fields = {k.decode(): v for k, v in state.items()}
            profile = codec.decode(fields["p"], Profile) if "p" in fields else Profile()
            identities = [
                codec.decode(v, Identity) for k, v in sorted(fields.items()) if k.startswith("i:")
            ]
            if not _still_matches(cid, query, phone, profile, identities):
                continue
            found.append(
                CustomerSummary(
                    id=cid,
                    profile=profile,
                    identities=identities,
                    last_seen=iso(fields.get("last_seen")),
                    last_channel=fields["last_channel"].decode()
                    if "last_channel" in fields
                    else None,
                )
            )
        found.sort(key=lambda c: c.last_seen or "", reverse=True)
        return found[:RESULTS_MAX]


def _still_matches(
    cid: str, query: str, phone: str | None, profile: Profile, identities: list[Identity]
) -> bool:
    q = query.strip()
    if q == cid or any(f"{i.channel}:{i.external_id}" == q for i in identities):
        return True
    if "@" in q:
        return (profile.email or "").casefold() == q.casefold()
    if phone:
        return profile.phone == phone
    have = name_tokens(profile.name or "")
    return all(w[:_PREFIX_MAX] in have for w in re.findall(r"\w+", q.casefold()))
