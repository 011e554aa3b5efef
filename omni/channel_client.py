"""What every channel's sender shares: one request its protocol rendered, sent with the
application's client session. The protocol reads the answer; the sender decides what a
request that got no answer means (each provider's reasons differ)."""

from __future__ import annotations

import aiohttp

from omni.channel import OutboundRequest, ProviderAnswer


async def send(
    session: aiohttp.ClientSession,
    request: OutboundRequest,
    timeout: aiohttp.ClientTimeout,  # noqa: ASYNC109 - aiohttp's own per-request timeout
) -> ProviderAnswer:
    """The provider's answer. Raises TimeoutError or aiohttp.ClientError when none came."""
    async with session.request(
        request.method,
        request.url,
        data=request.body,
        headers=dict(request.headers),
        params=dict(request.params),
        timeout=timeout,
    ) as response:
        return ProviderAnswer(response.status, response.headers, await response.read())
