"""The Graph API calls WhatsApp needs, as requests to send and answers to read. Pure: the
sender sends them (`omni.channel_client.send`).

    POST {graph_url}/{phone_number_id}/messages   a Send API body (render.py), Bearer token;
                                                  answered {"messages": [{"id": wamid}]}
    GET  {graph_url}/{media_id}                   what a customer's media id is: a URL
                                                  valid for minutes (it too wants the
                                                  token), mime_type, sha256, file_size
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from adapters.whatsapp.errors import graph_failure
from omni.channel import Delivery, OutboundRequest, ProviderAnswer


@dataclass(frozen=True)
class MediaInfo:
    url: str
    mime_type: str | None
    size: int | None


class MediaUnavailable(Exception):
    """Graph did not say where a media id is: `missing` when it has no such media (or no
    longer), else it could not be asked; `reason` says which, for the log and metadata."""

    def __init__(self, reason: str, *, missing: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.missing = missing


class Graph:
    """One business number's calls, with its token (repr hides it)."""

    def __init__(self, graph_url: str, phone_number_id: str, access_token: str) -> None:
        self.base = graph_url.rstrip("/")
        self.messages_url = f"{self.base}/{quote(phone_number_id, safe='')}/messages"
        self._auth = {"Authorization": f"Bearer {access_token}"}

    def __repr__(self) -> str:
        return f"Graph(url={self.messages_url!r}, token=****)"

    @property
    def auth(self) -> dict[str, str]:
        return dict(self._auth)

    def message(self, body: dict[str, Any]) -> OutboundRequest:
        headers = {**self._auth, "Content-Type": "application/json"}
        return OutboundRequest("POST", self.messages_url, headers, json.dumps(body).encode())

    def media(self, media_id: str) -> OutboundRequest:
        return OutboundRequest("GET", f"{self.base}/{quote(media_id, safe='')}", self.auth)


def sent(answer: ProviderAnswer) -> Delivery:
    """What Graph's answer to one Send API request means."""
    data = answer.json()
    if 200 <= answer.status < 300 and not (isinstance(data, dict) and "error" in data):
        messages = data.get("messages") if isinstance(data, dict) else None
        first = messages[0] if isinstance(messages, list) and messages else None
        wamid = first.get("id") if isinstance(first, dict) else None
        return Delivery("sent", channel_message_id=wamid if isinstance(wamid, str) else None)
    return graph_failure(answer.status, data)


def media_info(answer: ProviderAnswer) -> MediaInfo:
    """Graph's answer about a media id; MediaUnavailable when it gives no URL."""
    data = answer.json()
    if answer.status == 200 and isinstance(data, dict) and isinstance(data.get("url"), str):
        mime, size = data.get("mime_type"), data.get("file_size")
        if isinstance(size, str) and size.isdigit():
            size = int(size)
        return MediaInfo(
            url=data["url"],
            mime_type=mime[:128] if isinstance(mime, str) and mime else None,
            size=size if isinstance(size, int) and not isinstance(size, bool) and size >= 0
            else None,
        )  # fmt: skip
    reason = graph_failure(answer.status, data).reason or f"HTTP {answer.status}"
    raise MediaUnavailable(reason, missing=answer.status in (400, 404))


def sent_parts(outcomes: list[Delivery], parts: int) -> Delivery:
    """One reply's Delivery from its parts' (sent in order, stopping at the first
    failure): the first part's wamid; a failure after some parts says how many went."""
    first = next((o.channel_message_id for o in outcomes if o.channel_message_id), None)
    failed = outcomes[-1] if outcomes and outcomes[-1].status == "failed" else None
    if failed is None:
        return Delivery("sent", channel_message_id=first)
    if len(outcomes) > 1:
        reason = f"{failed.reason} (after {len(outcomes) - 1} of {parts} parts were sent)"
        return Delivery("failed", first, reason, failed.retry)
    return failed
