"""adapters.sms, pure: segment counting, keywords, reading Twilio's answers, rendering a
send, and the [sms] section."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import parse_qsl

import pytest

from adapters.sms.config import sms_config
from adapters.sms.outbound import (
    REASON_OPTED_OUT,
    failure_reason,
    render_send,
    send_outcome,
    twiml,
)
from adapters.sms.protocol import keyword
from adapters.sms.segments import segments
from omni.errors import ConfigError
from omni.model import Attachment, Author, Message, Payload
from omni.settings import Settings

PAYLOADS = Path(__file__).parent.parent / "payloads" / "sms"
SERVICE = "MG0a1b2c3d4e5f60718293a4b5c6d7e8f9"


def reply(text: str | None, **fields: object) -> Message:
    return Message(
        id="msg_1", customer_id="cus_1", conversation_id="c1", channel="sms",
        direction="outbound", author=Author(kind="bot"), received_at="", text=text,
        **fields,  # type: ignore[arg-type]
    )  # fmt: skip


# -- segments ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "encoding", "units", "count"),
    [
        ("", "GSM-7", 0, 1),
        ("a" * 160, "GSM-7", 160, 1),
        ("a" * 161, "GSM-7", 161, 2),
        ("a" * 306, "GSM-7", 306, 2),
        ("a" * 307, "GSM-7", 307, 3),
        ("€" * 80, "GSM-7", 160, 1),  # extension characters count two
        ("€" * 81, "GSM-7", 162, 2),
        ("a" * 152 + "{" + "a" * 10, "GSM-7", 164, 2),  # the escape pair is not split
        ("a" * 152 + "{" + "a" * 152, "GSM-7", 306, 3),
        ("Grüße, Ñoño @ £5 è", "GSM-7", 18, 1),  # GSM-7 has these accents (not ú)
        ("Ñandú", "UCS-2", 5, 1),
        ("á" * 70, "UCS-2", 70, 1),  # á is not in GSM-7
        ("á" * 71, "UCS-2", 71, 2),
        ("a" * 133 + "🙂", "UCS-2", 135, 3),  # 67 + 67 + 1: the emoji's pair kept whole
        ("a" * 65 + "🙂" + "a", "UCS-2", 68, 1),
    ],
)
def test_segments(text: str, encoding: str, units: int, count: int) -> None:
    found = segments(text)
    assert (found.encoding, found.units, found.count) == (encoding, units, count)


def test_the_fixture_body_with_an_emoji_is_ucs2() -> None:
    body = dict(parse_qsl((PAYLOADS / "twilio_sms_incoming.form").read_text()))["Body"]
    assert segments(body).encoding == "UCS-2"


# -- keywords ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "opt_out_type", "found"),
    [
        ("STOP", None, "stop"),
        ("Stop", "STOP", "stop"),
        ("  stopall ", None, "stop"),
        ("Unsubscribe!", None, "stop"),
        ("cancel", None, "stop"),
        ("end", None, "stop"),
        ("QUIT", None, "stop"),
        ("revoke", None, "stop"),
        ("optout", None, "stop"),
        ("start", None, "start"),
        ("Yes", None, "start"),
        ("unstop", None, "start"),
        ("help", None, "help"),
        ("Info", None, "help"),
        ("please stop texting", None, None),
        ("stop it", None, None),
        ("anything", "STOP", "stop"),  # Twilio's Advanced Opt-Out decided
        ("hello", None, None),
    ],
)
def test_keywords(body: str, opt_out_type: str | None, found: str | None) -> None:
    assert keyword(body, opt_out_type) == found


# -- Twilio's answers ------------------------------------------------------------------------


def test_reading_the_messaging_api_answers() -> None:
    accepted = (PAYLOADS / "twilio_sms_send_response.json").read_bytes()
    outcome = send_outcome(201, accepted)
    assert (outcome.status, outcome.channel_message_id) == ("sent", json.loads(accepted)["sid"])
    opted = send_outcome(400, (PAYLOADS / "twilio_sms_send_error_opted_out.json").read_bytes())
    assert (opted.status, opted.reason, opted.retry) == ("failed", REASON_OPTED_OUT, False)
    assert send_outcome(429, b'{"code": 20429, "message": "Too Many Requests"}').retry
    assert send_outcome(503, b"<html>").retry
    unauthorized = send_outcome(401, b'{"code": 20003, "message": "Authenticate"}')
    assert unauthorized.reason and unauthorized.reason.startswith("unauthorized")
    assert not unauthorized.retry
    bad = send_outcome(400, b'{"code": 21211, "message": "Invalid To"}')
    assert bad.reason and bad.reason.startswith("invalid_number: Twilio error 21211")
    assert send_outcome(201, b"{}").status == "failed"  # no sid: not sent


def test_failure_reasons() -> None:
    assert failure_reason(21610) == "opted_out"
    assert failure_reason(30003, "undelivered").startswith("unreachable: Twilio error 30003")
    assert failure_reason(None, "failed") == "failed: Twilio gave no error code"
    assert failure_reason(12345, "failed").startswith("failed: Twilio error 12345")


# -- rendering -------------------------------------------------------------------------------


def test_the_send_request_fixture_is_what_omni_sends() -> None:
    expected = parse_qsl((PAYLOADS / "twilio_sms_send_request.form").read_text())
    fields = render_send(
        reply("Yes! Order #A-1042 shipped today. Reply STOP to opt out."),
        "+14155550123",
        sender=SERVICE,
        status_callback="https://omni.example.com/channels/sms/status",
        max_segments=10,
    )
    assert fields == expected


def test_quick_replies_are_written_out_and_unsendables_refused() -> None:
    options = [Payload("TRACK", title="Track my order"), Payload("AGENT")]
    asked = reply("What now?", quick_replies=options)
    fields = dict(
        render_send(asked, "+1", sender="+14155550199", status_callback=None, max_segments=10)
    )
    assert fields["Body"] == "What now?\n- Track my order\n- AGENT"
    assert fields["From"] == "+14155550199" and "StatusCallback" not in fields
    for bad in (reply(None), reply(None, attachments=[Attachment(type="location")])):
        with pytest.raises(ValueError, match=r"^unsendable: "):
            render_send(bad, "+1", sender=SERVICE, status_callback=None, max_segments=10)
    with pytest.raises(ValueError, match=r"^too_long: "):
        render_send(reply("a" * 1601), "+1", sender=SERVICE, status_callback=None,
                    max_segments=24)  # fmt: skip


def test_twiml() -> None:
    assert twiml() == '<?xml version="1.0" encoding="UTF-8"?><Response/>'
    assert twiml("Fish & <chips>\x00") == (
        '<?xml version="1.0" encoding="UTF-8"?>'
        "<Response><Message>Fish &amp; &lt;chips&gt;</Message></Response>"
    )


# -- the [sms] section ------------------------------------------------------------------------


def test_the_sms_section() -> None:
    settings = Settings.from_mapping({
        "twilio": {"auth_token": "t"},
        "sms": {"account_sid": "AC" + "0" * 32, "from_number": "+1 (415) 555-0199"},
    })  # fmt: skip
    config = sms_config(settings)
    assert (config.from_number, config.max_segments, config.can_send) == ("+14155550199", 10, True)
    assert config.api_url == "https://api.twilio.com"
    assert not sms_config(Settings.from_mapping({})).can_send
    # The account may be named in [twilio], beside the token it goes with.
    shared = {"twilio": {"auth_token": "t", "account_sid": "AC" + "1" * 32},
              "sms": {"from_number": "+14155550199"}}  # fmt: skip
    assert sms_config(Settings.from_mapping(shared)).account_sid == "AC" + "1" * 32
    for bad in (
        {"from_number": "12"},
        {"account_sid": "AC1"},
        {"messaging_service_sid": "MG"},
        {"max_segments": 0},
        {"api_url": "ftp://x"},
    ):
        with pytest.raises(ConfigError, match=r"^sms\."):
            sms_config(Settings.from_mapping({"sms": bad}))
