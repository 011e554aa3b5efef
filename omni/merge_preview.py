"""A merge's preview (`"dry_run": true`): what merging two customers would make, and
the evidence that they are one person, with nothing written.

The outcome is the merge's own plan (`omni.merge.absorb_plan`, the code the merge
writes with) applied to the two records as they are now: the same rule, not a copy.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from omni import codec
from omni.errors import NotFound
from omni.merge import Merge, absorb_plan, pair, text_fields
from omni.model import Cart, Fact, Identity, Profile
from omni.phones import PHONE_CHANNELS, identity_phone, normalize_phone
from omni.store import Store
from omni.store.entries import conversation_id
from omni.store.reply import absorbed_ids


class Side(msgspec.Struct, frozen=True):
    """One record as it is now."""

    id: str
    profile: Profile
    identities: list[Identity]
    facts: dict[str, Fact]
    cart: Cart | None
    conversation_id: str | None
    conversation_status: str | None
    absorbed: list[str]  # customers merged into it before


class FactOutcome(msgspec.Struct, frozen=True):
    name: str
    survivor: Any  # its value on each side (None: absent)
    source: Any
    conflict: bool  # both hold it, with different values
    wins: Literal["survivor", "source"]  # whose value the merged record keeps
    value: Any


class Outcome(msgspec.Struct, frozen=True):
    """The merged record: the survivor's id with these parts."""

    id: str
    profile: Profile
    identities: list[Identity]
    facts: dict[str, Fact]
    cart: Cart | None
    cart_from: str | None
    conversation_id: str | None  # the survivor's conversation goes on
    absorbed: list[str]


class MergePreview(msgspec.Struct, frozen=True):
    dry_run: bool
    survivor: Side
    source: Side
    result: Outcome
    facts: list[FactOutcome]
    evidence: list[str]  # what the two records have in common


def _side(cid: str, fields: dict[str, bytes]) -> Side:
    number = fields.get("cv_n")
    return Side(
        id=cid,
        profile=codec.decode(fields["p"], Profile) if "p" in fields else Profile(),
        identities=[codec.decode(v, Identity) for k, v in sorted(fields.items()) if k[:2] == "i:"],
        facts={k[2:]: codec.decode(v, Fact) for k, v in sorted(fields.items()) if k[:2] == "f:"},
        cart=codec.decode(fields["cart"], Cart) if "cart" in fields else None,
        conversation_id=conversation_id(cid, int(number)) if number else None,
        conversation_status=fields["cv_status"].decode() if "cv_status" in fields else None,
        absorbed=absorbed_ids(fields.get("absorbed")),
    )


def _contacts(side: Side) -> dict[str, set[str]]:
    """E-mail addresses and phone numbers a record holds, verified or not."""
    found: dict[str, set[str]] = {"e-mail": set(), "phone": set(), "name": set()}
    if side.profile.email:
        found["e-mail"].add(side.profile.email.casefold())
    if side.profile.phone:
        phone = normalize_phone(side.profile.phone, locale=side.profile.locale)
        found["phone"].add(phone or side.profile.phone)
    if side.profile.name:
        found["name"].add(side.profile.name.casefold())
    for name, fact in side.facts.items():
        if name in ("email", "e-mail") and isinstance(fact.value, str):
            found["e-mail"].add(fact.value.casefold())
        if name == "phone" and isinstance(fact.value, str):
            found["phone"].add(normalize_phone(fact.value) or fact.value)
    for identity in side.identities:
        if identity.channel in PHONE_CHANNELS:
            phone = identity_phone(identity.channel, identity.external_id)
            found["phone"].add(phone or identity.external_id)
    return found


def _evidence(a: Side, b: Side) -> list[str]:
    mine, theirs = _contacts(a), _contacts(b)
    said = []
    for kind in ("e-mail", "phone", "name"):
        for value in sorted(mine[kind] & theirs[kind]):
            said.append(f"same {kind}: {value}")
    verified = [
        f"{kind} verified on {side.id}"
        for side in (a, b)
        for kind, flag in (("e-mail", side.profile.email_verified),
                           ("phone", side.profile.phone_verified))
        if flag
    ]  # fmt: skip
    if said and verified:
        said += verified
    return said or ["nothing in common: the two records share no e-mail, phone or name"]


async def preview(store: Store, survivor: str, source: str) -> MergePreview:
    """What `merge_customers(store, survivor, source)` would do now; writes nothing."""
    survivor, source = await pair(store, survivor, source)
    mine_raw, theirs_raw = await store.customers.states([survivor, source])
    mine, theirs = text_fields(mine_raw), text_fields(theirs_raw)
    if not mine:
        raise NotFound(f"no customer {survivor}")
    if not theirs:
        raise NotFound(f"no customer {source}", field="source")
    sets, result, profile = absorb_plan(Merge(store, survivor, source), mine, theirs)
    merged = {**mine, **dict(sets)}
    if profile is not None:
        merged["p"] = codec.encode(profile)
    a, b, out = _side(survivor, mine), _side(source, theirs), _side(survivor, merged)
    facts = []
    for name in sorted({*a.facts, *b.facts}):
        mine_fact, their_fact = a.facts.get(name), b.facts.get(name)
        wins: Literal["survivor", "source"] = "source" if name in result.facts_taken else "survivor"
        facts.append(
            FactOutcome(
                name=name,
                survivor=mine_fact.value if mine_fact else None,
                source=their_fact.value if their_fact else None,
                conflict=bool(mine_fact and their_fact and mine_fact.value != their_fact.value),
                wins=wins,
                value=out.facts[name].value,
            )
        )
    return MergePreview(
        dry_run=True,
        survivor=a,
        source=b,
        result=Outcome(
            id=survivor,
            profile=out.profile,
            identities=out.identities,
            facts=out.facts,
            cart=out.cart,
            cart_from=result.cart_from,
            conversation_id=a.conversation_id,
            absorbed=out.absorbed,
        ),
        facts=facts,
        evidence=_evidence(a, b),
    )
