"""Data migrations, run by `omni migrate` (never on their own at start-up: a scan of
every customer is the operator's to schedule, and it is safe to run while omni serves).

Each migration is idempotent: a second run finds nothing left to change and writes
nothing, so running `omni migrate` after every upgrade is always right.

    phones   every stored phone number in its one form (omni.phones). Numbers stored by
             omni before libphonenumber read them kept a national "(0)" after the country
             code (`+4402079460958`) and never matched the caller's `+442079460958`.
             Profile phones are re-read (in the customer's locale's region, else
             `[identity] default_region`) and re-indexed, their verified flag kept; a
             number that is not valid is left as it was (it matched nothing before
             either). Channel identities on voice, SMS and WhatsApp move to their
             canonical id; when that id already belongs to another customer the old
             one is left in place and counted as a conflict, for an agent to merge.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec
import structlog

from omni import codec, keys
from omni.errors import Conflict, Moved, NotFound, PreconditionFailed
from omni.merge import text_fields
from omni.model import Identity, Profile
from omni.phones import PHONE_CHANNELS, canonical_external_id, normalize_phone
from omni.store import Store
from omni.store.reply import as_text

log = structlog.get_logger("omni.migrations")
_SCAN_COUNT = 500
_HEAD, _TAIL = keys.customer("|").split("|")  # "omni:{", "}:c"


@dataclass
class PhoneMigration:
    """What one run changed."""

    customers: int = 0  # customer records read
    profiles: int = 0  # profile phones rewritten
    identities: int = 0  # channel identities moved to their canonical id
    invalid: int = 0  # profile phones that are not a valid number, left as they were
    conflicts: int = 0  # identities whose canonical id belongs to another customer


async def migrate_phones(store: Store, region: str | None = None) -> PhoneMigration:
    """Re-normalise every stored phone number (see the module doc)."""
    redis = store.redis
    report = PhoneMigration()
    async for key in redis.scan_iter(match=keys.customer("*"), count=_SCAN_COUNT):
        name = as_text(key) or ""
        cid = name.removeprefix(_HEAD).removesuffix(_TAIL)
        fields = text_fields(await redis.hgetall(name))
        if "rev" not in fields or "merged_into" in fields:
            continue  # a merged-away record answers for nothing; its survivor does
        report.customers += 1
        if "p" in fields:
            await _profile(store, cid, codec.decode(fields["p"], Profile), region, report)
        for field in fields:
            if field.startswith("i:"):
                await _identity(store, cid, codec.decode(fields[field], Identity), region, report)
    log.info("phone numbers migrated", **report.__dict__)
    return report


async def _profile(
    store: Store, cid: str, profile: Profile, region: str | None, report: PhoneMigration
) -> None:
    if not profile.phone:
        return
    phone = normalize_phone(profile.phone, region, locale=profile.locale)
    if phone is None:
        report.invalid += 1
        return
    if phone == profile.phone:
        return
    new = msgspec.structs.replace(profile, phone=phone)
    try:
        # Written over the profile as read: an edit since wins and is not undone.
        _, rev = await store.customers.profile(cid)
        _, before = await store.customers.put_profile(cid, new, rev)
    except (PreconditionFailed, NotFound, Moved):
        return
    await store.search.index_profile(cid, before, new)
    report.profiles += 1


async def _identity(
    store: Store, cid: str, identity: Identity, region: str | None, report: PhoneMigration
) -> None:
    channel, old_id = identity.channel, identity.external_id
    if channel not in PHONE_CHANNELS:
        return
    new_id = canonical_external_id(channel, old_id, region)
    if new_id == old_id:
        return
    try:
        moved = await store.customers.rename_identity(cid, identity, new_id)
    except Conflict:
        report.conflicts += 1
        log.warning("phone identity left unmigrated: its number is another customer's",
                    channel=channel, customer_id=cid)  # fmt: skip
        return
    except (NotFound, Moved):
        return
    if not moved:
        return
    report.identities += 1
