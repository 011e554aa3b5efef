"""What every channel's routes share: the configured adapter, and the request as the
adapter sees it (raw bytes, headers, the public URL the provider called)."""

from __future__ import annotations

from typing import TypeVar

from aiohttp import web

from omni.channel import Adapter, InboundRequest
from omni.errors import NotFound, PayloadTooLarge
from omni.state import SERVICES, SETTINGS

AdapterT = TypeVar("AdapterT", bound=Adapter)


def adapter(request: web.Request, channel: str, kind: type[AdapterT]) -> AdapterT:
    """The channel's adapter, of the class its `setup` builds; 404 when the channel is not
    configured on this server."""
    found = request.app[SERVICES].adapters.get(channel)
    if found is None:
        raise NotFound(f"the {channel} channel is not configured on this server")
    if not isinstance(found, kind):
        raise TypeError(f"the {channel} adapter is a {type(found).__name__}, not a {kind.__name__}")
    return found


async def inbound(
    request: web.Request, body_max: int | None = None, limit_name: str = ""
) -> InboundRequest:
    """The request with the URL the provider signed: `[server] public_url` plus the path
    and query exactly as they arrived (a proxy in front changes the host, not these).
    `body_max` replaces the server's body limit for a route whose posts are larger (an
    e-mail's); over it is 413 naming `limit_name`, the setting that raises it."""
    if body_max is None:
        body = await request.read()
    else:
        try:
            body = await request.clone(client_max_size=body_max).read()
        except web.HTTPRequestEntityTooLarge:
            raise PayloadTooLarge(
                f"the body is larger than the {body_max}-byte limit ({limit_name})"
            ) from None
    return InboundRequest(
        method=request.method,
        url=request.app[SETTINGS].server.public_url + request.raw_path,
        headers=dict(request.headers),
        body=body,
        query=dict(request.query),
    )
