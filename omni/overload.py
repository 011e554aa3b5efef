"""Load shedding: at most `[limits] max_in_flight` requests are handled at once by one
process; the next ones are answered at once with a 503 problem and Retry-After (the
request middleware writes it) instead of queueing without bound, where every waiting
request holds memory and its client's patience and then times out anyway.

Not counted: liveness, readiness and metrics (an operator must see an overloaded
process), and the long-lived streams (WebSocket upgrades, the agents' event streams),
which stay open for a session's lifetime.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Middleware

from omni.auth import Handler
from omni.errors import Unavailable

_EXEMPT = frozenset({"/healthz", "/readyz", "/metrics"})


def in_flight_limit(limit: int) -> Middleware:
    """A middleware that lets `limit` requests in at a time and sheds the rest."""
    in_flight = 0

    @web.middleware
    async def shed(request: web.Request, handler: Handler) -> web.StreamResponse:
        nonlocal in_flight
        if _exempt(request):
            return await handler(request)
        if in_flight >= limit:
            raise Unavailable(f"omni is handling {limit} requests already; retry shortly")
        in_flight += 1
        try:
            return await handler(request)
        finally:
            in_flight -= 1

    return shed


def _exempt(request: web.Request) -> bool:
    path = request.path
    return (
        path in _EXEMPT
        or path.endswith("/events")  # /v1/events, /v1/customers/{id}/events: streams
        or request.headers.get("Upgrade", "").lower() == "websocket"
    )
