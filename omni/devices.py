"""A customer's registered app installs (where push notifications go), under the
customer in Redis, and the index from a push token to the one install that holds it.

Stored as `DeviceRecord`s in the customer's devices hash (`omni.keys.devices`), encoded by
`omni.codec`; the push token itself is never a key, only its digest (`token_digest`).
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Literal

import msgspec
import structlog
from msgspec import Meta, Struct

from omni import codec, keys
from omni.clock import iso, now_ms
from omni.errors import CorruptRecord
from omni.model import Locale
from omni.store import Store

DEVICES_MAX = 10  # per customer; registering one more forgets the longest-registered
log = structlog.get_logger("omni.devices")

Printable = Annotated[str, Meta(min_length=1, max_length=128, pattern=r"^[\x21-\x7e]+$")]
Short = Annotated[str, Meta(min_length=1, max_length=32, pattern=r"^[\x20-\x7e]+$")]


class Device(Struct, frozen=True, omit_defaults=True):
    """A registered app install (Sunshine Conversations' Device): where pushes go."""

    device_id: Printable
    platform: Literal["ios", "android"]
    push_provider: Literal["apns", "fcm"]
    push_token: Annotated[str, Meta(min_length=1, max_length=4096, pattern=r"^[A-Za-z0-9_:.-]+$")]
    app_id: Annotated[str, Meta(max_length=255, pattern=r"^[A-Za-z0-9_.-]+$")] | None = None
    app_version: Short | None = None
    os_version: Short | None = None
    locale: Locale | None = None
    apns_env: Literal["production", "sandbox"] | None = None


class DeviceRecord(msgspec.Struct, frozen=True, omit_defaults=True):
    """A registered app install as stored under the customer."""

    device: Device
    external_id: str
    registered_at: str
    status: Literal["active", "inactive"] = "active"
    reason: str | None = None  # why it is inactive


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _bytes(value: object) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def token_digest(device: Device) -> str:
    """What names a push token in Redis (never the token itself)."""
    token = f"{device.push_provider}:{device.push_token}".encode()
    return hashlib.sha256(token).hexdigest()[:32]


async def device_records(store: Store, cid: str) -> dict[str, DeviceRecord]:
    """A customer's registered app installs by device id (unreadable ones left out)."""
    records = {}
    for name, blob in (await store.redis.hgetall(keys.devices(cid))).items():
        try:
            records[_text(name)] = codec.decode(_bytes(blob), DeviceRecord)
        except (CorruptRecord, msgspec.ValidationError):
            log.warning("unreadable device record skipped", customer_id=cid)
    return records


async def register(store: Store, cid: str, device: Device, external_id: str) -> None:
    """Store the device under the customer (replacing its earlier registration). A token
    another customer held moves here: a shared phone must not get the last user's pushes."""
    record = DeviceRecord(device, external_id, iso(now_ms()) or "")
    holder = f"{cid} {device.device_id}"
    before = await store.redis.set(keys.push_token(token_digest(device)), holder, get=True)
    if before is not None and _text(before) != holder:
        owner, _, device_id = _text(before).partition(" ")
        held = (await device_records(store, owner)).get(device_id)
        if held is not None and held.device.push_token == device.push_token:
            await store.redis.hdel(keys.devices(owner), device_id)
    await store.redis.hset(keys.devices(cid), device.device_id, codec.encode(record))
    records = await device_records(store, cid)
    if len(records) > DEVICES_MAX:
        oldest = sorted(records, key=lambda name: records[name].registered_at)
        await store.redis.hdel(keys.devices(cid), *oldest[: len(records) - DEVICES_MAX])


async def deactivate(store: Store, cid: str, device: Device, reason: str) -> None:
    """Stop pushing to a device, unless it registered a new token meanwhile."""
    record = (await device_records(store, cid)).get(device.device_id)
    if record is None or record.device.push_token != device.push_token:
        return
    inactive = msgspec.structs.replace(record, status="inactive", reason=reason)
    await store.redis.hset(keys.devices(cid), device.device_id, codec.encode(inactive))
