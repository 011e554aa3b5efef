"""Postmark's inbound webhook, pure.

Postmark posts the parsed mail as JSON: `From`, `FromName`, `FromFull`, `To`,
`OriginalRecipient`, `Subject`, `MessageID` (Postmark's own id, not the RFC Message-ID),
`Date`, `TextBody`, `HtmlBody`, `StrippedTextReply`, `Headers` ([{Name, Value}]: the RFC
`Message-ID`, `In-Reply-To` and `References` live here) and `Attachments` ([{Name,
Content (base64), ContentType, ContentLength}]). It signs nothing: the webhook URL carries
HTTP basic auth (`https://user:password@host/channels/email/inbound`), checked against
`[email] postmark_user` and `postmark_password` in constant time.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from typing import Any

import msgspec

from adapters.email.config import EmailSettings
from adapters.email.protocol import (
    SUBJECT_MAX,
    Headers,
    Mail,
    MailAttachment,
    address,
    authenticated,
    automatic,
    message_ids,
    sent_at,
)
from adapters.email.text import html_to_text, strip_reply, tidy
from omni.channel import InboundRequest, header
from omni.errors import BadRequest, Unauthenticated


class _Header(msgspec.Struct):
    Name: str
    Value: str


class _Attachment(msgspec.Struct):
    Name: str = ""
    ContentType: str = "application/octet-stream"
    ContentLength: int = 0
    # Content (base64) is not declared: omni keeps no attachment bytes, so it is skipped.


class _Address(msgspec.Struct):
    Email: str = ""
    Name: str = ""


class _Inbound(msgspec.Struct):
    From: str = ""
    FromName: str = ""
    FromFull: _Address | None = None
    To: str = ""
    OriginalRecipient: str = ""
    Subject: str = ""
    MessageID: str = ""
    Date: str = ""
    TextBody: str | None = None
    HtmlBody: str | None = None
    StrippedTextReply: str | None = None
    Headers: list[_Header] = []
    Attachments: list[_Attachment] = []


_DECODER = msgspec.json.Decoder(_Inbound)


def verify(config: EmailSettings, headers: Any) -> None:
    """`Unauthenticated` unless the post carries the configured basic-auth credentials."""
    user, password = config.postmark_user.reveal(), config.postmark_password.reveal()
    if not (user and password):
        raise Unauthenticated(
            "Postmark posts are not accepted: [email] postmark_user and postmark_password are unset"
        )
    given = header(headers, "Authorization") or ""
    scheme, _, encoded = given.partition(" ")
    if scheme.lower() != "basic":
        raise Unauthenticated("Postmark's post must carry HTTP basic auth")
    try:
        got_user, _, got_password = base64.b64decode(encoded, validate=True).partition(b":")
    except (binascii.Error, ValueError):
        raise Unauthenticated("the basic-auth credentials are not base64") from None
    # Both compared, always: which of the two is wrong must not show in the timing.
    user_ok = hmac.compare_digest(got_user, user.encode())
    password_ok = hmac.compare_digest(got_password, password.encode())
    if not (user_ok and password_ok):
        raise Unauthenticated("wrong user or password for Postmark's inbound webhook")


def read(config: EmailSettings, request: InboundRequest) -> Mail:
    verify(config, request.headers)
    try:
        posted = _DECODER.decode(request.body)
    except msgspec.ValidationError as exc:
        raise BadRequest(f"not Postmark's inbound JSON: {exc}") from None
    except msgspec.DecodeError as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from None
    return parse(posted)


def parse(posted: _Inbound) -> Mail:
    headers = Headers([(h.Name, h.Value) for h in posted.Headers])
    raw_from = (posted.FromFull.Email if posted.FromFull else "") or posted.From
    sender = address(raw_from)
    if sender is None:
        raise BadRequest("the mail has no readable From address", field="From")
    ids = message_ids(headers.first("message-id"))
    message_id = ids[0] if ids else ""
    if not message_id:
        if not posted.MessageID:
            raise BadRequest("the mail has neither a Message-ID header nor a MessageID")
        message_id = f"postmark.{posted.MessageID}"
    plain = posted.TextBody or ""
    html = posted.HtmlBody or ""
    body = tidy(plain) if plain.strip() else html_to_text(html)
    stripped = posted.StrippedTextReply or ""
    if not stripped.strip():
        stripped = strip_reply(plain) if plain.strip() else html_to_text(html, drop_quotes=True)
    found = automatic(headers, sender, headers.first("return-path"))
    name = (posted.FromFull.Name if posted.FromFull else "") or posted.FromName
    return Mail(
        provider="postmark",
        sender=sender,
        sender_name=name.strip() or None,
        recipient=address(posted.OriginalRecipient or posted.To.split(",")[0]) or "",
        subject=" ".join(posted.Subject.split())[:SUBJECT_MAX],
        message_id=message_id,
        in_reply_to=message_ids(headers.first("in-reply-to")),
        references=message_ids(headers.first("references")),
        body=body,
        stripped=tidy(stripped),
        html=not plain.strip() and bool(html.strip()),
        attachments=tuple(
            MailAttachment(name=a.Name, mime=a.ContentType, size=a.ContentLength)
            for a in posted.Attachments
        ),
        sent_at=sent_at(posted.Date or headers.first("date")),
        authenticated=authenticated(headers, sender),
        automatic=found[0] if found else None,
        automatic_reason=found[1] if found else None,
    )
