"""What every channel's routes share: the configured adapter, and the request as the
adapter sees it (raw bytes, headers, the public URL the provider called)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from adapters.base import InboundRequest
from omni import jsonbody
from omni.errors import NotFound
from omni.state import SERVICES, SETTINGS


def adapter(request: web.Request, channel: str) -> Any:
    """The channel's adapter; 404 when the channel is not configured on this server."""
    found = request.app[SERVICES].adapters.get(channel)
    if found is None:
        raise NotFound(f"the {channel} channel is not configured on this server")
    return found


async def inbound(request: web.Request) -> InboundRequest:
    """The request with the URL the provider signed: `[server] public_url` plus the path
    and query exactly as they arrived (a proxy in front changes the host, not these)."""
    body = await request.read()
    if request.content_type != "application/x-www-form-urlencoded":
        # Every channel's JSON passes the one depth limit before its parser sees it.
        jsonbody.check_depth(body)
    return InboundRequest(
        method=request.method,
        url=request.app[SETTINGS].server.public_url + request.raw_path,
        headers=dict(request.headers),
        body=body,
        query=dict(request.query),
    )
