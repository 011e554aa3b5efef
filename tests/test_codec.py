"""Stored records: messages by position (schema 4), records as maps (schema 1), both
plain msgpack behind a schema byte; messages written by position as schemas 3 and 2
and as maps before still read, and bytes that do not decode are a CorruptRecord, never
a stray exception."""

from __future__ import annotations

import msgpack
import msgspec
import pytest
from redis.asyncio import Redis

from omni import codec, keys
from omni.errors import CorruptRecord
from omni.model import EMPTY_CART, Attachment, Author, Cart, InboundMessage, Message, Payload, Voice
from omni.store import Store

FULL = Message(
    id="msg_01",
    customer_id="cus_01",
    conversation_id="cnv_01-1",
    channel="instagram",
    direction="inbound",
    author=Author(kind="customer", id="1784", name="Ada"),
    received_at="2026-11-23T10:00:00.000Z",
    channel_message_id="mid.1",
    sent_at="2026-11-23T09:59:59.000Z",
    text="Où est ma commande 4417 ?",
    attachments=[Attachment(type="image", url="https://cdn.example/x.jpg")],
    quick_reply=Payload(payload="YES", title="Yes"),
    voice=Voice(call_id="CA1", transcript="hello", confidence=0.9),
    reply_to="msg_00",
    metadata={"standby": False, "n": 3, "ratio": 0.5, "none": None},
)
DERIVED = {
    "customer_id": FULL.customer_id,
    "conversation_id": FULL.conversation_id,
    "received_at": FULL.received_at,
}


def test_messages_are_rebuilt_by_position_in_messages_field_order() -> None:
    # omni.codec builds a Message positionally: a field moved here must move there too.
    assert Message.__struct_fields__[:17] == (
        "id", "customer_id", "conversation_id", "channel", "direction", "author",
        "received_at", "channel_message_id", "sent_at", "text", "attachments",
        "quick_reply", "postback", "quick_replies", "voice", "reply_to", "metadata",
    )  # fmt: skip


def test_a_message_reads_back_as_it_was_written() -> None:
    blob = codec.encode_message(FULL)
    assert blob[0] == codec.MESSAGE_SCHEMA
    assert codec.decode_message(blob, **DERIVED) == FULL


def test_a_stored_message_is_plain_msgpack_without_field_names_or_derived_fields() -> None:
    plain = msgspec.structs.replace(FULL, attachments=[], quick_reply=None, voice=None,
                                    reply_to=None, metadata={}, sent_at=None)  # fmt: skip
    stored = msgpack.unpackb(codec.encode_message(plain)[1:])
    assert stored == [
        "01", "instagram", True, [0, "1784", "Ada"], "mid.1", None,
        "Où est ma commande 4417 ?",
    ]  # fmt: skip
    assert codec.decode_message(codec.encode_message(plain), **DERIVED) == plain
    bot = msgspec.structs.replace(plain, direction="outbound", author=Author(kind="bot"))
    assert msgpack.unpackb(codec.encode_message(bot)[1:])[2:4] == [False, [1]]
    assert codec.decode_message(codec.encode_message(bot), **DERIVED) == bot
    # Who writes most messages, a customer known by their id alone, is that id.
    customer = msgspec.structs.replace(plain, author=Author(kind="customer", id="1784"))
    assert msgpack.unpackb(codec.encode_message(customer)[1:])[3] == "1784"
    assert codec.decode_message(codec.encode_message(customer), **DERIVED) == customer


def test_a_message_whose_id_omni_did_not_make_is_stored_whole_as_schema_3() -> None:
    imported = msgspec.structs.replace(FULL, id="legacy-7", author=Author(kind="customer", id="1"))
    blob = codec.encode_message(imported)
    assert blob[0] == 3
    assert msgpack.unpackb(blob[1:])[:4] == ["legacy-7", "instagram", True, [0, "1"]]
    assert codec.decode_message(blob, **DERIVED) == imported


def test_a_message_stored_as_schema_3_still_reads() -> None:
    # Schema 3 (before issue 16's memory target): the whole id, the author an array.
    three = [
        "msg_01", "instagram", True, [0, "1784", "Ada"], "mid.1", "2026-11-23T09:59:59.000Z",
        "Où est ma commande 4417 ?", [{"type": "image", "url": "https://cdn.example/x.jpg"}],
        {"payload": "YES", "title": "Yes"}, None, [],
        {"call_id": "CA1", "transcript": "hello", "confidence": 0.9}, "msg_00",
        {"standby": False, "n": 3, "ratio": 0.5, "none": None},
    ]  # fmt: skip
    blob = b"\x03" + msgpack.packb(three)
    assert codec.decode_message(blob, **DERIVED) == FULL
    assert codec.message_at(blob, *DERIVED.values()) == FULL
    alone = [*three[:3], [0, "1784"], *three[4:]]
    assert codec.decode_message(b"\x03" + msgpack.packb(alone), **DERIVED).author == Author(
        kind="customer", id="1784"
    )


def test_a_message_stored_by_position_with_the_apis_spelling_still_reads() -> None:
    # Schema 2 (before issue 16): direction as text, the author as a map.
    two = [
        "msg_01", "instagram", "inbound", {"kind": "customer", "id": "1784", "name": "Ada"},
        "mid.1", "2026-11-23T09:59:59.000Z", "Où est ma commande 4417 ?",
        [{"type": "image", "url": "https://cdn.example/x.jpg"}],
        {"payload": "YES", "title": "Yes"}, None, [],
        {"call_id": "CA1", "transcript": "hello", "confidence": 0.9}, "msg_00",
        {"standby": False, "n": 3, "ratio": 0.5, "none": None},
    ]  # fmt: skip
    assert codec.decode_message(b"\x02" + msgpack.packb(two), **DERIVED) == FULL


def test_a_message_stored_as_a_map_before_still_reads() -> None:
    old = msgspec.to_builtins(FULL)
    for name in DERIVED:
        del old[name]
    blob = bytes([codec.SCHEMA]) + msgpack.packb(old)
    assert codec.decode_message(blob, **DERIVED) == FULL


@pytest.mark.parametrize(
    "blob",
    [
        b"",
        b"\x09\x90",
        b"\x02\xc1",
        b"\x02\x92\x01\x02",
        b"\x01\x92\x01\x02",
        b"\x03\xc1",
        b"\x03\x94\xa1m\xa1w\xc3\x91\x09",
        b"\x03\x94\xa1m\xa1w\xa1x\x91\x00",
        b"\x03\x94\xa1m\xa1w\xc3\xa1x",
        b"\x04\xc1",
        b"\x04\x94\xa1m\xa1w\xc3\x91\x09",
        b"\x04\x94\xa1m\xa1w\xc3\x05",
    ],
    ids=[
        "empty",
        "unknown schema",
        "not msgpack",
        "wrong shape",
        "array for a map",
        "3: not msgpack",
        "3: unknown author kind",
        "3: direction not a bool",
        "3: the author its id alone",
        "4: not msgpack",
        "4: unknown author kind",
        "4: author neither an id nor an array",
    ],
)
def test_bytes_that_do_not_decode_are_a_corrupt_record(blob: bytes) -> None:
    with pytest.raises(CorruptRecord):
        codec.decode_message(blob, **DERIVED)


def test_records_round_trip_and_damage_is_a_corrupt_record() -> None:
    cart = msgspec.structs.replace(EMPTY_CART, currency="EUR")
    assert codec.decode(codec.encode(cart), Cart) == cart
    assert codec.decode_value(codec.encode_value({"a": [1, b"x"]})) == {"a": [1, b"x"]}
    with pytest.raises(CorruptRecord):
        codec.decode(codec.encode(cart)[:-1] + b"\xc1", Cart)
    with pytest.raises(CorruptRecord):
        codec.decode(b"\x02" + codec.encode(cart)[1:], Cart)


async def test_history_reads_messages_of_both_schemas_in_one_timeline(redis: Redis) -> None:
    store = Store(redis)
    first = await store.timeline.ingest(
        InboundMessage(channel="web", external_id="v", channel_message_id="1", text="old")
    )
    cid = first.message.customer_id
    # Rewrite the first message as a map, as a version before schema 2 stored it.
    old = msgspec.to_builtins(first.message)
    for name in DERIVED:
        del old[name]
    await redis.delete(keys.timeline(cid))
    blob = bytes([codec.SCHEMA]) + msgpack.packb(old)
    await redis.xadd(keys.timeline(cid), {"m": blob, "v": 1}, id=first.entry)
    await store.timeline.ingest(
        InboundMessage(channel="web", external_id="v", channel_message_id="2", text="new")
    )
    page = await store.timeline.history(cid, limit=10, before=None, channel=None)
    assert [m.text for m in page.messages] == ["new", "old"]
    assert page.messages[1] == first.message
