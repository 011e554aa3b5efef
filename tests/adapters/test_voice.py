"""The Twilio voice adapter against every twilio_*/twiml_* payload in tests/payloads/voice/.

Each `.form` body has a `.sig.txt` sidecar with the auth token, the URL Twilio signed and the
signatures (without and with :443); the TwiML fixtures are compared structurally.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import random
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from adapters.voice.protocol import (
    CallWebhook,
    VoiceAdapter,
    dial,
    empty,
    gather,
    hangup,
    redirect,
    status_supersedes,
)
from adapters.voice.sender import send
from omni.channel import Adapter, InboundRequest, Received, Skipped
from omni.errors import BadRequest, ConfigError, Unauthenticated
from omni.model import Author, Message
from omni.settings import Secret
from omni.twilio import signature

PAYLOADS = Path(__file__).parent.parent / "payloads" / "voice"
FORM = "application/x-www-form-urlencoded"
PUBLIC = "https://omni.example.com"
AGENT = "+14155550142"
CALL_SID = "CA9f8e7d6c5b4a39281706f5e4d3c2b1a0"
CALLER = "+14155550123"


@dataclass(frozen=True)
class Signed:
    name: str
    body: bytes
    token: str
    url: str
    signature: str
    signature_443: str | None

    @property
    def path_query(self) -> str:
        return self.url.removeprefix(PUBLIC)

    @property
    def params(self) -> list[tuple[str, str]]:
        return parse_qsl(self.body.decode(), keep_blank_values=True)


def load(body_file: Path) -> Signed:
    sidecar = body_file.with_suffix(".sig.txt").read_text()

    def field(pattern: str) -> str | None:
        match = re.search(pattern, sidecar, re.MULTILINE)
        return match.group(1) if match else None

    token, url, sig = (
        field(r"^auth_token: (\S+)$"),
        field(r"^url[^:]*: (\S+)$"),
        field(r"^X-Twilio-Signature: (\S+)$"),
    )
    assert token and url and sig, body_file
    return Signed(
        name=body_file.stem,
        body=body_file.read_bytes(),
        token=token,
        url=url,
        signature=sig,
        signature_443=field(r"explicit :443 -> ([^;\s]+);"),
    )


FORMS = {path.stem: load(path) for path in sorted(PAYLOADS.glob("twilio_voice_*.form"))}
JSON_BODY = load(PAYLOADS / "twilio_json_body.json")
TOKEN = JSON_BODY.token


def adapter(token: str = TOKEN, public_url: str = PUBLIC) -> VoiceAdapter:
    return VoiceAdapter(token, AGENT, public_url)


def request(
    signed: Signed,
    *,
    url: str | None = None,
    body: bytes | None = None,
    sig: str | None = None,
    content_type: str = FORM,
    method: str = "POST",
) -> InboundRequest:
    headers = {"Content-Type": content_type, "X-Twilio-Signature": sig or signed.signature}
    return InboundRequest(
        method=method,
        url=signed.url if url is None else url,
        headers=headers,
        body=signed.body if body is None else body,
    )


def read(name: str, **kwargs: Any) -> CallWebhook:
    return adapter().read(request(FORMS[name], **kwargs))


def test_every_voice_fixture_is_covered() -> None:
    assert set(FORMS) == {
        "twilio_voice_incoming",
        "twilio_voice_gather_speech",
        "twilio_voice_gather_speech_nonlatin",
        "twilio_voice_gather_digits",
        "twilio_voice_gather_empty",
        "twilio_voice_dial_action",
        "twilio_voice_status_ringing",
        "twilio_voice_status_completed",
    }


def test_the_adapter_fits_the_seam() -> None:
    seam: Adapter = adapter()
    assert seam.channel == "voice"


# -- X-Twilio-Signature ------------------------------------------------------------------


@pytest.mark.parametrize("name", FORMS)
def test_fixture_signature_verifies(name: str) -> None:
    signed = FORMS[name]
    assert signed.token == TOKEN
    assert signature(signed.token, signed.url, signed.params) == signed.signature
    for url in (
        signed.url,  # the public form
        signed.path_query,  # only the path and query as omni received them
        "http://127.0.0.1:8080" + signed.path_query,  # omni behind a proxy
        "https://omni.example.com:443" + signed.path_query,
    ):
        adapter().verify(request(signed, url=url))


@pytest.mark.parametrize("name", FORMS)
def test_signature_with_the_default_port_verifies(name: str) -> None:
    signed = FORMS[name]
    assert signed.signature_443
    adapter().verify(request(signed, sig=signed.signature_443))
    # configured with the explicit port, both forms still pass (twilio-python does the same)
    with_port = adapter(public_url="https://omni.example.com:443")
    with_port.verify(request(signed, sig=signed.signature_443))
    with_port.verify(request(signed))


@pytest.mark.parametrize("name", FORMS)
def test_tampered_parameters_are_rejected(name: str) -> None:
    signed = FORMS[name]
    params = signed.params
    changed = [(k, "+14155550100" if k == "From" else v) for k, v in params]
    for body in (
        urlencode(changed).encode(),  # a value changed
        urlencode([*params, ("Digits", "9")]).encode(),  # a parameter added
        urlencode(params[1:]).encode(),  # a parameter dropped
        signed.body + b" ",  # a byte appended
    ):
        with pytest.raises(Unauthenticated):
            adapter().verify(request(signed, body=body))


@pytest.mark.parametrize("name", FORMS)
def test_wrong_token_is_rejected(name: str) -> None:
    with pytest.raises(Unauthenticated):
        adapter(token="00000000000000000000000000000000").verify(request(FORMS[name]))


@pytest.mark.parametrize("name", FORMS)
def test_the_query_string_is_part_of_the_signed_url(name: str) -> None:
    signed = FORMS[name]
    path, _, query = signed.path_query.partition("?")
    others = [path + "?turn=99", path + "/"] + ([path] if query else [])
    for url in others:
        with pytest.raises(Unauthenticated):
            adapter().verify(request(signed, url=url))


@pytest.mark.parametrize("name", FORMS)
def test_another_scheme_host_or_port_is_rejected(name: str) -> None:
    for public in (
        "http://omni.example.com",
        "https://other.example.com",
        "https://omni.example.com/prefix",
    ):
        with pytest.raises(Unauthenticated):
            adapter(public_url=public).verify(request(FORMS[name]))
    # a signature over another port is not one over the default port or none
    signed = FORMS[name]
    other_port = signature(TOKEN, signed.url.replace(".com/", ".com:8443/"), signed.params)
    with pytest.raises(Unauthenticated):
        adapter().verify(request(signed, sig=other_port))
    # configured with a port, the portless form is still tried (twilio-python's remove_port)
    with_port = adapter(public_url="https://omni.example.com:8443")
    with_port.verify(request(signed, sig=other_port))
    with_port.verify(request(signed))


def test_missing_or_empty_signature_is_rejected() -> None:
    signed = FORMS["twilio_voice_incoming"]
    bare = InboundRequest("POST", signed.url, {"Content-Type": FORM}, signed.body)
    with pytest.raises(Unauthenticated, match="missing"):
        adapter().verify(bare)
    with pytest.raises(Unauthenticated):
        adapter().verify(request(signed, sig="é" * 28))


def test_signature_header_name_is_case_insensitive() -> None:
    signed = FORMS["twilio_voice_incoming"]
    headers = {"content-type": FORM + "; charset=utf-8", "x-twilio-signature": signed.signature}
    adapter().verify(InboundRequest("POST", signed.url, headers, signed.body))


def test_a_body_the_signature_does_not_cover_is_rejected() -> None:
    signed = FORMS["twilio_voice_incoming"]
    with pytest.raises(Unauthenticated, match="form-encoded"):
        adapter().verify(request(signed, content_type="text/plain"))
    with pytest.raises(Unauthenticated):
        adapter().verify(request(signed, body=b"CallSid=%ff", sig=signed.signature))


def test_a_get_webhook_is_signed_over_its_url() -> None:
    signed = FORMS["twilio_voice_gather_digits"]
    url = f"{PUBLIC}/channels/voice/twilio/gather?{urlencode(signed.params)}"
    get = InboundRequest("GET", url, {"X-Twilio-Signature": signature(TOKEN, url)}, b"")
    adapter().verify(get)
    hook = adapter().read(get)
    assert hook.digits == "1042"
    assert hook.turn is None  # no turn in this URL: the message id falls back to a digest
    message = _received(hook).message
    assert message.channel_message_id.startswith(f"{CALL_SID}:gather:h")


# twilio-python's own vectors (tests/unit/test_request_validator.py), token "12345"
LIB_PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Caller": "+14158675309",
    "Digits": "1234",
    "From": "+14158675309",
    "To": "+18005551212",
}
LIB_PATH = "/myapp.php?foo=1&bar=2"


@pytest.mark.parametrize(
    ("public_url", "sig"),
    [
        ("https://mycompany.com", "RSOYDt4T1cUTdK1PDd93/VVr8B8="),
        ("https://mycompany.com", "kvajT1Ptam85bY51eRf/AJRuM3w="),  # signed with :443
        ("https://mycompany.com:1234", "RSOYDt4T1cUTdK1PDd93/VVr8B8="),  # port removed
        ("http://mycompany.com", "0ZXoZLH/DfblKGATFgpif+LLRf4="),  # signed with :80
        ("http://mycompany.com:1234", "Zmvh+3yNM1Phv2jhDCwEM3q5ebU="),  # port kept
    ],
)
def test_twilio_python_vectors(public_url: str, sig: str) -> None:
    lib = VoiceAdapter("12345", AGENT, public_url)
    body = urlencode(LIB_PARAMS).encode()
    lib.verify(
        InboundRequest("POST", LIB_PATH, {"Content-Type": FORM, "X-Twilio-Signature": sig}, body)
    )


def test_repeated_names_sort_their_distinct_values() -> None:
    pairs = [("Sid", "CA123"), ("SidAccount", "AC123"), ("Digits", "5678"), ("Digits", "1234")]
    url = "https://mycompany.com" + LIB_PATH
    assert signature("12345", url, pairs) == "IK+Dwps556ElfBT0I3Rgjkr1wJU="
    body = urlencode([*pairs, ("Digits", "1234")]).encode()
    headers = {"Content-Type": FORM, "X-Twilio-Signature": "IK+Dwps556ElfBT0I3Rgjkr1wJU="}
    VoiceAdapter("12345", AGENT, "https://mycompany.com").verify(
        InboundRequest("POST", LIB_PATH, headers, body)
    )


def test_json_body_variant_library_vector() -> None:
    body = b'{"property": "value", "boolean": true}'
    digest = hashlib.sha256(body).hexdigest()
    assert digest == "0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620"
    headers = {
        "Content-Type": "application/json",
        "X-Twilio-Signature": "a9nBmqA0ju/hNViExpshrM61xv4=",
    }
    lib = VoiceAdapter("12345", AGENT, "https://mycompany.com")
    lib.verify(InboundRequest("POST", f"{LIB_PATH}&bodySHA256={digest}", headers, body))


def test_json_body_fixture() -> None:
    signed = JSON_BODY
    json_request = request(signed, content_type="application/json")
    adapter().verify(json_request)
    adapter().verify(request(signed, url=signed.path_query, content_type="application/json"))
    for bad in (
        request(signed, body=signed.body.replace(b"caf", b"cof"), content_type="application/json"),
        request(signed, url=signed.url.replace("bodySHA256=5", "bodySHA256=6")),
        request(signed, sig=FORMS["twilio_voice_incoming"].signature),
    ):
        with pytest.raises(Unauthenticated):
            adapter().verify(bad)
    with pytest.raises(Unauthenticated):
        adapter(token="0" * 32).verify(json_request)
    # a verified JSON body is still not a voice webhook: voice webhooks are form-encoded
    with pytest.raises(BadRequest):
        adapter().parse(json_request)
    on_gather = request(
        signed, url="/channels/voice/twilio/gather", content_type="application/json"
    )
    with pytest.raises(BadRequest, match="form-encoded"):
        adapter().parse(on_gather)


# -- parsing -----------------------------------------------------------------------------


def _received(hook: CallWebhook) -> Received:
    (event,) = hook.events
    assert isinstance(event, Received)
    assert event.direction == "inbound"
    return event


def test_incoming_call_starts_the_call_on_the_timeline() -> None:
    hook = read("twilio_voice_incoming")
    assert (hook.kind, hook.call_id, hook.customer, hook.status) == (
        "call",
        CALL_SID,
        CALLER,
        "ringing",
    )
    assert hook.customer_phone == CALLER
    assert (hook.to, hook.direction) == ("+14155550199", "inbound")
    assert hook.account_id == "AC1b2c3d4e5f60718293a4b5c6d7e8f901"
    message = _received(hook).message
    assert message.channel == "voice"
    assert message.external_id == CALLER
    assert message.channel_message_id == f"{CALL_SID}:call"
    assert message.text is None
    assert message.voice is not None and message.voice.call_id == CALL_SID
    assert message.metadata == {
        "voice_event": "call_started",
        "call_status": "ringing",
        "direction": "inbound",
    }
    assert adapter().parse(request(FORMS["twilio_voice_incoming"])) == list(hook.events)


def test_gather_speech() -> None:
    hook = read("twilio_voice_gather_speech")
    assert (hook.kind, hook.turn, hook.reprompted, hook.empty) == ("gather", 1, False, False)
    message = _received(hook).message
    assert message.text == "I'd like to check my order status."
    assert message.channel_message_id == f"{CALL_SID}:gather:1"
    assert message.external_id == CALLER
    assert message.voice is not None
    assert message.voice.call_id == CALL_SID
    assert message.voice.transcript == "I'd like to check my order status."
    assert message.voice.confidence == pytest.approx(0.92365956)
    assert message.voice.digits is None
    assert message.metadata == {"voice_event": "gather", "input": "speech", "turn": 1}
    assert hook.next_turn == 2


def test_gather_speech_nonlatin_is_decoded() -> None:
    hook = read("twilio_voice_gather_speech_nonlatin")
    expected = "¿Dónde está mi pedido 4417? 注文はどこですか。2+2=4 & 100% seguro"
    assert hook.transcript == expected
    message = _received(hook).message
    assert message.text == expected
    assert message.channel_message_id == f"{CALL_SID}:gather:2"
    assert message.voice is not None and message.voice.confidence == 0.8125


def test_gather_digits() -> None:
    hook = read("twilio_voice_gather_digits")
    message = _received(hook).message
    assert message.text == "1042"
    assert message.voice is not None
    assert (message.voice.digits, message.voice.transcript, message.voice.confidence) == (
        "1042",
        None,
        None,
    )
    assert message.channel_message_id == f"{CALL_SID}:gather:3"
    assert message.metadata["input"] == "dtmf"


def test_gather_empty_is_recognisable() -> None:
    hook = read("twilio_voice_gather_empty")
    assert hook.empty and hook.turn == 4 and not hook.reprompted
    (event,) = hook.events
    assert isinstance(event, Skipped) and "no speech" in event.reason
    # a blank transcript counts as nothing said
    signed = FORMS["twilio_voice_gather_empty"]
    blank = urlencode([*signed.params, ("SpeechResult", "  "), ("Confidence", "0.0")]).encode()
    assert adapter().read(request(signed, body=blank)).empty


def test_a_retried_gather_has_the_same_message_id() -> None:
    first = _received(read("twilio_voice_gather_speech")).message
    again = _received(read("twilio_voice_gather_speech")).message
    assert first == again
    other_turn = FORMS["twilio_voice_gather_speech"].url.replace("turn=1", "turn=2")
    moved = _received(read("twilio_voice_gather_speech", url=other_turn)).message
    assert moved.channel_message_id == f"{CALL_SID}:gather:2"


def test_status_callbacks() -> None:
    ringing = read("twilio_voice_status_ringing")
    assert (ringing.kind, ringing.status, ringing.sequence, ringing.terminal) == (
        "status",
        "ringing",
        0,
        False,
    )
    assert ringing.at_ms == int(datetime(2026, 1, 1, 0, 0, 1, tzinfo=UTC).timestamp() * 1000)
    completed = read("twilio_voice_status_completed")
    assert (completed.status, completed.sequence, completed.duration_s) == ("completed", 2, 187)
    assert completed.terminal
    assert completed.at_ms == int(datetime(2026, 1, 1, 0, 3, 9, tzinfo=UTC).timestamp() * 1000)
    for hook in (ringing, completed):
        (event,) = hook.events
        assert isinstance(event, Skipped)


def test_out_of_order_status_keeps_the_latest() -> None:
    ringing = read("twilio_voice_status_ringing")
    completed = read("twilio_voice_status_completed")
    assert ringing.status and completed.status
    # in order
    assert status_supersedes(ringing.status, ringing.sequence, None, None)
    assert status_supersedes(completed.status, completed.sequence, ringing.status, ringing.sequence)
    # completed arrived first: the late ringing must not replace it
    assert not status_supersedes(
        ringing.status, ringing.sequence, completed.status, completed.sequence
    )
    # a repeat of the same callback changes nothing
    assert not status_supersedes(
        completed.status, completed.sequence, completed.status, completed.sequence
    )
    # without sequence numbers (the incoming-call webhook), progress decides
    assert status_supersedes("in-progress", None, "ringing", None)
    assert not status_supersedes("ringing", None, "in-progress", 1)
    assert not status_supersedes("in-progress", 3, "completed", 2)


def test_dial_action() -> None:
    hook = read("twilio_voice_dial_action")
    assert (hook.kind, hook.dial_status, hook.dial_duration_s) == ("dial", "no-answer", 0)
    assert hook.dial_call_id == "CA0a1b2c3d4e5f60718293a4b5c6d7e8f9"
    assert not hook.agent_answered
    (event,) = hook.events
    assert isinstance(event, Skipped) and "no-answer" in event.reason


@pytest.mark.parametrize(
    ("changes", "wanted"),
    [
        ({"Digits": "0"}, True),
        ({"Digits": "00"}, False),
        ({"Digits": "1042"}, False),
        ({"SpeechResult": "Can I talk to an agent, please?", "Confidence": "0.9"}, True),
        ({"SpeechResult": "HUMAN", "Confidence": "0.9"}, True),
        ({"SpeechResult": "a representative", "Confidence": "0.9"}, True),
        ({"SpeechResult": "my agency sent me", "Confidence": "0.9"}, False),
        ({"SpeechResult": "where is order 4417", "Confidence": "0.9"}, False),
    ],
)
def test_the_caller_asks_for_a_person(changes: dict[str, str], wanted: bool) -> None:
    signed = FORMS["twilio_voice_gather_empty"]
    body = urlencode([*signed.params, *changes.items()]).encode()
    assert adapter().read(request(signed, body=body)).wants_agent is wanted


def test_outbound_call_customer_is_the_called_party() -> None:
    signed = FORMS["twilio_voice_incoming"]
    params = [(k, "outbound-api" if k == "Direction" else v) for k, v in signed.params]
    hook = adapter().read(request(signed, body=urlencode(params).encode()))
    assert hook.customer == "+14155550199"


def test_voice_sdk_client_caller_is_kept_as_is() -> None:
    signed = FORMS["twilio_voice_incoming"]
    params = [(k, "client:alice" if k == "From" else v) for k, v in signed.params]
    hook = adapter().read(request(signed, body=urlencode(params).encode()))
    assert hook.customer == "client:alice" and hook.customer_phone is None


def _form_with(name: str, **changes: str | None) -> bytes:
    """A fixture's body (twilio_voice_<name>.form) with some parameters changed or removed."""
    params = dict(FORMS[f"twilio_voice_{name}"].params)
    for key, value in changes.items():
        if value is None:
            params.pop(key, None)
        else:
            params[key] = value
    return urlencode(params).encode()


V = "/channels/voice/twilio"
CALL_BODY = FORMS["twilio_voice_incoming"].body
MALFORMED: list[tuple[str, bytes, str]] = [
    (V, b"", FORM),
    (V, _form_with("incoming", CallSid=None), FORM),
    (V, _form_with("incoming", From=None), FORM),
    (V, b"CallSid=CA1&From=%ff%fe", FORM),  # not UTF-8
    (V, b'{"CallSid": "CA1"}', "application/json"),
    (V, CALL_BODY, ""),  # no Content-Type
    (V + "/other", CALL_BODY, FORM),
    ("/elsewhere", CALL_BODY, FORM),
    (V, urlencode([(f"X{i}", "1") for i in range(600)]).encode(), FORM),
    (V + "/gather", _form_with("gather_digits", Digits="12a"), FORM),
    (V + "/gather", _form_with("gather_speech", Confidence="high"), FORM),
    (V + "/gather", _form_with("gather_speech", Confidence="1.5"), FORM),
    (V + "/gather", _form_with("gather_speech", SpeechResult="a" * 5000), FORM),
    (V + "/gather?turn=x", FORMS["twilio_voice_gather_digits"].body, FORM),
    (V + "/status", _form_with("status_completed", SequenceNumber="two"), FORM),
    (V + "/status", _form_with("status_completed", CallDuration="-1"), FORM),
    (V + "/status", _form_with("status_completed", Timestamp="yesterday"), FORM),
    (V + "/status", _form_with("status_completed", CallStatus=None), FORM),
    (V + "/dial", _form_with("dial_action", DialCallStatus=None), FORM),
]


@pytest.mark.parametrize(("path", "body", "content_type"), MALFORMED)
def test_malformed_webhooks_are_bad_requests(path: str, body: bytes, content_type: str) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    with pytest.raises(BadRequest):
        adapter().parse(InboundRequest("POST", PUBLIC + path, headers, body))


def test_mangled_bodies_raise_only_the_seams_errors() -> None:
    rng = random.Random(20260101)
    paths = ["", "/gather?turn=1", "/status", "/dial"]
    for signed in FORMS.values():
        for _ in range(150):
            body = bytearray(signed.body)
            for _ in range(rng.randint(1, 8)):
                body[rng.randrange(len(body))] = rng.randrange(256)
            mangled = request(
                signed,
                url=f"/channels/voice/twilio{rng.choice(paths)}",
                body=bytes(body[: rng.randrange(len(body) + 1)]),
            )
            with contextlib.suppress(BadRequest):
                adapter().parse(mangled)
            with contextlib.suppress(Unauthenticated):
                adapter().verify(mangled)


# -- TwiML -------------------------------------------------------------------------------


def tree(xml: str) -> tuple[Any, ...]:
    """A comparable shape: tag, attributes, text (stripped), children, in order."""
    # the documents are our own output and fixtures, not untrusted input
    return _shape(ET.fromstring(xml.encode()))  # noqa: S314


def _shape(element: ET.Element) -> tuple[Any, ...]:
    text = (element.text or "").strip() or None
    return (element.tag, dict(element.attrib), text, tuple(_shape(c) for c in element))


def fixture(name: str) -> tuple[Any, ...]:
    return tree((PAYLOADS / name).read_text())


def test_twiml_gather_speech_fixture() -> None:
    xml = gather(
        "Hi, this is Omni. How can I help you today?",
        action="/channels/voice/twilio/gather?turn=1&lang=en-US",
        modes="speech",
        language="en-US",
        voice="Polly.Joanna",
        fallthrough="/channels/voice/twilio/gather?reprompt=1",
    )
    assert tree(xml) == fixture("twiml_gather_speech.xml")
    assert xml.startswith('<?xml version="1.0" encoding="UTF-8"?>')
    assert "turn=1&amp;lang=en-US" in xml


def test_twiml_dial_agent_fixture() -> None:
    xml = dial(
        ["client:agent_42", "+14155550142"],
        action="/channels/voice/twilio/dial",
        say_first="Connecting you to an agent. This call may be recorded.",
    )
    assert tree(xml) == fixture("twiml_dial_agent.xml")


def test_twiml_hangup_fixture() -> None:
    assert tree(hangup("Thanks for calling. Goodbye.")) == fixture("twiml_hangup.xml")


def test_twiml_redirect_fixture() -> None:
    assert tree(redirect("/channels/voice/twilio?reentry=1")) == fixture("twiml_redirect.xml")


def test_twiml_empty() -> None:
    assert tree(empty()) == ("Response", {}, None, ())


def test_twiml_escapes_text_and_attributes() -> None:
    said = 'Order <4417> & "shoes" it\'s ready'
    action = 'https://omni.example.com/g?a=1&b="<x>"'
    xml = gather([said, "注文 ✓"], action=action, voice="Polly.Joanna")
    assert "&amp;" in xml and "&lt;4417&gt;" in xml
    shape = tree(xml)
    listen = shape[3][0]
    assert listen[1]["action"] == action
    assert [say[2] for say in listen[3]] == [said, "注文 ✓"]
    # characters XML cannot carry are dropped, and the document still parses
    assert tree(hangup("bell\x07 and\x00 nul\ufffe"))[3][0][2] == "bell and nul"


def test_twiml_builders_refuse_nonsense() -> None:
    with pytest.raises(ValueError):
        gather("hi", action="/g", modes="voice")
    with pytest.raises(ValueError):
        dial(["4155550142"], action="/d")
    with pytest.raises(ValueError):
        dial([], action="/d")
    with pytest.raises(ValueError):
        dial([f"+1415555{i:04d}" for i in range(11)], action="/d")


def test_greeting_listens_for_turn_one() -> None:
    xml = adapter().greet("Are you calling about order 4417?")
    action = f"{PUBLIC}/channels/voice/twilio/gather?turn=1"
    assert tree(xml) == (
        "Response",
        {},
        None,
        (
            (
                "Gather",
                {
                    "input": "speech dtmf",
                    "action": action,
                    "method": "POST",
                    "speechTimeout": "auto",
                    "language": "en-US",
                    "actionOnEmptyResult": "true",
                },
                None,
                (
                    (
                        "Say",
                        {"voice": "Polly.Joanna", "language": "en-US"},
                        "Are you calling about order 4417?",
                        (),
                    ),
                ),
            ),
            ("Redirect", {"method": "POST"}, action, ()),
        ),
    )


def test_bot_reply_is_spoken_in_the_next_gather() -> None:
    hook = read("twilio_voice_gather_speech")
    shape = tree(adapter().speak("Order 4417 ships tomorrow.", turn=hook.next_turn))
    listen = shape[3][0]
    assert listen[1]["action"] == f"{PUBLIC}/channels/voice/twilio/gather?turn=2"
    assert listen[3][0][2] == "Order 4417 ships tomorrow."


def test_empty_gather_reprompts_once_then_hangs_up() -> None:
    voice = adapter()
    first = read("twilio_voice_gather_empty")
    reprompt = tree(voice.on_empty(first, reprompt="Sorry, I missed that.", goodbye="Goodbye."))
    listen = reprompt[3][0]
    assert listen[0] == "Gather"
    next_action = listen[1]["action"]
    assert next_action == f"{PUBLIC}/channels/voice/twilio/gather?turn=5&reprompt=1"
    assert listen[3][0][2] == "Sorry, I missed that."
    # the caller stays silent again: Twilio posts to the re-prompt's action
    second = read("twilio_voice_gather_empty", url=next_action)
    assert second.empty and second.reprompted and second.turn == 5
    bye = tree(voice.on_empty(second, reprompt="Sorry, I missed that.", goodbye="Goodbye."))
    assert [child[0] for child in bye[3]] == ["Say", "Hangup"]
    assert bye[3][0][2] == "Goodbye."


def test_transfer_dials_the_agent_number() -> None:
    shape = tree(adapter().transfer("Connecting you to an agent.", turn=3))
    say, connect = shape[3]
    assert say[2] == "Connecting you to an agent."
    assert connect[0] == "Dial"
    assert connect[1] == {
        "action": f"{PUBLIC}/channels/voice/twilio/dial?turn=3",
        "method": "POST",
        "timeout": "20",
        "answerOnBridge": "true",
    }
    assert connect[3] == (("Number", {}, AGENT, ()),)
    client = VoiceAdapter(TOKEN, "client:agent_42", PUBLIC).transfer()
    assert tree(client)[3][0][3] == (("Client", {}, "agent_42", ()),)


def test_adapter_redirect_is_absolute() -> None:
    shape = tree(adapter().redirect(reentry=1))
    assert shape[3][0][2] == f"{PUBLIC}/channels/voice/twilio?reentry=1"


# -- deliver, configuration --------------------------------------------------------------


async def test_the_sender_says_replies_belong_to_the_live_call() -> None:
    message = Message(
        id="m1",
        customer_id="c1",
        conversation_id="c1:1",
        channel="voice",
        direction="outbound",
        author=Author(kind="bot"),
        received_at="2026-01-01T00:00:00.000Z",
        text="Your order ships tomorrow.",
    )
    delivery = await send(message, CALLER)
    assert delivery.status == "failed"
    assert delivery.retry is False
    assert (delivery.reason or "").startswith("voice replies are spoken during a call")


@pytest.mark.parametrize(
    ("token", "agent", "public_url"),
    [
        ("", AGENT, PUBLIC),
        (TOKEN, "4155550142", PUBLIC),
        (TOKEN, "client:agent 42", PUBLIC),
        (TOKEN, AGENT, "ftp://omni.example.com"),
        (TOKEN, AGENT, "https://omni.example.com:port"),
        (TOKEN, AGENT, "https://omni.example.com/?x=1"),
        (TOKEN, AGENT, "omni.example.com"),
    ],
)
def test_bad_configuration_is_a_config_error(token: str, agent: str, public_url: str) -> None:
    with pytest.raises(ConfigError):
        VoiceAdapter(token, agent, public_url)


def test_without_an_agent_number_calls_are_not_transferred() -> None:
    for unset in (None, ""):
        voice = VoiceAdapter(TOKEN, unset, PUBLIC)
        assert voice.agent_number is None
        with pytest.raises(ValueError, match="agent_number"):
            voice.transfer("Connecting you.")


def test_a_sip_agent_is_dialled() -> None:
    shape = tree(VoiceAdapter(TOKEN, "sip:agents@pbx.example.com", PUBLIC).transfer())
    assert shape[3][0][3] == (("Sip", {}, "sip:agents@pbx.example.com", ()),)


def test_secret_token_and_a_repr_that_hides_it() -> None:
    voice = VoiceAdapter(Secret(TOKEN), AGENT, "https://user:pw@omni.example.com:443/")
    assert voice.public_url == PUBLIC  # credentials and the default port are not signed
    voice.verify(request(FORMS["twilio_voice_incoming"]))
    assert TOKEN not in repr(voice)


def test_public_url_with_a_prefix() -> None:
    signed = FORMS["twilio_voice_gather_digits"]
    url = "https://omni.example.com/omni" + signed.path_query
    sig = signature(TOKEN, url, signed.params)
    voice = VoiceAdapter(TOKEN, AGENT, "https://omni.example.com/omni/")
    for seen in (url, signed.path_query, "http://10.0.0.7:8080" + signed.path_query):
        voice.verify(request(signed, url=seen, sig=sig))
        assert voice.read(request(signed, url=seen)).turn == 3
    assert voice.greet("hi").count("https://omni.example.com/omni/channels/voice/twilio/gather")


# -- through a real aiohttp server, the way the core's routes will call it ----------------


async def test_through_an_aiohttp_route(aiohttp_client: Any) -> None:
    voice = adapter()

    async def gather_route(request: web.Request) -> web.Response:
        inbound = InboundRequest(
            method=request.method,
            url=request.raw_path,
            headers=request.headers,
            body=await request.read(),
        )
        try:
            voice.verify(inbound)
            voice.verify(dataclasses.replace(inbound, url=str(request.url)))  # either form works
        except Unauthenticated:
            return web.Response(status=401)
        hook = voice.read(inbound)
        reply = f"You said {hook.transcript}"
        return web.Response(text=voice.speak(reply, turn=hook.next_turn), content_type="text/xml")

    app = web.Application()
    app.router.add_post("/channels/voice/twilio/gather", gather_route)
    client: TestClient[web.Request, web.Application] = await aiohttp_client(app)
    signed = FORMS["twilio_voice_gather_speech_nonlatin"]
    headers = {"Content-Type": FORM, "X-Twilio-Signature": signed.signature}
    response = await client.post(signed.path_query, data=signed.body, headers=headers)
    assert response.status == 200
    assert response.content_type == "text/xml"
    listen = tree(await response.text())[3][0]
    assert listen[3][0][2].startswith("You said ¿Dónde está")
    assert listen[1]["action"].endswith("gather?turn=3")
    tampered = signed.body.replace(b"4417", b"4418")
    response = await client.post(signed.path_query, data=tampered, headers=headers)
    assert response.status == 401
