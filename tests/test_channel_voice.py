"""The phone channel end to end: Twilio's webhooks through the real app on a real Valkey,
the voice bot as a local server, TwiML read as XML.

Signatures are made here the way Twilio's documentation describes (independently of
`adapters.voice`), and the signed fixtures under tests/payloads/voice/ are replayed
against the public URL they were signed for (their .sig.txt sidecars)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from adapters.voice import speech as voice
from omni.app import create_app
from tests.conftest import AGENT, BOT, ingest, make_settings, snapshot
from tests.test_bots import SECRET, BotReceiver, ServerFactory, serve
from tests.test_replies_api import FAST, history, until

PAYLOADS = Path(__file__).parent / "payloads" / "voice"
PUBLIC = "https://omni.example.com"
TOKEN = "f3a9c2e1b4d5a6978877665544332211"
AGENT_NUMBER = "+14155550142"
CALLER = "+14155550123"
CALL = "CA9f8e7d6c5b4a39281706f5e4d3c2b1a0"
FORM = "application/x-www-form-urlencoded"
PROBLEM = "application/problem+json"
Params = Sequence[tuple[str, str]]


def twilio_signature(url: str, params: Params, token: str = TOKEN) -> str:
    """Twilio's documented algorithm: the full URL, then every POST parameter's name and
    value, sorted by name, HMAC-SHA1 with the auth token, base64."""
    payload = url + "".join(name + value for name, value in sorted(params))
    mac = hmac.new(token.encode(), payload.encode("utf-8"), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode()


@dataclass(frozen=True)
class Fixture:
    name: str
    body: bytes
    url: str  # the URL Twilio signed
    signature: str
    signature_443: str

    @property
    def params(self) -> list[tuple[str, str]]:
        return parse_qsl(self.body.decode(), keep_blank_values=True)


def _fixture(path: Path) -> Fixture:
    sidecar = path.with_suffix(".sig.txt").read_text()

    def line(pattern: str) -> str:
        found = re.search(pattern, sidecar, re.MULTILINE)
        assert found, (path.name, pattern)
        return found.group(1)

    assert line(r"^auth_token: (\S+)$") == TOKEN
    return Fixture(
        name=path.stem.removeprefix("twilio_voice_"),
        body=path.read_bytes(),
        url=line(r"^url[^:]*: (\S+)$"),
        signature=line(r"^X-Twilio-Signature: (\S+)$"),
        signature_443=line(r"explicit :443 -> ([^;\s]+);"),
    )


FIXTURES = {f.name: f for f in map(_fixture, sorted(PAYLOADS.glob("twilio_voice_*.form")))}
# A caller's parameters as Twilio sends them on every webhook of the call.
CALLER_PARAMS = [
    (k, v)
    for k, v in FIXTURES["incoming"].params
    if k not in ("CallStatus", "CallToken", "StirVerstat")
]


def params(**extra: str) -> list[tuple[str, str]]:
    """The caller's parameters mid-call, with `extra` added or replacing."""
    base = dict([*CALLER_PARAMS, ("CallStatus", "in-progress")])
    base.update(extra)
    return list(base.items())


# -- talking to the app as Twilio does ---------------------------------------------------


async def voice_app(
    aiohttp_client: Any,
    redis_url: str,
    *,
    bot_url: str | None = None,
    agent_number: str | None = AGENT_NUMBER,
    timeout_ms: int = 5000,
    **sections: dict[str, Any],
) -> TestClient:
    twilio = {"auth_token": TOKEN}
    if agent_number:
        twilio["agent_number"] = agent_number
    if bot_url:
        sections["bots"] = {"voice": {"url": bot_url, "secret": SECRET, "timeout_ms": timeout_ms}}
    settings = make_settings(redis_url, server={"public_url": PUBLIC}, twilio=twilio, **sections)
    return await aiohttp_client(create_app(settings))


async def bot_app(
    aiohttp_client: Any, aiohttp_server: ServerFactory, redis_url: str, receiver: BotReceiver,
    **kwargs: Any,
) -> TestClient:  # fmt: skip
    return await voice_app(
        aiohttp_client, redis_url, bot_url=await serve(aiohttp_server, receiver), **kwargs
    )


async def post(
    client: TestClient,
    url: str,
    form: Params | None = None,
    *,
    body: bytes | None = None,
    signature: str | None = None,
    content_type: str = FORM,
) -> aiohttp.ClientResponse:
    """POST to the path and query of `url` (absolute, as Twilio calls it), signed for it."""
    data = urlencode(form or []).encode() if body is None else body
    headers = {"Content-Type": content_type}
    if signature is None and form is not None:
        signature = twilio_signature(url, form)
    if signature is not None:
        headers["X-Twilio-Signature"] = signature
    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    return await client.post(path, data=data, headers=headers)


async def replay(client: TestClient, name: str, *, port: bool = False) -> aiohttp.ClientResponse:
    """Send a signed fixture to the route it was signed for."""
    fixture = FIXTURES[name]
    signature = fixture.signature_443 if port else fixture.signature
    return await post(client, fixture.url, body=fixture.body, signature=signature)


async def twiml(response: aiohttp.ClientResponse) -> ET.Element:
    assert response.status == 200, await response.text()
    assert response.content_type == "text/xml"
    root = ET.fromstring(await response.read())  # noqa: S314 - our own TwiML
    assert root.tag == "Response"
    return root


def listening(root: ET.Element) -> tuple[str, list[str]]:
    """The <Gather>'s action and what is said inside it; it must listen for both."""
    (gather,) = root.findall("Gather")
    assert gather.attrib["input"] == "speech dtmf"
    assert [child.tag for child in root] == ["Gather", "Redirect"]
    return gather.attrib["action"], [say.text or "" for say in gather.findall("Say")]


def dialled(root: ET.Element) -> tuple[list[str], str, list[str]]:
    """What is said before the <Dial>, its action, and the numbers it dials."""
    assert [child.tag for child in root][-1] == "Dial"
    dial = root.find("Dial")
    assert dial is not None
    said = [say.text or "" for say in root.findall("Say")]
    return said, dial.attrib["action"], [n.text or "" for n in dial.findall("Number")]


async def call(client: TestClient) -> str:
    """An incoming call from CALLER; returns the greeting's gather action."""
    action, _ = listening(await twiml(await replay(client, "incoming")))
    return action


async def customer(client: TestClient, phone: str = CALLER) -> str:
    response = await client.get(
        "/v1/context", params={"channel": "voice", "external_id": phone}, headers=BOT
    )
    assert response.status == 200, await response.text()
    cid: str = (await response.json())["customer"]["id"]
    return cid


def events(messages: list[dict[str, Any]], event: str) -> list[dict[str, Any]]:
    return [m for m in messages if m.get("metadata", {}).get("voice_event") == event]


# -- every fixture through its route -----------------------------------------------------

EXPECTED_TAGS = {
    "incoming": ["Gather", "Redirect"],
    "gather_speech": ["Gather", "Redirect"],
    "gather_speech_nonlatin": ["Gather", "Redirect"],
    "gather_digits": ["Gather", "Redirect"],
    "gather_empty": ["Gather", "Redirect"],
    "status_ringing": [],
    "status_completed": [],
    "dial_action": ["Say", "Hangup"],  # signed without our turn: nothing to carry on from
}


def test_every_fixture_has_an_expected_answer() -> None:
    assert set(FIXTURES) == set(EXPECTED_TAGS)


@pytest.mark.parametrize("port", [False, True], ids=["as-signed", "with-:443"])
@pytest.mark.parametrize("name", sorted(EXPECTED_TAGS))
async def test_every_signed_fixture_is_answered_on_its_route(
    aiohttp_client: Any, redis_url: str, redis: Redis, name: str, port: bool
) -> None:
    client = await voice_app(aiohttp_client, redis_url)
    root = await twiml(await replay(client, name, port=port))
    assert [child.tag for child in root] == EXPECTED_TAGS[name]


async def test_the_json_body_variant_is_refused_without_storing(
    aiohttp_client: Any, redis_url: str, redis: Redis
) -> None:
    client = await voice_app(aiohttp_client, redis_url)
    before = await snapshot(redis)
    body = (PAYLOADS / "twilio_json_body.json").read_bytes()
    sidecar = (PAYLOADS / "twilio_json_body.sig.txt").read_text()
    signed_url = re.search(r"^url: (\S+)$", sidecar, re.MULTILINE)
    signature = re.search(r"^X-Twilio-Signature: (\S+)$", sidecar, re.MULTILINE)
    assert signed_url and signature
    # Its own URL is no webhook of omni's.
    response = await post(
        client, signed_url[1], body=body, signature=signature[1], content_type="application/json"
    )
    assert (response.status, response.content_type) == (404, PROBLEM)
    # Signed for a real route (bodySHA256 in the URL, no parameters): read, and refused.
    url = f"{PUBLIC}/channels/voice/twilio?bodySHA256={hashlib.sha256(body).hexdigest()}"
    response = await post(
        client, url, body=body, signature=twilio_signature(url, []), content_type="application/json"
    )
    assert (response.status, response.content_type) == (400, PROBLEM)
    # Unsigned, or signed as if it were a form: not Twilio's.
    for signature_value in (None, twilio_signature(f"{PUBLIC}/channels/voice/twilio", [])):
        response = await post(
            client,
            f"{PUBLIC}/channels/voice/twilio",
            body=body,
            signature=signature_value,
            content_type="application/json",
        )
        assert (response.status, response.content_type) == (401, PROBLEM)
    assert await snapshot(redis) == before


# -- the greeting ---------------------------------------------------------------------------


async def test_an_unknown_caller_gets_a_generic_greeting(
    aiohttp_client: Any, redis_url: str, redis: Redis
) -> None:
    client = await voice_app(aiohttp_client, redis_url)
    action, said = listening(await twiml(await replay(client, "incoming")))
    assert action == f"{PUBLIC}/channels/voice/twilio/gather?turn=1"
    assert said == [voice.HELLO]
    # The call is on the caller's new timeline, as the voice identity From.
    (started,) = await history(client, await customer(client))
    assert (started["channel"], started["direction"]) == ("voice", "inbound")
    assert started["voice"] == {"call_id": CALL}
    assert started["metadata"]["voice_event"] == "call_started"


async def test_a_known_caller_is_greeted_with_what_they_last_wrote(
    aiohttp_client: Any, redis_url: str, redis: Redis
) -> None:
    client = await voice_app(aiohttp_client, redis_url)
    web = await ingest(
        client, channel="web", external_id="visitor-9", channel_message_id="w1",
        text="Do you have these shoes in size 42?", author_name="Ana Souza",
    )  # fmt: skip
    cid = web["customer_id"]
    linked = await client.post(
        f"/v1/customers/{cid}/identities",
        json={"channel": "voice", "external_id": CALLER},
        headers=AGENT,
    )
    assert linked.status == 201, await linked.text()
    _, (greeting,) = listening(await twiml(await replay(client, "incoming")))
    assert greeting.startswith("Hi Ana, welcome back.")
    assert "our website chat" in greeting
    assert "Do you have these shoes in size 42" in greeting
    assert [m["channel"] for m in await history(client, cid)] == ["voice", "web"]


async def test_a_caller_whose_verified_phone_is_on_a_profile_is_that_customer(
    aiohttp_client: Any, redis_url: str, redis: Redis
) -> None:
    """The acceptance story: the number matches the verified phone on the profile, and the
    greeting asks about the order instead of making the caller repeat it."""
    client = await voice_app(aiohttp_client, redis_url)
    web = await ingest(client, channel="web", external_id="visitor-9", text="where is my order?")
    cid = web["customer_id"]
    profile = {"name": "Ana Souza", "phone": CALLER, "phone_verified": True}
    response = await client.patch(f"/v1/customers/{cid}/profile", json=profile, headers=AGENT)
    assert response.status == 200, await response.text()
    cart = await client.get(f"/v1/customers/{cid}/cart", headers=BOT)
    placed = {"items": [], "stage": "placed", "order_id": "4417"}
    response = await client.put(
        f"/v1/customers/{cid}/cart",
        json=placed,
        headers={**BOT, "If-Match": cart.headers["ETag"]},
    )
    assert response.status == 200, await response.text()

    _, (greeting,) = listening(await twiml(await replay(client, "incoming")))
    assert greeting == "Hi Ana, welcome back. Are you calling about order 4417?"
    assert await customer(client) == cid
    call_started, *earlier = await history(client, cid)
    assert call_started["metadata"]["voice_event"] == "call_started"
    assert "web" in [m["channel"] for m in earlier]


async def test_an_unverified_phone_on_a_profile_does_not_claim_the_caller(
    aiohttp_client: Any, redis_url: str, redis: Redis
) -> None:
    client = await voice_app(aiohttp_client, redis_url)
    web = await ingest(client, channel="web", external_id="visitor-9")
    cid = web["customer_id"]
    profile = {"name": "Ana Souza", "phone": CALLER}
    response = await client.patch(f"/v1/customers/{cid}/profile", json=profile, headers=AGENT)
    assert response.status == 200
    _, said = listening(await twiml(await replay(client, "incoming")))
    assert said == [voice.HELLO]
    assert await customer(client) != cid


# -- a whole call with the voice bot -------------------------------------------------------


async def test_a_whole_call_with_the_bot(
    aiohttp_client: Any, aiohttp_server: ServerFactory, redis_url: str, redis: Redis
) -> None:
    receiver = BotReceiver()
    receiver.answers = [
        (200, {"replies": [{"text": "Order 4417 ships tomorrow."}, {"text": "Anything else?"}]}),
        (200, {"replies": [{"text": "Option 1042 noted."}]}),
    ]
    client = await bot_app(aiohttp_client, aiohttp_server, redis_url, receiver)
    action = await call(client)

    form = params(SpeechResult="Where is my order 4417?", Confidence="0.93")
    action, said = listening(await twiml(await post(client, action, form)))
    # The bot was asked while Twilio waited: its replies are in this very answer.
    assert said == ["Order 4417 ships tomorrow.", "Anything else?"]
    assert action == f"{PUBLIC}/channels/voice/twilio/gather?turn=2"
    cid = await customer(client)
    (body,) = receiver.delivered.values()
    assert body["bot"] == "voice" and body["customer_id"] == cid
    assert body["message"]["voice"] == {
        "call_id": CALL,
        "transcript": "Where is my order 4417?",
        "confidence": 0.93,
    }
    assert body["context"]["recent_messages"][-1]["id"] == body["message"]["id"]

    action, said = listening(await twiml(await post(client, action, params(Digits="1042"))))
    assert said == ["Option 1042 noted."]
    assert action.endswith("gather?turn=3")

    timeline = list(reversed(await history(client, cid)))
    assert [(m["direction"], m["author"]["kind"], m.get("text")) for m in timeline] == [
        ("inbound", "customer", None),
        ("inbound", "customer", "Where is my order 4417?"),
        ("outbound", "bot", "Order 4417 ships tomorrow."),
        ("outbound", "bot", "Anything else?"),
        ("inbound", "customer", "1042"),
        ("outbound", "bot", "Option 1042 noted."),
    ]
    heard, spoken = timeline[1], timeline[2]
    assert heard["voice"]["confidence"] == 0.93
    assert timeline[4]["voice"] == {"call_id": CALL, "digits": "1042"}
    assert spoken["status"]["state"] == "delivered"  # it was spoken
    assert (spoken["channel"], spoken["reply_to"]) == ("voice", heard["id"])
    # The bot was called once per message, synchronously, and never also through the outbox.
    assert len(receiver.attempts) == 2
    deliveries = await client.get(f"/v1/customers/{cid}/deliveries", headers=AGENT)
    assert (await deliveries.json())["items"] == []

    # Twilio reports the end of the call: one event with its duration closes the call.
    assert not list(await twiml(await replay(client, "status_completed")))
    assert not list(await twiml(await replay(client, "status_completed")))
    (ended,) = events(await history(client, cid), "call_ended")
    assert ended["author"]["kind"] == "system"
    assert ended["metadata"] == {
        "voice_event": "call_ended",
        "call_sid": CALL,
        "status": "completed",
        "duration_s": 187,
    }
    assert ended["text"] == "Call ended: completed, 3 min 7 s"
    # A late "ringing" (callbacks arrive in any order) does not reopen the call.
    before = await snapshot(redis)
    assert not list(await twiml(await replay(client, "status_ringing")))
    assert await snapshot(redis) == before


async def test_the_latest_call_status_is_kept_whatever_the_order(
    aiohttp_client: Any, redis_url: str, redis: Redis
) -> None:
    client = await voice_app(aiohttp_client, redis_url)
    await call(client)
    status_url = f"{PUBLIC}/channels/voice/twilio/status"
    before = await snapshot(redis)
    progress = params(CallStatus="in-progress", SequenceNumber="1")
    assert not list(await twiml(await post(client, status_url, progress)))
    assert await snapshot(redis) != before
    held = await snapshot(redis)
    assert not list(await twiml(await replay(client, "status_ringing")))  # older news
    assert await snapshot(redis) == held
    assert events(await history(client, await customer(client)), "call_ended") == []
    await replay(client, "status_completed")
    assert len(events(await history(client, await customer(client)), "call_ended")) == 1


async def test_non_latin_speech_is_stored_and_answered_as_is(
    aiohttp_client: Any, aiohttp_server: ServerFactory, redis_url: str, redis: Redis
) -> None:
    receiver = BotReceiver()
    receiver.default = (200, {"replies": [{"text": "ご注文は明日発送されます。¿Algo más? <&>"}]})
    client = await bot_app(aiohttp_client, aiohttp_server, redis_url, receiver)
    action, said = listening(await twiml(await replay(client, "gather_speech_nonlatin")))
    assert said == ["ご注文は明日発送されます。¿Algo más? <&>"]
    assert action.endswith("gather?turn=3")
    expected = "¿Dónde está mi pedido 4417? 注文はどこですか。2+2=4 & 100% seguro"
    (body,) = receiver.delivered.values()
    assert body["message"]["text"] == expected
    heard = events(await history(client, await customer(client)), "gather")
    assert [(m["text"], m["voice"]["confidence"]) for m in heard] == [(expected, 0.8125)]


async def test_without_a_bot_the_caller_hears_a_polite_prompt(
    aiohttp_client: Any, redis_url: str, redis: Redis
) -> None:
    client = await voice_app(aiohttp_client, redis_url)
    action, said = listening(await twiml(await replay(client, "gather_speech")))
    assert said == [voice.NO_BOT]
    assert action.endswith("gather?turn=2")
    (heard,) = events(await history(client, await customer(client)), "gather")
    assert heard["text"] == "I'd like to check my order status."
    assert heard["voice"]["confidence"] == 0.92365956


async def test_silence_is_reprompted_once_then_the_call_ends(
    aiohttp_client: Any, aiohttp_server: ServerFactory, redis_url: str, redis: Redis
) -> None:
    receiver = BotReceiver()
    client = await bot_app(aiohttp_client, aiohttp_server, redis_url, receiver)
    action = await call(client)
    action, said = listening(await twiml(await post(client, action, params())))
    assert said == [voice.REPROMPT]
    assert action == f"{PUBLIC}/channels/voice/twilio/gather?turn=2&reprompt=1"
    bye = await twiml(await post(client, action, params()))
    assert [(child.tag, child.text) for child in bye] == [("Say", voice.GOODBYE), ("Hangup", None)]
    # Silence stores nothing and asks the bot nothing.
    assert len(await history(client, await customer(client))) == 1
    assert receiver.attempts == []


async def test_speech_after_a_reprompt_carries_on_as_usual(
    aiohttp_client: Any, redis_url: str, redis: Redis
) -> None:
    client = await voice_app(aiohttp_client, redis_url)
    action, _ = listening(await twiml(await post(client, await call(client), params())))
    again = params(SpeechResult="Sorry, my order", Confidence="0.8")
    action, said = listening(await twiml(await post(client, action, again)))
    assert said == [voice.NO_BOT]
    assert action.endswith("gather?turn=3")  # not a re-prompt any more


async def test_a_retried_gather_is_stored_once_and_the_bot_asked_once(
    aiohttp_client: Any, aiohttp_server: ServerFactory, redis_url: str, redis: Redis
) -> None:
    receiver = BotReceiver()
    receiver.answers = [(200, {"replies": [{"text": "It ships tomorrow."}]})]
    receiver.default = (200, {"replies": [{"text": "A second answer nobody should hear."}]})
    client = await bot_app(aiohttp_client, aiohttp_server, redis_url, receiver)
    first = await twiml(await replay(client, "gather_speech"))
    again = await twiml(await replay(client, "gather_speech"))
    # Twilio retries when it lost our answer: it gets the same turn again.
    assert listening(again) == listening(first)
    assert listening(first)[1] == ["It ships tomorrow."]
    assert len(receiver.attempts) == 1
    timeline = await history(client, await customer(client))
    assert [m.get("text") for m in reversed(timeline)] == [
        "I'd like to check my order status.",
        "It ships tomorrow.",
    ]


@pytest.mark.parametrize(
    ("delay_s", "answer"),
    [(2.0, (200, {"replies": [{"text": "Too late."}]})), (0, (500, {})), (0, (200, b"not json"))],
    ids=["timeout", "error", "malformed"],
)
async def test_a_bot_that_fails_gets_the_caller_an_apology_and_another_turn(
    aiohttp_client: Any,
    aiohttp_server: ServerFactory,
    redis_url: str,
    redis: Redis,
    delay_s: float,
    answer: tuple[int, Any],
) -> None:
    receiver = BotReceiver(delay_s=delay_s)
    receiver.default = answer
    client = await bot_app(aiohttp_client, aiohttp_server, redis_url, receiver, timeout_ms=200)
    action, said = listening(await twiml(await replay(client, "gather_speech")))
    assert said == [voice.BOT_FAILED]
    assert action.endswith("gather?turn=2")
    # Nothing the caller said is lost.
    (heard,) = await history(client, await customer(client))
    assert heard["text"] == "I'd like to check my order status."


# -- handing the call to a person ----------------------------------------------------------


@pytest.mark.parametrize(
    "form",
    [
        {"Digits": "0"},
        {"SpeechResult": "Can I talk to a human please", "Confidence": "0.9"},
        {"SpeechResult": "Representative.", "Confidence": "0.7"},
    ],
    ids=["key-0", "human", "representative"],
)
async def test_the_caller_asks_for_an_agent_and_is_transferred(
    aiohttp_client: Any,
    aiohttp_server: ServerFactory,
    redis_url: str,
    redis: Redis,
    form: dict[str, str],
) -> None:
    receiver = BotReceiver()
    client = await bot_app(aiohttp_client, aiohttp_server, redis_url, receiver)
    action = await call(client)
    said, dial_action, numbers = dialled(await twiml(await post(client, action, params(**form))))
    assert said == [voice.CONNECTING]
    assert numbers == [AGENT_NUMBER]
    assert dial_action == f"{PUBLIC}/channels/voice/twilio/dial?turn=1"
    assert receiver.attempts == []  # a person takes it from here

    # Nobody picks up: the outcome is on the timeline and the bot carries on.
    outcome = params(DialCallStatus="no-answer", DialCallSid="CA0dial", DialCallDuration="0")
    action, said = listening(await twiml(await post(client, dial_action, outcome)))
    assert said == [voice.AGENT_MISSED]
    assert action.endswith("gather?turn=2")
    (transfer,) = events(await history(client, await customer(client)), "agent_transfer")
    assert transfer["metadata"] == {
        "voice_event": "agent_transfer",
        "call_sid": CALL,
        "dial_status": "no-answer",
        "dial_call_sid": "CA0dial",
        "dial_duration_s": 0,
        "turn": 1,
    }


async def test_the_bot_hands_the_call_to_an_agent(
    aiohttp_client: Any, aiohttp_server: ServerFactory, redis_url: str, redis: Redis
) -> None:
    receiver = BotReceiver()
    receiver.default = (200, {"replies": [{"text": "Let me get a colleague."}], "handoff": True})
    client = await bot_app(aiohttp_client, aiohttp_server, redis_url, receiver)
    action = await call(client)
    form = params(SpeechResult="I want a refund for order 4417", Confidence="0.9")
    said, dial_action, numbers = dialled(await twiml(await post(client, action, form)))
    assert (said, numbers) == (["Let me get a colleague."], [AGENT_NUMBER])
    cid = await customer(client)
    (spoken,) = [m for m in await history(client, cid) if m["author"]["kind"] == "bot"]
    assert spoken["metadata"]["handoff"] is True

    # The agent talked to the caller and hung up: the call ends politely, on the record.
    answered = params(DialCallStatus="completed", DialCallSid="CA0dial", DialCallDuration="95")
    bye = await twiml(await post(client, dial_action, answered))
    assert [child.tag for child in bye] == ["Say", "Hangup"]
    (transfer,) = events(await history(client, cid), "agent_transfer")
    assert transfer["metadata"]["dial_status"] == "completed"
    assert transfer["metadata"]["dial_duration_s"] == 95


async def test_without_an_agent_number_the_bot_carries_on(
    aiohttp_client: Any, aiohttp_server: ServerFactory, redis_url: str, redis: Redis
) -> None:
    receiver = BotReceiver()
    receiver.answers = [(200, {"replies": [{"text": "I can help with that."}]})]
    receiver.default = (200, {"replies": [{"text": "One moment."}], "handoff": True})
    client = await bot_app(aiohttp_client, aiohttp_server, redis_url, receiver, agent_number=None)
    action = await call(client)
    action, said = listening(await twiml(await post(client, action, params(Digits="0"))))
    assert said == [voice.NO_AGENT, "I can help with that."]
    action, said = listening(await twiml(await post(client, action, params(Digits="5"))))
    assert said == ["One moment.", voice.NO_AGENT]
    assert action.endswith("gather?turn=3")


async def test_the_dial_action_fixture_is_recorded(
    aiohttp_client: Any, redis_url: str, redis: Redis
) -> None:
    client = await voice_app(aiohttp_client, redis_url)
    await replay(client, "dial_action")
    await replay(client, "dial_action")
    (transfer,) = events(await history(client, await customer(client)), "agent_transfer")
    assert transfer["text"] == "Transfer to an agent: no-answer"
    assert transfer["metadata"]["dial_call_sid"] == "CA0a1b2c3d4e5f60718293a4b5c6d7e8f9"


# -- replies from the outbox ---------------------------------------------------------------


async def test_a_reply_queued_to_a_caller_fails_with_a_reason(
    aiohttp_client: Any, redis_url: str, redis: Redis
) -> None:
    client = await voice_app(aiohttp_client, redis_url, outbox=FAST)
    await call(client)
    cid = await customer(client)
    response = await client.post(
        f"/v1/customers/{cid}/messages",
        json={"text": "We refunded order 4417.", "channel": "voice"},
        headers=AGENT,
    )
    assert response.status == 202, await response.text()

    async def settled() -> bool:
        return (await history(client, cid))[0]["status"]["state"] != "queued"

    await until(settled)
    status = (await history(client, cid))[0]["status"]
    assert status["state"] == "failed"
    assert status["reason"].startswith("voice replies are spoken during a call")


# -- what is refused -----------------------------------------------------------------------

GATHER = f"{PUBLIC}/channels/voice/twilio/gather?turn=1"
SPEECH = params(SpeechResult="where is order 4417", Confidence="0.9")


def _tampered() -> tuple[str, bytes, str | None]:
    changed = [(k, "where is order 4418" if k == "SpeechResult" else v) for k, v in SPEECH]
    return GATHER, urlencode(changed).encode(), twilio_signature(GATHER, SPEECH)


REFUSED = {
    "no signature": (GATHER, urlencode(SPEECH).encode(), None),
    "empty signature": (GATHER, urlencode(SPEECH).encode(), ""),
    "another token": (GATHER, urlencode(SPEECH).encode(), twilio_signature(GATHER, SPEECH, "x")),
    "another host": (
        GATHER,
        urlencode(SPEECH).encode(),
        twilio_signature(GATHER.replace("omni.example.com", "evil.example.com"), SPEECH),
    ),
    "http, not https": (
        GATHER,
        urlencode(SPEECH).encode(),
        twilio_signature(GATHER.replace("https:", "http:"), SPEECH),
    ),
    "query left out": (
        GATHER,
        urlencode(SPEECH).encode(),
        twilio_signature(GATHER.partition("?")[0], SPEECH),
    ),
    "turn changed": (
        GATHER.replace("turn=1", "turn=7"),
        urlencode(SPEECH).encode(),
        twilio_signature(GATHER, SPEECH),
    ),
    "a parameter tampered": _tampered(),
    "a parameter added": (
        GATHER,
        urlencode([*SPEECH, ("Digits", "0")]).encode(),
        twilio_signature(GATHER, SPEECH),
    ),
    "not UTF-8": (GATHER, b"CallSid=%ff", twilio_signature(GATHER, [])),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
async def test_a_request_not_signed_by_twilio_is_401_and_changes_nothing(
    aiohttp_client: Any, aiohttp_server: ServerFactory, redis_url: str, redis: Redis, case: str
) -> None:
    receiver = BotReceiver()
    client = await bot_app(aiohttp_client, aiohttp_server, redis_url, receiver)
    await call(client)
    before = await snapshot(redis)
    url, body, signature = REFUSED[case]
    response = await post(client, url, body=body, signature=signature)
    assert (response.status, response.content_type) == (401, PROBLEM)
    assert await snapshot(redis) == before
    assert receiver.attempts == []
    # The same request, signed as Twilio signs it, goes through.
    assert (await post(client, GATHER, SPEECH)).status == 200


async def test_the_default_port_form_of_the_url_is_accepted(
    aiohttp_client: Any, redis_url: str, redis: Redis
) -> None:
    client = await voice_app(aiohttp_client, redis_url)
    signature = twilio_signature(GATHER.replace(".com/", ".com:443/"), SPEECH)
    _, said = listening(await twiml(await post(client, GATHER, SPEECH, signature=signature)))
    assert said == [voice.NO_BOT]


def _signed(url: str, form: Params) -> tuple[str, bytes, str]:
    return url, urlencode(form).encode(), twilio_signature(url, form)


MALFORMED = {
    "no CallSid": _signed(GATHER, [(k, v) for k, v in SPEECH if k != "CallSid"]),
    "no From": _signed(GATHER, [(k, v) for k, v in SPEECH if k != "From"]),
    "confidence not a number": _signed(GATHER, params(SpeechResult="hi", Confidence="high")),
    "transcript over the limit": _signed(GATHER, params(SpeechResult="a" * 5000)),
    "digits that are not digits": _signed(GATHER, params(Digits="12ab")),
    "turn not a number": _signed(GATHER.replace("turn=1", "turn=x"), SPEECH),
    "status without CallStatus": _signed(
        f"{PUBLIC}/channels/voice/twilio/status", [(k, v) for k, v in SPEECH if k != "CallStatus"]
    ),
    "dial without DialCallStatus": _signed(f"{PUBLIC}/channels/voice/twilio/dial", SPEECH),
    "status with a bad timestamp": _signed(
        f"{PUBLIC}/channels/voice/twilio/status", params(CallStatus="completed", Timestamp="soon")
    ),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
async def test_a_signed_but_malformed_webhook_is_400_and_changes_nothing(
    aiohttp_client: Any, redis_url: str, redis: Redis, case: str
) -> None:
    client = await voice_app(aiohttp_client, redis_url)
    await call(client)
    before = await snapshot(redis)
    url, body, signature = MALFORMED[case]
    response = await post(client, url, body=body, signature=signature)
    assert (response.status, response.content_type) == (400, PROBLEM), await response.text()
    assert await snapshot(redis) == before


async def test_other_methods_and_an_unconfigured_channel_are_refused(
    aiohttp_client: Any, client: TestClient, redis_url: str, redis: Redis
) -> None:
    for sub in ("", "/gather", "/status", "/dial"):
        # `client` has no [twilio] auth_token: the channel is not there.
        response = await post(client, f"{PUBLIC}/channels/voice/twilio{sub}", SPEECH)
        assert (response.status, response.content_type) == (404, PROBLEM)
    configured = await voice_app(aiohttp_client, redis_url)
    response = await configured.get("/channels/voice/twilio")
    assert (response.status, response.content_type) == (405, PROBLEM)
    assert await snapshot(redis) == {}


async def test_the_voice_routes_are_in_the_openapi_document(client: TestClient) -> None:
    paths = (await (await client.get("/openapi.json")).json())["paths"]
    for sub in ("", "/gather", "/status", "/dial"):
        operation = paths[f"/channels/voice/twilio{sub}"]["post"]
        assert "401" in operation["responses"]
        assert any(p["name"] == "X-Twilio-Signature" for p in operation["parameters"])


async def test_a_link_code_keyed_on_a_call_joins_the_caller_to_its_customer(
    aiohttp_client: Any, redis_url: str, redis: Redis
) -> None:
    client = await voice_app(aiohttp_client, redis_url)
    ana = (await ingest(client, channel="web", external_id="vis_1", text="order 4417?"))[
        "customer_id"
    ]
    token = await client.post(
        f"/v1/customers/{ana}/link-tokens", json={"channel": "voice"}, headers=BOT
    )
    code = (await token.json())["code"]
    action = await call(client)
    caller = await customer(client)
    assert caller != ana
    action, said = listening(await twiml(await post(client, action, params(Digits=code))))
    assert said == ["Thank you, this number is now linked to your account. How can I help you?"]
    assert await customer(client) == ana
    # A wrong code is just an answer: the caller is not linked anywhere new.
    _, said = listening(await twiml(await post(client, action, params(Digits="000000"))))
    assert said != ["Thank you, this number is now linked to your account. How can I help you?"]
    assert await customer(client) == ana


async def test_while_an_agent_holds_the_conversation_the_caller_is_transferred(
    aiohttp_client: Any, aiohttp_server: ServerFactory, redis_url: str, redis: Redis
) -> None:
    receiver = BotReceiver()
    client = await bot_app(aiohttp_client, aiohttp_server, redis_url, receiver)
    action = await call(client)
    cid = await customer(client)
    taken = await client.post(
        f"/v1/customers/{cid}/handoff", json={"to": "agent", "agent_id": "sam"}, headers=AGENT
    )
    assert taken.status == 200, await taken.text()
    said, _, numbers = dialled(
        await twiml(await post(client, action, params(SpeechResult="hello?", Confidence="0.9")))
    )
    assert numbers == [AGENT_NUMBER]
    assert said == ["Connecting you to the agent looking after your conversation. Please hold."]
    assert receiver.attempts == []  # the bot is not asked while the agent holds it
    # A new call from the same customer goes straight to the agent too.
    _, _, numbers = dialled(await twiml(await replay(client, "incoming")))
    assert numbers == [AGENT_NUMBER]


async def test_a_bot_handoff_puts_the_call_in_the_agents_queue(
    aiohttp_client: Any, aiohttp_server: ServerFactory, redis_url: str, redis: Redis
) -> None:
    receiver = BotReceiver()
    receiver.answers = [(200, {"replies": [{"text": "Let me get someone."}], "handoff": True})]
    client = await bot_app(aiohttp_client, aiohttp_server, redis_url, receiver)
    action = await call(client)
    form = params(SpeechResult="I want to cancel", Confidence="0.9")
    said, _, numbers = dialled(await twiml(await post(client, action, form)))
    assert said == ["Let me get someone."]
    assert numbers == [AGENT_NUMBER]
    context = await (
        await client.get(f"/v1/customers/{await customer(client)}/context", headers=BOT)
    ).json()
    assert context["conversation"]["status"] == "pending"  # waiting for an agent
    assert context["conversation"]["first_response_by"] == "bot"
