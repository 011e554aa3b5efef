"""A page of stored messages (history, a context's recent messages) is decoded by
`stored_messages`, the hot loop that makes conversation ids and timestamps once a page:
its JSON must be byte for byte what the messages as written encode to, for every kind
of message, annotation and stored schema."""

from __future__ import annotations

import random

import msgpack
import msgspec

from omni import codec
from omni.clock import iso
from omni.model import Attachment, Author, Message, MessageStatus, Payload, Product, Voice
from omni.store.entries import annotated, conversation_id, stored_messages

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


Page = tuple[list[list[bytes]], list[bytes | None], list[Message], set[str]]


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
    """A page as read_page.lua answers it and the messages it must read back as."""
    rng = random.Random(seed)
    entries, notes, expected, cases = [], [], [], set()
    ms = 1764000000000 + rng.randrange(10**9)
    for _ in range(rng.randrange(1, 60)):
        ms -= rng.choice([0, 1, 7, 999, 1000, 86_400_000])
        entry = f"{ms}-{rng.randrange(3)}"
        conv = rng.randrange(1, 4)
        written = msgspec.structs.replace(rng.choice(KINDS), id=f"msg_{rng.randrange(10**9)}")
        schema = rng.choice([1, 2, 3, 3, 4, 4, 4, 4])
        writer = {1: _stored_as_map, 2: _stored_by_position_2, 3: _stored_by_position_3,
                  4: codec.encode_message}[schema]  # fmt: skip
        blob = writer(written)
        cases.add(f"schema {schema}")
        mine = _notes(rng) if rng.random() < 0.5 else [None] * 4
        entries.append([entry.encode(), blob, str(conv).encode()])
        notes += mine
        message = msgspec.structs.replace(
            written,
            customer_id=CID,
            conversation_id=conversation_id(CID, conv),
            received_at=iso(ms) or "",
        )
        # A float field given an int reads back as the float it is declared.
        message = msgspec.json.decode(msgspec.json.encode(message), type=Message)
        expected.append(annotated(message, mine) if any(mine) else message)
        named = ["status", "unsent", "reaction", "read"]
        cases |= {name for name, note in zip(named, mine, strict=True) if note} or {"plain"}
    return entries, notes if any(notes) else [], expected, cases


def test_every_kind_of_message_reads_back_as_the_json_it_was_written_as() -> None:
    seen: set[str] = set()
    for seed in range(300):
        entries, notes, expected, cases = _page(seed)
        assert JSON.encode(stored_messages(CID, entries, notes)) == JSON.encode(expected), seed
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
