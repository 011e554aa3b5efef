"""How the timeline's entries read back, and where a page of them starts: pure
functions over what the timeline's scripts and reads return (no Redis here)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import msgspec

from omni import codec
from omni.clock import entry_ms, iso
from omni.ids import Cursor
from omni.model import Message, MessageStatus, Voice
from omni.store.reply import as_bytes, as_text

_DEDUPE_FIELD_MAX = 64
# A message-id index field that starts with this byte is a digest (`dedupe_field`); no
# other field does: every other one is text, and 0xff is never a byte of UTF-8.
DIGEST_MARK = b"\xff"
_DIGEST_SIZE = 9
_SEQ_MAX = 0xFFFF  # the largest sequence number a packed entry id holds


def conversation_id(cid: str, number: int) -> str:
    return f"cnv_{cid[4:]}-{number}"


def dedupe_field(channel: str, channel_message_id: str) -> bytes:
    """The message-id index field of a channel's message: DIGEST_MARK and 9 bytes of a
    digest of the channel and its id, whatever their length.

    Ten bytes, with the 8-byte packed entry id it points to (`packed_entry`), is the
    server's smallest hash entry (a 32-byte allocation): 40 bytes a message in the
    index, where the channel's id and the entry id as text took 55 or more. 72 bits: two
    of a customer's 100,000 ids share a field with a chance of 1 in 10^12."""
    text = f"{channel}:{channel_message_id}".encode()
    return DIGEST_MARK + hashlib.blake2b(text, digest_size=_DIGEST_SIZE).digest()


def legacy_dedupe_field(channel: str, channel_message_id: str) -> str:
    """The field messages stored before the digests are indexed under, looked up after
    `dedupe_field`'s: `channel:id`, or `channel#` and a hex digest of a long id."""
    field = f"{channel}:{channel_message_id}"
    if len(field) <= _DEDUPE_FIELD_MAX:
        return field
    return f"{channel}#" + hashlib.blake2b(channel_message_id.encode(), digest_size=16).hexdigest()


def dedupe_fields(channel: str, channel_message_id: str) -> list[bytes | str]:
    """A message's fields in the message-id index, in the order they are looked up:
    its digest's, then the one it has if it was stored before the digests."""
    return [dedupe_field(channel, channel_message_id),
            legacy_dedupe_field(channel, channel_message_id)]  # fmt: skip


def packed_entry(entry: str) -> bytes:
    """An entry id as the message-id index holds it: 6 bytes of milliseconds and 2 of
    sequence, big-endian (as append.lua packs it); as text when the sequence is larger."""
    ms, _, seq = entry.partition("-")
    if int(seq) > _SEQ_MAX:
        return entry.encode()
    return int(ms).to_bytes(6, "big") + int(seq).to_bytes(2, "big")


def index_entry(value: bytes) -> str:
    """The entry id a message-id index field holds: packed (8 bytes) or as text (an
    entry id as text is at least 15 characters: 13 digits of milliseconds, '-', seq)."""
    if len(value) == 8:
        return f"{int.from_bytes(value[:6], 'big')}-{int.from_bytes(value[6:], 'big')}"
    return value.decode()


def found_entry(held: Sequence[Any]) -> str | None:
    """The entry id of the first of a message's index fields (`dedupe_fields`, read in
    that order) that holds one, or None."""
    value = next((as_bytes(field) for field in held if field is not None), None)
    return index_entry(value) if value is not None else None


def echo_field(channel: str, fingerprint: str) -> str:
    # In the message-id index, beside the channel's ids; '#' keeps the channel first, as
    # a hashed id's field does, and "echo:" keeps it apart from those.
    return f"{channel}#echo:{fingerprint}"


def start_before(before: Cursor | None, owner: str) -> str:
    """Where `owner`'s timeline is read from for a page before `before` (exclusive):
    ties on the entry id are ordered by owner, so a smaller owner still holds it."""
    if before is None:
        return "+"
    entry, after_owner = before
    if after_owner is not None and owner < after_owner:
        return entry
    return f"({entry}"


def start_after(after: Cursor, owner: str) -> str:
    """Where `owner`'s timeline is read from for messages after `after` (exclusive), in
    the same (entry id, owner) order as `start_before`."""
    entry, after_owner = after
    if after_owner is not None and owner > after_owner:
        return entry
    return f"({entry}"


def entry_order(entry_id: str, owner: str) -> tuple[int, int, str]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq), owner


def stored_message(cid: str, entry: str, blob: bytes, conv: int) -> Message:
    """A stored message as read back by its entry id."""
    return codec.decode_message(
        blob,
        customer_id=cid,
        conversation_id=conversation_id(cid, conv),
        received_at=iso(entry_ms(entry)) or "",
    )


def note_fields(entries: Sequence[Any]) -> list[bytes]:
    """The annotations hash's fields of entries as XRANGE answers them (raw: [entry id,
    fields]), four an entry in `page_rows`' order: status, deleted, reaction, read. As
    bytes: redis-py passes bytes on as they are, a field of text it encodes first."""
    fields: list[bytes] = []
    for entry in entries:
        entry_id = entry[0]
        fields += (b"s:" + entry_id, b"d:" + entry_id, b"r:" + entry_id, b"rd:" + entry_id)
    return fields


def page_rows(entries: Sequence[Any], notes: Sequence[Any] | None) -> list[codec.PageRow]:
    """A page's rows from timeline entries as XRANGE answers them raw ([entry id, [field,
    value, ...]], as append.lua writes them: 'm' the stored message, 'v' the
    conversation number) and, when read, their annotations (HMGET of `note_fields`)."""
    row = codec.PageRow
    rows = []
    for entry_id, fields in entries:
        if len(fields) == 4 and fields[0] == b"m" and fields[2] == b"v":
            rows.append(row(entry_id.decode(), fields[3], fields[1]))
        else:  # any other layout: by name
            found = dict(zip(fields[::2], fields[1::2], strict=True))
            rows.append(row(entry_id.decode(), found.get(b"v", b"0"), found.get(b"m")))
    if not notes:
        return rows
    for at, plain in enumerate(rows):
        mine = notes[4 * at : 4 * at + 4]
        if mine.count(None) != 4:
            rows[at] = row(plain.entry, plain.conv, plain.message, mine)
    return rows


def page_messages(cid: str, rows: list[codec.PageRow]) -> list[Message]:
    """Messages from a page's rows (`page_rows`), shown as customer `cid`'s."""
    return codec.page_messages(rows, cid, lambda number: conversation_id(cid, int(number)),
                               annotated)  # fmt: skip


def annotated(message: Message, notes: Sequence[Any]) -> Message:
    """The message with what happened to it since (its four annotations). A message the
    customer unsent keeps its place on the timeline and loses its content in every read:
    they took it back, and an agent or a bot must not act on it."""
    status, deleted, reaction, read = notes
    message = msgspec.structs.replace(
        message,
        status=codec.decode(as_bytes(status), MessageStatus) if status else None,
        deleted_at=iso(as_text(deleted)),
        reaction=as_text(reaction),
        read_at=iso(as_text(read)),
    )
    if not deleted:
        return message
    return msgspec.structs.replace(
        message,
        text=None,
        attachments=[],
        quick_reply=None,
        postback=None,
        voice=Voice(call_id=message.voice.call_id) if message.voice else None,
    )
