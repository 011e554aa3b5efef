"""Mailgun's inbound routes (`forward()` to a URL), pure.

Mailgun posts the parsed mail as a form: `application/x-www-form-urlencoded`, or
`multipart/form-data` with one file part per attachment (`attachment-1`, …). Fields:
`from`, `sender` (the envelope's MAIL FROM), `recipient`, `subject`, `body-plain`,
`stripped-text`, `body-html`, `stripped-html`, `Message-Id`, `In-Reply-To`, `References`,
`message-headers` (a JSON list of [name, value]), `attachment-count`; a stored message's
notification (`store(notify=…)`) sends `attachments` as JSON with each one's URL instead.

Signature: `signature = hex(HMAC-SHA256(signing key, timestamp + token))` — fields of the
form, not a header. It covers no body bytes, so a post is also refused when its timestamp
is outside `[email] signature_max_age_s`, and the route refuses a token used before.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from email import policy
from email.parser import BytesParser
from urllib.parse import parse_qsl

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

Form = dict[str, str]
Files = list[MailAttachment]


def form(request: InboundRequest) -> tuple[Form, Files]:
    """The posted fields, and the attachments' descriptions (their bytes are dropped)."""
    kind = header(request.headers, "Content-Type") or ""
    if kind.lower().startswith("multipart/form-data"):
        return _multipart(kind, request.body)
    try:
        pairs = parse_qsl(
            request.body.decode("utf-8"), keep_blank_values=True, strict_parsing=False
        )
    except UnicodeDecodeError:
        raise BadRequest("the form is not UTF-8") from None
    return dict(pairs), []


def _multipart(kind: str, body: bytes) -> tuple[Form, Files]:
    parsed = BytesParser(policy=policy.HTTP).parsebytes(
        b"Content-Type: " + kind.encode("latin-1", "replace") + b"\r\n\r\n" + body
    )
    if not parsed.is_multipart():
        raise BadRequest("the multipart form has no parts (is its boundary right?)")
    fields: Form = {}
    files: Files = []
    for part in parsed.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        filename = part.get_filename()
        if filename is None:
            fields[name] = data.decode(part.get_content_charset() or "utf-8", "replace")
        else:
            files.append(
                MailAttachment(name=filename, mime=part.get_content_type(), size=len(data))
            )
    return fields, files


def verify(config: EmailSettings, fields: Form, now_s: float) -> str:
    """The post's token when its signature is Mailgun's and its timestamp is fresh;
    `Unauthenticated` otherwise. Nothing of the mail is read before this."""
    key = config.mailgun_signing_key.reveal()
    if not key:
        raise Unauthenticated(
            "Mailgun posts are not accepted: [email] mailgun_signing_key is unset"
        )
    timestamp, token = fields.get("timestamp", ""), fields.get("token", "")
    signature = fields.get("signature", "")
    if not (timestamp and token and signature):
        raise Unauthenticated("the form has no timestamp, token and signature")
    expected = hmac.new(key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signature.strip().lower()):
        raise Unauthenticated("the signature is not Mailgun's for [email] mailgun_signing_key")
    try:
        age = now_s - int(timestamp)
    except ValueError:
        raise Unauthenticated("the timestamp is not a number") from None
    if abs(age) > config.signature_max_age_s:
        raise Unauthenticated(
            f"the timestamp is {int(age)} s from now, outside the "
            f"{config.signature_max_age_s} s window ([email] signature_max_age_s)"
        )
    return token


def read(config: EmailSettings, request: InboundRequest, now_s: float) -> Mail:
    fields, files = form(request)
    token = verify(config, fields, now_s)
    return parse(fields, files, token)


def parse(fields: Form, files: Files, token: str | None = None) -> Mail:
    headers = Headers(_headers(fields.get("message-headers", "")))
    sender = address(fields.get("from") or headers.first("from") or fields.get("sender", ""))
    if sender is None:
        raise BadRequest("the mail has no readable From address", field="from")
    envelope = fields.get("sender")
    message_id = _first(fields.get("Message-Id") or headers.first("message-id"))
    if not message_id:
        # No Message-ID (rare: RFC 5322 only says "should"): an id made of the mail's own
        # fields, so that a redelivery of it is still stored once.
        seen = "\0".join(fields.get(k, "") for k in ("from", "subject", "body-plain", "Date"))
        message_id = "mailgun." + hashlib.blake2b(seen.encode(), digest_size=16).hexdigest()
    plain = fields.get("body-plain", "")
    html = fields.get("body-html", "")
    body = tidy(plain) if plain.strip() else html_to_text(html)
    stripped = fields.get("stripped-text", "")
    if not stripped.strip():
        stripped_html = fields.get("stripped-html", "")
        if plain.strip():
            stripped = strip_reply(plain)
        else:
            stripped = html_to_text(stripped_html or html, drop_quotes=True)
    found = automatic(headers, sender, envelope)
    return Mail(
        provider="mailgun",
        sender=sender,
        sender_name=_display_name(fields.get("from", "")),
        recipient=address(fields.get("recipient", "").split(",")[0]) or "",
        subject=" ".join((fields.get("subject") or headers.first("subject") or "").split())[
            :SUBJECT_MAX
        ],
        message_id=message_id,
        in_reply_to=message_ids(fields.get("In-Reply-To") or headers.first("in-reply-to")),
        references=message_ids(fields.get("References") or headers.first("references")),
        body=body,
        stripped=tidy(stripped),
        html=not plain.strip() and bool(html.strip()),
        attachments=tuple(files) or _stored_attachments(fields.get("attachments", "")),
        sent_at=sent_at(fields.get("Date") or headers.first("date")),
        authenticated=authenticated(headers, sender, address(envelope or "") or ""),
        automatic=found[0] if found else None,
        automatic_reason=found[1] if found else None,
        token=token,
    )


def _first(value: str | None) -> str:
    ids = message_ids(value)
    return ids[0] if ids else ""


def _display_name(raw: str) -> str | None:
    from email.utils import parseaddr

    name = parseaddr(raw)[0].strip()
    return name or None


def _headers(raw: str) -> list[tuple[str, str]]:
    if not raw:
        return []
    try:
        pairs = json.loads(raw)
    except ValueError:
        raise BadRequest("message-headers is not JSON", field="message-headers") from None
    if not isinstance(pairs, list) or not all(
        isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) for x in p) for p in pairs
    ):
        raise BadRequest("message-headers must be a list of [name, value]", field="message-headers")
    return [(name, value) for name, value in pairs]


def _stored_attachments(raw: str) -> tuple[MailAttachment, ...]:
    """A stored message's notification lists its attachments with their URLs."""
    if not raw:
        return ()
    try:
        items = json.loads(raw)
    except ValueError:
        raise BadRequest("attachments is not JSON", field="attachments") from None
    if not isinstance(items, list):
        raise BadRequest("attachments must be a list", field="attachments")
    found = []
    for item in items:
        if not isinstance(item, dict):
            raise BadRequest("each attachment must be an object", field="attachments")
        size = item.get("size")
        found.append(
            MailAttachment(
                name=str(item.get("name") or ""),
                mime=str(item.get("content-type") or "application/octet-stream"),
                size=size if isinstance(size, int) else 0,
                url=str(item["url"]) if isinstance(item.get("url"), str) else None,
            )
        )
    return tuple(found)
