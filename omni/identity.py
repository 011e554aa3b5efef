"""Who is this, on this channel: the rule omni follows before it joins two records.

A channel identity joins a customer only on verified evidence — a verified login on web
or mobile (the identify HMAC), a caller whose number is a phone the customer verified,
an identity an agent or admin links, or a link token. An e-mail or phone number typed in
a chat proves nothing (anyone can type anyone's address): it is kept as an unverified
fact of the customer who typed it, and it never joins or merges records on its own.
"""

from __future__ import annotations

import re

from redis.asyncio import Redis

from omni import codec, keys
from omni.errors import Conflict
from omni.model import FactInput, FactSource, FactsPatch, IdentityLink, Message, Profile
from omni.search import normalize_phone
from omni.store import Store, _b

PHONE_CHANNELS = frozenset({"voice", "sms", "whatsapp"})  # external ids that are E.164
TYPED_CONFIDENCE = 0.5  # an address typed in a chat: plausible, never proof
_EMAIL = re.compile(r"[\w.+-]{1,64}@[\w-]{1,63}(?:\.[\w-]{1,63}){1,8}")
_PHONE = re.compile(r"(?:\+|00)[1-9][\d\s().-]{6,18}\d")


async def verified_phone_owner(redis: Redis, phone: str) -> str | None:
    """The one customer who verified `phone`, or None (nobody, or more than one)."""
    members = await redis.smembers(keys.search_index("phone", phone))
    owners = []
    for member in members:
        cid = _b(member).decode()
        blob = await redis.hget(keys.customer(cid), "p")
        if blob is not None:
            profile = codec.decode(_b(blob), Profile)
            if profile.phone == phone and profile.phone_verified:
                owners.append(cid)
    return owners[0] if len(owners) == 1 else None


async def claim_verified_phone(store: Store, channel: str, external_id: str) -> str | None:
    """The customer of a phone channel's identity: the one it belongs to, else — before
    its first message creates a new customer — the one customer who verified that
    number, linked from now on. None: nobody yet (or not a phone channel)."""
    if channel not in PHONE_CHANNELS:
        return None  # not asked: the identity's own record answers (omni.store.resolve)
    cid = await store.find(channel, external_id)
    if cid is not None:
        return cid
    phone = channel_phone(channel, external_id)
    owner = await verified_phone_owner(store.redis, phone) if phone else None
    if owner is None:
        return None
    # Caller ID can be spoofed, so the link does not claim the identity is verified.
    link = IdentityLink(channel=channel, external_id=external_id, verified=False)
    try:
        await store.link_identity(owner, link)
    except Conflict as exc:  # the number's first message raced this and created its own
        found = exc.extra.get("customer_id")
        return str(found) if found else None
    return owner


def channel_phone(channel: str, external_id: str) -> str | None:
    """The E.164 number of a phone channel's identity. WhatsApp names its users by
    `wa_id`, the number's digits without the "+"."""
    if channel == "whatsapp" and external_id.isascii() and external_id.isdigit():
        external_id = "+" + external_id
    return normalize_phone(external_id)


def typed_contacts(text: str) -> dict[str, str]:
    """E-mail and phone numbers written in a message."""
    found: dict[str, str] = {}
    # Only the words with an "@" are tried: a regex search over a long word without one
    # would backtrack quadratically.
    for word in text.split():
        if "@" in word and (email := _EMAIL.search(word)):
            found["email"] = email.group(0).casefold()
            break
    for match in _PHONE.finditer(text):
        if phone := normalize_phone(match.group(0)):
            found["phone"] = phone
            break
    return found


async def note_typed_contacts(store: Store, message: Message) -> list[str]:
    """Keep what the customer typed as unverified facts, unless already known."""
    contacts = typed_contacts(message.text or "")
    if not contacts:
        return []
    known = await store.redis.hmget(keys.customer(message.customer_id),
                                    [f"f:{name}" for name in contacts])  # fmt: skip
    source = FactSource(channel=message.channel, message_id=message.id)
    facts: dict[str, FactInput | None] = {
        name: FactInput(value=value, confidence=TYPED_CONFIDENCE, source=source)
        for (name, value), existing in zip(contacts.items(), known, strict=True)
        if existing is None
    }
    if facts:
        await store.patch_facts(message.customer_id, FactsPatch(facts=facts), None)
    return list(facts)
