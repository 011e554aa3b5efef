"""Who is this, on this channel: the rule omni follows before it joins two records.

A channel identity joins a customer only on verified evidence — a verified login on web
or mobile (the identify HMAC), a caller whose number is a phone the customer verified,
an e-mail whose sender the provider authenticated (SPF or DKIM pass aligned with the
From domain) from an address the customer verified, an identity an agent or admin
links, or a link token. An e-mail or phone number typed in
a chat proves nothing (anyone can type anyone's address): it is kept as an unverified
fact of the customer who typed it, and it never joins or merges records on its own.
"""

from __future__ import annotations

import re

from omni.errors import Conflict, NotFound
from omni.model import FactInput, FactSource, IdentityLink, Message
from omni.phones import PHONE_CHANNELS, find_phones, identity_phone
from omni.store import Store

__all__ = [
    "PHONE_CHANNELS",
    "claim_thread",
    "claim_verified_email",
    "claim_verified_phone",
    "note_typed_contacts",
    "typed_contacts",
]

TYPED_CONFIDENCE = 0.5  # an address typed in a chat: plausible, never proof
_EMAIL = re.compile(r"[\w.+-]{1,64}@[\w-]{1,63}(?:\.[\w-]{1,63}){1,8}")


async def claim_verified_phone(store: Store, channel: str, external_id: str) -> str | None:
    """The customer of a phone channel's identity: the one it belongs to, else — before
    its first message creates a new customer — the one customer who verified that
    number, linked from now on. None: nobody yet (or not a phone channel)."""
    if channel not in PHONE_CHANNELS:
        return None  # not asked: the identity's own record answers (store.customers.resolve)
    cid = await store.customers.find(channel, external_id)
    if cid is not None:
        return cid
    phone = identity_phone(channel, external_id)
    owner = await store.search.verified_phone_owner(phone) if phone else None
    if owner is None:
        return None
    # Caller ID can be spoofed, so the link does not claim the identity is verified.
    evidence = f"the {channel} number is the phone {owner} verified"
    return await _link_unverified(store, owner, channel, external_id, evidence)


async def claim_verified_email(store: Store, address: str) -> str | None:
    """The customer of an e-mail address the provider authenticated: the one it belongs
    to, else — before its first mail creates a new customer — the one customer who
    verified that address, linked from now on. The caller has checked that the sending
    domain passed SPF or DKIM; a mail that did not proves nothing and must not come here.
    The link is not marked verified: SPF and DKIM vouch for the domain, not the person."""
    cid = await store.customers.find("email", address)
    if cid is not None:
        return cid
    owner = await store.search.verified_email_owner(address)
    if owner is None:
        return None
    evidence = f"the sending domain passed SPF/DKIM for the address {owner} verified"
    return await _link_unverified(store, owner, "email", address, evidence)


async def claim_thread(store: Store, cid: str, address: str) -> str | None:
    """A reply from `address` to a mail omni sent to `address` for customer `cid` (its
    In-Reply-To or References name that mail): the address joins `cid` when it belongs
    to nobody yet. Receiving at an address and answering the mail is evidence of
    holding it; a reply from another address (a forward, a CC) joins nothing."""
    found = await store.customers.find("email", address)
    if found is not None:
        return found
    evidence = f"a reply from the address to the mail omni sent it for {cid}"
    return await _link_unverified(store, cid, "email", address, evidence)


async def _link_unverified(
    store: Store, owner: str, channel: str, external_id: str, evidence: str
) -> str | None:
    link = IdentityLink(channel=channel, external_id=external_id, verified=False)
    try:
        _, created = await store.customers.link_identity(owner, link)
    except Conflict as exc:  # the identity's first message raced this and created its own
        found = exc.extra.get("customer_id")
        return str(found) if found else None
    except NotFound:  # the customer the evidence names was erased since
        return None
    if created:
        await store.audit.record(
            [owner], "join", evidence=evidence, identity=(channel, external_id)
        )
    return owner


def typed_contacts(text: str, region: str | None = None) -> dict[str, str]:
    """E-mail and phone numbers written in a message; a number without its country
    code is read in `region` (omni.phones)."""
    found: dict[str, str] = {}
    # Only the words with an "@" are tried: a regex search over a long word without one
    # would backtrack quadratically.
    for word in text.split():
        if "@" in word and (email := _EMAIL.search(word)):
            found["email"] = email.group(0).casefold()
            break
    for phone in find_phones(text, region):
        found["phone"] = phone
        break
    return found


async def note_typed_contacts(
    store: Store, message: Message, contacts: dict[str, str]
) -> list[str]:
    """Keep what the customer typed (`typed_contacts` of its text) as unverified facts,
    unless already known."""
    if not contacts:
        return []
    source = FactSource(channel=message.channel, message_id=message.id)
    facts = {
        name: FactInput(value=value, confidence=TYPED_CONFIDENCE, source=source)
        for name, value in contacts.items()
    }
    return await store.parts.add_absent_facts(message.customer_id, facts)
