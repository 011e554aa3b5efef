"""The inbound route's reader: Postmark posts JSON, Mailgun posts forms, so the content
type says which provider's authentication and fields to expect."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from adapters.email import mailgun, postmark
from adapters.email.config import EmailSettings
from adapters.email.protocol import NAME, Mail, inbound_message
from omni.channel import ChannelEvent, InboundRequest, Received, Skipped, header
from omni.errors import UnsupportedMediaType

FORMS = ("application/x-www-form-urlencoded", "multipart/form-data")


class EmailAdapter:
    """The route uses `read` (it needs the whole mail: threading, authentication, whether
    a person wrote it); `verify` and `parse` are the core's Adapter seam over it."""

    channel = NAME

    def __init__(self, config: EmailSettings) -> None:
        self.config = config

    def verify(self, request: InboundRequest) -> None:
        kind = content_type(request.headers)
        if kind == "application/json":
            postmark.verify(self.config, request.headers)
        elif kind in FORMS:
            mailgun.verify(self.config, mailgun.form(request)[0], time.time())
        else:
            self.read(request, time.time())  # says why (415)

    def parse(self, request: InboundRequest) -> Sequence[ChannelEvent]:
        mail = self.read(request, time.time())
        if mail.automatic is not None:
            return [Skipped(f"{mail.automatic}: {mail.automatic_reason}")]
        return [Received(inbound_message(mail))]

    def read(self, request: InboundRequest, now_s: float) -> Mail:
        """Authenticate (401, before anything is parsed) and parse (400) one post."""
        kind = content_type(request.headers)
        if kind == "application/json":
            return postmark.read(self.config, request)
        if kind in FORMS:
            return mailgun.read(self.config, request, now_s)
        raise UnsupportedMediaType(
            "post Postmark's application/json or Mailgun's form (urlencoded or multipart), "
            f"not {kind or 'nothing'}"
        )


def content_type(headers: Mapping[str, str]) -> str:
    return (header(headers, "Content-Type") or "").split(";")[0].strip().lower()
