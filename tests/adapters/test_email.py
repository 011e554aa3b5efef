"""The e-mail channel's pure parts: both providers' posts into one normalised mail,
HTML to text, quote and signature stripping, who wrote it (SPF/DKIM alignment,
auto-replies and bounces), and the outbound mail's threading headers."""

from __future__ import annotations

import json
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import pytest

from adapters.email import mailgun
from adapters.email.adapter import EmailAdapter
from adapters.email.config import EmailSettings, smtp
from adapters.email.protocol import (
    Headers,
    Outgoing,
    address,
    authenticated,
    automatic,
    inbound_message,
    message_ids,
    outbound_message_id,
    render,
    reply_subject,
)
from adapters.email.text import html_to_text, strip_reply
from omni.channel import InboundRequest, Received, Skipped
from omni.errors import BadRequest, ConfigError, Unauthenticated, UnsupportedMediaType
from omni.settings import Secret

PAYLOADS = Path(__file__).parent.parent / "payloads" / "email"
SIGNING_KEY = "key-9f8e7d6c5b4a39281706f5e4d3c2b1a0"
FIXTURE_TS = 1767258000
CONFIG = EmailSettings(
    mailgun_signing_key=Secret(SIGNING_KEY),
    postmark_user=Secret("postmark"),
    postmark_password=Secret("pm-password-0001"),
)
BASIC = "Basic cG9zdG1hcms6cG0tcGFzc3dvcmQtMDAwMQ=="  # postmark:pm-password-0001


def payload(name: str) -> bytes:
    return (PAYLOADS / name).read_bytes()


def postmark(body: bytes, auth: str = BASIC) -> InboundRequest:
    headers = {"Content-Type": "application/json", "Authorization": auth}
    return InboundRequest("POST", "https://omni.example.com/channels/email/inbound", headers, body)


def form(body: bytes, kind: str = "application/x-www-form-urlencoded") -> InboundRequest:
    return InboundRequest(
        "POST", "https://omni.example.com/channels/email/inbound", {"Content-Type": kind}, body
    )


def edited(name: str, **changes: Any) -> bytes:
    data = json.loads(payload(name))
    data.update(changes)
    return json.dumps(data).encode()


def test_postmark_fixture_is_one_normalised_mail() -> None:
    mail = EmailAdapter(CONFIG).read(postmark(payload("email_postmark_inbound.json")), 0)
    assert (mail.provider, mail.sender, mail.sender_name) == ("postmark", "dana@example.net",
                                                             "Dana Example")  # fmt: skip
    assert mail.message_id == "CAF3x9Yq1-synthetic-0001@mail.example.net"
    assert mail.recipient == "support@omni.example.com"
    assert mail.subject == "Order A-1042 not arrived"
    assert mail.authenticated and mail.automatic is None
    assert [(a.name, a.mime, a.size) for a in mail.attachments] == [
        ("receipt.pdf", "application/pdf", 21)
    ]
    message = inbound_message(mail)
    assert message.external_id == "dana@example.net"
    assert message.sent_at == "2026-01-01T08:00:00.000Z"
    assert message.attachments[0].type == "file"


def test_postmark_reply_keeps_the_new_words_for_bots_and_the_whole_body_for_agents() -> None:
    mail = EmailAdapter(CONFIG).read(postmark(payload("email_postmark_reply_inbound.json")), 0)
    assert mail.in_reply_to == ("CAF3x9Yq1-synthetic-0001@mail.example.net",)
    message = inbound_message(mail)
    assert message.text == "Any update on this?"
    assert "wrote:" in str(message.metadata["body"])
    assert message.reply_to == "CAF3x9Yq1-synthetic-0001@mail.example.net"


def test_mailgun_fixture_verifies_and_parses() -> None:
    mail = EmailAdapter(CONFIG).read(form(payload("email_mailgun_inbound.form")), FIXTURE_TS + 5)
    assert (mail.provider, mail.sender, mail.subject) == (
        "mailgun", "dana@example.net", "Re: Order A-1042 not arrived"
    )  # fmt: skip
    assert mail.stripped == "Any update on this?"
    assert mail.token == "d41e8b0c7f2a95e36b1c4d07a8f52e9b3c6d1a0f4e7b2c95d8"
    assert mail.thread_ids() == [
        "omni.conv_000123.msg_000456@omni.example.com",
        "CAF3x9Yq1-synthetic-0001@mail.example.net",
    ]


@pytest.mark.parametrize(
    ("now", "key"),
    [(FIXTURE_TS + 301, SIGNING_KEY), (FIXTURE_TS - 301, SIGNING_KEY), (FIXTURE_TS, "key-other")],
)
def test_mailgun_refuses_stale_or_foreign_signatures(now: int, key: str) -> None:
    config = EmailSettings(mailgun_signing_key=Secret(key))
    with pytest.raises(Unauthenticated):
        EmailAdapter(config).read(form(payload("email_mailgun_inbound.form")), now)


@pytest.mark.parametrize(
    "auth",
    ["", "Bearer x", "Basic cG9zdG1hcms6d3Jvbmc=", "Basic !!!", "Basic cG9zdG1hcms="],
)
def test_postmark_refuses_wrong_basic_auth(auth: str) -> None:
    with pytest.raises(Unauthenticated):
        EmailAdapter(CONFIG).read(postmark(payload("email_postmark_inbound.json"), auth), 0)


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"[]", edited("email_postmark_inbound.json", From="", FromFull=None),
     edited("email_postmark_inbound.json", Headers="x")],
)  # fmt: skip
def test_postmark_malformed_is_a_bad_request(body: bytes) -> None:
    with pytest.raises(BadRequest):
        EmailAdapter(CONFIG).read(postmark(body), 0)


def test_other_content_types_are_neither_provider() -> None:
    with pytest.raises(UnsupportedMediaType):
        EmailAdapter(CONFIG).read(form(b"x", "text/plain"), 0)


def test_mailgun_multipart_lists_attachments_without_their_bytes() -> None:
    boundary = "b0undary"
    parts = [
        ("from", "Dana <Dana@Example.net>"),
        ("subject", "photo"),
        ("body-plain", "here it is"),
        ("Message-Id", "<m-1@example.net>"),
    ]
    body = b""
    for name, value in parts:
        body += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        body += value.encode() + b"\r\n"
    body += (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="attachment-1"; '
            'filename="cat.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
        ).encode()
        + b"\xff\xd8\xff" * 100
        + b"\r\n"
    )
    body += f"--{boundary}--\r\n".encode()
    fields, files = mailgun.form(form(body, f"multipart/form-data; boundary={boundary}"))
    assert fields["subject"] == "photo"
    assert [(f.name, f.mime, f.size) for f in files] == [("cat.jpg", "image/jpeg", 300)]


def test_html_becomes_text_without_script_or_style() -> None:
    html = (
        "<html><head><title>t</title><style>p{color:red}</style></head><body>"
        "<p>Hello&nbsp;there</p><script>alert('x')</script><ul><li>one</li><li>two</li></ul>"
        "<div>Bye<br>Dana</div><blockquote>old words</blockquote></body></html>"
    )
    assert html_to_text(html) == "Hello there\n\n- one\n- two\n\nBye\nDana\n\nold words"
    assert "old words" not in html_to_text(html, drop_quotes=True)
    assert "alert" not in html_to_text("<p>a</p><SCRIPT>alert(1)</SCRIPT>")
    gmail = '<div>New</div><div class="gmail_quote">On Mon wrote:<br>old</div>'
    assert html_to_text(gmail, drop_quotes=True) == "New"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Yes please.\n\nOn Mon, 5 Jan 2026 at 10:00, Omni <s@omni.example.com> wrote:\n> old",
         "Yes please."),
        ("Yes.\nOn Mon, 5 Jan 2026 at 10:00, Omni Support\n<s@omni.example.com> wrote:\n> old",
         "Yes."),
        ("Thanks!\n-- \nDana Example\nCEO", "Thanks!"),
        ("Fine\n> quoted\nmore", "Fine\nmore"),
        ("Ok\n\n-----Original Message-----\nFrom: x", "Ok"),
        ("Ok\n\nFrom: Omni <s@omni.example.com>\nSent: Monday", "Ok"),
        ("Sure\n\nSent from my iPhone", "Sure"),
        ("On Monday I ordered two.", "On Monday I ordered two."),
        ("Ja.\n\nAm 5. Jan. 2026 um 10:00 schrieb Omni <s@omni.example.com>:\n> alt", "Ja."),
        ("Oui.\n\nLe lun. 5 janv. 2026 à 10:00, Omni <s@omni.example.com> a écrit :\n> x",
         "Oui."),
        ("Sí.\n\nEl lun, 5 ene 2026 a las 10:00, Omni (<s@omni.example.com>) escribió:\n> x",
         "Sí."),
    ],
)  # fmt: skip
def test_quoted_history_and_signatures_are_stripped(text: str, expected: str) -> None:
    assert strip_reply(text) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('"Dana Example" <Dana.Example+Shop@Example.NET>', "dana.example+shop@example.net"),
        ("dana@example.net", "dana@example.net"),
        ("not an address", None),
        ("a@b.com, c@d.com", None),
        ("dana@localhost", None),
    ],
)
def test_addresses_are_normalised_keeping_dots_and_plus(raw: str, expected: str | None) -> None:
    assert address(raw) == expected


AR = "Authentication-Results"


@pytest.mark.parametrize(
    ("results", "ok"),
    [
        ("mx; spf=pass smtp.mailfrom=example.net; dkim=none", True),
        ("mx; spf=fail smtp.mailfrom=example.net; dkim=pass header.d=mail.example.net", False),
        ("mx; dkim=pass header.d=example.net", True),
        ("mx; spf=pass smtp.mailfrom=attacker.example; dkim=pass header.d=attacker.example", False),
        ("mx; spf=none; dkim=none; dmarc=none", False),
        ("mx; dmarc=pass header.from=example.net", True),
    ],
)
def test_only_a_pass_aligned_with_the_from_domain_authenticates(results: str, ok: bool) -> None:
    assert authenticated(Headers([(AR, results)]), "dana@example.net") is ok


def test_only_the_providers_own_authentication_results_count() -> None:
    forged_below = Headers([(AR, "mx; spf=fail"), (AR, "mx; spf=pass smtp.mailfrom=example.net")])
    assert not authenticated(forged_below, "dana@example.net")


@pytest.mark.parametrize(
    ("headers", "sender", "envelope", "kind"),
    [
        ([("Auto-Submitted", "auto-replied")], "d@example.net", None, "auto_reply"),
        ([("Auto-Submitted", "no")], "d@example.net", None, None),
        ([("Precedence", "bulk")], "d@example.net", None, "bulk"),
        ([("Precedence", "auto_reply")], "d@example.net", None, "auto_reply"),
        ([("X-Autoreply", "yes")], "d@example.net", None, "auto_reply"),
        ([("List-Id", "<news.example.net>")], "d@example.net", None, "bulk"),
        ([], "mailer-daemon@mx.example.net", None, "bounce"),
        ([("Content-Type", "multipart/report; report-type=delivery-status")], "p@x.net", None,
         "bounce"),
        ([], "d@example.net", "<>", "bounce"),
        ([], "d@example.net", "<d@example.net>", None),
    ],
)  # fmt: skip
def test_mail_not_written_by_a_person_is_recognised(
    headers: list[tuple[str, str]], sender: str, envelope: str | None, kind: str | None
) -> None:
    found = automatic(Headers(headers), sender, envelope)
    assert (found[0] if found else None) == kind


def test_message_ids_are_read_without_brackets() -> None:
    assert message_ids("<a@x> <b@y>\r\n <a@x>") == ("a@x", "b@y")
    assert message_ids("bare@x") == ("bare@x",)
    assert message_ids(None) == ()


def test_outbound_mail_threads_under_the_customers_mail() -> None:
    mid = outbound_message_id("cnv_1-2", "msg_9", "support@omni.example.com")
    assert mid == "omni.cnv_1-2.msg_9@omni.example.com"
    mail = render(
        Outgoing(
            to="dana@example.net",
            from_address="support@omni.example.com",
            from_name="Omni Support",
            subject=reply_subject("Order A-1042 not arrived"),
            message_id=mid,
            text="It ships today.",
            in_reply_to="b@x",
            references=("a@x", "b@x"),
            auto_submitted="auto-replied",
        )
    )
    parsed = message_from_bytes(mail.as_bytes(), policy=policy.default)
    assert parsed["Message-ID"] == f"<{mid}>"
    assert (parsed["In-Reply-To"], parsed["References"]) == ("<b@x>", "<a@x> <b@x>")
    assert parsed["Subject"] == "Re: Order A-1042 not arrived"
    assert parsed["From"] == "Omni Support <support@omni.example.com>"
    assert reply_subject("RE: again") == "RE: again"


@pytest.mark.parametrize(
    ("url", "host", "port", "tls", "user"),
    [
        ("smtp://127.0.0.1:2525", "127.0.0.1", 2525, False, ""),
        ("smtps://me%40x.com:p%3Ass@smtp.example.com", "smtp.example.com", 465, True, "me@x.com"),
        ("smtp://smtp.example.com", "smtp.example.com", 587, False, ""),
    ],
)
def test_smtp_urls(url: str, host: str, port: int, tls: bool, user: str) -> None:
    parsed = smtp(url)
    assert parsed is not None
    assert (parsed.host, parsed.port, parsed.tls, parsed.username) == (host, port, tls, user)


@pytest.mark.parametrize("url", ["http://x", "smtp://", "smtp://h:port"])
def test_bad_smtp_urls_name_the_setting(url: str) -> None:
    with pytest.raises(ConfigError, match=r"email\.smtp_url"):
        smtp(url)


def test_the_core_seam_verifies_and_parses_like_the_route() -> None:
    adapter = EmailAdapter(CONFIG)
    adapter.verify(postmark(payload("email_postmark_inbound.json")))
    with pytest.raises(Unauthenticated):
        adapter.verify(postmark(payload("email_postmark_inbound.json"), "Basic eDp5"))
    [received] = adapter.parse(postmark(payload("email_postmark_inbound.json")))
    assert isinstance(received, Received)
    assert received.message.channel_message_id == "CAF3x9Yq1-synthetic-0001@mail.example.net"
    [skipped] = adapter.parse(postmark(payload("email_autoreply_inbound.json")))
    assert isinstance(skipped, Skipped)
    assert skipped.reason == "auto_reply: Auto-Submitted: auto-replied"
