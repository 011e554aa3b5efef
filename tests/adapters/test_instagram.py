"""adapters/instagram: the handshake, X-Hub-Signature-256, every payload under
tests/payloads/instagram through `parse`, the Send API against a local server that speaks
Graph, and the messaging window."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import msgspec
import pytest
from aiohttp import ClientSession, web
from multidict import CIMultiDict

from adapters.instagram.protocol import (
    REAUTH_REASONS,
    InstagramAdapter,
    reason_code,
    safe_cut,
    split_text,
    window_state,
)
from adapters.instagram.sender import GraphSender
from omni.channel import ChannelEvent, InboundRequest, Marked, Received, Skipped
from omni.errors import BadRequest, ConfigError, Forbidden, Unauthenticated
from omni.model import (
    METADATA_MAX,
    TEXT_MAX,
    Attachment,
    Author,
    InboundMessage,
    Message,
    Payload,
)

PAYLOADS = Path(__file__).parent.parent / "payloads" / "instagram"
SECRET = "3f2b6d0e9c1a4b7f8e5d2c1b0a9f8e7d"
VERIFY_TOKEN = "omni-verify-7d3e"
PAGE_TOKEN = "EAA-synthetic-page-token"
ACCOUNT = "17841400000000001"
CUSTOMER = "1180000000000001"
MID_1 = (
    "aWdfbWVzc2FnZV9pdGVtOjE6SUdNZXNzYWdlSUQ6MTc4NDE0MDAwMDAwMDAwMDE6"
    "MzQwMjgyMzY2ODQxNzEwMzAwMDAwMDAwMDAwMDE"
)
FAMILY = "\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466"

# What each webhook payload becomes: a Received's direction, a Marked's kind, or "skipped".
EXPECTED: dict[str, list[str]] = {
    "instagram_text.json": ["inbound"],
    "instagram_text_emoji_nonlatin.json": ["inbound"],
    "instagram_text_emoji_nonlatin_utf8raw.json": ["inbound"],
    "instagram_text_long.json": ["inbound"],
    "instagram_text_over_limit.json": ["inbound"],
    "instagram_text_tampered.json": ["inbound"],  # parse is pure; verify rejects it
    "instagram_image.json": ["inbound"],
    "instagram_story_reply.json": ["inbound"],
    "instagram_story_mention.json": ["inbound"],
    "instagram_inline_reply_quick_reply.json": ["inbound"],
    "instagram_postback.json": ["inbound"],
    "instagram_ig_reel_share.json": ["inbound"],
    "instagram_standby.json": ["inbound"],
    "instagram_unknown_fields.json": ["inbound"],
    "instagram_unsupported.json": ["inbound"],
    "instagram_redelivery_duplicate.json": ["inbound"],
    "instagram_replay_identical.json": ["inbound"],
    "instagram_echo.json": ["outbound"],
    "instagram_reaction.json": ["reaction"],
    "instagram_unreact.json": ["unreaction"],
    "instagram_read.json": ["read"],
    "instagram_referral.json": ["inbound"],
    "instagram_unsend.json": ["deleted"],
    "instagram_dashboard_test_changes.json": ["skipped"],
    "instagram_batch_multi_entry.json": [
        "inbound", "read", "reaction", "outbound", "inbound", "inbound", "inbound"
    ],
}  # fmt: skip
SEND_FIXTURES = {p.name for p in PAYLOADS.glob("instagram_send_*.json")}
SIGNED = sorted(
    p.name.replace(".sig.txt", ".json")
    for p in PAYLOADS.glob("*.sig.txt")
    if "app_secret:" in p.read_text()
)


def sidecar(name: str) -> dict[str, str]:
    """A `.sig.txt` as {key: first word of its value}."""
    fields = {}
    for line in (PAYLOADS / name).read_text().splitlines():
        key, sep, value = line.partition(": ")
        if sep and value.split():
            fields[key] = value.split()[0]
    return fields


def raw(name: str) -> bytes:
    return (PAYLOADS / name).read_bytes()


def fixture_json(name: str) -> Any:
    return json.loads(raw(name))


def signature(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def request(body: bytes, sig: str | None = None) -> InboundRequest:
    headers = {"Content-Type": "application/json"}
    if sig is not None:
        headers["X-Hub-Signature-256"] = sig
    return InboundRequest(
        method="POST",
        url="https://omni.example/channels/instagram/webhook",
        headers=headers,
        body=body,
    )


def make(**overrides: Any) -> InstagramAdapter:
    config: dict[str, Any] = {
        "app_secret": SECRET,
        "verify_token": VERIFY_TOKEN,
        "page_token": PAGE_TOKEN,
        "account_id": ACCOUNT,
        "graph_url": "http://127.0.0.1:9/v22.0",
    }
    config.update(overrides)
    return InstagramAdapter(**config)


def parse(name_or_body: str | bytes) -> list[ChannelEvent]:
    body = raw(name_or_body) if isinstance(name_or_body, str) else name_or_body
    return make().parse(request(body))


def parse_obj(obj: Any) -> list[ChannelEvent]:
    return parse(json.dumps(obj).encode())


def received(name: str) -> InboundMessage:
    (event,) = parse(name)
    assert isinstance(event, Received)
    return event.message


def marked(name: str) -> Marked:
    (event,) = parse(name)
    assert isinstance(event, Marked)
    return event


def kind(event: ChannelEvent) -> str:
    if isinstance(event, Received):
        return event.direction
    return event.kind if isinstance(event, Marked) else "skipped"


def assert_storable(event: ChannelEvent) -> None:
    """A Received passes the model's own validation and encodes; a Marked is bounded."""
    if isinstance(event, Received):
        message = event.message
        assert msgspec.convert(msgspec.to_builtins(message), InboundMessage) == message
        msgspec.msgpack.encode(message)
        assert message.channel == "instagram"
        assert len(message.metadata) <= METADATA_MAX
    elif isinstance(event, Marked):
        assert event.channel == "instagram" and 0 < len(event.external_id) <= 256
        msgspec.msgpack.encode(dict(event.detail))
    else:
        assert event.reason.startswith("instagram: ")


def event(sender: str, **kind: Any) -> dict[str, Any]:
    return {
        "sender": {"id": sender},
        "recipient": {"id": ACCOUNT},
        "timestamp": 1767225600000,
        **kind,
    }


def webhook(*events: Any, key: str = "messaging") -> dict[str, Any]:
    return {
        "object": "instagram",
        "entry": [{"id": ACCOUNT, "time": 1767225600000, key: list(events)}],
    }


# -- the payload folder ---------------------------------------------------------------------


def test_every_payload_file_has_a_test() -> None:
    names = {p.name for p in PAYLOADS.iterdir()} - {"README.md"}
    covered = set(EXPECTED) | SEND_FIXTURES
    assert {n for n in names if n.endswith(".json")} == covered
    assert {n for n in names if n.endswith(".sig.txt")} == {
        *(n.replace(".json", ".sig.txt") for n in EXPECTED),
        "instagram_text_wrong_secret.sig.txt",
    }
    assert "instagram_verify_handshake.txt" in names
    assert len(SEND_FIXTURES) == 9


@pytest.mark.parametrize("name", SIGNED)
def test_sidecar_signature_is_the_hmac_of_the_raw_file(name: str) -> None:
    fields = sidecar(name.replace(".json", ".sig.txt"))
    body = raw(name)
    assert int(fields["body_bytes"]) == len(body)
    assert fields["X-Hub-Signature-256"] == signature(body, fields["app_secret"])


# -- handshake --------------------------------------------------------------------------------


def handshake_cases() -> Iterator[tuple[dict[str, str], str | None]]:
    """(query, expected challenge or None for 403) from instagram_verify_handshake.txt."""
    lines = (PAYLOADS / "instagram_verify_handshake.txt").read_text().splitlines()
    query: dict[str, str] = {}
    for line in lines:
        if line.startswith("GET "):
            query = dict(parse_qsl(urlsplit(line.split()[1]).query))
        elif line.startswith("expect"):
            yield query, line.rsplit("body exactly: ", 1)[1] if ": 200" in line else None


def test_handshake_follows_the_fixture() -> None:
    cases = list(handshake_cases())
    assert [expected for _, expected in cases] == ["1158201444", None, None]
    adapter = make()
    for query, expected in cases:
        if expected is None:
            with pytest.raises(Forbidden):
                adapter.handshake(query)
        else:
            assert adapter.handshake(query) == expected


@pytest.mark.parametrize(
    "query",
    [
        {},
        {"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN},
        {"hub.mode": "subscribe", "hub.challenge": "1"},
        {"hub.mode": "subscribe", "hub.challenge": "1", "hub.verify_token": VERIFY_TOKEN.upper()},
        {"hub.mode": "subscribe", "hub.challenge": "1", "hub.verify_token": VERIFY_TOKEN + " "},
        {"hub.mode": "SUBSCRIBE", "hub.challenge": "1", "hub.verify_token": VERIFY_TOKEN},
        {"hub.mode": "subscribe", "hub.challenge": "9" * 257, "hub.verify_token": VERIFY_TOKEN},
        {"hub_mode": "subscribe", "hub_challenge": "1", "hub_verify_token": VERIFY_TOKEN},
    ],
)
def test_handshake_refuses_anything_else(query: dict[str, str]) -> None:
    with pytest.raises(Forbidden):
        make().handshake(query)


# -- signature --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SIGNED)
def test_every_signed_payload_verifies_with_its_sidecar(name: str) -> None:
    sig = sidecar(name.replace(".json", ".sig.txt"))["X-Hub-Signature-256"]
    make().verify(request(raw(name), sig))


def test_tampered_body_is_rejected() -> None:
    fields = sidecar("instagram_text_tampered.sig.txt")
    with pytest.raises(Unauthenticated):
        make().verify(
            request(raw("instagram_text_tampered.json"), fields["X-Hub-Signature-256 presented"])
        )
    # the sidecar's "correct" signature is indeed the body's: only the presented one is wrong
    assert (
        signature(raw("instagram_text_tampered.json"))
        == fields["correct signature for these bytes would be"]
    )


def test_wrong_secret_is_rejected() -> None:
    fields = sidecar("instagram_text_wrong_secret.sig.txt")
    body = raw("instagram_text.json")
    assert fields["X-Hub-Signature-256 presented"] == signature(body, fields["wrong_secret"])
    with pytest.raises(Unauthenticated):
        make().verify(request(body, fields["X-Hub-Signature-256 presented"]))
    with pytest.raises(Unauthenticated):
        make(app_secret=fields["wrong_secret"]).verify(request(body, signature(body)))


def bad_signatures() -> list[str | None]:
    body = raw("instagram_text.json")
    good = signature(body)
    sha1 = "sha1=" + hmac.new(SECRET.encode(), body, hashlib.sha1).hexdigest()
    return [
        None,
        "",
        sha1,
        "sha256=" + good[7:].upper(),
        "SHA256=" + good[7:],
        good[7:],
        "sha256=",
        good + "00",
        good[:-1],
        good[:-1] + "g",
        good + " ",
        "sha256=" + "0" * 64,
        f"{good}, {sha1}",
    ]


@pytest.mark.parametrize("sig", bad_signatures())
def test_missing_or_malformed_signatures_are_rejected(sig: str | None) -> None:
    with pytest.raises(Unauthenticated):
        make().verify(request(raw("instagram_text.json"), sig))


def test_legacy_sha1_header_alone_is_not_enough() -> None:
    body = raw("instagram_text.json")
    sha1 = "sha1=" + hmac.new(SECRET.encode(), body, hashlib.sha1).hexdigest()
    with pytest.raises(Unauthenticated):
        make().verify(InboundRequest("POST", "https://x/", {"X-Hub-Signature": sha1}, body))


def test_empty_body_is_rejected_even_when_signed() -> None:
    with pytest.raises(Unauthenticated):
        make().verify(request(b"", signature(b"")))


def test_header_name_is_case_insensitive() -> None:
    body = raw("instagram_text.json")
    make().verify(
        InboundRequest("POST", "https://x/", {"x-hub-signature-256": signature(body)}, body)
    )
    headers = CIMultiDict({"X-HUB-SIGNATURE-256": signature(body)})
    make().verify(InboundRequest("POST", "https://x/", headers, body))


def test_extra_secrets_verify_during_rotation() -> None:
    body = raw("instagram_text.json")
    adapter = make(app_secret="new-secret", extra_app_secrets=[SECRET])
    adapter.verify(request(body, signature(body)))
    adapter.verify(request(body, signature(body, "new-secret")))
    with pytest.raises(Unauthenticated):
        adapter.verify(request(body, signature(body, "other")))


def test_raw_utf8_and_escaped_bytes_sign_differently_and_parse_the_same() -> None:
    escaped, utf8 = (
        "instagram_text_emoji_nonlatin.json",
        "instagram_text_emoji_nonlatin_utf8raw.json",
    )
    assert raw(escaped) != raw(utf8)
    assert signature(raw(escaped)) != signature(raw(utf8))
    with pytest.raises(Unauthenticated):
        make().verify(request(raw(utf8), signature(raw(escaped))))
    assert received(escaped) == received(utf8)


# -- parse: every payload ---------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_payload_parses_into_the_expected_events(name: str) -> None:
    events = parse(name)
    assert [kind(e) for e in events] == EXPECTED[name]
    for e in events:
        assert_storable(e)


def test_text() -> None:
    message = received("instagram_text.json")
    assert message.external_id == CUSTOMER
    assert message.channel_message_id == MID_1
    assert message.text == "Hi! Is my order #A-1042 shipped yet?"
    assert message.sent_at == "2025-12-31T23:59:59.688Z"
    assert message.metadata == {"ig_account_id": ACCOUNT}
    assert message.attachments == [] and message.reply_to is None


def test_any_script_and_emoji_survive_exactly() -> None:
    message = received("instagram_text_emoji_nonlatin.json")
    wanted = fixture_json("instagram_text_emoji_nonlatin.json")["entry"][0]["messaging"][0]
    assert message.text == wanted["message"]["text"]
    assert message.text is not None
    assert FAMILY in message.text and "\u0645\u0631\u062d\u0628\u0627" in message.text
    assert message.text.endswith('"quotes" & <tags> / slashes \\ backslash')


def test_long_text_under_text_max_is_kept_whole() -> None:
    message = received("instagram_text_long.json")
    assert message.text is not None
    assert (len(message.text), len(message.text.encode())) == (974, 1550)
    assert "truncated" not in message.metadata


def test_text_over_text_max_is_truncated_at_a_cluster_boundary() -> None:
    original = fixture_json("instagram_text_over_limit.json")["entry"][0]["messaging"][0]
    text = original["message"]["text"]
    assert len(text) > TEXT_MAX and text.endswith(FAMILY)
    message = received("instagram_text_over_limit.json")
    assert message.text is not None
    assert len(message.text) <= TEXT_MAX
    assert text.startswith(message.text) and message.text.endswith("x")  # family not split
    assert message.metadata["truncated"] is True
    assert message.metadata["text_length"] == len(text)


def test_two_images() -> None:
    message = received("instagram_image.json")
    assert [a.type for a in message.attachments] == ["image", "image"]
    assert [a.url for a in message.attachments] == [
        "https://lookaside.fbsbx.com/ig_messaging_cdn/?asset_id=1810000000000000"
        f"{n}&signature=AbCdEfSyntheticSig_1810000000000000{n}"
        for n in (1, 2)
    ]
    assert message.text is None


def test_story_reply() -> None:
    message = received("instagram_story_reply.json")
    assert message.text == "Do you have this in size M? \U0001f525"
    (story,) = message.attachments
    assert story.type == "story_reply"
    assert story.url is not None and "asset_id=18200000000000001" in story.url
    assert message.metadata["story_id"] == "18200000000000001"
    assert message.reply_to is None
    assert message.external_id == "1180000000000003"


def test_story_mention() -> None:
    (mention,) = received("instagram_story_mention.json").attachments
    assert mention.type == "story_mention"
    assert mention.url is not None and "asset_id=18200000000000002" in mention.url


def test_quick_reply_and_inline_reply() -> None:
    message = received("instagram_inline_reply_quick_reply.json")
    assert message.text == "Track my order"
    assert message.quick_reply is not None
    assert (message.quick_reply.payload, message.quick_reply.title) == (
        "TRACK_ORDER:A-1042",
        "Track my order",
    )
    assert message.reply_to == MID_1


def test_postback() -> None:
    message = received("instagram_postback.json")
    assert message.postback is not None
    assert message.postback.title == "Talk to a human"
    assert json.loads(message.postback.payload) == {"action": "handoff", "reason": "billing"}
    assert message.channel_message_id.endswith("MDAwMDAwMDg")
    assert message.external_id == "1180000000000002"
    assert message.text is None


def test_postback_without_payload_or_mid_still_stores_once() -> None:
    body = webhook(event(CUSTOMER, postback={"title": "Hours"}), key="standby")
    (first,) = parse_obj(body)
    (again,) = parse_obj(body)
    assert isinstance(first, Received) and isinstance(again, Received)
    assert first.message.postback is not None
    assert (first.message.postback.payload, first.message.postback.title) == ("", "Hours")
    assert first.message.metadata["payload_missing"] is True
    assert first.message.metadata["standby"] is True
    assert first.message.channel_message_id.startswith("pb_")
    assert first.message.channel_message_id == again.message.channel_message_id


def test_ig_reel_share() -> None:
    message = received("instagram_ig_reel_share.json")
    (reel,) = message.attachments
    assert reel.type == "reel" and reel.name == "Spring drop \U0001f338 new colours"
    assert reel.url is not None and reel.url.startswith("https://lookaside.fbsbx.com/")
    assert message.metadata["reel_video_id"] == "18300000000000001"


def test_reactions_carry_the_emoji_and_unreactions_do_not() -> None:
    reaction = marked("instagram_reaction.json")
    assert (reaction.kind, reaction.external_id) == ("reaction", CUSTOMER)
    assert reaction.channel_message_id is not None
    assert reaction.channel_message_id.endswith("MDAwMDAwMDk")
    assert reaction.detail["reaction"] == "love"
    assert reaction.detail["emoji"] == "\u2764\ufe0f"
    assert reaction.at_ms == 1767225659880
    unreaction = marked("instagram_unreact.json")
    assert unreaction.kind == "unreaction"
    assert unreaction.channel_message_id == reaction.channel_message_id
    assert "emoji" not in unreaction.detail and "reaction" not in unreaction.detail
    assert reaction.detail["event_id"] != unreaction.detail["event_id"]
    assert marked("instagram_reaction.json").detail["event_id"] == reaction.detail["event_id"]


def test_read_receipt() -> None:
    read = marked("instagram_read.json")
    assert (read.kind, read.external_id, read.at_ms) == ("read", CUSTOMER, 1767225661910)
    assert read.channel_message_id is not None and read.channel_message_id.endswith("MDAwMDAwMDk")
    assert read.detail["by"] == "customer" and read.detail["ig_account_id"] == ACCOUNT


def test_referral_is_a_message_the_bot_can_answer_stored_once() -> None:
    referral = received("instagram_referral.json")
    assert referral.external_id == "1180000000000003"
    assert referral.metadata == {
        "ig_account_id": ACCOUNT,
        "event": "referral",
        "referral_ref": "spring_sale_2026",
        "referral_source": "https://ig.me/m/omni_demo_shop?ref=spring_sale_2026",
        "referral_type": "OPEN_THREAD",
    }
    assert (referral.text, referral.attachments) == (None, [])
    assert referral.channel_message_id.startswith("ref_")
    assert received("instagram_referral.json").channel_message_id == referral.channel_message_id


def test_echo_is_outbound_to_the_recipient_customer() -> None:
    (echo,) = parse("instagram_echo.json")
    assert isinstance(echo, Received) and echo.direction == "outbound"
    assert echo.message.external_id == CUSTOMER  # the recipient, not our account
    assert echo.message.metadata["author_id"] == ACCOUNT
    assert echo.message.metadata["echo"] is True
    assert (
        echo.message.text
        == "Yes! It shipped today \U0001f4e6 tracking: https://track.example/A-1042"
    )


def test_message_sent_by_our_account_without_is_echo_is_still_outbound() -> None:
    body = webhook(
        {**event(ACCOUNT, message={"mid": "m-1", "text": "hi"}), "recipient": {"id": CUSTOMER}}
    )
    (echo,) = parse_obj(body)
    assert isinstance(echo, Received) and echo.direction == "outbound"
    assert echo.message.external_id == CUSTOMER


def test_unsend_marks_the_message_deleted() -> None:
    deleted = marked("instagram_unsend.json")
    assert (deleted.kind, deleted.external_id) == ("deleted", "1180000000000002")
    assert (
        deleted.channel_message_id
        == received("instagram_text_emoji_nonlatin.json").channel_message_id
    )


def test_unsupported_message_is_received_and_flagged() -> None:
    message = received("instagram_unsupported.json")
    assert message.metadata["unsupported"] is True
    assert [a.type for a in message.attachments] == ["other"]
    assert message.text is None


def test_standby_events_are_parsed_and_flagged() -> None:
    message = received("instagram_standby.json")
    assert message.text == "Hello? anyone there"
    assert message.metadata["standby"] is True


def test_unknown_fields_are_ignored_or_kept_as_bounded_metadata() -> None:
    message = received("instagram_unknown_fields.json")
    assert message.text == "Price?" and message.external_id == "1180000000000003"
    assert message.metadata == {
        "ig_account_id": ACCOUNT,
        "referral_ref": "ad_77",
        "referral_source": "ADS",
        "referral_type": "OPEN_THREAD",
        "ad_id": "120200000000000001",
        "ad_title": "Spring Sale",
    }  # `commands` (a list), `username`, entry and top-level extras are not scalars we keep


def test_dashboard_test_is_skipped() -> None:
    (skipped,) = parse("instagram_dashboard_test_changes.json")
    assert isinstance(skipped, Skipped) and "dashboard test" in skipped.reason


def test_redelivery_and_replay_parse_to_the_same_message() -> None:
    original = received("instagram_text.json")
    assert received("instagram_redelivery_duplicate.json") == original
    assert received("instagram_replay_identical.json") == original


def test_batch_iterates_every_entry_and_event() -> None:
    events = parse("instagram_batch_multi_entry.json")
    accounts = [
        e.message.metadata["ig_account_id"]
        if isinstance(e, Received)
        else e.detail["ig_account_id"]
        for e in events
        if not isinstance(e, Skipped)
    ]
    assert accounts == [ACCOUNT] * 4 + ["17841400000000002"] * 3
    echo, audio = events[3], events[6]
    assert isinstance(echo, Received) and echo.message.external_id == CUSTOMER
    assert isinstance(audio, Received) and [a.type for a in audio.message.attachments] == ["audio"]
    postback = events[5]
    assert isinstance(postback, Received) and postback.message.postback is not None
    assert postback.message.postback.payload == "HOURS"


# -- parse: hostile and odd input -------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"\xff\xfe{}",
        b"[]",
        b'"instagram"',
        b"null",
        b'{"entry":[]}',
        b'{"object":"page","entry":[]}',
        b'{"object":"instagram","entry":[],"x":NaN}',
        b'{"object":"instagram","entry":[],"x":-Infinity}',
        b"[" * 200_000 + b"]" * 200_000,
        b'{"object":"instagram"',
    ],
)
def test_bodies_that_are_not_instagram_notifications_are_bad_requests(body: bytes) -> None:
    with pytest.raises(BadRequest):
        parse(body)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"object": "instagram"}, "without an entry list"),
        ({"object": "instagram", "entry": {}}, "without an entry list"),
        ({"object": "instagram", "entry": [1]}, "entry is not an object"),
        ({"object": "instagram", "entry": [{"id": ACCOUNT}]}, "without messaging"),
        ({"object": "instagram", "entry": [{"messaging": "x"}]}, "messaging is not a list"),
        (webhook("x"), "event is not an object"),
        (webhook({"message": {"mid": "m", "text": "hi"}}), "customer id"),
        (webhook(event("9" * 300, message={"mid": "m", "text": "hi"})), "customer id"),
        (webhook(event(CUSTOMER, message={"text": "hi"})), "mid"),
        (webhook(event(CUSTOMER, message={"mid": "m" * 600, "text": "hi"})), "mid"),
        (webhook(event(CUSTOMER, brand_new={"a": 1})), "unhandled event kind brand_new"),
        (webhook(event(CUSTOMER)), "unhandled event kind (none)"),
        (webhook(event(CUSTOMER, reaction={"mid": "m", "action": "poke"})), "reaction"),
        (webhook(event(CUSTOMER, read={})), "read without"),
        (webhook(event(CUSTOMER, message_edit={"mid": "m", "text": "x"})), "message_edit"),
    ],
)
def test_odd_shapes_become_skipped_with_a_reason(body: Any, reason: str) -> None:
    (skipped,) = parse_obj(body)
    assert isinstance(skipped, Skipped) and reason in skipped.reason


def test_one_bad_event_does_not_lose_the_rest_of_the_batch() -> None:
    good = event(CUSTOMER, message={"mid": "m-ok", "text": "kept"})
    events = parse_obj(webhook("junk", event(CUSTOMER, message={"mid": 5}), good))
    assert [kind(e) for e in events] == ["skipped", "inbound", "inbound"]


def test_lone_surrogates_and_numbers_as_ids_are_stored_safely() -> None:
    body = (
        b'{"object":"instagram","entry":[{"id":17841400000000001,"messaging":[{'
        b'"sender":{"id":1180000000000001},"recipient":{"id":17841400000000001},'
        b'"timestamp":"1767225600000","message":{"mid":"m-1","text":"half \\ud83d emoji"}}]}]}'
    )
    (e,) = parse(body)
    assert isinstance(e, Received)
    assert e.message.external_id == CUSTOMER
    assert e.message.text == "half \ufffd emoji"
    assert e.message.sent_at == "2026-01-01T00:00:00.000Z"
    msgspec.msgpack.encode(e.message)


def test_metadata_and_attachments_stay_within_limits() -> None:
    extras = {f"future_{i}": i for i in range(100)}
    attachments = [
        {"type": "image", "payload": {"url": f"https://cdn.example/{i}.png"}} for i in range(12)
    ]
    message = {"mid": "m-1", "text": "hi", "attachments": attachments, **extras}
    (e,) = parse_obj(webhook(event(CUSTOMER, message=message)))
    assert isinstance(e, Received)
    assert len(e.message.attachments) == 10
    assert len(e.message.metadata) == METADATA_MAX
    assert e.message.metadata["attachments_dropped"] == 2
    assert e.message.metadata["ig.future_0"] == 0
    assert_storable(e)


def test_unusable_urls_and_timestamps_are_dropped_not_fatal() -> None:
    message = {
        "mid": "m-1",
        "attachments": [
            {"type": "image", "payload": {"url": "javascript:alert(1)"}},
            {"type": "share", "payload": {"url": "https://x/" + "a" * 3000}},
            {"type": "image", "payload": {"url": "https://x/s.png", "sticker_id": 369239263222822}},
            {"type": "brand_new"},
        ],
    }
    (e,) = parse_obj(webhook({**event(CUSTOMER, message=message), "timestamp": 10**20}))
    assert isinstance(e, Received)
    assert [(a.type, a.url) for a in e.message.attachments] == [
        ("image", None),
        ("other", None),
        ("sticker", "https://x/s.png"),
        ("other", None),
    ]
    assert e.message.sent_at is None
    assert e.message.metadata["attachment_kind"] == "share"


def mutations(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield path
    if isinstance(value, dict):
        for key, child in value.items():
            yield from mutations(child, (*path, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from mutations(child, (*path, index))


def replaced(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    copy = json.loads(json.dumps(value))
    target = copy
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = new
    return copy


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_no_value_anywhere_makes_parse_raise(name: str) -> None:
    """Replace every node of the payload, one at a time, with values of every JSON type:
    parse answers events or BadRequest, and whatever it answers can be stored."""
    original = fixture_json(name)
    odd: list[Any] = [None, True, 0, -1, 1.5, "", "x" * 5000, "\ud83d", [], {}, [None], {"mid": 1}]
    for path in mutations(original):
        for new in odd:
            try:
                events = parse_obj(replaced(original, path, new))
            except BadRequest:
                assert len(path) <= 1
                continue
            for e in events:
                assert_storable(e)


# -- window -----------------------------------------------------------------------------------

HOUR = 3_600_000


@pytest.mark.parametrize(
    ("age", "state"),
    [
        (0, "open"),
        (-5 * HOUR, "open"),
        (24 * HOUR - 1, "open"),
        (24 * HOUR, "human_agent"),
        (7 * 24 * HOUR - 1, "human_agent"),
        (7 * 24 * HOUR, "closed"),
        (400 * 24 * HOUR, "closed"),
    ],
)
def test_window_state(age: int, state: str) -> None:
    now = 1_767_225_600_000
    assert window_state(now - age, now) == state


def test_window_without_an_inbound_message_is_closed() -> None:
    assert window_state(None, 1_767_225_600_000) == "closed"


# -- outbound: a local server that speaks the Graph Send API ----------------------------------


class Graph:
    """`POST /v22.0/{id}/messages` as Graph answers it: the token checked first (OAuth
    error 190 otherwise), then the request shape (error 100), then queued answers or a
    success with a fresh message id."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.answers: list[tuple[int, Any]] = []
        self.release = asyncio.Event()
        self.hang = False

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(
            {
                "path": request.path,
                "query": dict(request.query),
                "authorization": request.headers.get("Authorization"),
                "body": body,
            }
        )
        if self.hang:
            await asyncio.wait_for(self.release.wait(), 5)
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if request.query.get("access_token", token) != PAGE_TOKEN:
            error = {
                "message": "Invalid OAuth access token.",
                "type": "OAuthException",
                "code": 190,
            }
            return web.json_response({"error": error}, status=400)
        recipient = body.get("recipient", {}).get("id") if isinstance(body, dict) else None
        if not recipient or not ("message" in body or "sender_action" in body):
            error = {"message": "(#100) Invalid parameter", "type": "OAuthException", "code": 100}
            return web.json_response({"error": error}, status=400)
        if self.answers:
            status, answer = self.answers.pop(0)
            if isinstance(answer, bytes):
                return web.Response(status=status, body=answer, content_type="text/html")
            return web.json_response(answer, status=status)
        if "sender_action" in body:
            return web.json_response({"recipient_id": recipient})
        return web.json_response(
            {"recipient_id": recipient, "message_id": f"mid.{len(self.requests)}"}
        )


@pytest.fixture
async def session() -> AsyncIterator[ClientSession]:
    async with ClientSession() as client:
        yield client


@pytest.fixture
async def graph(aiohttp_server: Any) -> AsyncIterator[tuple[Graph, str]]:
    stub = Graph()
    app = web.Application()
    app.router.add_post("/v22.0/{account}/messages", stub.handle)
    server = await aiohttp_server(app)
    yield stub, str(server.make_url("/v22.0"))
    stub.release.set()


def sender(
    graph: tuple[Graph, str], session: ClientSession, *, timeout: float = 10.0, **overrides: Any
) -> GraphSender:
    return GraphSender(make(graph_url=graph[1], **overrides), session, timeout=timeout)


def reply(text: str | None = None, **fields: Any) -> Message:
    return Message(
        id="msg_01",
        customer_id="cus_01",
        conversation_id="cnv_01",
        channel="instagram",
        direction="outbound",
        author=Author(kind="bot", id="shop-bot"),
        received_at="2026-01-01T00:01:00.000Z",
        text=text,
        **fields,
    )


def success_mid() -> str:
    mid: str = fixture_json("instagram_send_success_response.json")["message_id"]
    return mid


async def test_text_request_matches_the_fixture(
    graph: tuple[Graph, str], session: ClientSession
) -> None:
    stub, _ = graph
    stub.answers.append((200, fixture_json("instagram_send_success_response.json")))
    delivery = await sender(graph, session).deliver(
        reply("Yes! It shipped today \U0001f4e6"), CUSTOMER
    )
    assert (delivery.status, delivery.channel_message_id) == ("sent", success_mid())
    (seen,) = stub.requests
    assert seen["path"] == f"/v22.0/{ACCOUNT}/messages"
    assert seen["authorization"] == f"Bearer {PAGE_TOKEN}"
    assert seen["query"] == {}  # the token stays out of URLs (and access logs)
    assert seen["body"] == fixture_json("instagram_send_text_request.json")


async def test_human_agent_tag_matches_the_fixture(
    graph: tuple[Graph, str], session: ClientSession
) -> None:
    text = "Sorry for the wait \u2014 an agent checked your refund: approved."
    delivery = await sender(graph, session).deliver(reply(text), CUSTOMER, human_agent=True)
    assert delivery.status == "sent"
    assert graph[0].requests[0]["body"] == fixture_json("instagram_send_human_agent_request.json")


async def test_quick_replies_match_the_fixture(
    graph: tuple[Graph, str], session: ClientSession
) -> None:
    options = [
        Payload("TRACK_ORDER", title="Track order"),
        Payload("HANDOFF", title="Talk to a human"),
    ]
    message = reply("What do you need?", quick_replies=options)
    assert (await sender(graph, session).deliver(message, CUSTOMER)).status == "sent"
    assert graph[0].requests[0]["body"] == fixture_json("instagram_send_quick_replies_request.json")


async def test_image_matches_the_fixture(graph: tuple[Graph, str], session: ClientSession) -> None:
    image = Attachment(type="image", url="https://cdn.example.com/receipt-A-1042.png")
    assert (
        await sender(graph, session).deliver(reply(attachments=[image]), CUSTOMER)
    ).status == "sent"
    assert graph[0].requests[0]["body"] == fixture_json("instagram_send_image_request.json")


async def test_typing_on_matches_the_fixture(
    graph: tuple[Graph, str], session: ClientSession
) -> None:
    delivery = await sender(graph, session).send_action(CUSTOMER, "typing_on")
    assert (delivery.status, delivery.channel_message_id) == ("sent", None)
    assert graph[0].requests[0]["body"] == fixture_json("instagram_send_typing_on_request.json")


async def test_quick_reply_labels_and_limits(
    graph: tuple[Graph, str], session: ClientSession
) -> None:
    graph_sender = sender(graph, session)
    options = [Payload("Yes"), Payload("LONG", title="A title much longer than twenty characters")]
    assert (
        await graph_sender.deliver(reply("Sure?", quick_replies=options), CUSTOMER)
    ).status == "sent"
    sent = graph[0].requests[0]["body"]["message"]["quick_replies"]
    assert sent[0] == {"content_type": "text", "title": "Yes", "payload": "Yes"}
    assert sent[1] == {"content_type": "text", "title": "A title much longer ", "payload": "LONG"}
    for bad in (
        [Payload(f"o{i}") for i in range(14)],
        [Payload("", title="no payload")],
        [Payload("x" * 1001)],
    ):
        delivery = await graph_sender.deliver(reply("Sure?", quick_replies=bad), CUSTOMER)
        assert (delivery.status, reason_code(delivery), delivery.retry) == (
            "failed",
            "unsendable",
            False,
        )
    assert len(graph[0].requests) == 1


async def test_media_first_then_text_with_quick_replies_and_a_tag_on_every_part(
    graph: tuple[Graph, str], session: ClientSession
) -> None:
    message = reply(
        "Here is your receipt",
        attachments=[Attachment(type="image", url="https://cdn.example.com/r.png")],
        quick_replies=[Payload("Thanks")],
    )
    delivery = await sender(graph, session).deliver(message, CUSTOMER, human_agent=True)
    assert (delivery.status, delivery.channel_message_id) == ("sent", "mid.1")
    first, second = (r["body"] for r in graph[0].requests)
    assert "attachment" in first["message"] and "quick_replies" not in first["message"]
    assert second["message"]["text"] == "Here is your receipt"
    assert second["message"]["quick_replies"][0]["payload"] == "Thanks"
    assert {(b["messaging_type"], b["tag"]) for b in (first, second)} == {
        ("MESSAGE_TAG", "HUMAN_AGENT")
    }


async def test_text_over_1000_bytes_is_sent_in_parts(
    graph: tuple[Graph, str], session: ClientSession
) -> None:
    long_text = fixture_json("instagram_text_long.json")["entry"][0]["messaging"][0]["message"][
        "text"
    ]
    message = reply(long_text, quick_replies=[Payload("OK")])
    delivery = await sender(graph, session).deliver(message, CUSTOMER)
    assert (delivery.status, delivery.channel_message_id) == ("sent", "mid.1")
    bodies = [r["body"] for r in graph[0].requests]
    texts = [b["message"]["text"] for b in bodies]
    assert len(texts) == 2
    assert_parts_of(long_text, texts)
    assert ["quick_replies" in b["message"] for b in bodies] == [False, True]
    assert all(b["messaging_type"] == "RESPONSE" for b in bodies)


@pytest.mark.parametrize(
    ("fixture", "status", "slug", "retry"),
    [
        ("instagram_send_error_outside_window.json", 400, "outside_window", False),
        ("instagram_send_error_rate_limit.json", 400, "rate_limited", True),
        ("instagram_send_error_token_expired.json", 400, "token_expired", False),
        ("instagram_send_error_token_expired.json", 401, "token_expired", False),
    ],
)
async def test_graph_errors_map_to_failed_deliveries(
    graph: tuple[Graph, str],
    session: ClientSession,
    fixture: str,
    status: int,
    slug: str,
    retry: bool,
) -> None:
    graph[0].answers.append((status, fixture_json(fixture)))
    delivery = await sender(graph, session).deliver(reply("hello"), CUSTOMER)
    assert (delivery.status, reason_code(delivery), delivery.retry) == ("failed", slug, retry)
    assert (
        delivery.reason is not None
        and str(fixture_json(fixture)["error"]["code"]) in delivery.reason
    )


@pytest.mark.parametrize(
    ("status", "answer", "slug", "retry"),
    [
        (500, b"<html>Internal Server Error</html>", "upstream_error", True),
        (502, b"", "upstream_error", True),
        (503, {"error": {"message": "temporarily unavailable", "code": 2}}, "upstream_error", True),
        (
            400,
            {"error": {"message": "transient", "code": 9999, "is_transient": True}},
            "upstream_error",
            True,
        ),
        (429, b"", "rate_limited", True),
        (
            400,
            {"error": {"message": "(#32) Page request limit reached", "code": 32}},
            "rate_limited",
            True,
        ),
        (
            400,
            {"error": {"message": "outside the 24h window", "code": 10, "error_subcode": 2534022}},
            "outside_window",
            False,
        ),
        (400, {"error": {"message": "(#10) permission", "code": 10}}, "permission_denied", False),
        (400, {"error": {"message": "unavailable", "code": 551}}, "recipient_unavailable", False),
        (
            400,
            {"error": {"message": "No matching user", "code": 100, "error_subcode": 2018001}},
            "no_matching_user",
            False,
        ),
        (400, {"error": {"message": "Invalid parameter", "code": 100}}, "bad_request", False),
        (404, b"not found", "bad_request", False),
        (400, {"error": "a string"}, "bad_request", False),
    ],
)
async def test_other_graph_answers(
    graph: tuple[Graph, str],
    session: ClientSession,
    status: int,
    answer: Any,
    slug: str,
    retry: bool,
) -> None:
    graph[0].answers.append((status, answer))
    delivery = await sender(graph, session).deliver(reply("hello"), CUSTOMER)
    assert (delivery.status, reason_code(delivery), delivery.retry) == ("failed", slug, retry)


async def test_a_wrong_token_asks_for_reauthorization(
    graph: tuple[Graph, str], session: ClientSession
) -> None:
    delivery = await sender(graph, session, page_token="EAA-revoked").deliver(
        reply("hello"), CUSTOMER
    )
    assert (delivery.status, delivery.retry) == ("failed", False)
    assert reason_code(delivery) in REAUTH_REASONS


async def test_a_missing_token_fails_without_calling_graph(
    graph: tuple[Graph, str], session: ClientSession
) -> None:
    delivery = await sender(graph, session, page_token="").deliver(reply("hello"), CUSTOMER)
    assert reason_code(delivery) in REAUTH_REASONS and graph[0].requests == []


async def test_query_token_appsecret_proof_and_me_route(
    graph: tuple[Graph, str], session: ClientSession
) -> None:
    graph_sender = sender(graph, session, account_id="me", auth_style="query", appsecret_proof=True)
    assert (await graph_sender.deliver(reply("hello"), CUSTOMER)).status == "sent"
    (seen,) = graph[0].requests
    assert seen["path"] == "/v22.0/me/messages"
    assert seen["authorization"] is None
    proof = hmac.new(SECRET.encode(), PAGE_TOKEN.encode(), hashlib.sha256).hexdigest()
    assert seen["query"] == {"access_token": PAGE_TOKEN, "appsecret_proof": proof}


async def test_a_failure_after_some_parts_says_so(
    graph: tuple[Graph, str], session: ClientSession
) -> None:
    graph[0].answers.append((200, {"recipient_id": CUSTOMER, "message_id": "mid.img"}))
    graph[0].answers.append((400, fixture_json("instagram_send_error_rate_limit.json")))
    message = reply(
        "caption", attachments=[Attachment(type="image", url="https://cdn.example.com/a.png")]
    )
    delivery = await sender(graph, session).deliver(message, CUSTOMER)
    assert (delivery.status, delivery.channel_message_id, delivery.retry) == (
        "failed",
        "mid.img",
        True,
    )
    assert delivery.reason is not None and "after 1 of 2 parts" in delivery.reason


async def test_timeout_is_worth_a_retry(graph: tuple[Graph, str], session: ClientSession) -> None:
    graph[0].hang = True
    delivery = await sender(graph, session, timeout=0.2).deliver(reply("hello"), CUSTOMER)
    graph[0].release.set()
    assert (delivery.status, reason_code(delivery), delivery.retry) == ("failed", "timeout", True)


async def test_refused_connection_is_worth_a_retry(session: ClientSession) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    graph_sender = GraphSender(make(graph_url=f"http://127.0.0.1:{port}/v22.0"), session)
    delivery = await graph_sender.deliver(reply("hello"), CUSTOMER)
    assert (delivery.status, reason_code(delivery), delivery.retry) == (
        "failed",
        "network_error",
        True,
    )


@pytest.mark.parametrize(
    "message",
    [
        reply(),
        reply(quick_replies=[Payload("only buttons")]),
        reply(attachments=[Attachment(type="location", latitude=1.0, longitude=2.0)]),
        reply(
            "with a product", attachments=[Attachment(type="product", url="https://shop.example/p")]
        ),
        reply(attachments=[Attachment(type="image")]),
        reply(attachments=[Attachment(type="image", url="data:image/png;base64,AAAA")]),
    ],
)
async def test_unsendable_messages_fail_without_calling_graph(
    graph: tuple[Graph, str], session: ClientSession, message: Message
) -> None:
    delivery = await sender(graph, session).deliver(message, CUSTOMER)
    assert (delivery.status, reason_code(delivery), delivery.retry) == (
        "failed",
        "unsendable",
        False,
    )
    assert graph[0].requests == []


# -- text splitting and configuration ---------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        FAMILY * 60,
        "\U0001f1eb\U0001f1f7" * 200,  # flags: regional indicator pairs
        ("e\u0301" * 300) + ("\U0001f44d\U0001f3fd" * 100),  # combining accent, skin tone
        "\u914d\u9001" * 400,
        "word " * 500,
        "x" * 2500,
    ],
)
def test_split_text_respects_bytes_and_clusters(text: str) -> None:
    parts = split_text(text)
    assert len(parts) > 1
    assert_parts_of(text, parts)


def assert_parts_of(text: str, parts: list[str]) -> None:
    """Parts of at most 1000 bytes that rebuild `text`, dropping only the single space or
    newline a part was broken at, and starting only where no character cluster is split."""
    position = 0
    for part in parts:
        assert 0 < len(part.encode()) <= 1000
        if not text.startswith(part, position):
            assert text[position] in " \n"
            position += 1
        assert text.startswith(part, position)
        assert safe_cut(text, position) == position
        position += len(part)
    assert position == len(text)


def test_split_text_keeps_short_text_whole() -> None:
    assert split_text("hello") == ["hello"]
    assert split_text("x" * 1000) == ["x" * 1000]


def test_safe_cut_backs_off_inside_clusters() -> None:
    assert safe_cut("ab" + FAMILY, 4) == 2
    assert safe_cut("ab\U0001f1eb\U0001f1f7\U0001f1e9\U0001f1ea", 3) == 2
    assert safe_cut("ab\U0001f1eb\U0001f1f7\U0001f1e9\U0001f1ea", 4) == 4
    assert safe_cut("ae\u0301", 2) == 1
    assert safe_cut("abc", 2) == 2


@pytest.mark.parametrize("missing", ["app_secret", "verify_token", "account_id", "graph_url"])
def test_empty_configuration_is_refused(missing: str) -> None:
    with pytest.raises(ConfigError, match=missing):
        make(**{missing: ""})


def test_repr_hides_secrets() -> None:
    text = repr(make())
    assert SECRET not in text and PAGE_TOKEN not in text and VERIFY_TOKEN not in text
