"""The one place records become bytes for Redis and back: msgpack with a schema byte.

Every stored blob starts with a one-byte schema version so the format can change
without a migration stopping the world; anything that does not decode becomes
`CorruptRecord` here, never a stray exception in a handler.

Messages are stored without what the timeline entry already says (the customer, the
conversation number, the time received), which keeps a stored message small.
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgpack
import msgspec

from omni.errors import CorruptRecord
from omni.model import Message

SCHEMA = 1
_HEADER = bytes([SCHEMA])
T = TypeVar("T")

# Fields the timeline entry and the annotations carry for a message, so its blob need not.
_DERIVED = (
    "customer_id", "conversation_id", "received_at", "status", "deleted_at", "reaction",
    "read_at",
)  # fmt: skip


def _pack(value: Any) -> bytes:
    packed: bytes = msgpack.packb(value, use_bin_type=True)
    return _HEADER + packed


def encode(record: msgspec.Struct) -> bytes:
    return _pack(msgspec.to_builtins(record))


def decode(blob: bytes, kind: type[T]) -> T:
    return msgspec.convert(_unpack(blob), kind)


def encode_value(value: Any) -> bytes:
    return _pack(value)


def decode_value(blob: bytes) -> Any:
    return _unpack(blob)


def encode_message(message: Message) -> bytes:
    data = msgspec.to_builtins(message)
    for name in _DERIVED:
        data.pop(name, None)
    return _pack(data)


def decode_message(
    blob: bytes, *, customer_id: str, conversation_id: str, received_at: str
) -> Message:
    data = _unpack(blob)
    if not isinstance(data, dict):
        raise CorruptRecord("a stored message is not a map")
    data["customer_id"] = customer_id
    data["conversation_id"] = conversation_id
    data["received_at"] = received_at
    try:
        return msgspec.convert(data, Message)
    except msgspec.ValidationError as exc:
        raise CorruptRecord(f"a stored message does not match the schema: {exc}") from None


def _unpack(blob: bytes) -> Any:
    if not blob or blob[0] != SCHEMA:
        raise CorruptRecord(f"unknown record schema {blob[:1]!r}")
    try:
        return msgpack.unpackb(blob[1:], raw=False)
    except (ValueError, msgpack.UnpackException) as exc:
        raise CorruptRecord(f"a stored record does not decode: {exc}") from None
