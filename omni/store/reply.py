"""Redis replies as Python values: the clients are built without decode_responses, and
redis-py types its replies loosely, so every room reads them through these."""

from __future__ import annotations

from omni.errors import StoreError


def as_text(value: object) -> str | None:
    """A Redis reply as text (None stays None)."""
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def as_bytes(value: object) -> bytes:
    """A Redis reply that must be bytes."""
    if not isinstance(value, bytes):
        raise StoreError(f"expected bytes from Redis, got {type(value).__name__}")
    return value


def absorbed_ids(value: object) -> list[str]:
    """The customer ids of a customer hash's `absorbed` field (comma separated)."""
    return [c for c in (as_text(value) or "").split(",") if c]
