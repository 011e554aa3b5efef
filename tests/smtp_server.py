"""A real SMTP server for the tests that mail (aiosmtpd, in the test's own event loop):
every mail it accepts, parsed as a mail program would. The `mailbox` fixture in
conftest.py starts one on a free port."""

from __future__ import annotations

from email import message_from_bytes, policy
from email.message import EmailMessage

from aiosmtpd.smtp import SMTP, Envelope, Session


class Mailbox:
    """An SMTP server's DATA handler: every mail it accepts, parsed."""

    def __init__(self) -> None:
        self.mails: list[EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.content if isinstance(envelope.content, bytes) else b""
        parsed = message_from_bytes(raw, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        self.mails.append(parsed)
        self.envelopes.append((str(envelope.mail_from), list(envelope.rcpt_tos)))
        return "250 OK"


async def has_mails(box: Mailbox, n: int) -> bool:
    return len(box.mails) >= n
