"""E-mail, pure: one normalised `Mail` behind both providers' inbound webhooks, the
canonical message a mail becomes, and the outbound mail omni renders. No I/O here.

    Mailgun  (adapters.email.mailgun)   form posts signed with timestamp/token/signature
    Postmark (adapters.email.postmark)  JSON posts behind HTTP basic auth

`adapters.email.adapter.EmailAdapter` tells them apart by content type, authenticates
and parses.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import getaddresses, parsedate_to_datetime
from typing import Literal

from adapters.email.text import truncate
from omni.clock import iso
from omni.model import ATTACHMENTS_MAX, TEXT_MAX, Attachment, AttachmentType, InboundMessage

NAME = "email"
BODY_MAX = 32_768  # characters of the full body kept for agents (README "E-mail limits")
SUBJECT_MAX = 512
ADDRESS_MAX = 254  # RFC 5321's path limit, less the angle brackets
MESSAGE_ID_MAX = 500  # longer ids are stored by digest (the stored id field holds 512)
Automatic = Literal["auto_reply", "bounce", "bulk"]


@dataclass(frozen=True)
class MailAttachment:
    name: str
    mime: str
    size: int
    url: str | None = None  # where the provider keeps it (Mailgun's stored messages)


@dataclass(frozen=True)
class Mail:
    """One inbound e-mail, whichever provider posted it."""

    provider: Literal["mailgun", "postmark"]
    sender: str  # the From address, normalised (`address`)
    sender_name: str | None
    recipient: str  # the address it was sent to (ours), normalised; "" when not told
    subject: str
    message_id: str  # RFC 5322 Message-ID without angle brackets
    in_reply_to: tuple[str, ...]
    references: tuple[str, ...]  # oldest first, as in the header
    body: str  # the full text: text/plain, else the HTML as text
    stripped: str  # the new words, without quoted history and signature (what bots read)
    html: bool  # `body` was made from HTML
    attachments: tuple[MailAttachment, ...]
    sent_at: str | None
    authenticated: bool  # SPF or DKIM pass aligned with the From domain (`authenticated`)
    automatic: Automatic | None  # not written by a person: no bot is woken for it
    automatic_reason: str | None = None
    token: str | None = None  # Mailgun's one-time token: the route refuses a reuse

    def thread_ids(self) -> list[str]:
        """The mails this one answers, nearest first: In-Reply-To, then References newest
        first (RFC 5322 §3.6.4; a thread lookup tries them in this order)."""
        ids = [*self.in_reply_to, *reversed(self.references)]
        return list(dict.fromkeys(i for i in ids if i != self.message_id))


class Headers:
    """A mail's headers in order, looked up case-insensitively."""

    def __init__(self, pairs: Sequence[tuple[str, str]]) -> None:
        self.pairs = [(name.strip().lower(), value) for name, value in pairs]

    def first(self, name: str) -> str | None:
        name = name.lower()
        return next((value for key, value in self.pairs if key == name), None)


def address(raw: str) -> str | None:
    """The normalised address in a From/To value: display name and angle brackets
    dropped, lower-cased. Dots and "+tags" are kept: `dana.x+shop@` and `danax@` can be
    different mailboxes (only some providers ignore them), and omni cannot know."""
    found = [a for _, a in getaddresses([raw]) if a]
    if len(found) != 1:
        return None
    value = found[0].strip().lower()
    local, at, domain = value.rpartition("@")
    if not at or not local or "." not in domain or len(value) > ADDRESS_MAX:
        return None
    if any(c.isspace() or c in "<>," for c in value):
        return None
    return value


def message_ids(value: str | None) -> tuple[str, ...]:
    """The ids in a Message-ID, In-Reply-To or References value, without brackets."""
    if not value:
        return ()
    found = re.findall(r"<([^<>\s]{1,998})>", value)
    if not found and value.strip() and " " not in value.strip():
        found = [value.strip().strip("<>")]
    return tuple(dict.fromkeys(found))


def sent_at(date: str | None) -> str | None:
    """The Date header as RFC 3339 UTC; None when absent or unreadable."""
    if not date:
        return None
    try:
        when = parsedate_to_datetime(date)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return iso(int(when.timestamp() * 1000))


def _aligned(from_domain: str, domain: str) -> bool:
    domain = domain.strip().strip(".").lower().rpartition("@")[2]
    return "." in domain and (from_domain == domain or from_domain.endswith("." + domain))


def authenticated(headers: Headers, sender: str, envelope: str = "") -> bool:
    """The provider says the From domain sent this: DMARC pass, or SPF or DKIM pass for
    the From domain (or a parent of it). Only the first Authentication-Results header is
    read: the receiving provider adds its own on top, and a sender can add any below.
    Mailgun also says X-Mailgun-Spf (of the envelope sender, checked for alignment)."""
    domain = sender.rpartition("@")[2]
    results = headers.first("authentication-results") or ""
    for method, result, props in re.findall(r"\b(spf|dkim|dmarc)=(\w+)([^;]*)", results, re.I):
        if result.lower() != "pass":
            continue
        if method.lower() == "dmarc":
            return True
        key = "header.d" if method.lower() == "dkim" else "smtp.mailfrom"
        match = re.search(rf"{re.escape(key)}=([^\s;]+)", props, re.I)
        if match and _aligned(domain, match.group(1)):
            return True
    spf = (headers.first("x-mailgun-spf") or "").strip().lower()
    return spf == "pass" and bool(envelope) and _aligned(domain, envelope)


_NOT_A_PERSON = frozenset({"bulk", "junk", "list", "auto_reply"})


def automatic(headers: Headers, sender: str, envelope: str | None) -> tuple[Automatic, str] | None:
    """Why this mail was not written by a person (RFC 3834 and the de-facto headers), or
    None. Bounces first: a delivery report may carry Auto-Submitted too."""
    content_type = (headers.first("content-type") or "").lower()
    if sender.partition("@")[0] == "mailer-daemon":
        return "bounce", "sent by MAILER-DAEMON"
    if content_type.startswith("multipart/report"):
        return "bounce", "a delivery status report (multipart/report)"
    if envelope is not None and envelope.strip() in ("", "<>"):
        return "bounce", "an empty return path (<>)"
    submitted = (headers.first("auto-submitted") or "").split(";")[0].strip().lower()
    if submitted and submitted != "no":
        return "auto_reply", f"Auto-Submitted: {submitted}"
    precedence = (headers.first("precedence") or "").strip().lower()
    if precedence in _NOT_A_PERSON:
        return ("auto_reply" if precedence == "auto_reply" else "bulk"), f"Precedence: {precedence}"
    for name in ("x-autoreply", "x-autorespond"):
        if headers.first(name) is not None:
            return "auto_reply", f"{name} is set"
    if headers.first("list-id") is not None:
        return "bulk", "sent through a mailing list (List-Id)"
    return None


def attachment_type(mime: str) -> AttachmentType:
    kind = mime.partition("/")[0]
    return kind if kind in ("image", "video", "audio") else "file"  # type: ignore[return-value]


def stored_id(message_id: str) -> str:
    """The id a mail is stored (and de-duplicated) under: its Message-ID."""
    if len(message_id) <= MESSAGE_ID_MAX:
        return message_id
    return "sha:" + hashlib.blake2b(message_id.encode(), digest_size=20).hexdigest()


def inbound_message(mail: Mail) -> InboundMessage:
    """The canonical message: the stripped text for bots (cut to the text limit), the
    full body for agents in `metadata.body` when stripping removed anything, the subject
    and threading headers in metadata, attachments described (not their bytes)."""
    text, text_cut = truncate(mail.stripped, TEXT_MAX)
    metadata: dict[str, str | int | bool | None] = {
        "subject": mail.subject,
        "message_id": mail.message_id[:MESSAGE_ID_MAX],
        "provider": mail.provider,
        "to": mail.recipient or None,
        "authenticated": mail.authenticated,
    }
    if mail.body.strip() != mail.stripped.strip():
        body, body_cut = truncate(mail.body, BODY_MAX)
        metadata["body"] = body
        if body_cut:
            metadata["body_truncated"] = True
    if mail.html:
        metadata["html"] = True
    if text_cut:
        metadata["text_truncated"] = True
    if mail.in_reply_to:
        metadata["in_reply_to"] = mail.in_reply_to[0][:MESSAGE_ID_MAX]
    if len(mail.attachments) > ATTACHMENTS_MAX:
        metadata["attachments_total"] = len(mail.attachments)
    reply_to = mail.in_reply_to[0] if mail.in_reply_to else None
    return InboundMessage(
        channel=NAME,
        external_id=mail.sender,
        channel_message_id=stored_id(mail.message_id),
        text=text or None,
        sent_at=mail.sent_at,
        author_name=(mail.sender_name or "")[:256] or None,
        attachments=[
            Attachment(
                type=attachment_type(a.mime),
                name=a.name[:512] or None,
                mime=a.mime[:128] or None,
                size=max(a.size, 0),
                url=a.url
                if a.url and a.url.startswith("https://") and len(a.url) <= 2048
                else None,
            )
            for a in mail.attachments[:ATTACHMENTS_MAX]
        ],
        reply_to=reply_to if reply_to and len(reply_to) <= MESSAGE_ID_MAX else None,
        metadata={k: v for k, v in metadata.items() if v is not None},
    )


@dataclass(frozen=True)
class Outgoing:
    """What one outbound mail says; `render` makes the RFC 5322 message of it."""

    to: str
    from_address: str
    from_name: str
    subject: str
    message_id: str  # without brackets
    text: str
    in_reply_to: str | None = None
    references: tuple[str, ...] = ()
    auto_submitted: str | None = None  # RFC 3834: "auto-replied" for a bot's answer


def reply_subject(subject: str) -> str:
    subject = " ".join(subject.split())[:SUBJECT_MAX]
    return subject if re.match(r"^(re|aw|sv|antw)\s*:", subject, re.I) else f"Re: {subject}"


def outbound_message_id(conversation_id: str, message_id: str, from_address: str) -> str:
    """`omni.<conversation>.<message>@<our domain>`: unique per message, and the same for
    every attempt to send it, so a retried send is one mail to mail programs."""
    domain = from_address.rpartition("@")[2] or "omni.invalid"
    safe = re.sub(r"[^A-Za-z0-9_.-]", "-", f"{conversation_id or 'cnv'}.{message_id}")
    return f"omni.{safe}@{domain}"


def render(mail: Outgoing) -> EmailMessage:
    message = EmailMessage()
    local, _, domain = mail.from_address.rpartition("@")
    message["From"] = Address(display_name=mail.from_name, username=local, domain=domain)
    message["To"] = mail.to
    message["Subject"] = mail.subject
    message["Message-ID"] = f"<{mail.message_id}>"
    if mail.in_reply_to:
        message["In-Reply-To"] = f"<{mail.in_reply_to}>"
    if mail.references:
        message["References"] = " ".join(f"<{i}>" for i in mail.references)
    if mail.auto_submitted:
        message["Auto-Submitted"] = mail.auto_submitted
        # Exchange and Outlook: no out-of-office answers to a bot's mail (no mail loops).
        message["X-Auto-Response-Suppress"] = "All"
    message.set_content(mail.text)
    return message
