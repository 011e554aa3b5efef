"""The inbound route's reader: Postmark posts JSON, Mailgun posts forms, so the content
type says which provider's authentication and fields to expect."""

from __future__ import annotations

from collections.abc import Mapping

from adapters.email import mailgun, postmark
from adapters.email.config import EmailSettings
from adapters.email.protocol import NAME, Mail
from omni.channel import InboundRequest
from omni.errors import UnsupportedMediaType

FORMS = ("application/x-www-form-urlencoded", "multipart/form-data")


class EmailAdapter:
    channel = NAME

    def __init__(self, config: EmailSettings) -> None:
        self.config = config

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
    value = next((v for k, v in headers.items() if k.lower() == "content-type"), "")
    return value.split(";")[0].strip().lower()
