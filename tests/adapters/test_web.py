"""adapters.web and adapters.chat.sessions: session tokens, identify, message bodies, socket
frames and the Origin check, against the fixtures in tests/payloads/web/."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import pytest

from adapters.chat.sessions import SessionAuthority, new_visitor_id
from adapters.web.protocol import (
    FRAME_MAX,
    Ping,
    Resume,
    Typing,
    WebAdapter,
    allowed_origin,
    origin_entry_ok,
)
from omni.channel import InboundRequest, Marked, Received
from omni.errors import (
    BadRequest,
    ConfigError,
    PayloadTooLarge,
    Unauthenticated,
    ValidationFailed,
)
from omni.model import Author, Message

PAYLOADS = Path(__file__).parent.parent / "payloads" / "web"
SESSION_SECRET = "web-session-secret-for-tests-0123456789"
NOW = 1_767_225_600_000  # 2026-01-01T00:00:00Z
VISITOR = "vis_01JH8Z3K9W2QX7M4T6R5B1C0DE"  # the fixtures' anonymous_id


def sidecar(name: str) -> dict[str, str]:
    """The `key: value` lines of a fixture's .sig.txt."""
    lines = (PAYLOADS / name).read_text().splitlines()
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in lines)}


SIG = sidecar("web_identify_hmac.sig.txt")
IDENTITY_SECRET = SIG["identity_secret"]
IDENTIFY = json.loads((PAYLOADS / "web_identify_hmac.json").read_bytes())
FRAMES = [json.loads(line) for line in (PAYLOADS / "web_ws_frames.jsonl").read_text().splitlines()]


def make_web(**overrides: Any) -> WebAdapter:
    options: dict[str, Any] = {
        "session_secret": SESSION_SECRET,
        "identity_secret": IDENTITY_SECRET,
        "clock": lambda: NOW,
    }
    options.update(overrides)
    return WebAdapter(**options)


@pytest.fixture
def web() -> WebAdapter:
    return make_web()


def request(
    body: bytes | str | dict[str, Any] = b"",
    *,
    token: str | None = None,
    query: dict[str, str] | None = None,
) -> InboundRequest:
    raw = json.dumps(body).encode() if isinstance(body, dict) else body
    raw = raw.encode() if isinstance(raw, str) else raw
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return InboundRequest("POST", "https://omni.example.com/", headers, raw, query or {})


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# -- identify (web_identify_hmac.json + .sig.txt) ---------------------------------------


def test_identify_fixture_hash_verifies(web: WebAdapter) -> None:
    assert IDENTIFY["identifier"] == SIG["identifier"]
    assert IDENTIFY["identifier_hash"] == SIG["identifier_hash"]
    web.verify_identity(IDENTIFY["identifier"], IDENTIFY["identifier_hash"])
    assert web.sessions.identity.user_hash(SIG["identifier"]) == SIG["identifier_hash"]


def test_identify_fixture_bad_case_is_rejected(web: WebAdapter) -> None:
    bad = re.search(r"identifier '([^']+)'.*real hash is ([0-9a-f]{64})", SIG["bad case"])
    assert bad is not None
    other_id, other_hash = bad.groups()
    with pytest.raises(Unauthenticated) as caught:
        web.verify_identity(other_id, IDENTIFY["identifier_hash"])
    assert caught.value.field == "identifier_hash"
    web.verify_identity(other_id, other_hash)


def test_identify_with_wrong_secret_is_rejected() -> None:
    web = make_web(identity_secret="another-identity-secret")
    with pytest.raises(Unauthenticated):
        web.verify_identity(IDENTIFY["identifier"], IDENTIFY["identifier_hash"])


@pytest.mark.parametrize(
    "user_hash",
    [None, "", "zz" * 32, SIG["identifier_hash"][:-1], SIG["identifier_hash"] + "0", "é" * 64],
)
def test_identify_with_malformed_hash_is_rejected(web: WebAdapter, user_hash: str | None) -> None:
    with pytest.raises(Unauthenticated):
        web.verify_identity(IDENTIFY["identifier"], user_hash)


def test_identify_hash_is_case_insensitive(web: WebAdapter) -> None:
    web.verify_identity(IDENTIFY["identifier"], IDENTIFY["identifier_hash"].upper())


def test_identify_fixture_upgrades_the_anonymous_session(web: WebAdapter) -> None:
    anonymous = web.issue_session(VISITOR, NOW - 60_000)
    grant = web.session_request(
        request((PAYLOADS / "web_identify_hmac.json").read_bytes(), token=anonymous)
    )
    assert grant.kind == "identified" and grant.status == 200
    assert grant.session.visitor_id == VISITOR
    assert grant.session.user_id == "cust_000123"
    assert grant.session.external_id == "user:cust_000123"
    assert grant.previous is not None and grant.previous.external_id == VISITOR
    assert grant.traits is not None
    assert (grant.traits.name, grant.traits.email, grant.traits.locale) == (
        "Ana Souza", "ana@example.com", "pt-BR",
    )  # fmt: skip
    assert web.open_session(grant.token).external_id == "user:cust_000123"
    assert grant.render() == {
        "token": grant.token,
        "visitor_id": VISITOR,
        "external_id": "user:cust_000123",
        "user_id": "cust_000123",
        "expires_at": "2026-01-31T00:00:00.000Z",
    }


def test_identify_fixture_with_a_forged_hash_issues_nothing(web: WebAdapter) -> None:
    body = dict(IDENTIFY, identifier="cust_000124")
    with pytest.raises(Unauthenticated):
        web.session_request(request(body, token=web.issue_session(VISITOR)))


def test_identify_naming_another_visitor_is_rejected(web: WebAdapter) -> None:
    token = web.issue_session(new_visitor_id())
    with pytest.raises(Unauthenticated) as caught:
        web.session_request(request(IDENTIFY, token=token))
    assert caught.value.field == "anonymous_id"


def test_identify_without_a_session_makes_a_new_visitor(web: WebAdapter) -> None:
    grant = web.session_request(request(IDENTIFY))
    assert grant.session.visitor_id != VISITOR  # an unproven anonymous_id is not believed
    assert grant.previous is None
    assert grant.session.user_id == "cust_000123"


def test_identify_as_another_user_starts_a_fresh_visitor(web: WebAdapter) -> None:
    other = web.issue_session(VISITOR, user_id="cust_999")
    grant = web.session_request(request(IDENTIFY, token=other))
    assert grant.session.visitor_id != VISITOR
    assert grant.previous is None


def test_identify_needs_an_identifier(web: WebAdapter) -> None:
    with pytest.raises(ValidationFailed) as caught:
        web.session_request(request({"type": "identify"}))
    assert caught.value.field == "identifier"


# -- session tokens ----------------------------------------------------------------------


def test_start_issues_an_anonymous_session(web: WebAdapter) -> None:
    for body in (b"", b"{}", {"type": "start"}, {"type": "start", "newer_field": 1}):
        grant = web.session_request(request(body))
        assert grant.kind == "started" and grant.status == 201
        assert grant.session.user_id is None
        assert grant.session.external_id == grant.session.visitor_id
        assert re.fullmatch(r"vis_[0-9A-HJKMNP-TV-Z]{26}", grant.session.visitor_id)
        assert web.open_session(grant.token) == grant.session


def test_start_ignores_a_stale_token(web: WebAdapter) -> None:
    grant = web.session_request(request(b"{}", token="garbage"))
    assert grant.kind == "started"


def test_visitor_ids_are_random() -> None:
    ids = {new_visitor_id() for _ in range(2000)}
    assert len(ids) == 2000
    assert all(re.fullmatch(r"vis_[0-9A-HJKMNP-TV-Z]{26}", v) for v in ids)
    # 26 base32 characters of randomness: no shared time prefix as a ULID would have.
    assert len({v[4:10] for v in ids}) > 1900


def test_renew_keeps_visitor_and_user(web: WebAdapter) -> None:
    token = web.issue_session(VISITOR, NOW - 10 * 86_400_000, user_id="cust_000123")
    grant = web.session_request(request({"type": "renew"}, token=token))
    assert grant.kind == "renewed"
    assert (grant.session.visitor_id, grant.session.user_id) == (VISITOR, "cust_000123")
    assert grant.session.expires_at_ms == NOW + 30 * 86_400_000


def test_renew_needs_a_valid_token(web: WebAdapter) -> None:
    with pytest.raises(Unauthenticated):
        web.session_request(request({"type": "renew"}))
    expired = web.issue_session(VISITOR, NOW - 31 * 86_400_000)
    with pytest.raises(Unauthenticated, match="expired"):
        web.session_request(request({"type": "renew"}, token=expired))


@pytest.mark.parametrize(
    ("body", "error", "field"),
    [
        (b"{not json", BadRequest, None),
        (b"[]", ValidationFailed, None),
        ({"type": "login"}, ValidationFailed, "type"),
        (dict(IDENTIFY, traits={"email": "not-an-email"}), ValidationFailed, "traits.email"),
    ],
)
def test_bad_session_bodies_name_the_field(
    web: WebAdapter, body: bytes | dict[str, Any], error: type[Exception], field: str | None
) -> None:
    with pytest.raises(error) as caught:
        web.session_request(request(body))
    assert getattr(caught.value, "field", None) == field


def test_token_round_trip(web: WebAdapter) -> None:
    token = web.issue_session(VISITOR, NOW, user_id="cust_000123")
    session = web.open_session(token, NOW + 1000)
    assert session.channel == "web"
    assert session.visitor_id == VISITOR and session.user_id == "cust_000123"
    assert session.issued_at_ms == NOW and session.expires_at_ms == NOW + 30 * 86_400_000
    header, claims, _ = token.split(".")
    assert json.loads(unb64(header)) == {"alg": "HS256", "typ": "JWT"}
    assert json.loads(unb64(claims))["aud"] == "omni:web"


def test_expired_token_is_rejected(web: WebAdapter) -> None:
    token = web.issue_session(VISITOR, NOW)
    web.open_session(token, NOW + 30 * 86_400_000 - 1)
    with pytest.raises(Unauthenticated, match="expired"):
        web.open_session(token, NOW + 30 * 86_400_000)


def test_token_from_the_future_is_rejected(web: WebAdapter) -> None:
    with pytest.raises(Unauthenticated):
        web.open_session(web.issue_session(VISITOR, NOW + 3_600_000), NOW)


def test_token_signed_with_another_secret_is_rejected(web: WebAdapter) -> None:
    other = make_web(session_secret="some-other-secret-of-32-bytes-or-more!")
    with pytest.raises(Unauthenticated):
        web.open_session(other.issue_session(VISITOR))


def test_forged_tokens_are_rejected(web: WebAdapter) -> None:
    header, claims, signature = web.issue_session(VISITOR).split(".")
    payload = json.loads(unb64(claims))
    raised = b64(json.dumps(dict(payload, uid="cust_000123")).encode())
    unsigned_header = b64(b'{"alg":"none","typ":"JWT"}')
    forged = [
        f"{header}.{raised}.{signature}",  # claims changed, signature kept
        f"{header}.{claims}.{signature[:-2]}AA",  # signature changed
        f"{header}.{claims}.",  # no signature
        f"{unsigned_header}.{claims}.",  # alg none
        f"{header}.{claims}",
        f"{header}.{claims}.{signature}.x",
        f"{header}.{claims}.{signature}==",
        "",
        "x" * 5000,
        "ünïcode.token.here",
    ]
    for token in forged:
        with pytest.raises(Unauthenticated):
            web.open_session(token)


def test_token_signed_but_unreadable_is_rejected(web: WebAdapter) -> None:
    import hashlib
    import hmac

    for header, claims in ((b"{}", b"{}"), (b'{"alg":"HS256"}', b"[1]"), (b"x", b"y")):
        signing_input = f"{b64(header)}.{b64(claims)}"
        sig = hmac.new(SESSION_SECRET.encode(), signing_input.encode(), hashlib.sha256).digest()
        with pytest.raises(Unauthenticated):
            web.open_session(f"{signing_input}.{b64(sig)}")


def test_a_mobile_token_does_not_open_a_web_session(web: WebAdapter) -> None:
    mobile = SessionAuthority(
        "mobile", session_secret=SESSION_SECRET, identity_secret=IDENTITY_SECRET
    )
    with pytest.raises(Unauthenticated):
        web.open_session(mobile.issue(VISITOR, NOW), NOW)


def test_previous_secrets_still_open_sessions() -> None:
    old = make_web(session_secret="the-old-session-secret-0123456789abcdef")
    token = old.issue_session(VISITOR)
    rotated = make_web(previous_session_secrets=["the-old-session-secret-0123456789abcdef"])
    assert rotated.open_session(token).visitor_id == VISITOR
    fresh = rotated.issue_session(VISITOR)
    with pytest.raises(Unauthenticated):
        old.open_session(fresh)


@pytest.mark.parametrize(
    "overrides",
    [
        {"session_secret": "short"},
        {"previous_session_secrets": ["short"]},
        {"identity_secret": ""},
        {"session_ttl_s": 0},
    ],
)
def test_weak_configuration_is_refused(overrides: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        make_web(**overrides)


def test_authenticate_reads_header_or_query(web: WebAdapter) -> None:
    token = web.issue_session(VISITOR)
    assert web.authenticate(request(token=token)).visitor_id == VISITOR
    assert web.authenticate(request(query={"token": token})).visitor_id == VISITOR
    with pytest.raises(Unauthenticated):
        web.authenticate(request())
    bad_scheme = InboundRequest("GET", "/", {"authorization": f"Basic {token}"}, b"")
    with pytest.raises(Unauthenticated):
        web.authenticate(bad_scheme)


# -- POST /channels/web/messages -----------------------------------------------------------


def test_message_body_becomes_received(web: WebAdapter) -> None:
    token = web.issue_session(VISITOR)
    body = {
        "client_msg_id": "c-7f3a-0009",
        "text": "Do you have these in 42?",
        "sent_at": "2026-01-01T00:00:05.000Z",
        "attachments": [
            {"type": "image", "url": "https://cdn.example.com/s.png", "mime": "image/png",
             "size": 1234, "name": "s.png"},
        ],
        "quick_reply": {"payload": "SIZE_42", "title": "42"},
        "reply_to": "msg_0000000040",
        "unknown_future_field": True,
    }  # fmt: skip
    web.verify(request(body, token=token))
    events = web.parse(request(body, token=token))
    assert len(events) == 1 and isinstance(events[0], Received)
    message = events[0].message
    assert events[0].direction == "inbound"
    assert (message.channel, message.external_id) == ("web", VISITOR)
    assert message.channel_message_id == "c-7f3a-0009"
    assert message.text == "Do you have these in 42?"
    assert message.sent_at == "2026-01-01T00:00:05.000Z"
    assert message.attachments[0].type == "image" and message.attachments[0].size == 1234
    assert message.quick_reply is not None and message.quick_reply.payload == "SIZE_42"
    assert message.reply_to == "msg_0000000040"
    assert message.metadata == {}


def test_identified_sessions_send_as_the_user(web: WebAdapter) -> None:
    token = web.issue_session(VISITOR, user_id="cust_000123")
    (event,) = web.parse(request({"client_msg_id": "c-1", "text": "hi"}, token=token))
    assert isinstance(event, Received)
    assert event.message.external_id == "user:cust_000123"
    assert event.message.metadata == {"visitor_id": VISITOR}


def test_a_retried_send_maps_to_the_same_message(web: WebAdapter) -> None:
    token = web.issue_session(VISITOR)
    body = {"client_msg_id": "c-7f3a-0001", "text": "Hi"}
    assert web.parse(request(body, token=token)) == web.parse(request(body, token=token))


@pytest.mark.parametrize(
    ("body", "error", "field"),
    [
        (b"", BadRequest, None),
        (b"{", BadRequest, None),
        (b'"text"', ValidationFailed, None),
        ({"text": "hi"}, ValidationFailed, "client_msg_id"),
        ({"client_msg_id": "", "text": "hi"}, ValidationFailed, "client_msg_id"),
        ({"client_msg_id": "has space", "text": "hi"}, ValidationFailed, "client_msg_id"),
        ({"client_msg_id": "c-1"}, ValidationFailed, "text"),
        ({"client_msg_id": "c-1", "text": "   "}, ValidationFailed, "text"),
        ({"client_msg_id": "c-1", "text": "x" * 4097}, ValidationFailed, "text"),
        ({"client_msg_id": "c-1", "text": 5}, ValidationFailed, "text"),
        ({"client_msg_id": "c-1", "type": "typing", "text": "x"}, ValidationFailed, "type"),
        ({"client_msg_id": "c-1", "sent_at": "yesterday", "text": "x"}, ValidationFailed,
         "sent_at"),
        ({"client_msg_id": "c-1", "attachments": [{"type": "image", "url": "https://x"}] * 11},
         ValidationFailed, "attachments"),
        ({"client_msg_id": "c-1", "attachments": [{"type": "hologram"}]}, ValidationFailed,
         "attachments[0].type"),
        ({"client_msg_id": "c-1", "attachments": [{"type": "file", "url": "ftp://x"}]},
         ValidationFailed, "attachments[0].url"),
    ],
)  # fmt: skip
def test_bad_message_bodies_name_the_field(
    web: WebAdapter, body: bytes | dict[str, Any], error: type[Exception], field: str | None
) -> None:
    with pytest.raises(error) as caught:
        web.parse(request(body, token=web.issue_session(VISITOR)))
    assert getattr(caught.value, "field", None) == field


def test_messages_need_a_session(web: WebAdapter) -> None:
    body = {"client_msg_id": "c-1", "text": "hi"}
    with pytest.raises(Unauthenticated):
        web.verify(request(body))
    with pytest.raises(Unauthenticated):
        web.parse(request(body, token="forged.token.value"))


# -- WebSocket frames (web_ws_frames.jsonl) ------------------------------------------------


def agent_message(message_id: str, text: str, **fields: Any) -> Message:
    values: dict[str, Any] = {
        "id": message_id,
        "customer_id": "cus_01JH8Z3K9W2QX7M4T6R5B1C0DE",
        "conversation_id": "cnv_01JH8Z3K9W2QX7M4T6R5B1C0DE-1",
        "channel": "web",
        "direction": "outbound",
        "author": Author(kind="agent", id="agent-7"),
        "received_at": "2026-01-01T00:00:03.000Z",
        "text": text,
    }
    values.update(fields)
    return Message(**values)


def test_every_fixture_frame_is_parsed_or_rendered_exactly(web: WebAdapter) -> None:
    session = web.open_session(web.issue_session(VISITOR))
    handled = 0
    first_send: Received | None = None
    for line, frame in enumerate(FRAMES, 1):
        raw = json.dumps(frame)
        kind, sender = frame["type"], frame.get("from", "customer")
        if kind == "hello":
            assert web.parse_frame(raw, session) == Resume(after="msg_0000000041")
        elif kind == "message" and "client_msg_id" in frame:
            event = web.parse_frame(raw, session)
            assert isinstance(event, Received), line
            assert event.message.channel_message_id == "c-7f3a-0001"
            assert event.message.external_id == VISITOR
            assert event.message.text == "Hi 👋 is anyone there?"
            assert event.message.sent_at == "2026-01-01T00:00:00.120Z"
            if first_send is None:
                first_send = event
            else:  # the retry after reconnect: the same event, so the core acks the same id
                assert event == first_send
        elif kind == "ack":
            rendered = web.render_ack(frame["client_msg_id"], frame["id"])
            assert json.loads(rendered) == frame
        elif kind == "typing" and sender == "agent":
            assert json.loads(web.render_typing(frame["state"], "agent")) == frame
        elif kind == "message":
            rendered = web.render_message(agent_message(frame["id"], frame["text"]))
            assert json.loads(rendered) == frame
        elif kind == "read" and sender == "customer":
            mark = web.parse_frame(raw, session, NOW)
            assert mark == Marked(
                channel="web",
                external_id=VISITOR,
                kind="read",
                at_ms=NOW,
                detail={"up_to": "msg_0000000043", "watermark": True},
            )
        else:
            pytest.fail(f"line {line} not covered: {frame}")
        handled += 1
    assert handled == len(FRAMES) == 8
    assert first_send is not None


def test_server_frames_are_not_accepted_from_the_client(web: WebAdapter) -> None:
    session = web.open_session(web.issue_session(VISITOR))
    for frame in FRAMES:
        if frame.get("from") == "agent" and frame["type"] != "message":
            with pytest.raises(ValidationFailed) as caught:
                web.parse_frame(json.dumps(frame), session)
            assert caught.value.field == "from"
    with pytest.raises(ValidationFailed) as caught:
        web.parse_frame(json.dumps(FRAMES[2]), session)  # ack
    assert caught.value.field == "type"


def test_client_typing_ping_and_read_from_an_identified_session(web: WebAdapter) -> None:
    session = web.open_session(web.issue_session(VISITOR, user_id="cust_000123"))
    assert web.parse_frame('{"type":"typing","state":"stop"}', session) == Typing(
        "user:cust_000123", "stop"
    )
    assert web.parse_frame(b'{"type":"ping"}', session) == Ping()
    assert json.loads(web.render_pong()) == {"type": "pong"}
    mark = web.parse_frame('{"type":"read","up_to":"msg_1"}', session, NOW)
    assert isinstance(mark, Marked) and mark.external_id == "user:cust_000123"


def test_hello_without_resume_and_for_another_visitor(web: WebAdapter) -> None:
    session = web.open_session(web.issue_session(VISITOR))
    assert web.parse_frame('{"type":"hello"}', session) == Resume(after=None)
    with pytest.raises(Unauthenticated):
        web.parse_frame('{"type":"hello","anonymous_id":"vis_SOMEONEELSE"}', session)


@pytest.mark.parametrize(
    ("frame", "error", "field"),
    [
        ("not json", BadRequest, None),
        ("[1]", ValidationFailed, None),
        ("{}", ValidationFailed, "type"),
        ('{"type":"subscribe"}', ValidationFailed, "type"),
        ('{"type":"typing","state":"maybe"}', ValidationFailed, "state"),
        ('{"type":"read"}', ValidationFailed, "up_to"),
        ('{"type":"read","up_to":"msg 1"}', ValidationFailed, "up_to"),
        ('{"type":"hello","resume_after":5}', ValidationFailed, "resume_after"),
        ('{"type":"message","text":"x"}', ValidationFailed, "client_msg_id"),
    ],
)
def test_bad_frames_name_the_field(
    web: WebAdapter, frame: str, error: type[Exception], field: str | None
) -> None:
    session = web.open_session(web.issue_session(VISITOR))
    with pytest.raises(error) as caught:
        web.parse_frame(frame, session)
    assert getattr(caught.value, "field", None) == field


def test_oversized_frame_is_refused(web: WebAdapter) -> None:
    session = web.open_session(web.issue_session(VISITOR))
    frame = json.dumps({"type": "message", "client_msg_id": "c-1", "text": "x" * FRAME_MAX})
    with pytest.raises(PayloadTooLarge):
        web.parse_frame(frame, session)


def test_render_error_frame(web: WebAdapter) -> None:
    problem = ValidationFailed("a message needs text", field="text")
    assert json.loads(web.render_error(problem, client_msg_id="c-9")) == {
        "type": "error",
        "status": 422,
        "title": "Validation failed",
        "detail": "a message needs text",
        "field": "text",
        "client_msg_id": "c-9",
    }
    assert "field" not in json.loads(web.render_error(BadRequest("no")))


def test_render_read_and_bot_typing(web: WebAdapter) -> None:
    assert json.loads(web.render_read("msg_9")) == {"type": "read", "up_to": "msg_9",
                                                    "from": "agent"}  # fmt: skip
    assert json.loads(web.render_typing("start", "bot"))["from"] == "bot"


def test_render_message_optional_fields(web: WebAdapter) -> None:
    from omni.model import Attachment

    full = agent_message(
        "msg_50",
        "Here they are",
        author=Author(kind="bot", name="Shoe bot"),
        attachments=[Attachment(type="image", url="https://cdn.example.com/s.png")],
        sent_at="2026-01-01T00:00:04.000Z",
        reply_to="msg_49",
    )
    assert json.loads(web.render_message(full)) == {
        "type": "message",
        "id": "msg_50",
        "from": "bot",
        "name": "Shoe bot",
        "text": "Here they are",
        "attachments": [{"type": "image", "url": "https://cdn.example.com/s.png"}],
        "reply_to": "msg_49",
        "sent_at": "2026-01-01T00:00:04.000Z",
    }
    own = agent_message(
        "msg_42", "Hi", direction="inbound", author=Author(kind="customer"),
        channel_message_id="c-7f3a-0001",
    )  # fmt: skip
    assert json.loads(web.render_message(own))["client_msg_id"] == "c-7f3a-0001"
    elsewhere = agent_message("msg_44", "from IG", channel="instagram", direction="inbound",
                              author=Author(kind="customer"), channel_message_id="m_1")  # fmt: skip
    rendered = json.loads(web.render_message(elsewhere))
    assert rendered["channel"] == "instagram" and "client_msg_id" not in rendered


# -- Origin ---------------------------------------------------------------------------------


ALLOWED = ["https://shop.example.com", "https://*.example.org", "http://localhost:3000/"]


@pytest.mark.parametrize(
    ("origin", "ok"),
    [
        ("https://shop.example.com", True),
        ("https://SHOP.example.com", True),
        ("https://shop.example.com:443", True),
        ("https://shop.example.com:8443", False),
        ("http://shop.example.com", False),
        ("https://evil.shop.example.com", False),
        ("https://shop.example.com.evil.net", False),
        ("https://www.example.org", True),
        ("https://a.b.example.org", True),
        ("https://example.org", False),
        ("https://evilexample.org", False),
        ("http://localhost:3000", True),
        ("http://localhost", False),
        ("null", False),
        ("", False),
        (None, False),
        ("https://user@shop.example.com", False),
        ("https://shop.example.com/path", False),
        ("https://shop.example.com:99999", False),
        ("file://shop.example.com", False),
        ("https://shöp.example.com", False),
    ],
)
def test_allowed_origin(origin: str | None, ok: bool) -> None:
    assert allowed_origin(origin, ALLOWED) is ok


def test_allowed_origin_wildcard_and_empty() -> None:
    assert allowed_origin("https://anything.test", ["*"])
    assert not allowed_origin("null", ["*"])
    assert not allowed_origin("https://shop.example.com", [])


@pytest.mark.parametrize(
    ("entry", "ok"),
    [
        ("*", True),
        ("https://shop.example.com", True),
        ("http://localhost:8080", True),
        ("https://*.example.org", True),
        ("localhost:8080", False),
        ("shop.example.com", False),
        ("https://shop.example.com/widget", False),
    ],
)
def test_allowed_origin_entries_are_checked(entry: str, ok: bool) -> None:
    assert origin_entry_ok(entry) is ok
