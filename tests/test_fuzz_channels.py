"""Every channel, with valid signatures: payloads mutated from the fixtures
(tests/fuzz.py) and signed as the provider signs, through the real app on a real
Valkey. Whatever the payload: no 5xx, no traceback in the log, a refusal is a 4xx
problem document and writes nothing.

`pytest tests/test_fuzz_channels.py -s` prints the payloads tried per channel."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from omni.app import create_app
from omni.twilio import signature as twilio_signature
from tests import fuzz
from tests.adapters.test_email import BASIC, SIGNING_KEY
from tests.adapters.test_instagram import signature
from tests.conftest import snapshot
from tests.everything import Logs, full_settings
from tests.test_channel_sms import SIGNED as SMS_SIGNED
from tests.test_channel_sms import fixture as sms_fixture
from tests.test_channel_voice import FIXTURES as VOICE
from tests.test_channel_voice import PUBLIC, TOKEN
from tests.whatsapp_graph import signature as whatsapp_signature

pytestmark = pytest.mark.single_server(
    "mutates each channel's payloads to test its parsing, which does not depend on the "
    "storage mode: the single-server run covers it, and keeps CI under 15 minutes"
)

PAYLOADS = Path(__file__).parent / "payloads"
PROBLEM = "application/problem+json"
COUNT = {"instagram": 250, "voice": 150, "web": 150, "mobile": 150, "web socket": 150,
         "whatsapp": 250, "sms": 150, "mailgun": 150, "postmark": 150}  # fmt: skip

INSTAGRAM_BASES = [
    json.loads(path.read_bytes())
    for path in sorted((PAYLOADS / "instagram").glob("instagram_*.json"))
    if path.with_suffix(".sig.txt").exists()
]
WHATSAPP_BASES = [
    json.loads(path.read_bytes())
    for path in sorted((PAYLOADS / "whatsapp").glob("whatsapp_*.json"))
    if path.with_suffix(".sig.txt").exists()
]
POSTMARK_BASES = [
    json.loads(path.read_bytes()) for path in sorted((PAYLOADS / "email").glob("*.json"))
]
_UNSIGNED = ("timestamp", "token", "signature")
MAILGUN_BASE = [
    (k, v)
    for k, v in parse_qsl((PAYLOADS / "email" / "email_mailgun_inbound.form").read_text(),
                          keep_blank_values=True)
    if k not in _UNSIGNED
]  # fmt: skip
MAILGUN_FIELDS = ["sender", "from", "recipient", "subject", "body-plain", "stripped-text",
                  "body-html", "message-headers", "attachments", "In-Reply-To", "Message-Id",
                  "References", "X-Mailgun-Spf", "X-Mailgun-Dkim-Check-Result"]  # fmt: skip
SMS_FIELDS = ["Body", "From", "To", "NumMedia", "MediaUrl0", "MediaContentType0", "MessageSid",
              "MessageStatus", "ErrorCode", "SmsStatus", "NumSegments", "Whatever"]  # fmt: skip
_FRAMES = [
    json.loads(line) for line in (PAYLOADS / "web" / "web_ws_frames.jsonl").read_text().splitlines()
]
MESSAGE_BASES = [
    {k: v for k, v in frame.items() if k != "type"}
    for frame in _FRAMES
    if frame.get("type") == "message" and "client_msg_id" in frame
] + [
    {
        "client_msg_id": "c-1",
        "text": "hi",
        "attachments": [{"type": "image", "url": "https://x.example/a.jpg"}],
    }
]
SESSION_BASES = [
    {},
    {"type": "renew"},
    json.loads((PAYLOADS / "web" / "web_identify_hmac.json").read_bytes()),
]
DEVICE_BASES = [
    json.loads(path.read_bytes()) for path in sorted((PAYLOADS / "mobile").glob("*.json"))
]


@pytest.fixture
async def app(aiohttp_client: Any, redis_url: str, redis: Redis) -> TestClient:
    client: TestClient = await aiohttp_client(create_app(full_settings(redis_url)))
    return client


async def _send_all(
    app: TestClient,
    redis: Redis,
    requests: Sequence[tuple[str, str, bytes, dict[str, str]]],
    *,
    signed: bool,
) -> tuple[int, list[str]]:
    """Send each request; return how many and what went wrong. Some must be accepted
    (stored, 2xx) and some refused: the parsing, not only the door, is what was tried."""
    logs = Logs()
    wrong: list[str] = []
    statuses: Counter[int] = Counter()
    for method, path, body, headers in requests:
        before = await snapshot(redis)
        async with app.request(method, path, data=body, headers=headers) as answer:
            status, kind = answer.status, answer.content_type
            text = await answer.text(errors="replace")
        statuses[status] += 1
        what = f"{method} {path} {body[:120]!r}: {status} {text[:200]}"
        if status >= 500:
            wrong.append("5xx: " + what)
        elif status >= 400:
            if kind != PROBLEM:
                wrong.append("not a problem document: " + what)
            if signed and status == 401 and body:  # (an empty body is 401 by design)
                wrong.append("signed, yet 401: " + what)
            if await snapshot(redis) != before:
                wrong.append("refused, yet written: " + what)
    wrong += [f"log: {line[:300]}" for line in logs.tracebacks()]
    print(f"\n{requests[0][1]}: statuses {dict(sorted(statuses.items()))}")
    if not any(200 <= status < 300 for status in statuses):
        wrong.append(f"no payload was accepted: {dict(statuses)}")
    if not any(400 <= status < 500 for status in statuses):
        wrong.append(f"no payload was refused: {dict(statuses)}")
    return len(requests), wrong


async def test_instagram_webhooks(app: TestClient, redis: Redis) -> None:
    bodies = fuzz.corpus(fuzz.json_bodies(INSTAGRAM_BASES), COUNT["instagram"])
    requests = [
        (
            "POST",
            "/channels/instagram/webhook",
            body,
            {"Content-Type": "application/json", "X-Hub-Signature-256": signature(body)},
        )
        for body in bodies
    ]
    tried, wrong = await _send_all(app, redis, requests, signed=True)
    print(f"\ninstagram: {tried} signed payloads, {len(wrong)} wrong answers")
    assert wrong == [], "\n".join(wrong)


async def test_whatsapp_webhooks(app: TestClient, redis: Redis) -> None:
    bodies = fuzz.corpus(fuzz.json_bodies(WHATSAPP_BASES), COUNT["whatsapp"])
    requests = [
        (
            "POST",
            "/channels/whatsapp/webhook",
            body,
            {"Content-Type": "application/json", "X-Hub-Signature-256": whatsapp_signature(body)},
        )
        for body in bodies
    ]
    tried, wrong = await _send_all(app, redis, requests, signed=True)
    print(f"\nwhatsapp: {tried} signed payloads, {len(wrong)} wrong answers")
    assert wrong == [], "\n".join(wrong)


async def test_twilio_sms_webhooks(app: TestClient, redis: Redis) -> None:
    fixtures = {name: sms_fixture(name) for name in SMS_SIGNED}
    params = {
        name: parse_qsl(f.body.decode(), keep_blank_values=True) for name, f in fixtures.items()
    }
    drawn = fuzz.corpus(
        fuzz.hypothesis_pairs(sorted(fixtures), lambda n: params[n], SMS_FIELDS), COUNT["sms"]
    )
    requests = []
    for name, form in drawn:
        url = fixtures[name].url
        try:
            signed = twilio_signature(TOKEN, url, form)
        except UnicodeEncodeError:
            continue  # a lone surrogate: nothing Twilio could send
        headers = {"Content-Type": "application/x-www-form-urlencoded",
                   "X-Twilio-Signature": signed}  # fmt: skip
        requests.append(("POST", url.removeprefix(PUBLIC), fuzz.encode_form(form), headers))
    tried, wrong = await _send_all(app, redis, requests, signed=True)
    print(f"\nsms: {tried} signed form posts, {len(wrong)} wrong answers")
    assert wrong == [], "\n".join(wrong)


def _mailgun_signed(form: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The form with a fresh timestamp and token, signed as Mailgun signs."""
    timestamp, token = str(int(time.time())), secrets.token_hex(25)
    mac = hmac.new(SIGNING_KEY.encode(), (timestamp + token).encode(), hashlib.sha256)
    return [*form, ("timestamp", timestamp), ("token", token), ("signature", mac.hexdigest())]


async def test_mailgun_webhooks(app: TestClient, redis: Redis) -> None:
    drawn = fuzz.corpus(fuzz.forms([MAILGUN_BASE], MAILGUN_FIELDS), COUNT["mailgun"])
    requests = []
    for form in drawn:
        if any(name in _UNSIGNED for name, _ in form):
            form = [(k, v) for k, v in form if k not in _UNSIGNED]  # signed below, once
        try:
            body = fuzz.encode_form(_mailgun_signed(form))
            body.decode("utf-8")
        except UnicodeError:
            continue  # a lone surrogate: nothing Mailgun could send
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        requests.append(("POST", "/channels/email/inbound", body, headers))
    tried, wrong = await _send_all(app, redis, requests, signed=True)
    print(f"\nmailgun: {tried} signed form posts, {len(wrong)} wrong answers")
    assert wrong == [], "\n".join(wrong)


async def test_postmark_webhooks(app: TestClient, redis: Redis) -> None:
    bodies = fuzz.corpus(fuzz.json_bodies(POSTMARK_BASES), COUNT["postmark"])
    headers = {"Content-Type": "application/json", "Authorization": BASIC}
    requests = [("POST", "/channels/email/inbound", body, headers) for body in bodies]
    tried, wrong = await _send_all(app, redis, requests, signed=True)
    print(f"\npostmark: {tried} posts with basic auth, {len(wrong)} wrong answers")
    assert wrong == [], "\n".join(wrong)


async def test_twilio_voice_webhooks(app: TestClient, redis: Redis) -> None:
    names = sorted(VOICE)
    drawn = fuzz.corpus(fuzz.hypothesis_pairs(names, lambda n: VOICE[n].params), COUNT["voice"])
    requests = []
    for name, params in drawn:
        url = VOICE[name].url
        parts = urlsplit(url)
        try:
            # Twilio's own libraries' algorithm (duplicated names: values de-duplicated
            # and sorted), which tests/test_channel_voice.py checks independently.
            signed = twilio_signature(TOKEN, url, params)
        except UnicodeEncodeError:
            continue  # a lone surrogate: nothing Twilio could send
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": signed,
        }
        path = parts.path + ("?" + parts.query if parts.query else "")
        requests.append(("POST", path, fuzz.encode_form(params), headers))
    tried, wrong = await _send_all(app, redis, requests, signed=True)
    print(f"\nvoice: {tried} signed form posts, {len(wrong)} wrong answers")
    assert wrong == [], "\n".join(wrong)


@pytest.mark.parametrize("channel", ["web", "mobile"])
async def test_client_sessions_and_messages(app: TestClient, redis: Redis, channel: str) -> None:
    started = await app.post(f"/channels/{channel}/sessions", json={})
    token = (await started.json())["token"]
    json_headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    share = COUNT[channel] // 3
    routes = [("messages", MESSAGE_BASES), ("sessions", SESSION_BASES)]
    if channel == "mobile":
        routes.append(("devices", DEVICE_BASES))
    requests = [
        ("POST", f"/channels/{channel}/{route}", body, json_headers)
        for route, bases in routes
        for body in fuzz.corpus(fuzz.json_bodies(bases), share)
    ]
    tried, wrong = await _send_all(app, redis, requests, signed=False)
    print(f"\n{channel}: {tried} payloads with a valid session, {len(wrong)} wrong answers")
    assert wrong == [], "\n".join(wrong)


async def test_web_socket_frames(app: TestClient) -> None:
    started = await app.post("/channels/web/sessions", json={})
    token = (await started.json())["token"]
    frames = fuzz.corpus(fuzz.json_bodies(_FRAMES), COUNT["web socket"])
    logs = Logs()
    async with app.ws_connect(
        "/channels/web/ws", params={"token": token}, headers={"Origin": "https://shop.example.com"}
    ) as ws:
        for frame in frames:
            await ws.send_str(frame.decode("utf-8", "replace"))
        await ws.send_str('{"type": "typing", "state": "start"}')
        assert not ws.closed
    print(f"\nweb socket: {len(frames)} frames, socket open throughout")
    assert logs.tracebacks() == []
