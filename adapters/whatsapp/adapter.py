"""The configured WhatsApp channel: the seam's Adapter (verify, parse, deliver) for one
business phone number, plus the handshake and the media lookups its routes need."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import structlog
from msgspec.structs import replace as _replace

from adapters.whatsapp import protocol
from adapters.whatsapp.config import WhatsAppConfig
from adapters.whatsapp.errors import REASON_NOT_CONFIGURED
from adapters.whatsapp.graph import MediaUnavailable
from adapters.whatsapp.sender import GraphClient
from omni.channel import ChannelEvent, InboundRequest, Received
from omni.model import METADATA_MAX

MEDIA_PATH = "/channels/whatsapp/media"
log = structlog.get_logger("adapters.whatsapp")


class WhatsAppAdapter:
    channel = protocol.CHANNEL

    def __init__(self, config: WhatsAppConfig, client: GraphClient | None, public_url: str):
        self.config = config
        self.client = client  # None: no access token, nothing sent and no media fetched
        self.media_base = public_url.rstrip("/") + MEDIA_PATH

    def __repr__(self) -> str:
        return f"WhatsAppAdapter(phone_number_id={self.config.phone_number_id!r}, secrets=****)"

    def handshake(self, query: dict[str, str]) -> str:
        return protocol.handshake(query, self.config.verify_token.reveal())

    def verify(self, request: InboundRequest) -> None:
        protocol.verify(request, (self.config.app_secret.reveal(),))

    def parse(self, request: InboundRequest) -> Sequence[ChannelEvent]:
        return protocol.parse(request.body, self.media_base)

    async def with_media(self, events: Sequence[ChannelEvent]) -> list[ChannelEvent]:
        """Each media message with what Graph says of its media id (type, size), looked
        up now, while Meta still serves it; a lookup that fails is noted on the message
        (`media_error`), which is stored all the same."""
        return list(await asyncio.gather(*(self._media(event) for event in events)))

    async def _media(self, event: ChannelEvent) -> ChannelEvent:
        if not isinstance(event, Received) or "media_id" not in event.message.metadata:
            return event
        inbound = event.message
        media_id = str(inbound.metadata["media_id"])
        if self.client is None:
            return _noted(event, f"{REASON_NOT_CONFIGURED}: no access_token to fetch media")
        try:
            info = await self.client.media(media_id)
        except MediaUnavailable as exc:
            log.warning("whatsapp media lookup failed", media_id=media_id, reason=exc.reason)
            return _noted(event, exc.reason)
        first, *rest = inbound.attachments
        attachment = _replace(first, mime=first.mime or info.mime_type, size=info.size)
        return Received(_replace(inbound, attachments=[attachment, *rest]), event.direction)


def _noted(event: Received, reason: str) -> Received:
    metadata = {**event.message.metadata}
    metadata.setdefault("media_error", reason[:512])
    if len(metadata) > METADATA_MAX:
        return event
    return Received(_replace(event.message, metadata=metadata), event.direction)
