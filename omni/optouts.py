"""Opt-outs: a channel identity that asked for no more messages (an SMS "STOP") gets none
until it asks again ("START"). Channels record the keywords and check before sending.

The record belongs to the identity (the phone number), not to a customer record: a merge
or a link leaves it where it is, and every customer the number is part of is refused
alike. It is personal data: a customer's export lists the records of their identities,
and erasing the customer deletes them (omni.erasure). After that omni no longer knows of
the opt-out, and the provider's own block (Twilio's error 21610) records it again on the
next send.
"""

from __future__ import annotations

from dataclasses import dataclass

from omni import keys
from omni.clock import iso, now_ms
from omni.store import Store
from omni.store.reply import as_text


@dataclass(frozen=True)
class OptOut:
    at: str  # when it was asked for, ISO 8601
    keyword: str  # what the customer sent ("STOP"), or the provider's error that told us


async def opt_out(store: Store, channel: str, external_id: str, keyword: str) -> OptOut:
    """Record the opt-out; the first one stands (a repeat does not move its time)."""
    ms = now_ms()
    await store.redis.set(keys.opt_out(channel, external_id), f"{ms} {keyword}", nx=True)
    return await opted_out(store, channel, external_id) or OptOut(iso(ms) or "", keyword)


async def opt_in(store: Store, channel: str, external_id: str) -> bool:
    """Clear the opt-out; False when there was none."""
    return bool(await store.redis.delete(keys.opt_out(channel, external_id)))


async def opted_out(store: Store, channel: str, external_id: str) -> OptOut | None:
    held = as_text(await store.redis.get(keys.opt_out(channel, external_id)))
    if not held:
        return None
    ms, _, keyword = held.partition(" ")
    return OptOut(at=(iso(int(ms)) or "") if ms.isdigit() else "", keyword=keyword)
