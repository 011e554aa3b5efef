"""Replies by e-mail, over SMTP (aiosmtplib).

Each mail carries omni's own Message-ID (`<omni.<conversation>.<message>@<our domain>>`,
recorded so a reply to it finds its customer), and `In-Reply-To`, `References` and
`Re: <subject>` from the customer's last mail, so their mail program shows it in the
thread they wrote in. A bot's mail says `Auto-Submitted` (RFC 3834) so that
out-of-office robots do not answer it; an agent's does not.
"""

from __future__ import annotations

import aiosmtplib
import structlog

from adapters.email.config import EmailSettings, Smtp
from adapters.email.protocol import (
    Outgoing,
    address,
    outbound_message_id,
    render,
    reply_subject,
)
from omni.channel import Delivery
from omni.model import Message
from omni.threads import MailThread, Threads

REASON_NOT_CONFIGURED = "not_configured"
log = structlog.get_logger("adapters.email")


def body_of(message: Message) -> str:
    """The mail's text: the reply, its attachments as links, its quick replies as the
    options to answer with (mail has no buttons)."""
    parts = [message.text or ""]
    links = [f"{a.name or a.type}: {a.url}" for a in message.attachments if a.url]
    if links:
        parts.append("\n".join(links))
    if message.quick_replies:
        parts.append("\n".join(f"- {q.title or q.payload}" for q in message.quick_replies))
    return "\n\n".join(p for p in parts if p).strip()


class SmtpSender:
    def __init__(self, config: EmailSettings, smtp: Smtp, threads: Threads) -> None:
        self.config = config
        self.smtp = smtp
        self.threads = threads

    async def __call__(self, message: Message, recipient: str) -> Delivery:
        to = address(recipient)
        if to is None:  # an identity an agent linked by hand, say: never put it in a header
            return Delivery(status="failed", reason=f"not an e-mail address: {recipient[:100]!r}")
        text = body_of(message)
        if not text:
            return Delivery(status="failed", reason="empty: a mail needs text or a link")
        got, sent = await self.threads.last(message.customer_id)
        parent = got or sent  # the customer's last mail; else ours, to keep one thread
        subject = (
            reply_subject(parent.subject) if parent and parent.subject else self.config.subject
        )
        references = tuple(parent.reply_references()) if parent else ()
        message_id = outbound_message_id(
            message.conversation_id, message.id, self.config.from_address
        )
        automatic = None
        if message.author.kind != "agent":
            automatic = "auto-replied" if got else "auto-generated"
        mail = render(
            Outgoing(
                to=to,
                from_address=self.config.from_address,
                from_name=self.config.from_name,
                subject=subject,
                message_id=message_id,
                text=text,
                in_reply_to=parent.message_id if parent else None,
                references=references,
                auto_submitted=automatic,
            )
        )
        # Indexed before it leaves: the customer's answer may come back at once.
        await self.threads.index(message.customer_id, message_id, to)
        try:
            await aiosmtplib.send(
                mail,
                hostname=self.smtp.host,
                port=self.smtp.port,
                username=self.smtp.username or None,
                password=self.smtp.password.reveal() or None,
                use_tls=self.smtp.tls,
                start_tls=False if self.smtp.tls else None,
                timeout=self.config.smtp_timeout_s,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            reasons = "; ".join(f"{e.code} {e.message}" for e in exc.recipients)
            return Delivery(status="failed", reason=f"refused: {reasons}")
        except aiosmtplib.SMTPResponseException as exc:
            # 4xx is the server's "try later"; 5xx is final.
            return Delivery(
                status="failed", reason=f"smtp {exc.code}: {exc.message}", retry=exc.code < 500
            )
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            log.warning("smtp unreachable", error=type(exc).__name__)
            return Delivery(status="failed", reason=f"smtp: {type(exc).__name__}", retry=True)
        await self.threads.note(
            message.customer_id, "out", MailThread(message_id, subject, list(references))
        )
        return Delivery(status="sent", channel_message_id=message_id)


async def not_configured(message: Message, recipient: str) -> Delivery:
    return Delivery(
        status="failed",
        reason=f"{REASON_NOT_CONFIGURED}: set [email] from_address and smtp_url to send",
    )
