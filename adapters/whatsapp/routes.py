"""The WhatsApp channel's HTTP side.

GET  /channels/whatsapp/webhook            Meta's subscription handshake: the
                                           challenge as text/plain, or 403
POST /channels/whatsapp/webhook            notifications, X-Hub-Signature-256 checked
                                           over the raw body (401, nothing stored);
                                           200 once every event is stored
GET  /channels/whatsapp/media/{media_id}   a customer's photo, voice note, video,
                                           document or sticker, fetched from Graph
                                           now (any omni API key)
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import structlog
from aiohttp import web

from adapters.whatsapp.adapter import MEDIA_PATH, WhatsAppAdapter
from adapters.whatsapp.graph import MediaUnavailable
from adapters.whatsapp.protocol import CHANNEL
from omni import channel_http
from omni.channel import ChannelEvent, Received
from omni.errors import Conflict, Gone, NotFound, Unauthenticated, Unavailable, ValidationFailed
from omni.links import Redeem
from omni.route import Param, Route
from omni.state import SERVICES
from omni.web_io import json_response

MEDIA_MAX_BYTES = 100 * 1024 * 1024  # WhatsApp's largest (a document)
_MEDIA_ID = re.compile(r"^[0-9A-Za-z_.-]{1,128}$")
_LINK_CODE = re.compile(r"\d{6}")
_LINK_TOKEN = re.compile(r"\blt1\.[A-Za-z0-9_-]{8,400}\.[A-Za-z0-9_-]{8,64}")
log = structlog.get_logger("adapters.whatsapp")


async def whatsapp_handshake(request: web.Request) -> web.Response:
    adapter: WhatsAppAdapter = channel_http.adapter(request, CHANNEL, WhatsAppAdapter)
    challenge = adapter.handshake(dict(request.query))
    return web.Response(text=challenge, content_type="text/plain")


async def whatsapp_webhook(request: web.Request) -> web.Response:
    structlog.contextvars.bind_contextvars(channel=CHANNEL)
    adapter: WhatsAppAdapter = channel_http.adapter(request, CHANNEL, WhatsAppAdapter)
    inbound = await channel_http.inbound(request)
    adapter.verify(inbound)
    events = await adapter.with_media(adapter.parse(inbound))
    await _present_links(request, events)
    stored = await request.app[SERVICES].inbox.receive(CHANNEL, events)
    return json_response({"events": len(events), "messages": len(stored)})


async def _present_links(request: web.Request, events: Sequence[ChannelEvent]) -> None:
    """A customer continuing here from another channel writes the link code they were
    given (the whole message: six digits) or sends the link token (the text a wa.me link
    filled in for them): their wa_id joins the customer it was made for (omni.links)
    before the message is stored, so the bot answering it knows what was said there. A
    code or token that is not (or no longer) valid is just text."""
    for event in events:
        if not isinstance(event, Received) or not event.message.text:
            continue
        text = event.message.text.strip()
        token = _LINK_TOKEN.search(text)
        code = text if _LINK_CODE.fullmatch(text) else None
        if token is None and code is None:
            continue
        redeem = Redeem(channel="whatsapp", external_id=event.message.external_id,
                        token=token.group(0) if token else None,
                        code=None if token else code)  # fmt: skip
        try:
            await request.app[SERVICES].links.redeem(redeem)
        except (NotFound, Gone, ValidationFailed, Unauthenticated, Conflict) as exc:
            log.info("whatsapp link not redeemed", reason=exc.detail)


async def whatsapp_media(request: web.Request) -> web.StreamResponse:
    adapter: WhatsAppAdapter = channel_http.adapter(request, CHANNEL, WhatsAppAdapter)
    media_id = request.match_info["media_id"]
    if not _MEDIA_ID.match(media_id):
        raise NotFound("no such WhatsApp media id")
    if adapter.client is None:
        raise Unavailable("[whatsapp] access_token is not set: media cannot be fetched")
    try:
        info = await adapter.client.media(media_id)
        upstream = await adapter.client.download(info.url)
    except MediaUnavailable as exc:
        if exc.missing:
            raise NotFound(f"WhatsApp no longer has media {media_id}: {exc.reason}") from None
        raise Unavailable(
            f"WhatsApp media {media_id} cannot be fetched now: {exc.reason}"
        ) from None
    try:
        size = upstream.content_length
        if size is not None and size > MEDIA_MAX_BYTES:
            raise Unavailable(f"WhatsApp media {media_id} is larger than omni passes on")
        mime = info.mime_type
        response = web.StreamResponse(
            headers={
                "Content-Type": mime if isinstance(mime, str) and "/" in mime
                else upstream.content_type,
                "Cache-Control": "private, max-age=300",
                "X-Content-Type-Options": "nosniff",
                "Content-Disposition": "inline",
            }
        )  # fmt: skip
        if size is not None:
            response.content_length = size
        await response.prepare(request)
        sent = 0
        async for chunk in upstream.content.iter_chunked(64 * 1024):
            sent += len(chunk)
            if sent > MEDIA_MAX_BYTES:
                log.warning("whatsapp media cut at the limit", media_id=media_id)
                break
            await response.write(chunk)
        await response.write_eof()
        return response
    finally:
        upstream.release()


ROUTES: tuple[Route, ...] = (
    Route("GET", "/channels/whatsapp/webhook", whatsapp_handshake,
          "Meta's webhook subscription handshake: echoes hub.challenge as text/plain when "
          "hub.mode is subscribe and hub.verify_token is [whatsapp] verify_token",
          "channels", errors=(403, 404),
          params=(Param("hub.mode", "query", "subscribe", required=True),
                  Param("hub.verify_token", "query", "the configured verify token",
                        required=True),
                  Param("hub.challenge", "query", "echoed back", required=True))),
    Route("POST", "/channels/whatsapp/webhook", whatsapp_webhook,
          "WhatsApp Cloud API webhooks (messages of every kind, reactions, statuses of "
          "our replies); answered 200 once every event is stored",
          "channels", errors=(400, 401, 404, 413),
          params=(Param("X-Hub-Signature-256", "header",
                        "sha256=<hex HMAC-SHA256 of the raw body with [whatsapp] app_secret>",
                        required=True),)),
    Route("GET", MEDIA_PATH + "/{media_id}", whatsapp_media,
          "A customer's WhatsApp media (what an attachment's url points at), fetched from "
          "Graph with [whatsapp] access_token when asked: Meta's own URL for it expires "
          "within minutes", "channels", role="bot", errors=(401, 404, 503),
          params=(Param("media_id", "path", "the media id WhatsApp gave", required=True),)),
)  # fmt: skip
