"""The one place records become bytes for Redis and back: msgpack with a schema byte.

Every stored blob starts with a one-byte schema version so the format can change
without a migration stopping the world; anything that does not decode becomes
`CorruptRecord` here, never a stray exception in a handler.

Records are written with msgpack and read with msgspec's msgpack decoder, which builds
the typed structs straight from the bytes (no dict in between). Messages are stored by
position (schema 4: the direction a bool, the author an array or, a customer's without
a name, its id; the message id without its "msg_") and without what the timeline entry
already says (the customer, the conversation number, the time received), which keeps a
stored message small; messages written with the author always an array and the whole
id (schema 3), by position with the API's spelling of direction and author (schema 2)
and as maps (schema 1) still read.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar, cast

import msgpack
import msgspec

from omni.clock import entry_iso
from omni.errors import CorruptRecord
from omni.model import (
    Attachment,
    Author,
    AuthorKind,
    Direction,
    Message,
    MetaValue,
    Payload,
    Voice,
)

SCHEMA = 1  # a msgpack map of the record's fields
# A message as a msgpack array in `_StoredMessage4`'s field order: 4 since issue 16's
# memory target, 6 bytes a message less than 3 (`_StoredMessage3`: the whole id, the
# author always an array), which still reads and is still written for a message whose
# id omni did not make (without the "msg_" a 4 leaves out). 3 was 23 bytes less than 2
# (`_StoredMessage`: direction and author as the API spells them), which reads too.
# A version of omni before 4 cannot read what 4 writes: upgrade every process of a
# deployment before the first message is stored by the new one.
MESSAGE_SCHEMA = 4
_HEADER = bytes([SCHEMA])
_MESSAGE_HEADER = bytes([MESSAGE_SCHEMA])
_MESSAGE_HEADER_3 = bytes([3])
_MESSAGE_HEADER_2 = bytes([2])
_ID_PREFIX = "msg_"  # every message id omni makes (omni.ids.new_message_id) starts so
# Author kinds by their stored number: only ever appended to.
_AUTHOR_KINDS: tuple[AuthorKind, ...] = ("customer", "bot", "agent", "system")
_AUTHOR_CODES = {kind: code for code, kind in enumerate(_AUTHOR_KINDS)}
T = TypeVar("T")


class _StoredMessage(msgspec.Struct, frozen=True, array_like=True, omit_defaults=True):
    """Schema 2, read only now. The fields of `Message` a stored message holds, by
    position: names are not
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


class _StoredAuthor(msgspec.Struct, frozen=True, array_like=True):
    """An author by position: [kind number, id, name], trailing nulls left out."""

    kind: int
    id: str | None = None
    name: str | None = None


class _StoredMessage3(msgspec.Struct, frozen=True, array_like=True):
    """Schema 3: `_StoredMessage` with `inbound` for the direction and the author an
    array. The same rules: fields only ever added at the end, with a default."""

    id: str
    channel: str
    inbound: bool
    author: _StoredAuthor
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


class _StoredMessage4(msgspec.Struct, frozen=True, array_like=True):
    """Schema 4: `_StoredMessage3` with the id after its "msg_", and a customer's author
    without a name as its id alone (the common case: who wrote an inbound message).
    The same rules: fields only ever added at the end, with a default."""

    id: str
    channel: str
    inbound: bool
    author: str | _StoredAuthor
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


class PageRow(msgspec.Struct, frozen=True, gc=False):
    """One timeline entry of a page as read (omni.store.entries.page_rows): its entry id
    and conversation number, the stored message as stored (None when the entry has
    none), and its four annotations as stored (status, deleted at, reaction, read at)
    when it has any. A Struct untracked by the collector: built 51 times a history page,
    holding only bytes, text and lists of bytes."""

    entry: str
    conv: bytes
    message: bytes | None
    notes: Sequence[bytes | None] | None = None


_MESSAGE_2 = msgspec.msgpack.Decoder(_StoredMessage)
_MESSAGE_3 = msgspec.msgpack.Decoder(_StoredMessage3)
_MESSAGE = msgspec.msgpack.Decoder(_StoredMessage4)
_MESSAGES = msgspec.msgpack.Decoder(list[_StoredMessage4])
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
    author = message.author
    stored_author: Any = [_AUTHOR_CODES[author.kind], author.id, author.name]
    while stored_author[-1] is None:
        stored_author.pop()
    message_id, header = message.id, _MESSAGE_HEADER_3
    if message_id.startswith(_ID_PREFIX):
        message_id, header = message_id[len(_ID_PREFIX) :], _MESSAGE_HEADER
        if len(stored_author) == 2 and author.kind == "customer":
            stored_author = author.id
    fields = [
        message_id,
        message.channel,
        message.direction == "inbound",
        stored_author,
        *msgspec.to_builtins(
            [
                message.channel_message_id,
                message.sent_at,
                message.text,
                message.attachments,
                message.quick_reply,
                message.postback,
                message.quick_replies,
                message.voice,
                message.reply_to,
                message.metadata,
            ]
        ),
    ]
    while len(fields) > _MESSAGE_REQUIRED and fields[-1] in (None, [], {}):
        fields.pop()  # decoding gives a missing trailing field its default
    return _pack(fields, header)


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
    if blob[:1] == _MESSAGE_HEADER_2:
        try:
            two = _MESSAGE_2.decode(memoryview(blob)[1:])
        except msgspec.DecodeError as exc:
            raise CorruptRecord(f"a stored message does not decode: {exc}") from None
        return Message(
            two.id, customer_id, conversation_id, two.channel, two.direction, two.author,
            received_at, two.channel_message_id, two.sent_at, two.text, two.attachments,
            two.quick_reply, two.postback, two.quick_replies, two.voice, two.reply_to,
            two.metadata,
        )  # fmt: skip
    if blob[:1] == _MESSAGE_HEADER_3:
        return _message_3(blob, customer_id, conversation_id, received_at)
    _body(blob, _MESSAGE_HEADER)  # an unknown schema byte is a CorruptRecord
    return message_at(blob, customer_id, conversation_id, received_at)


def _author(stored: _StoredAuthor) -> Author:
    if not 0 <= stored.kind < len(_AUTHOR_KINDS):
        raise CorruptRecord(f"a stored message has an unknown author kind {stored.kind}")
    return Author(_AUTHOR_KINDS[stored.kind], stored.id, stored.name)


def _message_3(blob: bytes, customer_id: str, conversation_id: str, received_at: str) -> Message:
    try:
        three = _MESSAGE_3.decode(memoryview(blob)[1:])
    except msgspec.DecodeError as exc:
        raise CorruptRecord(f"a stored message does not decode: {exc}") from None
    return Message(
        three.id, customer_id, conversation_id, three.channel,
        "inbound" if three.inbound else "outbound", _author(three.author), received_at,
        three.channel_message_id, three.sent_at, three.text, three.attachments,
        three.quick_reply, three.postback, three.quick_replies, three.voice, three.reply_to,
        three.metadata,
    )  # fmt: skip


def message_at(blob: bytes, customer_id: str, conversation_id: str, received_at: str) -> Message:
    """`decode_message` with its arguments by position: a page of messages calls it once
    per entry, and this is the path a history page and a context read spend most on."""
    if blob[:1] != _MESSAGE_HEADER:
        if blob[:1] == _MESSAGE_HEADER_3:  # most messages stored before 4
            return _message_3(blob, customer_id, conversation_id, received_at)
        return decode_message(
            blob, customer_id=customer_id, conversation_id=conversation_id,
            received_at=received_at,
        )  # fmt: skip
    try:
        stored = _MESSAGE.decode(memoryview(blob)[1:])
    except msgspec.DecodeError as exc:
        raise CorruptRecord(f"a stored message does not decode: {exc}") from None
    return _message_4(stored, customer_id, conversation_id, received_at, _author_4(stored.author))


def _author_4(stored: str | _StoredAuthor) -> Author:
    # A customer's author without a name is stored as its id alone.
    return Author("customer", stored, None) if isinstance(stored, str) else _author(stored)


def _message_4(
    stored: _StoredMessage4,
    customer_id: str,
    conversation_id: str,
    received_at: str,
    author: Author,
) -> Message:
    """A schema-4 message as the API shows it, `author` its stored author's
    (`_author_4`)."""
    # Positional: keyword construction of a 17-field struct costs a microsecond more a
    # message (tests/test_codec.py pins Message's field order this relies on).
    return Message(
        _ID_PREFIX + stored.id,
        customer_id,
        conversation_id,
        stored.channel,
        "inbound" if stored.inbound else "outbound",
        author,
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


def _fours(rows: list[PageRow]) -> list[_StoredMessage4]:
    """The schema-4 messages of a page's rows, in order, decoded in one call: their
    bodies (after the schema byte) joined as one msgpack array."""
    bodies = [row.message[1:] for row in rows if row.message and row.message[0] == MESSAGE_SCHEMA]
    count = len(bodies)
    head = bytes([0x90 + count]) if count < 16 else b"\xdc" + count.to_bytes(2, "big")
    try:
        return _MESSAGES.decode(head + b"".join(bodies))
    except msgspec.DecodeError as exc:
        raise CorruptRecord(f"a page of stored messages does not decode: {exc}") from None


def page_messages(
    rows: list[PageRow],
    customer_id: str,
    conversation_of: Callable[[bytes], str],
    annotate: Callable[[Message, Sequence[bytes | None]], Message],
) -> list[Message]:
    """The messages of a page's rows as the API shows them: `conversation_of` gives a
    conversation number's id (asked once a page per number), the entry id the time
    received, and `annotate` applies a row's annotations (called only for a row that
    has any). The hot loop of a history page and a context read: the page's schema-4
    messages are decoded in one call and built by position, any other stored schema
    through `message_at` (tests/test_page_encoding.py holds it to `decode_message`)."""
    fours = iter(_fours(rows))
    conversations: dict[bytes, str] = {}
    # A page's messages mostly share a few authors (the customer's, by one id): one
    # Author each (frozen, so shared safely), not one a message.
    authors: dict[str | _StoredAuthor, Author] = {}
    out = []
    for row in rows:
        conversation = conversations.get(row.conv)
        if conversation is None:
            conversation = conversations[row.conv] = conversation_of(row.conv)
        stamp = entry_iso(row.entry)
        stored = row.message
        if not stored:
            raise CorruptRecord(f"timeline entry {row.entry} holds no message")
        if stored[0] == MESSAGE_SCHEMA:
            four = next(fours)
            author = authors.get(four.author)
            if author is None:
                author = authors[four.author] = _author_4(four.author)
            message = _message_4(four, customer_id, conversation, stamp, author)
        else:
            message = message_at(stored, customer_id, conversation, stamp)
        if row.notes is not None:
            message = annotate(message, row.notes)
        out.append(message)
    return out
