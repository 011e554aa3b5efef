"""The e-mail channel's route and what it stores.

    POST /channels/email/inbound   Mailgun's form posts and Postmark's JSON, told apart
                                   by content type; 401 unless authenticated, stored
                                   before the 200

Who a mail is from (README "Who is who"), in this order: the address's own customer;
else, for a reply to a mail omni sent to that same address (In-Reply-To/References), the
customer it was sent to; else, when the provider authenticated the From domain (SPF or
DKIM pass, aligned), the one customer who verified that address; else a new customer.

Auto-replies, bounces and list mail are put on the timeline of the customer they concern
as an event (not a message from the customer): no bot is woken, no conversation is
reopened, the customer's last channel is not moved. A bounce of a mail omni sent marks
that mail failed.
"""

from __future__ import annotations

import re
import time

import structlog
from aiohttp import web

from adapters.email.adapter import EmailAdapter
from adapters.email.protocol import NAME, Mail, inbound_message, message_ids, stored_id
from adapters.email.text import truncate
from omni import channel_http, nonces
from omni.clock import iso, now_ms
from omni.errors import Unauthenticated
from omni.identity import claim_thread, claim_verified_email
from omni.inbox import Inbox
from omni.model import MessageStatus
from omni.route import Param, Route
from omni.state import SERVICES
from omni.store import Store
from omni.threads import MailThread, Threads
from omni.web_io import json_response

log = structlog.get_logger("adapters.email")
AUTOMATIC_TEXT_MAX = 1000  # of an auto-reply's or a bounce's text, kept on its event


async def email_inbound(request: web.Request) -> web.Response:
    structlog.contextvars.bind_contextvars(channel=NAME)
    adapter: EmailAdapter = channel_http.adapter(request, NAME, EmailAdapter)
    inbound = await channel_http.inbound(request, adapter.config.body_max, "[email] body_max")
    mail = adapter.read(inbound, time.time())
    inbox: Inbox = request.app[SERVICES].inbox
    store = inbox.store
    if mail.sender == adapter.config.from_address.lower():
        # Our own mail coming back (a forward rule, a list): answering it would be a loop.
        log.info("mail from our own address not stored")
        return json_response({"messages": 0, "automatic": "own"})
    if mail.token is not None and not await nonces.first_use(
        store, "mailgun", mail.token, 2 * adapter.config.signature_max_age_s
    ):
        # Whether Mailgun's retry of a post whose 200 it never got carries the same token
        # is not documented: a repeat of a mail already stored is answered 200 and stores
        # nothing (the retry stops), any other body under a used token is a replay.
        if await _stored_before(Threads(store), mail):
            return json_response({"messages": 0, "automatic": mail.automatic})
        raise Unauthenticated("this token was used before: a replayed post is refused")
    try:
        stored = await receive(inbox, Threads(store), mail)
    except Exception:
        if mail.token is not None:  # Mailgun's retry carries the same token
            await nonces.forget(store, "mailgun", mail.token)
        raise
    return json_response({"messages": stored, "automatic": mail.automatic})


async def _stored_before(threads: Threads, mail: Mail) -> bool:
    found = await threads.find([mail.message_id])
    return found is not None and found[1] == mail.sender


async def receive(inbox: Inbox, threads: Threads, mail: Mail) -> int:
    """Store one mail; how many messages that made (0 or 1)."""
    store = inbox.store
    if mail.automatic is not None:
        return await _record_automatic(store, threads, mail)
    thread = await threads.find(mail.thread_ids())
    if thread is not None and thread[1] == mail.sender:
        await claim_thread(store, thread[0], mail.sender)
    elif mail.authenticated:
        await claim_verified_email(store, mail.sender)
    message, created = await inbox.ingest(inbound_message(mail))
    cid = message.customer_id
    await threads.index(cid, mail.message_id, mail.sender)
    if created:
        await threads.note(cid, "in", MailThread(mail.message_id, mail.subject,
                                                 list(mail.references)))  # fmt: skip
    return 1


async def _record_automatic(store: Store, threads: Threads, mail: Mail) -> int:
    """An auto-reply, bounce or list mail, on the timeline of the customer it concerns."""
    ids = mail.thread_ids()
    if mail.automatic == "bounce":
        # A report quotes the bounced mail's headers in its body, not in In-Reply-To.
        ids += [i for i in message_ids(mail.body) if i not in ids]
    thread = await threads.find(ids)
    cid = thread[0] if thread else await store.customers.find(NAME, mail.sender)
    if cid is None:
        if mail.automatic == "bounce":
            log.info("bounce of no mail omni knows", reason=mail.automatic_reason)
            return 0
        cid = await store.customers.ensure(NAME, mail.sender)
    if mail.automatic == "bounce" and thread is not None:
        await _bounced(store, cid, ids, mail)
    what = {"auto_reply": "Auto-reply", "bounce": "Bounce", "bulk": "Bulk mail"}[
        mail.automatic or ""
    ]
    # A report's diagnostic is in its body, wherever a provider's stripping would cut it.
    words = mail.body if mail.automatic == "bounce" else (mail.stripped or mail.body)
    text, _ = truncate(words, AUTOMATIC_TEXT_MAX)
    await store.timeline.record_event(
        cid,
        f"{NAME}:{stored_id(mail.message_id)}",
        f"{what} from {mail.sender}: {mail.subject}",
        {"kind": f"email_{mail.automatic}", "channel": NAME, "reason": mail.automatic_reason,
         "from": mail.sender, "subject": mail.subject, "message_id": stored_id(mail.message_id),
         "in_reply_to": mail.in_reply_to[0] if mail.in_reply_to else None, "body": text},
    )  # fmt: skip
    return 0


async def _bounced(store: Store, cid: str, ids: list[str], mail: Mail) -> None:
    for message_id in ids:
        entry = await store.timeline.entry_of(cid, NAME, message_id)
        if entry is not None:
            diagnostic = _diagnostic(mail.body)[:200] or mail.subject
            reason = f"bounced: {diagnostic}"
            await store.timeline.set_status(
                cid, entry, MessageStatus(state="failed", at=iso(now_ms()) or "", reason=reason)
            )
            return


def _diagnostic(body: str) -> str:
    """Why a delivery failed: a report's Diagnostic-Code (RFC 3464), else its first words."""
    found = re.search(r"^Diagnostic-Code:\s*(?:smtp;\s*)?(.+)$", body, re.IGNORECASE | re.MULTILINE)
    return found.group(1).strip() if found else " ".join(body.split())


ROUTES: tuple[Route, ...] = (
    Route("POST", "/channels/email/inbound", email_inbound,
          "Inbound e-mail from Mailgun (form posts signed with timestamp/token/signature) "
          "or Postmark (JSON behind HTTP basic auth); answered 200 once stored",
          "channels", errors=(400, 401, 404, 413, 415),
          params=(Param("Authorization", "header",
                        "Postmark: Basic base64([email] postmark_user:postmark_password)"),)),
)  # fmt: skip
