"""`POST /v1/messages`: ingest a message already normalized by the caller."""

from __future__ import annotations

from aiohttp import web

from omni.errors import ValidationFailed
from omni.model import InboundMessage
from omni.state import SERVICES, SETTINGS
from omni.web_io import json_response, read_json


def check_channel(request: web.Request, channel: str, field: str = "channel") -> None:
    enabled = request.app[SETTINGS].channels.enabled
    if channel not in enabled:
        raise ValidationFailed(
            f"unknown channel {channel!r}; this server takes {', '.join(enabled)}", field=field
        )


async def ingest(request: web.Request) -> web.Response:
    inbound = await read_json(request, InboundMessage)
    check_channel(request, inbound.channel)
    if not (inbound.text or inbound.attachments or inbound.quick_reply or inbound.postback
            or inbound.voice):  # fmt: skip
        raise ValidationFailed(
            "a message needs text, attachments, a quick reply, a postback or voice", field="text"
        )
    # Through the inbox, so the channel's bot hears of it like any channel message.
    message, created = await request.app[SERVICES].inbox.ingest(inbound)
    headers = {"Location": f"/v1/customers/{message.customer_id}/history"}
    if not created:
        headers["Idempotent-Replayed"] = "true"
    return json_response(message, status=201 if created else 200, headers=headers)
