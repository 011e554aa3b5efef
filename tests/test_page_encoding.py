"""A page of stored messages (history, a context's recent messages) is read with plain
commands (`Timeline.page`: XREVRANGE, and the annotations' HMGET) and built by
`page_messages`, the hot loop that decodes a page's schema-4 messages in one call and
makes conversation ids once a page: its JSON must be byte for byte what the messages as
written encode to, for every kind of message, annotation and stored schema, and for a
channel's page (its index, then the timeline's entries) as for the whole timeline."""

from __future__ import annotations

import random

import msgpack
import msgspec
import pytest
from redis.asyncio import Redis

from omni import codec, keys
from omni.clock import iso
from omni.errors import CorruptRecord
from omni.model import Attachment, Author, Message, MessageStatus, Payload, Product, Voice
from omni.store import Store
from omni.store.entries import annotated, conversation_id, page_messages

CID = "cus_01JD6W3Q4M8X2K7N5P9R1T3V5X"
JSON = msgspec.json.Encoder()

KINDS = [
    Message(id="msg_a", customer_id="", conversation_id="", channel="web",
            direction="inbound", author=Author(kind="customer"), received_at="",
            text="hello " * 20),
    Message(id="msg_b", customer_id="", conversation_id="", channel="instagram",
            direction="inbound", author=Author(kind="customer", id="1784", name="Ada Ö"),
            received_at="", channel_message_id="mid." + "x" * 140,
            sent_at="2026-11-23T09:59:59.000Z", text="Où est ma commande 4417 ?",
            attachments=[Attachment(type="image", url="https://cdn.example/x.jpg",
                                    mime="image/jpeg", size=1024, name="x.jpg"),
                         Attachment(type="location", latitude=48, longitude=2.35),
                         Attachment(type="product", product=Product(
                             id="sku1", name="Shoe", url="https://shop.example/s",
                             price=4999, currency="EUR"))],
            quick_reply=Payload(payload="YES", title="Yes"), reply_to="msg_a",
            metadata={"standby": False, "n": 3, "ratio": 0.5, "none": None, "s": "é"}),
    Message(id="msg_c", customer_id="", conversation_id="", channel="voice",
            direction="inbound", author=Author(kind="customer", id="+33612345678"),
            received_at="", voice=Voice(call_id="CA1", transcript="hello", confidence=1,
                                         digits="12#")),
    Message(id="msg_d", customer_id="", conversation_id="", channel="instagram",
            direction="outbound", author=Author(kind="bot", id="shop-bot"), received_at="",
            text="Pick one", quick_replies=[Payload(payload="A"), Payload(payload="B", title="b")]),
    Message(id="msg_e", customer_id="", conversation_id="", channel="web",
            direction="inbound", author=Author(kind="customer"), received_at="",
            postback=Payload(payload="GET_STARTED")),
    Message(id="msg_f", customer_id="", conversation_id="", channel="system",
            direction="outbound", author=Author(kind="system"), received_at="",
            metadata={"event": "merge", "from": "cus_x"}),
    Message(id="msg_g", customer_id="", conversation_id="", channel="sms",
            direction="outbound", author=Author(kind="agent", id="ag_1", name="Bo"),
            received_at="", text="", attachments=[], metadata={}),
]  # fmt: skip

STATUS = MessageStatus(state="failed", at="2026-11-23T10:00:01.000Z", reason="blocked",
                       attempts=3, channel_message_id="m.9")  # fmt: skip


def _notes(rng: random.Random) -> list[bytes | None]:
    """The four annotations of one entry: status, deleted, reaction, read."""
    return [
        codec.encode(STATUS) if rng.random() < 0.3 else None,
        str(1764000000000 + rng.randrange(10**6)).encode() if rng.random() < 0.3 else None,
        "❤️".encode() if rng.random() < 0.3 else None,
        str(1764000000000 + rng.randrange(10**6)).encode() if rng.random() < 0.3 else None,
    ]


def _stored_as_map(message: Message) -> bytes:
    """A message as schema 1 wrote it: a map of its fields, derived ones left out."""
    fields = msgspec.to_builtins(message)
    for name in ("customer_id", "conversation_id", "received_at"):
        del fields[name]
    return bytes([codec.SCHEMA]) + msgpack.packb(fields)


# A page as written (entry id, blob, conversation number, four annotations), oldest
# first, the messages it must read back as, newest first, and the cases it holds.
Page = tuple[list[tuple[str, bytes, int, list[bytes | None]]], list[Message], set[str]]


def _stored_by_position_2(message: Message) -> bytes:
    """A message as schema 2 wrote it: by position, direction and author as the API
    spells them."""
    fields = msgspec.to_builtins(message)
    order = ["id", "channel", "direction", "author", "channel_message_id", "sent_at", "text",
             "attachments", "quick_reply", "postback", "quick_replies", "voice", "reply_to",
             "metadata"]  # fmt: skip
    empty: dict[str, object] = {"attachments": [], "quick_replies": [], "metadata": {}}
    values = [fields.get(name, empty.get(name)) for name in order]
    while len(values) > 4 and values[-1] in (None, [], {}):
        values.pop()
    return b"\x02" + msgpack.packb(values)


def _stored_by_position_3(message: Message) -> bytes:
    """A message as schema 3 wrote it: by position, the whole id, the author an array
    [kind number, id, name] with trailing nulls left out."""
    fields = msgspec.to_builtins(message)
    author = message.author
    kinds = ["customer", "bot", "agent", "system"]
    stored_author: list[object] = [kinds.index(author.kind), author.id, author.name]
    while stored_author[-1] is None:
        stored_author.pop()
    order = ["channel_message_id", "sent_at", "text", "attachments", "quick_reply",
             "postback", "quick_replies", "voice", "reply_to", "metadata"]  # fmt: skip
    empty: dict[str, object] = {"attachments": [], "quick_replies": [], "metadata": {}}
    values = [message.id, message.channel, message.direction == "inbound", stored_author,
              *[fields.get(name, empty.get(name)) for name in order]]  # fmt: skip
    while len(values) > 4 and values[-1] in (None, [], {}):
        values.pop()
    return b"\x03" + msgpack.packb(values)


def _page(seed: int) -> Page:
    """A page of entries and the messages they must read back as."""
    rng = random.Random(seed)
    written, expected, cases = [], [], set()
    ms, seq = 1764000000000 + rng.randrange(10**9), 0
    for _ in range(rng.randrange(1, 60)):
        # Stream entry ids only grow: the same millisecond again takes the next sequence.
        step = rng.choice([0, 1, 7, 999, 1000, 86_400_000])
        seq = seq + 1 if step == 0 and written else 0
        ms += step
        entry = f"{ms}-{seq}"
        conv = rng.randrange(1, 4)
        message = msgspec.structs.replace(rng.choice(KINDS), id=f"msg_{rng.randrange(10**9)}")
        schema = rng.choice([1, 2, 3, 3, 4, 4, 4, 4])
        writer = {1: _stored_as_map, 2: _stored_by_position_2, 3: _stored_by_position_3,
                  4: codec.encode_message}[schema]  # fmt: skip
        cases.add(f"schema {schema}")
        mine = _notes(rng) if rng.random() < 0.5 else [None] * 4
        written.append((entry, writer(message), conv, mine))
        message = msgspec.structs.replace(
            message,
            customer_id=CID,
            conversation_id=conversation_id(CID, conv),
            received_at=iso(ms) or "",
        )
        # A float field given an int reads back as the float it is declared.
        message = msgspec.json.decode(msgspec.json.encode(message), type=Message)
        expected.append(annotated(message, mine) if any(mine) else message)
        named = ["status", "unsent", "reaction", "read"]
        cases |= {name for name, note in zip(named, mine, strict=True) if note} or {"plain"}
    expected.reverse()  # a page is newest first
    return written, expected, cases


async def _store(redis: Redis, written: list[tuple[str, bytes, int, list[bytes | None]]]) -> None:
    """The entries as append.lua and the annotation writers leave them (every message
    indexed under the channel "any" too, for a channel's page)."""
    await redis.delete(keys.timeline(CID), keys.notes(CID), keys.channel_timeline(CID, "any"))
    await redis.hset(keys.customer(CID), "rev", 1)  # type: ignore[misc]
    for entry, blob, conv, notes in written:
        await redis.xadd(keys.timeline(CID), {"m": blob, "v": conv}, id=entry)
        await redis.xadd(keys.channel_timeline(CID, "any"), {"v": conv}, id=entry)
        for name, note in zip(["s", "d", "r", "rd"], notes, strict=True):
            if note is not None:
                await redis.hset(keys.notes(CID), f"{name}:{entry}", note)  # type: ignore[misc]


async def test_every_kind_of_message_reads_back_as_the_json_it_was_written_as(
    redis: Redis,
) -> None:
    timeline = Store(redis).timeline
    seen: set[str] = set()
    for seed in range(300):
        written, expected, cases = _page(seed)
        await _store(redis, written)
        for channel in (None, "any"):
            _, rows = await timeline.page(CID, start="+", count=60, channel=channel, state=False)
            assert JSON.encode(page_messages(CID, rows)) == JSON.encode(expected), seed
        seen |= cases
    # The generated pages did hold every case the loop treats apart.
    assert seen == {
        "unsent",
        "status",
        "reaction",
        "read",
        "plain",
        "schema 1",
        "schema 2",
        "schema 3",
        "schema 4",
    }


async def test_a_page_with_a_damaged_message_is_a_corrupt_record_and_a_lost_entry_is_left_out(
    redis: Redis,
) -> None:
    timeline = Store(redis).timeline
    written, expected, _ = _page(7)
    await _store(redis, written)
    # A channel's index entry whose timeline entry is gone (an erasure between the two
    # reads) is left out of the channel's page.
    gone = written[-1][0]
    await redis.xdel(keys.timeline(CID), gone)
    _, rows = await timeline.page(CID, start="+", count=60, channel="any", state=False)
    assert JSON.encode(page_messages(CID, rows)) == JSON.encode(expected[1:])
    await redis.xadd(keys.timeline(CID), {"m": b"\x04\x93garbage", "v": 1}, id="*")
    _, rows = await timeline.page(CID, start="+", count=60, channel=None, state=False)
    with pytest.raises(CorruptRecord):
        page_messages(CID, rows)
