"""Finding customers by name, email, phone (E.164) or channel identity.

Each searchable value has a set of customer ids (`keys.search_index`). The sets live in
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

RESULTS_MAX = 20
_PREFIX_MIN, _PREFIX_MAX = 2, 12
_PHONE_JUNK = re.compile(r"[ ().\-]")  # what the ProfilePatch schema allows
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_IDENTITY = re.compile(r"^([a-z][a-z0-9_]*):(.+)$")


def normalize_phone(raw: str) -> str | None:
    """E.164 from what people type ("+33 6 12-34-56-78"), or None when it is not one."""
    phone = _PHONE_JUNK.sub("", raw)
    if phone.startswith("00"):
        phone = "+" + phone[2:]
    return phone if _E164.match(phone) else None


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


async def index_profile(redis: Redis, cid: str, old: Profile | None, new: Profile) -> None:
    before, after = _entries(old), _entries(new)
    async with redis.pipeline(transaction=False) as pipe:
        for key in before - after:
            pipe.srem(key, cid)
        for key in after - before:
            pipe.sadd(key, cid)
        await pipe.execute()


async def search(redis: Redis, query: str, channels: tuple[str, ...]) -> list[CustomerSummary]:
    q = query.strip()
    if not q:
        raise ValidationFailed("q must not be empty", field="q")
    if len(q) > 256:
        raise ValidationFailed("q is longer than 256 characters", field="q")
    candidates: set[str] = set()
    match = _IDENTITY.match(q)
    phone = normalize_phone(q)
    if is_customer_id(q):
        candidates.add(q)
    elif match and match.group(1) in channels:
        found = await redis.get(keys.identity(match.group(1), match.group(2)))
        if isinstance(found, bytes):
            candidates.add(found.decode())
    elif "@" in q:
        candidates = await _members(redis, [keys.search_index("email", q.casefold())])
    elif phone:
        candidates = await _members(redis, [keys.search_index("phone", phone)])
    else:
        words = re.findall(r"\w+", q.casefold())
        if not words:
            raise ValidationFailed("q has no searchable words", field="q")
        candidates = await _members(
            redis, [keys.search_index("name", w[:_PREFIX_MAX]) for w in words], intersect=True
        )
    return await _summaries(redis, sorted(candidates)[: RESULTS_MAX * 2], q, phone)


async def _members(redis: Redis, index_keys: list[str], *, intersect: bool = False) -> set[str]:
    async with redis.pipeline(transaction=False) as pipe:
        for key in index_keys:
            pipe.smembers(key)
        results = await pipe.execute()
    sets = [{m.decode() for m in r} for r in results]
    if not sets:
        return set()
    return set.intersection(*sets) if intersect else set.union(*sets)


async def _summaries(
    redis: Redis, ids: list[str], query: str, phone: str | None
) -> list[CustomerSummary]:
    async with redis.pipeline(transaction=False) as pipe:
        for cid in ids:
            pipe.hgetall(keys.customer(cid))
        states = await pipe.execute()
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
                last_channel=fields["last_channel"].decode() if "last_channel" in fields else None,
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
