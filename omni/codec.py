"""The one place records become bytes for Redis and back: msgpack with a schema byte.

Every stored blob starts with a one-byte schema version so the format can change
without a migration stopping the world; anything that does not decode becomes
`CorruptRecord` here, never a stray exception in a handler.

Records are written with msgpack and read with msgspec's msgpack decoder, which builds
the typed structs straight from the bytes (no dict in between). Messages are stored by
position (schema 2) and without what the timeline entry already says (the customer, the
conversation number, the time received), which keeps a stored message small; messages
written as maps (schema 1) still read.
"""

from __future__ import annotations

from typing import Any, TypeVar, cast

import msgpack
import msgspec

from omni.errors import CorruptRecord
from omni.model import Attachment, Author, Direction, Message, MetaValue, Payload, Voice

SCHEMA = 1  # a msgpack map of the record's fields
MESSAGE_SCHEMA = 2  # a message as a msgpack array, in `_StoredMessage`'s field order
_HEADER = bytes([SCHEMA])
_MESSAGE_HEADER = bytes([MESSAGE_SCHEMA])
T = TypeVar("T")


class _StoredMessage(msgspec.Struct, frozen=True, array_like=True, omit_defaults=True):
    """The fields of `Message` a stored message holds, by position: names are not
    repeated in every message and trailing empty fields are left out. Not here: what
    the timeline entry says and the annotations (status, deletion, reaction, read).
    Fields are only ever added at the end, with a default. Spelled out rather than
    derived from `Message`: this is the stored layout, which must not move when the API
    model does (tests/test_codec.py round-trips every field)."""

    id: str
    channel: str
    direction: Direction
    author: Author
    channel_message_id: str | None = None
    sent_at: str | None = None
    text: str | None = None
    attachments: list[Attachment] = []
    quick_reply: Payload | None = None
    postback: Payload | None = None
    quick_replies: list[Payload] = []
    voice: Voice | None = None
    reply_to: str | None = None
    metadata: dict[str, MetaValue] = {}


_MESSAGE = msgspec.msgpack.Decoder(_StoredMessage)
_MESSAGE_REQUIRED = 4
_DECODERS: dict[Any, msgspec.msgpack.Decoder[Any]] = {}


def _pack(value: Any, header: bytes = _HEADER) -> bytes:
    packed: bytes = msgpack.packb(value, use_bin_type=True)
    return header + packed


def _body(blob: bytes, header: bytes) -> memoryview:
    if blob[:1] != header:
        raise CorruptRecord(f"unknown record schema {blob[:1]!r}")
    return memoryview(blob)[1:]


def encode(record: msgspec.Struct) -> bytes:
    return _pack(msgspec.to_builtins(record))


def decode(blob: bytes, kind: type[T]) -> T:
    decoder = _DECODERS.get(kind)
    if decoder is None:
        decoder = _DECODERS[kind] = msgspec.msgpack.Decoder(kind)
    try:
        return cast(T, decoder.decode(_body(blob, _HEADER)))
    except msgspec.DecodeError as exc:
        raise CorruptRecord(f"a stored record does not decode as {kind}: {exc}") from None


def encode_value(value: Any) -> bytes:
    return _pack(value)


def decode_value(blob: bytes) -> Any:
    return decode(blob, Any)


def encode_message(message: Message) -> bytes:
    stored = _StoredMessage(
        id=message.id,
        channel=message.channel,
        direction=message.direction,
        author=message.author,
        channel_message_id=message.channel_message_id,
        sent_at=message.sent_at,
        text=message.text,
        attachments=message.attachments,
        quick_reply=message.quick_reply,
        postback=message.postback,
        quick_replies=message.quick_replies,
        voice=message.voice,
        reply_to=message.reply_to,
        metadata=message.metadata,
    )
    fields = msgspec.to_builtins(stored)
    while len(fields) > _MESSAGE_REQUIRED and fields[-1] in (None, [], {}):
        fields.pop()  # decoding gives a missing trailing field its default
    return _pack(fields, _MESSAGE_HEADER)


def decode_message(
    blob: bytes, *, customer_id: str, conversation_id: str, received_at: str
) -> Message:
    if blob[:1] == _HEADER:  # a map, written before messages were stored by position
        fields = decode(blob, dict[str, Any])
        fields |= {"customer_id": customer_id, "conversation_id": conversation_id,
                   "received_at": received_at}  # fmt: skip
        try:
            return msgspec.convert(fields, Message)
        except msgspec.ValidationError as exc:
            raise CorruptRecord(f"a stored message does not match the schema: {exc}") from None
    _body(blob, _MESSAGE_HEADER)  # an unknown schema byte is a CorruptRecord
    return message_at(blob, customer_id, conversation_id, received_at)


def message_at(blob: bytes, customer_id: str, conversation_id: str, received_at: str) -> Message:
    """`decode_message` with its arguments by position: a page of messages calls it once
    per entry, and this is the path a history page and a context read spend most on."""
    if blob[:1] != _MESSAGE_HEADER:
        return decode_message(
            blob, customer_id=customer_id, conversation_id=conversation_id,
            received_at=received_at,
        )  # fmt: skip
    try:
        stored = _MESSAGE.decode(memoryview(blob)[1:])
    except msgspec.DecodeError as exc:
        raise CorruptRecord(f"a stored message does not decode: {exc}") from None
    # Positional: keyword construction of a 17-field struct costs a microsecond more a
    # message (tests/test_codec.py pins Message's field order this relies on).
    return Message(
        stored.id,
        customer_id,
        conversation_id,
        stored.channel,
        stored.direction,
        stored.author,
        received_at,
        stored.channel_message_id,
        stored.sent_at,
        stored.text,
        stored.attachments,
        stored.quick_reply,
        stored.postback,
        stored.quick_replies,
        stored.voice,
        stored.reply_to,
        stored.metadata,
    )
